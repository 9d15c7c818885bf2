"""`ReplaySource`: plays recorded market data (files or the lake) through the pipeline.

It plays bars, trades or quotes (Parquet, CSV or ccxt OHLCV JSON files, a frame, or a lake
dataset), time-sorted, in chunks: as fast as the consumer takes them (`speed=None`, the
backtest default) or paced at real time × `speed` against the clock, so that a recording can
drive a "live" run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import polars as pl

from quantlab.adapters.sim.data import normalise_market, read_bars, read_market
from quantlab.core.enums import EventType
from quantlab.core.errors import DataError
from quantlab.ingest.items import Events, SourceItem


class ReplaySource:
    """A `MarketDataSource` over recorded data of one kind.

    Parameters
    ----------
    paths
        Files to play (``bundled:NAME`` for shipped data); bars may span several files.
    frame
        A frame to play instead (its kind is told from its columns).
    kind
        Restrict to this kind (when `paths` mix kinds); default: the first file's kind.
    speed
        None: as fast as possible. Otherwise real time × `speed` (1.0: the recording's pace).
    """

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
        speed: float | None = None,
        name: str = "replay",
        asset_class: str = "crypto",
    ) -> None:
        if (paths is None) == (frame is None):
            raise DataError("ReplaySource needs either paths or a frame")
        if chunk_rows < 1:
            raise DataError(f"chunk_rows must be >= 1, got {chunk_rows}")
        if speed is not None and not speed > 0:
            raise DataError(f"speed must be > 0 (or None for as fast as possible), got {speed}")
        self.name = name
        self.asset_class = asset_class
        if frame is not None:
            self.kind, data = normalise_market(frame, "frame")
        else:
            assert paths is not None  # noqa: S101
            self.kind, data = self._read(list(paths), symbols, start, end)
        if data.is_empty():
            raise DataError(f"replay source {name!r} has no rows to play")
        self.data = data.sort("timestamp", maintain_order=True)
        self.chunk_rows = chunk_rows
        self.speed = speed
        self.total_rows: int | None = self.data.height

    @staticmethod
    def _read(
        paths: list[str | Path],
        symbols: list[str] | None,
        start: str | dt.datetime | None,
        end: str | dt.datetime | None,
    ) -> tuple[EventType, pl.DataFrame]:
        kinds = {p: read_market(p)[0] for p in paths}
        if all(k is EventType.BAR for k in kinds.values()):
            return EventType.BAR, read_bars(paths, symbols=symbols, start=start, end=end)
        if len(set(kinds.values())) > 1:
            raise DataError(f"replay files mix kinds {sorted(k.name for k in kinds.values())}")
        kind = next(iter(kinds.values()))
        frames = [read_market(p)[1] for p in paths]
        data = pl.concat(frames)
        return kind, _filter(data, symbols, start, end)

    @classmethod
    def from_lake(
        cls,
        lake: Any,
        dataset: str,
        *,
        symbols: list[str] | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        **options: Any,
    ) -> ReplaySource:
        """Play a lake dataset (``bar``, ``trade``, ``quote``) between `start` and `end`."""
        frame = lake.scan(dataset, symbols, start, end).collect()
        return cls(frame=frame.drop("flags", strict=False), **options)

    @property
    def symbols(self) -> list[str]:
        return sorted(self.data["symbol"].unique().to_list())

    # The backtest reads `.bars`; kept as the name of the played frame for bars.
    @property
    def bars(self) -> pl.DataFrame:
        return self.data

    async def stream(self) -> AsyncIterator[SourceItem]:
        if self.speed is None:
            for offset in range(0, self.data.height, self.chunk_rows):
                yield Events(self.kind, self.data.slice(offset, self.chunk_rows))
                await asyncio.sleep(0)
            return
        # Paced: emit each event when its recorded offset from the first event, divided by
        # `speed`, has elapsed on the wall clock (in chunks of at most 10 ms of recording).
        ts = self.data["timestamp"].cast(pl.Int64).to_numpy()
        t0, wall0 = int(ts[0]), time.monotonic()
        i, n = 0, len(ts)
        step_ns = int(10e6 * self.speed)
        while i < n:
            j = int(ts.searchsorted(ts[i] + step_ns, side="left"))
            j = max(j, i + 1)
            due = (int(ts[i]) - t0) / 1e9 / self.speed
            lag = due - (time.monotonic() - wall0)
            if lag > 0:
                await asyncio.sleep(lag)
            yield Events(self.kind, self.data.slice(i, j - i))
            i = j


def _filter(
    data: pl.DataFrame,
    symbols: list[str] | None,
    start: str | dt.datetime | None,
    end: str | dt.datetime | None,
) -> pl.DataFrame:
    from quantlab.adapters.sim.data import parse_time

    lo, hi = parse_time(start, "start"), parse_time(end, "end")
    if symbols is not None:
        data = data.filter(pl.col("symbol").is_in(symbols))
    if lo is not None:
        data = data.filter(pl.col("timestamp") >= lo)
    if hi is not None:
        data = data.filter(pl.col("timestamp") < hi)
    if data.is_empty():
        raise DataError("no rows left after filtering the replay data")
    return data
