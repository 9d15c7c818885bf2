"""`IngestEngine`: sources -> quality checks -> batcher -> ``market.data.<kind>`` on the bus.

Backtest (`lockstep`): sources are consumed one after another; before each batch is published
the simulated clock moves to its newest timestamp, and after it the engine waits for the bus
to drain, so every consequence of batch k (orders, fills) happens before batch k+1 is seen.
Live: every source runs in the multiplexer (reconnects, staleness), batches flush at
`batch_size` rows or after `flush_ms`, whichever comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

import polars as pl

from quantlab.bus import topics
from quantlab.bus.base import Bus
from quantlab.core.clock import Clock, SimulatedClock, ns_to_datetime
from quantlab.core.enums import EventType
from quantlab.core.errors import BusError
from quantlab.core.messages import DataGap, MarketBatch, NewsEvent
from quantlab.core.schemas import TIMESTAMP
from quantlab.ingest.batcher import Batcher
from quantlab.ingest.items import Events, Heartbeat, Reject, SourceItem
from quantlab.ingest.multiplexer import Backoff, Multiplexer
from quantlab.ingest.ports import MarketDataSource
from quantlab.ingest.quality import QualityChecker, QualityConfig

log = logging.getLogger(__name__)

RejectSink = Callable[[str, pl.DataFrame], None]


class IngestEngine:
    """Runs sources, checks and batches their events, publishes `MarketBatch`es.

    Parameters
    ----------
    lockstep
        Backtest mode (see the module docstring).
    quality
        Data-quality thresholds (`QualityConfig`); time rules use `clock`.
    reject_sink
        Receives ``(source name, rejected rows with a reason column)``: the dead-letter store.
    progress
        Called with the number of raw events consumed so far, for progress bars.
    """

    name = "ingest"

    def __init__(
        self,
        sources: list[MarketDataSource],
        *,
        clock: Clock,
        batch_size: int = 1000,
        flush_ms: float = 5.0,
        lockstep: bool = False,
        quality: QualityConfig | None = None,
        reject_sink: RejectSink | None = None,
        progress: Callable[[int], None] | None = None,
        backoff: Backoff | None = None,
        stale_after_s: float | None = 30.0,
        news_window: int = 100_000,
    ) -> None:
        self.sources = sources
        self.clock = clock
        self.batch_size = batch_size
        self.flush_ms = flush_ms
        self.lockstep = lockstep
        self.quality = quality or QualityConfig()
        self.reject_sink = reject_sink
        self.progress = progress
        self.multiplexer = Multiplexer(sources, backoff=backoff, stale_after_s=stale_after_s)
        self._asset = {s.name: s.asset_class for s in sources}
        self._checkers: dict[tuple[str, EventType], QualityChecker] = {}
        # Small frames are gathered (`_raw`) and checked together, because a vectorised check
        # costs about the same for 8 rows as for 1,000; accepted rows are cut into batches
        # by `_batchers`.
        self._raw: dict[tuple[str, EventType], Batcher] = {}
        self._batchers: dict[tuple[str, EventType], Batcher] = {}
        # When the oldest row not yet published of each (source, kind) arrived (wall ns), on
        # the wall clock only (replayed data has no arrival time that means anything).
        self._stamp_received = not isinstance(clock, SimulatedClock)
        self._received: dict[tuple[str, EventType], int] = {}
        self._news_seen: OrderedDict[str, None] = OrderedDict()
        self._news_window = news_window
        self._bus: Bus | None = None
        self._seq = 0
        self._stopping = False
        self.rows_in = 0
        self.rows_accepted = 0
        self.batches = 0
        self.news = 0
        self.rejected: Counter[str] = Counter()
        self.flagged: Counter[str] = Counter()
        self.gaps = 0

    async def start(self, bus: Bus) -> None:
        self._bus = bus

    async def stop(self) -> None:
        """Stop taking items and publish what the batchers hold."""
        self._stopping = True
        self.multiplexer.stop()
        await self.flush()

    async def run(self) -> None:
        """Consume every source to its end (backtest) or until `stop()` (live)."""
        if self._bus is None:
            raise BusError("IngestEngine.run() before start()")
        self._stopping = False
        if self.lockstep:
            for source in self.sources:  # one at a time: a deterministic order
                async for item in source.stream():
                    await self.on_item(source.name, item)
                    if self._stopping:
                        break
                await self.flush()
            return
        flusher = asyncio.get_running_loop().create_task(self._flush_loop(), name="ingest-flush")
        try:
            await self.multiplexer.run(self.on_item)
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await self.flush()

    async def _flush_loop(self) -> None:
        # A fifth of the flush time: a row waits at most ~1.2 x flush_ms for its batch.
        period = max(self.flush_ms / 5000.0, 0.0005)
        while True:
            await asyncio.sleep(period)
            await self.flush(due_only=True)

    async def flush(self, *, due_only: bool = False) -> None:
        """Check what the raw batchers gathered, then publish what the batchers hold
        (with `due_only`, only those whose oldest row waited `flush_ms`). Rows that waited
        their time in a raw batcher are published at once: they do not wait a second
        `flush_ms` in the batcher after the checks."""
        waited: set[tuple[str, EventType]] = set()
        for key, raw in list(self._raw.items()):
            if not due_only or raw.due():
                pending = raw.flush()
                if pending is not None:
                    await self._check(key, pending)
                    waited.add(key)
        for (source, kind), batcher in list(self._batchers.items()):
            if not due_only or batcher.due() or (source, kind) in waited:
                rest = batcher.flush()
                if rest is not None:
                    await self._publish(source, kind, rest)

    async def on_item(self, source: str, item: SourceItem) -> None:
        """Take one item from `source` (the multiplexer's sink)."""
        if isinstance(item, Events):
            await self._on_events(source, item)
        elif isinstance(item, Reject):
            self.rows_in += 1
            self.rejected[item.reason] += 1
            if self.reject_sink is not None:
                self.reject_sink(
                    source,
                    pl.DataFrame(
                        {"reason": [item.reason], "detail": [item.detail], "raw": [item.raw]}
                    ),
                )
        elif isinstance(item, NewsEvent):
            await self._on_news(item)
        elif isinstance(item, Heartbeat):
            return

    async def _on_events(self, source: str, item: Events) -> None:
        key = (source, item.kind)
        if self._stamp_received:  # the oldest row waiting for a batch arrived now, or before
            self._received.setdefault(key, time.time_ns())
        if key not in self._checkers:
            self._checkers[key] = QualityChecker(
                item.kind, self.quality, asset_class=self._asset.get(source, "crypto")
            )
            self._raw[key] = Batcher(self.batch_size, self.flush_ms)
            self._batchers[key] = Batcher(self.batch_size, self.flush_ms)
        self.rows_in += item.frame.height
        if item.frame.height >= self.batch_size and not self._raw[key].pending:
            await self._check(key, item.frame)
        else:
            for chunk in self._raw[key].add(item.frame):
                await self._check(key, chunk)
        if self.progress is not None:
            self.progress(self.rows_in)

    async def _check(self, key: tuple[str, EventType], frame: pl.DataFrame) -> None:
        source, kind = key
        result = self._checkers[key].check(frame, self.clock.now_ns())
        if result.rejected.height:
            self.rejected.update(dict(result.rejected["reason"].value_counts().iter_rows()))
            if self.reject_sink is not None:
                self.reject_sink(source, result.rejected)
        self.rows_accepted += result.accepted.height
        for batch in self._batchers[key].add(result.accepted):
            await self._publish(source, kind, batch)
        if result.gaps and self._bus is not None:
            self.gaps += len(result.gaps)
            for gap in result.gaps:
                await self._bus.publish(
                    topics.system("alert"),
                    DataGap(
                        source=source,
                        symbol=gap.symbol,
                        start=ns_to_datetime(gap.start_ns),
                        end=ns_to_datetime(gap.end_ns),
                        seconds=gap.seconds,
                    ),
                )

    async def _on_news(self, news: NewsEvent) -> None:
        if news.id in self._news_seen or self._bus is None:
            return
        self._news_seen[news.id] = None
        if len(self._news_seen) > self._news_window:
            self._news_seen.popitem(last=False)
        self.news += 1
        for symbol in news.symbols:
            try:
                topic = topics.news(symbol)
            except BusError:
                self.rejected["bad_news_symbol"] += 1
                continue
            await self._bus.publish(topic, news, msg_id=f"news:{news.id}:{symbol}")

    async def _publish(self, source: str, kind: EventType, frame: pl.DataFrame) -> None:
        if self._bus is None:
            raise BusError("IngestEngine publishing before start()")
        ts = frame["timestamp"].cast(TIMESTAMP).cast(pl.Int64)
        batch = MarketBatch(
            kind=kind,
            frame=frame,
            seq=self._seq,
            ts_min=int(ts.min()),  # type: ignore[arg-type]
            ts_max=int(ts.max()),  # type: ignore[arg-type]
            source=source,
            ts_recv=(self._received.pop((source, kind), 0) or time.time_ns())
            if self._stamp_received
            else 0,
        )
        self._seq += 1
        self.batches += 1
        if isinstance(self.clock, SimulatedClock):
            self.clock.advance_to(batch.ts_max)
        await self._bus.publish(topics.market_data(kind), batch)
        if self.lockstep:
            await self._bus.drain()

    def stats(self) -> dict[str, Any]:
        flagged: Counter[str] = Counter()
        for checker in self._checkers.values():
            flagged.update(checker.flagged)
        return {
            "rows_in": self.rows_in,
            "rows_accepted": self.rows_accepted,
            "batches": self.batches,
            "rejected": dict(self.rejected),
            "flagged": dict(flagged),
            "gaps": self.gaps,
            "news": self.news,
            "sources": self.multiplexer.metrics(),
        }
