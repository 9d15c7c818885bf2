"""What the local fakes of ccxt venues share: one 127.0.0.1 port for REST and websocket,
topic routing, and the test controls. `binance.FakeBinance` and
`coinbase_ccxt.FakeCoinbaseAdvancedTrade` speak the venues' protocols on top of it.

Test controls: `send` queues a data message for a topic (delivered, in order, once a client
subscribes to it), `send_raw` queues any frame (bad input), `rest_replies` holds canned
REST replies (errors), `drop_connections` cuts every client, `go_silent` hangs the current
connections (no data, no pings, pongs unanswered), ``resend_last=K`` replays a topic's last
K data messages to every new subscriber (as a venue resending a snapshot; duplicates that
ingestion must drop), `offline` publishes to nobody (data messages sent meanwhile are never
delivered, but a resend includes them), and `received`, `subscriptions`, `rest_requests`,
`connections` and `paths` record what clients did.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response


@dataclass(frozen=True)
class RestRequest:
    path: str
    query: dict[str, str]


@dataclass(eq=False)
class Client:
    """One websocket client: its topics and per-connection state."""

    ws: ServerConnection
    topics: set[str] = field(default_factory=set)
    silent: bool = False
    sequence: int = 0

    @property
    def path(self) -> str:
        request = self.ws.request
        return request.path if request is not None else ""


def encode(value: Any) -> str:
    return msgspec.json.encode(value).decode()


class FakeVenue(ABC):
    """Base of the fakes; subclasses implement `on_message`, `route` and `on_tick`."""

    def __init__(self, *, resend_last: int = 0, tick_interval_s: float | None = None) -> None:
        self.resend_last = resend_last
        self.tick_interval_s = tick_interval_s
        self.received: list[Any] = []
        self.subscriptions: list[tuple[str, ...]] = []
        self.rest_requests: list[RestRequest] = []
        self.connections = 0
        self.paths: list[str] = []  # the URL path of every websocket connection
        # Canned REST replies by path, served (once each, in order) before normal routing.
        self.rest_replies: dict[str, list[tuple[int, Any]]] = {}
        self.offline = False
        self._clients: list[Client] = []
        self._history: dict[str, list[Any]] = {}
        self._queue: asyncio.Queue[tuple[str | None, Any, bool]] = asyncio.Queue()
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: Server | None = None

    async def __aenter__(self) -> Any:
        self._server = await serve(
            self._handle, "127.0.0.1", 0, process_request=self._http, max_size=None,
            ping_interval=None,
        )  # fmt: skip
        self._spawn(self._pump())
        if self.tick_interval_s is not None:
            self._spawn(self._ticker(self.tick_interval_s))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.drop_connections()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("start the fake first: `async with Fake...() as fake`")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    # --- test controls -------------------------------------------------------------------

    def send(self, topic: str, message: Any) -> Any:
        """Queue a data message for the clients subscribed to `topic`; returns it."""
        if self.offline:  # published while no client listens: only a resend can carry it
            self._history.setdefault(topic, []).append(message)
            return message
        self._queue.put_nowait((topic, message, False))
        return message

    def send_raw(self, frame: str | bytes, topic: str | None = None) -> None:
        """Queue a frame sent verbatim to `topic`'s subscribers (any subscribed client if None)."""
        self._queue.put_nowait((topic, frame, True))

    def drop_connections(self) -> None:
        """Cut every client connection at once, as a network failure would."""
        for client in self._clients:
            client.ws.transport.abort()
        self._clients.clear()

    def go_silent(self) -> None:
        """Hang the current connections: no more data or pings, and pongs go unanswered."""
        for client in self._clients:
            client.silent = True
            client.ws.transport.pause_reading()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until `predicate()` holds; it is checked on every (un)subscribe."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def wait_subscribed(self, *topics: str, timeout: float = 5.0) -> None:
        """Wait until every topic in `topics` has a live subscriber."""
        await self.wait_for(lambda: all(self._targets(t) for t in topics), timeout)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait until every queued message has been sent."""
        async with asyncio.timeout(timeout):
            await self._queue.join()

    # --- for subclasses ------------------------------------------------------------------

    async def on_connect(self, client: Client) -> None:  # noqa: B027 (optional hook)
        """Called when a client connects (before any message)."""

    @abstractmethod
    async def on_message(self, client: Client, message: Any) -> None:
        """Handle a client's message (subscribe, unsubscribe, ping ...)."""

    async def on_tick(self, client: Client) -> None:  # noqa: B027 (optional hook)
        """Called every `tick_interval_s` per live client (server pings, heartbeats)."""

    @abstractmethod
    def route(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        """A REST reply: (status, JSON body)."""

    def frame(self, client: Client, topic: str, message: Any) -> str:
        """The text frame carrying a data message to `client`."""
        return encode(message)

    async def reply(self, client: Client, message: Any) -> None:
        with contextlib.suppress(ConnectionClosed):
            await client.ws.send(encode(message))

    async def subscribe(self, client: Client, topics: list[str]) -> None:
        """Add `topics` to `client`, record them, and replay history if `resend_last`."""
        client.topics.update(topics)
        async with self._changed:
            self.subscriptions.append(tuple(topics))
            self._changed.notify_all()
        if self.resend_last:
            for topic in topics:
                for message in self._history.get(topic, [])[-self.resend_last :]:
                    await self._deliver(client, topic, message, raw=False)

    async def unsubscribe(self, client: Client, topics: list[str]) -> None:
        client.topics.difference_update(topics)
        async with self._changed:
            self._changed.notify_all()

    def history(self, topic: str) -> list[Any]:
        """The data messages sent on `topic` so far."""
        return list(self._history.get(topic, []))

    # --- machinery -----------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _targets(self, topic: str | None) -> list[Client]:
        return [
            c
            for c in self._clients
            if not c.silent and (topic in c.topics if topic is not None else bool(c.topics))
        ]

    async def _handle(self, ws: ServerConnection) -> None:
        client = Client(ws)
        self.connections += 1
        self.paths.append(client.path)
        self._clients.append(client)
        try:
            await self.on_connect(client)
            async for raw in ws:
                try:
                    message = msgspec.json.decode(raw)
                except msgspec.DecodeError:
                    message = raw
                self.received.append(message)
                await self.on_message(client, message)
        except ConnectionClosed:
            pass
        finally:
            if client in self._clients:
                self._clients.remove(client)
            async with self._changed:
                self._changed.notify_all()

    async def _deliver(self, client: Client, topic: str | None, message: Any, *, raw: bool) -> None:
        with contextlib.suppress(ConnectionClosed):
            if raw:
                await client.ws.send(message)
            else:
                await client.ws.send(self.frame(client, topic or "", message))

    async def _pump(self) -> None:
        while True:
            topic, message, raw = await self._queue.get()
            async with self._changed:
                await self._changed.wait_for(lambda topic=topic: bool(self._targets(topic)))  # type: ignore[misc]
            if not raw and topic is not None:
                self._history.setdefault(topic, []).append(message)
            for client in self._targets(topic):
                await self._deliver(client, topic, message, raw=raw)
            self._queue.task_done()

    async def _ticker(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            for client in [c for c in self._clients if not c.silent]:
                with contextlib.suppress(ConnectionClosed):
                    await self.on_tick(client)

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        url = urlsplit(request.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        self.rest_requests.append(RestRequest(url.path, query))
        canned = self.rest_replies.get(url.path)
        status, body = canned.pop(0) if canned else self.route(url.path, query)
        data = msgspec.json.encode(body)
        headers = Headers(
            [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        )
        return Response(status, http.HTTPStatus(status).phrase, headers, data)
