"""Training is reproducible, the ONNX export matches torch, and the registry records it all.

Tiny configs on a slice of real bars keep this file to seconds.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from quantlab.core.errors import ConfigError, DataError
from quantlab.features import compute, get_spec
from quantlab.signals.models import (
    LabeledWindows,
    ModelParityError,
    ModelRegistry,
    TrainingWindow,
    label_windows,
)
from quantlab.signals.models.train import (
    TrainConfig,
    TrainResult,
    WindowNet,
    cross_validate,
    export_onnx,
    fit,
    predict,
    train_and_register,
)
from quantlab.signals.windows import CHANNELS

DATA = Path(__file__).resolve().parents[4] / "src" / "quantlab" / "_data" / "market"
SPEC = get_spec("default")
TINY = TrainConfig(window=16, horizon=4, hidden=8, epochs=1, stride=3, n_splits=2, seed=7)


@pytest.fixture(scope="module")
def btc_features() -> pl.DataFrame:
    bars = pl.read_parquet(DATA / "btc_perp_1m_2022-01.parquet").head(3_000)
    return compute(bars, SPEC)


@pytest.fixture(scope="module")
def btc(btc_features: pl.DataFrame) -> LabeledWindows:
    data = label_windows(btc_features, window=TINY.window, horizon=TINY.horizon)
    return data.take(np.arange(0, len(data), TINY.stride))


@pytest.fixture(scope="module")
def pair_windows() -> np.ndarray:
    """Real windows from other data (10 BTC pairs, 5m, 2018) for the parity checks."""
    bars = pl.read_parquet(DATA / "binance_btc_pairs_5m_2018-01.parquet")
    data = label_windows(compute(bars.head(8_000), SPEC), window=TINY.window, horizon=1)
    return data.windows


def states_equal(a: WindowNet, b: WindowNet) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("kind", ["mlp", "gru"])
def test_same_seed_same_weights_other_seed_other_weights(kind: str, btc: LabeledWindows) -> None:
    config = TrainConfig(**{**TINY.params(), "kind": kind})
    first, again = fit(btc, config), fit(btc, config)
    assert states_equal(first, again)
    other = fit(btc, replace(config, seed=8))
    assert not states_equal(first, other)
    # The normalisation buffers are the training windows' per-channel statistics.
    flat = btc.windows.astype(np.float64).reshape(-1, len(CHANNELS))
    np.testing.assert_allclose(first.mean.numpy(), flat.mean(axis=0), rtol=1e-5, atol=1e-9)


def test_training_leaves_torch_global_state_as_it_found_it(btc: LabeledWindows) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    fit(btc, TINY)
    assert torch.equal(torch.rand(3), expected)  # the caller's RNG stream is untouched
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize("kind", ["mlp", "gru"])
def test_onnx_export_matches_torch_on_real_windows(
    kind: str, btc: LabeledWindows, pair_windows: np.ndarray, tmp_path: Path
) -> None:
    config = TrainConfig(**{**TINY.params(), "kind": kind})
    model = fit(btc, config)
    data, parity = export_onnx(model, pair_windows)
    assert parity < 1e-5
    # Independently: through the registry and OnnxModel, any batch size.
    reg = ModelRegistry(tmp_path)
    entry = reg.register(
        data, name=f"t_{kind}", kind=config.kind, target="direction", feature_spec=SPEC.id,
        window=config.window, channels=CHANNELS, horizon=config.horizon, return_scale=1.0,
        training=TrainingWindow(start="2022-01-01T00:00:00Z", end="2022-01-02T00:00:00Z",
                                files=(), rows=len(btc)),
        metrics={}, seed=config.seed,
    )  # fmt: skip
    served = reg.load(entry.name, feature_spec=SPEC.id)
    expected = predict(model, pair_windows)
    for rows in (slice(0, 1), slice(3, 10), slice(None)):
        got = served.predict(pair_windows[rows])
        assert np.max(np.abs(got - expected[rows])) < 1e-5


def test_export_refuses_a_parity_miss(btc: LabeledWindows) -> None:
    model = fit(btc, TINY)
    with pytest.raises(ModelParityError, match=r"differs from torch by up to .* \(tolerance 0\)"):
        export_onnx(model, btc.windows, tolerance=0.0)
    with pytest.raises(DataError, match="at least 2 real windows"):
        export_onnx(model, btc.windows[:1])


def test_return_target_predicts_returns_in_their_units(btc: LabeledWindows) -> None:
    config = TrainConfig(**{**TINY.params(), "target": "return"})
    model = fit(btc, config)
    assert float(model.scale) == pytest.approx(np.std(btc.returns))
    pred = predict(model, btc.windows)
    assert np.std(pred) < 10 * np.std(btc.returns)  # in log-return units, not standardised
    report = cross_validate(btc, config)
    assert set(report.mean) == {"mse", "mse_zero", "accuracy", "ic"}


def test_cross_validation_reports_each_fold_and_the_mean(btc: LabeledWindows) -> None:
    report = cross_validate(btc, TINY)
    assert len(report.folds) == TINY.n_splits
    for fold in report.folds:
        assert fold["purged"] > 0
        assert fold["test_rows"] > 0
        assert 0 <= fold["accuracy"] <= 1
        assert fold["log_loss"] > 0
    assert report.mean["accuracy"] == pytest.approx(np.mean([f["accuracy"] for f in report.folds]))
    assert report.as_dict()["mean"] == report.mean


def test_train_and_register_records_provenance_and_is_idempotent(
    btc_features: pl.DataFrame, tmp_path: Path, pair_windows: np.ndarray
) -> None:
    def train(config: TrainConfig = TINY) -> TrainResult:
        return train_and_register(
            btc_features, feature_spec=SPEC.id, registry=tmp_path, name="tiny", config=config,
            data_files=["btc_perp_1m_2022-01.parquet"],
        )  # fmt: skip

    result = train()
    entry = result.entry
    assert (entry.version, entry.kind, entry.target, entry.feature_spec) == (
        1, "mlp", "direction", "default@1",
    )  # fmt: skip
    assert (entry.window, entry.horizon, entry.seed, entry.channels) == (16, 4, 7, CHANNELS)
    assert entry.training.files == ("btc_perp_1m_2022-01.parquet",)
    assert entry.training.start == "2021-12-31T23:01:00Z"  # the first bar
    last = btc_features.select(pl.col("timestamp").max().dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert entry.training.end == last.item()
    assert entry.params["hidden"] == 8
    assert entry.params["torch"] == str(torch.__version__)
    assert entry.metrics["cv"]["mean"] == result.cv.mean
    assert result.parity < 1e-5
    assert entry.metrics["onnx_parity_max_abs"] == result.parity
    # Same seed and data: the same bytes, so no new version.
    assert train().entry == entry
    other = train(replace(TINY, seed=9))
    assert other.entry.version == 2
    assert other.entry.sha256 != entry.sha256
    model = ModelRegistry(tmp_path).load("tiny", 1, feature_spec=SPEC.id)
    advice = model.advice(pair_windows)
    assert np.all(np.abs(advice) <= 1)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"kind": "lstm"}, "kind"), ({"target": "vol"}, "target"), ({"window": 1}, "window"),
     ({"stride": 0}, "stride"), ({"lr": 0.0}, "lr")],
)  # fmt: skip
def test_bad_configs_name_the_key(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=f"invalid configuration '{key}'"):
        TrainConfig(**kwargs)  # type: ignore[arg-type]


def test_windows_of_another_size_are_refused(btc: LabeledWindows) -> None:
    with pytest.raises(DataError, match="do not match the config's window 32"):
        fit(btc, TrainConfig())
