"""The Polygon stocks websocket as a `MarketDataSource` (native `websockets` client).

Protocol (Polygon's documented one): the server greets with a ``connected`` status, the
client sends ``{"action":"auth","params":KEY}`` and waits for ``auth_success`` (or
``auth_failed``), then ``{"action":"subscribe","params":"T.AAPL,Q.AAPL,..."}``; data frames
are JSON arrays of events. Every `stream()` call is a new connection that authenticates and
subscribes from scratch, so the multiplexer reconnects it by calling it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from quantlab.adapters.polygon.config import PolygonDataConfig
from quantlab.adapters.polygon.parser import Status, parse_frame
from quantlab.core.errors import ConfigError
from quantlab.ingest.items import Heartbeat, SourceItem
from quantlab.ingest.ports import SourceDisconnected

log = logging.getLogger(__name__)

# Statuses that are part of a healthy session; anything else is logged as a warning.
_QUIET_STATUSES = frozenset({"connected", "auth_success", "success"})


def as_secret(value: str | SecretStr) -> SecretStr:
    """The key as a `SecretStr`, whose repr and str never show it."""
    return value if isinstance(value, SecretStr) else SecretStr(value)


class RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The logger handed to `websockets`: its debug frame dumps would print the auth message.

    Records are formatted here, the key is replaced, and the outgoing auth frame (which
    `websockets` may cut to a prefix of the key) is dropped to a placeholder.
    """

    def __init__(self, logger: logging.Logger, secret: SecretStr) -> None:
        super().__init__(logger, {})
        self._secret = secret

    def redact(self, text: str) -> str:
        key = self._secret.get_secret_value()
        return text.replace(key, "**********") if key else text

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = f"{msg} {args}"
        if '"action":"auth"' in text or "'action': 'auth'" in text:
            text = "> TEXT {auth message redacted}"
        kwargs.pop("extra", None)
        self.logger.log(level, self.redact(text), **kwargs)


class PolygonDataSource:
    """Trades, quotes and bars of US equities from Polygon's stocks websocket.

    Parameters
    ----------
    config
        Symbols, channels, URLs and timeouts.
    api_key
        The Polygon API key (``str`` or pydantic ``SecretStr``). It is sent only in the auth
        message and never appears in logs, reprs or exceptions.

    Examples
    --------
    >>> cfg = PolygonDataConfig(symbols=("AAPL",), ws_url="ws://127.0.0.1:8765/stocks")
    >>> src = PolygonDataSource(cfg, api_key="...")  # then Multiplexer([src]).run(sink)
    """

    total_rows: int | None = None

    def __init__(self, config: PolygonDataConfig, *, api_key: str | SecretStr) -> None:
        self.config = config
        self.name = config.name
        self.asset_class = config.asset_class
        self._key = as_secret(api_key)
        if not self._key.get_secret_value():
            raise ConfigError("polygon.api_key", "is empty")
        self._symbols = {s: s for s in config.symbols}  # Polygon tickers are quantlab symbols
        self._ws_log = RedactingLogger(logging.getLogger(f"{__name__}.ws"), self._key)

    def __repr__(self) -> str:
        return f"PolygonDataSource(name={self.name!r}, url={self.config.ws_url!r})"

    async def stream(self) -> AsyncIterator[SourceItem]:
        """Connect, authenticate, subscribe, then yield parsed items until the connection drops."""
        cfg = self.config
        try:
            ws = await connect(
                cfg.ws_url,
                open_timeout=cfg.open_timeout_s,
                close_timeout=cfg.close_timeout_s,
                ping_interval=None,  # liveness is ours: see `_next_frame`
                max_size=cfg.max_ws_frame_bytes,
                logger=self._ws_log,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise SourceDisconnected(
                f"{self.name}: cannot connect to {cfg.ws_url}: {self._describe(exc)}"
            ) from None
        try:
            await self._handshake(ws)
            while True:
                raw = await self._next_frame(ws)
                if raw is None:
                    yield Heartbeat(time.time_ns())
                    continue
                parsed = parse_frame(raw, self._symbols)
                for status in parsed.statuses:
                    self._on_status(status)
                if parsed.items:
                    for item in parsed.items:
                        yield item
                elif parsed.statuses:
                    yield Heartbeat(time.time_ns())  # a control message is proof of life too
        except ConnectionClosed as exc:
            raise SourceDisconnected(
                f"{self.name}: connection lost: {self._describe(exc)}"
            ) from None
        finally:
            await ws.close()

    async def _handshake(self, ws: ClientConnection) -> None:
        await self._expect(ws, {"connected"}, "the greeting")
        auth = {"action": "auth", "params": self._key.get_secret_value()}
        await ws.send(msgspec.json.encode(auth).decode())
        status = await self._expect(ws, {"auth_success", "auth_failed"}, "the auth reply")
        if status.status == "auth_failed":
            raise ConfigError(
                "polygon.api_key", f"Polygon refused it: {self._ws_log.redact(status.message)!r}"
            )
        subscribe = {"action": "subscribe", "params": self.config.subscription()}
        await ws.send(msgspec.json.encode(subscribe).decode())

    async def _expect(self, ws: ClientConnection, wanted: set[str], what: str) -> Status:
        """Read control frames until one carries a status in `wanted`."""
        deadline = asyncio.get_running_loop().time() + self.config.auth_timeout_s
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                raw = await asyncio.wait_for(ws.recv(), max(remaining, 0.0))
            except TimeoutError:
                raise SourceDisconnected(
                    f"{self.name}: no {what} within {self.config.auth_timeout_s}s"
                ) from None
            for status in parse_frame(raw, self._symbols).statuses:
                if status.status in wanted:
                    return status
                self._on_status(status)

    async def _next_frame(self, ws: ClientConnection) -> str | bytes | None:
        """The next frame, or None after a quiet interval answered by a pong."""
        interval = self.config.heartbeat_interval_s
        if interval is None:
            return await ws.recv()
        try:
            return await asyncio.wait_for(ws.recv(), interval)  # cancelling recv() loses nothing
        except TimeoutError:
            pass
        pong = await ws.ping()
        try:
            await asyncio.wait_for(pong, self.config.pong_timeout_s)
        except TimeoutError:
            raise SourceDisconnected(
                f"{self.name}: no pong within {self.config.pong_timeout_s}s"
            ) from None
        return None

    def _on_status(self, status: Status) -> None:
        message = self._ws_log.redact(status.message)
        if status.status == "auth_failed":
            raise ConfigError("polygon.api_key", f"Polygon refused it: {message!r}")
        if status.status in _QUIET_STATUSES:
            log.debug("%s: %s %s", self.name, status.status, message)
        else:
            log.warning("%s: status %s: %s", self.name, status.status, message)

    def _describe(self, exc: BaseException) -> str:
        return self._ws_log.redact(f"{type(exc).__name__}: {exc}")
