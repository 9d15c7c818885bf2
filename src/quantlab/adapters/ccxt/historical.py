"""REST backfill of bars through ccxt's ``fetch_ohlcv``, paged by ``since``, paced by a limiter.

Pacing: ccxt has its own throttle (``enableRateLimit``, a token bucket per exchange instance
weighted by the venue's published costs). Here it is turned off and quantlab's `limiter`
paces every call instead, because two buckets in series make the effective rate hard to
reason about, ours can be shared by every client that spends the same IP budget (pass it
in), and ccxt's resets whenever an instance is recreated. The default budget (5 calls/s) is
below both binance's (klines cost 2 of 6000 weight a minute) and coinbase's public limit
(10/s). The live source keeps ccxt's throttle on: there it paces subscribe messages and the
order book snapshots, which this limiter does not see.

Failures: a ccxt error on a page raises `DataError` naming the page (ccxt does not retry;
neither does this, the gap healer calls again later).

Paging: each call asks for ``ohlcv_page_limit`` candles from ``since`` with ``until`` at the
page's end (binance ``endTime``, coinbase ``end``), then continues after the last candle
returned, or after the page when it was empty (venues send no candle for a minute without
trades).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import ccxt.async_support as ccxt_rest
import polars as pl
from aiolimiter import AsyncLimiter
from pydantic import SecretStr

from quantlab.adapters.ccxt.config import CcxtDataConfig
from quantlab.adapters.ccxt.exchange import check_credentials, new_exchange
from quantlab.adapters.ccxt.parser import parse_ohlcv
from quantlab.core.clock import datetime_to_ns
from quantlab.core.errors import DataError
from quantlab.core.schemas import BAR_SCHEMA
from quantlab.ingest.items import Events, Reject
from quantlab.ingest.ratelimit import limiter as make_limiter

log = logging.getLogger(__name__)

_NS_PER_MS = 1_000_000


class CcxtHistoricalBars:
    """`HistoricalBars` from a ccxt exchange's OHLCV endpoint.

    Bars starting in ``[start, end)`` come back in `BAR_SCHEMA`, sorted by time, without
    duplicates. Rows ccxt returned that could not be parsed are kept in `last_rejects` (and
    logged). Use as an async context manager, or call `aclose()`: the exchange holds an
    HTTP session.

    Examples
    --------
    >>> config = CcxtDataConfig(exchange="binance", symbols=("BTC/USDT",))
    >>> # async with CcxtHistoricalBars(config) as hist:
    >>> #     bars = await hist.fetch_bars("BTC/USDT", start, end, "1m")
    """

    def __init__(
        self,
        config: CcxtDataConfig,
        *,
        limiter: AsyncLimiter | None = None,
        credentials: Mapping[str, str | SecretStr] | None = None,
    ) -> None:
        self.config = config
        self.limiter = limiter or make_limiter(
            config.rest_max_rate, config.rest_period_s, name="ccxt.rest"
        )
        self.requests = 0
        self.last_rejects: list[Reject] = []
        self._credentials = check_credentials(credentials)
        self._exchange: Any = None
        # Concurrent first fetches must share one exchange: a second one, opened meanwhile
        # and then dropped, would leak its HTTP session.
        self._opening = asyncio.Lock()

    async def __aenter__(self) -> CcxtHistoricalBars:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the exchange's HTTP session (a later `fetch_bars` opens a new one)."""
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            await exchange.close()

    async def fetch_bars(
        self, symbol: str, start: dt.datetime, end: dt.datetime, timeframe: str = "1m"
    ) -> pl.DataFrame:
        """Bars of `symbol` (a ccxt unified symbol) starting in ``[start, end)``."""
        start_ms, end_ms = datetime_to_ns(start) // _NS_PER_MS, datetime_to_ns(end) // _NS_PER_MS
        if start_ms >= end_ms:
            raise DataError(f"start {start.isoformat()} must be before end {end.isoformat()}")
        exchange = await self._open()
        if timeframe not in (exchange.timeframes or {}):
            offered = sorted(exchange.timeframes or {})
            raise DataError(
                f"{self.config.exchange} has no timeframe {timeframe!r}; it offers {offered}"
            )
        if symbol not in exchange.markets:
            raise DataError(f"{symbol!r} is not a market of {self.config.exchange}")
        step_ms = int(exchange.parse_timeframe(timeframe)) * 1000
        limit = self.config.ohlcv_page_limit
        frames: list[pl.DataFrame] = []
        self.last_rejects = []
        since, pages = start_ms, 0
        while since < end_ms:
            pages += 1
            if pages > self.config.rest_max_pages:
                raise DataError(
                    f"backfill of {symbol} needs more than {self.config.rest_max_pages} pages"
                )
            until = min(end_ms, since + limit * step_ms) - 1
            async with self.limiter:
                self.requests += 1
                try:
                    rows = await exchange.fetch_ohlcv(
                        symbol, timeframe, since=since, limit=limit, params={"until": until}
                    )
                except ccxt_rest.BaseError as exc:
                    raise DataError(
                        f"{self.config.exchange} fetch_ohlcv {symbol} {timeframe} since {since} "
                        f"failed: {type(exc).__name__}: {exc}"
                    ) from exc
            last = self._collect(parse_ohlcv(rows, symbol), since, end_ms, frames)
            since = until + 1 if last is None else max(last + step_ms, since + step_ms)
        if self.last_rejects:
            log.warning(
                "%s %s backfill: %d rows rejected",
                self.config.exchange,
                symbol,
                len(self.last_rejects),
            )
        if not frames:
            return pl.DataFrame(schema=BAR_SCHEMA)
        bars = pl.concat(frames).unique(subset=["timestamp"], keep="first")
        return bars.sort("timestamp").select(BAR_SCHEMA.names())

    def _collect(
        self, items: list[Events | Reject], since_ms: int, end_ms: int, frames: list[pl.DataFrame]
    ) -> int | None:
        """Keep the page's bars in ``[since, end)``; the newest bar's start in ms, if any."""
        last: int | None = None
        for item in items:
            if isinstance(item, Reject):
                self.last_rejects.append(item)
                continue
            ms = pl.col("timestamp").dt.epoch("ms")
            page = item.frame.filter((ms >= since_ms) & (ms < end_ms))
            if page.height:
                frames.append(page)
                newest = page.select(ms.max()).item()
                last = newest if last is None else max(last, newest)
        return last

    async def _open(self) -> Any:
        async with self._opening:
            return await self._open_locked()

    async def _open_locked(self) -> Any:
        if self._exchange is None:
            exchange = new_exchange(
                self.config, live=False, credentials=self._credentials, enable_rate_limit=False
            )
            try:
                if not self.config.markets:
                    async with self.limiter:
                        self.requests += 1
                        await exchange.load_markets()
            except BaseException:
                await exchange.close()
                raise
            self._exchange = exchange
        return self._exchange
