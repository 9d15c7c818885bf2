"""RedisStreamsBus against a real redis-server: what the shared bus suite does not cover.

The bus port's semantics are tested once, on both backends, by ``tests/unit/bus/test_bus.py``
(its `make_bus` fixture is parametrized over ``memory`` and ``redis``). The tests of that suite
marked ``in_process_only`` are skipped on Redis because the behaviour they check does not hold
between processes, on purpose:

- Fan-out by reference: payloads are encoded and every subscription decodes its own copy; only
  equality holds (``test_fan_out_copies_payloads`` here).
- Order: one stream per topic, so FIFO holds per topic, not across the topics of a pattern
  (``test_fifo_per_topic`` here).
- Publisher backpressure at a subscription's `maxsize`: a stream is a log, the publisher never
  waits on consumers in other processes; memory is bounded by ``maxlen`` trimming instead.
  `maxsize` still bounds what one consumer holds in flight
  (``test_a_pull_consumer_gets_at_most_maxsize_in_flight`` here).
- ``queued``/``outstanding`` count only what this bus instance holds locally (read from Redis,
  not handed out yet, or in flight), not the group's backlog in Redis (``test_stats_counts``).
- Dead letters are written to ``system.deadletter`` by a background flusher, so they are not
  visible within a ``get(timeout=0)`` right after the nack
  (``test_dead_letters_of_the_dead_letter_topic_are_not_republished`` here).
- Closing a subscription does not settle what it held: the group and its pending entries stay
  in Redis for the next consumer of that name (taken over after `ack_timeout`); `drain` only
  waits for groups that someone is subscribed to, and covers entries published through this
  bus instance. `settle` (the backtest's lock-step helper) has no Redis counterpart.

Here: those Redis versions, and what only a cross-process bus has: topic discovery across bus
instances, batched entries (`publish_many`), a poison message inside a batched entry read back
from the dead-letter stream by another bus, two bus instances as producer and consumer,
competing consumers of one group, and a consumer that dies (closed without acking, or a
subprocess killed with SIGKILL) whose pending messages another consumer takes over with
XAUTOCLAIM. The crash test (50 SIGKILLs, 100,000 messages) is
``tests/reliability/test_kill_bus_consumer.py``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

import pytest

from quantlab.adapters.redis import RedisStreamsBus, RedisSubscription
from quantlab.bus import DeadLetter, Envelope, topics
from quantlab.testing.redis_server import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.redis]

MakeRedisBus = Callable[..., RedisStreamsBus]  # the `make_bus` fixture (conftest.py)


async def pull_all(sub: RedisSubscription, *, wait: float = 0.3, ack: bool = True) -> list[Any]:
    got = []
    while (envelope := await sub.get(timeout=wait)) is not None:
        got.append(envelope.payload)
        if ack:
            sub.ack(envelope)
    return got


# -- the Redis versions of the in-process-only tests of the shared suite -------------------------


async def test_fan_out_copies_payloads(make_bus: MakeRedisBus) -> None:
    bus = make_bus(ack_timeout=5)
    a = bus.subscribe("orders.*", name="a")
    b = bus.subscribe("orders.*", name="b")
    payload = {"big": list(range(1000))}
    msg_id = await bus.publish("orders.new", payload)
    ea, eb = await a.get(timeout=1), await b.get(timeout=1)
    assert ea is not None
    assert eb is not None
    assert ea.payload == eb.payload == payload
    assert ea.payload is not payload  # across processes there is no by-reference delivery
    assert ea.id == eb.id == msg_id


async def test_fifo_per_topic(make_bus: MakeRedisBus) -> None:
    bus = make_bus(ack_timeout=5)
    odd = bus.subscribe("n.odd", name="odd")
    everything = bus.subscribe("n.*", name="all")
    for i in range(300):
        await bus.publish("n.odd" if i % 2 else "n.even", i)
    got = await pull_all(everything)
    assert sorted(got) == list(range(300))
    assert [i for i in got if i % 2 == 0] == list(range(0, 300, 2))  # in order per topic
    assert [i for i in got if i % 2] == list(range(1, 300, 2))
    assert await pull_all(odd) == list(range(1, 300, 2))


async def test_a_pull_consumer_gets_at_most_maxsize_in_flight(make_bus: MakeRedisBus) -> None:
    bus = make_bus(ack_timeout=10)
    sub = bus.subscribe("t.x", name="puller", maxsize=5)
    await bus.publish_many("t.x", list(range(8)))
    taken = []
    while (envelope := await sub.get(timeout=0.1)) is not None:
        taken.append(envelope)
    assert [e.payload for e in taken] == [0, 1, 2, 3, 4]
    assert sub.in_flight == 5
    sub.ack(taken[0])
    nxt = await sub.get(timeout=0.1)
    assert nxt is not None
    assert nxt.payload == 5
    assert await sub.get(timeout=0.1) is None
    assert sub.in_flight == 5


async def test_dead_letters_of_the_dead_letter_topic_are_not_republished(
    make_bus: MakeRedisBus,
) -> None:
    bus = make_bus()
    dead = bus.subscribe(topics.DEAD_LETTER, name="dlq", max_deliveries=1)
    sub = bus.subscribe("jobs.*", name="w", max_deliveries=1)
    await bus.publish("jobs.x", 1)
    envelope = await sub.get(timeout=1)
    assert envelope is not None
    sub.nack(envelope, "first")
    notice = await dead.get(timeout=2)
    assert notice is not None
    dead.nack(notice, "second")
    assert [d.reason for d in bus.dead_letters] == ["first", "second"]
    assert await dead.get(timeout=0.3) is None
    await bus.drain(timeout=2)


async def test_closing_a_consume_subscription_ends_its_task(make_bus: MakeRedisBus) -> None:
    bus = make_bus()

    async def handler(envelope: Envelope) -> None:
        pass

    sub = bus.consume("t.*", handler, name="c")
    [task] = [t for t in asyncio.all_tasks() if t.get_name() == "bus-consumer:c"]
    await sub.close()
    await asyncio.wait_for(asyncio.wait([task]), 1)  # returned or cancelled: either way, done
    assert task.done()


async def test_stats_counts(make_bus: MakeRedisBus) -> None:
    bus = make_bus()
    sub = bus.subscribe("t.*", name="s", ack_timeout=10, max_deliveries=2)
    for i in range(4):
        await bus.publish("t.x", i)
    await bus.publish("nowhere", 0)
    a = await sub.get(timeout=1)
    b = await sub.get(timeout=1)
    assert a is not None
    assert b is not None
    sub.ack(a)
    sub.nack(b)
    b = await sub.get(timeout=0)
    assert b is not None
    sub.nack(b)  # second delivery failed: dead letter
    stats = bus.stats()
    assert stats["published"] == 5
    assert stats["dead_letters"] == 1
    assert stats["outstanding"] == 2  # read by this consumer and not handed out yet
    assert stats["subscriptions"]["s"] == {
        "queued": 2,
        "in_flight": 0,
        "delivered": 3,
        "acked": 1,
        "redelivered": 1,
        "dead_lettered": 1,
    }


# -- topics, batched entries, dead letters through Redis -----------------------------------------


async def test_a_subscriber_on_another_bus_finds_topics_created_later(
    make_bus: MakeRedisBus,
) -> None:
    consumer, producer = make_bus(ack_timeout=5), make_bus()
    sub = consumer.subscribe("market.data.*", name="md")
    assert await sub.get(timeout=0.05) is None  # set up, nothing yet
    await producer.publish("market.data.quote.NEW", "first on a new stream")
    await producer.publish("orders.new", "not matched")
    got = await sub.get(timeout=2)  # found by polling the topic registry
    assert got is not None
    assert (got.topic, got.payload) == ("market.data.quote.NEW", "first on a new stream")
    sub.ack(got)
    await producer.drain(timeout=2)


async def test_fifo_through_a_consumer_task_with_batched_entries(make_bus: MakeRedisBus) -> None:
    bus = make_bus(batch_size=64)
    seen: list[int] = []

    async def handler(envelope: Envelope) -> None:
        seen.append(envelope.payload)

    bus.consume("n.*", handler, name="c", maxsize=8)
    await bus.publish_many("n.x", list(range(500)))
    for i in range(500, 600):
        await bus.publish("n.x", i)
    await bus.drain(timeout=5)
    assert seen == list(range(600))


async def test_poison_message_reaches_the_dead_letter_stream_and_the_rest_flows_on(
    make_bus: MakeRedisBus, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler that always raises on one event of a batched entry: after `max_deliveries`
    the event is on ``system.deadletter`` in Redis (read back by a subscription on another bus
    instance, with the error as the reason), and every message published after it is handled."""
    bus = make_bus(batch_size=100)
    observer = make_bus()  # another bus instance: reads the dead letter from Redis
    dead = observer.subscribe(topics.DEAD_LETTER, name="dlq")
    assert await dead.get(timeout=0.05) is None  # set up before the first letter
    handled: list[str] = []
    attempts: list[int] = []

    async def handler(envelope: Envelope) -> None:
        if envelope.payload == "poison":
            attempts.append(envelope.deliveries)
            raise ValueError(f"cannot handle {envelope.payload}")
        handled.append(envelope.payload)

    after = [f"after-{i}" for i in range(500)]
    with caplog.at_level(logging.WARNING, logger="quantlab.adapters.redis.bus"):
        sub = bus.consume("jobs.*", handler, name="worker", max_deliveries=3)
        await bus.publish_many(  # one entry, four events
            "jobs.x", ["a", "poison", "b", "c"], msg_ids=["id-a", "id-poison", "id-b", "id-c"]
        )
        await bus.publish_many("jobs.x", after)  # five more entries after it
        notice = await dead.get(timeout=5)
        assert notice is not None
        dead.ack(notice)
        await bus.drain(timeout=5)
        await observer.drain(timeout=5)

    assert handled == ["a", "b", "c", *after]  # the stream flowed on, in order
    assert attempts == [1, 2, 3]
    assert notice.topic == topics.DEAD_LETTER
    assert notice.id == "dl-id-poison-worker"
    letter = notice.payload
    assert isinstance(letter, DeadLetter)
    assert letter.subscription == "worker"
    assert letter.reason == "ValueError: cannot handle poison"
    assert letter.envelope.id == "id-poison"
    assert letter.envelope.topic == "jobs.x"
    assert letter.envelope.payload == "poison"
    assert letter.envelope.deliveries == 3
    assert list(bus.dead_letters) == [letter]
    assert not observer.dead_letters
    assert await dead.get(timeout=0.3) is None  # one letter only
    assert len(bus.handler_errors) == 3
    assert sub.dead_lettered == 1
    assert sub.acked == 3 + len(after)
    assert bus.stats()["handler_errors"] == 3
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 3
    assert "handler worker failed on jobs.x" in errors[0].getMessage()
    assert any("dead letter from worker" in r.getMessage() for r in caplog.records)


# -- across bus instances and processes ----------------------------------------------------------


async def test_two_buses_as_producer_and_consumer(make_bus: MakeRedisBus) -> None:
    consumer, producer = make_bus(), make_bus()
    seen: list[int] = []

    async def handler(envelope: Envelope) -> None:
        seen.append(envelope.payload)

    consumer.consume("n.*", handler, name="c")
    await asyncio.sleep(0.05)  # let the group be created before the first entry
    await producer.publish_many("n.x", list(range(1000)))
    await producer.drain(timeout=5)  # the producer sees the consumer's acknowledgements
    assert seen == list(range(1000))


async def test_competing_consumers_of_one_group_share_the_work(make_bus: MakeRedisBus) -> None:
    producer = make_bus(batch_size=1)
    got: dict[str, list[int]] = {"a": [], "b": []}

    def handler_for(who: str) -> Any:
        async def handler(envelope: Envelope) -> None:
            got[who].append(envelope.payload)
            await asyncio.sleep(0.001)

        return handler

    make_bus().consume("w.*", handler_for("a"), name="workers", maxsize=4)
    make_bus().consume("w.*", handler_for("b"), name="workers", maxsize=4)
    await asyncio.sleep(0.05)
    await producer.publish_many("w.x", list(range(400)))
    await producer.drain(timeout=10)
    assert sorted(got["a"] + got["b"]) == list(range(400))  # each exactly once
    assert got["a"]
    assert got["b"]


async def test_a_consumer_closed_without_acking_is_taken_over(make_bus: MakeRedisBus) -> None:
    producer = make_bus()
    dying = make_bus().subscribe("j.*", name="workers", ack_timeout=0.3)
    survivor = make_bus().subscribe("j.*", name="workers", ack_timeout=0.3)
    assert await survivor.get(timeout=0.05) is None  # both set up
    await producer.publish_many("j.x", list(range(10)))
    held = [await dying.get(timeout=1) for _ in range(3)]
    assert all(e is not None for e in held)
    await dying._bus.close()  # "crashes": nothing acked
    got = await pull_all(survivor, wait=1.0)
    assert sorted(got) == list(range(10))
    await producer.drain(timeout=2)


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from quantlab.adapters.redis import RedisStreamsBus

    async def main(url, namespace):
        bus = RedisStreamsBus(url, namespace=namespace)
        sub = bus.subscribe("k.*", name="workers", ack_timeout=0.5)
        await sub.get(timeout=0.05)
        print("ready", flush=True)
        n = 0
        while n < 20:
            if await sub.get(timeout=1) is not None:
                n += 1
        print("holding", flush=True)
        await asyncio.sleep(60)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_a_killed_consumer_process_loses_nothing(
    make_bus: MakeRedisBus, redis_server: RedisServer, namespace: str
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, redis_server.url, namespace],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    try:
        assert child.stdout is not None
        line = await asyncio.to_thread(child.stdout.readline)
        assert line.strip() == b"ready"
        producer = make_bus()
        await producer.publish_many("k.x", list(range(50)), msg_ids=[f"k{i}" for i in range(50)])
        line = await asyncio.to_thread(child.stdout.readline)
        assert line.strip() == b"holding"  # 20 delivered to the child, none acked
        child.send_signal(signal.SIGKILL)
        await asyncio.to_thread(child.wait, 5)

        survivor = make_bus().subscribe("k.*", name="workers", ack_timeout=0.5)
        got = await pull_all(survivor, wait=1.5)
        assert sorted(got) == list(range(50))  # the child's 20 taken over after ack_timeout
        await producer.drain(timeout=2)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
        if child.stdout is not None:
            child.stdout.close()


async def test_throughput_between_two_buses(make_bus: MakeRedisBus) -> None:
    consumer, producer = make_bus(), make_bus(batch_size=500)
    n = 20_000
    count = 0
    done = asyncio.Event()

    async def handler(envelope: Envelope) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    consumer.consume("tp.*", handler, name="tp")
    await asyncio.sleep(0.05)
    start = time.perf_counter()
    for i in range(0, n, 2000):
        await producer.publish_many("tp.x", [{"i": j, "px": 100.0 + j} for j in range(i, i + 2000)])
    await asyncio.wait_for(done.wait(), 30)
    elapsed = time.perf_counter() - start
    await producer.drain(timeout=5)
    rate = n / elapsed
    print(f"\nredis bus throughput: {rate:,.0f} events/s ({n} events in {elapsed:.2f}s)")
    assert rate > 2_000
