"""A local fake of Polygon's stocks websocket and REST aggregates, on 127.0.0.1.

It speaks Polygon's documented protocol: a ``connected`` greeting, ``auth`` with the API key
(``auth_success`` / ``auth_failed``), ``subscribe`` with ``"T.AAPL,Q.AAPL"`` params (one
``success`` status per channel), then JSON arrays of events; REST serves
``/v2/aggs/ticker/{ticker}/range/{n}/{span}/{from}/{to}`` with ``next_url`` pagination and the
key as ``apiKey=`` or ``Authorization: Bearer``.

Test controls: `send` queues data frames (delivered, in order, once a client is subscribed),
`send_raw` injects any bytes, `drop_connections` cuts every client, `go_silent` hangs the
current connections (no data, no pongs), ``resend_last=K`` replays the last K data frames
after every subscribe (duplicates, as a venue resending a snapshot), `offline` publishes to
nobody (frames sent meanwhile are never delivered, but a resend includes them),
``rest_replies`` queues canned HTTP replies, and `received`, `auths`, `subscriptions`,
`rest_requests` record what clients did.

Examples
--------
>>> async def demo():
...     async with FakePolygon(api_key="k") as fake:
...         fake.send(trade_event("AAPL", 114.125, 100, 1536036818784))
...         ...  # PolygonDataSource(PolygonDataConfig(ws_url=fake.ws_url, ...), api_key="k")
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import itertools
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from quantlab.testing.fakes._http import serve_one

_AGGS = re.compile(r"^/v2/aggs/ticker/([^/]+)/range/(\d+)/([a-z]+)/([^/]+)/([^/]+)$")
_SPAN_MS = {"second": 1_000, "minute": 60_000, "hour": 3_600_000, "day": 86_400_000}


def trade_event(
    sym: str, price: float, size: float, t_ms: int, trade_id: str = "1"
) -> dict[str, Any]:
    """A ``T`` event as Polygon documents it (``t`` in Unix milliseconds)."""
    return {
        "ev": "T", "sym": sym, "i": trade_id, "x": 4, "p": price, "s": size,
        "c": [0, 12], "t": t_ms, "q": 3681328, "z": 3,
    }  # fmt: skip


def quote_event(
    sym: str, bid: float, ask: float, t_ms: int, bid_size: float = 1, ask_size: float = 2
) -> dict[str, Any]:
    """A ``Q`` event; sizes are round lots, as Polygon sends them."""
    return {
        "ev": "Q", "sym": sym, "bx": 4, "bp": bid, "bs": bid_size, "ax": 7, "ap": ask,
        "as": ask_size, "c": 0, "t": t_ms, "q": 50385480, "z": 3,
    }  # fmt: skip


def bar_event(
    sym: str, start_ms: int, o: float, h: float, low: float, c: float, v: float, ev: str = "AM"
) -> dict[str, Any]:
    """An ``AM`` (minute) or ``A`` (second) aggregate starting at ``start_ms``."""
    span = 60_000 if ev == "AM" else 1_000
    return {
        "ev": ev, "sym": sym, "v": v, "av": 9470157, "op": o, "vw": (h + low) / 2, "o": o,
        "c": c, "h": h, "l": low, "a": c, "z": 685, "s": start_ms, "e": start_ms + span,
    }  # fmt: skip


def rest_bar(t_ms: int, o: float, h: float, low: float, c: float, v: float) -> dict[str, Any]:
    """One row of ``/v2/aggs`` results."""
    return {"v": v, "vw": (h + low) / 2, "o": o, "c": c, "h": h, "l": low, "t": t_ms, "n": 12}


@dataclass
class RestReply:
    """A canned HTTP reply served (once) before normal routing; `delay_s` stalls it first."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"{}"
    delay_s: float = 0.0


@dataclass(frozen=True)
class RestRequest:
    path: str
    query: dict[str, str]
    authorization: str | None


@dataclass(eq=False)
class _Client:
    ws: ServerConnection
    authed: bool = False
    subs: set[str] = field(default_factory=set)
    silent: bool = False

    def wants(self, event: Any) -> bool:
        if not isinstance(event, dict):
            return True
        ev, sym = event.get("ev"), event.get("sym")
        return f"{ev}.{sym}" in self.subs or f"{ev}.*" in self.subs


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _status(status: str, message: str) -> dict[str, str]:
    return {"ev": "status", "status": status, "message": message}


class FakePolygon:
    """Fake Polygon stocks websocket + REST server; use as ``async with FakePolygon() as f``."""

    def __init__(
        self, *, api_key: str = "test-key", resend_last: int = 0, page_size: int = 50_000
    ) -> None:
        self.api_key = api_key
        self.resend_last = resend_last
        self.page_size = page_size
        self.bars: dict[str, list[dict[str, Any]]] = {}  # REST aggregates per ticker, by `t`
        self.rest_replies: list[RestReply] = []
        self.offline = False
        self.received: list[Any] = []
        self.auths: list[str] = []
        self.subscriptions: list[list[str]] = []
        self.rest_requests: list[RestRequest] = []
        self.connections = 0
        self._clients: list[_Client] = []
        self._history: list[list[Any]] = []
        self._queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()
        self._ready = asyncio.Event()
        self._subscribed = asyncio.Condition()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ws: Server | None = None
        self._http: asyncio.Server | None = None

    async def __aenter__(self) -> FakePolygon:
        self._ws = await serve(self._handle, "127.0.0.1", 0, max_size=None, ping_interval=None)
        self._http = await asyncio.start_server(self._serve_http, "127.0.0.1", 0)
        self._tasks.add(asyncio.create_task(self._pump()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.drop_connections()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        for server in (self._ws, self._http):
            if server is not None:
                server.close()
                await server.wait_closed()

    @property
    def ws_url(self) -> str:
        if self._ws is None:
            raise RuntimeError("start the fake first: `async with FakePolygon() as fake`")
        return f"ws://127.0.0.1:{self._ws.sockets[0].getsockname()[1]}/stocks"

    @property
    def rest_url(self) -> str:
        if self._http is None:
            raise RuntimeError("start the fake first: `async with FakePolygon() as fake`")
        return f"http://127.0.0.1:{self._http.sockets[0].getsockname()[1]}"

    # --- test controls -------------------------------------------------------------------

    def send(self, *events: dict[str, Any]) -> None:
        """Queue one data frame holding `events`; each client gets those it subscribed to."""
        if self.offline:  # published while no client listens: only a resend can carry it
            self._history.append(list(events))
            return
        self._queue.put_nowait((False, list(events)))

    def send_raw(self, frame: str | bytes) -> None:
        """Queue a frame sent verbatim to every subscribed client (bad input, statuses)."""
        self._queue.put_nowait((True, frame))

    def drop_connections(self) -> None:
        """Cut every client connection at once, as a network failure would."""
        for client in self._clients:
            client.ws.transport.abort()
        self._clients.clear()
        self._ready.clear()

    def go_silent(self) -> None:
        """Hang the current connections: no more data, and pings go unanswered."""
        for client in self._clients:
            client.silent = True
            client.ws.transport.pause_reading()
        self._update_ready()

    async def wait_subscribed(self, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until clients have sent `count` subscribe messages in total."""
        async with asyncio.timeout(timeout), self._subscribed:
            await self._subscribed.wait_for(lambda: len(self.subscriptions) >= count)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait until every queued frame has been sent."""
        async with asyncio.timeout(timeout):
            await self._queue.join()

    # --- websocket -----------------------------------------------------------------------

    def _update_ready(self) -> None:
        if any(c.subs and not c.silent for c in self._clients):
            self._ready.set()
        else:
            self._ready.clear()

    async def _handle(self, ws: ServerConnection) -> None:
        client = _Client(ws)
        self.connections += 1
        self._clients.append(client)
        try:
            await ws.send(_json([_status("connected", "Connected Successfully")]))
            async for raw in ws:
                try:
                    msg = msgspec.json.decode(raw)
                except msgspec.DecodeError:
                    msg = raw
                self.received.append(msg)
                if isinstance(msg, dict):
                    await self._on_message(client, msg)
        except ConnectionClosed:
            pass
        finally:
            if client in self._clients:
                self._clients.remove(client)
            self._update_ready()

    async def _on_message(self, client: _Client, msg: dict[str, Any]) -> None:
        action, params = msg.get("action"), str(msg.get("params", ""))
        if action == "auth":
            self.auths.append(params)
            if params == self.api_key:
                client.authed = True
                await client.ws.send(_json([_status("auth_success", "authenticated")]))
            else:
                await client.ws.send(_json([_status("auth_failed", "authentication failed")]))
                await client.ws.close(1008, "authentication failed")
        elif not client.authed:
            await client.ws.send(_json([_status("error", "not authorized")]))
        elif action == "subscribe":
            subs = [s for s in params.split(",") if s]
            client.subs.update(subs)
            await client.ws.send(_json([_status("success", f"subscribed to: {s}") for s in subs]))
            if self.resend_last:
                for frame in self._history[-self.resend_last :]:
                    await self._deliver(client, frame)
            async with self._subscribed:
                self.subscriptions.append(subs)
                self._subscribed.notify_all()
            self._update_ready()
        elif action == "unsubscribe":
            subs = [s for s in params.split(",") if s]
            client.subs.difference_update(subs)
            await client.ws.send(_json([_status("success", f"unsubscribed to: {s}") for s in subs]))
            self._update_ready()

    async def _deliver(self, client: _Client, frame: list[Any]) -> None:
        events = [e for e in frame if client.wants(e)]
        if events:
            with contextlib.suppress(ConnectionClosed):
                await client.ws.send(_json(events))

    async def _pump(self) -> None:
        while True:
            raw, frame = await self._queue.get()
            await self._ready.wait()
            if not raw:
                self._history.append(frame)
            for client in [c for c in self._clients if c.subs and not c.silent]:
                if raw:
                    with contextlib.suppress(ConnectionClosed):
                        await client.ws.send(frame)
                else:
                    await self._deliver(client, frame)
            self._queue.task_done()

    # --- REST ----------------------------------------------------------------------------

    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_one(reader, writer, self._route, self._tasks)

    async def _route(self, target: str, headers: dict[str, str]) -> RestReply:
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        auth = headers.get("authorization")
        self.rest_requests.append(RestRequest(url.path, query, auth))
        if self.rest_replies:
            reply = self.rest_replies.pop(0)
            await asyncio.sleep(reply.delay_s)
            return reply
        if query.get("apiKey") != self.api_key and auth != f"Bearer {self.api_key}":
            body = {"status": "ERROR", "request_id": "fake", "error": "Unknown API Key"}
            return RestReply(401, body=msgspec.json.encode(body))
        match = _AGGS.match(url.path)
        if match is None or match.group(3) not in _SPAN_MS:
            body = {"status": "NOT_FOUND", "request_id": "fake", "message": "Not Found"}
            return RestReply(404, body=msgspec.json.encode(body))
        return RestReply(200, body=msgspec.json.encode(self._aggregates(match, query)))

    def _aggregates(self, match: re.Match[str], query: dict[str, str]) -> dict[str, Any]:
        ticker, _mult, _span, start, end = match.groups()
        lo, hi = _ms(start), _ms(end, end_of_day=True)
        rows = sorted(
            (b for b in self.bars.get(ticker, []) if lo <= b["t"] <= hi), key=lambda b: b["t"]
        )
        offset, limit = 0, int(query.get("limit", 5000))
        if "cursor" in query:
            cursor = parse_qs(base64.urlsafe_b64decode(query["cursor"]).decode())
            offset, limit = int(cursor["offset"][0]), int(cursor["limit"][0])
        size = min(limit, self.page_size)
        page = rows[offset : offset + size]
        doc: dict[str, Any] = {
            "ticker": ticker, "queryCount": len(page), "resultsCount": len(page),
            "adjusted": query.get("adjusted", "true") == "true", "status": "OK",
            "request_id": f"fake-{next(_ids)}", "count": len(page),
        }  # fmt: skip
        if page:
            doc["results"] = page
        if offset + size < len(rows):
            token = base64.urlsafe_b64encode(f"offset={offset + size}&limit={limit}".encode())
            doc["next_url"] = f"{self.rest_url}{match.group(0)}?cursor={token.decode()}"
        return doc


_ids = itertools.count(1)


def _ms(value: str, *, end_of_day: bool = False) -> int:
    """A ``from``/``to`` path value: Unix milliseconds or a ``YYYY-MM-DD`` date."""
    if value.isdigit():
        return int(value)
    day = dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)
    return int(day.timestamp() * 1000) + (86_400_000 - 1 if end_of_day else 0)
