"""`NewsSource`: polls an HTTP news endpoint and yields each article once.

Every `poll_interval_s` the source asks for articles since the newest one it has seen (less
`overlap_s`), sorted oldest first, following pages; requests go through a token bucket.
Articles are deduplicated by id across polls and reconnects with a bounded memory. Failures
never end the stream: HTTP errors, timeouts and bad bodies become `Reject`s, a 429 waits out
its ``Retry-After`` before the request is retried, and a poll that fully succeeded yields a
`Heartbeat`. Publishing ``news.<symbol>`` is the engine's job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
from pydantic import SecretStr

from quantlab.adapters.news.config import NewsDataConfig
from quantlab.adapters.news.parser import (
    HTTP_STATUS,
    HTTP_TIMEOUT,
    HTTP_TRANSPORT,
    RATE_LIMITED,
    parse_news,
)
from quantlab.core.clock import Clock, WallClock, datetime_to_ns, ns_to_datetime
from quantlab.core.errors import ConfigError
from quantlab.core.messages import NewsEvent
from quantlab.ingest.items import OVERSIZED_FRAME, WRONG_TYPE, Heartbeat, Reject, SourceItem, reject
from quantlab.ingest.ratelimit import limiter, retry_after_s

log = logging.getLogger(__name__)

_NS = 1_000_000_000
_ALL = "*"  # the watermark key of a query that asks for every symbol at once


class SeenIds:
    """A bounded set of article ids; the oldest are forgotten first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: dict[str, None] = {}

    def add(self, article_id: str) -> bool:
        """Remember `article_id`; True if it was new."""
        if article_id in self._ids:
            return False
        self._ids[article_id] = None
        if len(self._ids) > self.capacity:
            del self._ids[next(iter(self._ids))]
        return True

    def __len__(self) -> int:
        return len(self._ids)


class _Outcome:
    failed = False


class NewsSource:
    """News articles for `config.symbols`, polled from an Alpaca- or Polygon-shaped endpoint.

    Parameters
    ----------
    config
        Endpoint URL and shape, symbols, pacing.
    api_key, api_secret
        Credentials, sent as headers only (Alpaca: ``APCA-API-KEY-ID`` and
        ``APCA-API-SECRET-KEY``; Polygon: ``Authorization: Bearer``); never logged.
    clock
        Where "now" comes from (the first poll's window and the watermark's upper bound).

    Examples
    --------
    >>> cfg = NewsDataConfig(url="https://data.alpaca.markets/v1beta1/news", symbols=("AAPL",))
    >>> src = NewsSource(cfg, api_key="...", api_secret="...")  # Multiplexer([src], ...)
    """

    total_rows: int | None = None

    def __init__(
        self,
        config: NewsDataConfig,
        *,
        api_key: str | SecretStr | None = None,
        api_secret: str | SecretStr | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.asset_class = config.asset_class
        self._key = _secret(api_key)
        self._secret = _secret(api_secret)
        if config.shape == "alpaca" and (self._key is None) != (self._secret is None):
            raise ConfigError("news.api_secret", "Alpaca needs both the key id and the secret")
        self.clock = clock or WallClock()
        # A poller is quiet between polls: silence is only staleness after several of them.
        # One poll is silent for its pages of articles already seen (the overlap) and the
        # request that times out after them: up to `max_pages_per_poll` requests.
        self.stale_after_s = (
            3 * config.poll_interval_s + config.max_pages_per_poll * config.timeout_s
        )
        self._symbols = {s: s for s in config.symbols}  # vendor tickers are quantlab symbols
        self._limiter = limiter(config.max_rate, config.rate_period_s, name="news")
        self._base = httpx.URL(config.url)
        self.seen = SeenIds(config.seen_capacity)
        self._newest: dict[str, int] = {}  # newest article time (ns) per query
        self._not_before = 0.0  # event-loop time before which no request may go (429)

    def __repr__(self) -> str:
        return f"NewsSource(name={self.name!r}, url={self.config.url!r})"

    async def stream(self) -> AsyncIterator[SourceItem]:
        """Poll forever; yields new articles, rejects, and a heartbeat per successful poll."""
        async with httpx.AsyncClient(
            headers=self._auth_headers(), timeout=self.config.timeout_s
        ) as client:
            while True:
                outcome = _Outcome()
                for query in self._queries():
                    async for item in self._poll(client, query, outcome):
                        yield item
                if not outcome.failed:
                    yield Heartbeat(self.clock.now_ns())
                await asyncio.sleep(self.config.poll_interval_s)

    def _queries(self) -> list[str]:
        # Polygon's news endpoint takes one ticker per request; Alpaca's takes a list.
        return list(self.config.symbols) if self.config.shape == "polygon" else [_ALL]

    async def _poll(
        self, client: httpx.AsyncClient, query: str, outcome: _Outcome
    ) -> AsyncIterator[SourceItem]:
        cfg = self.config
        url: str = cfg.url
        first = self._first_params(query)  # fixed for the poll: page tokens belong to it
        params: dict[str, str] | None = first
        for _ in range(cfg.max_pages_per_poll):
            body, rejects = await self._get(client, url, params)
            for rej in rejects:
                log.warning("%s: %s: %s", self.name, rej.reason, rej.detail)
                yield rej
            if body is None:
                outcome.failed = True
                return
            page = parse_news(body, cfg.shape, self._symbols)
            outcome.failed |= not page.valid
            for item in page.items:
                if isinstance(item, NewsEvent):
                    self._advance(query, item)
                    if not self.seen.add(item.id):
                        continue
                yield item
            if not page.valid or page.cursor is None:
                return
            if cfg.shape == "alpaca":
                params = {**first, "page_token": page.cursor}
            elif self._same_origin(page.cursor):
                url, params = page.cursor, None
            else:
                host = httpx.URL(page.cursor).host
                detail = f"next_url on another host ({host}); not followed with our key"
                yield reject(WRONG_TYPE, detail, page.cursor)
                outcome.failed = True
                return

    def _first_params(self, query: str) -> dict[str, str]:
        cfg = self.config
        newest = self._newest.get(query)
        if newest is not None:
            since = newest - int(cfg.overlap_s * _NS)
        elif cfg.start is not None:
            since = datetime_to_ns(cfg.start)
        else:
            since = self.clock.now_ns() - int(cfg.lookback_s * _NS)
        start = ns_to_datetime(since).strftime("%Y-%m-%dT%H:%M:%SZ")
        if cfg.shape == "alpaca":
            return {
                "symbols": ",".join(cfg.symbols),
                "start": start,
                "limit": str(cfg.page_limit),
                "sort": "asc",
            }
        return {
            "ticker": query,
            "published_utc.gte": start,
            "order": "asc",
            "sort": "published_utc",
            "limit": str(cfg.page_limit),
        }

    def _advance(self, query: str, event: NewsEvent) -> None:
        # Capped at now: one article stamped in the future must not hide the ones after it.
        ts = min(datetime_to_ns(event.timestamp), self.clock.now_ns())
        if ts > self._newest.get(query, -(1 << 62)):
            self._newest[query] = ts

    async def _get(
        self, client: httpx.AsyncClient, url: str, params: dict[str, str] | None
    ) -> tuple[bytes | None, list[Reject]]:
        """The body of a 200 (None if the request failed) and the rejects to report.

        A 429 is a reject too; no request (this one retried, or any later one) goes out
        before its ``Retry-After`` has passed.
        """
        cfg = self.config
        path = httpx.URL(url).path
        rejects: list[Reject] = []
        for _ in range(cfg.max_retries + 1):
            await self._wait_out_rate_limit()
            async with self._limiter:
                try:
                    resp = await client.get(url, params=params)
                except httpx.TimeoutException:
                    detail = f"GET {path} timed out after {cfg.timeout_s}s"
                    return None, [*rejects, reject(HTTP_TIMEOUT, detail)]
                except httpx.HTTPError as exc:
                    detail = f"GET {path} failed: {type(exc).__name__}"
                    return None, [*rejects, reject(HTTP_TRANSPORT, detail)]
            if resp.status_code == 429:
                header = resp.headers.get("Retry-After")
                wait = retry_after_s(header, cfg.poll_interval_s, cfg.max_retry_after_s)
                self._not_before = asyncio.get_running_loop().time() + wait
                detail = f"GET {path}: HTTP 429 (Retry-After: {header}); waiting {wait:.1f}s"
                rejects.append(reject(RATE_LIMITED, detail, resp.content))
                continue
            if resp.status_code != 200:
                detail = f"GET {path}: HTTP {resp.status_code}"
                return None, [*rejects, reject(HTTP_STATUS, detail, resp.content)]
            if len(resp.content) > cfg.max_body_bytes:
                detail = f"GET {path}: body of {len(resp.content)} bytes > {cfg.max_body_bytes}"
                return None, [*rejects, reject(OVERSIZED_FRAME, detail, resp.content)]
            return resp.content, rejects
        return None, rejects

    async def _wait_out_rate_limit(self) -> None:
        delay = self._not_before - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)

    def _auth_headers(self) -> dict[str, str]:
        if self._key is None:
            return {}
        if self.config.shape == "alpaca" and self._secret is not None:
            return {
                "APCA-API-KEY-ID": self._key.get_secret_value(),
                "APCA-API-SECRET-KEY": self._secret.get_secret_value(),
            }
        return {"Authorization": f"Bearer {self._key.get_secret_value()}"}

    def _same_origin(self, url: str) -> bool:
        target = httpx.URL(url)
        base = self._base
        return (target.scheme, target.host, target.port) == (base.scheme, base.host, base.port)


def _secret(value: str | SecretStr | None) -> SecretStr | None:
    if value is None or isinstance(value, SecretStr):
        return value
    return SecretStr(value)
