"""The multiplexer: N sources at once, each reconnected on failure and watched for staleness.

Every source runs in its own task. A source that raises (or yields nothing, not even a
heartbeat, for `stale_after_s`) is reconnected after an exponential backoff with jitter, which
resets once the new connection delivers. A source whose stream ends normally is finished.
Per-source metrics: events, events/s, rejects by reason, reconnects, stale count, last event
time and lag (wall clock minus event time). `on_disconnect`, if set, is awaited with the
source's name each time a connection fails, before the backoff (the ingest engine marks where
the data stopped, for the gap backfill).
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

import polars as pl

from quantlab.core.clock import Clock, WallClock
from quantlab.core.errors import ConfigError
from quantlab.core.schemas import TIMESTAMP
from quantlab.ingest.items import Events, Reject, SourceItem
from quantlab.ingest.ports import MarketDataSource

log = logging.getLogger(__name__)

Sink = Callable[[str, SourceItem], Awaitable[None]]
Hook = Callable[[str], Awaitable[None]]


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
        self._stop = asyncio.Event()
        self.on_disconnect: Hook | None = None

    async def run(self, sink: Sink) -> None:
        """Run every source until it finishes (or `stop()`); items go to `sink` in order."""
        self._stopping = False
        self._stop = asyncio.Event()
        await asyncio.gather(*(self._run_source(s, sink) for s in self.sources))

    def stop(self) -> None:
        """End every source loop now: a backoff or a silent stream is not waited out."""
        self._stopping = True
        self._stop.set()

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
            if self.on_disconnect is not None:
                try:
                    await self.on_disconnect(source.name)
                except Exception as exc:  # a hook's failure must not end the reconnects
                    log.exception("on_disconnect of %s failed: %r", source.name, exc)
            if self.max_reconnects is not None and stats.reconnects >= self.max_reconnects:
                log.error("source %s gave up after %d reconnects", source.name, stats.reconnects)
                return
            attempt += 1
            stats.reconnects += 1
            delay = self.backoff.delay(attempt, self._rng)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)  # a stop cuts the backoff short

    async def _watch(
        self, stream: AsyncIterator[SourceItem], stats: SourceStats, limit: float | None
    ) -> AsyncIterator[SourceItem]:
        """`stream`'s items; raises TimeoutError (counted stale) if it falls silent."""
        it = aiter(stream)
        while True:
            nxt = asyncio.ensure_future(anext(it))
            stop = asyncio.ensure_future(self._stop.wait())
            try:
                done, _ = await asyncio.wait(
                    {nxt, stop}, timeout=limit, return_when=asyncio.FIRST_COMPLETED
                )
            except BaseException:  # cancelled: end the pending read (and its cleanup) first
                nxt.cancel()
                with contextlib.suppress(BaseException):
                    await nxt
                raise
            finally:
                stop.cancel()
            if nxt not in done:
                nxt.cancel()
                with contextlib.suppress(BaseException):
                    await nxt
                if self._stop.is_set():
                    return
                stats.stale += 1
                raise TimeoutError(f"no message or heartbeat from {stats.name} for {limit}s")
            try:
                item = nxt.result()
            except StopAsyncIteration:
                return
            yield item

    def _account(self, stats: SourceStats, item: SourceItem) -> None:
        now = time.monotonic()
        stats.last_seen_mono = now
        if isinstance(item, Events):
            n = item.frame.height
            stats.events += n
            if n:
                newest = item.frame["timestamp"].cast(TIMESTAMP).cast(pl.Int64).max()
                if newest is not None and (
                    stats.last_event_ns is None or int(newest) > stats.last_event_ns  # type: ignore[arg-type]
                ):
                    stats.last_event_ns = int(newest)  # type: ignore[arg-type]
                if stats.last_event_ns is not None:
                    stats.lag_ms = (self.clock.now_ns() - stats.last_event_ns) / 1e6
        elif isinstance(item, Reject):
            stats.rejects[item.reason] += 1
        elapsed = now - stats._rate_t0
        if elapsed >= 1.0:
            stats.events_per_s = (stats.events - stats._rate_n0) / elapsed
            stats._rate_t0, stats._rate_n0 = now, stats.events

    def metrics(self) -> dict[str, dict[str, Any]]:
        return {name: s.as_dict() for name, s in self.stats.items()}
