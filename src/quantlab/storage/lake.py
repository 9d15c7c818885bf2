"""The Parquet lake (DESIGN §5): ``<root>/<dataset>/<YYYY-MM-DD>/<SYMBOL>.parquet``, zstd.

A dataset is a kind of data (``bar``, ``trade``, ``quote``, ``features`` ...). Symbols are made
path-safe by percent-encoding (``ADA/BTC`` -> ``ADA%2FBTC``), which is reversible.

Writes append *part files* (``<day>/.parts/<SYMBOL>/part-*.parquet``); `compact` merges a
partition's parts into its main file and then deletes them. The main file records the names
of the parts it absorbed (Parquet key-value metadata ``quantlab.parts``), so a crash between
writing the main file and deleting the parts never makes a reader count rows twice. Every file
is written to a temporary name, fsynced and renamed: a crash leaves the old file or the new
one, never a partial one. A writer killed mid-write leaves its temporary file behind
(``.tmp-<host>-<pid>-...``, never read); `sweep_temporaries` deletes those whose writer is
dead (this host) or that are over an hour old (another host), and `compact` runs it first.
`retain` moves days past the hot horizon to a cold tier and deletes them past the retention
horizon.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import polars as pl

from quantlab.core.errors import DataError, StorageError
from quantlab.core.process import pid_alive

_TMP_PREFIX = ".tmp-"
_PARTS = ".parts"
_META_KEY = "quantlab.parts"
_HOST = hashlib.sha1(socket.gethostname().encode(), usedforsecurity=False).hexdigest()[:8]
_FOREIGN_TMP_S = 3600.0  # another host's temporary file older than this is abandoned


def safe_symbol(symbol: str) -> str:
    """A file-name-safe, reversible form of `symbol`."""
    if not symbol:
        raise StorageError("empty symbol cannot name a lake file")
    name = quote(symbol, safe="-_")
    # A leading dot would hide the file (and ".tmp-" marks our temporary files): encode it.
    return "%2E" + name[1:] if name.startswith(".") else name


def unsafe_symbol(name: str) -> str:
    return unquote(name)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_parquet(
    frame: pl.DataFrame, target: Path, metadata: dict[str, str] | None = None
) -> None:
    """Write `frame` to `target` so that readers see the old file or the new one, never half."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # The name says which host and process writes it, for `Lake.sweep_temporaries`.
    tmp = target.parent / f"{_TMP_PREFIX}{_HOST}-{os.getpid()}-{uuid.uuid4().hex}-{target.name}"
    try:
        frame.write_parquet(tmp, compression="zstd", statistics=True, metadata=metadata)
        _fsync(tmp)
        tmp.replace(target)
        _fsync(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _abandoned(tmp: Path, now: float) -> bool:
    """Whether the writer of temporary file `tmp` is gone (see `Lake.sweep_temporaries`)."""
    fields = tmp.name[len(_TMP_PREFIX) :].split("-", 2)
    try:
        age = now - tmp.stat().st_mtime
    except FileNotFoundError:
        return False  # renamed or removed meanwhile
    if len(fields) == 3 and fields[0] == _HOST and fields[1].isdigit():
        return int(fields[1]) != os.getpid() and not pid_alive(int(fields[1]))
    return age > _FOREIGN_TMP_S  # another host's, or an older name without a pid


def _utc_date(value: dt.datetime) -> dt.date:
    if value.tzinfo is None:
        return value.date()
    return value.astimezone(dt.UTC).date()


def _absorbed(main: Path) -> set[str]:
    """Names of the part files a main file already contains."""
    try:
        meta = pl.read_parquet_metadata(main)
    except Exception as exc:  # a main file we cannot read is a storage fault, say which
        raise StorageError(f"unreadable lake file {main}: {exc}") from exc
    return set(json.loads(meta.get(_META_KEY, "[]")))


class Lake:
    """Partitioned Parquet storage of market data and features, with a hot and a cold tier."""

    def __init__(self, root: str | Path, *, cold_root: str | Path | None = None) -> None:
        self.root = Path(root)
        self.cold_root = Path(cold_root) if cold_root is not None else None

    # -- layout ----------------------------------------------------------------------------
    def path(self, dataset: str, day: dt.date, symbol: str) -> Path:
        return self.root / dataset / day.isoformat() / f"{safe_symbol(symbol)}.parquet"

    def parts_dir(self, dataset: str, day: dt.date, symbol: str) -> Path:
        return self.root / dataset / day.isoformat() / _PARTS / safe_symbol(symbol)

    @staticmethod
    def _partitions(frame: pl.DataFrame, dataset: str) -> dict[tuple[str, dt.date], pl.DataFrame]:
        missing = {"symbol", "timestamp"} - set(frame.columns)
        if missing:
            raise DataError(f"lake frame for {dataset!r} lacks columns {sorted(missing)}")
        ts = pl.col("timestamp")
        dtype = frame.schema["timestamp"]
        if isinstance(dtype, pl.Datetime) and dtype.time_zone not in (None, "UTC"):
            ts = ts.dt.convert_time_zone("UTC")  # day folders are UTC dates
        if isinstance(dtype, pl.Datetime) and dtype.time_unit != "ns":
            frame = frame.with_columns(pl.col("timestamp").cast(pl.Datetime("ns", "UTC")))
        keyed = frame.with_columns(ts.dt.date().alias("__day"))
        out = {}
        for (symbol, day), part in keyed.partition_by(
            ["symbol", "__day"], as_dict=True, maintain_order=True
        ).items():
            out[(str(symbol), day)] = part.drop("__day")
        return out

    # -- writing ---------------------------------------------------------------------------
    def append(self, frame: pl.DataFrame, dataset: str) -> list[Path]:
        """Append `frame` (needs ``symbol`` and a UTC ``timestamp``) as part files."""
        if frame.is_empty():
            return []
        written = []
        for (symbol, day), part in self._partitions(frame, dataset).items():
            folder = self.parts_dir(dataset, day, symbol)
            name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
            atomic_write_parquet(part, folder / name)
            written.append(folder / name)
        return written

    def write(self, frame: pl.DataFrame, dataset: str) -> list[Path]:
        """Append `frame` and compact the partitions it touched (for imports)."""
        touched = {(s, d) for s, d in self._partitions(frame, dataset)} if frame.height else set()
        self.append(frame, dataset)
        return [self._compact_partition(dataset, day, symbol) for symbol, day in sorted(touched)]

    def sweep_temporaries(self) -> int:
        """Delete the temporary files of writers that died mid-write; returns how many.

        A temporary file of this host is abandoned when the process that writes it is no
        longer alive; one of another host (a lake on shared storage), when it is over an hour
        old. Readers never see temporary files, so this only reclaims space.
        """
        now = time.time()
        swept = 0
        for tier in self._tiers():
            if not tier.is_dir():
                continue
            for tmp in tier.rglob(f"{_TMP_PREFIX}*"):
                if tmp.is_file() and _abandoned(tmp, now):
                    tmp.unlink(missing_ok=True)
                    swept += 1
        return swept

    def compact(self, dataset: str | None = None) -> int:
        """Merge every partition's part files into its main file; returns partitions merged.

        Sweeps abandoned temporary files first (`sweep_temporaries`)."""
        self.sweep_temporaries()
        merged = 0
        for ds in [dataset] if dataset else self.datasets():
            base = self.root / ds
            if not base.is_dir():
                continue
            for parts_root in sorted(base.glob(f"*/{_PARTS}")):
                day = dt.date.fromisoformat(parts_root.parent.name)
                for sym_dir in sorted(p for p in parts_root.iterdir() if p.is_dir()):
                    if any(sym_dir.glob("part-*.parquet")):
                        self._compact_partition(ds, day, unsafe_symbol(sym_dir.name))
                        merged += 1
        return merged

    def _compact_partition(self, dataset: str, day: dt.date, symbol: str) -> Path:
        main = self.path(dataset, day, symbol)
        folder = self.parts_dir(dataset, day, symbol)
        parts = sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []
        done = _absorbed(main) if main.exists() else set()
        fresh = [p for p in parts if p.name not in done]
        if fresh:
            frames = ([pl.read_parquet(main)] if main.exists() else []) + [
                pl.read_parquet(p) for p in fresh
            ]
            merged = (
                pl.concat(frames, how="diagonal_relaxed")
                .unique(maintain_order=True)
                .sort("timestamp", maintain_order=True)
            )
            names = sorted(done | {p.name for p in fresh})
            atomic_write_parquet(merged, main, metadata={_META_KEY: json.dumps(names)})
        for p in parts:  # all absorbed now: safe to delete
            p.unlink(missing_ok=True)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        return main

    # -- reading ---------------------------------------------------------------------------
    def _tiers(self) -> list[Path]:
        return [self.root] + ([self.cold_root] if self.cold_root is not None else [])

    def files(
        self,
        dataset: str,
        symbols: Iterable[str] | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
    ) -> list[Path]:
        """The readable files (main files and parts not yet absorbed) that may hold the rows."""
        wanted = None if symbols is None else {safe_symbol(s) for s in symbols}
        # Day folders are UTC dates: compare bounds in UTC (naive bounds are taken as UTC).
        first = None if start is None else _utc_date(start)
        last = None if end is None else _utc_date(end)
        out = []
        for tier in self._tiers():
            base = tier / dataset
            if not base.is_dir():
                continue
            for day_dir in sorted(p for p in base.iterdir() if p.is_dir()):
                try:
                    day = dt.date.fromisoformat(day_dir.name)
                except ValueError:
                    continue
                if first is not None and day < first:
                    continue
                if last is not None and day > last:
                    continue
                out.extend(self._day_files(day_dir, wanted))
        return out

    @staticmethod
    def _day_files(day_dir: Path, wanted: set[str] | None) -> list[Path]:
        out = []
        absorbed: dict[str, set[str]] = {}
        for f in sorted(day_dir.glob("*.parquet")):
            stem = f.name[: -len(".parquet")]
            if f.name.startswith(_TMP_PREFIX) or (wanted is not None and stem not in wanted):
                continue
            out.append(f)
            absorbed[stem] = _absorbed(f)
        parts_root = day_dir / _PARTS
        if parts_root.is_dir():
            for sym_dir in sorted(p for p in parts_root.iterdir() if p.is_dir()):
                if wanted is not None and sym_dir.name not in wanted:
                    continue
                done = absorbed.get(sym_dir.name, set())
                out.extend(p for p in sorted(sym_dir.glob("part-*.parquet")) if p.name not in done)
        return out

    def scan(
        self,
        dataset: str,
        symbols: Iterable[str] | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
    ) -> pl.LazyFrame:
        """A LazyFrame over the files that can hold the rows asked for (predicate pushdown)."""
        symbols = None if symbols is None else list(symbols)
        files = self.files(dataset, symbols, start, end)
        if not files:
            raise DataError(
                f"lake {self.root} has no {dataset!r} data"
                + (f" for symbols {symbols}" if symbols else "")
                + (f" between {start} and {end}" if start or end else "")
            )
        lf = pl.scan_parquet(files, missing_columns="insert", extra_columns="ignore")
        if start is not None:
            lf = lf.filter(pl.col("timestamp") >= start)
        if end is not None:
            lf = lf.filter(pl.col("timestamp") < end)
        if symbols is not None:
            lf = lf.filter(pl.col("symbol").is_in(symbols))
        return lf

    def datasets(self) -> list[str]:
        names: set[str] = set()
        for tier in self._tiers():
            if tier.is_dir():
                names |= {p.name for p in tier.iterdir() if p.is_dir()}
        return sorted(names)

    def inventory(self) -> pl.DataFrame:
        """One row per dataset and symbol: first and last timestamp, rows, files."""
        rows = []
        for ds in self.datasets():
            files = self.files(ds)
            if not files:
                continue
            summary = (
                pl.scan_parquet(files, missing_columns="insert", extra_columns="ignore")
                .group_by("symbol")
                .agg(
                    pl.col("timestamp").min().alias("first"),
                    pl.col("timestamp").max().alias("last"),
                    pl.len().alias("rows"),
                )
                .collect()
            )
            for symbol, first, last, n in summary.sort("symbol").rows():
                rows.append(
                    {"dataset": ds, "symbol": symbol, "first": first, "last": last, "rows": n}
                )
        schema: dict[str, Any] = {
            "dataset": pl.String,
            "symbol": pl.String,
            "first": pl.Datetime("ns", "UTC"),
            "last": pl.Datetime("ns", "UTC"),
            "rows": pl.Int64,
        }
        return pl.DataFrame(rows, schema=schema)

    # -- retention -------------------------------------------------------------------------
    @staticmethod
    def _merge_day(hot: Path, cold: Path) -> None:
        """Move a hot day's files into an existing cold day: parts as they are, and each main
        file as a new part of the cold partition, compacted into the cold main file."""
        cold_lake = Lake(cold.parent.parent)
        dataset, day = cold.parent.name, dt.date.fromisoformat(cold.name)
        for part in sorted(hot.glob(f"{_PARTS}/*/part-*.parquet")):
            dest = cold / _PARTS / part.parent.name / part.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            part.replace(dest)
        for main in sorted(hot.glob("*.parquet")):
            if main.name.startswith(_TMP_PREFIX):
                continue
            symbol = unsafe_symbol(main.name[: -len(".parquet")])
            folder = cold_lake.parts_dir(dataset, day, symbol)
            name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
            folder.mkdir(parents=True, exist_ok=True)
            main.replace(folder / name)
        for sym_dir in sorted((cold / _PARTS).glob("*")) if (cold / _PARTS).is_dir() else []:
            cold_lake._compact_partition(dataset, day, unsafe_symbol(sym_dir.name))

    def retain(
        self, now: dt.datetime, *, hot_days: int = 30, delete_after_days: int = 365
    ) -> dict[str, int]:
        """Move days older than `hot_days` to the cold tier; delete days older than
        `delete_after_days` from both tiers. Returns counts of days moved and deleted."""
        if not 0 < hot_days <= delete_after_days:
            raise StorageError(
                f"need 0 < hot_days ({hot_days}) <= delete_after_days ({delete_after_days})"
            )
        today = now.astimezone(dt.UTC).date()
        moved = deleted = 0
        for tier in self._tiers():
            if not tier.is_dir():
                continue
            for day_dir in sorted(tier.glob("*/*")):
                try:
                    day = dt.date.fromisoformat(day_dir.name)
                except ValueError:
                    continue
                age = (today - day).days
                if age > delete_after_days:
                    shutil.rmtree(day_dir)
                    deleted += 1
                elif age > hot_days and tier == self.root and self.cold_root is not None:
                    target = self.cold_root / day_dir.parent.name / day_dir.name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if target.exists():  # merge into the cold day without losing its rows
                        self._merge_day(day_dir, target)
                        shutil.rmtree(day_dir)
                    else:
                        shutil.move(str(day_dir), str(target))
                    moved += 1
        return {"moved": moved, "deleted": deleted}
