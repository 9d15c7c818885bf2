"""`InProcessBus(urgent=...)`: the order path's consumers go before the other consumers."""

from __future__ import annotations

import asyncio
import time

import pytest

from quantlab.bus import InProcessBus
from quantlab.bus.base import Envelope
from quantlab.core.errors import BusError


async def chain(bus: InProcessBus, done: list[str], batches: int = 3) -> None:
    """market.data -> features (publishes features) -> strategies; and a slow market-data
    consumer ("costs") that sees every batch too."""

    async def features(env: Envelope) -> None:
        done.append(f"features {env.payload}")
        await bus.publish("features", env.payload)

    async def strategies(env: Envelope) -> None:
        done.append(f"strategies {env.payload}")

    async def costs(env: Envelope) -> None:
        time.sleep(0.001)  # a market-data handler's own work
        done.append(f"costs {env.payload}")

    bus.consume("market.data.bar", features, name="features")
    bus.consume("market.data.bar", costs, name="costs")
    bus.consume("features", strategies, name="strategies")
    await asyncio.sleep(0)
    for k in range(batches):
        await bus.publish("market.data.bar", k)
        await bus.drain(timeout=5)


async def test_the_urgent_consumers_chain_runs_before_the_other_consumers() -> None:
    done: list[str] = []
    bus = InProcessBus(urgent=("features", "strategies"))
    await chain(bus, done)
    await bus.close()
    assert done == [f"{who} {k}" for k in range(3) for who in ("features", "strategies", "costs")]
    assert bus.deferred == 3


async def test_without_urgent_consumers_they_take_turns_in_message_order() -> None:
    done: list[str] = []
    bus = InProcessBus()
    await chain(bus, done)
    await bus.close()
    assert done == [f"{who} {k}" for k in range(3) for who in ("features", "costs", "strategies")]
    assert bus.deferred == 0


async def test_a_consumer_waits_for_urgent_work_at_most_urgent_defer_s() -> None:
    bus = InProcessBus(urgent=("venue",), urgent_defer_s=0.05)
    done: list[tuple[str, float]] = []
    t0 = time.perf_counter()

    async def venue(env: Envelope) -> None:  # urgent, but waits on I/O for a long time
        await asyncio.sleep(1.0)
        done.append(("venue", time.perf_counter() - t0))

    async def monitor(env: Envelope) -> None:
        done.append(("monitor", time.perf_counter() - t0))

    bus.consume("a", venue, name="venue")
    bus.consume("a", monitor, name="monitor")
    await asyncio.sleep(0)
    await bus.publish("a", 1)
    await bus.drain(timeout=5)
    await bus.close()
    assert [who for who, _ in done] == ["monitor", "venue"]
    assert 0.04 <= done[0][1] < 0.5
    # the wait is not the monitor's own handling time
    assert bus.latency.summary()["monitor"]["max_ms"] < 40


def test_urgent_defer_s_must_be_positive() -> None:
    with pytest.raises(BusError, match="urgent_defer_s must be > 0 seconds, got 0"):
        InProcessBus(urgent=("x",), urgent_defer_s=0)


async def test_urgent_work_holds_the_others_back_once_not_on_every_message() -> None:
    bus = InProcessBus(urgent=("venue",), urgent_defer_s=0.05)
    handled: list[float] = []
    t0 = time.perf_counter()

    async def venue(env: Envelope) -> None:
        await asyncio.sleep(1.0)

    async def monitor(env: Envelope) -> None:
        handled.append(time.perf_counter() - t0)

    bus.consume("a", venue, name="venue")
    bus.consume("b", monitor, name="monitor")
    await asyncio.sleep(0)
    await bus.publish("a", 1)
    for k in range(20):
        await bus.publish("b", k)
    await bus.drain(timeout=5)
    await bus.close()
    assert len(handled) == 20
    assert handled[-1] < 0.5  # not 20 x 50 ms: the venue's wait began one episode
    assert bus.deferred == 1
