"""Research helpers for data: where notebooks may write, the bundled recordings, the lake, and
the ingest data-quality rules applied to a whole recording at once.

Notebooks write only under ``<project root>/var/research`` (`research_dir`); the project root is
found by walking up to the folder holding ``pyproject.toml`` (`project_root`), so a notebook
run with its own folder as the working directory (nbval, papermill) writes to the same place.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from quantlab.adapters.sim.data import bundled_files, read_market
from quantlab.core.enums import EventType
from quantlab.core.errors import DataError
from quantlab.ingest.quality import FLAG_NAMES, QualityChecker, QualityConfig
from quantlab.storage.lake import Lake

__all__ = [
    "QualityReport",
    "bundled_catalog",
    "check_quality",
    "load_market",
    "open_lake",
    "project_root",
    "research_dir",
    "return_spikes",
]

_KINDS = {"bar": EventType.BAR, "trade": EventType.TRADE, "quote": EventType.QUOTE}


def project_root(start: str | Path | None = None) -> Path:
    """The project's root folder: the nearest folder at or above `start` with a pyproject.toml.

    Parameters
    ----------
    start
        Where to start looking (default: the current working directory, then, if nothing is
        found above it, this module's own folder, which lies inside a source checkout).

    Returns
    -------
    Path
        The absolute root folder.

    Raises
    ------
    DataError
        No folder at or above `start` (or this module) holds a ``pyproject.toml``.

    Examples
    --------
    >>> (project_root() / "pyproject.toml").is_file()
    True
    """
    starts = [Path(start)] if start is not None else [Path.cwd(), Path(__file__).parent]
    for first in starts:
        here = first.expanduser().resolve()
        for folder in (here, *here.parents):
            if (folder / "pyproject.toml").is_file():
                return folder
    raise DataError(f"no pyproject.toml in {[str(s) for s in starts]} or any folder above them")


def research_dir(*parts: str, clean: bool = False, root: str | Path | None = None) -> Path:
    """A folder under ``<project root>/var/research`` (created), where notebooks may write.

    Parameters
    ----------
    parts
        Sub-folders, e.g. ``research_dir("models")``; each must be a plain name (no ``..``,
        no separators), so the result always lies inside ``var/research``.
    clean
        Delete the folder's contents first (a fresh start for a notebook that rebuilds it).
    root
        The project root (default: `project_root`).

    Examples
    --------
    >>> research_dir("lake").relative_to(project_root()).as_posix()
    'var/research/lake'
    """
    for part in parts:
        if not part or part in (".", "..") or "/" in part or "\\" in part:
            raise DataError(f"research_dir parts must be plain folder names, got {part!r}")
    base = (Path(root) if root is not None else project_root()).resolve() / "var" / "research"
    folder = base.joinpath(*parts)
    if clean and folder.exists() and folder != base:
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def load_market(name: str | Path) -> tuple[str, pl.DataFrame]:
    """One recorded file (``bundled:NAME`` or a path) as its kind and a frame in that schema.

    Bars are ``symbol, timestamp, open, high, low, close, volume``; trades ``symbol,
    timestamp, price, size, aggressor, trade_id``; quotes ``symbol, timestamp, bid, ask,
    bid_size, ask_size`` (timestamps UTC).

    Returns
    -------
    (str, pl.DataFrame)
        ``"bar"``, ``"trade"`` or ``"quote"`` and the rows, sorted by time (stable).

    Examples
    --------
    >>> kind, trades = load_market("bundled:binance_btcusdt_trades_2021-01-08.parquet")
    >>> kind, trades.height
    ('trade', 2001)
    """
    kind, frame = read_market(name)
    return kind.topic_name, frame.sort("timestamp", maintain_order=True)


def bundled_catalog() -> pl.DataFrame:
    """One row per bundled file: its kind, symbols, rows, first and last timestamp.

    Examples
    --------
    >>> bundled_catalog().select("file", "kind", "rows").row(0)
    ('binance_btc_pairs_5m_2018-01.parquet', 'bar', 57546)
    """
    rows = []
    for file in bundled_files():
        kind, frame = load_market(f"bundled:{file}")
        ts = frame["timestamp"]
        rows.append(
            {
                "file": file,
                "kind": kind,
                "symbols": frame["symbol"].n_unique(),
                "rows": frame.height,
                "first": ts.min(),
                "last": ts.max(),
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            "file": pl.String,
            "kind": pl.String,
            "symbols": pl.Int64,
            "rows": pl.Int64,
            "first": pl.Datetime("us", "UTC"),
            "last": pl.Datetime("us", "UTC"),
        },
    )


def open_lake(root: str | Path | None = None) -> Lake:
    """The Parquet lake at `root` (default: ``var/research/lake``, never the production lake).

    The lake stores ``<root>/<dataset>/<YYYY-MM-DD>/<SYMBOL>.parquet``; ``write(frame,
    dataset)`` appends and compacts, ``scan(dataset, symbols, start, end)`` is a lazy query,
    ``inventory()`` lists datasets and symbols with their first/last timestamps and rows.

    Examples
    --------
    >>> lake = open_lake(research_dir("lake", clean=True))
    >>> _ = lake.write(load_market("bundled:binance_btcusdt_quotes_2021-01-08.parquet")[1],
    ...                "quote")
    >>> lake.inventory()["rows"].sum()
    451
    """
    return Lake(research_dir("lake") if root is None else Path(root))


@dataclass(frozen=True)
class QualityReport:
    """The ingest data-quality rules applied to a recording (`check_quality`).

    Attributes
    ----------
    kind : ``"bar"``, ``"trade"`` or ``"quote"``.
    accepted : the rows kept, with ``flags`` (UInt8 bits) and ``flag`` (the names, ``,``-joined).
    rejected : the rows dropped, with ``reason``.
    gaps : one row per gap: ``symbol, start, end, seconds``.
    counts : ``accepted``, ``rejected:<reason>``, ``flagged:<flag>`` and ``gaps``.
    """

    kind: str
    accepted: pl.DataFrame
    rejected: pl.DataFrame
    gaps: pl.DataFrame
    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> pl.DataFrame:
        """The counts as a two-column frame (``check``, ``count``)."""
        return pl.DataFrame(
            {"check": list(self.counts), "count": list(self.counts.values())},
            schema={"check": pl.String, "count": pl.Int64},
        )


def check_quality(
    frame: pl.DataFrame,
    kind: str | None = None,
    *,
    batch_rows: int = 1000,
    **thresholds: Any,
) -> QualityReport:
    """Run the ingest data-quality checks (`quantlab.ingest.quality`) over a recording.

    The rows are fed in time order in batches of `batch_rows`, as ingestion feeds them, with
    the checker's per-symbol state carried between batches. Time rules that need a wall clock
    (``future_timestamp``, ``stale_timestamp``) do not apply to a recording.

    Parameters
    ----------
    frame
        Bars, trades or quotes in quantlab's schema (`load_market`).
    kind
        ``"bar"``, ``"trade"`` or ``"quote"``; default: told from the columns.
    batch_rows
        Rows per batch (>= 1).
    thresholds
        Overrides of the rule thresholds (`QualityConfig` fields), e.g. ``gap_s=60`` (a gap
        is that many seconds beyond the bar interval for bars), ``jump_pct=0.05``,
        ``volume_sigmas=4``.

    Examples
    --------
    >>> kind, bars = load_market("bundled:btc_perp_1m_2022-01.parquet")
    >>> report = check_quality(bars, gap_s=60)
    >>> report.counts["accepted"] == bars.height
    True
    """
    if kind is None:
        kinds = {"open": "bar", "price": "trade", "bid": "quote"}
        kind = next((k for col, k in kinds.items() if col in frame.columns), None)
        if kind is None:
            raise DataError(
                f"cannot tell the kind of a frame with columns {frame.columns}; pass kind="
                "'bar', 'trade' or 'quote'"
            )
    if kind not in _KINDS:
        raise DataError(f"kind must be 'bar', 'trade' or 'quote', got {kind!r}")
    if not isinstance(batch_rows, int) or batch_rows < 1:
        raise DataError(f"batch_rows must be a positive integer, got {batch_rows!r}")
    known = set(QualityConfig.__dataclass_fields__)
    unknown = sorted(set(thresholds) - known)
    if unknown:
        raise DataError(f"unknown quality thresholds {unknown}; known: {sorted(known)}")
    config = QualityConfig(**{"max_future_s": None, "max_age_s": None, **thresholds})
    checker = QualityChecker(_KINDS[kind], config)
    ordered = frame.sort("timestamp", maintain_order=True)
    accepted, rejected, gaps = [], [], []
    for chunk in ordered.iter_slices(batch_rows):
        result = checker.check(chunk)
        accepted.append(result.accepted)
        rejected.append(result.rejected)
        gaps.extend(result.gaps)
    acc = pl.concat(accepted) if accepted else ordered.clear().with_columns(flags=pl.lit(0))
    names = pl.concat_str(
        [
            pl.when((pl.col("flags") & bit) > 0).then(pl.lit(name))
            for bit, name in FLAG_NAMES.items()
        ],
        separator=",",
        ignore_nulls=True,
    )
    acc = acc.with_columns(names.alias("flag"))
    rej = (
        pl.concat(rejected)
        if rejected
        else ordered.clear().with_columns(reason=pl.lit("", pl.String))
    )
    gap_frame = pl.DataFrame(
        {
            "symbol": [g.symbol for g in gaps],
            "start": [g.start_ns for g in gaps],
            "end": [g.end_ns for g in gaps],
            "seconds": [g.seconds for g in gaps],
        },
        schema={"symbol": pl.String, "start": pl.Int64, "end": pl.Int64, "seconds": pl.Float64},
    ).with_columns(
        pl.col("start").cast(pl.Datetime("ns", "UTC")),
        pl.col("end").cast(pl.Datetime("ns", "UTC")),
    )
    counts = {"accepted": checker.accepted}
    counts |= {f"rejected:{k}": v for k, v in sorted(checker.rejected.items())}
    counts |= {f"flagged:{k}": v for k, v in sorted(checker.flagged.items())}
    counts["gaps"] = len(gaps)
    return QualityReport(kind, acc, rej, gap_frame, counts)


def return_spikes(
    bars: pl.DataFrame, *, z: float = 6.0, window: int = 288, price: str = "close"
) -> pl.DataFrame:
    """Bars whose log return is more than `z` rolling standard deviations from zero.

    The ingest rule ``price_jump`` (10 % within 1 s) is made for ticks; for bars a move is
    extreme relative to the symbol's own recent volatility: the standard deviation of its
    previous `window` log returns (the current one excluded, so a spike does not hide itself).

    Parameters
    ----------
    bars
        Bars (or trades with ``price="price"``) with ``symbol`` and ``timestamp``.
    z
        Threshold in standard deviations (> 0).
    window
        Previous returns the deviation is estimated from (>= 2); 288 five-minute bars are a day.
    price
        The price column.

    Returns
    -------
    pl.DataFrame
        ``symbol, timestamp, <price>, log_return, sigma, z`` of the spikes, largest |z| first.

    Examples
    --------
    >>> spikes = return_spikes(load_bars("bundled:binance_btc_pairs_5m_2018-01.parquet"))
    >>> bool((spikes["z"].abs() > 6).all())
    True
    """
    if not z > 0:
        raise DataError(f"z must be > 0, got {z!r}")
    if not isinstance(window, int) or window < 2:
        raise DataError(f"window must be an integer >= 2, got {window!r}")
    missing = {"symbol", "timestamp", price} - set(bars.columns)
    if missing:
        raise DataError(f"return_spikes needs columns {sorted(missing)} (has {bars.columns})")
    ret = (pl.col(price) / pl.col(price).shift(1)).log().over("symbol")
    out = (
        bars.sort("timestamp", maintain_order=True)
        .select("symbol", "timestamp", price, ret.alias("log_return"))
        .with_columns(
            pl.col("log_return")
            .shift(1)
            .rolling_std(window, min_samples=window // 2)
            .over("symbol")
            .alias("sigma")
        )
        .with_columns((pl.col("log_return") / pl.col("sigma")).alias("z"))
        .filter(pl.col("z").is_finite() & (pl.col("z").abs() > z))
    )
    return out.sort(pl.col("z").abs(), descending=True)
