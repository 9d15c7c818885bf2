"""`IngestEngine`: sources -> validation -> batcher -> ``market.data.<kind>`` on the bus."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import polars as pl

from quantlab.bus import topics
from quantlab.bus.base import Bus
from quantlab.core.clock import Clock, SimulatedClock
from quantlab.core.errors import BusError
from quantlab.core.messages import MarketBatch
from quantlab.ingest.batcher import Batcher
from quantlab.ingest.ports import MarketDataSource
from quantlab.ingest.validation import Validator

log = logging.getLogger(__name__)

RejectSink = Callable[[str, pl.DataFrame], None]


class IngestEngine:
    """Runs sources, validates and batches their events, publishes `MarketBatch`es.

    Parameters
    ----------
    lockstep
        Backtest mode: before publishing the next batch, wait until the bus has drained the
        previous one (every consequence of batch k, orders and fills included, happens before
        batch k+1 is seen). This is what makes a backtest deterministic and causal.
    reject_sink
        Receives ``(source name, rejected rows with a reason column)``: the dead-letter store.
    progress
        Called with the number of raw rows consumed so far, for progress bars.
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
        reject_sink: RejectSink | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.sources = sources
        self.clock = clock
        self.batch_size = batch_size
        self.flush_ms = flush_ms
        self.lockstep = lockstep
        self.reject_sink = reject_sink
        self.progress = progress
        self._bus: Bus | None = None
        self._seq = 0
        self.rows_in = 0
        self.rows_accepted = 0
        self.batches = 0
        self.rejected: Counter[str] = Counter()

    async def start(self, bus: Bus) -> None:
        self._bus = bus

    async def stop(self) -> None:
        return None

    async def run(self) -> None:
        """Consume every source to its end (backtest) or until cancelled (live)."""
        if self._bus is None:
            raise BusError("IngestEngine.run() before start()")
        if self.lockstep:
            for source in self.sources:  # one at a time: a deterministic order
                await self._run_source(source)
        else:
            await asyncio.gather(*(self._run_source(s) for s in self.sources))

    async def _run_source(self, source: MarketDataSource) -> None:
        validator = Validator(source.kind)
        batcher = Batcher(self.batch_size, self.flush_ms)
        try:
            async for raw in source.stream():
                self.rows_in += raw.height
                good, bad = validator.validate(raw)
                if bad.height:
                    self.rejected.update(dict(bad["reason"].value_counts().iter_rows()))
                    if self.reject_sink is not None:
                        self.reject_sink(source.name, bad)
                self.rows_accepted += good.height
                for batch in batcher.add(good):
                    await self._publish(source, batch)
                if self.progress is not None:
                    self.progress(self.rows_in)
        finally:
            rest = batcher.flush()
            if rest is not None:
                await self._publish(source, rest)

    async def _publish(self, source: MarketDataSource, frame: pl.DataFrame) -> None:
        assert self._bus is not None  # noqa: S101
        ts = frame["timestamp"].cast(pl.Int64)
        batch = MarketBatch(
            kind=source.kind,
            frame=frame,
            seq=self._seq,
            ts_min=int(ts.min()),  # type: ignore[arg-type]
            ts_max=int(ts.max()),  # type: ignore[arg-type]
        )
        self._seq += 1
        self.batches += 1
        if isinstance(self.clock, SimulatedClock):
            self.clock.advance_to(batch.ts_max)
        await self._bus.publish(topics.market_data(source.kind), batch)
        if self.lockstep:
            await self._bus.drain()

    def stats(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "rows_accepted": self.rows_accepted,
            "batches": self.batches,
            "rejected": dict(self.rejected),
        }
