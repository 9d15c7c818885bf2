"""Streaming equals batch, bit for bit, for every indicator and any batch boundaries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from quantlab.features import (
    Atr,
    Bollinger,
    Count,
    Ema,
    IndicatorSet,
    Macd,
    Returns,
    Rsi,
    Sma,
    Volatility,
    Vwap,
    ZScore,
)

DATA = Path(__file__).resolve().parents[3] / "src" / "quantlab" / "_data" / "market"
BARS = (
    pl.read_parquet(DATA / "binance_btc_pairs_5m_2018-01.parquet")
    .sort("timestamp", "symbol")
    .head(8_000)
)


def make() -> IndicatorSet:
    return IndicatorSet(
        [
            Count(), Sma(7), Ema(5), Rsi(9), Macd(5, 13, 4), Bollinger(10, 1.5), Atr(6),
            Returns(), Returns(log=True), Volatility(8), ZScore(6), Vwap(5),
        ]
    )  # fmt: skip


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


def _random_walk(symbols: int, rows: int) -> pl.DataFrame:
    rng = np.random.default_rng(17)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, (symbols, rows)), axis=1))
    return pl.DataFrame(
        {
            "symbol": np.repeat([f"R{i:02d}" for i in range(symbols)], rows),
            "timestamp": pl.Series(np.tile(np.arange(rows, dtype=np.int64), symbols)).cast(
                pl.Datetime("ns", "UTC")
            ),
            "close": close.reshape(-1),
            "high": close.reshape(-1) * 1.001,
            "low": close.reshape(-1) * 0.999,
            "volume": np.ones(symbols * rows),
        }
    )


def test_two_threads_on_grouped_frames_equal_one_thread(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Large frames grouped by symbol are split across two threads at a symbol boundary;
    the result must equal the one-thread computation bit for bit."""
    from quantlab.features import library

    frame = _random_walk(8, 40_000)  # 320,000 rows, eight runs
    assert library._split_point(library.SymbolCodes().codes(frame["symbol"])) is not None
    threaded = make().update(frame)
    monkeypatch.setattr(library, "_PARALLEL_ROWS", 10**12)
    single = make().update(frame)
    assert_frame_equal(threaded, single, check_exact=True)
    # and an interleaved frame (symbols repeat in many runs) is never split
    interleaved = frame.sort("timestamp", "symbol")
    codes = library.SymbolCodes().codes(interleaved["symbol"])
    assert library._split_point(codes) is None
