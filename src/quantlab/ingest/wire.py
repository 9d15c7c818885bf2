"""quantlab's own wire formats for market events, and their parsers.

* JSON or MessagePack frames holding one event object or an array of them, in a compact
  tagged form (like the vendors' own: ``{"T":"t","S":"BTC/USD","t":<ns>,"p":..,"s":..}``);
* buffers of packed 32-byte `MarketDataEvent` records (`core.codec`), decoded without copying.

`WireParser.parse` turns one frame into `Events` per kind plus `Reject`s and never raises.
Its fast path decodes a whole frame with msgspec at once and builds columns with list
comprehensions; only a frame that fails is decoded message by message, so one bad message
costs one reject and its neighbours still arrive.
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import attrgetter
from typing import Annotated, Any

import msgspec
import numpy as np
import polars as pl

from quantlab.core.codec import RECORD_SIZE, decode_events
from quantlab.core.enums import Aggressor, EventType
from quantlab.core.registry import SymbolRegistry
from quantlab.core.schemas import SCHEMAS
from quantlab.ingest.items import (
    MALFORMED_JSON,
    MALFORMED_MSGPACK,
    TRUNCATED_FRAME,
    UNKNOWN_SYMBOL,
    WRONG_TYPE,
    Events,
    Reject,
    check_size,
    decode_error_reason,
    frame_from_columns,
    reject,
)

# Timestamps are int64 nanoseconds: a larger integer is refused by the decoder (`wrong_type`).
Nanos = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class WireQuote(msgspec.Struct, tag="q", tag_field="T", frozen=True):
    S: str
    t: Nanos
    bp: float
    ap: float
    bs: float = 0.0
    az: float = 0.0  # ask size ("as" is a Python keyword)


class WireTrade(msgspec.Struct, tag="t", tag_field="T", frozen=True):
    S: str
    t: Nanos
    p: float
    s: float
    a: int = 0  # Aggressor
    i: str = ""


class WireBar(msgspec.Struct, tag="b", tag_field="T", frozen=True):
    S: str
    t: Nanos
    o: float
    h: float
    l: float  # noqa: E741
    c: float
    v: float


WireEvent = WireQuote | WireTrade | WireBar
# What msgspec raises on bad input: its own errors, UnicodeDecodeError for bad UTF-8 inside a
# string and RecursionError for a nesting deeper than the recursion limit.
_DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)

_json_frame = msgspec.json.Decoder(list[WireEvent])
_json_one = msgspec.json.Decoder(WireEvent)
_json_raw = msgspec.json.Decoder(list[msgspec.Raw] | msgspec.Raw)
_mp_frame = msgspec.msgpack.Decoder(list[WireEvent])
_mp_one = msgspec.msgpack.Decoder(WireEvent)
_mp_raw = msgspec.msgpack.Decoder(list[msgspec.Raw] | msgspec.Raw)
_json_enc = msgspec.json.Encoder()
_mp_enc = msgspec.msgpack.Encoder()


def encode_json(events: Iterable[WireEvent]) -> bytes:
    return _json_enc.encode(list(events))


def encode_msgpack(events: Iterable[WireEvent]) -> bytes:
    return _mp_enc.encode(list(events))


# Each wire struct: its kind, and the struct field that fills each column of the kind's schema.
_COLUMNS: dict[type, tuple[EventType, dict[str, str]]] = {
    WireQuote: (
        EventType.QUOTE,
        {
            "symbol": "S",
            "timestamp": "t",
            "bid": "bp",
            "ask": "ap",
            "bid_size": "bs",
            "ask_size": "az",
        },
    ),
    WireTrade: (
        EventType.TRADE,
        {
            "symbol": "S",
            "timestamp": "t",
            "price": "p",
            "size": "s",
            "aggressor": "a",
            "trade_id": "i",
        },
    ),
    WireBar: (
        EventType.BAR,
        {
            "symbol": "S",
            "timestamp": "t",
            "open": "o",
            "high": "h",
            "low": "l",
            "close": "c",
            "volume": "v",
        },
    ),
}


def _frames(events: list[WireEvent]) -> list[Events]:
    out = []
    for struct, (kind, fields) in _COLUMNS.items():
        rows = [e for e in events if type(e) is struct]
        if not rows:
            continue
        cols = {col: list(map(attrgetter(attr), rows)) for col, attr in fields.items()}
        if kind is EventType.TRADE:  # an aggressor outside the enum is "unknown"
            cols["aggressor"] = [a if 0 <= a <= 2 else 0 for a in cols["aggressor"]]
        out.append(Events(kind, frame_from_columns(kind, cols)))
    return out


class WireParser:
    """Parses quantlab wire frames for a set of subscribed symbols (None: any symbol)."""

    def __init__(self, symbols: Iterable[str] | None = None) -> None:
        self.symbols = None if symbols is None else frozenset(symbols)

    def parse_json(self, raw: bytes | str) -> list[Events | Reject]:
        return self._parse(raw, msgpack=False)

    def parse_msgpack(self, raw: bytes) -> list[Events | Reject]:
        return self._parse(raw, msgpack=True)

    def _parse(self, raw: bytes | str, *, msgpack: bool) -> list[Events | Reject]:
        too_big = check_size(raw)
        if too_big is not None:
            return [too_big]
        frame_dec: Any
        frame_dec, one_dec, raw_dec = (
            (_mp_frame, _mp_one, _mp_raw) if msgpack else (_json_frame, _json_one, _json_raw)
        )
        try:
            events = frame_dec.decode(raw)  # fast path: the whole frame at once
            rejects: list[Reject] = []
        except _DECODE_ERRORS:
            events, rejects = self._one_by_one(raw, one_dec, raw_dec, msgpack=msgpack)
        if self.symbols is not None:
            known = self.symbols
            if any(e.S not in known for e in events):
                for e in events:
                    if e.S not in known:
                        rejects.append(
                            reject(UNKNOWN_SYMBOL, f"symbol {e.S!r} is not subscribed", repr(e))
                        )
                events = [e for e in events if e.S in known]
        return [*_frames(events), *rejects]

    @staticmethod
    def _one_by_one(
        raw: bytes | str, one_dec: Any, raw_dec: Any, *, msgpack: bool
    ) -> tuple[list[WireEvent], list[Reject]]:
        try:
            parts = raw_dec.decode(raw)
        except msgspec.ValidationError as exc:
            return [], [reject(WRONG_TYPE, str(exc), raw)]
        except msgspec.DecodeError as exc:
            return [], [reject(decode_error_reason(exc, msgpack=msgpack), str(exc), raw)]
        except (UnicodeDecodeError, RecursionError) as exc:
            reason = MALFORMED_MSGPACK if msgpack else MALFORMED_JSON
            return [], [reject(reason, f"{type(exc).__name__}: {exc}", raw)]
        if not isinstance(parts, list):
            parts = [parts]
        events, rejects = [], []
        for part in parts:
            try:
                events.append(one_dec.decode(part))
            except msgspec.ValidationError as exc:
                rejects.append(reject(WRONG_TYPE, str(exc), bytes(part)))
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
                reason = MALFORMED_MSGPACK if msgpack else MALFORMED_JSON
                rejects.append(reject(reason, str(exc), bytes(part)))
        return events, rejects


def parse_binary(
    buf: bytes | bytearray | memoryview, registry: SymbolRegistry
) -> list[Events | Reject]:
    """Packed 32-byte records to quote-less frames: event_type 2 -> trades, 3 -> bars
    (price as close, size as volume). A buffer with stray bytes is a `truncated_frame`."""
    size = memoryview(buf).nbytes
    if size % RECORD_SIZE:
        return [reject(TRUNCATED_FRAME, f"{size} bytes is not a whole number of records", b"")]
    rec = decode_events(buf)
    out: list[Events | Reject] = []
    names = np.array(registry.symbols, dtype=object)
    sid = rec["symbol_id"]
    bad = sid >= len(names)
    if bad.any():
        out.append(reject(UNKNOWN_SYMBOL, f"{int(bad.sum())} records with unknown symbol ids"))
        rec = rec[~bad]
        sid = rec["symbol_id"]
    trades = rec[rec["event_type"] == EventType.TRADE]
    if len(trades):
        side = trades["side"]
        out.append(
            Events(
                EventType.TRADE,
                pl.DataFrame(
                    {
                        "symbol": pl.Series(names[trades["symbol_id"]], dtype=pl.String),
                        "timestamp": pl.Series(trades["timestamp_ns"]).cast(
                            SCHEMAS[EventType.TRADE]["timestamp"]
                        ),
                        "price": trades["price"],
                        "size": trades["size"],
                        "aggressor": np.where(side <= int(Aggressor.SELLER), side, 0).astype(
                            np.uint8
                        ),
                        "trade_id": pl.repeat("", len(trades), eager=True),
                    }
                ),
            )
        )
    return out
