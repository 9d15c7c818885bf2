"""Alpaca market-data messages -> quantlab items. Pure: no I/O, never raises on bad input.

Alpaca's data stream sends msgpack frames (JSON text frames when the client does not ask for
msgpack), each an array of messages keyed by ``T``: ``t`` trade, ``q`` quote, ``b`` bar, and
the control messages ``success``, ``subscription`` and ``error``. The REST bars endpoints send
``{"bars": {"AAPL": [...]}, "next_page_token": ...}`` with the same bar keys.

Three entry points share one set of message rules:

- `AlpacaParser.parse_frame` for a raw websocket frame (the ``"websocket"`` transport),
- `AlpacaParser.parse_models` for the model objects alpaca-py hands its callbacks (the
  ``"alpaca-py"`` transport; alpaca-py decodes frames itself, so bad frames never get here),
- `AlpacaParser.parse_bars_page` for one REST page of bars.

Control messages come out as `AlpacaControl`, for the source to act on; data messages become
`Events` (through `FrameBuilder`) and everything unusable a `Reject` with its reason.
Timestamps become int nanoseconds UTC: msgpack Timestamps and RFC 3339 strings keep their
nanoseconds; alpaca-py's `datetime`s have already lost everything below the microsecond.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Final

import msgpack
import msgspec

from quantlab.core.enums import Aggressor
from quantlab.ingest.items import (
    TRUNCATED_FRAME,
    UNKNOWN_MESSAGE,
    UNKNOWN_SYMBOL,
    WRONG_TYPE,
    Events,
    FrameBuilder,
    Reject,
    check_size,
    decode_error_reason,
    reject,
    to_float,
)

CONTROL_TYPES: Final = frozenset({"success", "subscription", "error"})
# Message types Alpaca documents but quantlab never subscribes to (updated/daily bars,
# statuses, LULD bands, corrections, cancel errors, order books, news).
UNHANDLED_TYPES: Final = frozenset({"u", "d", "s", "l", "c", "x", "o", "n"})
_TAKER_SIDE: Final = {"B": Aggressor.BUYER, "S": Aggressor.SELLER}
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_INT64: Final = 1 << 63  # timestamps are int64 nanoseconds: 1677-09-21 to 2262-04-11
_RFC3339: Final = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})"
)


class AlpacaControl(msgspec.Struct, frozen=True):
    """A control message: ``success`` (``msg`` connected / authenticated), ``subscription``
    (``channels``: what the server now sends) or ``error`` (``code``, ``msg``)."""

    kind: str
    msg: str = ""
    code: int | None = None
    channels: dict[str, list[str]] = {}


ParsedItem = Events | Reject | AlpacaControl


class AlpacaParser:
    """Parses messages for the subscribed `symbols`; others are rejected ``unknown_symbol``."""

    def __init__(self, symbols: Collection[str]) -> None:
        self.symbols = frozenset(symbols)

    def parse_frame(self, raw: bytes | str) -> list[ParsedItem]:
        """One websocket frame (msgpack bytes, or JSON text) -> items, controls first."""
        if (too_big := check_size(raw)) is not None:
            return [too_big]
        try:
            if isinstance(raw, str):
                decoded: Any = msgspec.json.decode(raw)
            else:
                decoded = msgpack.unpackb(raw)
        except Exception as exc:
            return [reject(_decode_reason(exc, raw), f"undecodable frame: {_text(exc)}", raw)]
        if not isinstance(decoded, list):
            detail = f"frame is a {type(decoded).__name__}, expected an array of messages"
            return [reject(WRONG_TYPE, detail, raw)]
        builder = FrameBuilder()
        controls: list[ParsedItem] = []
        for msg in decoded:
            control = self._message(builder, msg)
            if control is not None:
                controls.append(control)
        return [*controls, *builder.items()]

    def parse_models(self, models: Iterable[tuple[str, Any]]) -> list[Events | Reject]:
        """alpaca-py `Trade` / `Quote` / `Bar` objects, each tagged ``t``/``q``/``b``, -> items."""
        builder = FrameBuilder()
        for kind, model in models:
            symbol = getattr(model, "symbol", None)
            try:
                if not isinstance(symbol, str) or symbol not in self.symbols:
                    builder.reject(UNKNOWN_SYMBOL, f"not subscribed: {symbol!r}", model)
                elif kind == "t":
                    builder.trade(
                        symbol,
                        timestamp_ns(model.timestamp),
                        to_float(model.price),
                        to_float(model.size),
                        trade_id="" if model.id is None else str(model.id),
                    )
                elif kind == "q":
                    builder.quote(
                        symbol,
                        timestamp_ns(model.timestamp),
                        to_float(model.bid_price),
                        to_float(model.ask_price),
                        to_float(model.bid_size),
                        to_float(model.ask_size),
                    )
                elif kind == "b":
                    builder.bar(
                        symbol,
                        timestamp_ns(model.timestamp),
                        to_float(model.open),
                        to_float(model.high),
                        to_float(model.low),
                        to_float(model.close),
                        to_float(model.volume),
                    )
                else:
                    builder.reject(UNKNOWN_MESSAGE, f"unknown model kind {kind!r}", model)
            except (AttributeError, ValueError) as exc:
                builder.reject(WRONG_TYPE, f"{kind} model: {exc}", model)
        return builder.items()

    def parse_bars_page(self, body: Any) -> tuple[list[Events | Reject], str | None]:
        """One REST bars page (decoded JSON) -> (items, next_page_token or None)."""
        if not isinstance(body, Mapping) or not isinstance(body.get("bars"), Mapping | None):
            return [reject(WRONG_TYPE, "expected {'bars': {symbol: [bar, ...]}, ...}", body)], None
        token = body.get("next_page_token")
        if token is not None and not isinstance(token, str):
            item = reject(WRONG_TYPE, f"next_page_token must be a string, got {token!r}", body)
            return [item], None
        builder = FrameBuilder()
        for symbol, bars in (body.get("bars") or {}).items():
            if not isinstance(symbol, str) or symbol not in self.symbols:
                builder.reject(UNKNOWN_SYMBOL, f"not requested: {symbol!r}", symbol)
            elif not isinstance(bars, list):
                builder.reject(WRONG_TYPE, f"bars of {symbol} must be a list", bars)
            else:
                for bar in bars:
                    if isinstance(bar, Mapping):
                        self._data(builder, "b", symbol, bar)
                    else:
                        builder.reject(WRONG_TYPE, f"a bar must be a map, got {bar!r}", bar)
        return builder.items(), token or None

    def _message(self, builder: FrameBuilder, msg: Any) -> AlpacaControl | None:
        if not isinstance(msg, Mapping):
            builder.reject(WRONG_TYPE, f"a message must be a map, got {type(msg).__name__}", msg)
            return None
        kind = msg.get("T")
        if not isinstance(kind, str):
            builder.reject(UNKNOWN_MESSAGE, f"message type T must be a string, got {kind!r}", msg)
            return None
        if kind in CONTROL_TYPES:
            return _control(kind, msg)
        if kind not in ("t", "q", "b"):
            what = "unhandled" if kind in UNHANDLED_TYPES else "unknown"
            builder.reject(UNKNOWN_MESSAGE, f"{what} message type T={kind!r}", msg)
            return None
        symbol = msg.get("S")
        if not isinstance(symbol, str):
            builder.reject(WRONG_TYPE, f"symbol S must be a string, got {symbol!r}", msg)
        elif symbol not in self.symbols:
            builder.reject(UNKNOWN_SYMBOL, f"not subscribed: {symbol!r}", msg)
        else:
            self._data(builder, kind, symbol, msg)
        return None

    def _data(self, builder: FrameBuilder, kind: str, symbol: str, msg: Mapping[str, Any]) -> None:
        try:
            ts = timestamp_ns(_field(msg, "t"))
            if kind == "t":
                trade_id = msg.get("i")
                builder.trade(
                    symbol,
                    ts,
                    to_float(_field(msg, "p")),
                    to_float(_field(msg, "s")),
                    _aggressor(msg.get("tks")),
                    "" if trade_id is None else str(trade_id),
                )
            elif kind == "q":
                builder.quote(
                    symbol,
                    ts,
                    to_float(_field(msg, "bp")),
                    to_float(_field(msg, "ap")),
                    to_float(_field(msg, "bs")),
                    to_float(_field(msg, "as")),
                )
            else:
                o, h, lo, c, v = (to_float(_field(msg, k)) for k in ("o", "h", "l", "c", "v"))
                builder.bar(symbol, ts, o, h, lo, c, v)
        except ValueError as exc:
            builder.reject(WRONG_TYPE, f"{kind} message for {symbol}: {exc}", msg)


def timestamp_ns(value: Any) -> int:
    """A msgpack Timestamp, RFC 3339 string or aware datetime as int ns UTC (else ValueError,
    also for a time outside int64 nanoseconds: before 1677 or after 2262)."""
    if isinstance(value, msgpack.Timestamp):
        ns = int(value.to_unix_nano())
    elif isinstance(value, str):
        ns = rfc3339_ns(value)
    elif isinstance(value, dt.datetime) and value.tzinfo is not None:
        ns = (value - _EPOCH) // dt.timedelta(microseconds=1) * 1000
    else:
        raise ValueError(
            f"timestamp t must be a msgpack Timestamp or RFC 3339 string, got {value!r}"
        )
    if not -_INT64 <= ns < _INT64:
        raise ValueError(f"timestamp t {value!r} is outside the nanosecond range (1677 to 2262)")
    return ns


def rfc3339_ns(text: str) -> int:
    """``2024-03-12T10:27:48.858228144Z`` -> int ns UTC, keeping all nine fraction digits."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"timestamp {text!r} is not RFC 3339")
    date, clock, fraction, zone = match.groups()
    offset = "+00:00" if zone in ("Z", "z") else zone
    try:
        whole = dt.datetime.fromisoformat(f"{date}T{clock}{offset}")
    except ValueError:
        raise ValueError(f"timestamp {text!r} is not a valid date and time") from None
    seconds = (whole - _EPOCH) // dt.timedelta(seconds=1)
    return seconds * 1_000_000_000 + int((fraction or "0").ljust(9, "0"))


def _decode_reason(exc: Exception, raw: bytes | str) -> str:
    # `msgpack.unpackb` caps every length at the size of the buffer, so a header that claims
    # more items or bytes than the frame holds ("3 exceeds max_array_len(2)") means a cut frame.
    if not isinstance(raw, str) and "exceeds max_" in str(exc):
        return TRUNCATED_FRAME
    return decode_error_reason(exc, msgpack=not isinstance(raw, str))


def _text(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _aggressor(taker_side: Any) -> Aggressor:
    """Crypto trades carry the taker's side (``tks``); stock trades do not."""
    if isinstance(taker_side, str):
        return _TAKER_SIDE.get(taker_side, Aggressor.UNKNOWN)
    return Aggressor.UNKNOWN


def _field(msg: Mapping[str, Any], key: str) -> Any:
    if key not in msg:
        raise ValueError(f"missing field {key!r}")
    return msg[key]


def _control(kind: str, msg: Mapping[str, Any]) -> AlpacaControl:
    code = msg.get("code")
    channels = {
        k: [s for s in v if isinstance(s, str)]
        for k, v in msg.items()
        if k != "T" and isinstance(v, list)
    }
    return AlpacaControl(
        kind=kind,
        msg=str(msg.get("msg", "")),
        code=code if isinstance(code, int) and not isinstance(code, bool) else None,
        channels=channels if kind == "subscription" else {},
    )
