"""RedisStreamsBus against a real redis-server: the in-process bus's behaviours, across processes.

The semantic tests of ``tests/unit/bus/test_bus.py`` that make sense between processes are
repeated here against `RedisStreamsBus` (same `make_bus` fixture shape, see ``conftest.py``):
routing and wildcards, envelope fields, FIFO per subscription, ack / nack / redelivery after
`ack_timeout`, dead letters after `max_deliveries` with the reason, a poison message
dead-lettered while the rest flows on, a handler that fails once, drain, close, stats and
duplicate ids. Plus what only a cross-process bus has: two bus instances as producer and
consumer, competing consumers of one group, and a consumer that dies (closed without acking, or
a subprocess killed with SIGKILL) whose pending messages another consumer takes over.

Behaviours of the in-process bus that do not hold here, on purpose:

- Fan-out by reference (``test_one_message_fans_out_by_reference``): payloads are encoded and
  every subscription decodes its own copy; only equality holds.
- Publisher backpressure at a subscription's `maxsize` (``test_backpressure_*``,
  ``test_a_slow_subscription_holds_back_its_publishers``, ``test_closing_releases_a_blocked_
  publisher``, ``test_subscription_closed_during_a_blocked_publish_does_not_leak``,
  ``test_a_full_dead_letter_subscription_does_not_block_the_stream``): a stream is a log, the
  publisher never waits on consumers in other processes; memory is bounded by ``maxlen``
  trimming instead. `maxsize` still bounds what one consumer holds in flight.
- ``queued``/``outstanding`` count only what this bus instance holds locally (read from Redis,
  not handed out yet, or in flight), not the group's backlog in Redis (stats are synchronous).
- Closing a subscription does not settle what it held: the group and its pending entries stay
  in Redis for the next consumer of that name (taken over after `ack_timeout`); `drain` only
  waits for groups that someone is subscribed to.
- `drain` covers entries published through this bus instance; `settle` (the backtest's
  lock-step helper) has no Redis counterpart.
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
from quantlab.bus import Bus, DeadLetter, Envelope, Subscription, topics
from quantlab.core import BusError
from quantlab.testing.redis_server import RedisServer

pytestmark = pytest.mark.integration

MakeRedisBus = Callable[..., RedisStreamsBus]  # the `make_bus` fixture (conftest.py)


async def pull_all(sub: RedisSubscription, *, wait: float = 0.3, ack: bool = True) -> list[Any]:
    got = []
    while (envelope := await sub.get(timeout=wait)) is not None:
        got.append(envelope.payload)
        if ack:
            sub.ack(envelope)
    return got


async def still_pending(task: asyncio.Task[Any], wait: float = 0.1) -> bool:
    try:
        await asyncio.wait_for(asyncio.shield(task), wait)
    except TimeoutError:
        return True
    return False


# -- the port ------------------------------------------------------------------------------------


async def test_redis_bus_satisfies_the_ports(make_bus: MakeRedisBus) -> None:
    bus = make_bus()
    assert isinstance(bus, Bus)
    assert isinstance(bus.subscribe("a.*", name="s"), Subscription)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"maxsize": 0}, "maxsize must be >= 1, got 0"),
        ({"max_deliveries": 0}, "max_deliveries must be >= 1, got 0"),
        ({"ack_timeout": 0}, "ack_timeout must be > 0, got 0"),
    ],
)
async def test_bad_subscription_settings_are_refused(
    make_bus: MakeRedisBus, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(BusError, match=rf"subscription 'bad': {message}"):
        make_bus().subscribe("a.*", name="bad", **kwargs)


# -- routing -------------------------------------------------------------------------------------

PUBLISHED = [
    "market.data.bar",
    "market.data.quote.BTC/USD",
    "market.data.trade.ETH/USD",
    "orders.filled",
    "orders.new",
    "signals.mom",
    "features.BTC/USD",
    "market.data.quote.ETH/USD",
    "orders",
]
EXPECTED = {
    "market.data.*": [
        "market.data.bar",
        "market.data.quote.BTC/USD",
        "market.data.trade.ETH/USD",
        "market.data.quote.ETH/USD",
    ],
    "market.data.quote.*": ["market.data.quote.BTC/USD", "market.data.quote.ETH/USD"],
    "*.BTC/USD": ["market.data.quote.BTC/USD", "features.BTC/USD"],
    "orders.*": ["orders.filled", "orders.new"],
    "orders.filled": ["orders.filled"],
    "*": PUBLISHED,
    "risk.*": [],
}


async def test_wildcard_routing_delivers_to_every_match_exactly_once(
    make_bus: MakeRedisBus,
) -> None:
    bus = make_bus(ack_timeout=5)
    subs = {pattern: bus.subscribe(pattern, name=pattern) for pattern in EXPECTED}
    for topic in PUBLISHED:
        await bus.publish(topic, topic)

    for pattern, sub in subs.items():
        envelopes = []
        while (envelope := await sub.get(timeout=0.1)) is not None:
            envelopes.append(envelope)
            sub.ack(envelope)
        # exactly once each, nothing else; order holds per topic (one stream each), so
        # compare as sets here and check per-topic order in the FIFO tests
        assert sorted(e.payload for e in envelopes) == sorted(EXPECTED[pattern]), pattern
        assert all(e.topic == e.payload and e.deliveries == 1 for e in envelopes)
    await bus.drain(timeout=2)


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


async def test_envelope_fields(make_bus: MakeRedisBus) -> None:
    bus = make_bus(ack_timeout=5)
    sub = bus.subscribe("signals.*", name="s")
    before = time.time_ns()
    generated = await bus.publish("signals.mom", 1)
    custom = await bus.publish("signals.mom", 2, msg_id="sig-42")
    after = time.time_ns()
    first, second = await sub.get(timeout=1), await sub.get(timeout=1)
    assert first is not None
    assert second is not None
    assert (first.id, first.topic, first.payload, first.deliveries) == (
        generated,
        "signals.mom",
        1,
        1,
    )
    assert before <= first.ts_publish <= after
    assert second.id == custom == "sig-42"
    ids = {await bus.publish("a.b", i) for i in range(100)}
    assert len(ids) == 100


async def test_publishing_without_subscribers_is_counted_and_settled(
    make_bus: MakeRedisBus,
) -> None:
    bus = make_bus()
    await bus.publish("nobody.listens", 1)
    assert bus.stats()["published"] == 1
    assert bus.stats()["outstanding"] == 0
    await bus.drain(timeout=0.5)


async def test_a_later_subscription_sees_later_messages_only(make_bus: MakeRedisBus) -> None:
    bus = make_bus(ack_timeout=5)
    early = bus.subscribe("t.*", name="early")
    await bus.publish("t.x", "before")
    late = bus.subscribe("t.*", name="late")
    await bus.publish("t.x", "after")
    assert await pull_all(early) == ["before", "after"]
    assert await pull_all(late) == ["after"]


async def test_a_closed_subscription_receives_nothing_more(make_bus: MakeRedisBus) -> None:
    bus = make_bus(ack_timeout=5)
    keep = bus.subscribe("t.*", name="keep")
    gone = bus.subscribe("t.*", name="gone")
    await bus.publish("t.x", 1)
    await gone.close()
    await bus.publish("t.x", 2)
    assert await gone.get(timeout=0.01) is None
    assert await pull_all(keep) == [1, 2]
    assert "gone" not in bus.stats()["subscriptions"]
    await bus.drain(timeout=2)  # nobody is subscribed as "gone" any more


async def test_fifo_per_subscription(make_bus: MakeRedisBus) -> None:
    bus = make_bus(ack_timeout=5)
    odd = bus.subscribe("n.odd", name="odd")
    everything = bus.subscribe("n.x", name="all")
    for i in range(300):
        await bus.publish("n.odd" if i % 2 else "n.x", i)
    assert await pull_all(everything) == list(range(0, 300, 2))
    assert await pull_all(odd) == list(range(1, 300, 2))


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


async def test_ack_wakes_a_waiting_get(make_bus: MakeRedisBus) -> None:
    bus = make_bus(ack_timeout=10)
    sub = bus.subscribe("t.x", name="s", maxsize=1)
    await bus.publish("t.x", 1)
    first = await sub.get(timeout=1)
    assert first is not None
    waiter = asyncio.create_task(sub.get(timeout=2))
    await bus.publish("t.x", 2)
    await asyncio.sleep(0.05)
    assert not waiter.done()
    sub.ack(first)
    second = await asyncio.wait_for(waiter, 1)
    assert second is not None
    assert second.payload == 2


async def test_get_timeout_and_wake_up_on_publish(make_bus: MakeRedisBus) -> None:
    bus = make_bus(ack_timeout=5)
    sub = bus.subscribe("t.x", name="s")
    start = time.monotonic()
    assert await sub.get(timeout=0.05) is None
    assert 0.04 <= time.monotonic() - start < 1
    waiter = asyncio.create_task(sub.get())
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await bus.publish("t.x", "hello")
    envelope = await asyncio.wait_for(waiter, 1)
    assert envelope is not None
    assert envelope.payload == "hello"


# -- acknowledgement and redelivery --------------------------------------------------------------


async def test_unacked_envelope_is_redelivered_after_ack_timeout(make_bus: MakeRedisBus) -> None:
    bus = make_bus()
    sub = bus.subscribe("t.x", name="r", ack_timeout=0.2, max_deliveries=5)
    msg_id = await bus.publish("t.x", "hello")
    start = time.monotonic()
    first = await sub.get(timeout=1)
    assert first is not None
    assert first.deliveries == 1
    assert await sub.get(timeout=0.01) is None
    again = await sub.get(timeout=2)
    assert again is not None
    assert time.monotonic() - start >= 0.2
    assert (again.id, again.payload, again.deliveries) == (msg_id, "hello", 2)
    assert sub.redelivered == 1
    sub.ack(again)
    assert sub.in_flight == 0
    assert await sub.get(timeout=0.5) is None  # acked: never again
    await bus.drain(timeout=1)


async def test_acked_envelope_is_not_redelivered(make_bus: MakeRedisBus) -> None:
    bus = make_bus()
    sub = bus.subscribe("t.x", name="r", ack_timeout=0.05)
    await bus.publish("t.x", 1)
    envelope = await sub.get(timeout=1)
    assert envelope is not None
    sub.ack(envelope)
    sub.ack(envelope)
    sub.nack(envelope)
    assert await sub.get(timeout=0.3) is None
    assert sub.stats()["acked"] == 1
    assert sub.stats()["redelivered"] == 0


async def test_nack_redelivers_immediately_before_newer_messages(make_bus: MakeRedisBus) -> None:
    bus = make_bus()
    sub = bus.subscribe("t.x", name="r", ack_timeout=10, max_deliveries=5)
    await bus.publish("t.x", "first")
    await bus.publish("t.x", "second")
    first = await sub.get(timeout=1)
    assert first is not None
    sub.nack(first, "try again")
    again = await sub.get(timeout=0)
    assert again is not None
    assert (again.payload, again.deliveries) == ("first", 2)
    sub.ack(again)
    second = await sub.get(timeout=1)
    assert second is not None
    assert second.payload == "second"
    sub.ack(second)
    await bus.drain(timeout=1)


async def test_unacked_message_is_dead_lettered_after_max_deliveries(
    make_bus: MakeRedisBus,
) -> None:
    bus = make_bus()
    dead = bus.subscribe(topics.DEAD_LETTER, name="dlq")
    sub = bus.subscribe("jobs.*", name="worker", ack_timeout=0.1, max_deliveries=3)
    for payload in ("a", "poison", "b"):
        await bus.publish("jobs.x", payload, msg_id=f"id-{payload}")
    handled: list[str] = []
    poison_deliveries: list[int] = []
    while (envelope := await sub.get(timeout=0.4)) is not None:
        if envelope.payload == "poison":
            poison_deliveries.append(envelope.deliveries)
        else:
            handled.append(envelope.payload)
            sub.ack(envelope)
    assert handled == ["a", "b"]
    assert poison_deliveries == [1, 2, 3]
    [letter] = bus.dead_letters
    assert letter.envelope.id == "id-poison"
    assert letter.envelope.deliveries == 3
    assert letter.subscription == "worker"
    assert letter.reason == "not acknowledged within 0.1s"

    notice = await dead.get(timeout=2)
    assert notice is not None
    assert notice.topic == "system.deadletter"
    assert notice.id == "dl-id-poison-worker"
    assert isinstance(notice.payload, DeadLetter)
    assert notice.payload == letter
    dead.ack(notice)

    await bus.publish("jobs.x", "c")  # the stream flows on
    assert await pull_all(sub) == ["c"]
    assert sub.dead_lettered == 1
    await bus.drain(timeout=2)


async def test_nacked_message_is_dead_lettered_with_the_nack_reason(
    make_bus: MakeRedisBus,
) -> None:
    bus = make_bus()
    sub = bus.subscribe("jobs.*", name="worker", ack_timeout=10, max_deliveries=2)
    await bus.publish("jobs.x", "bad")
    for _ in range(2):
        envelope = await sub.get(timeout=1)
        assert envelope is not None
        sub.nack(envelope, "cannot parse payload")
    assert await sub.get(timeout=0.1) is None
    [letter] = bus.dead_letters
    assert letter.reason == "cannot parse payload"
    assert letter.envelope.deliveries == 2
    await bus.drain(timeout=2)  # dead-lettered counts as settled (XACKed)


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


# -- consumer tasks ------------------------------------------------------------------------------


async def test_consume_acks_on_success(make_bus: MakeRedisBus) -> None:
    bus = make_bus()
    seen: list[str] = []

    async def handler(envelope: Envelope) -> None:
        seen.append(envelope.payload)

    sub = bus.consume("orders.*", handler, name="tracker")
    for event in ("new", "approved", "filled"):
        await bus.publish(topics.orders(event), event)
    await bus.drain(timeout=2)
    assert sorted(seen) == ["approved", "filled", "new"]
    assert sub.stats() == {
        "queued": 0,
        "in_flight": 0,
        "delivered": 3,
        "acked": 3,
        "redelivered": 0,
        "dead_lettered": 0,
    }


async def test_poison_message_is_retried_then_dead_lettered(
    make_bus: MakeRedisBus, caplog: pytest.LogCaptureFixture
) -> None:
    bus = make_bus()
    dead = bus.subscribe(topics.DEAD_LETTER, name="dlq")
    handled: list[str] = []
    attempts: list[int] = []

    async def handler(envelope: Envelope) -> None:
        if envelope.payload == "poison":
            attempts.append(envelope.deliveries)
            raise ValueError(f"cannot handle {envelope.payload}")
        handled.append(envelope.payload)

    with caplog.at_level(logging.WARNING, logger="quantlab.adapters.redis.bus"):
        sub = bus.consume("jobs.*", handler, name="worker", max_deliveries=3)
        await bus.publish_many("jobs.x", ["a", "poison", "b", "c"])  # one entry, four events
        notice = await dead.get(timeout=3)
        assert notice is not None
        dead.ack(notice)
        await bus.drain(timeout=3)

    assert handled == ["a", "b", "c"]
    assert attempts == [1, 2, 3]
    letter = notice.payload
    assert letter.subscription == "worker"
    assert letter.reason == "ValueError: cannot handle poison"
    assert letter.envelope.payload == "poison"
    assert list(bus.dead_letters) == [letter]
    assert len(bus.handler_errors) == 3
    assert sub.dead_lettered == 1
    assert sub.acked == 3
    assert bus.stats()["handler_errors"] == 3
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 3
    assert "handler worker failed on jobs.x" in errors[0].getMessage()
    assert any("dead letter from worker" in r.getMessage() for r in caplog.records)


async def test_handler_that_fails_once_is_retried_and_succeeds(make_bus: MakeRedisBus) -> None:
    bus = make_bus()
    calls: list[int] = []

    async def flaky(envelope: Envelope) -> None:
        calls.append(envelope.deliveries)
        if envelope.deliveries == 1:
            raise RuntimeError("transient")

    bus.consume("jobs.*", flaky, name="flaky", max_deliveries=3)
    await bus.publish("jobs.x", 1)
    await bus.drain(timeout=2)
    assert calls == [1, 2]
    assert not bus.dead_letters


# -- drain, close, stats -------------------------------------------------------------------------


async def test_drain_waits_until_everything_is_acked(make_bus: MakeRedisBus) -> None:
    bus = make_bus(ack_timeout=10)
    await bus.drain(timeout=0.05)  # idle: at once
    sub = bus.subscribe("t.x", name="s")
    await bus.publish("t.x", 1)
    await bus.publish("t.x", 2)
    drained = asyncio.create_task(bus.drain())
    try:
        first = await sub.get(timeout=1)
        second = await sub.get(timeout=1)
        assert first is not None
        assert second is not None
        sub.ack(first)
        assert await still_pending(drained, 0.1)
        sub.ack(second)
        await asyncio.wait_for(drained, 1)
    finally:
        drained.cancel()


async def test_drain_with_timeout_raises_while_something_is_unacked(
    make_bus: MakeRedisBus,
) -> None:
    bus = make_bus(ack_timeout=10)
    sub = bus.subscribe("t.x", name="stuck")
    await bus.publish("t.x", 1)
    envelope = await sub.get(timeout=1)
    assert envelope is not None
    with pytest.raises(
        BusError, match=r"did not drain within 0.1s: 1 messages outstanding"
    ) as info:
        await bus.drain(timeout=0.1)
    assert "'stuck'" in str(info.value)
    assert "'in_flight': 1" in str(info.value)
    sub.ack(envelope)
    await bus.drain(timeout=1)


async def test_close_stops_consumer_tasks_and_wakes_pull_consumers(make_bus: MakeRedisBus) -> None:
    bus = make_bus()
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def blocking(envelope: Envelope) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    bus.consume("t.*", blocking, name="busy")
    bus.consume("idle.*", blocking, name="idle")
    puller = bus.subscribe("p.*", name="puller")
    waiter = asyncio.create_task(puller.get())
    consumers = [t for t in asyncio.all_tasks() if t.get_name().startswith("bus-consumer:")]
    assert {t.get_name() for t in consumers} == {"bus-consumer:busy", "bus-consumer:idle"}
    await bus.publish("t.x", 1)
    await asyncio.wait_for(started.wait(), 2)
    await asyncio.wait_for(bus.close(), 2)
    assert all(t.done() for t in consumers)
    assert cancelled.is_set()
    assert bus.stats()["subscriptions"] == {}
    assert await asyncio.wait_for(waiter, 1) is None


async def test_publish_and_subscribe_after_close_raise(make_bus: MakeRedisBus) -> None:
    bus = make_bus()
    await bus.close()
    with pytest.raises(BusError, match=r"bus is closed; cannot publish to 't.x'"):
        await bus.publish("t.x", 1)
    with pytest.raises(BusError, match="bus is closed; cannot subscribe 's'"):
        bus.subscribe("t.*", name="s")


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


async def test_duplicate_message_ids_in_flight_together_are_each_settled(
    make_bus: MakeRedisBus,
) -> None:
    bus = make_bus(ack_timeout=10)
    sub = bus.subscribe("t.x", name="s")
    await bus.publish("t.x", "first", msg_id="same")
    await bus.publish("t.x", "retry", msg_id="same")
    first = await sub.get(timeout=1)
    second = await sub.get(timeout=1)
    assert first is not None
    assert second is not None
    sub.ack(first)
    sub.ack(second)
    await bus.drain(timeout=1)
    assert sub.acked == 2


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
