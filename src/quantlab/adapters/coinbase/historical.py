"""`CoinbaseHistoricalBars`: REST backfill of candles from the public market endpoint."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import Counter
from types import TracebackType
from typing import Final

import httpx
import polars as pl

from quantlab.adapters.coinbase.config import CoinbaseDataConfig, to_product
from quantlab.adapters.coinbase.parser import CANDLES_BODY, parse_candles
from quantlab.core.errors import DataError
from quantlab.core.schemas import BAR_SCHEMA
from quantlab.ingest.items import Events
from quantlab.ingest.ratelimit import limiter, retry_after_s

log = logging.getLogger(__name__)

# quantlab timeframe -> (Coinbase granularity, seconds)
GRANULARITIES: Final = {
    "1m": ("ONE_MINUTE", 60),
    "5m": ("FIVE_MINUTE", 300),
    "15m": ("FIFTEEN_MINUTE", 900),
    "30m": ("THIRTY_MINUTE", 1800),
    "1h": ("ONE_HOUR", 3600),
    "2h": ("TWO_HOUR", 7200),
    "6h": ("SIX_HOUR", 21600),
    "1d": ("ONE_DAY", 86400),
}
MAX_CANDLES: Final = 350  # per request, by Coinbase's limit
_RETRY_STATUS: Final = frozenset({429, 500, 502, 503, 504})


class CoinbaseHistoricalBars:
    """Bars from ``GET /api/v3/brokerage/market/products/{id}/candles``, paged by time window.

    Each request covers at most 350 candles; requests are paced by a token bucket
    (`rest_max_rate` per second) and retried on 429/5xx. Candles that do not parse are
    skipped and counted in `rejects`.

    Examples
    --------
    >>> async with CoinbaseHistoricalBars(config) as bars:  # doctest: +SKIP
    ...     frame = await bars.fetch_bars("BTC/USD", start, end, "1m")
    """

    def __init__(
        self, config: CoinbaseDataConfig | None = None, *, client: httpx.AsyncClient | None = None
    ) -> None:
        self.config = config or CoinbaseDataConfig()
        self._client = client or httpx.AsyncClient(
            base_url=self.config.rest_url, timeout=self.config.rest_timeout_s
        )
        self._owns_client = client is None
        self._limiter = limiter(self.config.rest_max_rate, 1.0, name="coinbase.rest_max_rate")
        self.requests = 0
        self.rejects: Counter[str] = Counter()

    async def __aenter__(self) -> CoinbaseHistoricalBars:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def fetch_bars(
        self, symbol: str, start: dt.datetime, end: dt.datetime, timeframe: str = "1m"
    ) -> pl.DataFrame:
        """Bars of `symbol` starting in [start, end), oldest first, in `BAR_SCHEMA`."""
        if timeframe not in GRANULARITIES:
            raise DataError(
                f"timeframe {timeframe!r} not supported; expected one of {[*GRANULARITIES]}"
            )
        granularity, step = GRANULARITIES[timeframe]
        product = to_product(symbol)
        lo, hi = _epoch_s(start, "start"), _epoch_s(end, "end")
        if lo >= hi:
            raise DataError(f"start {start.isoformat()} must be before end {end.isoformat()}")
        first = -(-lo // step) * step  # the first candle starting at or after `start`
        frames = []
        for window in range(first, hi, MAX_CANDLES * step):
            window_end = min(window + MAX_CANDLES * step, hi)
            # `end` is sent as the last second of the window, so an inclusive or exclusive
            # reading both give at most 350 candles.
            params = {"start": str(window), "end": str(window_end - 1), "granularity": granularity}
            body = await self._get(f"/api/v3/brokerage/market/products/{product}/candles", params)
            for item in parse_candles(body, symbol):
                if isinstance(item, Events):
                    frames.append(item.frame)
                elif item.detail.startswith(CANDLES_BODY):
                    raise DataError(f"coinbase candles for {symbol} {params}: {item.detail}")
                else:
                    self.rejects[item.reason] += 1
                    log.warning("coinbase candle of %s skipped: %s", symbol, item.detail)
        if not frames:
            return pl.DataFrame(schema=BAR_SCHEMA)
        lo_ts = dt.datetime.fromtimestamp(lo, dt.UTC)
        hi_ts = dt.datetime.fromtimestamp(hi, dt.UTC)
        return (
            pl.concat(frames)
            .filter((pl.col("timestamp") >= lo_ts) & (pl.col("timestamp") < hi_ts))
            .unique(subset=["timestamp"], keep="first")
            .sort("timestamp")
        )

    async def _get(self, path: str, params: dict[str, str]) -> bytes:
        retries = self.config.rest_retries
        for attempt in range(retries + 1):
            backoff = min(0.25 * 2**attempt, 5.0)
            async with self._limiter:
                self.requests += 1
                try:
                    response = await self._client.get(path, params=params)
                except httpx.TransportError as exc:
                    if attempt == retries:
                        raise DataError(f"coinbase GET {path} {params} failed: {exc!r}") from exc
                    await asyncio.sleep(backoff)
                    continue
            if response.status_code == 200:
                return response.content
            if response.status_code not in _RETRY_STATUS or attempt == retries:
                raise DataError(
                    f"coinbase GET {path} {params}: HTTP {response.status_code}: "
                    f"{response.text[:200]}"
                )
            await asyncio.sleep(retry_after_s(response.headers.get("Retry-After"), backoff, 30.0))
        raise AssertionError("unreachable")  # pragma: no cover


def _epoch_s(moment: dt.datetime, what: str) -> int:
    if not isinstance(moment, dt.datetime) or moment.tzinfo is None:
        raise DataError(f"{what} must be a timezone-aware datetime, got {moment!r}")
    return int(moment.timestamp())
