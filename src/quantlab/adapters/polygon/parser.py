"""Pure parsing of Polygon stocks messages: websocket frames and REST aggregate pages.

Nothing here does I/O or raises on bad input. A websocket frame is a JSON array of events
tagged by ``ev``: ``T`` trades, ``Q`` quotes, ``A``/``AM`` second/minute aggregates and
``status`` control messages. Websocket times are Unix milliseconds; quantlab uses integer
nanoseconds. Quote sizes (``bs``, ``as``) are Polygon's round-lot counts, kept as given
(not multiplied into shares). Polygon does not say which side crossed the spread, so trades
carry `Aggressor.UNKNOWN`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec
import polars as pl

from quantlab.core.schemas import BAR_SCHEMA
from quantlab.ingest.items import (
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

_MS: Final = 1_000_000
_INT64_MAX: Final = (1 << 63) - 1
_DATA_EVENTS: Final = frozenset({"T", "Q", "A", "AM"})
# What decoding a body raises on bad input: msgspec's errors, bad UTF-8 inside a string,
# and a nesting deeper than msgspec's limit.
_DECODE_ERRORS: Final = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


class Status(msgspec.Struct, frozen=True):
    """A control message: ``connected``, ``auth_success``, ``auth_failed``, ``success``..."""

    status: str
    message: str = ""


class ParsedFrame(msgspec.Struct, frozen=True):
    """What one websocket frame held: market data and rejects, and control messages."""

    items: list[Events | Reject]
    statuses: list[Status]


class AggregatesPage(msgspec.Struct, frozen=True):
    """One page of ``/v2/aggs``: bars in `BAR_SCHEMA`, rejected rows, the next page's URL."""

    bars: pl.DataFrame
    rejects: list[Reject]
    next_url: str | None


class _FieldError(Exception):
    """A field is missing or has the wrong type (becomes a `wrong_type` reject)."""


def parse_frame(raw: str | bytes, symbols: Mapping[str, str]) -> ParsedFrame:
    """Parse one websocket frame; `symbols` maps Polygon tickers to quantlab symbols.

    Examples
    --------
    >>> raw = '[{"ev":"T","sym":"AAPL","i":"7","p":114.1,"s":100,"t":1536036818784}]'
    >>> parse_frame(raw, {"AAPL": "AAPL"}).items[0].frame["price"].to_list()
    [114.1]
    """
    builder = FrameBuilder()
    statuses: list[Status] = []
    oversized = check_size(raw)
    if oversized is not None:
        return ParsedFrame([oversized], statuses)
    try:
        events = msgspec.json.decode(raw)
    except _DECODE_ERRORS as exc:
        return ParsedFrame([reject(decode_error_reason(exc), f"polygon frame: {exc}", raw)], [])
    if not isinstance(events, list):
        detail = f"expected a JSON array of events, got {type(events).__name__}"
        return ParsedFrame([reject(WRONG_TYPE, detail, raw)], [])
    for event in events:
        if not isinstance(event, dict):
            builder.reject(
                WRONG_TYPE, f"expected an event object, got {type(event).__name__}", event
            )
            continue
        ev = event.get("ev")
        if ev == "status":
            status, message = event.get("status"), event.get("message", "")
            if isinstance(status, str) and isinstance(message, str):
                statuses.append(Status(status, message))
            else:
                builder.reject(WRONG_TYPE, "status message without a string status", event)
            continue
        if not isinstance(ev, str) or ev not in _DATA_EVENTS:
            builder.reject(UNKNOWN_MESSAGE, f"unknown polygon event type {ev!r}", event)
            continue
        vendor = event.get("sym")
        symbol = symbols.get(vendor) if isinstance(vendor, str) else None
        if symbol is None:
            builder.reject(UNKNOWN_SYMBOL, f"polygon {ev} event for unsubscribed {vendor!r}", event)
            continue
        try:
            _add_event(builder, ev, symbol, event)
        except _FieldError as exc:
            builder.reject(WRONG_TYPE, f"polygon {ev} event for {vendor}: {exc}", event)
    return ParsedFrame(builder.items(), statuses)


def _add_event(builder: FrameBuilder, ev: str, symbol: str, event: dict[str, Any]) -> None:
    # Read every field before adding anything, so a bad event adds nothing.
    if ev == "T":
        ts, price, size = _ms(event, "t"), _num(event, "p"), _num(event, "s")
        trade_id = event.get("i", "")
        if isinstance(trade_id, bool) or not isinstance(trade_id, str | int):
            raise _FieldError(f"trade id 'i' must be a string, got {trade_id!r}")
        builder.trade(symbol, ts, price, size, trade_id=str(trade_id))
    elif ev == "Q":
        ts, bid, ask = _ms(event, "t"), _num(event, "bp"), _num(event, "ap")
        bid_size, ask_size = _num(event, "bs"), _num(event, "as")
        builder.quote(symbol, ts, bid, ask, bid_size, ask_size)
    else:  # "A" or "AM": a bar stamped at its start `s`
        ts = _ms(event, "s")
        o, h, lo, c = _num(event, "o"), _num(event, "h"), _num(event, "l"), _num(event, "c")
        builder.bar(symbol, ts, o, h, lo, c, _num(event, "v"))


def _num(event: Mapping[str, Any], key: str) -> float:
    if key not in event:
        raise _FieldError(f"missing field {key!r}")
    try:
        return to_float(event[key])
    except (ValueError, OverflowError) as exc:
        raise _FieldError(f"field {key!r}: {exc}") from None


def _ms(event: Mapping[str, Any], key: str) -> int:
    """A millisecond timestamp field as int nanoseconds (must fit in int64)."""
    value = event.get(key)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _FieldError(f"timestamp {key!r} must be integer milliseconds, got {value!r}")
    ns = value * _MS
    if not -_INT64_MAX <= ns <= _INT64_MAX:
        raise _FieldError(f"timestamp {key!r} = {value} ms is out of range")
    return ns


def parse_aggregates(body: bytes, symbol: str) -> AggregatesPage:
    """Parse one ``/v2/aggs/ticker/.../range/...`` page into bars of `symbol`.

    Bad rows become rejects and the good ones are kept; a body that is not a JSON object
    gives no bars and one reject. ``results`` is absent when the range holds no bars.
    """
    empty = pl.DataFrame(schema=BAR_SCHEMA)
    try:
        doc = msgspec.json.decode(body)
    except _DECODE_ERRORS as exc:
        return AggregatesPage(empty, [reject(decode_error_reason(exc), str(exc), body)], None)
    if not isinstance(doc, dict):
        detail = f"aggregates body must be a JSON object, got {type(doc).__name__}"
        return AggregatesPage(empty, [reject(WRONG_TYPE, detail, body)], None)
    next_url = doc.get("next_url")
    next_url = next_url if isinstance(next_url, str) and next_url else None
    rows = doc.get("results", [])
    if not isinstance(rows, list):
        detail = f"'results' must be a list, got {type(rows).__name__}"
        return AggregatesPage(empty, [reject(WRONG_TYPE, detail, body)], next_url)
    builder = FrameBuilder()
    for row in rows:
        try:
            if not isinstance(row, dict):
                raise _FieldError(f"expected a bar object, got {type(row).__name__}")
            ts = _ms(row, "t")
            o, h, lo, c, v = (_num(row, k) for k in ("o", "h", "l", "c", "v"))
        except _FieldError as exc:
            builder.reject(WRONG_TYPE, f"aggregate bar for {symbol}: {exc}", row)
            continue
        builder.bar(symbol, ts, o, h, lo, c, v)
    items = builder.items()
    frames = [i.frame for i in items if isinstance(i, Events)]
    rejects = [i for i in items if isinstance(i, Reject)]
    return AggregatesPage(frames[0] if frames else empty, rejects, next_url)
