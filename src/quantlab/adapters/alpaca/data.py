"""The Alpaca live data source: US stock or crypto trades, quotes and minute bars.

Each `stream()` call is one connection: connect, authenticate, subscribe, then yield items until
the connection fails, when it raises `SourceDisconnected` and the multiplexer reconnects (with
its backoff, its stale detection and its counters) by calling `stream()` again.

Two transports speak Alpaca's protocol (msgpack frames; connected -> auth -> authenticated ->
subscribe -> subscription ack; see `testing.fakes.alpaca`):

``"alpaca-py"`` (default)
    alpaca-py's `StockDataStream` / `CryptoDataStream`, run inside our event loop with
    ``await stream._run_forever()`` (its public `run()` starts a loop of its own). Its handler
    callbacks receive `Trade` / `Quote` / `Bar` models and put them on a bounded queue (which
    pushes back on alpaca-py when ingestion falls behind); `stream()` drains the queue in
    batches through `AlpacaParser.parse_models`.

    alpaca-py reconnects by itself: `_run_forever` catches every error (a dropped socket, a
    failed connect, even a failed auth), closes, waits 1-30 s and reconnects and resubscribes,
    invisibly and forever. We do not let it: the multiplexer must see the failure to count
    the reconnect, apply quantlab's backoff and reset its stale timer. alpaca-py always calls
    the public `close()` on its way to a reconnect, so our subclasses override `close()`: an
    unrequested close records the exception being handled as the cause, stops alpaca-py's
    loop (`stop_ws()`), and `stream()` raises `SourceDisconnected` from it once the queue
    is drained.

    alpaca-py also decodes frames itself and drops the ones it cannot decode or cast (bad
    msgpack, a non-map message, a timestamp that is not a msgpack Timestamp, a price that is
    not a number), logging them, together with the rest of their frame; and it drops messages
    of unsubscribed symbols and unknown types without a word. Those never reach us to be
    counted, and alpaca-py's `datetime`s stop at microseconds.

``"websocket"``
    The same protocol with `websockets` and `AlpacaParser.parse_frame`: every frame reaches
    our parser, so malformed, truncated and oversized frames, wrong types, unknown symbols
    and unknown messages are counted `Reject`s, and timestamps keep their nanoseconds. Choose
    it where ingestion's "bad input loses nothing" matters more than using the vendor's client.

Both transports accept frames up to 16 MiB, so an oversized frame is counted rather than
closing the connection. Alpaca sends no heartbeats; the ``"websocket"`` transport yields a
`Heartbeat` for each subscription ack, proof that the feed is live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import msgpack
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from quantlab.adapters.alpaca.config import CLIENT_MAX_FRAME_BYTES, AlpacaDataConfig
from quantlab.adapters.alpaca.parser import AlpacaControl, AlpacaParser
from quantlab.ingest.items import Heartbeat, SourceItem
from quantlab.ingest.ports import SourceDisconnected

with warnings.catch_warnings():
    # alpaca-py 0.44 imports websockets.legacy, deprecated since websockets 14: not ours to fix.
    warnings.filterwarnings(
        "ignore", message=r"websockets\.legacy is deprecated", category=DeprecationWarning
    )
    from alpaca.data.live import CryptoDataStream, StockDataStream

log = logging.getLogger(__name__)

QUEUE_SIZE: Final = 10_000  # model objects buffered between alpaca-py's callbacks and stream()
BATCH_SIZE: Final = 1_000  # most models turned into one set of frames at a time
_KINDS: Final = {"trades": "t", "quotes": "q", "bars": "b"}


class AlpacaDataSource:
    """Live Alpaca trades, quotes and bars for the symbols of one feed (stocks or crypto).

    Parameters
    ----------
    config
        The feed: asset class, symbols, channels, URLs, transport.
    api_key, secret_key
        Alpaca credentials; kept out of `repr` and logs.
    name
        Source name for the multiplexer; ``alpaca-equity`` / ``alpaca-crypto`` by default.

    Examples
    --------
    >>> cfg = AlpacaDataConfig(asset_class="crypto", symbols=("BTC/USD",))
    >>> source = AlpacaDataSource(cfg, api_key, secret_key)         # doctest: +SKIP
    >>> await Multiplexer([source]).run(sink)                        # doctest: +SKIP
    """

    def __init__(
        self,
        config: AlpacaDataConfig,
        api_key: str,
        secret_key: str,
        *,
        name: str | None = None,
    ) -> None:
        self.config = config
        self.name = name or f"alpaca-{config.asset_class}"
        self.asset_class: str = config.asset_class
        self.total_rows: int | None = None
        self.url = config.resolved_stream_url
        self._key, self._secret = api_key, secret_key
        self._parser = AlpacaParser(config.symbols)

    def __repr__(self) -> str:
        return (
            f"AlpacaDataSource(name={self.name!r}, url={self.url!r}, "
            f"symbols={self.config.symbols}, transport={self.config.transport!r})"
        )

    def stream(self) -> AsyncIterator[SourceItem]:
        """Connect, authenticate, subscribe; yield items; raise `SourceDisconnected` on loss."""
        if self.config.transport == "websocket":
            return self._stream_websocket()
        return self._stream_alpaca_py()

    # -- alpaca-py -----------------------------------------------------------------------------
    async def _stream_alpaca_py(self) -> AsyncIterator[SourceItem]:
        link = _Link()
        client = self._client(link)
        task = asyncio.create_task(client._run_forever(), name=f"{self.name}-alpaca-py")
        getter: asyncio.Future[tuple[str, Any]] | None = None
        try:
            while True:
                if link.queue.empty():
                    if task.done():
                        raise self._lost(link, task)
                    getter = asyncio.ensure_future(link.queue.get())
                    await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                    if not getter.done():
                        getter.cancel()
                        continue
                    batch = [getter.result()]
                else:
                    batch = [link.queue.get_nowait()]
                while len(batch) < BATCH_SIZE and not link.queue.empty():
                    batch.append(link.queue.get_nowait())
                for item in self._parser.parse_models(batch):
                    yield item
        finally:
            if getter is not None:
                getter.cancel()
            link.closing = True
            await client.stop_ws()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            with contextlib.suppress(Exception):
                await client.close()

    def _client(self, link: _Link) -> StockDataStream | CryptoDataStream:
        params = {
            "ping_interval": 10,
            "ping_timeout": 180,
            "max_queue": 1024,
            "max_size": CLIENT_MAX_FRAME_BYTES,
            "open_timeout": self.config.open_timeout_s,
            "close_timeout": self.config.close_timeout_s,
        }
        kind = _ReportingStockStream if self.asset_class == "equity" else _ReportingCryptoStream
        client = kind(self._key, self._secret, websocket_params=params, url_override=self.url)
        client.link = link
        for channel in self.config.channels:
            subscribe = getattr(client, f"subscribe_{channel}")
            subscribe(link.handler(_KINDS[channel]), *self.config.symbols)
        return client

    def _lost(self, link: _Link, task: asyncio.Task[None]) -> SourceDisconnected:
        cause = link.lost
        if cause is None and not task.cancelled():
            cause = task.exception()
        error = SourceDisconnected(f"{self.name}: connection to {self.url} lost: {_text(cause)}")
        error.__cause__ = cause
        return error

    # -- websocket -----------------------------------------------------------------------------
    async def _stream_websocket(self) -> AsyncIterator[SourceItem]:
        try:
            async with connect(
                self.url,
                additional_headers={"Content-Type": "application/msgpack"},
                max_size=CLIENT_MAX_FRAME_BYTES,
                open_timeout=self.config.open_timeout_s,
                close_timeout=self.config.close_timeout_s,
                compression=None,
            ) as ws:
                async with asyncio.timeout(self.config.open_timeout_s):
                    await self._handshake(ws)
                async for raw in ws:
                    for item in self._parser.parse_frame(raw):
                        if isinstance(item, AlpacaControl):
                            yield self._on_control(item)
                        else:
                            yield item
            raise SourceDisconnected(f"{self.name}: {self.url} closed the connection")
        except (WebSocketException, OSError, TimeoutError) as exc:
            raise SourceDisconnected(
                f"{self.name}: connection to {self.url} lost: {_text(exc)}"
            ) from exc

    async def _handshake(self, ws: ClientConnection) -> None:
        await self._expect(ws, "connected")
        await ws.send(msgpack.packb({"action": "auth", "key": self._key, "secret": self._secret}))
        await self._expect(ws, "authenticated")
        subscribe: dict[str, Any] = {"action": "subscribe"}
        subscribe.update((channel, list(self.config.symbols)) for channel in self.config.channels)
        await ws.send(msgpack.packb(subscribe))

    async def _expect(self, ws: ClientConnection, success: str) -> None:
        raw = await ws.recv()
        controls = [i for i in self._parser.parse_frame(raw) if isinstance(i, AlpacaControl)]
        if any(c.kind == "success" and c.msg == success for c in controls):
            return
        raise SourceDisconnected(
            f"{self.name}: expected {success!r} from {self.url}, got {controls or raw[:200]!r}"
        )

    def _on_control(self, item: AlpacaControl) -> Heartbeat:
        if item.kind == "error":
            raise SourceDisconnected(
                f"{self.name}: Alpaca error {item.code} {item.msg!r} from {self.url}"
            )
        if item.kind == "subscription":
            log.info("%s subscribed: %s", self.name, {k: v for k, v in item.channels.items() if v})
        return Heartbeat(ts_ns=time.time_ns())


def _text(exc: BaseException | None) -> str:
    return "no error" if exc is None else f"{type(exc).__name__}: {exc}"


class _Link:
    """What alpaca-py's callbacks share with `stream()`: the queue and the loss, if any."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self.lost: BaseException | None = None
        self.closing = False

    def handler(self, kind: str) -> Callable[[Any], Awaitable[None]]:
        async def on_model(model: Any) -> None:
            await self.queue.put((kind, model))

        return on_model

    async def closed(self, client: StockDataStream | CryptoDataStream, cause: Any) -> None:
        """alpaca-py closed its socket: unless we asked, report it and stop its reconnect loop."""
        if self.closing:
            return
        self.closing = True
        self.lost = cause if isinstance(cause, BaseException) else ConnectionError("closed")
        await client.stop_ws()


class _ReportingStockStream(StockDataStream):
    link: _Link

    async def close(self) -> None:
        cause = sys.exception()  # the error alpaca-py is handling, if it closes because of one
        try:
            await super().close()
        finally:
            await self.link.closed(self, cause)


class _ReportingCryptoStream(CryptoDataStream):
    link: _Link

    async def close(self) -> None:
        cause = sys.exception()
        try:
            await super().close()
        finally:
            await self.link.closed(self, cause)
