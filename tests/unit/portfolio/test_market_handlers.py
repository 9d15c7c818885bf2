"""The market-data handlers of the cost and settlement engines on small live batches: null,
NaN and non-positive prices are skipped, symbols are taken apart, interleaved kinds are put
back in time order, and bars feed the impact statistics."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import deque
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import numpy as np
import polars as pl

from quantlab.core.enums import EventType, OrderType, Side, TimeInForce
from quantlab.core.instruments import InstrumentBook
from quantlab.core.messages import MarketBatch, Order
from quantlab.core.schemas import SCHEMAS
from quantlab.portfolio import SettlementEngine
from quantlab.portfolio.costs import CostEngine

T0 = dt.datetime(2021, 1, 8, tzinfo=dt.UTC)
BOOK = InstrumentBook(Decimal("1e-8"), Decimal("1e-8"))


def env(kind: EventType, rows: dict[str, list[Any]], seconds: list[int]) -> SimpleNamespace:
    ts = [T0 + dt.timedelta(seconds=s) for s in seconds]
    frame = pl.DataFrame({"timestamp": ts, **rows}).select(
        pl.col(c).cast(t) if c in rows or c == "timestamp" else pl.lit(1.0, t).alias(c)
        for c, t in SCHEMAS[kind].items()
        if c in rows or c == "timestamp" or t == pl.Float64
    )
    return SimpleNamespace(payload=MarketBatch(kind=kind, frame=frame, seq=0, ts_min=0, ts_max=0))


def order(coid: str, symbol: str, second: int) -> Order:
    return Order(
        order_id=uuid.uuid4(),
        client_order_id=coid,
        symbol=symbol,
        side=Side.BUY,
        order_type=OrderType.MARKET,
        quantity=Decimal(1),
        price=None,
        time_in_force=TimeInForce.GTC,
        strategy_id="s",
        signal_id=uuid.uuid4(),
        timestamp=T0 + dt.timedelta(seconds=second),
    )


def ns(second: int) -> int:
    return int((T0 + dt.timedelta(seconds=second)).timestamp()) * 10**9


nan = float("nan")


async def test_costs_skip_null_nan_and_non_positive_prices_per_symbol() -> None:
    costs = CostEngine(BOOK)
    await costs._on_order(SimpleNamespace(payload=order("a", "A/USD", 0)))
    await costs._on_order(SimpleNamespace(payload=order("b", "B/USD", 0)))
    quotes = {
        "symbol": ["A/USD", "B/USD", "A/USD", "B/USD", "A/USD", "B/USD", "C/USD"],
        "bid": [None, 10.0, nan, -1.0, 4.0, 0.0, None],
        "ask": [5.0, 12.0, 5.0, 1.0, 6.0, 0.0, 1.0],
    }
    await costs._on_market(env(EventType.QUOTE, quotes, [1, 2, 3, 4, 5, 6, 7]))
    assert costs._last == {"B/USD": (ns(2), 11.0), "A/USD": (ns(5), 5.0)}  # C: no price
    assert costs._history["A/USD"].ts.tolist() == [ns(5)]
    assert costs._history["B/USD"].prices.tolist() == [11.0]
    assert "C/USD" not in costs._history
    assert costs._arrival == {"a": Decimal("5.0"), "b": Decimal("11.0")}


async def test_costs_put_interleaved_kinds_back_in_time_order() -> None:
    costs = CostEngine(BOOK)
    await costs._on_market(
        env(EventType.TRADE, {"symbol": ["A/USD"] * 2, "price": [1.0, 3.0]}, [1, 3])
    )
    await costs._on_market(
        env(EventType.QUOTE, {"symbol": ["A/USD"], "bid": [2.0], "ask": [2.0]}, [2])
    )
    await costs._on_market(env(EventType.TRADE, {"symbol": ["A/USD"], "price": [4.0]}, [4]))
    history = costs._history["A/USD"]
    assert history.ts.tolist() == [ns(1), ns(2), ns(3), ns(4)]
    assert history.prices.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert costs._last["A/USD"] == (ns(4), 4.0)
    # an order made at second 2 arrives at the first price after it (3.0)
    await costs._on_order(SimpleNamespace(payload=order("o", "A/USD", 2)))
    assert costs._arrival["o"] == Decimal("3.0")


async def test_costs_keep_a_bounded_history_and_bar_statistics() -> None:
    costs = CostEngine(BOOK)
    for k in range(30):
        second = 10 * k
        bars = {
            "symbol": ["A/USD", "B/USD"],
            "open": [1.0 + k, None],  # B has no open: the whole row of B is skipped
            "close": [2.0 + k, 3.0],
            "volume": [10.0, 5.0],
        }
        await costs._on_market(env(EventType.BAR, bars, [second, second]))
    assert list(costs._returns["A/USD"]) == [(3.0 + k) / (2.0 + k) - 1.0 for k in range(29)]
    assert list(costs._volumes["A/USD"]) == [10.0] * 30
    assert "B/USD" not in costs._returns
    assert costs._impact("A/USD", Decimal(1), Decimal(30)) is not None
    # far more rows than the history keeps: the last 4096 before each batch, then the batch
    for k in range(6):
        prices = [float(i) for i in range(1000 * k, 1000 * (k + 1))]
        await costs._on_market(
            env(EventType.TRADE, {"symbol": ["A/USD"] * 1000, "price": prices}, [400 + k] * 1000)
        )
    history = costs._history["A/USD"]
    before = [1.0 + k for k in range(30)] + [float(i) for i in range(5000)]
    assert history.prices.tolist() == before[-4096:] + [float(i) for i in range(5000, 6000)]
    assert history.ts.tolist() == sorted(history.ts.tolist())
    assert costs._last["A/USD"] == (ns(405), 5999.0)


async def test_marks_are_each_symbols_last_price_when_valid() -> None:
    engine = SettlementEngine(BOOK)
    quotes = {
        "symbol": ["A/USD", "B/USD", "A/USD", "C/USD", "B/USD", "D/USD"],
        "bid": [1.0, 2.0, 3.0, 5.0, None, nan],
        "ask": [1.0, 2.0, 5.0, 7.0, 2.0, 1.0],
    }
    await engine._on_marks(env(EventType.QUOTE, quotes, [1, 2, 3, 4, 5, 6]))
    # B's last mid is null (no mark), D's is NaN (none): neither falls back to an earlier one
    assert engine.portfolio.marks == {"A/USD": Decimal("4.0"), "C/USD": Decimal("6.0")}
    trades = {"symbol": ["A/USD", "A/USD", "B/USD"], "price": [7.0, -1.0, 0.5]}
    await engine._on_marks(env(EventType.TRADE, trades, [7, 8, 9]))
    assert engine.portfolio.marks["A/USD"] == Decimal("4.0")  # the last trade is not > 0
    assert engine.portfolio.marks["B/USD"] == Decimal("0.5")
    bars = {"symbol": ["C/USD"], "open": [1.0], "close": [9.5]}
    await engine._on_marks(env(EventType.BAR, bars, [10]))
    assert engine.portfolio.marks["C/USD"] == Decimal("9.5")


def _bar_stats_by_the_definition(
    closes: list[float | None], volumes: list[float | None], window: int
) -> tuple[list[float], list[float]]:
    """One bar at a time: a close that is not > 0 skips its bar; a return between
    consecutive valid closes; a volume only when > 0."""
    rets: deque[float] = deque(maxlen=window)
    vols: deque[float] = deque(maxlen=window)
    prev = None
    for close, volume in zip(closes, volumes, strict=True):
        if close is None or not close > 0:
            continue
        if prev is not None:
            rets.append(close / prev - 1.0)
        prev = close
        if volume is not None and volume > 0:
            vols.append(float(volume))
    return list(rets), list(vols)


async def test_bar_statistics_equal_the_bar_by_bar_definition_over_any_batch_split() -> None:
    rng = np.random.default_rng(3)
    for trial in range(200):
        window = int(rng.integers(1, 40))
        n = int(rng.integers(0, 200))
        closes: list[float | None] = [float(x) for x in rng.normal(100, 1, n)]
        volumes: list[float | None] = [float(x) for x in rng.gamma(2, 3, n)]
        for values in (closes, volumes):  # nulls, NaN, 0 and negatives
            for i, u in enumerate(rng.random(n)):
                values[i] = None if u < 0.05 else nan if u < 0.1 else 0.0 if u < 0.15 else (
                    -1.0 if u < 0.2 else values[i]
                )  # fmt: skip
        costs = CostEngine(BOOK, window=window)
        cuts = sorted(rng.integers(0, n + 1, 4).tolist())
        for a, b in zip([0, *cuts], [*cuts, n], strict=True):
            if a < b:
                rows = {"symbol": ["A/USD"] * (b - a), "close": closes[a:b], "volume": volumes[a:b]}
                await costs._on_market(env(EventType.BAR, rows, list(range(a, b))))
        rets, vols = _bar_stats_by_the_definition(closes, volumes, window)
        assert list(costs._returns.get("A/USD", [])) == rets, trial
        assert list(costs._volumes.get("A/USD", [])) == vols, trial
