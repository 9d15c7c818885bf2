"""Exact streaming features: batch after batch equals the whole history at once (DESIGN §2)."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from quantlab.adapters.sim.data import bundled_dir
from quantlab.core.errors import DataError
from quantlab.features.indicators import ema_alpha
from quantlab.features.streaming import CrossoverFeatures

# Same examples on every run (no example database, no random seed): deterministic tests.
DETERMINISTIC = settings(derandomize=True, database=None, deadline=None)

BARS = (
    pl.read_parquet(bundled_dir() / "binance_btc_pairs_5m_2018-01.parquet")
    .with_columns(pl.col("timestamp").cast(pl.Datetime("ns", "UTC")))
    .sort("timestamp", "symbol")
)
assert BARS["symbol"].n_unique() == 10
PAIRS = [(2, 3), (5, 20), (12, 26)]


@functools.cache
def whole(fast: int, slow: int) -> pl.DataFrame:
    return CrossoverFeatures(fast, slow).update(BARS)


def streamed(features: CrossoverFeatures, frame: pl.DataFrame, cuts: list[int]) -> pl.DataFrame:
    bounds = [0, *sorted(cuts), frame.height]
    return pl.concat([features.update(frame[a:b]) for a, b in itertools.pairwise(bounds)])


@settings(DETERMINISTIC, max_examples=50)
@given(
    st.sampled_from(PAIRS),
    st.sets(st.integers(1, BARS.height - 1), max_size=25),
    st.lists(st.integers(1, BARS.height - 40), max_size=2),
)
def test_batches_equal_the_whole_history(
    pair: tuple[int, int], cuts: set[int], bursts: list[int]
) -> None:
    # Bursts add runs of tiny batches (1 to 3 rows), where carried state matters most.
    all_cuts = set(cuts)
    for start in bursts:
        all_cuts.update(range(start, start + 40, 1 + start % 3))
    fast, slow = pair
    got = streamed(CrossoverFeatures(fast, slow), BARS, sorted(all_cuts))
    # Same rows, same order, same nulls; values to 1e-9 relative.
    assert_frame_equal(got, whole(fast, slow), check_exact=False, rel_tol=1e-9, abs_tol=0.0)


def test_columns_order_and_warm_up() -> None:
    features = CrossoverFeatures(12, 26)
    out = whole(12, 26)
    assert out.columns == features.columns
    assert out.columns == [
        *("symbol", "timestamp", "price"),
        *("sma_12", "sma_26", "ema_12", "ema_26", "n"),
    ]
    assert_frame_equal(out.select("symbol", "timestamp"), BARS.select("symbol", "timestamp"))
    assert (out["price"] == BARS["close"]).all()
    # n counts each symbol's rows; the SMAs are null exactly until their window is full.
    n_expected = BARS.select(pl.int_range(1, pl.len() + 1).over("symbol").cast(pl.Int64))
    assert (out["n"] == n_expected.to_series()).all()
    assert (out["sma_12"].is_null() == (out["n"] < 12)).all()
    assert (out["sma_26"].is_null() == (out["n"] < 26)).all()
    # TA-Lib's EMA: seeded at the n-th value with the SMA of the first n, null before.
    assert (out["ema_12"].is_null() == (out["n"] < 12)).all()
    assert (out["ema_26"].is_null() == (out["n"] < 26)).all()


def _ema_reference(x: np.ndarray, n: int) -> np.ndarray:
    """TA-Lib's EMA: NaN for the first n-1 values, the SMA of the first n, then the recursion."""
    alpha = 2.0 / (n + 1.0)
    out = np.full_like(x, np.nan)
    if len(x) < n:
        return out
    y = x[:n].mean()
    out[n - 1] = y
    for i in range(n, len(x)):
        y = y + alpha * (x[i] - y)
        out[i] = y
    return out


def _sma_reference(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full_like(x, np.nan)
    out[n - 1 :] = np.convolve(x, np.ones(n) / n, mode="valid")
    return out


@pytest.mark.parametrize(("fast", "slow"), PAIRS)
def test_ema_and_sma_equal_independent_references(fast: int, slow: int) -> None:
    assert ema_alpha(slow) == 2.0 / (slow + 1)
    out = whole(fast, slow)
    for (symbol,), part in out.partition_by("symbol", as_dict=True).items():
        x = part["price"].to_numpy()
        for n in (fast, slow):
            np.testing.assert_allclose(
                part[f"ema_{n}"].fill_null(np.nan).to_numpy(),
                _ema_reference(x, n),
                rtol=1e-12,
                err_msg=symbol,
            )
            sma = part[f"sma_{n}"].fill_null(np.nan).to_numpy()
            np.testing.assert_allclose(sma, _sma_reference(x, n), rtol=1e-9, err_msg=symbol)


SMALL = BARS.head(3_000)


@settings(DETERMINISTIC, max_examples=40)
@given(
    st.integers(0, SMALL.height - 2),
    st.integers(0, 2**32 - 1),
    st.sets(st.integers(1, SMALL.height - 1), max_size=5),
)
def test_no_look_ahead(k: int, seed: int, cuts: set[int]) -> None:
    """Changing the rows after index k never changes the features of rows 0..k."""
    rng = np.random.default_rng(seed)
    changed = SMALL.with_columns(
        close=pl.when(pl.int_range(pl.len()) > k)
        .then(pl.col("close") * pl.Series(rng.uniform(0.5, 2.0, SMALL.height)))
        .otherwise(pl.col("close"))
    )
    base = CrossoverFeatures(5, 20).update(SMALL).head(k + 1)
    after_change = CrossoverFeatures(5, 20).update(changed).head(k + 1)
    assert_frame_equal(after_change, base, check_exact=True)
    # And in a streaming run the rows up to k are already final when row k's batch is done.
    live = streamed(CrossoverFeatures(5, 20), changed, list(cuts)).head(k + 1)
    assert_frame_equal(live, base, check_exact=False, rel_tol=1e-9, abs_tol=0.0)


def test_empty_and_single_row_batches() -> None:
    features = CrossoverFeatures(3, 7)
    frame = BARS.head(300)
    parts = [features.update(frame[i : i + 1]) for i in range(150)]
    parts.append(features.update(frame.clear()))
    parts.append(features.update(frame[150:]))
    assert parts[150].is_empty()
    reference = CrossoverFeatures(3, 7).update(frame)
    assert_frame_equal(pl.concat(parts), reference, check_exact=False, rel_tol=1e-9, abs_tol=0.0)


def test_a_symbol_seen_only_in_later_batches() -> None:
    eth = BARS.filter(pl.col("symbol") == "ETH/BTC").head(100)
    ada = BARS.filter(pl.col("symbol") == "ADA/BTC").head(100)
    features = CrossoverFeatures(5, 20)
    features.update(eth.head(50))
    late = features.update(pl.concat([eth.tail(50), ada]).sort("timestamp", "symbol"))
    alone = CrossoverFeatures(5, 20).update(ada)
    assert_frame_equal(late.filter(pl.col("symbol") == "ADA/BTC"), alone)


@pytest.mark.parametrize(("fast", "slow"), [(1, 5), (5, 5), (20, 5)])
def test_bad_windows_are_refused(fast: int, slow: int) -> None:
    with pytest.raises(DataError, match="fast < slow"):
        CrossoverFeatures(fast, slow)


def test_missing_price_column_is_refused() -> None:
    with pytest.raises(DataError, match="close"):
        CrossoverFeatures(2, 3).update(BARS.drop("close").head(5))
