"""What a market-data source yields, and the helpers adapters use to build it.

A source yields `SourceItem`s: `Events` (a frame of normalised events of one kind), `Reject`
(a message it could not parse, with the reason), `Heartbeat` (proof of life on a quiet
stream) and `NewsEvent`. Parsing never raises on bad input: it turns it into a `Reject`, so a
malformed frame costs one counted reject and the good events around it flow on.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
import polars as pl

from quantlab.core.enums import Aggressor, EventType
from quantlab.core.messages import NewsEvent
from quantlab.core.schemas import SCHEMAS

# Largest frame a source accepts; anything bigger is rejected as `oversized_frame` (the
# websocket clients are configured with a larger limit so that it is counted, not fatal).
MAX_FRAME_BYTES: Final = 1 << 20
# How much of a rejected raw message is kept for the dead-letter store.
MAX_KEPT_RAW: Final = 4096

# Parse-level reasons (the source could not turn the message into events).
MALFORMED_JSON: Final = "malformed_json"
MALFORMED_MSGPACK: Final = "malformed_msgpack"
TRUNCATED_FRAME: Final = "truncated_frame"
OVERSIZED_FRAME: Final = "oversized_frame"
WRONG_TYPE: Final = "wrong_type"
UNKNOWN_SYMBOL: Final = "unknown_symbol"
UNKNOWN_MESSAGE: Final = "unknown_message"
PARSE_REASONS: Final = frozenset(
    {
        MALFORMED_JSON,
        MALFORMED_MSGPACK,
        TRUNCATED_FRAME,
        OVERSIZED_FRAME,
        WRONG_TYPE,
        UNKNOWN_SYMBOL,
        UNKNOWN_MESSAGE,
    }
)


class Events(msgspec.Struct, frozen=True):
    """Normalised events of one kind, in `core.schemas.SCHEMAS[kind]`."""

    kind: EventType
    frame: pl.DataFrame


class Reject(msgspec.Struct, frozen=True):
    """A message the source could not parse; `raw` is its first `MAX_KEPT_RAW` bytes."""

    reason: str
    detail: str
    raw: bytes = b""


class Heartbeat(msgspec.Struct, frozen=True):
    ts_ns: int


SourceItem = Events | Reject | Heartbeat | NewsEvent


def reject(reason: str, detail: str, raw: bytes | str | Any = b"") -> Reject:
    """A `Reject` with the raw message cut to `MAX_KEPT_RAW` bytes."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "replace")
    elif not isinstance(raw, bytes | bytearray | memoryview):
        raw = repr(raw).encode("utf-8", "replace")
    return Reject(reason=reason, detail=detail[:500], raw=bytes(raw[:MAX_KEPT_RAW]))


def check_size(raw: bytes | str) -> Reject | None:
    """`oversized_frame` if `raw` exceeds `MAX_FRAME_BYTES`, else None."""
    size = len(raw)
    if size > MAX_FRAME_BYTES:
        return reject(OVERSIZED_FRAME, f"frame of {size} bytes > limit {MAX_FRAME_BYTES}", raw)
    return None


def decode_error_reason(exc: Exception, *, msgpack: bool = False) -> str:
    """The reject reason of a decoder error: truncated input or malformed input."""
    text = str(exc).lower()
    if "truncated" in text or "incomplete" in text or "unexpected end" in text:
        return TRUNCATED_FRAME
    return MALFORMED_MSGPACK if msgpack else MALFORMED_JSON


def to_float(value: Any) -> float:
    """A vendor number (int, float or numeric string) as float; raises ValueError otherwise.

    Non-finite values pass through: the data-quality rules reject them with their own reason.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got bool {value!r}")
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:  # an int beyond 1.8e308 (its text may be over 4300 digits)
            bits = int(value).bit_length()
            raise ValueError(f"expected a number, got an integer of {bits} bits") from None
    if isinstance(value, str):
        return float(value)  # "NaN" and "inf" parse; the validator rejects them later
    raise ValueError(f"expected a number, got {type(value).__name__} {value!r}")


class FrameBuilder:
    """Collects parsed events column by column and hands them out as `Events` frames.

    Adapters call `quote`, `trade` or `bar` per parsed event (and `reject` per bad message),
    then `items()` once per received frame: one `Events` per kind plus the rejects.
    """

    def __init__(self) -> None:
        self._cols: dict[EventType, dict[str, list[Any]]] = {
            kind: {name: [] for name in schema.names()} for kind, schema in SCHEMAS.items()
        }
        self._rejects: list[Reject] = []

    def quote(
        self,
        symbol: str,
        ts_ns: int,
        bid: float,
        ask: float,
        bid_size: float = 0.0,
        ask_size: float = 0.0,
    ) -> None:
        c = self._cols[EventType.QUOTE]
        c["symbol"].append(symbol)
        c["timestamp"].append(int(ts_ns))
        c["bid"].append(bid)
        c["ask"].append(ask)
        c["bid_size"].append(bid_size)
        c["ask_size"].append(ask_size)

    def trade(
        self,
        symbol: str,
        ts_ns: int,
        price: float,
        size: float,
        aggressor: Aggressor = Aggressor.UNKNOWN,
        trade_id: str = "",
    ) -> None:
        c = self._cols[EventType.TRADE]
        c["symbol"].append(symbol)
        c["timestamp"].append(int(ts_ns))
        c["price"].append(price)
        c["size"].append(size)
        c["aggressor"].append(int(aggressor))
        c["trade_id"].append(trade_id)

    def bar(
        self,
        symbol: str,
        ts_ns: int,
        open: float,
        high: float,
        low: float,
        close: float,
        volume: float,
    ) -> None:
        c = self._cols[EventType.BAR]
        c["symbol"].append(symbol)
        c["timestamp"].append(int(ts_ns))
        c["open"].append(open)
        c["high"].append(high)
        c["low"].append(low)
        c["close"].append(close)
        c["volume"].append(volume)

    def reject(self, reason: str, detail: str, raw: bytes | str | Any = b"") -> None:
        self._rejects.append(reject(reason, detail, raw))

    def add(self, item: Reject | None) -> None:
        if item is not None:
            self._rejects.append(item)

    def items(self) -> list[Events | Reject]:
        """Everything collected since the last call: one `Events` per kind, then rejects."""
        out: list[Events | Reject] = []
        for kind, cols in self._cols.items():
            if cols["symbol"]:
                out.append(Events(kind, frame_from_columns(kind, cols)))
                for values in cols.values():
                    values.clear()
        out.extend(self._rejects)
        self._rejects = []
        return out


def frame_from_columns(kind: EventType, cols: dict[str, list[Any]]) -> pl.DataFrame:
    """Columns of one kind (timestamps as int ns) as a frame in the kind's schema."""
    schema = SCHEMAS[kind]
    data = {
        name: pl.Series(name, values, dtype=pl.Int64 if name == "timestamp" else schema[name])
        for name, values in cols.items()
    }
    frame = pl.DataFrame(data)
    return frame.with_columns(pl.col("timestamp").cast(schema["timestamp"]))
