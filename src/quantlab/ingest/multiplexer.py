"""The multiplexer: N sources at once, each reconnected on failure and watched for staleness.

Every source runs in its own task. A source that raises (or yields nothing, not even a
heartbeat, for `stale_after_s`) is reconnected after an exponential backoff with jitter, which
resets once the new connection delivers. A source whose stream ends normally is finished.
Per-source metrics: events, events/s, rejects by reason, reconnects, stale count, last event
time and lag (wall clock minus event time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from quantlab.core.clock import Clock, WallClock
from quantlab.core.errors import ConfigError
from quantlab.core.schemas import TIMESTAMP
from quantlab.ingest.items import Events, Heartbeat, Reject, SourceItem
from quantlab.ingest.ports import MarketDataSource

log = logging.getLogger(__name__)

Sink = Callable[[str, SourceItem], Awaitable[None]]


@dataclass
class SourceStats:
    name: str
    connected: bool = False
    finished: bool = False
    events: int = 0
    rejects: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0
    stale: int = 0
    last_error: str = ""
    last_event_ns: int | None = None  # event time of the newest event
    last_seen_mono: float | None = None  # monotonic time anything arrived
    lag_ms: float | None = None
    _rate_t0: float = field(default_factory=time.monotonic)
    _rate_n0: int = 0
    events_per_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "finished": self.finished,
            "events": self.events,
            "events_per_s": round(self.events_per_s, 1),
            "rejects": dict(self.rejects),
            "reconnects": self.reconnects,
            "stale": self.stale,
            "last_event_ns": self.last_event_ns,
            "lag_ms": None if self.lag_ms is None else round(self.lag_ms, 3),
            "last_error": self.last_error,
        }


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: initial·2^k capped at `maximum`, ± `jitter` fraction."""

    initial: float = 0.5
    maximum: float = 30.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ConfigError(
                "backoff", f"need 0 < initial <= maximum, got {self.initial}, {self.maximum}"
            )
        if not 0 <= self.jitter < 1:
            raise ConfigError("backoff.jitter", f"must be in [0, 1), got {self.jitter}")

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.maximum, self.initial * 2 ** max(0, attempt - 1))
        return float(base * (1 + rng.uniform(-self.jitter, self.jitter)))


class Multiplexer:
    """Runs sources concurrently and hands every item to a sink, tagged with the source name."""

    def __init__(
        self,
        sources: list[MarketDataSource],
        *,
        backoff: Backoff | None = None,
        stale_after_s: float | None = 30.0,
        max_reconnects: int | None = None,
        clock: Clock | None = None,
        seed: int | None = None,
    ) -> None:
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ConfigError("sources", f"source names must be unique, got {names}")
        if stale_after_s is not None and stale_after_s <= 0:
            raise ConfigError("stale_after_s", f"must be > 0 seconds, got {stale_after_s}")
        self.sources = sources
        self.backoff = backoff or Backoff()
        self.stale_after_s = stale_after_s
        self.max_reconnects = max_reconnects
        self.clock = clock or WallClock()
        self._rng = random.Random(seed)  # noqa: S311 (jitter, not cryptography)
        self.stats = {s.name: SourceStats(s.name) for s in sources}
        self._stopping = False

    async def run(self, sink: Sink) -> None:
        """Run every source until it finishes (or `stop()`); items go to `sink` in order."""
        self._stopping = False
        await asyncio.gather(*(self._run_source(s, sink) for s in self.sources))

    def stop(self) -> None:
        """Ask every source loop to end after its current item (no reconnects from now on)."""
        self._stopping = True

    async def _run_source(self, source: MarketDataSource, sink: Sink) -> None:
        stats = self.stats[source.name]
        attempt = 0
        while not self._stopping:
            stream = source.stream()
            delivered = False
            limit = getattr(source, "stale_after_s", None) or self.stale_after_s
            try:
                stats.connected = True
                async for item in self._watch(stream, stats, limit):
                    if not delivered:
                        delivered, attempt = True, 0
                    self._account(stats, item)
                    await sink(source.name, item)
                    if self._stopping:
                        break
                else:
                    stats.connected = False
                    stats.finished = not self._stopping
                    return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                stats.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("source %s failed: %s", source.name, stats.last_error)
            finally:
                stats.connected = False
                with contextlib.suppress(Exception):
                    await stream.aclose()  # type: ignore[attr-defined]
            if self._stopping:
                return
            attempt += 1
            stats.reconnects += 1
            if self.max_reconnects is not None and stats.reconnects > self.max_reconnects:
                log.error("source %s gave up after %d reconnects", source.name, stats.reconnects)
                return
            await asyncio.sleep(self.backoff.delay(attempt, self._rng))

    async def _watch(
        self, stream: AsyncIterator[SourceItem], stats: SourceStats, limit: float | None
    ) -> AsyncIterator[SourceItem]:
        """`stream`'s items; raises TimeoutError (counted stale) if it falls silent."""
        it = aiter(stream)
        while True:
            try:
                if limit is None:
                    item = await anext(it)
                else:
                    item = await asyncio.wait_for(anext(it), limit)
            except StopAsyncIteration:
                return
            except TimeoutError:
                stats.stale += 1
                raise TimeoutError(
                    f"no message or heartbeat from {stats.name} for {limit}s"
                ) from None
            yield item

    def _account(self, stats: SourceStats, item: SourceItem) -> None:
        now = time.monotonic()
        stats.last_seen_mono = now
        if isinstance(item, Events):
            n = item.frame.height
            stats.events += n
            if n:
                newest = item.frame["timestamp"].cast(TIMESTAMP).max()
                if newest is not None:
                    ts = int(newest.timestamp() * 1e9)  # type: ignore[union-attr]
                    stats.last_event_ns = ts
                    stats.lag_ms = (self.clock.now_ns() - ts) / 1e6
        elif isinstance(item, Reject):
            stats.rejects[item.reason] += 1
        elif isinstance(item, Heartbeat):
            pass
        elapsed = now - stats._rate_t0
        if elapsed >= 1.0:
            stats.events_per_s = (stats.events - stats._rate_n0) / elapsed
            stats._rate_t0, stats._rate_n0 = now, stats.events

    def metrics(self) -> dict[str, dict[str, Any]]:
        return {name: s.as_dict() for name, s in self.stats.items()}
