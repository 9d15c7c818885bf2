"""The in-process asyncio bus: the embedded default behind the `Bus` port.

Messages travel by reference (no serialisation). Each subscription owns a bounded queue, so a
slow consumer slows its publishers instead of growing memory; delivered-but-unacknowledged
envelopes are held per subscription and delivered again after `ack_timeout` or a `nack`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Collection
from typing import Any

from quantlab.bus import topics
from quantlab.bus.base import DeadLetter, Envelope, Handler
from quantlab.bus.consumer import run_consumer
from quantlab.bus.metrics import LatencyRecorder
from quantlab.core.errors import BusError

log = logging.getLogger(__name__)

DEFAULT_MAXSIZE = 10_000
DEFAULT_ACK_TIMEOUT = 30.0
DEFAULT_MAX_DELIVERIES = 5


class InProcessSubscription:
    """A pull subscription of `InProcessBus` (see `quantlab.bus.base.Subscription`)."""

    def __init__(
        self,
        bus: InProcessBus,
        pattern: str,
        name: str,
        maxsize: int,
        ack_timeout: float,
        max_deliveries: int,
    ) -> None:
        if maxsize < 1:
            raise BusError(f"subscription {name!r}: maxsize must be >= 1, got {maxsize}")
        if max_deliveries < 1:
            raise BusError(
                f"subscription {name!r}: max_deliveries must be >= 1, got {max_deliveries}"
            )
        if ack_timeout <= 0:
            raise BusError(f"subscription {name!r}: ack_timeout must be > 0, got {ack_timeout}")
        self._bus = bus
        self.pattern = pattern
        self.name = name
        self.maxsize = maxsize
        self.ack_timeout = ack_timeout
        self.max_deliveries = max_deliveries
        self._queue: asyncio.Queue[Envelope] = asyncio.Queue(maxsize)
        self._redeliver: deque[Envelope] = deque()
        # seq -> (envelope, deadline); `_order` keeps delivery order for cheap expiry checks.
        # Keyed by the per-subscription sequence number, not the message id, so that two
        # messages published with the same id are tracked (and settled) separately.
        self._in_flight: dict[int, tuple[Envelope, float]] = {}
        self._order: deque[tuple[int, int, float]] = deque()
        self._next_seq = itertools.count(1)
        self._changed = asyncio.Event()
        self._closed = False
        self.delivered = 0
        self.acked = 0
        self.redelivered = 0
        self.dead_lettered = 0

    # -- producer side --------------------------------------------------------------------
    async def _put(self, envelope: Envelope) -> None:
        if self._closed:
            self._bus._settled(1)  # counted as outstanding by publish; nobody will ack it
            return
        envelope.seq = next(self._next_seq)
        await self._queue.put(envelope)
        if self._closed:  # closed while this publisher waited for room
            self._discard_queue()
            return
        self._changed.set()

    def _discard_queue(self) -> None:
        n = 0
        while not self._queue.empty():
            self._queue.get_nowait()
            n += 1
        self._bus._settled(n)

    # -- consumer side --------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def queued(self) -> int:
        return self._queue.qsize() + len(self._redeliver)

    def _expire(self, now: float) -> float | None:
        """Move timed-out in-flight envelopes to redelivery; return the next deadline."""
        while self._order:
            seq, deliveries, deadline = self._order[0]
            held = self._in_flight.get(seq)
            if held is None or held[0].deliveries != deliveries:
                self._order.popleft()  # acked, or delivered again since
                continue
            if deadline > now:
                return deadline
            self._order.popleft()
            del self._in_flight[seq]
            self._requeue(held[0], f"not acknowledged within {self.ack_timeout}s")
        return None

    def _requeue(self, envelope: Envelope, reason: str) -> None:
        if envelope.deliveries >= self.max_deliveries:
            self.dead_lettered += 1
            self._bus._dead_letter(
                DeadLetter(envelope=envelope, subscription=self.name, reason=reason)
            )
            self._bus._settled(1)
        else:
            self.redelivered += 1
            self._redeliver.append(envelope)
        self._changed.set()

    def _hand_out(self, envelope: Envelope) -> Envelope:
        envelope.deliveries += 1
        deadline = time.monotonic() + self.ack_timeout
        self._in_flight[envelope.seq] = (envelope, deadline)
        self._order.append((envelope.seq, envelope.deliveries, deadline))
        self.delivered += 1
        return envelope

    async def get(self, timeout: float | None = None) -> Envelope | None:
        give_up = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._closed:
                return None
            now = time.monotonic()
            next_deadline = self._expire(now)
            if self._redeliver:
                return self._hand_out(self._redeliver.popleft())
            if len(self._in_flight) < self.maxsize and not self._queue.empty():
                return self._hand_out(self._queue.get_nowait())
            waits = [t for t in (next_deadline, give_up) if t is not None]
            if give_up is not None and now >= give_up:
                return None
            self._changed.clear()
            try:
                if waits:
                    await asyncio.wait_for(self._changed.wait(), max(0.0, min(waits) - now))
                else:
                    await self._changed.wait()
            except TimeoutError:
                pass

    def ack(self, envelope: Envelope) -> None:
        held = self._in_flight.pop(envelope.seq, None)
        if held is None:
            return  # already acked, or timed out and queued again: the redelivery will be acked
        self.acked += 1
        self._bus._settled(1)
        self._changed.set()

    def nack(self, envelope: Envelope, reason: str = "nack") -> None:
        held = self._in_flight.pop(envelope.seq, None)
        if held is None:
            return
        self._requeue(held[0], reason)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        outstanding = len(self._redeliver) + len(self._in_flight)
        self._redeliver.clear()
        self._in_flight.clear()
        self._order.clear()
        self._bus._unsubscribe(self, outstanding)
        self._discard_queue()  # also wakes publishers blocked on a full queue
        self._changed.set()

    def stats(self) -> dict[str, int]:
        return {
            "queued": self.queued,
            "in_flight": self.in_flight,
            "delivered": self.delivered,
            "acked": self.acked,
            "redelivered": self.redelivered,
            "dead_lettered": self.dead_lettered,
        }


class InProcessBus:
    """An asyncio event bus inside one process (the `Bus` port's embedded default).

    Parameters
    ----------
    maxsize, ack_timeout, max_deliveries
        Defaults for new subscriptions (each subscription may override them).
    urgent, urgent_defer_s
        Consumers (by name) whose work goes first: while any of them has a message queued or
        in hand, every other consumer waits before handling its next one, but never past
        `urgent_defer_s` after that urgent work began (an urgent handler waiting on a venue's
        answer holds the others back once, not on every message). A live engine names its
        order path (features, strategies, order builder, risk, execution), so that a signal
        does not queue behind every market-data handler of the batch that caused it. Empty
        (the default, and a backtest's): consumers take turns in the order messages reach them.
    """

    def __init__(
        self,
        *,
        maxsize: int = DEFAULT_MAXSIZE,
        ack_timeout: float = DEFAULT_ACK_TIMEOUT,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        urgent: Collection[str] = (),
        urgent_defer_s: float = 0.005,
    ) -> None:
        if not urgent_defer_s > 0:
            raise BusError(f"urgent_defer_s must be > 0 seconds, got {urgent_defer_s}")
        self._defaults = (maxsize, ack_timeout, max_deliveries)
        self.urgent = frozenset(urgent)
        self.urgent_defer_s = urgent_defer_s
        self._urgent_subs: list[InProcessSubscription] = []
        self._urgent_idle = asyncio.Event()
        self._urgent_idle.set()
        self._urgent_until = 0.0  # others defer until then (perf_counter), at most
        self.deferred = 0  # messages a consumer held back for urgent work
        self._subs: list[InProcessSubscription] = []
        self._routes: dict[str, tuple[InProcessSubscription, ...]] = {}
        self._tasks: dict[InProcessSubscription, asyncio.Task[None]] = {}
        self._seq = itertools.count(1)
        self._outstanding = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._settle_waiters: list[tuple[int, asyncio.Future[None]]] = []  # (own, waiter)
        self._closed = False
        self.published = 0
        self.dead_lettered = 0
        self.dead_letters: deque[DeadLetter] = deque(maxlen=1000)
        self.handler_errors: list[tuple[str, BaseException]] = []
        # Per-consumer handler time (`quantlab.bus.metrics`), less what `settle` waited.
        self.latency = LatencyRecorder()
        self._settle_wait: dict[InProcessSubscription, float] = {}
        self._current: dict[asyncio.Task[Any], InProcessSubscription] = {}

    # -- subscriptions --------------------------------------------------------------------
    def subscribe(
        self,
        pattern: str,
        *,
        name: str,
        maxsize: int | None = None,
        ack_timeout: float | None = None,
        max_deliveries: int | None = None,
    ) -> InProcessSubscription:
        if self._closed:
            raise BusError(f"bus is closed; cannot subscribe {name!r} to {pattern!r}")
        d_max, d_ack, d_del = self._defaults
        sub = InProcessSubscription(
            self,
            topics.check_pattern(pattern),
            name,
            maxsize if maxsize is not None else d_max,
            ack_timeout if ack_timeout is not None else d_ack,
            max_deliveries if max_deliveries is not None else d_del,
        )
        self._subs.append(sub)
        if name in self.urgent:
            self._urgent_subs.append(sub)
        self._routes.clear()
        return sub

    def consume(
        self,
        pattern: str,
        handler: Handler,
        *,
        name: str,
        maxsize: int | None = None,
        max_deliveries: int | None = None,
    ) -> InProcessSubscription:
        sub = self.subscribe(pattern, name=name, maxsize=maxsize, max_deliveries=max_deliveries)
        task = asyncio.get_running_loop().create_task(
            self._run_handler(sub, handler), name=f"bus-consumer:{name}"
        )
        self._tasks[sub] = task
        self._current[task] = sub
        return sub

    async def _run_handler(self, sub: InProcessSubscription, handler: Handler) -> None:
        if self.urgent:
            handler = (
                self._urgent_handler(handler)
                if sub.name in self.urgent
                else self._deferring_handler(sub, handler)
            )
        await run_consumer(
            sub,
            handler,
            closed=lambda: self._closed,
            errors=self.handler_errors,
            latency=self.latency,
            waited=lambda: self._settle_wait.pop(sub, 0.0),
        )

    def _urgent_handler(self, handler: Handler) -> Handler:
        async def urgent(envelope: Envelope) -> None:
            try:
                await handler(envelope)
            finally:  # this envelope is still in flight until acked: it is the "- 1"
                if self._urgent_pending() - 1 <= 0:
                    self._urgent_idle.set()

        return urgent

    def _urgent_pending(self) -> int:
        return sum(s.queued + s.in_flight for s in self._urgent_subs)

    def _deferring_handler(self, sub: InProcessSubscription, handler: Handler) -> Handler:
        async def deferring(envelope: Envelope) -> None:
            if not self._urgent_idle.is_set() and not self._urgent_pending():
                self._urgent_idle.set()  # urgent envelopes dropped unhandled (a closed sub)
            started = time.perf_counter()
            if not self._urgent_idle.is_set() and started < self._urgent_until:
                self.deferred += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent_idle.wait(), self._urgent_until - started)
                # waiting for others is not this handler's time (as with `settle`)
                waited = time.perf_counter() - started
                self._settle_wait[sub] = self._settle_wait.get(sub, 0.0) + waited
            await handler(envelope)

        return deferring

    def _unsubscribe(self, sub: InProcessSubscription, outstanding: int) -> None:
        if sub in self._urgent_subs:
            self._urgent_subs.remove(sub)
        if sub in self._subs:
            self._subs.remove(sub)
            self._routes.clear()
            self._settled(outstanding)
        task = self._tasks.pop(sub, None)
        if task is not None:
            self._current.pop(task, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _route(self, topic: str) -> tuple[InProcessSubscription, ...]:
        found = self._routes.get(topic)
        if found is None:
            topics.check_topic(topic)
            found = tuple(s for s in self._subs if topics.matches(s.pattern, topic))
            self._routes[topic] = found
        return found

    # -- publishing -----------------------------------------------------------------------
    async def publish(self, topic: str, payload: Any, *, msg_id: str | None = None) -> str:
        if self._closed:
            raise BusError(f"bus is closed; cannot publish to {topic!r}")
        subs = self._route(topic)
        msg_id = msg_id or f"m{next(self._seq)}"
        ts = time.time_ns()
        self.published += 1
        if not subs:
            return msg_id
        self._outstanding += len(subs)
        self._idle.clear()
        if self._urgent_subs and any(sub.name in self.urgent for sub in subs):
            if self._urgent_idle.is_set():  # urgent work starts: others defer until at most
                self._urgent_until = time.perf_counter() + self.urgent_defer_s
            self._urgent_idle.clear()
        for sub in subs:
            await sub._put(Envelope(id=msg_id, topic=topic, payload=payload, ts_publish=ts))
        return msg_id

    def _settled(self, n: int) -> None:
        self._outstanding -= n
        if self._outstanding <= 0:
            self._outstanding = 0
            self._idle.set()
        if self._settle_waiters:
            waiting = []
            for own, fut in self._settle_waiters:
                if self._outstanding > own:
                    waiting.append((own, fut))
                elif not fut.done():
                    fut.set_result(None)
            self._settle_waiters = waiting

    def _dead_letter(self, letter: DeadLetter) -> None:
        self.dead_lettered += 1
        self.dead_letters.append(letter)
        log.warning(
            "dead letter from %s on %s after %d deliveries: %s",
            letter.subscription,
            letter.envelope.topic,
            letter.envelope.deliveries,
            letter.reason,
        )
        if letter.envelope.topic != topics.DEAD_LETTER:
            for sub in self._route(topics.DEAD_LETTER):
                if sub._queue.full():
                    continue  # never block the stream on the dead-letter consumer
                self._outstanding += 1
                self._idle.clear()
                sub._queue.put_nowait(
                    Envelope(
                        id=f"dl-{letter.envelope.id}-{letter.subscription}",
                        topic=topics.DEAD_LETTER,
                        payload=letter,
                        ts_publish=time.time_ns(),
                        seq=next(sub._next_seq),
                    )
                )
                sub._changed.set()

    # -- lifecycle ------------------------------------------------------------------------
    async def drain(self, timeout: float | None = None) -> None:
        if timeout is None:
            await self._idle.wait()
            return
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            raise BusError(
                f"bus did not drain within {timeout}s: {self._outstanding} messages outstanding "
                f"({ {s.name: s.stats() for s in self._subs} })"
            ) from None

    async def settle(self, own: int = 1, timeout: float = 60.0) -> None:
        """Wait until every message but the caller's `own` in-flight ones is handled.

        A handler calls it to let the consequences of what it published so far play out
        before it publishes more (the backtest's strategies between two decision times).
        """
        if self._outstanding <= own:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._settle_waiters.append((own, fut))
        started = time.perf_counter()
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise BusError(
                f"bus did not settle within {timeout}s: {self._outstanding} outstanding"
            ) from None
        finally:
            task = asyncio.current_task()
            sub = self._current.get(task) if task is not None else None
            if sub is not None:  # a consumer's handler waited: not its own time
                waited = time.perf_counter() - started
                self._settle_wait[sub] = self._settle_wait.get(sub, 0.0) + waited

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks.values())
        for sub in list(self._subs):
            await sub.close()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def stats(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "outstanding": self._outstanding,
            "dead_letters": self.dead_lettered,
            "handler_errors": len(self.handler_errors),
            "subscriptions": {s.name: s.stats() for s in self._subs},
        }
