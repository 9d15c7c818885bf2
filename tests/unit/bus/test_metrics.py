"""Per-stage latency sketches, and the bus timing its consumers."""

from __future__ import annotations

import asyncio
import math

import pytest

from quantlab.bus.memory import InProcessBus
from quantlab.bus.metrics import STAGES, LatencyRecorder, LatencySketch


def test_sketch_quantiles_match_the_exact_ones_within_the_rank_error() -> None:
    s = LatencySketch()
    values = [i / 10_000 for i in range(10_000)]  # 0 .. 1 s, uniform
    for v in values:
        s.update(v)
    assert s.count == 10_000
    for q in (0.5, 0.95, 0.99):
        assert abs(s.quantile(q) - q) < 0.02
    summary = s.summary()
    assert summary["max_ms"] == pytest.approx(999.9)
    assert summary["mean_ms"] == pytest.approx(499.95)


def test_an_empty_sketch_says_nan_and_bad_quantiles_are_refused() -> None:
    s = LatencySketch()
    assert math.isnan(s.quantile(0.5))
    with pytest.raises(ValueError, match="quantile must be in"):
        s.quantile(1.5)


def test_stages_are_judged_against_their_budget() -> None:
    rec = LatencyRecorder()
    for _ in range(100):
        rec.record("risk", 0.0002)  # 0.2 ms: within 1 ms goal and 10 ms spec
        rec.record("strategies", 0.020)  # 20 ms: within the 50 ms spec, not the 5 ms goal
    rows = {r["consumer"]: r for r in rec.stages()}
    assert set(rows) == {s.consumer for s in STAGES}
    assert rows["risk"]["within_goal"] is True
    assert rows["strategies"]["within_spec"] is True
    assert rows["strategies"]["within_goal"] is False
    assert rows["features"]["count"] == 0
    assert rows["features"]["within_spec"] is None


async def test_the_bus_times_each_consumer_without_its_settle_waits() -> None:
    bus = InProcessBus()

    async def slow(_env: object) -> None:
        await asyncio.sleep(0.02)

    async def settling(_env: object) -> None:
        await bus.publish("orders.new", "x")
        await bus.settle()  # waits ~20 ms for `slow`: not its own time

    bus.consume("orders.new", slow, name="slow")
    bus.consume("signals.s", settling, name="settling")
    await bus.publish("signals.s", "go")
    await bus.drain(timeout=5)
    await bus.close()
    lat = bus.latency.sketches
    assert lat["slow"].count == 1
    assert lat["slow"].quantile(0.5) >= 0.019
    assert lat["settling"].count == 1
    assert lat["settling"].quantile(0.5) < 0.015


async def test_payloads_that_carry_their_arrival_time_record_the_time_since_the_data() -> None:
    import time

    from quantlab.core.messages import FeatureBatch

    bus = InProcessBus()
    try:

        async def handle(_: object) -> None:
            return None

        bus.consume("features", handle, name="strategies")
        bus.consume("plain", handle, name="other")
        frame_received = time.time_ns() - 30_000_000  # the data arrived 30 ms ago
        import polars as pl

        batch = FeatureBatch(
            spec="s", version="1", frame=pl.DataFrame(), seq=0, ts_max=0, ts_recv=frame_received
        )
        await bus.publish("features", batch)
        await bus.publish("plain", {"x": 1})
        await bus.drain(timeout=5)
        since = bus.latency.since_data_summary()
        assert set(since) == {"strategies"}  # only payloads with an arrival time
        assert since["strategies"]["count"] == 1
        assert 30 <= since["strategies"]["p50_ms"] < 1000
        assert set(bus.latency.summary()) == {"strategies", "other"}
    finally:
        await bus.close()
