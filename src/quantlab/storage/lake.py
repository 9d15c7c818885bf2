"""The Parquet lake (DESIGN §5): ``<root>/<dataset>/<YYYY-MM-DD>/<SYMBOL>.parquet``, zstd.

A dataset is a kind of data (``bar``, ``trade``, ``quote``, ``features`` ...). Symbols are made
path-safe by percent-encoding (``ADA/BTC`` -> ``ADA%2FBTC``), which is reversible. Every write
goes to a temporary file in the same folder, is fsynced and then renamed over the target, so a
crash leaves either the old file or the new one, never a partial one.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote, unquote

import polars as pl

from quantlab.core.errors import DataError, StorageError

_TMP_PREFIX = ".tmp-"


def safe_symbol(symbol: str) -> str:
    """A file-name-safe, reversible form of `symbol`."""
    if not symbol:
        raise StorageError("empty symbol cannot name a lake file")
    return quote(symbol, safe="-_")


def unsafe_symbol(name: str) -> str:
    return unquote(name)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_parquet(frame: pl.DataFrame, target: Path) -> None:
    """Write `frame` to `target` so that readers see the old file or the new one, never half."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}-{target.name}"
    try:
        frame.write_parquet(tmp, compression="zstd", statistics=True)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(target)
        _fsync_dir(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


class Lake:
    """Partitioned Parquet storage of market data and features."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, dataset: str, day: dt.date, symbol: str) -> Path:
        return self.root / dataset / day.isoformat() / f"{safe_symbol(symbol)}.parquet"

    def write(self, frame: pl.DataFrame, dataset: str) -> list[Path]:
        """Append `frame` (needs ``symbol`` and a UTC ``timestamp``) to its partitions.

        Rows are merged with what a partition already holds, exact duplicate rows are dropped
        and the result is sorted by time. Returns the files written.
        """
        missing = {"symbol", "timestamp"} - set(frame.columns)
        if missing:
            raise DataError(f"lake frame for {dataset!r} lacks columns {sorted(missing)}")
        if frame.is_empty():
            return []
        keyed = frame.with_columns(pl.col("timestamp").dt.date().alias("__day"))
        written = []
        for (symbol, day), part in keyed.partition_by(
            ["symbol", "__day"], as_dict=True, maintain_order=True
        ).items():
            target = self.path(dataset, day, str(symbol))
            part = part.drop("__day")
            if target.exists():
                part = pl.concat([pl.read_parquet(target), part], how="vertical_relaxed")
            part = part.unique(maintain_order=True).sort("timestamp", maintain_order=True)
            atomic_write_parquet(part, target)
            written.append(target)
        return written

    def files(
        self,
        dataset: str,
        symbols: Iterable[str] | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
    ) -> list[Path]:
        base = self.root / dataset
        if not base.is_dir():
            return []
        wanted = None if symbols is None else {safe_symbol(s) + ".parquet" for s in symbols}
        out = []
        for day_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            try:
                day = dt.date.fromisoformat(day_dir.name)
            except ValueError:
                continue
            if start is not None and day < start.date():
                continue
            if end is not None and day > end.date():
                continue
            for f in sorted(day_dir.glob("*.parquet")):
                if f.name.startswith(_TMP_PREFIX):
                    continue
                if wanted is None or f.name in wanted:
                    out.append(f)
        return out

    def scan(
        self,
        dataset: str,
        symbols: Iterable[str] | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
    ) -> pl.LazyFrame:
        """A LazyFrame over the partitions that can hold the rows asked for (pushdown)."""
        symbols = None if symbols is None else list(symbols)
        files = self.files(dataset, symbols, start, end)
        if not files:
            raise DataError(
                f"lake {self.root} has no {dataset!r} data"
                + (f" for symbols {symbols}" if symbols else "")
                + (f" between {start} and {end}" if start or end else "")
            )
        lf = pl.scan_parquet(files)
        if start is not None:
            lf = lf.filter(pl.col("timestamp") >= start)
        if end is not None:
            lf = lf.filter(pl.col("timestamp") < end)
        if symbols is not None:
            lf = lf.filter(pl.col("symbol").is_in(symbols))
        return lf

    def datasets(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())
