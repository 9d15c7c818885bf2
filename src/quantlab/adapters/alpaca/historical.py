"""REST backfill of Alpaca bars (stocks or crypto), one paced request per page.

The requests go through alpaca-py's `StockHistoricalDataClient` (``GET /v2/stocks/bars``) or
`CryptoHistoricalDataClient` (``GET /v1beta3/crypto/us/bars``): its base URL, auth headers,
429 retries and `APIError`s, and its `StockBarsRequest` / `CryptoBarsRequest` for the query.
We follow ``next_page_token`` ourselves rather than let `get_stock_bars` loop over every page
in one blocking call, so that each page waits for the limiter (Alpaca's quota is per account
and per minute), runs in a worker thread without blocking the event loop, and is parsed by
`AlpacaParser.parse_bars_page`, which counts a bad bar instead of failing the whole backfill.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import warnings
from collections import Counter
from typing import Any, Final

import polars as pl
from aiolimiter import AsyncLimiter

from quantlab.adapters.alpaca.config import AlpacaDataConfig
from quantlab.adapters.alpaca.parser import AlpacaParser
from quantlab.core.errors import DataError
from quantlab.core.schemas import BAR_SCHEMA
from quantlab.ingest.items import Events
from quantlab.ingest.ratelimit import limiter as make_limiter

with warnings.catch_warnings():
    # alpaca-py 0.44 imports websockets.legacy, deprecated since websockets 14: not ours to fix.
    warnings.filterwarnings(
        "ignore", message=r"websockets\.legacy is deprecated", category=DeprecationWarning
    )
    from alpaca.common.exceptions import APIError
    from alpaca.data.enums import DataFeed
    from alpaca.data.historical import CryptoHistoricalDataClient, StockHistoricalDataClient
    from alpaca.data.requests import CryptoBarsRequest, StockBarsRequest
    from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

log = logging.getLogger(__name__)

_TIMEFRAME: Final = re.compile(r"(\d+)(m|min|h|d|w|mo)")
_UNITS: Final = {
    "m": TimeFrameUnit.Minute,
    "min": TimeFrameUnit.Minute,
    "h": TimeFrameUnit.Hour,
    "d": TimeFrameUnit.Day,
    "w": TimeFrameUnit.Week,
    "mo": TimeFrameUnit.Month,
}


class AlpacaHistoricalBars:
    """Historical bars of one Alpaca asset class, in `core.schemas.BAR_SCHEMA`.

    Parameters
    ----------
    config
        Asset class, REST URL, stock feed, page size and request pace.
    api_key, secret_key
        Alpaca credentials (required for stocks, optional for crypto).
    limiter
        A shared token bucket (e.g. one per Alpaca account); by default one from the config.

    Examples
    --------
    >>> bars = AlpacaHistoricalBars(cfg, key, secret)                              # doctest: +SKIP
    >>> await bars.fetch_bars("AAPL", start, end, timeframe="1m")                  # doctest: +SKIP
    """

    def __init__(
        self,
        config: AlpacaDataConfig,
        api_key: str | None = None,
        secret_key: str | None = None,
        *,
        limiter: AsyncLimiter | None = None,
    ) -> None:
        self.config = config
        url = config.resolved_rest_url
        self._client: StockHistoricalDataClient | CryptoHistoricalDataClient
        if config.asset_class == "equity":
            self._client = StockHistoricalDataClient(api_key, secret_key, url_override=url)
            self.path = "/stocks/bars"
        else:
            self._client = CryptoHistoricalDataClient(api_key, secret_key, url_override=url)
            self.path = "/crypto/us/bars"
        self._limiter = limiter or make_limiter(
            config.rest_max_rate, config.rest_period_s, name="alpaca.rest"
        )
        self.requests = 0
        self.rejects: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"AlpacaHistoricalBars(url={self.config.resolved_rest_url!r}{self.path!r})"

    async def fetch_bars(
        self, symbol: str, start: dt.datetime, end: dt.datetime, timeframe: str = "1m"
    ) -> pl.DataFrame:
        """Bars of `symbol` from `start` to `end` (both inclusive, as Alpaca's API), by time.

        Bars the parser rejects are left out, counted in `rejects` and logged.
        """
        if start.tzinfo is None or end.tzinfo is None or not start < end:
            raise DataError(
                f"need timezone-aware start < end, got {start.isoformat()} .. {end.isoformat()}"
            )
        params = self._request(symbol, start, end, parse_timeframe(timeframe)).to_request_fields()
        parser = AlpacaParser([symbol])
        frames: list[pl.DataFrame] = []
        rejected: Counter[str] = Counter()
        token: str | None = None
        while True:
            body = await self._get({**params, "page_token": token} if token else params, symbol)
            items, token = parser.parse_bars_page(body)
            for item in items:
                if isinstance(item, Events):
                    frames.append(item.frame)
                else:
                    rejected[item.reason] += 1
            if token is None:
                break
        if rejected:
            self.rejects.update(rejected)
            log.warning("alpaca bars of %s: rejected %s", symbol, dict(rejected))
        if not frames:
            return pl.DataFrame(schema=BAR_SCHEMA)
        bars = pl.concat(frames)
        return bars.unique(["symbol", "timestamp"], keep="first", maintain_order=True).sort(
            "timestamp"
        )

    def _request(
        self, symbol: str, start: dt.datetime, end: dt.datetime, timeframe: TimeFrame
    ) -> StockBarsRequest | CryptoBarsRequest:
        common: dict[str, Any] = {
            "symbol_or_symbols": symbol,
            "start": start,
            "end": end,
            "timeframe": timeframe,
            "limit": self.config.page_limit,
        }
        if self.config.asset_class == "equity":
            return StockBarsRequest(**common, feed=DataFeed(self.config.stock_feed))
        return CryptoBarsRequest(**common)

    async def _get(self, params: dict[str, Any], symbol: str) -> Any:
        async with self._limiter:
            self.requests += 1
            try:
                return await asyncio.to_thread(self._client.get, self.path, params)
            except (APIError, OSError, ValueError) as exc:
                raise DataError(
                    f"alpaca GET {self.path} for {symbol} failed: {type(exc).__name__}: {exc}"
                ) from exc


def parse_timeframe(text: str) -> TimeFrame:
    """``"1m"``, ``"15min"``, ``"1h"``, ``"1d"``, ``"1w"``, ``"3mo"`` as alpaca-py's `TimeFrame`."""
    match = _TIMEFRAME.fullmatch(text.strip().lower())
    if match is None:
        raise DataError(f"timeframe {text!r} is not like '1m', '15min', '1h', '1d', '1w', '1mo'")
    try:
        return TimeFrame(int(match[1]), _UNITS[match[2]])
    except ValueError as exc:
        raise DataError(f"timeframe {text!r}: {exc}") from None
