"""`RedisStreamsBus`: the `Bus` port on Redis Streams, for buses that span processes and machines.

Layout (``<p>`` is ``<prefix>:<namespace>``):

- ``<p>:t:<topic>``: one stream per topic. An entry holds one or more events (`publish_many`
  packs up to `batch_size` events per entry), encoded by `quantlab.adapters.redis.codec`.
- ``<p>:topics``: a set of every topic published so far. A subscription (a glob pattern and a
  name) is one consumer group, named after the subscription, on every matching stream; it finds
  streams created later by polling this set (every `discover_interval` seconds) and, for
  publishes through the same bus instance, at once.
- ``<p>:live``: a hash, subscription name -> number of open subscriptions of that name.
  `drain` waits only for groups someone is subscribed to (a closed subscription's group stays,
  with its messages, for the next consumer of that name).

Delivery is at-least-once. Each subscription instance is one consumer of its groups. Events it
hands out are tracked locally (deadline `ack_timeout`, `nack` redelivers at once, after
`max_deliveries` the event goes to ``system.deadletter``); an entry is XACKed once all its
events are acknowledged or dead-lettered. Entries left pending by a consumer that died (or
closed without acknowledging) are taken over with XAUTOCLAIM after `ack_timeout` by another
consumer of the same group; their XPENDING delivery count decides the dead letter. A live
consumer refreshes the idle time of the entries it holds (XCLAIM ... JUSTID), so they are not
taken from it while it works.

Differences from `InProcessBus` (payloads are copies, not references; there is no publisher
backpressure, streams are trimmed to `maxlen` instead; `queued` counts what this consumer has
read from Redis but not handed out yet) are listed in ``tests/integration/bus/test_redis_bus.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError, ResponseError

from quantlab.adapters.redis import codec
from quantlab.bus import topics
from quantlab.bus.base import DeadLetter, Envelope, Handler
from quantlab.bus.consumer import run_consumer
from quantlab.bus.metrics import LatencyRecorder
from quantlab.core.errors import BusError, CodecError

log = logging.getLogger(__name__)

DEFAULT_MAXSIZE = 10_000
DEFAULT_ACK_TIMEOUT = 30.0
DEFAULT_MAX_DELIVERIES = 5
DEFAULT_BATCH_SIZE = 500
YIELD_AFTER_S = 0.002  # `get` hands out read events this long before it yields to the loop
_FIELD = b"e"

# (stream key, entry id, index of the event inside the entry)
_Ref = tuple[str, str, int]


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _sid(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class _Held:
    """An entry this consumer holds: the events of it not settled yet."""

    remaining: set[int] = field(default_factory=set)


class _Decoded:
    """The entry being handed out: its events as columns, envelopes made one by one (few
    objects live at once: less garbage-collector work than an envelope per event up front)."""

    __slots__ = ("entry_id", "ids", "payloads", "pos", "stream", "topic", "ts")

    def __init__(self, stream: str, entry_id: str, topic: str, columns: codec.Columns) -> None:
        self.stream = stream
        self.entry_id = entry_id
        self.topic = topic
        self.ids, self.ts, self.payloads = columns
        self.pos = 0

    @property
    def left(self) -> int:
        return len(self.ids) - self.pos


class RedisSubscription:
    """A pull subscription of `RedisStreamsBus` (see `quantlab.bus.base.Subscription`)."""

    def __init__(
        self,
        bus: RedisStreamsBus,
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
        self.consumer = f"{bus.consumer_id}:{next(bus._sub_counter)}"
        self._streams: dict[str, str] = {}  # stream key -> topic, for every joined group
        self._known: set[str] = set()  # topics looked at (matching or not)
        self._ready: deque[tuple[Envelope, _Ref]] = deque()
        # Entries read but not decoded yet (stream, id, fields, number of events): decoded one
        # at a time into `_cur` as it runs dry, so few decoded events live at once (less GC).
        self._unread: deque[tuple[str, str, dict[bytes, bytes], int]] = deque()
        self._unread_events = 0
        self._cur: _Decoded | None = None  # the entry being handed out (after `_ready`)
        self._redeliver: deque[tuple[Envelope, _Ref]] = deque()
        self._in_flight: dict[int, tuple[Envelope, _Ref, float]] = {}
        # (deadline, seq) in hand-out order, so in deadline order; entries whose event has been
        # settled or handed out again since are skipped (`_expire`)
        self._deadlines: deque[tuple[float, int]] = deque()
        self._held: dict[tuple[str, str], _Held] = {}
        self._acking: set[tuple[str, str]] = set()  # settled, XACK not written yet
        self._seq = itertools.count(1)
        self._changed = asyncio.Event()
        self._setup_task: asyncio.Task[None] | None = None
        self._read_task: asyncio.Task[Any] | None = None
        self._live = False
        self._closed = False
        self._next_discover = 0.0
        self._next_claim = 0.0
        self._resumed = 0.0  # when `get` last resumed from an await (see `YIELD_AFTER_S`)
        self.delivered = 0
        self.acked = 0
        self.redelivered = 0
        self.dead_lettered = 0

    # -- setup ------------------------------------------------------------------------------
    async def _setup(self) -> None:
        bus = self._bus
        async with bus._redis.pipeline(transaction=False) as pipe:
            pipe.hset(bus._patterns_key, self.name, self.pattern)
            pipe.hincrby(bus._live_key, self.name, 1)
            await pipe.execute()
        self._live = True
        existing = await bus._redis.smembers(bus._registry_key)
        # Streams that exist now: new messages only ("$"); streams found later start at "0".
        await self._join([_s(t) for t in existing], start="$")
        self._next_discover = time.monotonic() + bus.discover_interval

    async def _ready_for_use(self) -> None:
        if self._setup_task is None:
            self._setup_task = asyncio.get_running_loop().create_task(self._setup())
        if not self._setup_task.done():
            await asyncio.shield(self._setup_task)
        self._setup_task.result()

    async def _join(self, names: Iterable[str], start: str) -> None:
        new = [t for t in names if t not in self._known]
        self._known.update(new)
        wanted = [t for t in new if topics.matches(self.pattern, t)]
        if not wanted:
            return
        bus = self._bus
        async with bus._redis.pipeline(transaction=False) as pipe:
            for topic in wanted:
                pipe.xgroup_create(bus.stream_key(topic), self.name, id=start, mkstream=True)
            results = await pipe.execute(raise_on_error=False)
        for topic, result in zip(wanted, results, strict=True):
            if isinstance(result, Exception) and "BUSYGROUP" not in str(result):
                raise BusError(f"cannot create group {self.name!r} on {topic!r}: {result}")
            self._streams[bus.stream_key(topic)] = topic
        self._changed.set()  # wakes a `get` waiting with no stream to read from

    async def _discover(self) -> None:
        bus = self._bus
        self._next_discover = time.monotonic() + bus.discover_interval
        found = await bus._redis.smembers(bus._registry_key)
        await self._join([_s(t) for t in found], start="0")

    # -- counters ---------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def queued(self) -> int:
        """Read from Redis by this consumer and not handed out yet (see the module doc)."""
        cur = self._cur
        left = cur.left if cur is not None else 0
        return len(self._ready) + len(self._redeliver) + self._unread_events + left

    # -- reading ----------------------------------------------------------------------------
    def _undecodable(self, stream: str, entry_id: str, topic: str, exc: Exception) -> None:
        """A corrupt entry can never be handled: dead-letter it."""
        self._held.pop((stream, entry_id), None)
        log.error("undecodable entry %s on %s: %s", entry_id, stream, exc)
        letter = DeadLetter(
            envelope=Envelope(id=entry_id, topic=topic, payload=None, ts_publish=0),
            subscription=self.name,
            reason=f"undecodable: {exc}",
        )
        self._bus._dead_letter(letter)
        self._bus._queue_ack(stream, self, entry_id)

    def _add_entry(
        self, stream: str, entry_id: str, fields: dict[bytes, bytes]
    ) -> list[tuple[Envelope, _Ref]]:
        topic = self._streams.get(stream) or self._bus.topic_of(stream)
        try:
            events = codec.decode_events(fields[_FIELD])
        except Exception as exc:
            self._undecodable(stream, entry_id, topic, exc)
            return []
        self._held[(stream, entry_id)] = _Held(set(range(len(events))))
        out = []
        for i, (msg_id, ts, payload) in enumerate(events):
            envelope = Envelope(
                id=msg_id, topic=topic, payload=payload, ts_publish=ts, seq=next(self._seq)
            )
            out.append((envelope, (stream, entry_id, i)))
        return out

    async def _read(self, block_ms: int | None) -> None:
        if not self._streams:
            if block_ms:  # until a stream is joined (`_join` sets `_changed`) or the time is up
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), block_ms / 1000)
            return
        bus = self._bus
        resp: Any = await bus._redis.xreadgroup(
            self.name,
            self.consumer,
            dict.fromkeys(self._streams, ">"),
            count=max(1, min(bus.read_count, self.maxsize - len(self._in_flight))),
            block=block_ms or None,
        )
        for stream, entries in resp or []:
            key = _s(stream)
            for entry_id_b, fields in entries:
                entry_id = _s(entry_id_b)
                try:
                    n = codec.count_events(fields[_FIELD])
                except Exception:  # corrupt: `_add_entry` dead-letters it
                    self._ready.extend(self._add_entry(key, entry_id, fields))
                    continue
                # held from now on (refreshed by `_claim`, not taken over as someone else's)
                self._held[(key, entry_id)] = _Held(set(range(n)))
                self._unread.append((key, entry_id, fields, n))
                self._unread_events += n

    def _fill(self) -> bool:
        """Whether an event read is ready to hand out (`_next`), decoding the next entry read
        if the current one is done."""
        if self._ready:
            return True
        cur = self._cur
        while cur is None or cur.pos >= len(cur.ids):
            if not self._unread:
                self._cur = None
                return False
            stream, entry_id, fields, n = self._unread.popleft()
            self._unread_events -= n
            topic = self._streams.get(stream) or self._bus.topic_of(stream)
            try:
                cur = _Decoded(stream, entry_id, topic, codec.decode_columns(fields[_FIELD]))
                if len(cur.ids) != n:
                    raise CodecError(f"{len(cur.ids)} events, its header says {n}")
            except Exception as exc:
                self._undecodable(stream, entry_id, topic, exc)
                cur = None
            self._cur = cur
        return True

    def _next(self) -> tuple[Envelope, _Ref]:
        """The next event read (`_fill` said there is one)."""
        if self._ready:
            return self._ready.popleft()
        cur = self._cur
        if cur is None:
            raise BusError(f"subscription {self.name!r}: nothing read to hand out")
        i = cur.pos
        cur.pos = i + 1
        ts = cur.ts
        envelope = Envelope(
            id=cur.ids[i],
            topic=cur.topic,
            payload=cur.payloads[i],
            ts_publish=ts if isinstance(ts, int) else ts[i],
            seq=next(self._seq),
        )
        return envelope, (cur.stream, cur.entry_id, i)

    async def _claim(self) -> None:
        """Refresh what we hold; take over entries other consumers left pending too long."""
        bus = self._bus
        self._next_claim = time.monotonic() + min(bus.claim_interval, self.ack_timeout / 3)
        idle_ms = max(1, int(self.ack_timeout * 1000))
        streams = list(self._streams)
        held: dict[str, list[Any]] = {}
        for stream, entry_id in self._held:
            held.setdefault(stream, []).append(entry_id)
        async with bus._redis.pipeline(transaction=False) as pipe:
            for stream, ids in held.items():
                pipe.xclaim(stream, self.name, self.consumer, 0, ids, justid=True)
            for stream in streams:
                pipe.xautoclaim(stream, self.name, self.consumer, idle_ms, "0-0", count=100)
            results = await pipe.execute(raise_on_error=False)
        claimed_results: list[Any] = results[len(held) :]
        stolen: list[tuple[str, str, dict[bytes, bytes]]] = []
        for stream, result in zip(streams, claimed_results, strict=True):
            if isinstance(result, Exception):
                log.warning("XAUTOCLAIM on %s failed: %s", stream, result)
                continue
            for entry_id_b, fields in result[1]:
                entry_id = _s(entry_id_b)
                key = (stream, entry_id)
                if key in self._held or key in self._acking or fields is None:
                    continue  # ours already (tracked locally), or trimmed away
                stolen.append((stream, entry_id, fields))
        if not stolen:
            return
        # The delivery count of each stolen entry (XAUTOCLAIM has just incremented it).
        async with bus._redis.pipeline(transaction=False) as pipe:
            for stream, entry_id, _ in stolen:
                pipe.xpending_range(stream, self.name, entry_id, entry_id, 1)
            counts = await pipe.execute(raise_on_error=False)
        for (stream, entry_id, fields), info in zip(stolen, counts, strict=True):
            times = 1
            if not isinstance(info, Exception) and info:
                times = int(info[0]["times_delivered"])
            for envelope, ref in self._add_entry(stream, entry_id, fields):
                envelope.deliveries = times - 1
                if envelope.deliveries >= self.max_deliveries:
                    self._give_up(envelope, ref, f"not acknowledged within {self.ack_timeout}s")
                else:
                    self.redelivered += 1
                    self._redeliver.append((envelope, ref))

    # -- handing out ------------------------------------------------------------------------
    def _expire(self, now: float) -> float | None:
        """Requeue what is in flight past its deadline; the next deadline (None: nothing held).
        Amortised O(1): only the front of `_deadlines` is looked at."""
        deadlines = self._deadlines
        in_flight = self._in_flight
        while deadlines:
            deadline, seq = deadlines[0]
            held = in_flight.get(seq)
            if held is None or held[2] != deadline:
                deadlines.popleft()  # settled, or handed out again (a later entry is queued)
                continue
            if deadline > now:
                return deadline
            deadlines.popleft()
            del in_flight[seq]
            self._requeue(held[0], held[1], f"not acknowledged within {self.ack_timeout}s")
        return None

    def _hand_out(self, item: tuple[Envelope, _Ref]) -> Envelope:
        envelope, ref = item
        envelope.deliveries += 1
        deadline = time.monotonic() + self.ack_timeout
        self._in_flight[envelope.seq] = (envelope, ref, deadline)
        self._deadlines.append((deadline, envelope.seq))
        self.delivered += 1
        return envelope

    async def get(self, timeout: float | None = None) -> Envelope | None:
        # Fast path, the loop below in short when an event read is waiting, there is room and
        # no deadline has passed (claims and discovery wait until nothing read is left, there
        # too). Reads only happen once the setup has succeeded.
        if (self._ready or self._cur or self._unread) and not self._redeliver and not self._closed:
            deadlines = self._deadlines
            if (
                len(self._in_flight) < self.maxsize
                and (not deadlines or deadlines[0][0] > time.monotonic())
                and self._fill()
            ):
                now = time.monotonic()
                if now - self._resumed < YIELD_AFTER_S:
                    return self._hand_out(self._next())
                # A backlog and handlers that never suspend would starve the other tasks (the
                # acknowledgement flusher, the order path's consumers): after YIELD_AFTER_S of
                # handing out without a pause, let every other ready task run once.
                await asyncio.sleep(0)
                self._resumed = time.monotonic()
        give_up = None if timeout is None else time.monotonic() + timeout
        try:
            await self._ready_for_use()
            first = True
            while True:
                if self._closed:
                    return None
                now = time.monotonic()
                next_deadline = self._expire(now)
                if self._redeliver:
                    return self._hand_out(self._redeliver.popleft())
                room = len(self._in_flight) < self.maxsize
                if room and self._fill():
                    return self._hand_out(self._next())
                if now >= self._next_claim:
                    await self._claim()
                    if self._redeliver:
                        continue
                if now >= self._next_discover:
                    await self._discover()
                if give_up is not None and now >= give_up and not first:
                    return None
                first = False
                waits = [self._next_claim, self._next_discover]
                waits += [t for t in (next_deadline, give_up) if t is not None]
                wait = max(0.0, min(waits) - now)
                if room:
                    block = min(int(wait * 1000), self._bus.block_ms)
                    self._read_task = asyncio.get_running_loop().create_task(
                        self._read(block if block > 0 else None)
                    )
                    await self._read_task
                else:
                    self._changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), wait)
                self._resumed = time.monotonic()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closed and task is not None and not task.cancelling():
                return None
            raise
        except (RedisError, OSError):
            if self._closed or self._bus._closed:
                return None
            raise
        finally:
            self._read_task = None

    # -- settling ---------------------------------------------------------------------------
    def _settle(self, ref: _Ref) -> None:
        stream, entry_id, index = ref
        held = self._held.get((stream, entry_id))
        if held is None:
            return
        held.remaining.discard(index)
        if not held.remaining:
            del self._held[(stream, entry_id)]
            self._acking.add((stream, entry_id))
            self._bus._queue_ack(stream, self, entry_id)

    def _give_up(self, envelope: Envelope, ref: _Ref, reason: str) -> None:
        self.dead_lettered += 1
        self._bus._dead_letter(DeadLetter(envelope=envelope, subscription=self.name, reason=reason))
        self._settle(ref)

    def _requeue(self, envelope: Envelope, ref: _Ref, reason: str) -> None:
        if envelope.deliveries >= self.max_deliveries:
            self._give_up(envelope, ref, reason)
        else:
            self.redelivered += 1
            self._redeliver.append((envelope, ref))
        self._changed.set()

    def ack(self, envelope: Envelope) -> None:
        held = self._in_flight.pop(envelope.seq, None)
        if held is None:
            return
        self.acked += 1
        self._settle(held[1])
        self._changed.set()

    def nack(self, envelope: Envelope, reason: str = "nack") -> None:
        held = self._in_flight.pop(envelope.seq, None)
        if held is None:
            return
        self._requeue(held[0], held[1], reason)

    async def close(self) -> None:
        """Stop consuming. What this consumer held stays pending in Redis: another consumer of
        the same name takes it over after `ack_timeout`."""
        if self._closed:
            return
        self._closed = True
        self._ready.clear()
        self._unread.clear()
        self._unread_events = 0
        self._cur = None
        self._redeliver.clear()
        self._in_flight.clear()
        self._deadlines.clear()
        self._held.clear()
        self._changed.set()
        if self._read_task is not None and not self._read_task.done():
            self._read_task.cancel()
        if self._setup_task is not None and not self._setup_task.done():
            self._setup_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await self._setup_task
        await self._bus._unsubscribe(self)

    def stats(self) -> dict[str, int]:
        return {
            "queued": self.queued,
            "in_flight": self.in_flight,
            "delivered": self.delivered,
            "acked": self.acked,
            "redelivered": self.redelivered,
            "dead_lettered": self.dead_lettered,
        }


class RedisStreamsBus:
    """The `Bus` port on Redis Streams (consumer groups, XACK, XAUTOCLAIM).

    Parameters
    ----------
    client
        A ``redis.asyncio.Redis`` (kept open on `close`), or a URL (the bus owns the client).
    namespace, prefix
        Keys are ``<prefix>:<namespace>:...``: buses sharing both share topics.
    maxsize, ack_timeout, max_deliveries
        Defaults for new subscriptions.
    maxlen
        Approximate cap on each stream's entries (``XADD MAXLEN ~``); None keeps everything.
    batch_size
        Events per stream entry in `publish_many`.
    """

    def __init__(
        self,
        client: redis.Redis | str,
        *,
        namespace: str = "default",
        prefix: str = "ql",
        maxsize: int = DEFAULT_MAXSIZE,
        ack_timeout: float = DEFAULT_ACK_TIMEOUT,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        maxlen: int | None = 1_000_000,
        batch_size: int = DEFAULT_BATCH_SIZE,
        read_count: int = 64,
        block_ms: int = 100,
        discover_interval: float = 0.2,
        claim_interval: float = 1.0,
    ) -> None:
        if isinstance(client, str):
            self._redis: redis.Redis = redis.Redis.from_url(client)
            self._owns_client = True
        else:
            self._redis = client
            self._owns_client = False
        self._base = f"{prefix}:{namespace}"
        self._stream_prefix = f"{self._base}:t:"
        self._registry_key = f"{self._base}:topics"
        self._live_key = f"{self._base}:live"
        self._patterns_key = f"{self._base}:patterns"
        self._defaults = (maxsize, ack_timeout, max_deliveries)
        self.maxlen = maxlen
        self.batch_size = batch_size
        self.read_count = read_count
        self.block_ms = block_ms
        self.discover_interval = discover_interval
        self.claim_interval = claim_interval
        self.consumer_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._sub_counter = itertools.count(1)
        self._subs: list[RedisSubscription] = []
        self._tasks: dict[RedisSubscription, asyncio.Task[None]] = {}
        self._registered: set[str] = set()
        self._last_ids: dict[str, str] = {}  # stream -> last entry id published here
        self._acks: list[tuple[str, RedisSubscription, str]] = []
        self._dead_out: list[DeadLetter] = []
        self._flush_wanted = asyncio.Event()
        self._flushed = asyncio.Event()
        self._flushed.set()
        self._flusher: asyncio.Task[None] | None = None
        self._seq = itertools.count(1)
        self._id_prefix = uuid.uuid4().hex[:12]
        self._closed = False
        self.published = 0
        self.dead_lettered = 0
        self.dead_letters: deque[DeadLetter] = deque(maxlen=1000)
        self.handler_errors: list[tuple[str, BaseException]] = []
        self.latency = LatencyRecorder()

    # -- keys -------------------------------------------------------------------------------
    def stream_key(self, topic: str) -> str:
        return self._stream_prefix + topic

    def topic_of(self, stream: str) -> str:
        return stream.removeprefix(self._stream_prefix)

    # -- subscriptions ----------------------------------------------------------------------
    def subscribe(
        self,
        pattern: str,
        *,
        name: str,
        maxsize: int | None = None,
        ack_timeout: float | None = None,
        max_deliveries: int | None = None,
    ) -> RedisSubscription:
        if self._closed:
            raise BusError(f"bus is closed; cannot subscribe {name!r} to {pattern!r}")
        d_max, d_ack, d_del = self._defaults
        sub = RedisSubscription(
            self,
            topics.check_pattern(pattern),
            name,
            maxsize if maxsize is not None else d_max,
            ack_timeout if ack_timeout is not None else d_ack,
            max_deliveries if max_deliveries is not None else d_del,
        )
        with contextlib.suppress(RuntimeError):  # no running loop: set up on first use
            sub._setup_task = asyncio.get_running_loop().create_task(sub._setup())
        self._subs.append(sub)
        return sub

    def consume(
        self,
        pattern: str,
        handler: Handler,
        *,
        name: str,
        maxsize: int | None = None,
        max_deliveries: int | None = None,
    ) -> RedisSubscription:
        sub = self.subscribe(pattern, name=name, maxsize=maxsize, max_deliveries=max_deliveries)
        task = asyncio.get_running_loop().create_task(
            self._run_handler(sub, handler), name=f"bus-consumer:{name}"
        )
        self._tasks[sub] = task
        return sub

    async def _run_handler(self, sub: RedisSubscription, handler: Handler) -> None:
        await run_consumer(
            sub,
            handler,
            closed=lambda: self._closed,
            errors=self.handler_errors,
            latency=self.latency,
        )

    async def _unsubscribe(self, sub: RedisSubscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
        task = self._tasks.pop(sub, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        await self._flush_now()
        if sub._live:
            sub._live = False
            with contextlib.suppress(RedisError, OSError):
                await self._redis.hincrby(self._live_key, sub.name, -1)

    # -- publishing -------------------------------------------------------------------------
    async def _before_publish(self, topic: str) -> None:
        if self._closed:
            raise BusError(f"bus is closed; cannot publish to {topic!r}")
        topics.check_topic(topic)
        await self._join_local(topic)

    async def _join_local(self, topic: str) -> None:
        for sub in list(self._subs):
            if sub._closed:
                continue
            await sub._ready_for_use()
            if topic not in sub._known:
                # A topic new to this subscription: all its entries come after its setup.
                await sub._join([topic], start="0")

    def _next_id(self) -> str:
        return f"{self._id_prefix}-{next(self._seq)}"

    async def publish(self, topic: str, payload: Any, *, msg_id: str | None = None) -> str:
        [msg_id] = await self.publish_many(topic, [payload], msg_ids=[msg_id] if msg_id else None)
        return msg_id

    async def publish_many(
        self, topic: str, payloads: Sequence[Any], *, msg_ids: Sequence[str] | None = None
    ) -> list[str]:
        """Publish several payloads to one topic, `batch_size` events per stream entry,
        in one round trip. Returns their ids."""
        await self._before_publish(topic)
        if msg_ids is not None and len(msg_ids) != len(payloads):
            raise BusError(f"{len(msg_ids)} ids for {len(payloads)} payloads")
        if msg_ids is not None:
            ids = list(msg_ids)
        else:
            prefix = self._id_prefix
            ids = [f"{prefix}-{n}" for n in itertools.islice(self._seq, len(payloads))]
        if not payloads:
            return ids
        await self._xadd(topic, ids, time.time_ns(), payloads)
        self.published += len(payloads)
        return ids

    async def _xadd(self, topic: str, ids: Sequence[str], ts: int, payloads: Sequence[Any]) -> None:
        stream = self.stream_key(topic)
        size = self.batch_size
        chunks = [
            codec.encode_batch(ids[i : i + size], ts, payloads[i : i + size])
            for i in range(0, len(payloads), size)
        ]
        if len(chunks) == 1 and topic in self._registered:  # one command: no pipeline needed
            entry_id = await self._redis.xadd(
                stream, {_FIELD: chunks[0]}, maxlen=self.maxlen, approximate=self.maxlen is not None
            )
            self._last_ids[stream] = _s(entry_id)
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            if topic not in self._registered:
                pipe.sadd(self._registry_key, topic)
            for data in chunks:
                pipe.xadd(
                    stream,
                    {_FIELD: data},
                    maxlen=self.maxlen,
                    approximate=self.maxlen is not None,
                )
            results = await pipe.execute()
        self._registered.add(topic)
        self._last_ids[stream] = _s(results[-1])

    # -- acknowledgements and dead letters (batched in a background flusher) ----------------
    def _queue_ack(self, stream: str, sub: RedisSubscription, entry_id: str) -> None:
        self._acks.append((stream, sub, entry_id))
        self._kick()

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
            self._dead_out.append(letter)
            self._kick()

    def _kick(self) -> None:
        self._flushed.clear()
        self._flush_wanted.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush_loop(), name="redis-bus-flusher"
            )

    async def _flush_loop(self) -> None:
        while True:
            await self._flush_wanted.wait()
            self._flush_wanted.clear()
            try:
                await self._flush_once()
            except (RedisError, OSError) as exc:
                log.error("redis bus: acknowledgements not written: %s", exc)
                await asyncio.sleep(0.1)
                self._flush_wanted.set()
                continue
            if not self._acks and not self._dead_out:
                self._flushed.set()

    async def _flush_once(self) -> None:
        acks, self._acks = self._acks, []
        dead, self._dead_out = self._dead_out, []
        if not acks and not dead:
            return
        try:
            if dead:
                await self._join_local(topics.DEAD_LETTER)
            async with self._redis.pipeline(transaction=False) as pipe:
                for letter in dead:
                    data = codec.encode_events(
                        [
                            (
                                f"dl-{letter.envelope.id}-{letter.subscription}",
                                time.time_ns(),
                                letter,
                            )
                        ]
                    )
                    pipe.sadd(self._registry_key, topics.DEAD_LETTER)
                    pipe.xadd(
                        self.stream_key(topics.DEAD_LETTER),
                        {_FIELD: data},
                        maxlen=self.maxlen,
                        approximate=self.maxlen is not None,
                    )
                grouped: dict[tuple[str, str], list[str]] = {}
                for stream, sub, entry_id in acks:
                    grouped.setdefault((stream, sub.name), []).append(entry_id)
                for (stream, group), ids in grouped.items():
                    pipe.xack(stream, group, *ids)
                results = await pipe.execute()
        except BaseException:
            self._acks[:0] = acks
            self._dead_out[:0] = dead
            raise
        for stream, sub, entry_id in acks:
            sub._acking.discard((stream, entry_id))
        if dead:
            self._registered.add(topics.DEAD_LETTER)
            stream = self.stream_key(topics.DEAD_LETTER)
            self._last_ids[stream] = _s(results[2 * len(dead) - 1])

    async def _flush_now(self) -> None:
        if self._acks or self._dead_out or not self._flushed.is_set():
            self._kick()
            await self._flushed.wait()

    # -- lifecycle --------------------------------------------------------------------------
    async def _unsettled(self) -> dict[str, dict[str, int]]:
        """Groups (of live subscriptions) on streams published to here that are not done."""
        streams = list(self._last_ids.items())
        if not streams:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._live_key)
            pipe.hgetall(self._patterns_key)
            live_raw, patterns_raw = await pipe.execute()
        live = {_s(k) for k, v in live_raw.items() if int(v) > 0}
        patterns = {_s(k): _s(v) for k, v in patterns_raw.items()}
        out: dict[str, dict[str, int]] = {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream, _ in streams:
                pipe.xinfo_groups(stream)
            infos = await pipe.execute(raise_on_error=False)
        checks: list[tuple[str, str, str, dict[str, Any]]] = []
        for (stream, last), groups in zip(streams, infos, strict=True):
            if isinstance(groups, ResponseError):
                continue
            topic = self.topic_of(stream)
            existing = {_s(g["name"]) for g in groups}
            for name in live - existing:
                # A live subscription that has not found this stream yet (it polls the registry)
                if name in patterns and topics.matches(patterns[name], topic):
                    out.setdefault(name, {"pending": 0, "unread": 0})["unread"] += 1
            for g in groups:
                name = _s(g["name"])
                if name in live:
                    checks.append((stream, last, name, g))
        if not checks:
            return out
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream, _, name, _ in checks:
                pipe.xpending(stream, name)
            pendings = await pipe.execute()
        for (_stream, last, name, g), pending in zip(checks, pendings, strict=True):
            delivered_to = _sid(_s(g["last-delivered-id"]))
            mine = _sid(last)
            not_read = delivered_to < mine
            in_pel = pending["pending"] > 0 and _sid(_s(pending["min"])) <= mine
            if not_read or in_pel:
                lag = g.get("lag")
                counts = out.setdefault(name, {"pending": 0, "unread": 0})
                counts["pending"] += int(pending["pending"])
                counts["unread"] += int(lag) if lag is not None and not_read else int(not_read)
        return out

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until every entry published through this bus to a group that someone is
        subscribed to is acknowledged (or dead-lettered) in that group."""
        give_up = None if timeout is None else time.monotonic() + timeout
        while True:
            await self._flush_now()
            unsettled = await self._unsettled()
            if not unsettled and not self._acks and not self._dead_out:
                return
            if give_up is not None and time.monotonic() >= give_up:
                total = sum(c["pending"] + c["unread"] for c in unsettled.values())
                raise BusError(
                    f"bus did not drain within {timeout}s: {total} messages outstanding "
                    f"({ {s.name: s.stats() for s in self._subs} }, redis: {unsettled})"
                )
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        tasks = list(self._tasks.values())
        for sub in list(self._subs):
            await sub.close()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(RedisError, OSError):
            await self._flush_now()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        if self._owns_client:
            await self._redis.aclose()

    def stats(self) -> dict[str, Any]:
        """Counters of this bus instance; ``outstanding`` is what its own subscriptions hold
        (queued locally or in flight), not the whole group's backlog in Redis."""
        return {
            "published": self.published,
            "outstanding": sum(s.queued + s.in_flight for s in self._subs),
            "dead_letters": self.dead_lettered,
            "handler_errors": len(self.handler_errors),
            "subscriptions": {s.name: s.stats() for s in self._subs},
        }
