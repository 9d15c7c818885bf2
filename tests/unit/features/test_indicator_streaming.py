"""Streaming equals batch, bit for bit, for every indicator and any batch boundaries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from quantlab.features import Atr, Bollinger, Count, Ema, IndicatorSet, Macd, Rsi, Sma

DATA = Path(__file__).resolve().parents[3] / "src" / "quantlab" / "_data" / "market"
BARS = (
    pl.read_parquet(DATA / "binance_btc_pairs_5m_2018-01.parquet")
    .sort("timestamp", "symbol")
    .head(8_000)
)


def make() -> IndicatorSet:
    return IndicatorSet(
        [Count(), Sma(7), Ema(5), Rsi(9), Macd(5, 13, 4), Bollinger(10, 1.5), Atr(6)]
    )


WHOLE = make().update(BARS)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.sets(st.integers(1, BARS.height - 1), max_size=40))
def test_any_split_gives_the_same_frame(cuts: set[int]) -> None:
    ind, parts, prev = make(), [], 0
    for cut in [*sorted(cuts), BARS.height]:
        parts.append(ind.update(BARS.slice(prev, cut - prev)))
        prev = cut
    assert_frame_equal(pl.concat(parts), WHOLE, check_exact=True)


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(st.integers(0, BARS.height - 2), st.integers(0, 2**32 - 1))
def test_no_look_ahead(k: int, seed: int) -> None:
    """Changing rows after k never changes the outputs of rows 0..k."""
    rng = np.random.default_rng(seed)
    changed = BARS.with_columns(
        close=pl.when(pl.int_range(pl.len()) > k)
        .then(pl.col("close") * pl.Series(rng.uniform(0.5, 2.0, BARS.height)))
        .otherwise(pl.col("close"))
    )
    assert_frame_equal(make().update(changed).head(k + 1), WHOLE.head(k + 1), check_exact=True)


def test_new_symbols_midway_keep_earlier_state() -> None:
    first = BARS.filter(pl.col("symbol").is_in(["ADA/BTC", "ETH/BTC"]))
    ind = make()
    a = ind.update(first.head(500))
    b = ind.update(BARS.slice(0, 3_000))  # brings eight symbols never seen
    assert a.height == 500
    assert b.height == 3_000
    assert len(ind.symbols) == 10
