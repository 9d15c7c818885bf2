"""Security: untrusted model files. quantlab loads only ONNX models, hash-checked against the
registry; a pickle (or a format built on pickles) is refused even when registry.json vouches
for its sha256, and a file whose sha256 differs from the registry's is refused whatever it is.

Every untrusted file goes through the three ways quantlab loads a model: `ModelRegistry.load`,
the research helper `load_model`, and the engine's `build_strategy` (the hedge's "model"
expert). The pickles are armed: unpickling one creates a marker file (the test proves the trap
works by unpickling one itself), so "refused" also means "no code of the file ran".
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import random
import shutil
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from quantlab.config import load_settings
from quantlab.engine.strategies import build_strategy
from quantlab.research.models import load_model
from quantlab.signals.models import (
    BUNDLED_MODELS,
    ModelError,
    ModelIntegrityError,
    ModelRegistry,
)
from quantlab.signals.models.registry import ModelFormatError, sha256_hex
from quantlab.testing.reliability import record

SPEC = "default@1"
NAME = "direction_mlp"


class _Trap:
    """Unpickling this runs ``open(marker, 'w')``: the marker file appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def _untrusted(marker: Path) -> dict[str, bytes]:
    """File contents that are not ONNX models, by what they are; every pickle is armed."""
    trap = _Trap(marker)
    torch_zip = io.BytesIO()
    with zipfile.ZipFile(torch_zip, "w") as zf:  # the layout of torch.save
        zf.writestr("archive/data.pkl", pickle.dumps(trap, protocol=2))
        zf.writestr("archive/version", "3\n")
    npy = io.BytesIO()
    np.save(npy, np.array([trap], dtype=object), allow_pickle=True)
    rng = random.Random(12)
    return {
        **{f"pickle protocol {p}": pickle.dumps(trap, protocol=p) for p in range(6)},
        "torch.save zip": torch_zip.getvalue(),
        "joblib gzip pickle": gzip.compress(pickle.dumps(trap, protocol=4)),
        "joblib zlib pickle": zlib.compress(pickle.dumps(trap, protocol=4)),
        "numpy object .npy": npy.getvalue(),
        "random bytes": bytes(rng.getrandbits(8) for _ in range(4096)),
        "empty file": b"",
        "protobuf, not ONNX": b"\x0a\x03abc\x10\x01",
    }


def _registry_with(root: Path, data: bytes, *, sha: str | None = None) -> Path:
    """A copy of the bundled registry whose `NAME` file holds `data`, registered with `sha`
    (default: the sha256 of `data`, as if whoever wrote the file also wrote registry.json)."""
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(BUNDLED_MODELS, root, ignore=shutil.ignore_patterns("__pycache__"))
    doc = json.loads((root / "registry.json").read_text())
    entry = next(e for e in doc["models"] if e["name"] == NAME)
    (root / entry["file"]).write_bytes(data)
    entry["sha256"] = sha or sha256_hex(data)
    (root / "registry.json").write_text(json.dumps(doc))
    return root


def _loaders(tmp: Path) -> dict[str, Callable[[Path], object]]:
    def engine(root: Path) -> object:
        s = load_settings(
            strategy={"name": "hedge", "experts": ["model"]},
            models={"registry": str(root), "name": NAME},
        )
        return build_strategy(s, feature_spec=SPEC, run_dir=tmp / "run")

    return {
        "ModelRegistry.load": lambda root: ModelRegistry(root).load(NAME, feature_spec=SPEC),
        "research load_model": lambda root: load_model(NAME, registry=root),
        "engine build_strategy": engine,
    }


def test_untrusted_model_files_are_refused_and_never_run(tmp_path: Path) -> None:
    """Counts every (file, loader) pair that loaded, and every marker file that appeared.

    The check can fail: the trap is shown to work (unpickling it creates the marker), so any
    loader that unpickled a file would leave a marker; and without the format check a loader
    that accepted any bytes with a matching sha would count as loaded."""
    marker = tmp_path / "marker"
    control = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(_Trap(control)))  # noqa: S301 (our own armed pickle: the trap works)
    assert control.exists()

    loaders = _loaders(tmp_path)
    genuine = (BUNDLED_MODELS / f"{NAME}-v1.onnx").read_bytes()
    other = (BUNDLED_MODELS / "direction_gru-v1.onnx").read_bytes()
    flipped = bytearray(genuine)
    flipped[len(flipped) // 2] ^= 0x01
    # (what, bytes, sha registered, the error expected)
    cases: list[tuple[str, bytes, str | None, type[ModelError]]] = [
        (f"{what}, sha256 registered", data, None, ModelFormatError)
        for what, data in _untrusted(marker).items()
    ]
    cases += [
        ("another ONNX model, sha256 of the registered one", other, sha256_hex(genuine),
         ModelIntegrityError),
        ("the ONNX model with one bit flipped", bytes(flipped), sha256_hex(genuine),
         ModelIntegrityError),
        ("pickle protocol 4, sha256 of the registered model",
         pickle.dumps(_Trap(marker), protocol=4), sha256_hex(genuine), ModelIntegrityError),
    ]  # fmt: skip

    trials = loaded = unclear = 0
    problems: list[str] = []
    for i, (what, data, sha, expected) in enumerate(cases):
        root = _registry_with(tmp_path / f"reg{i}", data, sha=sha)
        for how, load in loaders.items():
            trials += 1
            try:
                load(root)
            except expected as exc:
                if root.name not in str(exc) or f"{NAME}-v1.onnx" not in str(exc):
                    unclear += 1
                    problems.append(f"{what} via {how}: unclear error {exc}")
            except Exception as exc:
                unclear += 1
                problems.append(f"{what} via {how}: {type(exc).__name__}: {exc}")
            else:
                loaded += 1
                problems.append(f"{what} via {how}: LOADED")
    ran = int(marker.exists())

    # Control: the genuine models still load through every path.
    controls = 0
    for load in loaders.values():
        load(_registry_with(tmp_path / "genuine", genuine))
        controls += 1

    record(
        "security",
        "untrusted model files (pickles, torch/joblib/npy files, random bytes, sha mismatch)",
        trials=trials,
        unit="loads of an untrusted file",
        failed=loaded + ran,
        failed_what="untrusted files loaded or their code run",
        detail=(
            f"{len(cases)} files x {len(loaders)} load paths; {unclear} refusals without a "
            f"clear error; {controls} genuine loads (control) passed"
        ),
    )
    assert loaded == 0, problems
    assert ran == 0, problems
    assert unclear == 0, problems


@pytest.mark.parametrize(
    ("what", "named"),
    [
        ("pickle protocol 0", "protocol 0/1 pickle"),
        ("pickle protocol 5", "Python pickle (protocol 5)"),
        ("torch.save zip", "zip archive"),
        ("joblib gzip pickle", "gzip-compressed"),
        ("random bytes", "not an ONNX model"),
    ],
)
def test_the_refusal_names_the_file_and_what_it_is(tmp_path: Path, what: str, named: str) -> None:
    data = _untrusted(tmp_path / "marker")[what]
    root = _registry_with(tmp_path / "reg", data)
    with pytest.raises(ModelFormatError) as info:
        load_model(NAME, registry=root)
    text = str(info.value)
    assert str(root / f"{NAME}-v1.onnx") in text
    assert named in text
    assert not (tmp_path / "marker").exists()
