"""A fake Coinbase Advanced Trade server: market-data websocket and REST candles, on 127.0.0.1.

It speaks the documented protocol: one channel per (un)subscribe message, a `subscriptions`
ack listing the connection's subscriptions, a level2 snapshot (channel ``l2_data``) on
subscribe, heartbeats, a `sequence_num` per connection that increases by one per message, and
a disconnect when no subscribe arrives within `subscribe_timeout_s` (5 s at Coinbase). The
same port answers ``GET /api/v3/brokerage/market/products/{id}/candles`` (public endpoint).

Tests queue data with `ticker`, `trade`, `l2` (or `send`, `send_raw`); the queue is delivered
in order to the connections subscribed to each message's channel and product, waiting until
one is. Controls: `lose_next` (messages consume a sequence number but are not sent: a gap),
`drop_connections`, `go_silent`/`resume`, `resend_last` (re-sent ticker and trade messages
on subscribe, as duplicates), `offline` (ticker and trade messages queued meanwhile are
published to nobody: never sent, but resent), `override_rest`, `set_candles` / `candle`
(what REST serves). Records: `received` (every client message), `connections`,
`rest_requests`.

Examples
--------
>>> async with FakeCoinbase(products=("BTC-USD",)) as fake:  # doctest: +SKIP
...     fake.ticker("BTC-USD", bid=100.0, ask=101.0)
...     source = CoinbaseDataSource(CoinbaseDataConfig(symbols=("BTC/USD",), ws_url=fake.ws_url))
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

CHANNELS = ("ticker", "market_trades", "level2", "heartbeats")
# Channel a data message arrives on -> the channel a client subscribes to.
SUBSCRIBED_AS = {"ticker": "ticker", "market_trades": "market_trades", "l2_data": "level2"}
GRANULARITY_S = {
    "ONE_MINUTE": 60,
    "FIVE_MINUTE": 300,
    "FIFTEEN_MINUTE": 900,
    "THIRTY_MINUTE": 1800,
    "ONE_HOUR": 3600,
    "TWO_HOUR": 7200,
    "SIX_HOUR": 21600,
    "ONE_DAY": 86400,
}
MAX_CANDLES = 350
_CANDLES_PATH = re.compile(r"^/api/v3/brokerage/market/products/([^/]+)/candles$")

Number = float | str


def iso_ns(ts_ns: int) -> str:
    """Int ns UTC as Coinbase writes times: ``2023-06-23T20:31:26.122969572Z``."""
    seconds, nanos = divmod(ts_ns, 1_000_000_000)
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{nanos:09d}Z"
    )


def _text(value: Number) -> str:
    return value if isinstance(value, str) else repr(float(value))


@dataclass
class _Message:
    """A queued message: data for one channel and product, or a raw frame."""

    channel: str = ""
    product: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    timestamp_ns: int | None = None
    raw: bytes | str | None = None
    lost: bool = False  # takes a sequence number but is never sent


@dataclass
class _Client:
    ws: ServerConnection
    number: int
    subs: dict[str, set[str]] = field(default_factory=dict)
    seq: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def wants(self, msg: _Message) -> bool:
        if msg.raw is not None:
            return bool(self.subs)
        return msg.product in self.subs.get(SUBSCRIBED_AS[msg.channel], ())

    async def emit(self, channel: str, events: list[Any], ts_ns: int | None = None) -> None:
        async with self.lock:
            await self.send_locked(channel, events, ts_ns)

    async def send_locked(self, channel: str, events: list[Any], ts_ns: int | None) -> None:
        """Send with the next sequence number; the caller holds `lock`."""
        ts = iso_ns(time.time_ns() if ts_ns is None else ts_ns)
        seq, self.seq = self.seq, self.seq + 1
        body = {"channel": channel, "client_id": "", "timestamp": ts, "sequence_num": seq}
        await self.ws.send(json.dumps({**body, "events": events}))


class FakeCoinbase:
    """The fake server; use as ``async with FakeCoinbase(...) as fake``."""

    def __init__(
        self,
        *,
        products: Iterable[str] = ("BTC-USD", "ETH-USD"),
        heartbeat_interval_s: float | None = 0.1,
        subscribe_timeout_s: float = 5.0,
        resend_last: int = 0,
    ) -> None:
        self.products = set(products)
        self.heartbeat_interval_s = heartbeat_interval_s
        self.subscribe_timeout_s = subscribe_timeout_s
        self.received: list[tuple[int, dict[str, Any]]] = []  # (connection number, message)
        self.connections = 0
        self.rest_requests: list[str] = []
        self._clients: list[_Client] = []
        self._queue: deque[_Message] = deque()
        self._wake = asyncio.Event()
        self._silent = False
        self._lose = 0
        self.offline = False
        self._history: deque[_Message] = deque(maxlen=max(resend_last, 1))
        self._resend_last = resend_last
        self._books: dict[str, dict[tuple[str, str], tuple[str, str]]] = {}
        self._candles: dict[tuple[str, str], dict[int, tuple[float, ...]]] = {}
        self._rest_overrides: deque[tuple[int, str]] = deque()
        self._server: Server | None = None
        self._pump_task: asyncio.Task[None] | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> FakeCoinbase:
        self._server = await serve(
            self._handle, "127.0.0.1", 0, process_request=self._http, max_size=None
        )
        self._pump_task = asyncio.create_task(self._pump())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def port(self) -> int:
        assert self._server is not None, "start the fake with `async with`"  # noqa: S101
        return int(next(iter(self._server.sockets)).getsockname()[1])

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- what tests queue ------------------------------------------------------------------

    def ticker(
        self,
        product: str,
        bid: Number,
        ask: Number,
        bid_qty: Number = 1.0,
        ask_qty: Number = 1.0,
        *,
        price: Number | None = None,
        ts_ns: int | None = None,
    ) -> None:
        ticker = {
            "type": "ticker",
            "product_id": product,
            "price": _text(price if price is not None else bid),
            "volume_24_h": "100.0",
            "best_bid": _text(bid),
            "best_bid_quantity": _text(bid_qty),
            "best_ask": _text(ask),
            "best_ask_quantity": _text(ask_qty),
        }
        self.send("ticker", product, [{"type": "update", "tickers": [ticker]}], ts_ns=ts_ns)

    def trade(
        self,
        product: str,
        trade_id: str,
        price: Number,
        size: Number,
        side: str = "BUY",
        *,
        ts_ns: int | None = None,
    ) -> None:
        trade = {
            "trade_id": trade_id,
            "product_id": product,
            "price": _text(price),
            "size": _text(size),
            "side": side,
            "time": iso_ns(time.time_ns() if ts_ns is None else ts_ns),
        }
        self.send("market_trades", product, [{"type": "update", "trades": [trade]}])

    def l2(
        self, product: str, updates: Iterable[tuple[str, Number, Number]], *, ts_ns: int
    ) -> None:
        """Queue a level2 update: (side "bid"|"offer", price level, new quantity) triples."""
        rows = [
            {
                "side": side,
                "event_time": iso_ns(ts_ns),
                "price_level": _text(price),
                "new_quantity": _text(qty),
            }
            for side, price, qty in updates
        ]
        self.send("l2_data", product, [{"type": "update", "product_id": product, "updates": rows}])

    def send(
        self, channel: str, product: str, events: list[dict[str, Any]], *, ts_ns: int | None = None
    ) -> None:
        """Queue a data message for `channel` ("ticker", "market_trades", "l2_data")."""
        if channel not in SUBSCRIBED_AS:
            raise ValueError(f"unknown data channel {channel!r}; use send_raw for bad frames")
        self._put(_Message(channel, product, events, ts_ns))

    def send_raw(self, frame: bytes | str) -> None:
        """Queue a frame sent as-is (text if str, binary if bytes), without a sequence number."""
        self._put(_Message(raw=frame))

    def _put(self, msg: _Message) -> None:
        if self.offline and msg.raw is None and msg.channel != "l2_data":
            self._history.append(msg)  # published while no client listens: resends carry it
            return
        if self._lose > 0 and msg.raw is None:
            self._lose -= 1
            msg.lost = True
        self._queue.append(msg)
        self._wake.set()

    # ---- controls --------------------------------------------------------------------------

    def lose_next(self, n: int = 1) -> None:
        """The next `n` data messages queued take a sequence number but are never sent (a gap)."""
        self._lose += n

    def drop_connections(self) -> None:
        """Cut every client connection now, without a close handshake."""
        for client in list(self._clients):
            client.ws.transport.abort()

    def go_silent(self) -> None:
        """Stop sending data and heartbeats (connections stay open)."""
        self._silent = True

    def resume(self) -> None:
        self._silent = False
        self._wake.set()

    def override_rest(self, status: int, body: str = "", times: int = 1) -> None:
        """The next `times` REST requests are answered with `status` and `body`."""
        self._rest_overrides.extend([(status, body)] * times)

    def set_candles(
        self,
        product: str,
        rows: Iterable[tuple[int, float, float, float, float, float]],
        granularity: str = "ONE_MINUTE",
    ) -> None:
        """Candles served by REST: (start epoch s, open, high, low, close, volume)."""
        self._candles[(product, granularity)] = {int(r[0]): tuple(r[1:]) for r in rows}

    def candle(
        self,
        product: str,
        start_s: int,
        ohlcv: tuple[float, float, float, float, float],
        granularity: str = "ONE_MINUTE",
    ) -> None:
        """Set (add or replace) one candle served by REST: a candle still forming changes."""
        self._candles.setdefault((product, granularity), {})[int(start_s)] = tuple(ohlcv)

    def subscriptions(self, connection: int) -> list[tuple[str, str, tuple[str, ...]]]:
        """(type, channel, product_ids) of every (un)subscribe a connection sent, in order."""
        return [
            (m.get("type", ""), m.get("channel", ""), tuple(m.get("product_ids") or ()))
            for n, m in self.received
            if n == connection
        ]

    # ---- websocket -------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        client = _Client(ws, self.connections)
        self._clients.append(client)
        beats = asyncio.create_task(self._heartbeats(client))
        try:
            while True:
                timeout = None if client.subs else self.subscribe_timeout_s
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout)
                except TimeoutError:
                    await ws.close(1008, "no subscribe message received in time")
                    return
                await self._request(client, raw)
        except ConnectionClosed:
            pass
        finally:
            beats.cancel()
            self._clients.remove(client)

    async def _request(self, client: _Client, raw: str | bytes) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            await client.ws.send(json.dumps({"type": "error", "message": "malformed request"}))
            return
        self.received.append((client.number, msg))
        fields: dict[str, Any] = msg if isinstance(msg, dict) else {}
        kind: Any = fields.get("type")
        channel: Any = fields.get("channel")
        products: Any = fields.get("product_ids", [])
        valid = (
            kind in ("subscribe", "unsubscribe")
            and channel in CHANNELS
            and isinstance(products, list)
            and (channel == "heartbeats" or (products and set(products) <= self.products))
        )
        if not valid:
            await client.ws.send(json.dumps({"type": "error", "message": "Failure to subscribe"}))
            return
        async with client.lock:
            if kind == "subscribe":
                client.subs.setdefault(channel, set()).update(products)
            elif channel in client.subs:
                client.subs[channel].difference_update(products)
                if channel == "heartbeats" or not client.subs[channel]:
                    del client.subs[channel]
            ack = {"subscriptions": {c: sorted(p) for c, p in client.subs.items()}}
            await client.send_locked("subscriptions", [ack], None)
            if kind == "subscribe" and channel == "level2":
                for product in products:
                    await client.send_locked("l2_data", [self._snapshot(product)], None)
            if kind == "subscribe" and self._resend_last:
                for old in list(self._history):
                    if SUBSCRIBED_AS[old.channel] == channel and old.product in products:
                        await client.send_locked(old.channel, old.events, old.timestamp_ns)
        self._wake.set()

    def _snapshot(self, product: str) -> dict[str, Any]:
        levels = sorted(self._books.get(product, {}).items())
        updates = [
            {"side": side, "event_time": ts, "price_level": price, "new_quantity": qty}
            for (side, price), (qty, ts) in levels
        ]
        return {"type": "snapshot", "product_id": product, "updates": updates}

    def _apply_to_book(self, msg: _Message) -> None:
        if msg.channel != "l2_data":
            return
        book = self._books.setdefault(msg.product, {})
        for event in msg.events:
            for u in event.get("updates", []):
                key = (u["side"], u["price_level"])
                if float(u["new_quantity"]) > 0:
                    book[key] = (u["new_quantity"], u["event_time"])
                else:
                    book.pop(key, None)

    async def _pump(self) -> None:
        while True:
            while self._silent or not self._queue:
                self._wake.clear()
                await self._wake.wait()
            msg = self._queue[0]
            targets = [c for c in self._clients if c.wants(msg)]
            if not targets:
                self._wake.clear()
                await self._wake.wait()  # a subscribe or a new message wakes us
                continue
            self._queue.popleft()
            if msg.raw is None:
                self._apply_to_book(msg)
            if msg.lost:
                for client in targets:
                    client.seq += 1
                continue
            sent = False
            for client in targets:
                with contextlib.suppress(ConnectionClosed):
                    if msg.raw is not None:
                        await client.ws.send(msg.raw)
                    else:
                        await client.emit(msg.channel, msg.events, msg.timestamp_ns)
                    sent = True
            if not sent:
                self._queue.appendleft(msg)  # nobody got it: keep it for the next connection
                await asyncio.sleep(0.005)
                continue
            if msg.raw is None and msg.channel != "l2_data":
                self._history.append(msg)

    async def _heartbeats(self, client: _Client) -> None:
        if self.heartbeat_interval_s is None:
            return
        counter = 0
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(self.heartbeat_interval_s)
                if self._silent or "heartbeats" not in client.subs:
                    continue
                counter += 1
                now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f +0000 UTC")
                await client.emit(
                    "heartbeats", [{"current_time": now, "heartbeat_counter": counter}]
                )

    # ---- REST ------------------------------------------------------------------------------

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        self.rest_requests.append(request.path)
        if self._rest_overrides:
            status, body = self._rest_overrides.popleft()
            return _json_response(connection, status, body)
        url = urlsplit(request.path)
        match = _CANDLES_PATH.match(url.path)
        if match is None:
            return _json_response(connection, 404, '{"error":"NOT_FOUND","message":"not found"}')
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        product, granularity = match.group(1), query.get("granularity", "")
        start, end = query.get("start", ""), query.get("end", "")
        if granularity not in GRANULARITY_S or not (start.isdigit() and end.isdigit()):
            return _json_response(connection, 400, _error("start, end and granularity required"))
        lo, hi, step = int(start), int(end), GRANULARITY_S[granularity]
        if (hi - lo) // step + 1 > MAX_CANDLES:
            return _json_response(connection, 400, _error(f"at most {MAX_CANDLES} candles"))
        stored = self._candles.get((product, granularity), {})
        candles = [
            {
                "start": str(s),
                "low": repr(row[2]),
                "high": repr(row[1]),
                "open": repr(row[0]),
                "close": repr(row[3]),
                "volume": repr(row[4]),
            }
            for s, row in sorted(stored.items(), reverse=True)  # newest first, as Coinbase
            if lo <= s <= hi
        ]
        return _json_response(connection, 200, json.dumps({"candles": candles}))


def _error(message: str) -> str:
    return json.dumps({"error": "INVALID_ARGUMENT", "message": message})


def _json_response(connection: ServerConnection, status: int, body: str) -> Response:
    response = connection.respond(HTTPStatus(status), body)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response
