"""Labelled windows and purged walk-forward splits on real multi-symbol bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quantlab.core.errors import DataError
from quantlab.features import compute
from quantlab.signals.models import (
    LabeledWindows,
    information_coefficient,
    label_windows,
    score,
    walk_forward_splits,
)

DATA = Path(__file__).resolve().parents[4] / "src" / "quantlab" / "_data" / "market"
WINDOW, HORIZON = 16, 6


@pytest.fixture(scope="module")
def features() -> pl.DataFrame:
    bars = pl.read_parquet(DATA / "binance_btc_pairs_5m_2018-01.parquet")
    return compute(bars.sort("timestamp", "symbol").head(6_000))


@pytest.fixture(scope="module")
def data(features: pl.DataFrame) -> LabeledWindows:
    return label_windows(features, window=WINDOW, horizon=HORIZON)


def test_labels_are_forward_log_returns_of_the_same_symbol(
    features: pl.DataFrame, data: LabeledWindows
) -> None:
    counts = features.group_by("symbol").len()
    # Each symbol loses its first W-1 rows (no full window) and its last `horizon` (no outcome).
    assert len(data) == sum(max(0, n - (WINDOW - 1) - HORIZON) for n in counts["len"])
    assert np.all(np.diff(data.timestamps) >= 0)
    ts = features["timestamp"].dt.cast_time_unit("ns").to_physical().to_numpy()
    for symbol in ("ETH/BTC", "ADA/BTC"):
        rows = np.flatnonzero(features["symbol"].to_numpy() == symbol)
        price = features["price"].to_numpy()[rows]
        mine = data.symbols == symbol
        expected = np.log(price[WINDOW - 1 + HORIZON :] / price[WINDOW - 1 : -HORIZON])
        np.testing.assert_allclose(data.returns[mine], expected, rtol=1e-12)
        np.testing.assert_array_equal(data.timestamps[mine], ts[rows][WINDOW - 1 : -HORIZON])
        np.testing.assert_array_equal(data.label_end[mine], ts[rows][WINDOW - 1 + HORIZON :])
    assert data.windows.shape == (len(data), WINDOW, 8)
    assert data.windows.dtype == np.float32
    np.testing.assert_array_equal(data.labels("direction"), (data.returns > 0).astype(np.float32))
    with pytest.raises(DataError, match="unknown target 'price'"):
        data.labels("price")


def test_walk_forward_purges_every_label_that_reaches_its_fold(data: LabeledWindows) -> None:
    folds = walk_forward_splits(data.timestamps, 4, HORIZON, label_end=data.label_end)
    assert len(folds) == 4
    ts, end = data.timestamps, data.label_end
    previous_end = None
    for fold in folds:
        train, test = fold.train, fold.test
        assert len(train) > 0
        assert len(test) > 0
        # Test folds are contiguous, follow each other and come after all their training rows.
        np.testing.assert_array_equal(test, np.arange(test[0], test[-1] + 1))
        if previous_end is not None:
            assert test[0] == previous_end + 1
        previous_end = test[-1]
        assert ts[train].max() < ts[test].min() == fold.test_start
        assert ts[test].max() == fold.test_end
        # No training label window (t, end] overlaps the fold's span [test_start, test_end].
        assert np.all(end[train] < fold.test_start)
        # Purging drops exactly the earlier rows that do overlap, and nothing else.
        before = np.arange(test[0])
        overlapping = before[end[before] >= fold.test_start]
        assert fold.purged == len(overlapping) > 0
        np.testing.assert_array_equal(np.sort(np.concatenate([train, overlapping])), before)
    assert previous_end == len(data) - 1


def test_a_fold_boundary_never_splits_a_timestamp(data: LabeledWindows) -> None:
    for fold in walk_forward_splits(data.timestamps, 5, HORIZON, label_end=data.label_end):
        first = fold.test[0]
        assert data.timestamps[first - 1] < data.timestamps[first]


def test_embargo_is_a_gap_of_time_steps_before_each_fold(data: LabeledWindows) -> None:
    plain = walk_forward_splits(data.timestamps, 3, HORIZON, label_end=data.label_end)
    gapped = walk_forward_splits(data.timestamps, 3, HORIZON, 10, label_end=data.label_end)
    steps = np.unique(data.timestamps)
    for a, b in zip(plain, gapped, strict=True):
        np.testing.assert_array_equal(a.test, b.test)
        assert b.embargoed > 0
        assert len(b.train) == len(a.train) - b.embargoed
        cutoff = steps[np.searchsorted(steps, b.test_start) - 10]
        assert np.all(data.label_end[b.train] < cutoff)


def test_row_count_form_for_a_single_series() -> None:
    folds = walk_forward_splits(100, 3, horizon=5)
    assert [(len(f.train), len(f.test)) for f in folds] == [(20, 25), (45, 25), (70, 25)]
    assert [f.purged for f in folds] == [5, 5, 5]
    for f in folds:
        assert f.train.max() + 5 < f.test.min()  # row i's label ends at row i + horizon
    single = walk_forward_splits(np.arange(100) * 60_000_000_000, 3, horizon=5)
    assert [len(f.train) for f in single] == [20, 45, 70]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"times": 10, "n_splits": 20, "horizon": 1}, "too few for 20 walk-forward folds"),
        ({"times": 100, "n_splits": 0, "horizon": 1}, "n_splits >= 1, got 0"),
        ({"times": 100, "n_splits": 3, "horizon": -1}, "got -1 and 0"),
        ({"times": np.array([3, 2, 5, 6]), "n_splits": 1, "horizon": 0}, "row 1 goes back"),
        ({"times": 100, "n_splits": 3, "horizon": 30}, "no training rows left after purging"),
        ({"times": np.array([0.5, 1.5]), "n_splits": 1, "horizon": 0}, "got float64"),
    ],
)
def test_bad_split_requests_are_refused_with_the_value(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(DataError, match=message):
        walk_forward_splits(**kwargs)  # type: ignore[arg-type]


def test_label_end_must_match_and_not_precede_the_rows() -> None:
    with pytest.raises(DataError, match="label_end has shape"):
        walk_forward_splits(np.arange(10), 1, 1, label_end=np.arange(9))
    with pytest.raises(DataError, match="before the row's own time"):
        walk_forward_splits(np.arange(10), 1, 1, label_end=np.arange(10) - 1)


def test_scores() -> None:
    realized = np.array([0.01, -0.02, 0.03, -0.01])
    prob = np.array([0.9, 0.2, 0.6, 0.7])
    m = score("direction", prob, realized)
    assert m["accuracy"] == 0.75
    assert m["up_rate"] == 0.5
    expected = -np.mean(np.log([0.9, 0.8, 0.6, 0.3]))
    assert m["log_loss"] == pytest.approx(expected)
    assert m["ic"] == pytest.approx(0.4)
    r = score("return", realized * 2, realized)
    assert r["ic"] == pytest.approx(1.0)
    assert r["mse"] == pytest.approx(np.mean(realized**2))
    assert r["mse_zero"] == pytest.approx(np.mean(realized**2))
    assert information_coefficient(np.ones(5), np.arange(5.0)) == 0.0
    with pytest.raises(DataError, match="unknown target 'vol'"):
        score("vol", prob, realized)
    with pytest.raises(DataError, match=r"got \(4,\), \(3,\)"):
        score("direction", prob, realized[:3])
