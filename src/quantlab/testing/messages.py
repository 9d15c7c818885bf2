"""Example messages of every wire type, with the values that stress an encoding: timezone
offsets, Decimals finer than a float, extreme floats, unicode. The message and codec tests
share them; `WIRE_MESSAGES` holds one of each `WireMessage` type.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from quantlab.core import (
    Aggressor,
    Bar,
    BreakerEvent,
    BreakerState,
    DataGap,
    ExpertWeights,
    Fill,
    Liquidity,
    NewsEvent,
    Order,
    OrderDenied,
    OrderEvent,
    OrderStatus,
    OrderType,
    PositionUpdate,
    Quote,
    Side,
    Signal,
    TimeInForce,
    Trade,
)

UTC_TS = dt.datetime(2024, 1, 5, 10, 0, 0, 123456, tzinfo=dt.UTC)
PLUS_5 = dt.timezone(dt.timedelta(hours=5, minutes=30))
OFFSET_TS = dt.datetime(2024, 1, 5, 15, 30, 0, 654321, tzinfo=PLUS_5)
NAIVE_TS = dt.datetime(2024, 1, 5, 10, 0, 0)
TS_NS = 1_704_448_800_123_456_789

SIGNAL_ID = uuid.UUID("3f7c1a52-0000-4000-8000-000000000001")
ORDER_ID = uuid.UUID("3f7c1a52-0000-4000-8000-000000000002")
FILL_ID = uuid.UUID("3f7c1a52-0000-4000-8000-000000000003")

# More significant digits than a float64 holds: must survive the wire exactly.
FINE_QTY = Decimal("0.000000012345678901234567890123")
BIG_PRICE = Decimal("12345678901234567890.123456789")


def make_signal(**overrides: Any) -> Signal:
    fields: dict[str, Any] = {
        "signal_id": SIGNAL_ID,
        "strategy_id": "mom-fast",
        "symbol": "BTC/USD",
        "side": Side.BUY,
        "strength": 0.75,
        "confidence": 0.6,
        "timestamp": UTC_TS,
        "features": [0.1, -2.5, 1e-300, 1.7976931348623157e308, -0.0],
        "metadata": {"model": "onnx-v3", "note": "ünïcode ✓"},
        "mid": 43_250.5,
        "spread": 0.5,
    }
    fields.update(overrides)
    return Signal(**fields)


def make_order(**overrides: Any) -> Order:
    fields: dict[str, Any] = {
        "order_id": ORDER_ID,
        "client_order_id": "ql-0123456789abcdef0123456789abcdef",
        "symbol": "BTC/USD",
        "side": Side.SELL,
        "order_type": OrderType.LIMIT,
        "quantity": FINE_QTY,
        "price": BIG_PRICE,
        "time_in_force": TimeInForce.IOC,
        "strategy_id": "mom-fast",
        "signal_id": SIGNAL_ID,
        "timestamp": OFFSET_TS,
    }
    fields.update(overrides)
    return Order(**fields)


def make_fill(**overrides: Any) -> Fill:
    fields: dict[str, Any] = {
        "fill_id": FILL_ID,
        "order_id": ORDER_ID,
        "client_order_id": "ql-0123456789abcdef0123456789abcdef",
        "symbol": "ETH/USD",
        "side": Side.BUY,
        "price": Decimal("2250.123456789012345678"),
        "quantity": FINE_QTY,
        "fee": Decimal("-0.000001"),
        "fee_currency": "USD",
        "liquidity": Liquidity.MAKER,
        "timestamp": UTC_TS,
        "venue": "paper",
        "trade_id": "t-42",
        "strategy_id": "mom-fast",
    }
    fields.update(overrides)
    return Fill(**fields)


def make_quote(**overrides: Any) -> Quote:
    fields: dict[str, Any] = {
        "symbol": "BTC/USD",
        "ts_event": TS_NS,
        "bid": 100.0,
        "ask": 100.5,
        "bid_size": 2.0,
        "ask_size": 3.0,
    }
    fields.update(overrides)
    return Quote(**fields)


def make_trade(**overrides: Any) -> Trade:
    fields: dict[str, Any] = {
        "symbol": "BTC/USD",
        "ts_event": TS_NS,
        "price": 100.25,
        "size": 0.5,
        "aggressor": Aggressor.SELLER,
        "trade_id": "x-1",
    }
    fields.update(overrides)
    return Trade(**fields)


def make_bar(**overrides: Any) -> Bar:
    fields: dict[str, Any] = {
        "symbol": "AAPL",
        "ts_event": TS_NS,
        "open": 180.0,
        "high": 182.5,
        "low": 179.25,
        "close": 181.0,
        "volume": 12_345.0,
    }
    fields.update(overrides)
    return Bar(**fields)


WIRE_MESSAGES = {
    "Quote": make_quote(),
    "Trade": make_trade(),
    "Bar": make_bar(),
    "NewsEvent": NewsEvent(
        id="n-1",
        symbols=["AAPL", "MSFT"],
        headline="Tech rallies — “quotes” & ünïcode",
        source="wire",
        url="https://example.test/n-1",
        timestamp=OFFSET_TS,
    ),
    "Signal": make_signal(),
    "ExpertWeights": ExpertWeights(
        strategy_id="hedge",
        timestamp=UTC_TS,
        rounds=7,
        weights={"macd_cross": 0.125, "patterns": 0.375, "model": 0.5},
        advice={"macd_cross": -1.0, "patterns": 0.25, "model": 0.0625},
    ),
    "Order": make_order(),
    "OrderDenied": OrderDenied(
        order=make_order(order_type=OrderType.MARKET, price=None),
        reason="max_notional",
        detail="notional 1.2e6 > limit 1e6 for BTC/USD",
        timestamp=UTC_TS,
    ),
    "OrderEvent": OrderEvent(
        order_id=ORDER_ID,
        client_order_id="ql-0123456789abcdef0123456789abcdef",
        symbol="BTC/USD",
        status=OrderStatus.REJECTED,
        venue="paper",
        timestamp=UTC_TS,
        reason="insufficient funds",
    ),
    "Fill": make_fill(),
    "PositionUpdate": PositionUpdate(
        symbol="ETH/USD",
        quantity=Decimal("-1.500000000000000001"),  # short
        avg_price=Decimal("2250.123456789012345678"),
        realized_pnl=Decimal("-12.3400"),
        fees=Decimal("0.0012"),
        currency="USD",
        timestamp=OFFSET_TS,
    ),
    "BreakerEvent": BreakerEvent(
        state=BreakerState.HALTED,
        previous=BreakerState.REDUCING,
        trigger="drawdown",
        reason="drawdown 12.5% >= halt limit 10%",
        timestamp=OFFSET_TS,
    ),
    "DataGap": DataGap(
        source="coinbase",
        symbol="BTC/USD",
        start=UTC_TS,
        end=OFFSET_TS,
        seconds=7.5,
    ),
}
