"""`quantlab.research.models`: walk-forward training, ONNX registry, onnxruntime inference."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import polars as pl
import pytest

from quantlab.core.errors import DataError
from quantlab.research import (
    compute_features,
    labelled_windows,
    list_models,
    load_bars,
    load_model,
    model_path,
    score_predictions,
    train_model,
)
from quantlab.signals.models import BUNDLED_MODELS

PERP = "bundled:btc_perp_1m_2022-01.parquet"
TINY = {"hidden": 4, "epochs": 1, "n_splits": 2, "stride": 4, "window": 16, "horizon": 6}


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return load_bars(PERP, start="2022-01-25", end="2022-01-28")


def test_importing_research_never_imports_torch() -> None:
    code = "import sys, quantlab.research; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_bundled_registry_is_refused(bars: pl.DataFrame) -> None:
    with pytest.raises(DataError, match=r"is the registry bundled with quantlab"):
        train_model(bars, registry=BUNDLED_MODELS, **TINY)
    with pytest.raises(DataError, match=r"bundled with quantlab"):
        list_models(BUNDLED_MODELS)


def test_train_register_and_load_back(bars: pl.DataFrame, tmp_path: Path) -> None:
    registry = tmp_path / "models"
    trained = train_model(bars, registry=registry, name="tiny", **TINY)
    entry = trained.entry
    assert (entry.name, entry.version, entry.window, entry.horizon) == ("tiny", 1, 16, 6)
    assert trained.path == model_path("tiny", registry=registry) == registry / "tiny-v1.onnx"
    assert hashlib.sha256(trained.path.read_bytes()).hexdigest() == entry.sha256
    assert trained.folds["fold"].to_list() == [0, 1]
    assert (trained.folds["purged"] > 0).all()
    assert set(trained.cv) == {"accuracy", "log_loss", "up_rate", "ic"}
    assert trained.cv["accuracy"] == pytest.approx(trained.folds["accuracy"].mean())
    assert trained.parity < 1e-5

    listed = list_models(registry)
    assert listed.select("name", "version", "kind", "target").rows() == [
        ("tiny", 1, "mlp", "direction")
    ]
    # onnxruntime directly and quantlab's hash-checked loader agree on real windows
    data = labelled_windows(compute_features(bars), window=16, horizon=6)
    session = ort.InferenceSession(str(trained.path), providers=["CPUExecutionProvider"])
    raw = session.run(["output"], {"windows": data.windows})[0]
    model = load_model("tiny", registry=registry)
    np.testing.assert_array_equal(model.predict(data.windows), raw)
    assert ((raw > 0) & (raw < 1)).all()

    # deterministic: the same data and seed give the same bytes, so no new version
    again = train_model(bars, registry=registry, name="tiny", **TINY)
    assert again.entry.version == 1
    assert again.entry.sha256 == entry.sha256


def test_a_tampered_model_is_refused(bars: pl.DataFrame, tmp_path: Path) -> None:
    trained = train_model(bars, registry=tmp_path, name="tiny", **TINY)
    trained.path.write_bytes(trained.path.read_bytes() + b"x")
    with pytest.raises(DataError, match=r"sha256"):
        load_model("tiny", registry=tmp_path)


def test_labelled_windows_label_the_forward_return(bars: pl.DataFrame) -> None:
    features = compute_features(bars)
    data = labelled_windows(features, window=16, horizon=6)
    price = features["price"].to_numpy()
    assert data.windows.shape == (features.height - 15 - 6, 16, 8)
    first = 15  # the first row with 16 rows of history
    assert data.returns[0] == pytest.approx(np.log(price[first + 6] / price[first]))
    with pytest.raises(DataError, match=r"window must be an integer >= 2, got 1"):
        labelled_windows(features, window=1)


def test_score_predictions() -> None:
    realized = np.array([0.01, -0.02, 0.03, -0.01])
    perfect = score_predictions(np.array([0.7, 0.1, 0.9, 0.3]), realized)
    assert perfect["accuracy"] == 1.0
    assert perfect["ic"] == pytest.approx(1.0)
    wrong = score_predictions(np.array([0.3, 0.9, 0.1, 0.7]), realized)
    assert wrong["accuracy"] == 0.0
    assert wrong["ic"] == pytest.approx(-1.0)
    with pytest.raises(DataError, match=r"unknown target 'price'"):
        score_predictions(realized, realized, target="price")
