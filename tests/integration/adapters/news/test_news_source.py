"""The news source polling the local fake (both shapes): dedup, pacing, failures, secrets."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Callable

import pytest
from pydantic import SecretStr

from quantlab.adapters.news import (
    HTTP_STATUS,
    HTTP_TIMEOUT,
    HTTP_TRANSPORT,
    RATE_LIMITED,
    NewsDataConfig,
    NewsSource,
)
from quantlab.bus import topics
from quantlab.core.messages import NewsEvent
from quantlab.ingest.items import MALFORMED_JSON, Heartbeat, Reject, SourceItem
from quantlab.ingest.multiplexer import Backoff, Multiplexer
from quantlab.ingest.ports import MarketDataSource
from quantlab.testing.fakes.news import FakeNews, Reply

KEY, SECRET = "test-key", "test-secret"
T0 = dt.datetime(2021, 12, 31, 11, 8, 42, tzinfo=dt.UTC)


def minutes(n: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=n)


def config(url: str, **kw: object) -> NewsDataConfig:
    base: dict[str, object] = {
        "url": url,
        "symbols": ("AAPL", "TSLA"),
        "poll_interval_s": 0.05,
        "start": T0 - dt.timedelta(days=1),
        "max_rate": 1000.0,
        "timeout_s": 2.0,
    }
    return NewsDataConfig(**{**base, **kw})  # type: ignore[arg-type]


def alpaca_source(fake: FakeNews, **kw: object) -> NewsSource:
    return NewsSource(config(fake.alpaca_url, **kw), api_key=KEY, api_secret=SECRET)


async def take(
    stream: AsyncIterator[SourceItem], done: Callable[[list[SourceItem]], bool], timeout: float = 5
) -> list[SourceItem]:
    items: list[SourceItem] = []
    try:
        async with asyncio.timeout(timeout):
            async for item in stream:
                items.append(item)
                if done(items):
                    break
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    return items


def beats(n: int) -> Callable[[list[SourceItem]], bool]:
    return lambda items: sum(isinstance(i, Heartbeat) for i in items) >= n


def news(items: list[SourceItem]) -> list[NewsEvent]:
    return [i for i in items if isinstance(i, NewsEvent)]


def reasons(items: list[SourceItem]) -> list[str]:
    return [i.reason for i in items if isinstance(i, Reject)]


async def test_alpaca_poll_yields_our_articles_oldest_first_then_a_heartbeat() -> None:
    async with FakeNews(api_key=KEY, api_secret=SECRET) as fake:
        fake.add(3, "Tesla deliveries", ["TSLA"], minutes(2))
        fake.add(1, "Apple sales in China", ["AAPL", "NIO"], minutes(0))
        fake.add(2, "Nio only", ["NIO"], minutes(1))
        source = alpaca_source(fake)
        assert isinstance(source, MarketDataSource)
        assert (source.name, source.asset_class) == ("news", "equity")
        items = await take(source.stream(), beats(1))

        assert [type(i) for i in items] == [NewsEvent, NewsEvent, Heartbeat]
        first, second = news(items)
        assert first == NewsEvent(
            id="1",
            symbols=["AAPL"],
            headline="Apple sales in China",
            source="benzinga",
            url="https://www.benzinga.com/news/1",
            timestamp=T0,
        )
        assert (second.id, second.symbols) == ("3", ["TSLA"])
        [req] = fake.requests
        assert req.path == "/v1beta1/news"
        assert req.query == {
            "symbols": "AAPL,TSLA",
            "start": "2021-12-30T11:08:42Z",
            "limit": "50",
            "sort": "asc",
        }
        assert (req.headers["apca-api-key-id"], req.headers["apca-api-secret-key"]) == (KEY, SECRET)


async def test_pages_are_followed_and_articles_deduplicated_across_polls() -> None:
    async with FakeNews(api_key=KEY, api_secret=SECRET, ignore_start=True) as fake:
        for n in range(5):
            fake.add(100 + n, f"story {n}", ["AAPL"], minutes(n))
        source = alpaca_source(fake, page_limit=2)
        stream = source.stream()
        items = await take(stream, beats(1))
        assert [e.id for e in news(items)] == ["100", "101", "102", "103", "104"]
        assert [r.query.get("page_token") is None for r in fake.requests] == [True, False, False]

        # The fake ignores `start`, so every poll returns everything again: all duplicates.
        fake.add(200, "late story", ["TSLA"], minutes(10))
        items = await take(source.stream(), beats(3))  # a new stream: a reconnect
        assert [e.id for e in news(items)] == ["200"]
        assert reasons(items) == []
        assert len(source.seen) == 6


async def test_later_polls_ask_from_the_newest_article_less_the_overlap() -> None:
    async with FakeNews(api_key=KEY, api_secret=SECRET) as fake:
        fake.add(1, "a", ["AAPL"], minutes(0))
        fake.add(2, "b", ["AAPL"], minutes(30))
        await take(alpaca_source(fake, overlap_s=60.0).stream(), beats(2))
        starts = [r.query["start"] for r in fake.requests]
        assert starts[:2] == ["2021-12-30T11:08:42Z", "2021-12-31T11:37:42Z"]


async def test_polygon_shape_queries_each_ticker_and_follows_next_url() -> None:
    async with FakeNews(api_key=KEY) as fake:
        fake.add(1, "Apple and Tesla", ["AAPL", "TSLA"], minutes(0), source="benzinga")
        fake.add(2, "Apple again", ["AAPL"], minutes(1))
        fake.add(3, "Apple thrice", ["AAPL"], minutes(2))
        cfg = config(fake.polygon_url, shape="polygon", page_limit=2)
        source = NewsSource(cfg, api_key=SecretStr(KEY))
        items = await take(source.stream(), beats(1))

        # Article 1 names both tickers: both queries return it, it is yielded once.
        assert [(e.id, e.symbols) for e in news(items)] == [
            ("pg1", ["AAPL", "TSLA"]),
            ("pg2", ["AAPL"]),
            ("pg3", ["AAPL"]),
        ]
        assert news(items)[0].source == "Benzinga"
        paths = [(r.query.get("ticker"), "cursor" in r.query) for r in fake.requests]
        assert paths == [("AAPL", False), (None, True), ("TSLA", False)]
        assert fake.requests[0].query == {
            "ticker": "AAPL",
            "published_utc.gte": "2021-12-30T11:08:42Z",
            "order": "asc",
            "sort": "published_utc",
            "limit": "2",
        }
        assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in fake.requests)


async def test_failures_become_rejects_and_polling_goes_on() -> None:
    async with FakeNews(api_key=KEY, api_secret=SECRET) as fake:
        fake.add(1, "after the storm", ["AAPL"], minutes(0))
        fake.replies += [
            Reply(500, body=b'{"message":"internal server error"}'),
            Reply(200, body=b"<html>not json</html>"),
            Reply(delay_s=3.0),  # longer than the client timeout
            Reply(drop=True),
            Reply(403, body=b'{"message":"forbidden."}'),
        ]
        source = alpaca_source(fake, timeout_s=0.6)
        items = await take(source.stream(), beats(1))
        assert reasons(items) == [
            HTTP_STATUS,
            MALFORMED_JSON,
            HTTP_TIMEOUT,
            HTTP_TRANSPORT,
            HTTP_STATUS,
        ]
        # No heartbeat for a failed poll; the first good poll brings the article and one.
        assert [type(i) for i in items[-2:]] == [NewsEvent, Heartbeat]
        assert sum(isinstance(i, Heartbeat) for i in items) == 1
        assert b"internal server error" in items[0].raw  # type: ignore[union-attr]


async def test_429_waits_for_retry_after_then_retries() -> None:
    async with FakeNews(api_key=KEY, api_secret=SECRET) as fake:
        fake.add(1, "patience", ["AAPL"], minutes(0))
        fake.replies.append(Reply(429, {"Retry-After": "0.4"}, b'{"message":"too many requests"}'))
        t0 = time.monotonic()
        items = await take(alpaca_source(fake).stream(), beats(1))
        assert [type(i) for i in items] == [Reject, NewsEvent, Heartbeat]
        assert reasons(items) == [RATE_LIMITED]
        assert "Retry-After: 0.4" in items[0].detail  # type: ignore[union-attr]
        assert time.monotonic() - t0 >= 0.4
        assert len(fake.requests) == 2


async def test_retry_after_also_holds_back_the_next_poll() -> None:
    async with FakeNews(api_key=KEY, api_secret=SECRET) as fake:
        fake.add(1, "patience", ["AAPL"], minutes(0))
        fake.replies.append(Reply(429, {"Retry-After": "0.4"}))
        source = alpaca_source(fake, max_retries=0, poll_interval_s=0.01)
        t0 = time.monotonic()
        items = await take(source.stream(), beats(1))
        assert [type(i) for i in items] == [Reject, NewsEvent, Heartbeat]
        assert time.monotonic() - t0 >= 0.4  # not 0.01 s later, with the next poll


async def test_requests_are_paced_by_the_limiter() -> None:
    async with FakeNews(api_key=KEY, api_secret=SECRET) as fake:
        source = alpaca_source(fake, poll_interval_s=0.001, max_rate=2.0, rate_period_s=0.5)
        t0 = time.monotonic()
        await take(source.stream(), beats(4))
        assert time.monotonic() - t0 >= 0.4  # 4 polls at 2 requests per 0.5 s


async def test_news_symbols_map_to_valid_bus_topics() -> None:
    async with FakeNews(api_key=KEY, api_secret=SECRET) as fake:
        fake.add(1, "dual", ["AAPL", "TSLA", "BRK.B"], minutes(0))
        cfg = config(fake.alpaca_url, symbols=("AAPL", "TSLA", "BRK.B"))
        items = await take(NewsSource(cfg, api_key=KEY, api_secret=SECRET).stream(), beats(1))
        [event] = news(items)
        assert [topics.news(s) for s in event.symbols] == ["news.AAPL", "news.TSLA", "news.BRK.B"]
        for symbol in event.symbols:
            assert topics.check_topic(topics.news(symbol)) == f"news.{symbol}"
            assert topics.matches("news.*", topics.news(symbol))


async def test_runs_under_the_multiplexer() -> None:
    async with FakeNews(api_key=KEY, api_secret=SECRET) as fake:
        fake.add(1, "one", ["AAPL"], minutes(0))
        fake.replies.append(Reply(500))
        got: list[SourceItem] = []

        async def sink(name: str, item: SourceItem) -> None:
            assert name == "news"
            got.append(item)

        mux = Multiplexer(
            [alpaca_source(fake)], backoff=Backoff(initial=0.01, maximum=0.05), stale_after_s=3.0
        )
        task = asyncio.create_task(mux.run(sink))
        try:
            async with asyncio.timeout(5):
                while sum(isinstance(i, Heartbeat) for i in got) < 3:
                    await asyncio.sleep(0.01)
        finally:
            mux.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert [e.id for e in news(got)] == ["1"]
        stats = mux.stats["news"]
        assert stats.rejects == {HTTP_STATUS: 1}
        assert (stats.reconnects, stats.stale) == (0, 0)


async def test_canary_credentials_never_reach_logs_reprs_or_rejects(
    caplog: pytest.LogCaptureFixture,
) -> None:
    key, secret = "CANARY-key-0123456789", "CANARY-secret-0123456789"
    caplog.set_level(logging.DEBUG)
    async with FakeNews(api_key=key, api_secret=secret) as fake:
        fake.add(1, "one", ["AAPL"], minutes(0))
        good = NewsSource(config(fake.alpaca_url), api_key=key, api_secret=SecretStr(secret))
        await take(good.stream(), beats(1))
        bad = NewsSource(config(fake.alpaca_url), api_key="CANARY-wrong", api_secret=secret)
        failed = await take(bad.stream(), lambda items: len(items) >= 2)
        assert set(reasons(failed)) == {HTTP_STATUS}
        pg = NewsSource(config(fake.polygon_url, shape="polygon"), api_key=key)
        await take(pg.stream(), beats(1))

    assert "HTTP Request" in caplog.text  # httpx's request lines were captured
    shown = [caplog.text, *(str(r.args) for r in caplog.records)]
    shown += [repr(x) for x in (good, bad, pg, good.config)]
    shown += [repr(vars(x)) for x in (good, bad, pg)]
    shown += [repr(i) for i in failed]
    for text in shown:
        assert "CANARY" not in text
