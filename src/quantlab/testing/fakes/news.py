"""A local fake news endpoint on 127.0.0.1 in both shapes the news source reads.

``GET /v1beta1/news`` answers like Alpaca (``symbols``, ``start``, ``end``, ``sort``,
``limit`` <= 50, ``page_token``; ``APCA-API-KEY-ID`` / ``APCA-API-SECRET-KEY`` headers) and
``GET /v2/reference/news`` like Polygon (``ticker``, ``published_utc.gte``, ``order``,
``limit``, ``next_url`` with a cursor; ``Authorization: Bearer`` or ``apiKey=``). Both default
to newest first, as the vendors do.

Test controls: `add` publishes an article, ``replies`` queues canned replies (status codes,
``Retry-After``, garbage bodies, delays for timeouts, dropped connections) served before
normal routing, ``ignore_start=True`` returns old articles on every poll (duplicates the
source must drop), and `requests` records every request with its auth headers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec

from quantlab.testing.fakes._http import serve_one

ALPACA_PATH = "/v1beta1/news"
POLYGON_PATH = "/v2/reference/news"


@dataclass(frozen=True)
class Article:
    id: int
    headline: str
    symbols: tuple[str, ...]
    created_at: dt.datetime
    source: str = "benzinga"
    author: str = "Benzinga Newsdesk"
    summary: str = ""

    @property
    def url(self) -> str:
        return f"https://www.benzinga.com/news/{self.id}"

    def alpaca(self) -> dict[str, Any]:
        stamp = _rfc3339(self.created_at)
        return {
            "id": self.id, "headline": self.headline, "author": self.author,
            "created_at": stamp, "updated_at": stamp, "summary": self.summary,
            "content": "", "images": [], "url": self.url, "symbols": list(self.symbols),
            "source": self.source,
        }  # fmt: skip

    def polygon(self) -> dict[str, Any]:
        return {
            "id": f"pg{self.id}", "publisher": {"name": self.source.title(),
            "homepage_url": "https://www.benzinga.com/"}, "title": self.headline,
            "author": self.author, "published_utc": _rfc3339(self.created_at),
            "article_url": self.url, "tickers": list(self.symbols), "description": self.summary,
            "keywords": [],
        }  # fmt: skip


@dataclass
class Reply:
    """A canned reply served once before normal routing.

    `delay_s` stalls it (for client timeouts); `drop` closes the connection unanswered.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"{}"
    delay_s: float = 0.0
    drop: bool = False


@dataclass(frozen=True)
class Request:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


def _rfc3339(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value).astimezone(dt.UTC)


class FakeNews:
    """Fake news server; use as ``async with FakeNews() as f`` and poll `alpaca_url` or
    `polygon_url`."""

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        api_secret: str = "test-secret",  # noqa: S107 (a fake's test credential)
        ignore_start: bool = False,
    ) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.ignore_start = ignore_start
        self.articles: list[Article] = []
        self.replies: list[Reply] = []
        self.requests: list[Request] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> FakeNews:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("start the fake first: `async with FakeNews() as fake`")
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    @property
    def alpaca_url(self) -> str:
        return self.base_url + ALPACA_PATH

    @property
    def polygon_url(self) -> str:
        return self.base_url + POLYGON_PATH

    def add(
        self, article_id: int, headline: str, symbols: list[str], created_at: dt.datetime, **kw: Any
    ) -> Article:
        """Publish an article (it shows up in the next matching request)."""
        article = Article(article_id, headline, tuple(symbols), created_at, **kw)
        self.articles.append(article)
        return article

    # --- HTTP ----------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_one(reader, writer, self._route, self._tasks)

    async def _route(self, target: str, headers: dict[str, str]) -> Reply:
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.requests.append(Request(url.path, query, headers))
        if self.replies:
            reply = self.replies.pop(0)
            await asyncio.sleep(reply.delay_s)
            return reply
        if url.path == ALPACA_PATH:
            if (headers.get("apca-api-key-id"), headers.get("apca-api-secret-key")) != (
                self.api_key,
                self.api_secret,
            ):
                return Reply(401, body=b'{"message":"unauthorized."}')
            return Reply(body=msgspec.json.encode(self._alpaca(query)))
        if url.path == POLYGON_PATH:
            bearer = headers.get("authorization") == f"Bearer {self.api_key}"
            if not bearer and query.get("apiKey") != self.api_key:
                body = {"status": "ERROR", "request_id": "fake", "error": "Unknown API Key"}
                return Reply(401, body=msgspec.json.encode(body))
            return Reply(body=msgspec.json.encode(self._polygon(url.path, query)))
        return Reply(404, body=b'{"message":"Not Found"}')

    def _select(self, symbols: set[str], since: str | None, ascending: bool) -> list[Article]:
        lo = _time(since) if since and not self.ignore_start else None
        found = [
            a
            for a in self.articles
            if (not symbols or symbols & set(a.symbols)) and (lo is None or a.created_at >= lo)
        ]
        return sorted(found, key=lambda a: (a.created_at, a.id), reverse=not ascending)

    def _alpaca(self, query: dict[str, str]) -> dict[str, Any]:
        symbols = {s for s in query.get("symbols", "").split(",") if s}
        found = self._select(symbols, query.get("start"), query.get("sort") == "asc")
        offset = int(base64.urlsafe_b64decode(query["page_token"])) if "page_token" in query else 0
        limit = min(int(query.get("limit", 10)), 50)
        page = found[offset : offset + limit]
        more = offset + limit < len(found)
        token = base64.urlsafe_b64encode(str(offset + limit).encode()).decode() if more else None
        return {"news": [a.alpaca() for a in page], "next_page_token": token}

    def _polygon(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        if "cursor" in query:
            query = {**query, **{k: v[-1] for k, v in parse_qs(_b64(query["cursor"])).items()}}
        symbols = {query["ticker"]} if "ticker" in query else set()
        found = self._select(symbols, query.get("published_utc.gte"), query.get("order") == "asc")
        offset, limit = int(query.get("offset", 0)), min(int(query.get("limit", 10)), 1000)
        page = found[offset : offset + limit]
        doc: dict[str, Any] = {
            "results": [a.polygon() for a in page],
            "status": "OK",
            "request_id": "fake",
            "count": len(page),
        }
        if offset + limit < len(found):
            state = {k: v for k, v in query.items() if k not in ("cursor", "apiKey")}
            state["offset"] = str(offset + limit)
            cursor = base64.urlsafe_b64encode(
                "&".join(f"{k}={v}" for k, v in state.items()).encode()
            )
            doc["next_url"] = f"{self.base_url}{path}?cursor={cursor.decode()}"
        return doc


def _b64(value: str) -> str:
    return base64.urlsafe_b64decode(value).decode()
