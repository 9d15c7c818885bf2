"""`ReplaySource`: plays recorded bars as fast as the pipeline takes them."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import polars as pl

from quantlab.adapters.sim.data import read_bars
from quantlab.core.enums import EventType
from quantlab.core.errors import DataError
from quantlab.ingest.items import Events, SourceItem


class ReplaySource:
    """A `MarketDataSource` over recorded bar files (Parquet or CSV), time-sorted, in chunks."""

    kind = EventType.BAR
    asset_class = "crypto"

    def __init__(
        self,
        paths: list[str | Path] | None = None,
        *,
        frame: pl.DataFrame | None = None,
        symbols: list[str] | None = None,
        start: str | dt.datetime | None = None,
        end: str | dt.datetime | None = None,
        chunk_rows: int = 10_000,
        name: str = "replay",
    ) -> None:
        if (paths is None) == (frame is None):
            raise DataError("ReplaySource needs either paths or a frame")
        if chunk_rows < 1:
            raise DataError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.name = name
        if frame is not None:
            self.bars = frame
        else:
            assert paths is not None  # noqa: S101
            self.bars = read_bars(list(paths), symbols=symbols, start=start, end=end)
        self.chunk_rows = chunk_rows
        self.total_rows: int | None = self.bars.height

    @property
    def symbols(self) -> list[str]:
        return sorted(self.bars["symbol"].unique().to_list())

    async def stream(self) -> AsyncIterator[SourceItem]:
        for offset in range(0, self.bars.height, self.chunk_rows):
            yield Events(self.kind, self.bars.slice(offset, self.chunk_rows))
            await asyncio.sleep(0)
