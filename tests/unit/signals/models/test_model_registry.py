"""The registry vouches for every byte it loads; OnnxModel checks what it is fed."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from quantlab.core.errors import DataError
from quantlab.signals.models import (
    BUNDLED_MODELS,
    ModelEntry,
    ModelError,
    ModelInputError,
    ModelIntegrityError,
    ModelMismatchError,
    ModelNotFoundError,
    ModelRegistry,
    TrainingWindow,
)
from quantlab.signals.windows import CHANNELS

SPEC = "default@1"


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    """A writable copy of the bundled registry."""
    root = tmp_path / "models"
    shutil.copytree(BUNDLED_MODELS, root)
    return ModelRegistry(root)


def register_kwargs(entry: ModelEntry, **changes: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "name": entry.name,
        "kind": entry.kind,
        "target": entry.target,
        "feature_spec": entry.feature_spec,
        "window": entry.window,
        "channels": entry.channels,
        "horizon": entry.horizon,
        "return_scale": entry.return_scale,
        "training": entry.training,
        "metrics": entry.metrics,
        "seed": entry.seed,
        "params": entry.params,
    }
    return {**kwargs, **changes}


def test_a_tampered_model_file_is_refused_naming_both_hashes(registry: ModelRegistry) -> None:
    entry = registry.latest("direction_mlp")
    file = registry.root / entry.file
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the weights
    file.write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(ModelIntegrityError) as info:
        registry.load("direction_mlp", feature_spec=SPEC)
    message = str(info.value)
    assert entry.sha256 in message
    assert actual in message
    assert str(file) in message
    assert (info.value.expected, info.value.actual, info.value.file) == (entry.sha256, actual, file)
    assert isinstance(info.value, DataError)


def test_only_the_verified_bytes_reach_onnxruntime(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[object] = []
    real = ort.InferenceSession

    def spy(model: object, *args: Any, **kwargs: Any) -> ort.InferenceSession:
        seen.append(model)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    entry = registry.latest("direction_mlp")
    registry.load("direction_mlp", feature_spec=SPEC)
    assert len(seen) == 1
    assert isinstance(seen[0], bytes)
    assert hashlib.sha256(seen[0]).hexdigest() == entry.sha256


def test_a_feature_spec_or_channel_mismatch_is_refused(registry: ModelRegistry) -> None:
    with pytest.raises(ModelMismatchError, match=r"feature spec 'default@1'.*computes 'default@2'"):
        registry.load("direction_mlp", feature_spec="default@2")
    with pytest.raises(ModelMismatchError, match=r"window channels .*the caller builds \['rsi'"):
        registry.load("direction_mlp", feature_spec=SPEC, channels=["rsi", *CHANNELS[1:]])


def test_unknown_names_versions_and_missing_files(registry: ModelRegistry) -> None:
    with pytest.raises(ModelNotFoundError, match=r"no model 'nope'.*registered: \["):
        registry.load("nope", feature_spec=SPEC)
    with pytest.raises(ModelNotFoundError, match=r"has no version 99 .*\[1"):
        registry.load("direction_mlp", 99, feature_spec=SPEC)
    entry = registry.latest("direction_mlp")
    (registry.root / entry.file).unlink()
    with pytest.raises(ModelError, match=f"its file .*{entry.file} is missing"):
        registry.load("direction_mlp", feature_spec=SPEC)


def test_registry_json_cannot_point_outside_its_folder(registry: ModelRegistry) -> None:
    doc = json.loads(registry.path.read_text())
    doc["models"][0]["file"] = "../../etc/passwd"
    registry.path.write_text(json.dumps(doc))
    name = doc["models"][0]["name"]
    with pytest.raises(ModelError, match=r"'../../etc/passwd' is not a plain name"):
        registry.load(name, 1, feature_spec=SPEC)


def test_a_corrupt_registry_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "registry.json").write_text('{"format": 1, "models": [{"name": 3}]}')
    with pytest.raises(ModelError, match=r"registry.json is not valid"):
        ModelRegistry(tmp_path).entries()
    (tmp_path / "registry.json").write_text('{"format": 9, "models": []}')
    with pytest.raises(ModelError, match="has format 9; this quantlab reads 1"):
        ModelRegistry(tmp_path).entries()
    assert ModelRegistry(tmp_path / "absent").entries() == []


def test_register_versions_and_skips_identical_bytes(tmp_path: Path) -> None:
    bundled = ModelRegistry(BUNDLED_MODELS)
    entry = bundled.latest("direction_mlp")
    data = (BUNDLED_MODELS / entry.file).read_bytes()
    reg = ModelRegistry(tmp_path / "new")
    first = reg.register(data, **register_kwargs(entry, name="m"))
    assert (first.version, first.file, first.sha256) == (1, "m-v1.onnx", entry.sha256)
    assert reg.register(data, **register_kwargs(entry, name="m")) == first  # no new version
    other = (BUNDLED_MODELS / bundled.latest("direction_gru").file).read_bytes()
    gru = bundled.latest("direction_gru")
    second = reg.register(other, **register_kwargs(gru, name="m"))
    assert second.version == 2
    assert reg.latest("m") == second
    assert [e.version for e in reg.entries()] == [1, 2]
    assert sorted(p.name for p in reg.root.iterdir()) == ["m-v1.onnx", "m-v2.onnx", "registry.json"]
    assert (reg.root / "m-v1.onnx").stat().st_mode & 0o777 == 0o644
    loaded = reg.load("m", 1, feature_spec=SPEC)
    assert loaded.entry == first


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "../evil"}, "model name '../evil' must be"),
        ({"window": 16}, r"takes input shape \['batch', 32, 8\]; its registry entry says"),
        ({"channels": CHANNELS[:4]}, r"its registry entry says \(batch, 32, 4\)"),
        ({"return_scale": float("nan")}, "return_scale must be a finite number > 0, got nan"),
        ({"kind": "lstm"}, r"kind must be mlp\|gru and target direction\|return, got lstm"),
    ],
)
def test_register_refuses_what_would_not_load(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    entry = ModelRegistry(BUNDLED_MODELS).latest("direction_mlp")
    data = (BUNDLED_MODELS / entry.file).read_bytes()
    reg = ModelRegistry(tmp_path)
    with pytest.raises(ModelError, match=message):
        reg.register(data, **register_kwargs(entry, **changes))
    assert list(tmp_path.iterdir()) == []


def test_register_refuses_bytes_onnxruntime_cannot_load(tmp_path: Path) -> None:
    entry = ModelRegistry(BUNDLED_MODELS).latest("direction_mlp")
    with pytest.raises(ModelError, match="onnxruntime cannot load model x-v1"):
        ModelRegistry(tmp_path).register(b"not onnx", **register_kwargs(entry, name="x"))
    assert list(tmp_path.iterdir()) == []


def test_onnx_model_checks_input_shapes(registry: ModelRegistry) -> None:
    model = registry.load("direction_mlp", feature_spec=SPEC)
    assert model.window == 32
    assert model.channels == len(CHANNELS)
    rng = np.random.default_rng(0)
    windows = rng.normal(0, 0.01, (5, 32, 8)).astype(np.float32)
    assert model.predict(windows).shape == (5,)
    assert model.predict(windows[0]).shape == (1,)  # one (W, C) window
    assert model.predict(windows[:0]).shape == (0,)
    np.testing.assert_array_equal(model.predict(windows.astype(np.float64)), model.predict(windows))
    for bad in ((5, 16, 8), (5, 32, 7), (2, 5, 32, 8), (32,)):
        with pytest.raises(ModelInputError, match=rf"\(n, 32, 8\), got \({bad[0]},"):
            model.predict(np.zeros(bad, dtype=np.float32))
    opts = model._session.get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (1, 1)
    assert "direction_mlp" in repr(model)


def test_advice_of_a_return_model_is_tanh_of_the_scaled_prediction(
    registry: ModelRegistry,
) -> None:
    entry = registry.latest("direction_mlp")
    data = (registry.root / entry.file).read_bytes()
    reg = ModelRegistry(registry.root)
    # Reading the direction model as a return model exercises the return transform.
    as_return = reg.register(
        data + b"", **register_kwargs(entry, name="as_return", target="return", return_scale=0.5)
    )
    model = reg.load(as_return.name, feature_spec=SPEC)
    windows = np.random.default_rng(1).normal(0, 0.01, (20, 32, 8)).astype(np.float32)
    np.testing.assert_allclose(
        model.advice(windows), np.tanh(model.predict(windows) / 0.5), rtol=1e-6
    )


def test_training_window_and_entry_round_trip(registry: ModelRegistry) -> None:
    entry = registry.latest("direction_mlp")
    assert isinstance(entry.training, TrainingWindow)
    again = ModelRegistry(registry.root).entries()
    assert entry in again
