"""`LakeWriter`: appends every market batch on the bus to the lake, off the event loop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import polars as pl

from quantlab.bus import topics
from quantlab.bus.base import Bus, Envelope
from quantlab.core.messages import FeatureBatch, MarketBatch
from quantlab.storage.lake import Lake


class LakeWriter:
    """Buffers batches per kind and appends them as part files every `flush_rows` rows or
    `flush_s` seconds; compacts on stop. Writes run in a worker thread."""

    name = "lake"

    def __init__(self, lake: Lake, *, flush_rows: int = 50_000, flush_s: float = 5.0) -> None:
        self.lake = lake
        self.flush_rows = flush_rows
        self.flush_s = flush_s
        self._buf: dict[str, list[pl.DataFrame]] = {}
        self._rows: dict[str, int] = {}
        self._last_flush = time.monotonic()
        self.rows_written = 0
        self.files_written = 0

    async def start(self, bus: Bus) -> None:
        bus.consume(topics.ALL_MARKET_DATA, self._on_batch, name=self.name)
        # history fetched to heal a live feed's gaps (`ingest.backfill`): same datasets
        bus.consume(topics.ALL_BACKFILL, self._on_batch, name=f"{self.name}.backfill")
        bus.consume(topics.features(), self._on_batch, name=f"{self.name}.features")

    async def _on_batch(self, envelope: Envelope) -> None:
        batch = envelope.payload
        if isinstance(batch, MarketBatch):
            dataset = batch.kind.topic_name
        elif isinstance(batch, FeatureBatch):
            dataset = "features"  # feature history, readable with Lake.scan("features")
        else:
            return
        self._buf.setdefault(dataset, []).append(batch.frame)
        self._rows[dataset] = self._rows.get(dataset, 0) + batch.frame.height
        due = time.monotonic() - self._last_flush >= self.flush_s
        if self._rows[dataset] >= self.flush_rows or due:
            await self.flush()

    async def flush(self) -> None:
        pending = {k: v for k, v in self._buf.items() if v}
        self._buf, self._rows = {}, {}
        self._last_flush = time.monotonic()
        for dataset, frames in pending.items():
            frame = pl.concat(frames, how="vertical")
            files = await asyncio.to_thread(self.lake.append, frame, dataset)
            self.rows_written += frame.height
            self.files_written += len(files)

    async def stop(self) -> None:
        await self.flush()
        await asyncio.to_thread(self.lake.compact)

    def stats(self) -> dict[str, Any]:
        return {"rows_written": self.rows_written, "files_written": self.files_written}
