"""Reading recorded bar files (Parquet or CSV, bundled or on disk) into the bar schema."""

from __future__ import annotations

import datetime as dt
from importlib import resources
from pathlib import Path

import polars as pl

from quantlab.core.enums import Aggressor, EventType
from quantlab.core.errors import DataError
from quantlab.core.schemas import BAR_SCHEMA, SCHEMAS

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
        if file.suffix in (".parquet", ".csv"):
            raw = _read_table(file)
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


def _read_table(file: Path) -> pl.DataFrame:
    """A Parquet or CSV file; an unreadable one is a `DataError` naming it."""
    try:
        if file.suffix == ".parquet":
            return pl.read_parquet(file)
        return pl.read_csv(file, try_parse_dates=True)
    except (pl.exceptions.PolarsError, OSError) as exc:
        kind = "Parquet" if file.suffix == ".parquet" else "CSV"
        raise DataError(f"{file.name}: cannot read it as {kind}: {exc}") from None


def _normalise(raw: pl.DataFrame, name: str) -> pl.DataFrame:
    raw = raw.rename({c: _ALIASES[c.lower()] for c in raw.columns if c.lower() in _ALIASES})
    missing = set(BAR_SCHEMA.names()) - set(raw.columns)
    if missing:
        raise DataError(
            f"{name}: not a bar file, missing columns {sorted(missing)} (has {raw.columns})"
        )
    return raw.with_columns(_utc(raw).alias("timestamp")).select(
        [pl.col(n).cast(t) for n, t in BAR_SCHEMA.items()]
    )


def detect_kind(columns: list[str]) -> EventType:
    """Bars, trades or quotes, by the columns a file has."""
    cols = {c.lower() for c in columns}
    if {"open", "high", "low", "close"} <= cols:
        return EventType.BAR
    if "price" in cols and ({"quantity", "size", "amount"} & cols):
        return EventType.TRADE
    if {"bid", "ask"} <= cols:
        return EventType.QUOTE
    raise DataError(
        f"cannot tell bars, trades or quotes from columns {columns}: bars need "
        "open/high/low/close, trades price and quantity|size, quotes bid and ask"
    )


def normalise_market(raw: pl.DataFrame, name: str) -> tuple[EventType, pl.DataFrame]:
    """Any of the recorded layouts (bars, trades, quotes) in quantlab's schema of that kind."""
    raw = raw.rename({c: _ALIASES[c.lower()] for c in raw.columns if c.lower() in _ALIASES})
    kind = detect_kind(raw.columns)
    if kind is EventType.BAR:
        return kind, _normalise(raw, name)
    if "symbol" not in raw.columns or "timestamp" not in raw.columns:
        raise DataError(f"{name}: needs symbol and timestamp columns (has {raw.columns})")
    ts = _utc(raw)
    if kind is EventType.TRADE:
        size = next(c for c in ("size", "quantity", "amount") if c in raw.columns)
        if "aggressor" in raw.columns:  # already quantlab's trade schema (the lake, a frame)
            aggressor = pl.col("aggressor")
        elif "buyer_maker" in raw.columns:  # the buyer was the maker: the seller crossed
            aggressor = (
                pl.when(pl.col("buyer_maker"))
                .then(int(Aggressor.SELLER))
                .otherwise(int(Aggressor.BUYER))
            )
        elif "side" in raw.columns:
            side = pl.col("side").cast(pl.String).str.to_lowercase()
            aggressor = (
                pl.when(side == "buy")
                .then(int(Aggressor.BUYER))
                .when(side == "sell")
                .then(int(Aggressor.SELLER))
                .otherwise(int(Aggressor.UNKNOWN))
            )
        else:
            aggressor = pl.lit(int(Aggressor.UNKNOWN))
        trade_id = pl.col("trade_id").cast(pl.String) if "trade_id" in raw.columns else pl.lit("")
        frame = raw.select(
            "symbol",
            ts.alias("timestamp"),
            "price",
            pl.col(size).alias("size"),
            aggressor.alias("aggressor"),
            trade_id.alias("trade_id"),
        )
    else:
        frame = raw.select(
            "symbol",
            ts.alias("timestamp"),
            "bid",
            "ask",
            (pl.col("bid_size") if "bid_size" in raw.columns else pl.lit(0.0)).alias("bid_size"),
            (pl.col("ask_size") if "ask_size" in raw.columns else pl.lit(0.0)).alias("ask_size"),
        )
    return kind, frame.select([pl.col(n).cast(t) for n, t in SCHEMAS[kind].items()])


def _utc(raw: pl.DataFrame) -> pl.Expr:
    ts = pl.col("timestamp")
    dtype = raw.schema["timestamp"]
    if dtype == pl.String:
        ts = ts.str.to_datetime(time_zone="UTC")
    elif dtype.is_integer():
        ts = pl.from_epoch(ts, time_unit="ms").dt.replace_time_zone("UTC")
    elif isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
        ts = ts.dt.replace_time_zone("UTC")
    return ts.dt.convert_time_zone("UTC")


def read_market(path: str | Path, *, symbol: str | None = None) -> tuple[EventType, pl.DataFrame]:
    """One recorded file (Parquet, CSV, or ccxt OHLCV JSON) as (kind, frame in that schema).

    ccxt OHLCV JSON is ``[[ms, open, high, low, close, volume], ...]`` (needs `symbol`) or
    ``{"SYMBOL": [[...], ...], ...}``.
    """
    file = resolve(path)
    if file.suffix in (".parquet", ".csv"):
        raw = _read_table(file)
    elif file.suffix == ".json":
        raw = _ccxt_ohlcv(file, symbol)
    else:
        raise DataError(f"unsupported file {file.name!r}: expected .parquet, .csv or .json")
    if symbol is not None and "symbol" not in raw.columns:
        raw = raw.with_columns(pl.lit(symbol).alias("symbol"))
    return normalise_market(raw, file.name)


def _ccxt_ohlcv(file: Path, symbol: str | None) -> pl.DataFrame:
    import json

    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{file.name}: not valid JSON ({exc})") from None
    if isinstance(data, list):
        if symbol is None:
            raise DataError(f"{file.name}: a ccxt OHLCV list needs a symbol (--symbol)")
        data = {symbol: data}
    if not isinstance(data, dict):
        raise DataError(f"{file.name}: expected a list of OHLCV rows or a dict of them")
    frames = []
    cols = ["timestamp", "open", "high", "low", "close", "volume"]
    for sym, rows in data.items():
        if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) >= 6 for r in rows):
            raise DataError(f"{file.name}: rows of {sym!r} must be [ms, o, h, l, c, v] lists")
        frame = pl.DataFrame([r[:6] for r in rows], schema=cols, orient="row").with_columns(
            pl.lit(str(sym)).alias("symbol")
        )
        frames.append(frame)
    if not frames:
        raise DataError(f"{file.name}: no OHLCV rows")
    return pl.concat(frames).with_columns(
        pl.col("timestamp").cast(pl.Int64), *(pl.col(c).cast(pl.Float64) for c in cols[1:])
    )
