"""The bus port's shared semantics, on `InProcessBus` and on `RedisStreamsBus` (`make_bus`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import pytest

from quantlab.bus import (
    Bus,
    Component,
    DeadLetter,
    Envelope,
    InProcessBus,
    Subscription,
    topics,
)
from quantlab.core import BusError

MakeBus = Callable[..., Any]  # builds an InProcessBus or a RedisStreamsBus (see `make_bus`)

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis", marks=[pytest.mark.redis, pytest.mark.integration]),
]


@pytest.fixture(params=BACKENDS)
async def make_bus(request: pytest.FixtureRequest) -> AsyncIterator[MakeBus]:
    """Build buses that are closed when the test ends, whatever happened.

    Parametrized over the backends: ``memory`` (`InProcessBus`) and ``redis``
    (`RedisStreamsBus` on the session's throwaway redis-server, a fresh namespace per test,
    so the buses of one test share topics and nothing else). A test marked
    ``in_process_only(reason)`` is skipped on ``redis`` with that reason.
    """
    made: list[Any] = []
    if request.param == "memory":

        def make(**kwargs: Any) -> Any:
            bus = InProcessBus(**kwargs)
            made.append(bus)
            return bus

    else:
        marker = request.node.get_closest_marker("in_process_only")
        if marker is not None:
            pytest.skip(f"in-process only: {marker.kwargs['reason']}")
        from quantlab.adapters.redis import RedisStreamsBus

        url = request.getfixturevalue("redis_server").url
        namespace = f"test-{uuid.uuid4().hex[:10]}"

        def make(**kwargs: Any) -> Any:
            kwargs.setdefault("namespace", namespace)
            bus = RedisStreamsBus(url, **kwargs)
            made.append(bus)
            return bus

    yield make
    for bus in made:
        await bus.close()


async def pull_all(sub: Subscription, *, wait: float = 0.05, ack: bool = True) -> list[Any]:
    """Payloads available now (until `wait` seconds pass with nothing new), acknowledged."""
    got = []
    while (envelope := await sub.get(timeout=wait)) is not None:
        got.append(envelope.payload)
        if ack:
            sub.ack(envelope)
    return got


async def still_pending(task: asyncio.Task[Any], wait: float = 0.1) -> bool:
    """True if `task` does not finish within `wait` seconds (it is not cancelled)."""
    try:
        await asyncio.wait_for(asyncio.shield(task), wait)
    except TimeoutError:
        return True
    return False


async def publish_concurrently(bus: Bus, topic: str, payloads: Iterable[Any]) -> None:
    """One publisher per payload, all at once."""
    await asyncio.gather(*(bus.publish(topic, p) for p in payloads))


async def cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# -- the port ------------------------------------------------------------------------------------


async def test_in_process_bus_satisfies_the_ports(make_bus: MakeBus) -> None:
    bus = make_bus()
    assert isinstance(bus, Bus)
    assert isinstance(bus.subscribe("a.*", name="s"), Subscription)


async def test_a_stage_with_start_and_stop_is_a_component(make_bus: MakeBus) -> None:
    class Echo:
        name = "echo"

        async def start(self, bus: Bus) -> None:
            self.bus = bus

        async def stop(self) -> None:
            pass

    echo = Echo()
    assert isinstance(echo, Component)
    await echo.start(make_bus())
    assert isinstance(echo.bus, Bus)
    assert not isinstance(object(), Component)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"maxsize": 0}, "maxsize must be >= 1, got 0"),
        ({"max_deliveries": 0}, "max_deliveries must be >= 1, got 0"),
        ({"ack_timeout": 0}, "ack_timeout must be > 0, got 0"),
        ({"ack_timeout": -1.0}, "ack_timeout must be > 0, got -1.0"),
    ],
)
async def test_bad_subscription_settings_are_refused(
    make_bus: MakeBus, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(BusError, match=rf"subscription 'bad': {message}"):
        make_bus().subscribe("a.*", name="bad", **kwargs)


async def test_subscription_takes_bus_defaults_and_overrides(make_bus: MakeBus) -> None:
    bus = make_bus(maxsize=7, ack_timeout=1.5, max_deliveries=2)
    default = bus.subscribe("a.*", name="d")
    assert (default.maxsize, default.ack_timeout, default.max_deliveries) == (7, 1.5, 2)
    custom = bus.subscribe("a.*", name="c", maxsize=3, ack_timeout=0.2, max_deliveries=9)
    assert (custom.maxsize, custom.ack_timeout, custom.max_deliveries) == (3, 0.2, 9)
    assert (custom.name, custom.pattern) == ("c", "a.*")


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


async def test_wildcard_routing_delivers_to_every_match_exactly_once(make_bus: MakeBus) -> None:
    bus = make_bus(ack_timeout=5)
    subs = {pattern: bus.subscribe(pattern, name=pattern) for pattern in EXPECTED}
    for topic in PUBLISHED:
        await bus.publish(topic, topic)

    for pattern, sub in subs.items():
        envelopes = []
        while (envelope := await sub.get(timeout=0.02)) is not None:
            envelopes.append(envelope)
            sub.ack(envelope)
        # exactly once each, in publish order, and nothing else
        assert [e.payload for e in envelopes] == EXPECTED[pattern], pattern
        assert all(e.topic == e.payload and e.deliveries == 1 for e in envelopes)
        assert sub.delivered == len(EXPECTED[pattern])
    await bus.drain(timeout=1)


@pytest.mark.in_process_only(reason="payloads are encoded: every subscription decodes its own copy")
async def test_one_message_fans_out_by_reference(make_bus: MakeBus) -> None:
    bus = make_bus(ack_timeout=5)
    a = bus.subscribe("orders.*", name="a")
    b = bus.subscribe("orders.*", name="b")
    payload = {"big": list(range(1000))}
    msg_id = await bus.publish("orders.new", payload)

    ea, eb = await a.get(timeout=1), await b.get(timeout=1)
    assert ea is not None
    assert eb is not None
    assert ea is not eb  # one envelope per subscription ...
    assert ea.payload is payload  # ... and the payload is not copied
    assert eb.payload is payload
    assert ea.id == eb.id == msg_id


async def test_envelope_fields(make_bus: MakeBus) -> None:
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
    assert generated != custom


async def test_generated_ids_are_unique(make_bus: MakeBus) -> None:
    bus = make_bus()
    ids = {await bus.publish("a.b", i) for i in range(100)}
    assert len(ids) == 100


async def test_publishing_without_subscribers_is_counted_and_settled(make_bus: MakeBus) -> None:
    bus = make_bus()
    await bus.publish("nobody.listens", 1)
    assert bus.stats()["published"] == 1
    assert bus.stats()["outstanding"] == 0
    await bus.drain(timeout=0.1)


async def test_a_later_subscription_sees_later_messages_only(make_bus: MakeBus) -> None:
    bus = make_bus(ack_timeout=5)
    early = bus.subscribe("t.*", name="early")
    await bus.publish("t.x", "before")
    late = bus.subscribe("t.*", name="late")
    await bus.publish("t.x", "after")

    assert await pull_all(early) == ["before", "after"]
    assert await pull_all(late) == ["after"]


async def test_a_closed_subscription_receives_nothing_more(make_bus: MakeBus) -> None:
    bus = make_bus(ack_timeout=5)
    keep = bus.subscribe("t.*", name="keep")
    gone = bus.subscribe("t.*", name="gone")
    await bus.publish("t.x", 1)
    await gone.close()
    await bus.publish("t.x", 2)

    assert await gone.get(timeout=0.01) is None
    assert await pull_all(keep) == [1, 2]
    assert "gone" not in bus.stats()["subscriptions"]
    await bus.drain(timeout=1)


@pytest.mark.in_process_only(
    reason="one stream per topic: FIFO holds per topic, not across a pattern's topics"
)
async def test_fifo_per_subscription(make_bus: MakeBus) -> None:
    bus = make_bus(ack_timeout=5)
    odd = bus.subscribe("n.odd", name="odd")
    everything = bus.subscribe("n.*", name="all")
    for i in range(300):
        await bus.publish("n.odd" if i % 2 else "n.even", i)

    assert await pull_all(everything) == list(range(300))
    assert await pull_all(odd) == list(range(1, 300, 2))


async def test_fifo_through_a_consumer_task(make_bus: MakeBus) -> None:
    bus = make_bus()
    seen: list[int] = []

    async def handler(envelope: Envelope) -> None:
        seen.append(envelope.payload)

    bus.consume("n.*", handler, name="c", maxsize=8)
    for i in range(500):
        await bus.publish("n.x", i)
    await bus.drain(timeout=2)
    assert seen == list(range(500))


# -- backpressure and bounds ---------------------------------------------------------------------


@pytest.mark.in_process_only(reason="no publisher backpressure: streams are trimmed to maxlen")
async def test_backpressure_blocks_the_publisher_at_maxsize(make_bus: MakeBus) -> None:
    bus = make_bus(ack_timeout=5)
    sub = bus.subscribe("bp.x", name="slow", maxsize=10)
    sent = 0

    async def producer() -> None:
        nonlocal sent
        for i in range(1000):
            await bus.publish("bp.x", i)
            sent += 1

    task = asyncio.create_task(producer())
    try:
        # The consumer never reads: the publisher is stuck after 10 messages.
        assert await still_pending(task, 0.1)
        assert sent == 10
        assert sub.queued == 10
        assert sub.in_flight == 0
        # Waiting longer changes nothing: memory does not grow.
        await asyncio.sleep(0.05)
        assert sent == 10
        assert sub.queued == 10

        # Now the consumer reads, and everything flows.
        got = []
        while len(got) < 1000:
            envelope = await sub.get(timeout=1)
            assert envelope is not None
            got.append(envelope.payload)
            sub.ack(envelope)
            assert sub.queued <= 10
            assert sub.in_flight <= 10
        await asyncio.wait_for(task, 1)
        assert got == list(range(1000))
        assert sent == 1000
        await bus.drain(timeout=1)
    finally:
        await cancel(task)


@pytest.mark.in_process_only(reason="no publisher backpressure: streams are trimmed to maxlen")
async def test_a_slow_subscription_holds_back_its_publishers(make_bus: MakeBus) -> None:
    bus = make_bus(maxsize=5, ack_timeout=5)
    slow = bus.subscribe("bp.*", name="slow")
    fast = bus.subscribe("bp.*", name="fast")
    task = asyncio.create_task(publish_concurrently(bus, "bp.x", range(50)))
    try:
        assert await still_pending(task, 0.05)
        # The slow subscription holds its 5; every other publisher waits on it, so the fast
        # subscription gets no further either (bounded memory, by design).
        assert slow.queued == 5
        assert await pull_all(fast) == [0, 1, 2, 3, 4]
        assert await still_pending(task, 0.02)

        # Once the slow one reads, everything flows to both.
        slow_got, fast_got = await asyncio.gather(
            pull_all(slow, wait=0.1), pull_all(fast, wait=0.1)
        )
        await asyncio.wait_for(task, 1)
        assert sorted(slow_got) == list(range(50))
        assert sorted(fast_got) == list(range(5, 50))
    finally:
        await cancel(task)


@pytest.mark.in_process_only(
    reason="no publisher backpressure; `queued` is local read-ahead, not the backlog"
)
async def test_a_pull_consumer_that_never_acks_gets_at_most_maxsize_in_flight(
    make_bus: MakeBus,
) -> None:
    bus = make_bus(ack_timeout=10)
    sub = bus.subscribe("t.x", name="puller", maxsize=5)
    producer = asyncio.create_task(publish_concurrently(bus, "t.x", range(8)))
    try:
        taken = []
        while (envelope := await sub.get(timeout=0.05)) is not None:
            taken.append(envelope)
        assert [e.payload for e in taken] == [0, 1, 2, 3, 4]
        assert sub.in_flight == 5
        assert sub.queued == 3
        await asyncio.wait_for(producer, 1)  # the queue had room for the rest

        # Each ack frees exactly one slot.
        sub.ack(taken[0])
        nxt = await sub.get(timeout=0.05)
        assert nxt is not None
        assert nxt.payload == 5
        assert await sub.get(timeout=0.05) is None
        assert sub.in_flight == 5
    finally:
        await cancel(producer)


async def test_ack_wakes_a_waiting_get(make_bus: MakeBus) -> None:
    bus = make_bus(ack_timeout=10)
    sub = bus.subscribe("t.x", name="s", maxsize=1)
    await bus.publish("t.x", 1)
    first = await sub.get(timeout=1)
    assert first is not None
    waiter = asyncio.create_task(sub.get(timeout=2))
    await bus.publish("t.x", 2)  # room in the queue, but the in-flight slot is taken
    await asyncio.sleep(0.02)
    assert not waiter.done()
    sub.ack(first)
    second = await asyncio.wait_for(waiter, 1)
    assert second is not None
    assert second.payload == 2


async def test_get_with_timeout_returns_none_when_nothing_comes(make_bus: MakeBus) -> None:
    bus = make_bus()
    sub = bus.subscribe("t.x", name="s")
    start = time.monotonic()
    assert await sub.get(timeout=0.05) is None
    assert 0.04 <= time.monotonic() - start < 1
    assert await sub.get(timeout=0) is None


async def test_get_wakes_up_on_publish(make_bus: MakeBus) -> None:
    bus = make_bus(ack_timeout=5)
    sub = bus.subscribe("t.x", name="s")
    waiter = asyncio.create_task(sub.get())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    await bus.publish("t.x", "hello")
    envelope = await asyncio.wait_for(waiter, 1)
    assert envelope is not None
    assert envelope.payload == "hello"


# -- acknowledgement and redelivery --------------------------------------------------------------


async def test_unacked_envelope_is_redelivered_after_ack_timeout(make_bus: MakeBus) -> None:
    bus = make_bus()
    sub = bus.subscribe("t.x", name="r", ack_timeout=0.2, max_deliveries=5)
    msg_id = await bus.publish("t.x", "hello")

    start = time.monotonic()
    first = await sub.get(timeout=1)
    assert first is not None
    assert first.deliveries == 1
    # Not yet: the deadline has not passed.
    assert await sub.get(timeout=0.01) is None

    again = await sub.get(timeout=2)
    assert again is not None
    assert time.monotonic() - start >= 0.2
    assert (again.id, again.payload, again.deliveries) == (msg_id, "hello", 2)
    assert sub.redelivered == 1
    assert sub.in_flight == 1

    sub.ack(again)
    assert sub.in_flight == 0
    assert await sub.get(timeout=0.1) is None  # acked: never again
    await bus.drain(timeout=1)


async def test_acked_envelope_is_not_redelivered(make_bus: MakeBus) -> None:
    bus = make_bus()
    sub = bus.subscribe("t.x", name="r", ack_timeout=0.03)
    await bus.publish("t.x", 1)
    envelope = await sub.get(timeout=1)
    assert envelope is not None
    sub.ack(envelope)
    sub.ack(envelope)  # twice: harmless
    sub.nack(envelope)  # after ack: ignored
    assert await sub.get(timeout=0.1) is None
    assert sub.stats()["acked"] == 1
    assert sub.stats()["redelivered"] == 0


async def test_nack_redelivers_immediately_before_newer_messages(make_bus: MakeBus) -> None:
    bus = make_bus()
    sub = bus.subscribe("t.x", name="r", ack_timeout=10, max_deliveries=5)
    await bus.publish("t.x", "first")
    await bus.publish("t.x", "second")
    first = await sub.get(timeout=1)
    assert first is not None
    sub.nack(first, "try again")
    again = await sub.get(timeout=0)  # no waiting at all
    assert again is not None
    assert (again.payload, again.deliveries) == ("first", 2)
    sub.ack(again)
    second = await sub.get(timeout=0)
    assert second is not None
    assert second.payload == "second"
    sub.ack(second)
    await bus.drain(timeout=1)


async def test_unacked_message_is_dead_lettered_after_max_deliveries(make_bus: MakeBus) -> None:
    bus = make_bus()
    dead = bus.subscribe(topics.DEAD_LETTER, name="dlq")
    sub = bus.subscribe("jobs.*", name="worker", ack_timeout=0.05, max_deliveries=3)
    for payload in ("a", "poison", "b"):
        await bus.publish("jobs.x", payload, msg_id=f"id-{payload}")

    handled: list[str] = []
    poison_deliveries: list[int] = []
    while (envelope := await sub.get(timeout=0.2)) is not None:
        if envelope.payload == "poison":
            poison_deliveries.append(envelope.deliveries)  # never acked
        else:
            handled.append(envelope.payload)
            sub.ack(envelope)

    assert handled == ["a", "b"]
    assert poison_deliveries == [1, 2, 3]

    [letter] = bus.dead_letters
    assert isinstance(letter, DeadLetter)
    assert letter.envelope.id == "id-poison"
    assert letter.envelope.payload == "poison"
    assert letter.envelope.deliveries == 3
    assert letter.subscription == "worker"
    assert letter.reason == "not acknowledged within 0.05s"

    # The dead letter is published on system.deadletter, with the reason.
    notice = await dead.get(timeout=0)
    assert notice is not None
    assert notice.topic == "system.deadletter"
    assert notice.id == "dl-id-poison-worker"
    assert notice.payload == letter
    dead.ack(notice)

    # The stream flows on.
    await bus.publish("jobs.x", "c")
    assert await pull_all(sub) == ["c"]
    assert sub.dead_lettered == 1
    await bus.drain(timeout=1)


async def test_nacked_message_is_dead_lettered_with_the_nack_reason(make_bus: MakeBus) -> None:
    bus = make_bus()
    sub = bus.subscribe("jobs.*", name="worker", ack_timeout=10, max_deliveries=2)
    await bus.publish("jobs.x", "bad")
    for _ in range(2):
        envelope = await sub.get(timeout=0)
        assert envelope is not None
        sub.nack(envelope, "cannot parse payload")
    assert await sub.get(timeout=0) is None
    [letter] = bus.dead_letters
    assert letter.reason == "cannot parse payload"
    assert letter.envelope.deliveries == 2
    await bus.drain(timeout=1)  # a dead letter counts as settled


async def test_max_deliveries_one_means_no_retry(make_bus: MakeBus) -> None:
    bus = make_bus()
    sub = bus.subscribe("jobs.*", name="w", max_deliveries=1)
    await bus.publish("jobs.x", 1)
    envelope = await sub.get(timeout=0)
    assert envelope is not None
    sub.nack(envelope)
    assert await sub.get(timeout=0) is None
    assert bus.dead_letters[0].reason == "nack"


@pytest.mark.in_process_only(
    reason="no bounded subscription queue: the dead-letter stream keeps every letter"
)
async def test_a_full_dead_letter_subscription_does_not_block_the_stream(make_bus: MakeBus) -> None:
    bus = make_bus()
    dead = bus.subscribe(topics.DEAD_LETTER, name="dlq", maxsize=1)
    sub = bus.subscribe("jobs.*", name="w", max_deliveries=1, ack_timeout=10)
    for i in range(3):
        await bus.publish("jobs.x", i)
        envelope = await sub.get(timeout=0)
        assert envelope is not None
        sub.nack(envelope, f"bad {i}")
    assert [d.reason for d in bus.dead_letters] == ["bad 0", "bad 1", "bad 2"]
    assert dead.queued == 1  # the rest were dropped from the topic, kept in bus.dead_letters


@pytest.mark.in_process_only(
    reason="dead letters reach Redis from a background flusher, not within get(timeout=0)"
)
async def test_dead_letters_of_the_dead_letter_topic_are_not_republished(make_bus: MakeBus) -> None:
    bus = make_bus()
    bus.subscribe(topics.DEAD_LETTER, name="observer")
    dead = bus.subscribe(topics.DEAD_LETTER, name="dlq", max_deliveries=1)
    sub = bus.subscribe("jobs.*", name="w", max_deliveries=1)
    await bus.publish("jobs.x", 1)
    envelope = await sub.get(timeout=0)
    assert envelope is not None
    sub.nack(envelope, "first")
    notice = await dead.get(timeout=0)
    assert notice is not None
    dead.nack(notice, "second")
    # Kept in the log, but not fed back into system.deadletter (no loop).
    assert [d.reason for d in bus.dead_letters] == ["first", "second"]
    assert await dead.get(timeout=0) is None


# -- consumer tasks ------------------------------------------------------------------------------


async def test_consume_acks_on_success(make_bus: MakeBus) -> None:
    bus = make_bus()
    seen: list[str] = []

    async def handler(envelope: Envelope) -> None:
        seen.append(envelope.payload)

    sub = bus.consume("orders.*", handler, name="tracker")
    for event in ("new", "approved", "filled"):
        await bus.publish(topics.orders(event), event)
    await bus.drain(timeout=1)
    assert seen == ["new", "approved", "filled"]
    assert sub.stats() == {
        "queued": 0,
        "in_flight": 0,
        "delivered": 3,
        "acked": 3,
        "redelivered": 0,
        "dead_lettered": 0,
    }


async def test_poison_message_is_retried_then_dead_lettered(
    make_bus: MakeBus, caplog: pytest.LogCaptureFixture
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

    with caplog.at_level(logging.WARNING, logger="quantlab.bus.memory"):
        sub = bus.consume("jobs.*", handler, name="worker", max_deliveries=3)
        for payload in ("a", "poison", "b", "c"):
            await bus.publish("jobs.x", payload)

        notice = await dead.get(timeout=2)
        assert notice is not None
        dead.ack(notice)
        await bus.drain(timeout=2)

    assert handled == ["a", "b", "c"]
    assert attempts == [1, 2, 3]
    letter = notice.payload
    assert letter.subscription == "worker"
    assert letter.reason == "ValueError: cannot handle poison"
    assert letter.envelope.payload == "poison"
    assert list(bus.dead_letters) == [letter]

    assert len(bus.handler_errors) == 3
    assert all(name == "worker" and isinstance(exc, ValueError) for name, exc in bus.handler_errors)
    assert sub.dead_lettered == 1
    assert sub.acked == 3
    assert bus.stats()["handler_errors"] == 3

    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 3
    assert "handler worker failed on jobs.x" in errors[0].getMessage()
    assert any("dead letter from worker" in r.getMessage() for r in caplog.records)


async def test_handler_that_fails_once_is_retried_and_succeeds(make_bus: MakeBus) -> None:
    bus = make_bus()
    calls: list[int] = []

    async def flaky(envelope: Envelope) -> None:
        calls.append(envelope.deliveries)
        if envelope.deliveries == 1:
            raise RuntimeError("transient")

    bus.consume("jobs.*", flaky, name="flaky", max_deliveries=3)
    await bus.publish("jobs.x", 1)
    await bus.drain(timeout=1)
    assert calls == [1, 2]
    assert not bus.dead_letters


# -- drain, close, stats -------------------------------------------------------------------------


async def test_drain_on_an_idle_bus_returns_at_once(make_bus: MakeBus) -> None:
    await make_bus().drain(timeout=0.01)


async def test_drain_waits_until_everything_is_acked(make_bus: MakeBus) -> None:
    bus = make_bus(ack_timeout=10)
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
        assert await still_pending(drained, 0.02)
        sub.ack(second)
        await asyncio.wait_for(drained, 1)
    finally:
        await cancel(drained)


async def test_drain_with_timeout_raises_while_something_is_unacked(make_bus: MakeBus) -> None:
    bus = make_bus(ack_timeout=10)
    sub = bus.subscribe("t.x", name="stuck")
    await bus.publish("t.x", 1)
    envelope = await sub.get(timeout=1)
    assert envelope is not None
    with pytest.raises(
        BusError, match=r"did not drain within 0.05s: 1 messages outstanding"
    ) as info:
        await bus.drain(timeout=0.05)
    assert "'stuck'" in str(info.value)
    assert "'in_flight': 1" in str(info.value)
    sub.ack(envelope)
    await bus.drain(timeout=0.05)


async def test_closing_a_subscription_settles_what_it_held(make_bus: MakeBus) -> None:
    bus = make_bus(ack_timeout=10)
    sub = bus.subscribe("t.x", name="s")
    for i in range(3):
        await bus.publish("t.x", i)
    assert await sub.get(timeout=0) is not None
    await sub.close()
    await sub.close()  # twice: harmless
    await bus.drain(timeout=0.1)
    assert await sub.get(timeout=0) is None


async def test_close_stops_consumer_tasks(make_bus: MakeBus) -> None:
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
    consumers = [t for t in asyncio.all_tasks() if t.get_name().startswith("bus-consumer:")]
    assert {t.get_name() for t in consumers} == {"bus-consumer:busy", "bus-consumer:idle"}

    await bus.publish("t.x", 1)
    await asyncio.wait_for(started.wait(), 1)
    await asyncio.wait_for(bus.close(), 1)

    assert all(t.done() for t in consumers)
    assert cancelled.is_set()
    assert bus.stats()["subscriptions"] == {}


@pytest.mark.in_process_only(
    reason="a consumer task closed before its setup ends returns instead of being cancelled"
)
async def test_closing_a_consume_subscription_stops_its_task(make_bus: MakeBus) -> None:
    bus = make_bus()

    async def handler(envelope: Envelope) -> None:
        pass

    sub = bus.consume("t.*", handler, name="c")
    [task] = [t for t in asyncio.all_tasks() if t.get_name() == "bus-consumer:c"]
    await sub.close()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1)


async def test_close_wakes_a_waiting_pull_consumer(make_bus: MakeBus) -> None:
    bus = make_bus()
    sub = bus.subscribe("t.*", name="s")
    waiter = asyncio.create_task(sub.get())
    await asyncio.sleep(0.01)
    await bus.close()
    assert await asyncio.wait_for(waiter, 1) is None


async def test_publish_and_subscribe_after_close_raise(make_bus: MakeBus) -> None:
    bus = make_bus()
    await bus.close()
    with pytest.raises(BusError, match=r"bus is closed; cannot publish to 't.x'"):
        await bus.publish("t.x", 1)
    with pytest.raises(BusError, match="bus is closed; cannot subscribe 's'"):
        bus.subscribe("t.*", name="s")

    async def handler(envelope: Envelope) -> None:
        pass

    with pytest.raises(BusError, match="closed"):
        bus.consume("t.*", handler, name="c")


@pytest.mark.in_process_only(
    reason="`queued`/`outstanding` count local read-ahead, not the group's backlog"
)
async def test_stats_counts(make_bus: MakeBus) -> None:
    bus = make_bus()
    sub = bus.subscribe("t.*", name="s", ack_timeout=10, max_deliveries=2)
    other = bus.subscribe("t.y", name="other")
    for i in range(4):
        await bus.publish("t.x", i)
    await bus.publish("t.y", "y")
    await bus.publish("nowhere", 0)

    a = await sub.get(timeout=0)
    b = await sub.get(timeout=0)
    assert a is not None
    assert b is not None
    sub.ack(a)
    sub.nack(b)  # back in the queue, delivered again below
    b = await sub.get(timeout=0)
    assert b is not None
    sub.nack(b)  # second delivery failed: dead letter

    stats = bus.stats()
    assert stats["published"] == 6
    # 6 envelopes went out (5 to s, 1 to other); 1 acked, 1 dead-lettered.
    assert stats["outstanding"] == 4
    assert stats["dead_letters"] == 1
    assert stats["handler_errors"] == 0
    assert stats["subscriptions"]["s"] == {
        "queued": 3,
        "in_flight": 0,
        "delivered": 3,
        "acked": 1,
        "redelivered": 1,
        "dead_lettered": 1,
    }
    assert stats["subscriptions"]["other"]["queued"] == 1
    assert other.queued == 1


# -- found while testing (see the report) --------------------------------------------------------


async def test_duplicate_message_ids_in_flight_together_are_each_settled(
    make_bus: MakeBus,
) -> None:
    bus = make_bus(ack_timeout=10)
    sub = bus.subscribe("t.x", name="s")
    await bus.publish("t.x", "first", msg_id="same")
    await bus.publish("t.x", "retry", msg_id="same")
    first = await sub.get(timeout=0)
    second = await sub.get(timeout=0)
    assert first is not None
    assert second is not None
    sub.ack(first)
    sub.ack(second)
    await bus.drain(timeout=0.1)
    assert sub.acked == 2


@pytest.mark.in_process_only(reason="no publisher backpressure: no publisher is ever blocked")
@pytest.mark.parametrize("closing", ["subscription", "bus"])
async def test_closing_releases_a_blocked_publisher(make_bus: MakeBus, closing: str) -> None:
    bus = make_bus()
    sub = bus.subscribe("t.x", name="s", maxsize=1)
    await bus.publish("t.x", 1)
    blocked = asyncio.create_task(bus.publish("t.x", 2))
    try:
        assert await still_pending(blocked, 0.02)
        await (sub.close() if closing == "subscription" else bus.close())
        assert not await still_pending(blocked, 0.2), "publisher still blocked after close"
    finally:
        await cancel(blocked)


async def test_subscription_closed_during_a_blocked_publish_does_not_leak(
    make_bus: MakeBus,
) -> None:
    bus = make_bus(ack_timeout=10)
    slow = bus.subscribe("t.x", name="slow", maxsize=1)
    gone = bus.subscribe("t.x", name="gone")
    await bus.publish("t.x", 1)
    blocked = asyncio.create_task(bus.publish("t.x", 2))  # waits on `slow`
    try:
        await asyncio.sleep(0.01)
        await gone.close()
        assert await pull_all(slow) == [1, 2]
        await asyncio.wait_for(blocked, 1)
        await bus.drain(timeout=0.1)
    finally:
        await cancel(blocked)
