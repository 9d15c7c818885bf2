"""REST backfill of Polygon aggregates (``/v2/aggs``), paced by a token bucket.

The key travels in an ``Authorization: Bearer`` header, which Polygon accepts as an
alternative to the ``apiKey`` query parameter: a URL is logged by httpx and quoted in
errors, a header is not. ``next_url`` pages are followed only on the configured host, so
the key is never sent anywhere else.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from typing import Final

import httpx
import polars as pl
from pydantic import SecretStr

from quantlab.adapters.polygon.config import PolygonDataConfig
from quantlab.adapters.polygon.data import as_secret
from quantlab.adapters.polygon.parser import parse_aggregates
from quantlab.core.clock import datetime_to_ns
from quantlab.core.errors import ConfigError, DataError, ValidationError
from quantlab.core.schemas import BAR_SCHEMA, TIMESTAMP
from quantlab.ingest.items import Reject
from quantlab.ingest.ratelimit import limiter, retry_after_s

log = logging.getLogger(__name__)

_TIMEFRAME = re.compile(r"^([1-9][0-9]*)([smhdw])$")
_TIMESPANS: Final = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week"}
_RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})


def parse_timeframe(timeframe: str) -> tuple[int, str]:
    """``"5m"`` -> ``(5, "minute")``: Polygon's multiplier and timespan."""
    match = _TIMEFRAME.match(timeframe)
    if match is None:
        raise ConfigError(
            "timeframe", f"expected <n><s|m|h|d|w> such as '1m' or '1d', got {timeframe!r}"
        )
    return int(match.group(1)), _TIMESPANS[match.group(2)]


class PolygonHistoricalBars:
    """`HistoricalBars` from Polygon's aggregates endpoint.

    Bars whose start lies in ``[start, end)`` come back in `BAR_SCHEMA`, sorted by time.
    Rows Polygon sent but that could not be parsed are kept in `last_rejects` (and logged),
    so one bad row does not lose the backfill. HTTP 429 and 502-504 are retried after
    ``Retry-After`` (or one second), up to ``rest_max_retries`` times; other failures raise
    `DataError` naming the path and status.

    Examples
    --------
    >>> hist = PolygonHistoricalBars(PolygonDataConfig(symbols=("AAPL",)), api_key="...")
    >>> # bars = await hist.fetch_bars("AAPL", start, end, "1m")
    """

    def __init__(
        self,
        config: PolygonDataConfig,
        *,
        api_key: str | SecretStr,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self._key = as_secret(api_key)
        if not self._key.get_secret_value():
            raise ConfigError("polygon.api_key", "is empty")
        self._transport = transport
        self._limiter = limiter(config.rest_max_rate, config.rest_period_s, name="polygon.rest")
        self._base = httpx.URL(config.rest_url)
        self.last_rejects: list[Reject] = []
        self._not_before = 0.0  # event-loop time before which no request may go (429)

    def __repr__(self) -> str:
        return f"PolygonHistoricalBars(url={self.config.rest_url!r})"

    async def fetch_bars(
        self, symbol: str, start: dt.datetime, end: dt.datetime, timeframe: str = "1m"
    ) -> pl.DataFrame:
        """Bars of `symbol` starting in ``[start, end)`` (aware datetimes), all pages."""
        multiplier, timespan = parse_timeframe(timeframe)
        for what, value in (("start", start), ("end", end)):
            if value.tzinfo is None:
                raise ValidationError(f"{what} must be timezone-aware, got {value.isoformat()}")
        start_ns, end_ns = datetime_to_ns(start), datetime_to_ns(end)
        if start_ns >= end_ns:
            raise ValidationError(f"start {start.isoformat()} must be before end {end.isoformat()}")
        cfg = self.config
        path = (
            f"/v2/aggs/ticker/{symbol}/range/{multiplier}/{timespan}/"
            f"{start_ns // 1_000_000}/{-(-end_ns // 1_000_000)}"
        )
        url: str | None = str(self._base.join(path))
        params: dict[str, str] | None = {
            "adjusted": str(cfg.adjusted).lower(),
            "sort": "asc",
            "limit": str(cfg.rest_page_limit),
        }
        frames: list[pl.DataFrame] = []
        rejects: list[Reject] = []
        seen: set[str] = set()
        headers = {"Authorization": f"Bearer {self._key.get_secret_value()}"}
        async with httpx.AsyncClient(
            headers=headers, timeout=cfg.rest_timeout_s, transport=self._transport
        ) as client:
            while url is not None:
                if url in seen or len(seen) >= cfg.rest_max_pages:
                    raise DataError(
                        f"polygon aggregates for {symbol}: stopped after {len(seen)} pages "
                        "(next_url repeats or rest_max_pages reached)"
                    )
                seen.add(url)
                page = parse_aggregates(await self._get(client, url, params), symbol)
                frames.append(page.bars)
                rejects.extend(page.rejects)
                url, params = page.next_url, None
                if url is not None:
                    self._check_origin(url)
        self.last_rejects = rejects
        if rejects:
            log.warning(
                "polygon aggregates for %s: %d rows rejected (%s)",
                symbol,
                len(rejects),
                rejects[0].detail,
            )
        bars = pl.concat(frames) if frames else pl.DataFrame(schema=BAR_SCHEMA)
        lo = pl.lit(start_ns).cast(TIMESTAMP)
        hi = pl.lit(end_ns).cast(TIMESTAMP)
        return (
            bars.filter((pl.col("timestamp") >= lo) & (pl.col("timestamp") < hi))
            .unique(subset=["timestamp"], keep="first", maintain_order=True)
            .sort("timestamp")
        )

    async def _get(
        self, client: httpx.AsyncClient, url: str, params: dict[str, str] | None
    ) -> bytes:
        cfg = self.config
        path = httpx.URL(url).path
        for attempt in range(cfg.rest_max_retries + 1):
            delay = self._not_before - asyncio.get_running_loop().time()
            if delay > 0:  # a 429's Retry-After holds for every request, not just its retry
                await asyncio.sleep(delay)
            async with self._limiter:
                try:
                    resp = await client.get(url, params=params)
                except httpx.TimeoutException:
                    raise DataError(
                        f"polygon GET {path} timed out after {cfg.rest_timeout_s}s"
                    ) from None
                except httpx.TransportError as exc:
                    raise DataError(f"polygon GET {path} failed: {type(exc).__name__}") from None
            if resp.status_code == 200:
                return resp.content
            if resp.status_code in _RETRY_STATUSES and attempt < cfg.rest_max_retries:
                wait = retry_after_s(resp.headers.get("Retry-After"), 1.0, cfg.max_retry_after_s)
                log.warning(
                    "polygon GET %s: HTTP %d, retrying in %.1fs", path, resp.status_code, wait
                )
                self._not_before = asyncio.get_running_loop().time() + wait
                continue
            raise DataError(
                f"polygon GET {path} returned HTTP {resp.status_code}: {self._error_text(resp)}"
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def _error_text(self, resp: httpx.Response) -> str:
        text = resp.text[:300]
        key = self._key.get_secret_value()
        return text.replace(key, "**********")

    def _check_origin(self, url: str) -> None:
        target = httpx.URL(url)
        if (target.scheme, target.host, target.port) != (
            self._base.scheme,
            self._base.host,
            self._base.port,
        ):
            raise DataError(
                f"polygon next_url points to {target.scheme}://{target.host}, not "
                f"{self.config.rest_url}; refusing to send the API key there"
            )
