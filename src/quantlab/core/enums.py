"""Domain enums. Values are lower-case strings so they read well in SQL, JSON and logs."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        """+1 for a buy, -1 for a sell."""
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"


class TimeInForce(StrEnum):
    GTC = "gtc"
    DAY = "day"
    IOC = "ioc"


class OrderStatus(StrEnum):
    NEW = "new"
    PENDING_SUBMIT = "pending_submit"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    UNKNOWN = "unknown"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)


class BreakerState(StrEnum):
    """The risk circuit breaker: ACTIVE trades, REDUCING only shrinks positions, HALTED stops."""

    ACTIVE = "active"
    REDUCING = "reducing"
    HALTED = "halted"

    @property
    def level(self) -> int:
        """0, 1, 2: the breaker only moves up on its own; a manual reset brings it down."""
        return _BREAKER_LEVEL[self]


_BREAKER_LEVEL = {BreakerState.ACTIVE: 0, BreakerState.REDUCING: 1, BreakerState.HALTED: 2}


class Liquidity(StrEnum):
    MAKER = "maker"
    TAKER = "taker"


class EventType(IntEnum):
    """Kind of a market event; the `event_type` byte of the packed record."""

    QUOTE = 1
    TRADE = 2
    BAR = 3

    @property
    def topic_name(self) -> str:
        return self.name.lower()


class Aggressor(IntEnum):
    """The `side` byte of the packed record: who crossed the spread, if known."""

    UNKNOWN = 0
    BUYER = 1
    SELLER = 2
