"""The Polygon source under the multiplexer: cut connections and a hung server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from quantlab.adapters.polygon import PolygonDataConfig, PolygonDataSource
from quantlab.core.enums import EventType
from quantlab.ingest.items import Events, Heartbeat, SourceItem
from quantlab.ingest.multiplexer import Backoff, Multiplexer
from quantlab.testing.fakes.polygon import FakePolygon, trade_event

KEY = "test-key"
T0 = 1_700_000_000_000
SUBSCRIPTION = ["T.AAPL", "Q.AAPL"]


class Sink:
    def __init__(self) -> None:
        self.items: list[SourceItem] = []

    async def __call__(self, name: str, item: SourceItem) -> None:
        assert name == "polygon"
        self.items.append(item)

    def trade_ids(self) -> list[str]:
        return [
            tid
            for i in self.items
            if isinstance(i, Events) and i.kind is EventType.TRADE
            for tid in i.frame["trade_id"].to_list()
        ]


def source(fake: FakePolygon, **kw: object) -> PolygonDataSource:
    cfg = PolygonDataConfig(
        symbols=("AAPL",),
        channels=("T", "Q"),
        ws_url=fake.ws_url,
        close_timeout_s=0.2,
        **kw,  # type: ignore[arg-type]
    )
    return PolygonDataSource(cfg, api_key=KEY)


async def until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(mux: Multiplexer, sink: Sink):  # type: ignore[no-untyped-def]
    task = asyncio.create_task(mux.run(sink))
    try:
        yield task
    finally:
        mux.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_cut_mid_stream_reconnects_resubscribes_and_loses_nothing() -> None:
    async with FakePolygon(api_key=KEY, resend_last=10) as fake:
        mux = Multiplexer(
            [source(fake, heartbeat_interval_s=None)],
            backoff=Backoff(initial=0.01, maximum=0.05),
            stale_after_s=5.0,
            seed=1,
        )
        sink = Sink()
        async with running(mux, sink):
            await fake.wait_subscribed(1)
            for n in range(10):
                fake.send(trade_event("AAPL", 100.0 + n, 1, T0 + n, trade_id=f"a{n}"))
            await until(lambda: len(sink.trade_ids()) >= 5)
            fake.drop_connections()  # some of the ten may be in flight and lost: resent below
            for n in range(10):
                fake.send(trade_event("AAPL", 200.0 + n, 1, T0 + 100 + n, trade_id=f"b{n}"))
            sent = {f"a{n}" for n in range(10)} | {f"b{n}" for n in range(10)}
            await until(lambda: sent <= set(sink.trade_ids()))

            stats = mux.stats["polygon"]
            assert stats.reconnects == 1
            assert "SourceDisconnected" in stats.last_error
            assert fake.connections == 2
            assert fake.auths == [KEY, KEY]  # authenticated again...
            assert fake.subscriptions == [SUBSCRIPTION, SUBSCRIPTION]  # ...and resubscribed
            # The resent snapshot duplicates events; ingestion's dedup drops them later.
            assert len(sink.trade_ids()) > len(sent)

            fake.send(trade_event("AAPL", 300.0, 1, T0 + 1000, trade_id="c0"))
            await until(lambda: "c0" in sink.trade_ids())  # the stream goes on
            assert stats.connected


async def test_hung_server_is_detected_stale_and_reconnected() -> None:
    async with FakePolygon(api_key=KEY) as fake:
        mux = Multiplexer(
            [source(fake, heartbeat_interval_s=None)],
            backoff=Backoff(initial=0.01, maximum=0.05),
            stale_after_s=0.3,
        )
        sink = Sink()
        async with running(mux, sink):
            await fake.wait_subscribed(1)
            fake.send(trade_event("AAPL", 1.0, 1, T0, trade_id="before"))
            await until(lambda: "before" in sink.trade_ids())
            fake.go_silent()  # no data, no pongs, connection left open
            await fake.wait_subscribed(2)
            fake.send(trade_event("AAPL", 2.0, 1, T0 + 1, trade_id="after"))
            await until(lambda: "after" in sink.trade_ids())
            stats = mux.stats["polygon"]
            assert stats.stale >= 1
            assert stats.reconnects >= 1
            assert fake.auths[:2] == [KEY, KEY]


async def test_quiet_but_alive_server_is_kept_by_heartbeats() -> None:
    async with FakePolygon(api_key=KEY) as fake:
        mux = Multiplexer(
            [source(fake, heartbeat_interval_s=0.05)],
            backoff=Backoff(initial=0.01, maximum=0.05),
            stale_after_s=0.5,
        )
        sink = Sink()
        async with running(mux, sink):
            await fake.wait_subscribed(1)
            await asyncio.sleep(1.6)  # three stale windows without data
            stats = mux.stats["polygon"]
            assert (stats.stale, stats.reconnects) == (0, 0)
            assert sum(isinstance(i, Heartbeat) for i in sink.items) >= 5
            assert fake.connections == 1
