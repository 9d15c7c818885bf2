"""The bundled models: intact, out-of-sample for the default backtest, served without torch."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quantlab.features import compute, get_spec
from quantlab.signals.models import BUNDLED_MODELS, ModelRegistry
from quantlab.signals.windows import CHANNELS, window_array

DATA = Path(__file__).resolve().parents[4] / "src" / "quantlab" / "_data" / "market"
SPEC = get_spec("default").id


@pytest.fixture(scope="module")
def pair_windows() -> np.ndarray:
    """Full windows of the default backtest's data (10 BTC pairs, 5m, January 2018)."""
    bars = pl.read_parquet(DATA / "binance_btc_pairs_5m_2018-01.parquet")
    windows, full = window_array(compute(bars.sort("timestamp", "symbol").head(20_000)), 32)
    mine: np.ndarray = windows[full]
    return mine


def test_bundled_registry_describes_the_direction_mlp() -> None:
    entry = ModelRegistry(BUNDLED_MODELS).latest("direction_mlp")
    assert (entry.kind, entry.target, entry.window, entry.horizon, entry.seed) == (
        "mlp", "direction", 32, 12, 7,
    )  # fmt: skip
    assert entry.feature_spec == SPEC == "default@1"
    assert entry.channels == CHANNELS
    assert entry.file == f"direction_mlp-v{entry.version}.onnx"
    # Trained on BTC-PERP 2022: out of sample for the January-2018 pairs of the backtest.
    assert entry.training.files == ("btc_perp_1m_2022-01.parquet",)
    assert entry.training.start.startswith("2021-12-31")
    assert entry.training.end < "2022-02-02"
    cv = entry.metrics["cv"]
    assert cv["n_splits"] == len(cv["folds"]) >= 3
    assert set(cv["mean"]) == {"accuracy", "log_loss", "up_rate", "ic"}
    assert all(f["purged"] > 0 for f in cv["folds"])
    assert entry.metrics["onnx_parity_max_abs"] < 1e-5
    assert hashlib.sha256((BUNDLED_MODELS / entry.file).read_bytes()).hexdigest() == entry.sha256
    assert (BUNDLED_MODELS / entry.file).stat().st_size < 200_000


@pytest.mark.parametrize("name", ["direction_mlp", "direction_gru"])
def test_bundled_model_advice_is_in_range_on_real_windows(
    name: str, pair_windows: np.ndarray
) -> None:
    model = ModelRegistry(BUNDLED_MODELS).load(name, feature_spec=SPEC)
    prob = model.predict(pair_windows)
    advice = model.advice(pair_windows)
    assert prob.dtype == advice.dtype == np.float32
    assert advice.shape == (len(pair_windows),)
    assert np.all(np.isfinite(advice))
    assert np.all(np.abs(advice) <= 1.0)
    assert np.all((prob > 0) & (prob < 1))
    np.testing.assert_allclose(advice, 2 * prob - 1, atol=1e-6)
    assert advice.std() > 1e-3  # it reacts to its input
    # One row at a time gives the same numbers as the batch.
    np.testing.assert_allclose(model.predict(pair_windows[7]), prob[7:8], atol=1e-6)


def test_production_never_imports_torch(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys

        import polars as pl

        import quantlab
        import quantlab.signals.models
        from quantlab.features import compute
        from quantlab.signals.models import BUNDLED_MODELS, ModelRegistry
        from quantlab.signals.windows import window_array

        model = ModelRegistry(BUNDLED_MODELS).load("direction_mlp", feature_spec="default@1")
        bars = pl.read_parquet({str(DATA / "binance_btc_pairs_5m_2018-01.parquet")!r})
        windows, full = window_array(compute(bars.head(3000)), model.window)
        advice = model.advice(windows[full])
        assert len(advice) > 1000 and abs(advice).max() <= 1.0
        # the whole engine, trading the Hedge ensemble with the model and the pattern memory
        eth = bars.filter(pl.col("symbol") == "ETH/BTC").head(1500)
        run = quantlab.backtest(eth, run_dir={str(tmp_path / "run")!r})
        assert set(run.summary.strategy["hedge"]["experts"]) == {{"model", "patterns"}}
        assert run.summary.signals > 0
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnxscript"))
        assert not leaked, leaked
        print("ok", len(advice))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")
