"""EmaCross: a signal exactly at each crossing after warm-up, whatever the batch boundaries."""

from __future__ import annotations

import datetime as dt
import itertools
import math
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlab.adapters.sim.data import bundled_dir
from quantlab.core import ids
from quantlab.core.clock import SimulatedClock, datetime_to_ns
from quantlab.core.enums import Side
from quantlab.core.errors import DataError
from quantlab.core.messages import Signal
from quantlab.features.streaming import CrossoverFeatures
from quantlab.signals.ema_cross import EmaCross
from quantlab.signals.strategy import Strategy, StrategyContext

# Same examples on every run (no example database, no random seed): deterministic tests.
DETERMINISTIC = settings(derandomize=True, database=None, deadline=None)

FAST, SLOW = 5, 20
BARS = (
    pl.read_parquet(bundled_dir() / "binance_btc_pairs_5m_2018-01.parquet")
    .with_columns(pl.col("timestamp").cast(pl.Datetime("ns", "UTC")))
    .sort("timestamp", "symbol")
)
FEATURES = CrossoverFeatures(FAST, SLOW).update(BARS)
CTX = StrategyContext(clock=SimulatedClock(), assumed_spread_bps=10.0)


def run(features: pl.DataFrame, cuts: list[int] | None = None) -> list[Signal]:
    strategy = EmaCross(FAST, SLOW)
    bounds = [0, *sorted(cuts or []), features.height]
    out: list[Signal] = []
    for a, b in itertools.pairwise(bounds):
        out.extend(strategy.on_features(features[a:b], CTX))
    return out


def reference_crossings(features: pl.DataFrame) -> list[tuple[str, int, Side]]:
    """(symbol, ts_ns, side) at each sign change of ema_fast - ema_slow once n >= slow."""
    last: dict[str, int] = {}
    out = []
    for row in features.iter_rows(named=True):
        if row["n"] < SLOW:
            continue
        diff = row[f"ema_{FAST}"] - row[f"ema_{SLOW}"]
        if diff == 0:
            continue
        sign = 1 if diff > 0 else -1
        prev = last.get(row["symbol"])
        if prev is not None and prev != sign:
            side = Side.BUY if sign > 0 else Side.SELL
            out.append((row["symbol"], datetime_to_ns(row["timestamp"]), side))
        last[row["symbol"]] = sign
    return out


def key(signal: Signal) -> tuple[str, int, Side]:
    return signal.symbol, datetime_to_ns(signal.timestamp), signal.side


def test_is_a_strategy() -> None:
    assert isinstance(EmaCross(FAST, SLOW), Strategy)


def test_signals_exactly_at_each_crossing_after_warm_up() -> None:
    signals = run(FEATURES)
    expected = reference_crossings(FEATURES)
    assert len(expected) > 1000  # real data crosses a lot on 5-minute bars
    assert [key(s) for s in signals] == expected
    assert {s.symbol for s in signals} == set(BARS["symbol"].unique())


def test_buy_on_upward_cross_and_sell_on_downward() -> None:
    for signal in run(FEATURES):
        fast, slow = signal.features
        assert (fast > slow) == (signal.side is Side.BUY)
    # And the crossing is real: the row before (same symbol) was on the other side.
    by_symbol = {s: part for (s,), part in FEATURES.partition_by("symbol", as_dict=True).items()}
    for signal in run(FEATURES)[:200]:
        part = by_symbol[signal.symbol].with_row_index("i")
        (i,) = part.filter(pl.col("timestamp") == signal.timestamp)["i"].to_list()
        before = part.row(i - 1, named=True)
        diff_before = before[f"ema_{FAST}"] - before[f"ema_{SLOW}"]
        if diff_before != 0:
            assert (diff_before > 0) == (signal.side is Side.SELL)


def test_no_signal_during_warm_up() -> None:
    warm = FEATURES.filter(pl.col("n") < SLOW + 1)
    assert run(warm) == []  # at most one post-warm-up row per symbol: nothing to cross from
    at = pl.DataFrame(
        [(s.symbol, s.timestamp) for s in run(FEATURES)],
        schema={"symbol": pl.String, "timestamp": pl.Datetime("ns", "UTC")},
        orient="row",
    ).join(FEATURES, on=["symbol", "timestamp"], how="left")
    assert at["n"].null_count() == 0
    assert min(at["n"].to_list()) > SLOW


SUBSET = FEATURES.head(15_000)
SUBSET_SIGNALS = run(SUBSET)


@settings(DETERMINISTIC, max_examples=30)
@given(st.sets(st.integers(1, SUBSET.height - 1), max_size=20))
def test_batch_split_invariance(cuts: set[int]) -> None:
    assert run(SUBSET, sorted(cuts)) == SUBSET_SIGNALS


def test_batch_split_invariance_with_streamed_features() -> None:
    """Bars in batches -> streamed features -> signals, equal to the one-shot run."""
    features, strategy = CrossoverFeatures(FAST, SLOW), EmaCross(FAST, SLOW)
    got: list[Signal] = []
    for offset in range(0, BARS.height, 997):
        got.extend(strategy.on_features(features.update(BARS[offset : offset + 997]), CTX))
    assert got == run(FEATURES)


def test_signal_ids_are_deterministic() -> None:
    first, second = run(SUBSET), run(SUBSET)
    assert [s.signal_id for s in first] == [s.signal_id for s in second]
    assert len({s.signal_id for s in first}) == len(first)
    s = first[0]
    assert s.signal_id == ids.signal_id("ema_cross", s.symbol, datetime_to_ns(s.timestamp))


def test_strength_confidence_and_market_fields() -> None:
    signals = run(FEATURES)
    for s in signals:
        assert 0.0 <= s.strength <= 1.0
        assert 0.0 <= s.confidence <= 1.0
        assert s.strategy_id == "ema_cross"
        assert s.mid > 0
        assert math.isclose(s.spread, s.mid * 10.0 / 1e4)
        assert s.metadata == {"rule": "ema_cross", "fast": str(FAST), "slow": str(SLOW)}
    strengths = [s.strength for s in signals]
    assert 0.0 < min(strengths) < 1.0
    assert max(strengths) == 1.0  # capped


def test_a_crossing_on_a_batch_boundary_is_seen_once() -> None:
    signals = run(SUBSET)
    target = signals[len(signals) // 2]
    (index,) = (
        SUBSET.with_row_index("i")
        .filter(pl.col("symbol") == target.symbol, pl.col("timestamp") == target.timestamp)["i"]
        .to_list()
    )
    for cut in (index, index + 1):  # the crossing row first in, or last in, its batch
        assert run(SUBSET, [cut]) == signals


def test_missing_columns_are_refused() -> None:
    with pytest.raises(DataError, match="ema_20"):
        EmaCross(FAST, SLOW).on_features(FEATURES.drop("ema_20").head(3), CTX)


@pytest.mark.parametrize(("fast", "slow"), [(1, 3), (3, 3), (9, 3)])
def test_bad_windows_are_refused(fast: int, slow: int) -> None:
    with pytest.raises(DataError, match="fast < slow"):
        EmaCross(fast, slow)


def _frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "symbol": pl.String,
            "timestamp": pl.Datetime("ns", "UTC"),
            "price": pl.Float64,
            "ema_2": pl.Float64,
            "ema_3": pl.Float64,
            "n": pl.Int64,
        },
        orient="row",
    )


def test_equal_averages_are_no_side() -> None:
    t0 = dt.datetime(2018, 1, 10, tzinfo=dt.UTC)
    fast_slow = [(1.0, 2.0), (2.0, 2.0), (1.5, 2.0), (2.5, 2.0)]  # below, tie, below, above
    rows = [
        {
            "symbol": "X/Y",
            "timestamp": t0 + dt.timedelta(minutes=5 * i),
            "price": 2.0,
            "ema_2": f,
            "ema_3": s,
            "n": 3 + i,
        }
        for i, (f, s) in enumerate(fast_slow)
    ]
    strategy = EmaCross(2, 3)
    # The tie is no side: below -> tie -> below is no crossing; the last row crosses up.
    assert strategy.on_features(_frame(rows[:3]), CTX) == []
    (signal,) = strategy.on_features(_frame(rows[3:]), CTX)
    assert signal.side is Side.BUY
    assert signal.timestamp == rows[3]["timestamp"]
    assert signal.strength == 1.0  # gap 0.5 / price 2.0 is far above the 0.2 % full strength
