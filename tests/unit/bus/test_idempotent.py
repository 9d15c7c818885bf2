"""IdempotentConsumer: at-least-once delivery, exactly-once effect."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from quantlab.bus import Envelope, IdempotentConsumer, InProcessBus
from quantlab.core.errors import BusError


@pytest.fixture
async def bus() -> AsyncIterator[InProcessBus]:
    bus = InProcessBus(ack_timeout=0.05, max_deliveries=5)
    yield bus
    await bus.close()


def envelope(msg_id: str, payload: object = None, deliveries: int = 1) -> Envelope:
    return Envelope(
        id=msg_id, topic="t.x", payload=payload, ts_publish=time.time_ns(), deliveries=deliveries
    )


class Ledger:
    """A handler whose effect is visible: it books every payload it is given."""

    def __init__(self) -> None:
        self.effects: Counter[object] = Counter()
        self.calls = 0

    async def __call__(self, env: Envelope) -> None:
        self.calls += 1
        self.effects[env.payload] += 1


async def test_redelivered_messages_take_effect_once(bus: InProcessBus) -> None:
    # The consumer handles every message but "loses" the first ack, so the bus redelivers
    # after ack_timeout; the second delivery must be recognised and skipped.
    sub = bus.subscribe("orders.*", name="tracker", ack_timeout=0.05)
    ledger = Ledger()
    consumer = IdempotentConsumer(ledger)
    for i in range(20):
        await bus.publish("orders.filled", i)

    deliveries: Counter[object] = Counter()
    while (env := await sub.get(timeout=0.3)) is not None:
        deliveries[env.payload] += 1
        await consumer(env)
        if env.deliveries > 1:
            sub.ack(env)

    assert deliveries == Counter({i: 2 for i in range(20)})  # delivered twice ...
    assert ledger.effects == Counter({i: 1 for i in range(20)})  # ... applied once
    assert consumer.duplicates == 20
    assert sub.redelivered == 20
    await bus.drain(timeout=1)


async def test_duplicate_publishes_with_one_msg_id_take_effect_once(bus: InProcessBus) -> None:
    # A producer that retries a publish reuses the message id.
    ledger = Ledger()
    consumer = IdempotentConsumer(ledger)
    sub = bus.consume("fills.*", consumer, name="settlement")
    for i in range(30):
        await bus.publish("fills.x", f"fill-{i}", msg_id=f"fill-{i}")
        await bus.publish("fills.x", f"fill-{i}", msg_id=f"fill-{i}")  # immediate retry
    for i in range(0, 30, 3):
        await bus.publish("fills.x", f"fill-{i}", msg_id=f"fill-{i}")  # late replay
    await bus.drain(timeout=2)

    assert sub.delivered == 70
    assert sub.acked == 70  # duplicates are acknowledged too, never redelivered
    assert ledger.effects == Counter({f"fill-{i}": 1 for i in range(30)})
    assert consumer.duplicates == 40
    assert all(consumer.seen(f"fill-{i}") for i in range(30))


async def test_a_failed_handling_is_not_remembered(bus: InProcessBus) -> None:
    attempts: list[int] = []
    effects: list[object] = []

    async def fails_first(env: Envelope) -> None:
        attempts.append(env.deliveries)
        if env.deliveries == 1:
            raise RuntimeError("database busy")
        effects.append(env.payload)

    consumer = IdempotentConsumer(fails_first)
    bus.consume("jobs.*", consumer, name="w", max_deliveries=3)
    msg_id = await bus.publish("jobs.x", "job")
    await bus.drain(timeout=1)

    assert attempts == [1, 2]  # the failure did not mark the id as done ...
    assert effects == ["job"]  # ... so the retry took effect, once
    assert consumer.seen(msg_id)
    assert consumer.duplicates == 0
    assert len(bus.handler_errors) == 1


async def test_the_window_evicts_the_oldest_ids() -> None:
    ledger = Ledger()
    consumer = IdempotentConsumer(ledger, window=3)
    for msg_id in ("a", "b", "c", "d"):
        await consumer(envelope(msg_id, msg_id))

    assert not consumer.seen("a")  # evicted: the oldest
    assert all(consumer.seen(m) for m in ("b", "c", "d"))

    await consumer(envelope("c", "c", deliveries=2))  # still in the window: skipped
    assert consumer.duplicates == 1
    await consumer(envelope("a", "a", deliveries=2))  # out of the window: applied again
    assert ledger.effects == Counter({"a": 2, "b": 1, "c": 1, "d": 1})
    assert not consumer.seen("b")  # "a" came back in, pushing out the next oldest


async def test_the_window_stays_bounded() -> None:
    consumer = IdempotentConsumer(Ledger(), window=50)
    for i in range(1000):
        await consumer(envelope(f"m{i}", i))
    assert sum(consumer.seen(f"m{i}") for i in range(1000)) == 50
    assert all(consumer.seen(f"m{i}") for i in range(950, 1000))


@pytest.mark.parametrize("window", [0, -5])
def test_window_must_be_positive(window: int) -> None:
    async def handler(env: Envelope) -> None:
        pass

    with pytest.raises(BusError, match=rf"window must be >= 1, got {window}"):
        IdempotentConsumer(handler, window=window)


async def test_a_redelivery_during_slow_first_handling_takes_effect_once(
    bus: InProcessBus,
) -> None:
    sub = bus.subscribe("jobs.*", name="pool", ack_timeout=0.05)
    effects: list[object] = []

    async def slow_first(env: Envelope) -> None:
        if env.deliveries == 1:
            await asyncio.sleep(0.15)  # longer than ack_timeout: the bus redelivers meanwhile
        effects.append(env.payload)

    consumer = IdempotentConsumer(slow_first)

    async def worker() -> None:
        while (env := await sub.get(timeout=0.3)) is not None:
            await consumer(env)
            sub.ack(env)

    await bus.publish("jobs.x", "job")
    await asyncio.wait_for(asyncio.gather(worker(), worker()), 2)
    assert effects == ["job"]
