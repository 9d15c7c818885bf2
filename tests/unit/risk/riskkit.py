"""Builders shared by the risk tests: orders, fills, market batches, a started engine."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from typing import Any

import polars as pl

from quantlab.bus import InProcessBus, topics
from quantlab.bus.base import Envelope
from quantlab.core import ids
from quantlab.core.clock import SimulatedClock, datetime_to_ns
from quantlab.core.enums import EventType, Liquidity, OrderStatus, OrderType, Side, TimeInForce
from quantlab.core.instruments import InstrumentBook
from quantlab.core.messages import BreakerEvent, Fill, MarketBatch, Order, OrderDenied, OrderEvent
from quantlab.core.schemas import BAR_SCHEMA, QUOTE_SCHEMA
from quantlab.risk import RiskEngine, RiskLimits

T0 = dt.datetime(2018, 1, 10, 4, 55, tzinfo=dt.UTC)
T0_NS = datetime_to_ns(T0)
SECOND = 1_000_000_000
INSTRUMENTS = InstrumentBook(Decimal("0.000001"), Decimal("0.001"))
WIDE = RiskLimits(max_position_notional=Decimal(10**9), max_order_notional=Decimal(10**9))


def make_order(
    side: Side,
    quantity: str | Decimal,
    price: str | Decimal | None = "0.05",
    n: int = 0,
    symbol: str = "ETH/BTC",
    strategy: str = "risk-test",
    timestamp: dt.datetime = T0,
) -> Order:
    signal = ids.signal_id(strategy, symbol, n)
    coid = ids.client_order_id(signal)
    return Order(
        order_id=ids.order_id(coid),
        client_order_id=coid,
        symbol=symbol,
        side=side,
        order_type=OrderType.LIMIT if price is not None else OrderType.MARKET,
        quantity=Decimal(quantity),
        price=None if price is None else Decimal(price),
        time_in_force=TimeInForce.IOC,
        strategy_id=strategy,
        signal_id=signal,
        timestamp=timestamp,
    )


def fill_of(order: Order, price: str | Decimal | None = None, fee: str = "0") -> Fill:
    px = Decimal(price) if price is not None else order.price
    assert px is not None
    return Fill(
        fill_id=ids.fill_id("paper", order.client_order_id),
        order_id=order.order_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side,
        price=px,
        quantity=order.quantity,
        fee=Decimal(fee),
        fee_currency="BTC",
        liquidity=Liquidity.TAKER,
        timestamp=T0,
        venue="paper",
        trade_id=order.client_order_id,
    )


def event_of(order: Order, status: OrderStatus) -> OrderEvent:
    return OrderEvent(
        order_id=order.order_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        status=status,
        venue="paper",
        timestamp=T0,
    )


def bars(rows: list[tuple[str, int, float]]) -> pl.DataFrame:
    """A bar frame from ``(symbol, ts_ns, close)`` rows."""
    return pl.DataFrame(
        {
            "symbol": [r[0] for r in rows],
            "timestamp": [r[1] for r in rows],
            "open": [r[2] for r in rows],
            "high": [r[2] for r in rows],
            "low": [r[2] for r in rows],
            "close": [r[2] for r in rows],
            "volume": [1.0] * len(rows),
        },
        schema_overrides={"timestamp": pl.Int64},
    ).with_columns(pl.col("timestamp").cast(BAR_SCHEMA["timestamp"]))


def quotes(rows: list[tuple[str, int, float, float]]) -> pl.DataFrame:
    """A quote frame from ``(symbol, ts_ns, bid, ask)`` rows."""
    return pl.DataFrame(
        {
            "symbol": [r[0] for r in rows],
            "timestamp": [r[1] for r in rows],
            "bid": [r[2] for r in rows],
            "ask": [r[3] for r in rows],
            "bid_size": [1.0] * len(rows),
            "ask_size": [1.0] * len(rows),
        },
        schema_overrides={"timestamp": pl.Int64},
    ).with_columns(pl.col("timestamp").cast(QUOTE_SCHEMA["timestamp"]))


def batch(frame: pl.DataFrame, kind: EventType = EventType.BAR, seq: int = 0) -> MarketBatch:
    ts = frame["timestamp"].dt.epoch("ns")
    return MarketBatch(
        kind=kind,
        frame=frame,
        seq=seq,
        ts_min=int(ts.min()),  # type: ignore[arg-type]
        ts_max=int(ts.max()),  # type: ignore[arg-type]
    )


class Outcomes:
    """What the engine published: approvals, denials and breaker events."""

    def __init__(self) -> None:
        self.approved: list[Order] = []
        self.denied: list[OrderDenied] = []
        self.breaker: list[BreakerEvent] = []
        self.ids: list[str] = []

    async def on_approved(self, envelope: Envelope) -> None:
        self.approved.append(envelope.payload)
        self.ids.append(envelope.id)

    async def on_denied(self, envelope: Envelope) -> None:
        self.denied.append(envelope.payload)
        self.ids.append(envelope.id)

    async def on_breaker(self, envelope: Envelope) -> None:
        self.breaker.append(envelope.payload)

    def attach(self, bus: InProcessBus) -> Outcomes:
        bus.consume(topics.orders("approved"), self.on_approved, name="test.approved")
        bus.consume(topics.orders("denied"), self.on_denied, name="test.denied")
        bus.consume(topics.risk("breaker"), self.on_breaker, name="test.breaker")
        return self


async def start_engine(
    bus: InProcessBus,
    limits: RiskLimits = WIDE,
    clock: SimulatedClock | None = None,
    **kwargs: Any,
) -> tuple[RiskEngine, Outcomes, SimulatedClock]:
    clock = clock or SimulatedClock(T0_NS)
    engine = RiskEngine(limits, INSTRUMENTS, clock, **kwargs)
    await engine.start(bus)
    return engine, Outcomes().attach(bus), clock


async def settle(bus: InProcessBus) -> None:
    await asyncio.wait_for(bus.drain(), 10)
    assert not bus.handler_errors, bus.handler_errors


async def feed(
    bus: InProcessBus,
    clock: SimulatedClock,
    rows: list[tuple[str, int, float]],
    kind: EventType = EventType.BAR,
) -> None:
    """Publish bars (``(symbol, ts_ns, close)``), move the clock to the newest, settle."""
    frame = bars(rows)
    b = batch(frame, kind)
    clock.advance_to(b.ts_max)
    await bus.publish(topics.market_data(kind), b)
    await settle(bus)


async def submit(bus: InProcessBus, *orders: Order) -> None:
    for order in orders:
        await bus.publish(topics.orders("new"), order, msg_id=order.client_order_id)
    await settle(bus)
