"""`CoinbaseDataSource`: the Coinbase Advanced Trade websocket feed as a `MarketDataSource`."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from quantlab.adapters.coinbase.config import HEARTBEATS, CoinbaseDataConfig
from quantlab.adapters.coinbase.parser import CoinbaseFeedParser
from quantlab.core.errors import ConfigError
from quantlab.ingest.items import SourceItem
from quantlab.ingest.ports import SourceDisconnected

log = logging.getLogger(__name__)


class CoinbaseDataSource:
    """Quotes (ticker and level2 top of book), trades and heartbeats from Coinbase.

    Each `stream()` call opens a connection and sends one subscribe per channel (Coinbase
    takes one channel per message and disconnects a client that has not subscribed within
    5 s). A gap in `sequence_num` is healed in place: the data channels are unsubscribed and
    subscribed again, so the level2 snapshot rebuilds the books; `gaps` counts them.

    Parameters
    ----------
    config
        Symbols, channels, URLs and timeouts.
    jwt
        Optional; returns a fresh JWT for each (un)subscribe message (public channels need
        none). Its tokens are sent, never stored or logged.

    Examples
    --------
    >>> source = CoinbaseDataSource(CoinbaseDataConfig(symbols=("BTC/USD",)))
    >>> source.name, source.asset_class
    ('coinbase', 'crypto')
    """

    asset_class = "crypto"

    def __init__(self, config: CoinbaseDataConfig, *, jwt: Callable[[], str] | None = None) -> None:
        if not config.symbols:
            raise ConfigError("coinbase.symbols", "need at least one symbol, got none")
        if not config.channels:
            raise ConfigError("coinbase.channels", "need at least one channel, got none")
        self.config = config
        self.name = config.name
        self.total_rows: int | None = None
        self.gaps = 0  # sequence gaps detected, over every connection
        self.missed_messages = 0  # messages lost in those gaps
        self.resubscribes = 0  # unsubscribe + subscribe rounds sent to heal gaps or bad books
        self._jwt = jwt

    def __repr__(self) -> str:
        return f"CoinbaseDataSource(name={self.name!r}, symbols={list(self.config.symbols)})"

    async def stream(self) -> AsyncIterator[SourceItem]:
        """Connect, subscribe and yield items until the connection drops (`SourceDisconnected`)."""
        ws = await self._connect()
        try:
            parser = CoinbaseFeedParser(
                self.config.symbols, max_snapshot_bytes=self.config.max_snapshot_bytes
            )
            for channel in self.config.channels:
                await self._send(ws, "subscribe", channel, self._products(channel))
            while True:
                try:
                    raw = await ws.recv()
                except ConnectionClosed as exc:
                    raise SourceDisconnected(f"{self.name}: connection closed: {exc}") from exc
                gaps, missed = parser.gaps, parser.missed
                items = parser.parse(raw)
                if parser.gaps != gaps:
                    self.gaps += parser.gaps - gaps
                    self.missed_messages += parser.missed - missed
                    log.warning(
                        "%s: sequence gap (%d messages lost) at sequence_num %s; resubscribing",
                        self.name,
                        parser.missed - missed,
                        parser.last_sequence,
                    )
                await self._resubscribe(ws, parser.take_resync())
                for item in items:
                    yield item
        finally:
            await ws.close()

    async def _connect(self) -> ClientConnection:
        cfg = self.config
        try:
            return await connect(
                cfg.ws_url,
                open_timeout=cfg.open_timeout_s,
                close_timeout=cfg.close_timeout_s,
                ping_interval=cfg.ping_interval_s,
                max_size=cfg.max_frame_bytes,
            )
        except InvalidURI as exc:
            raise ConfigError("coinbase.ws_url", str(exc)) from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise SourceDisconnected(f"{self.name}: cannot connect to {cfg.ws_url}: {exc}") from exc

    async def _resubscribe(self, ws: ClientConnection, resync: dict[str, list[str]]) -> None:
        channels = [c for c in self.config.channels if resync.get(c)]
        if not channels:
            return
        self.resubscribes += 1
        for channel in channels:
            await self._send(ws, "unsubscribe", channel, resync[channel])
        for channel in channels:
            await self._send(ws, "subscribe", channel, resync[channel])

    async def _send(
        self, ws: ClientConnection, action: str, channel: str, products: Sequence[str]
    ) -> None:
        message: dict[str, Any] = {"type": action, "channel": channel}
        if products:
            message["product_ids"] = list(products)
        if self._jwt is not None:
            message["jwt"] = self._jwt()
        log.debug("%s: %s %s %s", self.name, action, channel, list(products))
        try:
            await ws.send(json.dumps(message))
        except ConnectionClosed as exc:
            raise SourceDisconnected(f"{self.name}: connection closed: {exc}") from exc

    def _products(self, channel: str) -> tuple[str, ...]:
        return () if channel == HEARTBEATS else self.config.products
