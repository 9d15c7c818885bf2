"""A ccxt.pro exchange as a `MarketDataSource`: one watch loop per (symbol, channel), merged.

Every `stream()` call builds a fresh exchange instance (new sockets, markets loaded or
seeded, every channel subscribed from scratch) and closes it when the stream ends, so the
multiplexer reconnects by calling `stream()` again. Public market data needs no login;
credentials, if given, go to ccxt unchanged.

How ccxt's behaviour surfaces here:

* A dropped connection makes the pending ``watch_*`` calls raise a ``ccxt.NetworkError``:
  the stream raises `SourceDisconnected`.
* ``ccxt.ChecksumError`` (an order book sequence gap; a `NetworkError` subclass) means ccxt
  dropped that book; the next ``watch_order_book`` resubscribes and refetches the snapshot.
  Counted in `resyncs`; no reconnect.
* Other ccxt errors from a watch (the venue refused a subscription or sent an error):
  a ``unknown_message`` reject, then the watch is called again; after
  ``max_watch_errors`` in a row the stream fails.
* Bad frames never reach the watches: the frame guard (`exchange`) turns them into rejects.
* Conflation: ``watch_ticker`` and ``watch_order_book`` return the latest state, so updates
  arriving faster than they are consumed are merged (quotes are a sample of the venue's);
  ``watch_trades`` returns every trade since the previous call (ccxt keeps up to its
  ``tradesLimit``, 1000 per symbol, in between).
* Order: rejects and heartbeats come from the frame guard as frames arrive, events from the
  watch loops a moment later, so a reject may be yielded before an event that preceded it.
  Everything passes through one unbounded queue (the watch loops add only what ccxt
  resolves, which is bounded by what the sockets deliver).
* Cannot be told: ccxt files messages for markets nobody watches under the raw id and drops
  messages of types it does not know, silently, so neither reaches us as a reject. A field
  ccxt coerces to None (a price that is an object) is rejected ``wrong_type`` by the parser,
  with ccxt's ``info`` (the venue's message) as the raw input.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import ccxt.pro as ccxt_pro
from pydantic import SecretStr

from quantlab.adapters.ccxt.config import CcxtDataConfig
from quantlab.adapters.ccxt.exchange import (
    check_credentials,
    close_exchange,
    guarded_class,
    new_exchange,
)
from quantlab.adapters.ccxt.parser import (
    Item,
    parse_order_book,
    parse_ticker,
    parse_trades,
)
from quantlab.core.clock import Clock, WallClock
from quantlab.core.errors import ConfigError
from quantlab.ingest.items import UNKNOWN_MESSAGE, SourceItem, reject
from quantlab.ingest.ports import SourceDisconnected

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _End:
    """Put on the queue by a watch loop that cannot go on; the stream raises `error`."""

    error: BaseException


class CcxtDataSource:
    """Trades and quotes from any ccxt.pro exchange.

    Examples
    --------
    >>> config = CcxtDataConfig(exchange="binance", symbols=("BTC/USDT",),
    ...                         channels=("trades", "order_book"))
    >>> source = CcxtDataSource(config)
    >>> # await Multiplexer([source]).run(sink)
    """

    def __init__(
        self,
        config: CcxtDataConfig,
        *,
        credentials: Mapping[str, str | SecretStr] | None = None,
        clock: Clock | None = None,
    ) -> None:
        guarded_class(config.exchange)  # an unknown exchange fails here, not at connect
        self.config = config
        self.name = config.source_name
        self.asset_class = config.asset_class
        self.total_rows: int | None = None
        self.resyncs = 0
        self._credentials = check_credentials(credentials)
        self._clock = clock or WallClock()
        self._symbols = frozenset(config.symbols)

    def __repr__(self) -> str:
        return (
            f"CcxtDataSource(name={self.name!r}, exchange={self.config.exchange!r}, "
            f"symbols={list(self.config.symbols)}, channels={list(self.config.channels)})"
        )

    async def stream(self) -> AsyncIterator[SourceItem]:
        """Connect, subscribe every (symbol, channel) and yield items until the link fails."""
        queue: asyncio.Queue[SourceItem | _End] = asyncio.Queue()
        exchange = new_exchange(
            self.config,
            live=True,
            credentials=self._credentials,
            enable_rate_limit=self.config.enable_rate_limit,
        )
        exchange.ql_sink = queue.put_nowait
        exchange.ql_clock = self._clock
        tasks: list[asyncio.Task[None]] = []
        try:
            await self._load_markets(exchange)
            for symbol in self.config.symbols:
                for channel in self.config.channels:
                    loop = self._watch(exchange, symbol, channel, queue.put_nowait)
                    tasks.append(asyncio.create_task(loop, name=f"{self.name}:{channel}:{symbol}"))
            if self.config.heartbeats and exchange.id == "coinbase":
                tasks.append(asyncio.create_task(self._coinbase_heartbeats(exchange)))
            while True:
                item = await queue.get()
                if isinstance(item, _End):
                    raise item.error
                yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await close_exchange(exchange, self.config.close_timeout_s)
            except Exception as exc:  # closing a broken link must not hide why it broke
                log.warning("%s: closing the ccxt exchange failed: %r", self.name, exc)

    async def _load_markets(self, exchange: Any) -> None:
        if not self.config.markets:
            try:
                await exchange.load_markets()
            except ccxt_pro.NetworkError as exc:
                raise SourceDisconnected(f"{self.name}: loading markets failed: {exc}") from exc
        missing = sorted(self._symbols - set(exchange.markets or {}))
        if missing:
            raise ConfigError(
                "ccxt.symbols", f"{missing} not among the markets of {self.config.exchange}"
            )

    async def _watch(
        self, exchange: Any, symbol: str, channel: str, put: Callable[[SourceItem | _End], None]
    ) -> None:
        failures = 0
        while True:
            try:
                result = await self._next(exchange, symbol, channel)
            except ccxt_pro.ChecksumError as exc:  # before NetworkError: it subclasses it
                self.resyncs += 1
                failures += 1
                log.warning(
                    "%s: %s order book out of sync, resubscribing: %s", self.name, symbol, exc
                )
            except ccxt_pro.NetworkError as exc:
                put(_End(SourceDisconnected(f"{self.name}: {channel} {symbol}: {exc}")))
                return
            except ccxt_pro.BaseError as exc:
                failures += 1
                detail = f"{channel} {symbol}: {type(exc).__name__}: {exc}"
                log.warning("%s: %s", self.name, detail)
                put(reject(UNKNOWN_MESSAGE, detail))
            except Exception as exc:  # a bug, not the venue: fail the stream loudly
                put(_End(exc))
                return
            else:
                failures = 0
                for item in self._parse(result, symbol, channel):
                    put(item)
                continue
            if failures >= self.config.max_watch_errors:
                put(
                    _End(
                        SourceDisconnected(
                            f"{self.name}: {channel} {symbol} failed {failures} times in a row"
                        )
                    )
                )
                return

    async def _next(self, exchange: Any, symbol: str, channel: str) -> Any:
        if channel == "trades":
            return await exchange.watch_trades(symbol)
        if channel == "ticker":
            return await exchange.watch_ticker(symbol)
        return await exchange.watch_order_book(symbol, self.config.order_book_limit)

    def _parse(self, result: Any, symbol: str, channel: str) -> list[Item]:
        if channel == "trades":
            return parse_trades(result, self._symbols)
        now = self._clock.now_ns()
        if channel == "ticker":
            return parse_ticker(result, self._symbols, received_ns=now)
        return parse_order_book(result, self._symbols, symbol=symbol, received_ns=now)

    async def _coinbase_heartbeats(self, exchange: Any) -> None:
        """Subscribe coinbase's ``heartbeats`` channel, which ccxt does not (it keeps quiet
        channels open); the guard turns each heartbeat message into a `Heartbeat`."""
        ids = [exchange.market(symbol)["id"] for symbol in self.config.symbols]
        message = {"type": "subscribe", "product_ids": ids, "channel": "heartbeats"}
        with contextlib.suppress(ccxt_pro.BaseError):  # the data watches report link failures
            await exchange.watch(exchange.urls["api"]["ws"], "heartbeats", message, "heartbeats")
