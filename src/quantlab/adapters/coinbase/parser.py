"""Coinbase Advanced Trade frames and REST bodies -> quantlab items. Pure: no I/O.

`CoinbaseFeedParser` parses the frames of one websocket connection. It maps product ids to
symbols, keeps an `L2Book` per product (a quote is emitted whenever the top of book changes)
and checks `sequence_num`, which increases by one per message on a connection: a gap means
messages were lost, so every book is dropped and the source is asked (`take_resync`) to
resubscribe; the level2 snapshot that follows rebuilds the books. Bad input never raises.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from collections.abc import Iterable
from typing import Any, Final

import msgspec

from quantlab.adapters.coinbase.config import DATA_CHANNELS, LEVEL2, to_product
from quantlab.core.enums import Aggressor
from quantlab.ingest.items import (
    MAX_FRAME_BYTES,
    UNKNOWN_MESSAGE,
    UNKNOWN_SYMBOL,
    WRONG_TYPE,
    Events,
    FrameBuilder,
    Heartbeat,
    Reject,
    SourceItem,
    check_size,
    decode_error_reason,
    reject,
    to_float,
)

_decoder: Final = msgspec.json.Decoder()
_AGGRESSOR: Final = {"BUY": Aggressor.BUYER, "SELL": Aggressor.SELLER}
_TIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9})\d*)?(Z|[+-]\d{2}:?\d{2})?$"
)
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_INT64: Final = 1 << 63  # timestamps are int64 nanoseconds: 1677-09-21 to 2262-04-11
# What decoding a frame raises on bad input: msgspec's errors, bad UTF-8 inside a string,
# and a nesting deeper than msgspec's limit.
_DECODE_ERRORS: Final = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
# Detail prefix of a candles body that could not be read at all (as opposed to one bad candle).
CANDLES_BODY: Final = "candles body"

Top = tuple[float, float, float, float]  # bid, bid size, ask, ask size
_Extra = list[Heartbeat]  # what a channel handler yields besides the FrameBuilder's items


@functools.lru_cache(maxsize=4096)
def parse_time_ns(text: str) -> int:
    """An RFC 3339 time with up to nanosecond digits (``...T20:31:26.122969572Z``) as int ns."""
    match = _TIME.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"expected an RFC 3339 time, got {text!r}")
    day, clock, fraction, zone = match.groups()
    zone = "+00:00" if zone in (None, "Z") else zone
    moment = dt.datetime.fromisoformat(f"{day}T{clock}{zone}")
    seconds = (moment - _EPOCH) // dt.timedelta(seconds=1)
    ns = seconds * 1_000_000_000 + int((fraction or "").ljust(9, "0"))
    if not -_INT64 <= ns < _INT64:
        raise ValueError(f"time {text!r} is outside the nanosecond range (1677 to 2262)")
    return ns


class L2Book:
    """One product's aggregated book (price level -> quantity per side) with a cached top.

    `apply` sets a level to its new quantity; a quantity <= 0 removes it (Coinbase sends
    "0"). The best price per side is kept incrementally and recomputed only when the best
    level is removed.
    """

    __slots__ = ("_best_ask", "_best_bid", "asks", "bids")

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self._best_bid: float | None = None
        self._best_ask: float | None = None

    def apply(self, side: str, price: float, quantity: float) -> None:
        """Set `price` on `side` ("bid" or "offer") to `quantity`."""
        if side == "bid":
            self._best_bid = _set_level(self.bids, self._best_bid, price, quantity, max)
        elif side == "offer":
            self._best_ask = _set_level(self.asks, self._best_ask, price, quantity, min)
        else:
            raise ValueError(f"side must be 'bid' or 'offer', got {side!r}")

    def top(self) -> Top | None:
        """(best bid, its size, best ask, its size), or None while a side is empty."""
        if self._best_bid is None or self._best_ask is None:
            return None
        bid, ask = self._best_bid, self._best_ask
        return (bid, self.bids[bid], ask, self.asks[ask])


def _set_level(
    levels: dict[float, float], best: float | None, price: float, quantity: float, better: Any
) -> float | None:
    if quantity > 0:
        levels[price] = quantity
        return price if best is None else better(best, price)
    if levels.pop(price, None) is not None and price == best:
        return better(levels) if levels else None
    return best


class _PartError(Exception):
    """A bad part of a message; becomes a `Reject` with `reason`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class CoinbaseFeedParser:
    """Parses the frames of one Coinbase websocket connection into quantlab items.

    Stateful (books, last sequence number) but pure: feed it frames, read `parse`'s items,
    then `take_resync()` for what must be resubscribed. Use a new parser per connection.
    Frames over `MAX_FRAME_BYTES` are rejected, except level2 snapshots up to
    `max_snapshot_bytes` (a deep book's snapshot is larger, and without it there is no book).
    """

    def __init__(
        self, symbols: Iterable[str], *, max_snapshot_bytes: int = MAX_FRAME_BYTES
    ) -> None:
        self.symbols = {to_product(s): s for s in symbols}
        self.max_snapshot_bytes = max_snapshot_bytes
        self.books: dict[str, L2Book] = {}
        self.last_sequence: int | None = None
        self.gaps = 0  # sequence gaps seen on this connection
        self.missed = 0  # messages lost in those gaps
        self.ignored_updates = 0  # level2 updates for a book awaiting its snapshot
        self._last_top: dict[str, Top | None] = {}
        self._resync: dict[str, set[str]] = {}
        self._channels = {
            "subscriptions": self._subscriptions,
            "heartbeats": self._heartbeats,
            "ticker": self._ticker,
            "market_trades": self._market_trades,
            "l2_data": self._l2_data,
        }

    def take_resync(self) -> dict[str, list[str]]:
        """Channel -> product ids to resubscribe (unsubscribe + subscribe), then forget them."""
        out = {channel: sorted(products) for channel, products in self._resync.items()}
        self._resync = {}
        return out

    def parse(self, raw: bytes | str) -> list[SourceItem]:
        """One websocket frame -> `Events`, `Heartbeat` and `Reject` items (never raises)."""
        oversized = check_size(raw)
        if oversized is not None and not self._is_snapshot(raw):
            return [oversized]
        try:
            msg = _decoder.decode(raw)
        except _DECODE_ERRORS as exc:
            return [reject(decode_error_reason(exc), f"coinbase: {exc}", raw)]
        if not isinstance(msg, dict):
            return [reject(WRONG_TYPE, f"expected a JSON object, got {type(msg).__name__}", raw)]
        if msg.get("type") == "error":
            return [reject(UNKNOWN_MESSAGE, f"server error: {msg.get('message')!r}", raw)]
        seq = msg.get("sequence_num")
        if seq is not None:
            if not _is_int(seq):
                return [
                    reject(WRONG_TYPE, f"sequence_num must be an integer, got {seq!r:.40}", raw)
                ]
            self._check_sequence(seq)
        channel = msg.get("channel")
        handler = self._channels.get(channel) if isinstance(channel, str) else None
        if handler is None:
            return [reject(UNKNOWN_MESSAGE, f"unknown channel {channel!r:.60}", raw)]
        events = msg.get("events")
        if not isinstance(events, list):
            return [reject(WRONG_TYPE, f"events must be a list, got {events!r:.80}", raw)]
        fb = FrameBuilder()
        extra: list[SourceItem] = []
        for event in events:
            try:
                if not isinstance(event, dict):
                    raise _PartError(WRONG_TYPE, f"event must be an object, got {event!r:.80}")
                extra.extend(handler(msg, event, fb))
            except _PartError as exc:
                fb.reject(exc.reason, f"{msg['channel']}: {exc}", _encode(event))
        return [*extra, *fb.items()]

    def _is_snapshot(self, raw: bytes | str) -> bool:
        if len(raw) > self.max_snapshot_bytes:
            return False
        # Coinbase writes the envelope first: the channel and the event type are near the start.
        head = raw[:512] if isinstance(raw, str) else raw[:512].decode("utf-8", "replace")
        return '"l2_data"' in head and '"snapshot"' in head

    def _check_sequence(self, seq: int) -> None:
        last, self.last_sequence = self.last_sequence, seq
        if last is None or seq == last + 1:
            return
        if seq <= last:  # replayed or reordered; nothing was lost
            self.last_sequence = last
            return
        self.gaps += 1
        self.missed += seq - last - 1
        # Lost level2 updates leave every book wrong: drop them until the new snapshots.
        self.books.clear()
        for channel in DATA_CHANNELS:
            self._resync.setdefault(channel, set()).update(self.symbols)

    # ---- channels -------------------------------------------------------------------------

    def _subscriptions(
        self, msg: dict[str, Any], event: dict[str, Any], fb: FrameBuilder
    ) -> _Extra:
        return []

    def _heartbeats(self, msg: dict[str, Any], event: dict[str, Any], fb: FrameBuilder) -> _Extra:
        return [Heartbeat(ts_ns=_time(msg.get("timestamp"), "timestamp"))]

    def _ticker(self, msg: dict[str, Any], event: dict[str, Any], fb: FrameBuilder) -> _Extra:
        tickers = _list(event, "tickers")
        ts = _time(msg.get("timestamp"), "timestamp")
        for ticker in tickers:
            try:
                symbol = self._symbol(ticker)
                fb.quote(
                    symbol,
                    ts,
                    _num(ticker, "best_bid"),
                    _num(ticker, "best_ask"),
                    _num(ticker, "best_bid_quantity"),
                    _num(ticker, "best_ask_quantity"),
                )
            except _PartError as exc:
                fb.reject(exc.reason, f"ticker: {exc}", _encode(ticker))
        return []

    def _market_trades(
        self, msg: dict[str, Any], event: dict[str, Any], fb: FrameBuilder
    ) -> _Extra:
        for trade in _list(event, "trades"):
            try:
                symbol = self._symbol(trade)
                side = trade.get("side")
                trade_id = trade.get("trade_id")
                if not isinstance(side, str):
                    raise _PartError(WRONG_TYPE, f"side must be a string, got {side!r:.40}")
                if not isinstance(trade_id, str) and not _is_int(trade_id):
                    raise _PartError(WRONG_TYPE, f"trade_id must be a string, got {trade_id!r:.40}")
                fb.trade(
                    symbol,
                    _time(trade.get("time"), "time"),
                    _num(trade, "price"),
                    _num(trade, "size"),
                    _AGGRESSOR.get(side.upper(), Aggressor.UNKNOWN),
                    str(trade_id),
                )
            except _PartError as exc:
                fb.reject(exc.reason, f"market_trades: {exc}", _encode(trade))
        return []

    def _l2_data(self, msg: dict[str, Any], event: dict[str, Any], fb: FrameBuilder) -> _Extra:
        symbol = self._symbol(event)
        product: str = event["product_id"]
        try:
            updates = [_level(u) for u in _list(event, "updates")]
        except _PartError:
            # The book would silently miss these levels: drop it and fetch a new snapshot.
            self.books.pop(product, None)
            self._resync.setdefault(LEVEL2, set()).add(product)
            raise
        if event.get("type") == "snapshot":
            book = self.books[product] = L2Book()
            for side, price, quantity, _ in updates:
                book.apply(side, price, quantity)
            self._emit_top(product, symbol, max((u[3] for u in updates), default=0), fb)
            return []
        book_or_none = self.books.get(product)
        if book_or_none is None:
            self.ignored_updates += len(updates)
            return []
        # Updates sharing an event_time are one change: the top is checked after each run.
        for i, (side, price, quantity, ts) in enumerate(updates):
            book_or_none.apply(side, price, quantity)
            if i + 1 == len(updates) or updates[i + 1][3] != ts:
                self._emit_top(product, symbol, ts, fb)
        return []

    def _emit_top(self, product: str, symbol: str, ts: int, fb: FrameBuilder) -> None:
        top = self.books[product].top()
        if top != self._last_top.get(product):
            self._last_top[product] = top
            if top is not None:
                fb.quote(symbol, ts, top[0], top[2], top[1], top[3])

    def _symbol(self, item: Any) -> str:
        if not isinstance(item, dict):
            raise _PartError(WRONG_TYPE, f"expected an object, got {item!r:.80}")
        product = item.get("product_id")
        if not isinstance(product, str):
            raise _PartError(WRONG_TYPE, f"product_id must be a string, got {product!r:.40}")
        symbol = self.symbols.get(product)
        if symbol is None:
            raise _PartError(UNKNOWN_SYMBOL, f"product {product!r} is not subscribed")
        return symbol


def parse_candles(body: bytes | str, symbol: str) -> list[Events | Reject]:
    """A REST candles body (``{"candles": [{"start": "<epoch s>", "low", ...}]}``) -> bars."""
    try:
        msg = _decoder.decode(body)
    except _DECODE_ERRORS as exc:
        return [reject(decode_error_reason(exc), f"{CANDLES_BODY}: {exc}", body)]
    candles = msg.get("candles") if isinstance(msg, dict) else None
    if not isinstance(candles, list):
        detail = f"{CANDLES_BODY}: expected {{'candles': [...]}}, got {msg!r:.80}"
        return [reject(WRONG_TYPE, detail, body)]
    fb = FrameBuilder()
    for candle in candles:
        try:
            if not isinstance(candle, dict):
                raise _PartError(WRONG_TYPE, f"candle must be an object, got {candle!r:.80}")
            start: Any = candle.get("start")
            # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
            digits = isinstance(start, str) and start.isascii() and start.isdigit()
            if not (digits and len(start) <= 19) and not _is_int(start):
                raise _PartError(WRONG_TYPE, f"start must be epoch seconds, got {start!r:.40}")
            ts = int(start) * 1_000_000_000
            if not -_INT64 <= ts < _INT64:
                raise _PartError(WRONG_TYPE, f"start {start} is outside the nanosecond range")
            fb.bar(
                symbol,
                ts,
                _num(candle, "open"),
                _num(candle, "high"),
                _num(candle, "low"),
                _num(candle, "close"),
                _num(candle, "volume"),
            )
        except _PartError as exc:
            fb.reject(exc.reason, f"candles: {exc}", _encode(candle))
    return fb.items()


# ---- field helpers (raise _PartError) ---------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _num(item: dict[str, Any], key: str) -> float:
    try:
        return to_float(item.get(key))
    except ValueError as exc:
        raise _PartError(WRONG_TYPE, f"{key}: {exc}") from None


def _time(value: Any, key: str) -> int:
    try:
        return parse_time_ns(value)
    except (ValueError, TypeError):
        raise _PartError(WRONG_TYPE, f"{key} must be an RFC 3339 time, got {value!r:.60}") from None


def _list(event: dict[str, Any], key: str) -> list[Any]:
    value = event.get(key)
    if not isinstance(value, list):
        raise _PartError(WRONG_TYPE, f"{key} must be a list, got {value!r:.60}")
    return value


def _level(update: Any) -> tuple[str, float, float, int]:
    if not isinstance(update, dict):
        raise _PartError(WRONG_TYPE, f"level2 update must be an object, got {update!r:.60}")
    side = update.get("side")
    if side not in ("bid", "offer"):
        raise _PartError(WRONG_TYPE, f"level2 side must be 'bid' or 'offer', got {side!r:.40}")
    price, quantity = _num(update, "price_level"), _num(update, "new_quantity")
    # A NaN or infinite level could never be removed again: the book refuses it.
    if not (math.isfinite(price) and math.isfinite(quantity)):
        raise _PartError(WRONG_TYPE, f"level2 level must be finite, got {price} x {quantity}")
    return side, price, quantity, _time(update.get("event_time"), "event_time")


def _encode(value: Any) -> bytes:
    try:
        return msgspec.json.encode(value)
    except (TypeError, ValueError, OverflowError):
        return repr(value).encode()
