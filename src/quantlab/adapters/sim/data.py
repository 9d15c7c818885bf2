"""Reading recorded bar files (Parquet or CSV, bundled or on disk) into the bar schema."""

from __future__ import annotations

import datetime as dt
from importlib import resources
from pathlib import Path

import polars as pl

from quantlab.core.errors import DataError
from quantlab.core.schemas import BAR_SCHEMA

BUNDLED_PREFIX = "bundled:"
_ALIASES = {"ts": "timestamp", "time": "timestamp", "date": "timestamp", "datetime": "timestamp"}


def bundled_dir() -> Path:
    """The folder of real market data shipped inside the package (see its PROVENANCE.md)."""
    return Path(str(resources.files("quantlab") / "_data" / "market"))


def bundled_files() -> list[str]:
    return sorted(p.name for p in bundled_dir().glob("*.parquet"))


def resolve(path: str | Path) -> Path:
    """A data path; ``bundled:NAME`` names a file shipped with quantlab."""
    text = str(path)
    if text.startswith(BUNDLED_PREFIX):
        name = text[len(BUNDLED_PREFIX) :]
        found = bundled_dir() / name
        if not found.is_file():
            raise DataError(f"no bundled data file {name!r}; bundled files: {bundled_files()}")
        return found
    found = Path(text).expanduser()
    if not found.is_file():
        raise DataError(f"data file {text!r} does not exist")
    return found


def parse_time(value: str | dt.datetime | None, what: str) -> dt.datetime | None:
    """An ISO date/datetime (naive means UTC) or aware datetime, as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        parsed = value
    else:
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            raise DataError(f"{what} {value!r} is not an ISO date or datetime") from None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def read_bars(
    paths: list[str | Path],
    *,
    symbols: list[str] | None = None,
    start: str | dt.datetime | None = None,
    end: str | dt.datetime | None = None,
) -> pl.DataFrame:
    """Bars from `paths` in the bar schema, filtered, sorted by time (then symbol)."""
    lo, hi = parse_time(start, "start"), parse_time(end, "end")
    if lo is not None and hi is not None and lo >= hi:
        raise DataError(f"start {lo.isoformat()} must be before end {hi.isoformat()}")
    frames = []
    for p in paths:
        file = resolve(p)
        if file.suffix == ".parquet":
            raw = pl.read_parquet(file)
        elif file.suffix == ".csv":
            raw = pl.read_csv(file, try_parse_dates=True)
        else:
            raise DataError(f"unsupported data file {file.name!r}: expected .parquet or .csv")
        frames.append(_normalise(raw, file.name))
    bars = pl.concat(frames)
    if symbols is not None:
        unknown = sorted(set(symbols) - set(bars["symbol"].unique().to_list()))
        if unknown:
            raise DataError(
                f"symbols {unknown} are not in the data; available: "
                f"{sorted(bars['symbol'].unique().to_list())}"
            )
        bars = bars.filter(pl.col("symbol").is_in(symbols))
    if lo is not None:
        bars = bars.filter(pl.col("timestamp") >= lo)
    if hi is not None:
        bars = bars.filter(pl.col("timestamp") < hi)
    if bars.is_empty():
        raise DataError(f"no bars left in {[str(p) for p in paths]} after filtering")
    return bars.sort(["timestamp", "symbol"], maintain_order=True)


def _normalise(raw: pl.DataFrame, name: str) -> pl.DataFrame:
    raw = raw.rename({c: _ALIASES[c.lower()] for c in raw.columns if c.lower() in _ALIASES})
    missing = set(BAR_SCHEMA.names()) - set(raw.columns)
    if missing:
        raise DataError(
            f"{name}: not a bar file, missing columns {sorted(missing)} (has {raw.columns})"
        )
    ts = pl.col("timestamp")
    dtype = raw.schema["timestamp"]
    if dtype == pl.String:
        ts = ts.str.to_datetime(time_zone="UTC")
    elif isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
        ts = ts.dt.replace_time_zone("UTC")
    return raw.with_columns(ts.dt.convert_time_zone("UTC").alias("timestamp")).select(
        [pl.col(n).cast(t) for n, t in BAR_SCHEMA.items()]
    )
