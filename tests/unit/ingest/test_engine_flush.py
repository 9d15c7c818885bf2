"""The live path's time flush: a row waits one `flush_ms` for its batch, not one per batcher;
the batch carries when its oldest row arrived (the start of the data -> order latency)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator

import polars as pl
import pytest

from quantlab.bus import InProcessBus
from quantlab.bus.base import Envelope
from quantlab.core.clock import Clock, SimulatedClock, WallClock
from quantlab.core.enums import EventType
from quantlab.core.messages import MarketBatch
from quantlab.core.schemas import QUOTE_SCHEMA
from quantlab.ingest import IngestEngine
from quantlab.ingest.items import Events
from quantlab.ingest.quality import QualityConfig
from quantlab.testing.sources import NoSource


def quotes(n: int, at: dt.datetime) -> Events:
    frame = pl.DataFrame(
        {
            "symbol": ["BTC/USD"] * n,
            "timestamp": [at + dt.timedelta(milliseconds=i) for i in range(n)],
            "bid": [100.0] * n,
            "ask": [100.1] * n,
            "bid_size": [1.0] * n,
            "ask_size": [1.0] * n,
        },
        schema=QUOTE_SCHEMA,
    )
    return Events(EventType.QUOTE, frame)


async def engine_on(clock: Clock) -> tuple[IngestEngine, list[MarketBatch], InProcessBus]:
    bus = InProcessBus()
    got: list[MarketBatch] = []

    async def collect(envelope: Envelope) -> None:
        got.append(envelope.payload)

    bus.consume("market.data.quote", collect, name="collect")
    engine = IngestEngine(
        [NoSource("test")],
        clock=clock,
        batch_size=1000,
        flush_ms=5.0,
        quality=QualityConfig(max_future_s=None, max_age_s=None),
    )
    await engine.start(bus)
    return engine, got, bus


@pytest.fixture
async def wall() -> AsyncIterator[tuple[IngestEngine, list[MarketBatch], InProcessBus]]:
    engine, got, bus = await engine_on(WallClock())
    yield engine, got, bus
    await bus.close()


async def test_rows_wait_one_flush_time_in_all(
    wall: tuple[IngestEngine, list[MarketBatch], InProcessBus],
) -> None:
    engine, got, bus = wall
    before = time.time_ns()
    await engine.on_item("test", quotes(3, dt.datetime.now(dt.UTC)))
    await engine.flush(due_only=True)
    await bus.drain(timeout=1)
    assert got == []  # not due yet
    await asyncio.sleep(0.006)  # one flush_ms (5 ms) has passed
    await engine.flush(due_only=True)  # one pass: checked and published, not held again
    await bus.drain(timeout=1)
    assert [b.frame.height for b in got] == [3]
    assert before <= got[0].ts_recv <= time.time_ns()


async def test_replayed_data_carries_no_arrival_time() -> None:
    engine, got, bus = await engine_on(SimulatedClock(1_700_000_000_000_000_000))
    try:
        await engine.on_item("test", quotes(2, dt.datetime(2023, 11, 14, tzinfo=dt.UTC)))
        await engine.flush()
        await bus.drain(timeout=1)
        assert [b.ts_recv for b in got] == [0]
    finally:
        await bus.close()
