"""Pure parsing for the ccxt source: raw frames checked, ccxt unified structures to events.

ccxt decodes the websocket frames and parses the venue's messages itself; this module sees
two things. (1) The raw frame before ccxt does (`check_frame`) and any exception ccxt's own
handler raised on it (`handler_error`): both become `Reject`s with the best reason that can
be told. (2) ccxt's unified structures (trade dicts, ticker dicts, order books, OHLCV rows),
mapped to quotes, trades and bars; wrong types and symbols we did not subscribe to become
`Reject`s. Nothing here raises on bad input.

Timestamps: ccxt gives integer milliseconds; events carry integer nanoseconds UTC.
"""

from __future__ import annotations

import decimal
import json
import math
from collections.abc import Collection, Mapping
from typing import Any, Final

import msgspec

from quantlab.core.enums import Aggressor
from quantlab.ingest.items import (
    MALFORMED_JSON,
    MAX_FRAME_BYTES,
    OVERSIZED_FRAME,
    UNKNOWN_MESSAGE,
    UNKNOWN_SYMBOL,
    WRONG_TYPE,
    Events,
    FrameBuilder,
    Reject,
    decode_error_reason,
    reject,
    to_float,
)

_NS_PER_MS: Final = 1_000_000
_MAX_MS: Final = ((1 << 63) - 1) // _NS_PER_MS
_MESSAGE_TOO_BIG: Final = 1009  # websocket close code
_AGGRESSOR: Final = {"buy": Aggressor.BUYER, "sell": Aggressor.SELLER}
# Exceptions a ccxt message handler raises on fields of the wrong type or shape
# (int("abc"), None + "str", a list where a dict was expected, Decimal("x"), ...).
_TYPE_ERRORS: Final = (
    TypeError,
    ValueError,
    KeyError,
    IndexError,
    AttributeError,
    ArithmeticError,
    decimal.InvalidOperation,
)

Item = Events | Reject


class _FieldError(ValueError):
    def __init__(self, detail: str, reason: str = WRONG_TYPE) -> None:
        super().__init__(detail)
        self.reason = reason


def check_frame(
    data: str | bytes, *, max_bytes: int = MAX_FRAME_BYTES, json_only: bool = True
) -> Reject | None:
    """The reject for a raw frame that must not reach ccxt, or None to pass it on.

    Oversized frames are rejected before ccxt parses them. With `json_only`, a frame ccxt
    would not decode (it decodes text starting with ``{`` or ``[``, and drops anything else
    silently) is classified here: not UTF-8 or not JSON -> ``malformed_json`` /
    ``truncated_frame``, valid JSON of another type -> ``wrong_type``.
    """
    if len(data) > max_bytes:
        return reject(OVERSIZED_FRAME, f"frame of {len(data)} bytes > limit {max_bytes}", data)
    if not json_only:
        return None
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            return reject(MALFORMED_JSON, f"frame is not UTF-8 text: {exc}", data)
    else:
        text = data
    if len(text) >= 2 and text[0] in "{[":
        return None  # ccxt decodes it; its decoder errors come back through `handler_error`
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        return reject(decode_error_reason(exc), f"invalid JSON: {exc}", data)
    if isinstance(value, dict | list):
        return reject(UNKNOWN_MESSAGE, "JSON not starting with '{' or '[': ccxt ignores it", data)
    return reject(WRONG_TYPE, f"expected a JSON object or array, got {type(value).__name__}", data)


def handler_error(exc: BaseException, data: str | bytes) -> Reject:
    """The reject for a frame whose handling inside ccxt raised `exc` (the message is lost).

    Decoder errors are told apart (truncated or malformed JSON, not UTF-8); an error from
    ccxt's message handler on decoded JSON cannot say which field was bad, so every
    type-like error is ``wrong_type`` and anything else (a venue ``error`` message ccxt
    raises, ...) is ``unknown_message``.
    """
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, UnicodeDecodeError):
        return reject(MALFORMED_JSON, f"frame is not UTF-8 text: {detail}", data)
    if isinstance(exc, json.JSONDecodeError):  # orjson's and the stdlib's decoder errors
        return reject(_json_reason(data, exc), f"invalid JSON: {detail}", data)
    if isinstance(exc, _TYPE_ERRORS):
        return reject(WRONG_TYPE, f"ccxt could not handle the message: {detail}", data)
    return reject(UNKNOWN_MESSAGE, f"ccxt raised on the message: {detail}", data)


def transport_error(error: object) -> Reject | None:
    """``oversized_frame`` if the websocket client refused a frame as too big, else None.

    ccxt's client (aiohttp) refuses frames over 10 MiB with close code 1009 and then closes
    the connection; the frame is lost, so it is counted before the disconnect is reported.
    """
    text = str(error).lower()
    if (
        getattr(error, "code", None) == _MESSAGE_TOO_BIG
        or "size limit" in text
        or "too big" in text
    ):
        return reject(OVERSIZED_FRAME, f"the websocket client refused a frame: {error}")
    return None


def _json_reason(data: str | bytes, exc: Exception) -> str:
    # The stdlib's messages do not say "truncated"; msgspec's do, so ask it again.
    try:
        msgspec.json.decode(data)
    except msgspec.DecodeError as again:
        return decode_error_reason(again)
    except UnicodeDecodeError:  # invalid UTF-8 inside a JSON string: not JSON text at all
        return MALFORMED_JSON
    return decode_error_reason(exc)


def parse_trades(trades: Any, symbols: Collection[str]) -> list[Item]:
    """ccxt trade structures (``watch_trades``' list) as one trade frame plus rejects.

    ``side`` is ccxt's taker side (``buy`` -> buyer-initiated); ``id`` is the venue's id.
    """
    builder = FrameBuilder()
    if not isinstance(trades, list):
        builder.reject(WRONG_TYPE, f"expected a list of trades, got {type(trades).__name__}")
        return builder.items()
    for trade in trades:
        try:
            symbol = _symbol(trade, symbols)
            side = trade.get("side")
            trade_id = trade.get("id")
            builder.trade(
                symbol,
                _ts_ns(trade.get("timestamp"), "timestamp"),
                _num(trade, "price"),
                _num(trade, "amount"),
                _AGGRESSOR.get(side, Aggressor.UNKNOWN)
                if isinstance(side, str)
                else Aggressor.UNKNOWN,
                "" if trade_id is None else str(trade_id),
            )
        except _FieldError as exc:
            builder.add(_reject_field(exc, "trade", trade))
    return builder.items()


def parse_ticker(ticker: Any, symbols: Collection[str], *, received_ns: int) -> list[Item]:
    """A ccxt ticker as a quote (bid/ask and their sizes); no bid or ask is a reject.

    Missing sizes are 0.0 (unknown); a ticker without a timestamp is stamped `received_ns`.
    """
    builder = FrameBuilder()
    try:
        symbol = _symbol(ticker, symbols)
        builder.quote(
            symbol,
            _ts_or(ticker.get("timestamp"), received_ns),
            _num(ticker, "bid"),
            _num(ticker, "ask"),
            _size(ticker, "bidVolume"),
            _size(ticker, "askVolume"),
        )
    except _FieldError as exc:
        builder.add(_reject_field(exc, "ticker", ticker))
    return builder.items()


def parse_order_book(
    book: Any, symbols: Collection[str], *, symbol: str | None = None, received_ns: int
) -> list[Item]:
    """The top of a ccxt order book as a quote; a book with an empty side yields nothing.

    Books carry their symbol on some venues only; `symbol` is the one that was watched.
    """
    builder = FrameBuilder()
    try:
        if not isinstance(book, Mapping):
            raise _FieldError(f"expected an order book, got {type(book).__name__}")
        if book.get("symbol") is None and symbol is not None:
            book = {**book, "symbol": symbol}
        name = _symbol(book, symbols)
        bids, asks = _side(book, "bids"), _side(book, "asks")
        if bids and asks:
            bid, ask = _level(bids[0], "bids"), _level(asks[0], "asks")
            ts = _ts_or(book.get("timestamp"), received_ns)
            builder.quote(name, ts, bid[0], ask[0], bid[1], ask[1])
    except _FieldError as exc:
        builder.add(_reject_field(exc, "order book", book))
    return builder.items()


def parse_ohlcv(rows: Any, symbol: str) -> list[Item]:
    """ccxt OHLCV rows ``[ms, open, high, low, close, volume]`` as one bar frame plus rejects."""
    builder = FrameBuilder()
    if not isinstance(rows, list):
        builder.reject(WRONG_TYPE, f"expected a list of OHLCV rows, got {type(rows).__name__}")
        return builder.items()
    for row in rows:
        try:
            if not isinstance(row, list | tuple) or len(row) < 6:
                raise _FieldError(f"expected [ms, o, h, l, c, v], got {row!r}")
            ts = _ts_ns(row[0], "timestamp")
            o, h, low, c, v = (_to_float(row[i], name) for i, name in enumerate("ohlcv", 1))
            builder.bar(symbol, ts, o, h, low, c, v)
        except _FieldError as exc:
            builder.add(_reject_field(exc, "OHLCV row", row))
    return builder.items()


def _symbol(obj: Any, symbols: Collection[str]) -> str:
    if not isinstance(obj, Mapping):
        raise _FieldError(f"expected a dict, got {type(obj).__name__}")
    symbol = obj.get("symbol")
    if not isinstance(symbol, str):
        raise _FieldError(f"symbol is {symbol!r}, expected a string")
    if symbol not in symbols:
        raise _FieldError(f"{symbol!r} is not subscribed", UNKNOWN_SYMBOL)
    return symbol


def _reject_field(exc: _FieldError, what: str, raw: Any) -> Reject:
    return reject(exc.reason, f"{what}: {exc}", _short(raw))


def _short(raw: Any) -> str:
    # ccxt structures carry the venue's message under "info"; keep that, it is the raw input.
    if isinstance(raw, Mapping) and "info" in raw:
        raw = raw["info"]
    try:
        return json.dumps(raw, default=repr)
    except (TypeError, ValueError):
        return repr(raw)


def _to_float(value: Any, key: str) -> float:
    try:
        return to_float(value)
    except ValueError:
        raise _FieldError(f"{key} is {value!r}, expected a number") from None


def _num(obj: Mapping[str, Any], key: str) -> float:
    return _to_float(obj.get(key), key)


def _size(obj: Mapping[str, Any], key: str) -> float:
    value = obj.get(key)
    return 0.0 if value is None else _to_float(value, key)


def _ts_ns(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _FieldError(f"{key} is {value!r}, expected milliseconds since the epoch")
    if isinstance(value, float) and not math.isfinite(value):
        raise _FieldError(f"{key} is {value!r}, expected milliseconds since the epoch")
    if not -_MAX_MS <= value <= _MAX_MS:  # events carry int64 nanoseconds
        raise _FieldError(f"{key} is {value!r} ms, outside the nanosecond range (1677 to 2262)")
    return int(value) * _NS_PER_MS if isinstance(value, int) else round(value * _NS_PER_MS)


def _ts_or(value: Any, received_ns: int) -> int:
    return received_ns if value is None else _ts_ns(value, "timestamp")


def _side(book: Mapping[str, Any], key: str) -> list[Any]:
    side = book.get(key)
    if not isinstance(side, list):
        raise _FieldError(f"{key} is {type(side).__name__}, expected a list of [price, amount]")
    return side


def _level(level: Any, key: str) -> tuple[float, float]:
    if not isinstance(level, list | tuple) or len(level) < 2:
        raise _FieldError(f"{key}[0] is {level!r}, expected [price, amount]")
    return _to_float(level[0], f"{key}[0] price"), _to_float(level[1], f"{key}[0] amount")
