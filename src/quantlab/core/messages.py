"""Typed messages that cross stages (DESIGN §4).

Every message is a frozen `msgspec.Struct`: JSON on the bus between processes, MessagePack at
rest, passed by reference inside one process. Constructors validate ranges and name the bad value.
Market-data structs carry integer nanoseconds (`ts_event`); signals, orders and fills carry an
aware UTC `timestamp` as DESIGN §4 specifies.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from decimal import Decimal
from typing import Any

import msgspec
import polars as pl

from quantlab.core.enums import (
    Aggressor,
    BreakerState,
    EventType,
    Liquidity,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from quantlab.core.errors import ValidationError


def _require_finite_positive(what: str, value: float, symbol: str) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValidationError(f"{what} must be a finite number > 0, got {value!r} for {symbol}")


def _require_finite(what: str, value: float, symbol: str, *, non_negative: bool = True) -> None:
    if not math.isfinite(value) or (non_negative and value < 0):
        bound = "a finite number >= 0" if non_negative else "a finite number"
        raise ValidationError(f"{what} must be {bound}, got {value!r} for {symbol}")


def _require_aware(what: str, value: dt.datetime) -> None:
    if value.tzinfo is None:
        raise ValidationError(f"{what} must be timezone-aware UTC, got naive {value.isoformat()}")


class Quote(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    symbol: str
    ts_event: int
    bid: float
    ask: float
    bid_size: float = 0.0
    ask_size: float = 0.0

    def __post_init__(self) -> None:
        _require_finite_positive("bid", self.bid, self.symbol)
        _require_finite_positive("ask", self.ask, self.symbol)
        _require_finite("bid_size", self.bid_size, self.symbol)
        _require_finite("ask_size", self.ask_size, self.symbol)
        if self.bid > self.ask:
            raise ValidationError(
                f"crossed quote for {self.symbol}: bid {self.bid} > ask {self.ask}"
            )

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2.0


class Trade(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    symbol: str
    ts_event: int
    price: float
    size: float
    aggressor: Aggressor = Aggressor.UNKNOWN
    trade_id: str = ""

    def __post_init__(self) -> None:
        _require_finite_positive("price", self.price, self.symbol)
        _require_finite_positive("size", self.size, self.symbol)


class Bar(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    symbol: str
    ts_event: int
    open: float
    high: float
    low: float
    close: float
    volume: float

    def __post_init__(self) -> None:
        for name in ("open", "high", "low", "close"):
            _require_finite_positive(name, getattr(self, name), self.symbol)
        _require_finite("volume", self.volume, self.symbol)
        if self.low > self.high:
            raise ValidationError(f"bar low {self.low} > high {self.high} for {self.symbol}")


class NewsEvent(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    id: str
    symbols: list[str]
    headline: str
    source: str
    url: str
    timestamp: dt.datetime

    def __post_init__(self) -> None:
        _require_aware("news timestamp", self.timestamp)


class MarketBatch(msgspec.Struct, frozen=True, kw_only=True):
    """A batch of validated market events of one kind and one source, many symbols.

    The frame has the kind's schema (`core.schemas`) plus a ``flags`` bit column (data-quality
    flags, `quantlab.ingest.quality`); rows are in arrival order, time-ordered per symbol.

    In-process only (the frame travels by reference); across processes it travels as Arrow IPC.
    """

    kind: EventType
    frame: pl.DataFrame
    seq: int
    ts_min: int
    ts_max: int
    source: str = ""
    # Wall time (ns) its oldest row reached the ingest engine (0: unknown): where the
    # end-to-end data -> order latency starts (`ExecutionEngine.data_to_order`).
    ts_recv: int = 0


class FeatureBatch(msgspec.Struct, frozen=True, kw_only=True):
    """Feature rows computed from one `MarketBatch` under a named, versioned spec."""

    spec: str
    version: str
    frame: pl.DataFrame
    seq: int
    ts_max: int
    ts_recv: int = 0  # the `MarketBatch.ts_recv` it was computed from


class Signal(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A strategy's view on a symbol (DESIGN §4).

    `mid` and `spread` record the market at decision time, so the order builder prices the
    order off what the strategy saw, not off whatever arrived since.
    """

    signal_id: uuid.UUID
    strategy_id: str
    symbol: str
    side: Side
    strength: float
    confidence: float
    timestamp: dt.datetime
    features: list[float] = msgspec.field(default_factory=list)
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    mid: float = 0.0
    spread: float = 0.0
    ts_recv: int = 0  # wall ns the market data it decided on was received (0: unknown)

    def __post_init__(self) -> None:
        for name in ("strength", "confidence"):
            value = getattr(self, name)
            if not (0.0 <= value <= 1.0):
                raise ValidationError(
                    f"signal {name} must be in [0, 1], got {value!r} for {self.symbol}"
                )
        _require_aware("signal timestamp", self.timestamp)
        _require_finite("signal mid", self.mid, self.symbol)
        _require_finite("signal spread", self.spread, self.symbol)
        for i, value in enumerate(self.features):
            _require_finite(f"signal feature {i}", value, self.symbol, non_negative=False)


class ExpertWeights(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """An ensemble strategy's expert weights after a learning round (for dashboards)."""

    strategy_id: str
    timestamp: dt.datetime
    rounds: int
    weights: dict[str, float]
    advice: dict[str, float] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        _require_aware("weights timestamp", self.timestamp)
        total = sum(self.weights.values())
        if self.weights and not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValidationError(f"expert weights must sum to 1, got {total!r}")


class Order(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """An order intent (DESIGN §4). Quantities and prices are `Decimal`."""

    order_id: uuid.UUID
    client_order_id: str
    symbol: str
    side: Side
    order_type: OrderType
    quantity: Decimal
    price: Decimal | None
    time_in_force: TimeInForce
    strategy_id: str
    signal_id: uuid.UUID
    timestamp: dt.datetime
    ts_recv: int = 0  # the `Signal.ts_recv` it was built from (0: unknown)

    def __post_init__(self) -> None:
        # Quantity and price are *not* range-checked here: an order intent with a NaN, zero
        # or negative quantity or price must reach the risk manager, which denies it with a
        # reason (`risk.limits.check_order`). Nothing downstream of risk sees such an order.
        if self.order_type is OrderType.LIMIT and self.price is None:
            raise ValidationError(f"a limit order needs a price ({self.client_order_id})")
        _require_aware("order timestamp", self.timestamp)


class OrderDenied(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The risk manager refused an order; `reason` is a short code, `detail` names the values."""

    order: Order
    reason: str
    detail: str
    timestamp: dt.datetime

    def __post_init__(self) -> None:
        _require_aware("denial timestamp", self.timestamp)


class OrderEvent(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A change of an order's status (submitted, accepted, rejected, canceled, expired)."""

    order_id: uuid.UUID
    client_order_id: str
    symbol: str
    status: OrderStatus
    venue: str
    timestamp: dt.datetime
    reason: str = ""

    def __post_init__(self) -> None:
        _require_aware("order event timestamp", self.timestamp)


class Fill(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """An execution (DESIGN §4), with the order's symbol and side so settlement needs no lookup."""

    fill_id: uuid.UUID
    order_id: uuid.UUID
    client_order_id: str
    symbol: str
    side: Side
    price: Decimal
    quantity: Decimal
    fee: Decimal
    fee_currency: str
    liquidity: Liquidity
    timestamp: dt.datetime
    venue: str
    trade_id: str
    strategy_id: str = ""

    def __post_init__(self) -> None:
        if not (self.quantity.is_finite() and self.quantity > 0):
            raise ValidationError(
                f"fill quantity must be > 0, got {self.quantity} ({self.fill_id})"
            )
        if not (self.price.is_finite() and self.price > 0):
            raise ValidationError(f"fill price must be > 0, got {self.price} ({self.fill_id})")
        if not (self.fee.is_finite()):
            raise ValidationError(f"fill fee must be finite, got {self.fee} ({self.fill_id})")
        _require_aware("fill timestamp", self.timestamp)


class DataGap(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """No event for `symbol` from `source` between `start` and `end` (an alert, DESIGN §6)."""

    source: str
    symbol: str
    start: dt.datetime
    end: dt.datetime
    seconds: float


class PositionUpdate(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A symbol's position after a fill, published on ``portfolio.positions``."""

    symbol: str
    quantity: Decimal
    avg_price: Decimal
    realized_pnl: Decimal
    fees: Decimal
    currency: str
    timestamp: dt.datetime

    def __post_init__(self) -> None:
        _require_aware("position timestamp", self.timestamp)


class BreakerEvent(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The risk circuit breaker changed state (published on ``risk.breaker``)."""

    state: BreakerState
    previous: BreakerState
    trigger: str  # drawdown | window_loss | error_rate | kill_switch | reconciliation | reset
    reason: str
    timestamp: dt.datetime

    def __post_init__(self) -> None:
        _require_aware("breaker event timestamp", self.timestamp)


# Messages that may travel as JSON between processes, decodable from one tagged union.
WireMessage = (
    Quote
    | Trade
    | Bar
    | NewsEvent
    | Signal
    | ExpertWeights
    | Order
    | OrderDenied
    | OrderEvent
    | Fill
    | PositionUpdate
    | DataGap
    | BreakerEvent
)

_json_decoder = msgspec.json.Decoder(WireMessage)
_msgpack_decoder = msgspec.msgpack.Decoder(WireMessage)
_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()


def to_json(message: WireMessage) -> bytes:
    """Encode a message as JSON (the bus's cross-process format)."""
    return _json_encoder.encode(message)


def from_json(data: bytes | str) -> Any:
    """Decode a JSON message of any wire type.

    Raises `msgspec.DecodeError` on bad input: a `msgspec.ValidationError` (a subclass) for
    well-formed JSON that is not a valid message, naming the field.
    """
    try:
        return _json_decoder.decode(data)
    except UnicodeDecodeError as exc:  # msgspec raises it for bad UTF-8 inside a string
        raise msgspec.DecodeError(f"a JSON message holds text that is not UTF-8: {exc}") from None
    except RecursionError:  # msgspec raises it for a nesting deeper than the recursion limit
        raise msgspec.DecodeError("a JSON message is nested too deeply") from None


def to_msgpack(message: WireMessage) -> bytes:
    """Encode a message as MessagePack (the at-rest format)."""
    return _msgpack_encoder.encode(message)


def from_msgpack(data: bytes) -> Any:
    """Decode a MessagePack message of any wire type; raises `msgspec.DecodeError` on bad
    input (as `from_json`)."""
    try:
        return _msgpack_decoder.decode(data)
    except UnicodeDecodeError as exc:
        raise msgspec.DecodeError(
            f"a MessagePack message holds a non-UTF-8 string: {exc}"
        ) from None
    except RecursionError:
        raise msgspec.DecodeError("a MessagePack message is nested too deeply") from None
