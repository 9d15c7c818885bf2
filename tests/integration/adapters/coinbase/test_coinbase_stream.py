"""`CoinbaseDataSource` (native websockets client) against the local fake Coinbase server."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import polars as pl
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from quantlab.adapters.coinbase import CoinbaseDataConfig, CoinbaseDataSource
from quantlab.core.enums import Aggressor, EventType
from quantlab.ingest.items import (
    MALFORMED_JSON,
    MAX_FRAME_BYTES,
    OVERSIZED_FRAME,
    TRUNCATED_FRAME,
    UNKNOWN_MESSAGE,
    UNKNOWN_SYMBOL,
    WRONG_TYPE,
    Events,
    Heartbeat,
    Reject,
    SourceItem,
)
from quantlab.ingest.multiplexer import Backoff, Multiplexer
from quantlab.ingest.ports import MarketDataSource, SourceDisconnected
from quantlab.testing.fakes.coinbase import FakeCoinbase

T0 = 1_700_000_000_000_000_000
ALL_SUBSCRIBES = [
    ("subscribe", "ticker", ("BTC-USD", "ETH-USD")),
    ("subscribe", "market_trades", ("BTC-USD", "ETH-USD")),
    ("subscribe", "level2", ("BTC-USD", "ETH-USD")),
    ("subscribe", "heartbeats", ()),
]


@pytest.fixture
async def fake() -> AsyncIterator[FakeCoinbase]:
    async with FakeCoinbase(products=("BTC-USD", "ETH-USD"), heartbeat_interval_s=0.05) as f:
        yield f


def source_for(fake: FakeCoinbase, **kwargs: Any) -> CoinbaseDataSource:
    config = CoinbaseDataConfig(
        symbols=("BTC/USD", "ETH/USD"), ws_url=fake.ws_url, rest_url=fake.rest_url
    )
    return CoinbaseDataSource(config, **kwargs)


class Run:
    """A Multiplexer over one source, collecting every item in a background task."""

    def __init__(self, source: CoinbaseDataSource, *, stale_after_s: float = 5.0) -> None:
        self.source = source
        self.mux = Multiplexer(
            [source], backoff=Backoff(initial=0.01, maximum=0.05), stale_after_s=stale_after_s
        )
        self.items: list[SourceItem] = []
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Run:
        async def sink(name: str, item: SourceItem) -> None:
            self.items.append(item)

        self.task = asyncio.create_task(self.mux.run(sink))
        return self

    async def __aexit__(self, *exc: object) -> None:
        # stop() takes effect at the next item; heartbeats bring one within 0.1 s
        self.mux.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)

    @property
    def stats(self) -> Any:
        return self.mux.stats[self.source.name]

    def frame(self, kind: EventType) -> pl.DataFrame:
        frames = [i.frame for i in self.items if isinstance(i, Events) and i.kind == kind]
        return pl.concat(frames) if frames else pl.DataFrame()

    def trade_ids(self) -> list[str]:
        frame = self.frame(EventType.TRADE)
        return frame["trade_id"].to_list() if frame.height else []

    def rejects(self) -> list[Reject]:
        return [i for i in self.items if isinstance(i, Reject)]


async def until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_subscribes_and_streams_quotes_trades_book_and_heartbeats(
    fake: FakeCoinbase,
) -> None:
    tokens = iter(f"jwt-{i}" for i in range(100))
    source = source_for(fake, jwt=lambda: next(tokens))
    assert isinstance(source, MarketDataSource)
    assert source.asset_class == "crypto"
    fake.ticker("BTC-USD", 100.0, 100.5, 2.0, 3.0, ts_ns=T0)
    fake.trade("ETH-USD", "t-1", 2000.0, 0.5, "BUY", ts_ns=T0 + 1)
    fake.trade("ETH-USD", "t-2", 1999.5, 0.25, "SELL", ts_ns=T0 + 2)
    fake.l2("BTC-USD", [("bid", 99.0, 1.0), ("offer", 101.0, 4.0)], ts_ns=T0 + 3)
    fake.l2("BTC-USD", [("bid", 99.5, 0.5)], ts_ns=T0 + 4)
    async with Run(source) as run:
        await until(lambda: len(run.trade_ids()) == 2 and run.frame(EventType.QUOTE).height == 3)
        await until(lambda: any(isinstance(i, Heartbeat) for i in run.items))
    assert fake.subscriptions(1) == ALL_SUBSCRIBES
    sent = [m for _, m in fake.received]
    assert [m["jwt"] for m in sent] == [f"jwt-{i}" for i in range(4)]
    assert "jwt-" not in repr(source)
    quotes = run.frame(EventType.QUOTE).with_columns(pl.col("timestamp").cast(pl.Int64))
    assert quotes.rows() == [
        ("BTC/USD", T0, 100.0, 100.5, 2.0, 3.0),  # ticker
        ("BTC/USD", T0 + 3, 99.0, 101.0, 1.0, 4.0),  # level2: top of book
        ("BTC/USD", T0 + 4, 99.5, 101.0, 0.5, 4.0),
    ]
    trades = run.frame(EventType.TRADE).with_columns(pl.col("timestamp").cast(pl.Int64))
    assert trades.rows() == [
        ("ETH/USD", T0 + 1, 2000.0, 0.5, Aggressor.BUYER, "t-1"),
        ("ETH/USD", T0 + 2, 1999.5, 0.25, Aggressor.SELLER, "t-2"),
    ]
    assert run.stats.reconnects == 0
    assert run.rejects() == []


async def test_bad_frames_become_rejects_and_the_stream_continues(fake: FakeCoinbase) -> None:
    good = {"channel": "ticker", "timestamp": "2024-01-01T00:00:00Z", "events": []}
    fake.send_raw("{not json")
    fake.send_raw('{"channel": "ticker", "events": [')
    fake.send_raw(json.dumps({**good, "pad": "x" * (2 * MAX_FRAME_BYTES)}))  # 2 MiB
    fake.send_raw(json.dumps({**good, "events": 5}))
    bad_price = {"product_id": "BTC-USD", "best_bid": "abc", "best_ask": "1"}
    bad_price |= {"best_bid_quantity": "1", "best_ask_quantity": "1"}
    fake.send_raw(json.dumps({**good, "events": [{"type": "update", "tickers": [bad_price]}]}))
    doge = {**bad_price, "product_id": "DOGE-USD", "best_bid": "0.1"}
    fake.send_raw(json.dumps({**good, "events": [{"type": "update", "tickers": [doge]}]}))
    fake.send_raw(json.dumps({**good, "channel": "level3"}))
    fake.send_raw(b"\x81\xa1T\xa1q")  # a binary (msgpack) frame
    fake.trade("BTC-USD", "after", 100.0, 1.0, ts_ns=T0)
    async with Run(source_for(fake)) as run:
        await until(lambda: run.trade_ids() == ["after"])
    assert run.stats.rejects == {
        MALFORMED_JSON: 2,
        TRUNCATED_FRAME: 1,
        OVERSIZED_FRAME: 1,
        WRONG_TYPE: 2,
        UNKNOWN_SYMBOL: 1,
        UNKNOWN_MESSAGE: 1,
    }
    assert run.stats.reconnects == 0


async def test_a_sequence_gap_resubscribes_and_the_snapshot_heals_the_book(
    fake: FakeCoinbase,
) -> None:
    source = source_for(fake)
    fake.l2("BTC-USD", [("bid", 99.0, 1.0), ("offer", 101.0, 1.0)], ts_ns=T0)
    async with Run(source) as run:
        await until(lambda: run.frame(EventType.QUOTE).height == 1)
        fake.lose_next(1)
        fake.l2("BTC-USD", [("bid", 100.0, 2.0)], ts_ns=T0 + 1)  # lost: a new best bid
        fake.trade("BTC-USD", "1", 100.0, 1.0, ts_ns=T0 + 2)  # its sequence_num shows the gap
        await until(lambda: run.frame(EventType.QUOTE).height == 2)
        fake.l2("BTC-USD", [("offer", 100.5, 3.0)], ts_ns=T0 + 3)
        await until(lambda: run.frame(EventType.QUOTE).height == 3)
    assert source.gaps == 1
    assert source.missed_messages == 1
    assert source.resubscribes == 1
    resubscribed = fake.subscriptions(1)[len(ALL_SUBSCRIBES) :]
    data = [c for _, c, _ in ALL_SUBSCRIBES if c != "heartbeats"]
    assert resubscribed == [
        *[("unsubscribe", c, ("BTC-USD", "ETH-USD")) for c in data],
        *[("subscribe", c, ("BTC-USD", "ETH-USD")) for c in data],
    ]
    quotes = run.frame(EventType.QUOTE)
    # the snapshot after the resubscribe holds the lost bid; later updates apply on top
    assert [r[2:] for r in quotes.rows()] == [
        (99.0, 101.0, 1.0, 1.0),
        (100.0, 101.0, 2.0, 1.0),
        (100.0, 100.5, 2.0, 3.0),
    ]
    assert run.trade_ids() == ["1"]
    assert run.stats.reconnects == 0
    assert fake.connections == 1


async def test_an_oversized_update_is_a_gap_healed_by_a_deep_snapshot(fake: FakeCoinbase) -> None:
    source = source_for(fake)
    deep = [("bid", 50_000 - i * 0.01, 0.5) for i in range(12_000)]
    async with Run(source) as run:
        fake.l2("BTC-USD", [*deep, ("offer", 50_001.0, 2.0)], ts_ns=T0)  # ~1.3 MB
        await until(lambda: run.frame(EventType.QUOTE).height == 1)
    # the update frame is over the limit: rejected, so its sequence_num is missing; the
    # resubscribe brings a snapshot of the same size, which is accepted and builds the book
    assert run.stats.rejects == {OVERSIZED_FRAME: 1}
    assert source.gaps == 1
    assert [r[2:] for r in run.frame(EventType.QUOTE).rows()] == [(50_000.0, 50_001.0, 0.5, 2.0)]
    assert run.stats.reconnects == 0


async def test_a_dropped_connection_reconnects_resubscribes_and_loses_nothing() -> None:
    async with FakeCoinbase(products=("BTC-USD", "ETH-USD"), resend_last=2) as fake:
        for i in range(5):
            fake.trade("BTC-USD", f"a{i}", 100.0 + i, 1.0, ts_ns=T0 + i)
        async with Run(source_for(fake)) as run:
            await until(lambda: len(run.trade_ids()) == 5)
            fake.drop_connections()
            for i in range(5):
                fake.trade("ETH-USD", f"b{i}", 2000.0 + i, 1.0, ts_ns=T0 + 10 + i)
            await until(lambda: {f"b{i}" for i in range(5)} <= set(run.trade_ids()))
            fake.ticker("BTC-USD", 1.0, 2.0)
            await until(lambda: run.frame(EventType.QUOTE).height == 1)  # and it goes on
        assert run.stats.reconnects == 1
        assert fake.connections == 2
        assert fake.subscriptions(2) == ALL_SUBSCRIBES
        ids = run.trade_ids()
        assert set(ids) == {f"a{i}" for i in range(5)} | {f"b{i}" for i in range(5)}
        assert ids.count("a3") == ids.count("a4") == 2  # resent after the reconnect
        assert len(ids) == 12


async def test_a_silent_server_is_detected_as_stale_and_reconnected(fake: FakeCoinbase) -> None:
    async with Run(source_for(fake), stale_after_s=0.3) as run:
        await until(lambda: any(isinstance(i, Heartbeat) for i in run.items))
        fake.go_silent()
        await until(lambda: run.stats.stale >= 1 and fake.connections >= 2)
        fake.resume()
        fake.trade("BTC-USD", "back", 100.0, 1.0, ts_ns=T0)
        await until(lambda: run.trade_ids() == ["back"])
    assert run.stats.reconnects >= 1
    assert "no message or heartbeat" in run.stats.last_error


async def test_a_refused_subscription_is_a_reject(fake: FakeCoinbase) -> None:
    channels = ("ticker", "heartbeats")
    config = CoinbaseDataConfig(symbols=("SOL/USD",), ws_url=fake.ws_url, channels=channels)
    async with Run(CoinbaseDataSource(config)) as run:
        await until(lambda: len(run.rejects()) == 1)
    assert run.rejects()[0].reason == UNKNOWN_MESSAGE
    assert "Failure to subscribe" in run.rejects()[0].detail


async def test_no_server_is_a_source_disconnected() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = CoinbaseDataConfig(symbols=("BTC/USD",), ws_url=f"ws://127.0.0.1:{port}")
    with pytest.raises(SourceDisconnected, match="cannot connect"):
        await anext(aiter(CoinbaseDataSource(config).stream()))


async def test_the_fake_disconnects_a_client_that_never_subscribes() -> None:
    async with FakeCoinbase(subscribe_timeout_s=0.2) as fake, connect(fake.ws_url) as ws:
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 5)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1008
