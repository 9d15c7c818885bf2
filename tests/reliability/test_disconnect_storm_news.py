"""A disconnect storm on the news source, which polls over HTTP instead of streaming.

The news source is built as the live engine builds it (`engine.sources.build_sources` from a
``[[live.sources]]`` entry of type ``news``, Alpaca shape) and run by the live `IngestEngine`
on an in-process bus; it polls the local fake news server through `testing.tcp_proxy.TcpProxy`
while the fake publishes an article every `EVERY_S` (every `LATE_EVERY`-th one stamped `LATE_S`
in the past, a story indexed late, which only the source's `overlap_s` re-query finds).

The storm is `FAULTS` faults drawn by `tcp_proxy.plan` (half resets, a quarter each stalls
and slow links). After 0 to `SPARED` successful polls, the next fault goes to the next request
the fake receives, while the fake "thinks" (`THINK_S`), so that it lands on a poll in flight:
a reset (an RST on both sides: the poll fails with a transport error), a stall (a half-open
link: the poll fails when the client's `TIMEOUT_S` fires) or a slow link (the reply is late).
The fake answers one request per connection and then closes it, and the proxy ends a stalled
link when either side closes; so while a stall is on, the fake holds its reply until the
client has given up, as a black hole would hide the server's close as well as its reply.
A slowed reply arrives whole, late, and then the close.

News does not go to the lake: the ingest engine publishes each article on ``news.<symbol>``
(`IngestEngine._on_news`). After a quiet tail, what the source handed the engine and what the
engine published are compared with the fake's ground truth: ``lost`` counts articles missing
from the ``news.<symbol>`` topics of their symbols; ``duplicated`` counts articles the source
delivered more than once (the engine's own id window would hide them) plus those the engine
published twice on a topic; ``failed`` counts the times the multiplexer tore the source down
(it raised, or was silent past its own `stale_after_s`) instead of the next poll retrying.

The test can fail, and it says why: it asserts that the faults hit polls (polls timed out and
polls were reset), so the catch-up had work to do. Breaking the source shows (checked by
monkeypatching): without the dedupe (`SeenIds.add` always True) the source delivers the
overlap of every poll again, ~1,700 duplicates (the engine publishes each article once: only
the source's deliveries show them); later polls asking from "now" instead of the newest article
less `overlap_s` lose ~100 articles (the late ones, and what failed polls missed). The source's
silence limit before the fix here (``3 * poll_interval_s + timeout_s``, less than one poll that
reads a page of articles already seen and then times out) let the multiplexer tear the source
down once (``failed`` 1) in a run with a busier fake (an article every 0.02 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from test_disconnect_storm import until  # the reliability folder is on sys.path

from quantlab.adapters.news import HTTP_STATUS, HTTP_TIMEOUT, HTTP_TRANSPORT, NewsSource
from quantlab.bus.base import Envelope
from quantlab.bus.memory import InProcessBus
from quantlab.config import load_settings
from quantlab.core.clock import WallClock
from quantlab.core.messages import NewsEvent
from quantlab.engine.sources import build_sources
from quantlab.ingest import Backoff, IngestEngine
from quantlab.ingest.items import SourceItem
from quantlab.testing.fakes.news import FakeNews, Reply
from quantlab.testing.reliability import record
from quantlab.testing.tcp_proxy import Fault, TcpProxy, plan

FAULTS = 100
KEY, SECRET = "test-key", "test-secret"  # the fake's credentials
SYMBOLS = ("AAPL", "TSLA")
TICKERS = (("AAPL",), ("TSLA",), ("AAPL", "TSLA"), ("AAPL", "NIO"))  # NIO is not ours
EVERY_S = 0.05  # the fake publishes an article this often
LATE_EVERY, LATE_S = 5, 0.5  # every 5th article is stamped half a second in the past
THINK_S = 0.02  # the fake's time to answer: a poll is in flight that long
POLL_S = 0.05  # the source's poll interval
TIMEOUT_S = 0.2  # the source's HTTP timeout: what ends a stalled poll
SPARED = 1  # the storm lets up to this many polls succeed between two faults
OVERLAP_S = 1.0  # later polls ask again from this long before the newest article seen
PAGE = 30  # articles per page: a poll reads its overlap (already seen) in 1 to 3 pages
FAILED_POLL = frozenset({HTTP_TIMEOUT, HTTP_TRANSPORT, HTTP_STATUS})


class PollingNews(FakeNews):
    """The fake news server, answering each request after `THINK_S` (a poll in flight);
    `arrived` is set when a request comes in; while `released` is clear, replies wait."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.arrived = asyncio.Event()
        self.released = asyncio.Event()
        self.released.set()

    async def _route(self, target: str, headers: dict[str, str]) -> Reply:
        self.arrived.set()
        await asyncio.sleep(THINK_S)
        await self.released.wait()
        return await super()._route(target, headers)


async def publish(fake: FakeNews, stop: asyncio.Event) -> None:
    """Publish article 1, 2, ... every `EVERY_S` until `stop`."""
    k = 0
    while not stop.is_set():
        k += 1
        stamp = dt.datetime.now(dt.UTC)
        if k % LATE_EVERY == 0:
            stamp -= dt.timedelta(seconds=LATE_S)
        fake.add(k, f"story {k}", list(TICKERS[k % len(TICKERS)]), stamp)
        await asyncio.sleep(EVERY_S)


async def next_request(fake: PollingNews) -> None:
    """Until the fake receives a new request (a poll's page in flight)."""
    fake.arrived.clear()
    await asyncio.wait_for(fake.arrived.wait(), 10.0)


async def drive(
    proxy: TcpProxy,
    fake: PollingNews,
    faults: Sequence[Fault],
    seed: int,
    polls_ok: Callable[[], int],
) -> Counter[str]:
    """Let 0 to `SPARED` polls succeed, then apply the next fault to the next request in
    flight (again to the one after if it was answered before the fault came); returns the
    faults that hit a connection, by kind."""
    rng = random.Random(seed)
    hits: Counter[str] = Counter()
    for fault in faults:
        spared = polls_ok() + rng.randint(0, SPARED)
        await until(lambda: polls_ok() >= spared, 10.0, "a poll to succeed")  # noqa: B023
        for _ in range(20):
            await next_request(fake)
            if fault.kind == "stall":
                fake.released.clear()  # the reply (and the server's close) is never seen
            try:
                hit = await proxy.apply(fault, stall_timeout=5.0)
            finally:
                fake.released.set()
            if hit:
                hits[fault.kind] += 1
                break
    return hits


async def test_a_disconnect_storm_on_news_polls_loses_and_duplicates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = time.monotonic()
    monkeypatch.chdir(tmp_path)  # no quantlab.toml
    monkeypatch.delenv("QUANTLAB_CONFIG", raising=False)
    monkeypatch.setenv("QUANTLAB_ALPACA_API_KEY", KEY)
    monkeypatch.setenv("QUANTLAB_ALPACA_API_SECRET", SECRET)
    delivered: list[str] = []  # article ids, as the source handed them to the engine
    items: Counter[str] = Counter()
    on_topics: list[tuple[str, str]] = []  # (article id, topic) the engine published
    async with (
        PollingNews(api_key=KEY, api_secret=SECRET) as fake,
        TcpProxy("127.0.0.1", int(fake.base_url.rsplit(":", 1)[1])) as proxy,
    ):
        url = fake.alpaca_url.replace(fake.base_url, f"http://127.0.0.1:{proxy.port}")
        settings = load_settings(
            live={
                "sources": [
                    {
                        "type": "news",
                        "url": url,
                        "symbols": list(SYMBOLS),
                        "shape": "alpaca",
                        "poll_interval_s": POLL_S,
                        "timeout_s": TIMEOUT_S,
                        "overlap_s": OVERLAP_S,
                        "page_limit": PAGE,
                        "lookback_s": 60.0,
                        "max_rate": 1000.0,
                    }
                ]
            }
        )
        clock = WallClock()
        [source] = build_sources(settings, clock)
        assert isinstance(source, NewsSource)
        bus = InProcessBus()
        engine = IngestEngine(
            [source],
            clock=clock,
            backoff=Backoff(initial=0.005, maximum=0.02),
            stale_after_s=settings.live.stale_after_s,  # the source's own limit applies
        )
        take = engine.on_item

        async def tap(name: str, item: SourceItem) -> None:
            items[type(item).__name__] += 1
            if isinstance(item, NewsEvent):
                delivered.append(item.id)
            await take(name, item)

        monkeypatch.setattr(engine, "on_item", tap)

        async def on_news(envelope: Envelope) -> None:
            on_topics.append((getattr(envelope.payload, "id", "?"), envelope.topic))

        bus.consume("news.*", on_news, name="news-tap")
        await engine.start(bus)
        run = asyncio.create_task(engine.run())
        stop = asyncio.Event()
        feeder = asyncio.create_task(publish(fake, stop))
        try:
            seed = sum(map(ord, "news"))
            hits = await drive(
                proxy, fake, plan(FAULTS, seed=seed), seed, lambda: items["Heartbeat"]
            )
            # A quiet tail: the fake stops publishing, the source catches up.
            stop.set()
            await feeder
            want = {
                (str(a.id), f"news.{s}") for a in fake.articles for s in a.symbols if s in SYMBOLS
            }
            with contextlib.suppress(AssertionError):
                await until(lambda: want <= set(on_topics), 10.0, "the news to catch up")
            await bus.drain(timeout=10.0)
        finally:
            stop.set()
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
            await engine.stop()
            await asyncio.wait_for(run, 10.0)
            await bus.close()

    stats = engine.stats()["sources"][source.name]
    rejects: dict[str, int] = stats["rejects"]
    polls_failed = sum(n for reason, n in rejects.items() if reason in FAILED_POLL)
    seen = set(on_topics)
    lost_articles = {article for article, topic in want - seen}
    resent = len(delivered) - len(set(delivered))
    duplicated = resent + len(on_topics) - len(seen)
    late = sum(1 for a in fake.articles if a.id % LATE_EVERY == 0)
    detail = (
        f"{len(fake.articles)} articles published ({late} indexed late), "
        f"{len(set(delivered))} delivered by the source ({resent} more than once), "
        f"{engine.news} published by ingest; "
        f"{len(fake.requests)} requests, {items['Heartbeat']} polls ok, {polls_failed} polls "
        f"failed and retried by the next poll ({rejects.get(HTTP_TIMEOUT, 0)} timed out, "
        f"{rejects.get(HTTP_TRANSPORT, 0)} transport errors); {stats['reconnects']} source "
        f"restarts ({stats['stale']} stale); {time.monotonic() - started:.1f}s"
        + (f"; last error: {stats['last_error']}" if stats["last_error"] else "")
    )
    record(
        "faults",
        f"disconnect storm, news (HTTP polling): {hits['reset']} resets, {hits['stall']} "
        f"stalls, {hits['slow']} slow links",
        trials=sum(hits.values()),
        unit="faults",
        lost=len(lost_articles),
        duplicated=duplicated,
        failed=stats["reconnects"],
        failed_what="source crashes",
        detail=detail,
    )
    assert sum(hits.values()) == FAULTS, f"faults that hit a poll: {dict(hits)}"
    # The faults must have made polls fail, both ways, or the catch-up was not put to the test.
    assert rejects.get(HTTP_TIMEOUT, 0) > 0, f"no poll timed out: {detail}"
    assert rejects.get(HTTP_TRANSPORT, 0) > 0, f"no poll was reset: {detail}"
    assert (len(lost_articles), duplicated, stats["reconnects"]) == (0, 0, 0), detail
    assert not [r for r in rejects if r not in FAILED_POLL], detail
