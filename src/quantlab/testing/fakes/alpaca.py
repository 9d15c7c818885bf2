"""A local fake of Alpaca's market-data API: the msgpack websocket stream and the REST bars.

The stream speaks Alpaca's documented protocol (msgpack frames, each an array of messages):
``[{"T":"success","msg":"connected"}]`` on connect, then ``{"action":"auth",...}`` ->
``authenticated`` (or ``{"T":"error","code":402}`` and a close), then ``{"action":"subscribe",...}``
-> a ``subscription`` ack, then the data queued with `push`, timestamps as msgpack Timestamps
(alpaca-py calls ``msg["t"].to_datetime()``). Any path works; each path (``/v2/iex``,
``/v1beta3/crypto/us``) has its own queue. REST: ``GET /v2/stocks/bars`` and
``GET /v1beta3/crypto/us/bars`` serve `bars` in pages of `page_size` with ``next_page_token``.

Test controls: `push` / `push_raw` (queue data or raw bad frames), `drop_connections()` (cut every
client mid-stream), `resend_last` (after a new subscription, resend the last K data messages, as a
venue resending a snapshot would), `paused` (hold the queue: a live but silent feed),
`offline` (what is pushed meanwhile is published to nobody: never sent, but in what
`resend_last` resends, as a venue's recent history holds what nobody received), and the
records `received` (what clients sent: auth, subscribe), `connections` and `rest_requests`.

>>> async with FakeAlpaca() as fake:                                   # doctest: +SKIP
...     fake.push({"T": "t", "S": "AAPL", "p": 1.5, "s": 10, "t": 1_700_000_000_000_000_000})
...     config = AlpacaDataConfig(symbols=("AAPL",), stream_url=fake.stream_url())
...     items = AlpacaDataSource(config, "test-key", "test-secret").stream()
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import msgpack
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

STOCK_PATH: Final = "/v2/iex"
CRYPTO_PATH: Final = "/v1beta3/crypto/us"
CHANNEL_KEYS: Final = (
    "trades",
    "quotes",
    "bars",
    "updatedBars",
    "dailyBars",
    "statuses",
    "lulds",
    "corrections",
    "cancelErrors",
)


def pack(messages: list[dict[str, Any]]) -> bytes:
    """A msgpack frame of `messages`; ``t`` given as int ns or datetime becomes a Timestamp."""
    return msgpack.packb([_wire(m) for m in messages])  # type: ignore[no-any-return]


def _wire(msg: dict[str, Any]) -> dict[str, Any]:
    t = msg.get("t")
    if isinstance(t, int):
        return {**msg, "t": msgpack.Timestamp.from_unix_nano(t)}
    if isinstance(t, dt.datetime):
        return {**msg, "t": msgpack.Timestamp.from_datetime(t)}
    return msg


@dataclass
class _Feed:
    pending: deque[bytes | list[dict[str, Any]]] = field(default_factory=deque)
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=10_000))
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class FakeAlpaca:
    """Alpaca's data stream (websocket) and bars (REST) on 127.0.0.1, free ports."""

    def __init__(self, *, key: str = "test-key", secret: str = "test-secret") -> None:  # noqa: S107
        self.key, self.secret = key, secret
        self.resend_last = 0
        self.paused = False
        self.offline = False
        self.page_size = 2
        self.bars: dict[str, list[dict[str, Any]]] = {}  # symbol -> REST bars ("t" RFC 3339)
        self.received: list[tuple[str, dict[str, Any]]] = []  # (path, message) from clients
        self.connections = 0
        self.rest_requests: list[tuple[str, dict[str, str]]] = []
        self._feeds: defaultdict[str, _Feed] = defaultdict(_Feed)
        self._clients: set[ServerConnection] = set()
        self._server: Server | None = None
        self._http: ThreadingHTTPServer | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    async def __aenter__(self) -> FakeAlpaca:
        self._server = await serve(self._handle, "127.0.0.1", 0, max_size=None, compression=None)
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _rest_handler(self))
        threading.Thread(target=self._http.serve_forever, args=(0.05,), daemon=True).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._http is not None:
            await asyncio.to_thread(self._http.shutdown)
            self._http.server_close()

    def stream_url(self, path: str = STOCK_PATH) -> str:
        if self._server is None:
            raise RuntimeError("use FakeAlpaca as an async context manager")
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}{path}"

    @property
    def rest_url(self) -> str:
        if self._http is None:
            raise RuntimeError("use FakeAlpaca as an async context manager")
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    # -- controls ------------------------------------------------------------------------------
    def push(self, *messages: dict[str, Any], path: str = STOCK_PATH) -> None:
        """Queue one data frame holding `messages` for the (next) subscribed client on `path`."""
        feed = self._feeds[path]
        if self.offline:  # published while no client listens: only a resend can carry it
            feed.history.extend(messages)
            return
        feed.pending.append(list(messages))
        feed.wake.set()

    def push_raw(self, frame: bytes, path: str = STOCK_PATH) -> None:
        """Queue a raw frame, sent as is (malformed, truncated, oversized...)."""
        feed = self._feeds[path]
        feed.pending.append(frame)
        feed.wake.set()

    def resume(self) -> None:
        self.paused = False
        for feed in self._feeds.values():
            feed.wake.set()

    def drop_connections(self) -> None:
        """Cut every client connection without a close handshake."""
        for ws in list(self._clients):
            ws.transport.abort()

    def sent_by_clients(self, action: str, path: str | None = None) -> list[dict[str, Any]]:
        """What clients sent with this ``action`` (``auth``, ``subscribe``), oldest first."""
        return [m for p, m in self.received if m.get("action") == action and path in (None, p)]

    # -- websocket -----------------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else "/"
        self.connections += 1
        self._clients.add(ws)
        try:
            await ws.send(pack([{"T": "success", "msg": "connected"}]))
            auth = await self._recv(ws, path)
            if (auth.get("key"), auth.get("secret")) != (self.key, self.secret):
                await ws.send(pack([{"T": "error", "code": 402, "msg": "auth failed"}]))
                return
            await ws.send(pack([{"T": "success", "msg": "authenticated"}]))
            subscribe = await self._recv(ws, path)
            ack = {k: list(subscribe.get(k, [])) for k in CHANNEL_KEYS}
            await ws.send(pack([{"T": "subscription", **ack}]))
            sender = asyncio.create_task(self._send_loop(ws, self._feeds[path]))
            try:
                while True:
                    await self._recv(ws, path)  # later (un)subscribes are recorded only
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await sender
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(ws)

    async def _recv(self, ws: ServerConnection, path: str) -> dict[str, Any]:
        raw = await ws.recv()
        msg = msgpack.unpackb(raw) if isinstance(raw, bytes) else json.loads(raw)
        self.received.append((path, msg))
        return msg  # type: ignore[no-any-return]

    async def _send_loop(self, ws: ServerConnection, feed: _Feed) -> None:
        if self.resend_last and feed.history:
            await ws.send(pack(list(feed.history)[-self.resend_last :]))
        while True:
            while self.paused or not feed.pending:
                feed.wake.clear()
                await feed.wake.wait()
            item = feed.pending[0]
            await ws.send(item if isinstance(item, bytes) else pack(item))
            feed.pending.popleft()  # only once sent: a frame cut by a drop goes to the next client
            if not isinstance(item, bytes):
                feed.history.extend(item)


def _when(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text[:19] + text[19:].lstrip("0123456789."))


def _rest_handler(fake: FakeAlpaca) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            params = {k: v[-1] for k, v in parse_qs(url.query).items()}
            fake.rest_requests.append((url.path, params))
            if url.path not in ("/v2/stocks/bars", "/v1beta3/crypto/us/bars"):
                return self._reply(404, {"message": "Not Found"})
            if url.path.startswith("/v2/") and (
                self.headers.get("APCA-API-KEY-ID") != fake.key
                or self.headers.get("APCA-API-SECRET-KEY") != fake.secret
            ):
                return self._reply(403, {"message": "forbidden"})
            symbols = [s for s in params.get("symbols", "").split(",") if s]
            start = _when(params.get("start", "1970-01-01T00:00:00Z"))
            end = _when(params.get("end", "9999-01-01T00:00:00Z"))
            rows = [
                (s, bar)
                for s in sorted(symbols)
                for bar in fake.bars.get(s, [])
                if start <= _when(bar["t"]) <= end
            ]
            offset = int(base64.b64decode(params["page_token"])) if "page_token" in params else 0
            size = min(fake.page_size, int(params.get("limit", 10_000)))
            page = rows[offset : offset + size]
            bars: dict[str, list[dict[str, Any]]] = {}
            for symbol, bar in page:
                bars.setdefault(symbol, []).append(bar)
            more = offset + size < len(rows)
            token = base64.b64encode(str(offset + size).encode()).decode() if more else None
            return self._reply(200, {"bars": bars, "next_page_token": token})

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output quiet

    return Handler
