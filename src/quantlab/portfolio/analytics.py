"""Performance analytics of an equity curve: pure functions, no I/O.

Inputs
------
* An *equity frame*: columns ``timestamp`` (``pl.Datetime`` in UTC, strictly increasing)
  and ``equity`` (numeric, in the base currency, finite and strictly positive).
* A *returns frame*: columns ``timestamp`` and ``returns``, as made by `returns`. The
  scalar statistics also take the returns as a ``pl.Series``, a numpy array or a sequence.

Conventions (those of empyrical-reloaded, against which the tests check them)
---------------------------------------------------------------------------
* Returns are simple returns per bar, ``equity[t] / equity[t-1] - 1``; the first bar has
  none (dropped, like ``empyrical.simple_returns``).
* ``sharpe = mean(r - rf) / std(r - rf, ddof=1) * sqrt(periods_per_year)``; ``rf`` is the
  risk-free return *per period*, not per year.
* ``sortino = mean(r - mar) * ppy / (sqrt(mean(min(r - mar, 0) ** 2)) * sqrt(ppy))``: the
  downside deviation is the root mean square of the shortfalls over *all* periods
  (empyrical's ``downside_risk``), not the standard deviation of the negative returns.
* ``annual_return`` is the CAGR ``prod(1 + r) ** (ppy / n) - 1`` (empyrical's
  ``annual_return``); ``annual_volatility = std(r, ddof=1) * sqrt(ppy)``.
* ``max_drawdown`` depth is a *positive* fraction in [0, 1] (empyrical returns it negated),
  measured on the compounded curve that starts at 1 before the first return, so a loss on
  the first bar counts; ``calmar = annual_return / depth`` (NaN when the depth is 0).
* `periods_per_year` counts calendar time: 365 days of 24 hours divided by the median bar
  spacing (5-minute bars -> 105,120; daily bars -> 365). For markets that trade business
  days only, pass the factor yourself (e.g. 252).

Edge cases
----------
* Fewer than 2 returns: Sharpe, Sortino and volatility are NaN; no returns: every
  statistic is NaN (empyrical's behaviour).
* Zero dispersion (constant equity, or constant returns): Sharpe is ``mean / 0``, i.e. NaN
  for constant equity and +-inf for a constant non-zero return, as in empyrical; likewise
  Sortino without any shortfall.
* Bad input raises ``ValueError`` naming it: missing column, wrong dtype, null/NaN/inf
  values, non-positive equity, returns below -100 %, unsorted or duplicate timestamps.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

__all__ = [
    "Drawdown",
    "Exposure",
    "annual_return",
    "annual_volatility",
    "calmar",
    "downside_risk",
    "equity_curve",
    "exposure",
    "hit_rate",
    "max_drawdown",
    "periods_per_year",
    "returns",
    "sharpe",
    "sortino",
    "summary",
    "total_return",
    "turnover",
]

ReturnsLike = pl.DataFrame | pl.Series | npt.NDArray[np.floating] | Sequence[float]
FloatArray = npt.NDArray[np.float64]

YEAR = dt.timedelta(days=365)
"""Calendar year used by `periods_per_year`: 365 days of 24 hours (crypto trades 24/7)."""
_YEAR_NS = 365 * 86_400 * 1e9


# --------------------------------------------------------------------------- validation


def _check_columns(frame: pl.DataFrame, name: str, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}; has {frame.columns}")


def _check_timestamps(ts: pl.Series, name: str) -> None:
    dtype = ts.dtype
    if not isinstance(dtype, pl.Datetime):
        raise ValueError(f"{name}.timestamp: expected pl.Datetime (UTC), got {dtype}")
    if dtype.time_zone not in (None, "UTC"):
        raise ValueError(f"{name}.timestamp: expected UTC, got time zone {dtype.time_zone!r}")
    if ts.null_count():
        raise ValueError(f"{name}.timestamp: {ts.null_count()} null value(s)")
    if len(ts) > 1:
        steps = ts.diff().drop_nulls()
        if (steps == dt.timedelta(0)).any():
            raise ValueError(f"{name}.timestamp: duplicate timestamps")
        if (steps < dt.timedelta(0)).any():
            raise ValueError(f"{name}.timestamp: not sorted (must be strictly increasing)")


def _float_column(frame: pl.DataFrame, name: str, column: str) -> FloatArray:
    series = frame.get_column(column)
    if not (series.dtype.is_numeric() or isinstance(series.dtype, pl.Decimal)):
        raise ValueError(f"{name}.{column}: expected a numeric column, got {series.dtype}")
    if series.null_count():
        raise ValueError(f"{name}.{column}: {series.null_count()} null value(s)")
    values = series.cast(pl.Float64).to_numpy()
    if not np.isfinite(values).all():
        raise ValueError(f"{name}.{column}: NaN or infinite value(s)")
    return np.asarray(values, dtype=np.float64)


def _equity(frame: pl.DataFrame, name: str = "equity_frame") -> tuple[pl.Series, FloatArray]:
    """Validated (timestamps, equity values) of an equity frame."""
    _check_columns(frame, name, ["timestamp", "equity"])
    ts = frame.get_column("timestamp")
    _check_timestamps(ts, name)
    equity = _float_column(frame, name, "equity")
    if (equity <= 0).any():
        raise ValueError(f"{name}.equity: non-positive value(s) (min {equity.min()})")
    return ts, equity


def _returns_array(data: ReturnsLike, *, compounding: bool = False) -> FloatArray:
    """Validated returns as a float array; `compounding` also rejects returns below -100 %."""
    if isinstance(data, pl.DataFrame):
        _check_columns(data, "returns", ["returns"])
        if "timestamp" in data.columns:
            _check_timestamps(data.get_column("timestamp"), "returns")
        arr = _float_column(data, "returns", "returns")
    else:
        if isinstance(data, pl.Series):
            if data.null_count():
                raise ValueError(f"returns: {data.null_count()} null value(s)")
            data = data.cast(pl.Float64).to_numpy()
        arr = np.asarray(data, dtype=np.float64)
        if arr.ndim != 1:
            raise ValueError(f"returns: expected one dimension, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError("returns: NaN or infinite value(s)")
    if compounding and (arr < -1).any():
        raise ValueError(f"returns: value(s) below -100% (min {arr.min()}): negative equity")
    return arr


def _check_periods(periods_per_year: float) -> float:
    if not (math.isfinite(periods_per_year) and periods_per_year > 0):
        raise ValueError(f"periods_per_year: must be finite and > 0, got {periods_per_year}")
    return float(periods_per_year)


# --------------------------------------------------------------------------- curves


def returns(equity_frame: pl.DataFrame) -> pl.DataFrame:
    """Simple returns per bar: columns ``timestamp`` (end of the bar) and ``returns``.

    One row fewer than the equity frame (the first bar has no return).
    """
    ts, equity = _equity(equity_frame)
    r = equity[1:] / equity[:-1] - 1.0
    return pl.DataFrame({"timestamp": ts[1:], "returns": pl.Series(r, dtype=pl.Float64)})


def equity_curve(returns_frame: pl.DataFrame, start: float = 1.0) -> pl.DataFrame:
    """Compounded equity ``start * prod(1 + r)`` at each return's timestamp.

    The inverse of `returns` up to the first row: ``equity_curve(returns(f), f.equity[0])``
    equals ``f`` without its first row.
    """
    _check_columns(returns_frame, "returns_frame", ["timestamp", "returns"])
    _check_timestamps(returns_frame.get_column("timestamp"), "returns_frame")
    r = _returns_array(returns_frame, compounding=True)
    if not (math.isfinite(start) and start > 0):
        raise ValueError(f"start: must be finite and > 0, got {start}")
    return pl.DataFrame(
        {
            "timestamp": returns_frame.get_column("timestamp"),
            "equity": pl.Series(start * np.cumprod(1.0 + r), dtype=pl.Float64),
        }
    )


def periods_per_year(timestamps: pl.Series | Sequence[dt.datetime]) -> float:
    """Bars per calendar year, inferred from the median spacing of `timestamps`.

    Calendar convention: ``365 days / median(diff(timestamps))``, 24 hours a day, so
    5-minute bars give 105,120, hourly 8,760 and daily 365. The median ignores the odd gap
    (a missing bar, a weekend); a weekday-only daily series still gives 365, not 252: pass
    the factor explicitly for such markets. Needs two or more strictly increasing stamps.
    """
    ts = timestamps if isinstance(timestamps, pl.Series) else pl.Series("timestamp", timestamps)
    _check_timestamps(ts, "timestamps")
    if len(ts) < 2:
        raise ValueError(f"timestamps: need at least 2 to infer a bar size, got {len(ts)}")
    steps = ts.diff().drop_nulls().dt.total_nanoseconds().to_numpy()
    return _YEAR_NS / float(np.median(steps))


_infer_periods_per_year = periods_per_year  # `summary` has a parameter of that name


# --------------------------------------------------------------------------- ratios


def total_return(returns: ReturnsLike) -> float:
    """Compounded return over the whole series, ``prod(1 + r) - 1`` (NaN when empty)."""
    r = _returns_array(returns, compounding=True)
    if len(r) == 0:
        return math.nan
    return float(np.prod(1.0 + r) - 1.0)


def annual_return(returns: ReturnsLike, periods_per_year: float) -> float:
    """CAGR, ``prod(1 + r) ** (periods_per_year / n) - 1`` (empyrical ``annual_return``)."""
    ppy = _check_periods(periods_per_year)
    r = _returns_array(returns, compounding=True)
    if len(r) == 0:
        return math.nan
    ending = float(np.prod(1.0 + r))
    return float(ending ** (ppy / len(r)) - 1.0)


def annual_volatility(returns: ReturnsLike, periods_per_year: float) -> float:
    """``std(r, ddof=1) * sqrt(periods_per_year)``; NaN with fewer than 2 returns."""
    ppy = _check_periods(periods_per_year)
    r = _returns_array(returns)
    if len(r) < 2:
        return math.nan
    return float(np.std(r, ddof=1) * math.sqrt(ppy))


def _zero_dispersion_std(r: FloatArray) -> float:
    """Sample std, exactly 0 when every value is equal (no 1e-18 rounding residue)."""
    if r.max() == r.min():
        return 0.0
    return float(np.std(r, ddof=1))


def _ratio(num: float, den: float) -> float:
    """``num / den`` with IEEE semantics: +-inf for x/0, NaN for 0/0."""
    if den == 0.0:
        return math.nan if num == 0.0 else math.copysign(math.inf, num)
    return num / den


def sharpe(returns: ReturnsLike, periods_per_year: float, risk_free: float = 0.0) -> float:
    """Annualized Sharpe ratio, ``mean(r - rf) / std(r - rf, ddof=1) * sqrt(ppy)``.

    `risk_free` is a return per period. NaN with fewer than 2 returns or constant equity;
    +-inf for constant non-zero excess returns (empyrical's behaviour).
    """
    ppy = _check_periods(periods_per_year)
    r = _returns_array(returns)
    if len(r) < 2:
        return math.nan
    excess = r - risk_free
    return _ratio(float(np.mean(excess)), _zero_dispersion_std(excess)) * math.sqrt(ppy)


def downside_risk(
    returns: ReturnsLike, periods_per_year: float, required_return: float = 0.0
) -> float:
    """Annualized downside deviation, ``sqrt(mean(min(r - mar, 0) ** 2)) * sqrt(ppy)``."""
    ppy = _check_periods(periods_per_year)
    r = _returns_array(returns)
    if len(r) == 0:
        return math.nan
    shortfall = np.minimum(r - required_return, 0.0)
    return float(np.sqrt(np.mean(np.square(shortfall))) * math.sqrt(ppy))


def sortino(returns: ReturnsLike, periods_per_year: float, required_return: float = 0.0) -> float:
    """Annualized Sortino ratio: ``mean(r - mar) * ppy / downside_risk`` (empyrical).

    `required_return` (the minimum acceptable return) is per period. NaN with fewer than 2
    returns; +-inf when no return falls below it and the mean excess is non-zero.
    """
    ppy = _check_periods(periods_per_year)
    r = _returns_array(returns)
    if len(r) < 2:
        return math.nan
    mean_annual = float(np.mean(r - required_return)) * ppy
    return _ratio(mean_annual, downside_risk(r, ppy, required_return))


# --------------------------------------------------------------------------- drawdown


@dataclass(frozen=True, slots=True)
class Drawdown:
    """The deepest drawdown of a curve.

    depth
        ``1 - trough / peak``, in [0, 1] (NaN for an empty curve). empyrical's
        ``max_drawdown`` is ``-depth``.
    peak
        When the curve last stood at its running maximum before the trough.
    trough
        When it reached the deepest point (the first time, if tied).
    recovery
        The first time after the trough when the curve is back at or above the peak; None
        if it never recovers (or there is no drawdown).
    duration
        ``recovery - peak``, or ``end - peak`` when it has not recovered; 0 when ``depth``
        is 0 or the curve is empty.
    """

    depth: float
    peak: dt.datetime | None
    trough: dt.datetime | None
    recovery: dt.datetime | None
    duration: dt.timedelta


def _drawdown_depth(wealth: FloatArray) -> float:
    """Deepest ``1 - wealth / running max`` of a positive wealth curve."""
    running = np.maximum.accumulate(wealth)
    return float(np.max(1.0 - wealth / running))


def max_drawdown(data: pl.DataFrame, *, start: dt.datetime | None = None) -> Drawdown:
    """The maximum drawdown of an equity frame or of a returns frame, with its dates.

    An equity frame (``timestamp``, ``equity``) is used as is. A returns frame
    (``timestamp``, ``returns``) is compounded from 1 *before* its first return, as
    empyrical does; that starting point is dated `start`, by default one bar (the first
    spacing) before the first timestamp. `start` is ignored for an equity frame.
    """
    if "equity" in data.columns:
        ts_series, wealth = _equity(data, "data")
    elif "returns" in data.columns:
        _check_columns(data, "data", ["timestamp"])
        ts_series = data.get_column("timestamp")
        _check_timestamps(ts_series, "data")
        r = _returns_array(data, compounding=True)
        if len(r) == 0:
            return Drawdown(math.nan, None, None, None, dt.timedelta(0))
        if start is None:
            if len(r) < 2:
                raise ValueError("start: needed to date a returns frame of a single row")
            first, second = ts_series[0], ts_series[1]
            start = first - (second - first)
        elif start >= ts_series[0]:
            raise ValueError(f"start: {start} is not before the first return {ts_series[0]}")
        ts_series = pl.concat([pl.Series("timestamp", [start], dtype=ts_series.dtype), ts_series])
        wealth = np.concatenate([[1.0], np.cumprod(1.0 + r)])
    else:
        raise ValueError(f"data: needs an 'equity' or a 'returns' column; has {data.columns}")

    if len(wealth) == 0:
        return Drawdown(math.nan, None, None, None, dt.timedelta(0))
    running = np.maximum.accumulate(wealth)
    dd = 1.0 - wealth / running
    trough = int(np.argmax(dd))
    depth = float(dd[trough])
    if depth <= 0.0:
        return Drawdown(0.0, None, None, None, dt.timedelta(0))
    times: list[dt.datetime] = ts_series.to_list()
    peak_value = running[trough]
    peak = int(np.flatnonzero(wealth[: trough + 1] == peak_value)[-1])
    after = np.flatnonzero(wealth[trough:] >= peak_value)
    recovery = trough + int(after[0]) if len(after) else None
    end = times[recovery] if recovery is not None else times[-1]
    return Drawdown(
        depth=depth,
        peak=times[peak],
        trough=times[trough],
        recovery=times[recovery] if recovery is not None else None,
        duration=end - times[peak],
    )


def calmar(returns: ReturnsLike, periods_per_year: float) -> float:
    """``annual_return / max drawdown depth``; NaN without drawdown or when infinite."""
    r = _returns_array(returns, compounding=True)
    ppy = _check_periods(periods_per_year)
    if len(r) == 0:
        return math.nan
    depth = _drawdown_depth(np.concatenate([[1.0], np.cumprod(1.0 + r)]))
    if depth <= 0.0:
        return math.nan
    value = annual_return(r, ppy) / depth
    return math.nan if math.isinf(value) else value


# --------------------------------------------------------------------------- trades


def hit_rate(trades: pl.DataFrame, pnl: str = "pnl") -> float:
    """Share of closed trades with a strictly positive PnL (a 0 PnL is not a hit).

    `trades` has one row per closed trade (round trip) and a numeric or Decimal column
    `pnl`. NaN when there are no trades.
    """
    _check_columns(trades, "trades", [pnl])
    values = _float_column(trades, "trades", pnl)
    if len(values) == 0:
        return math.nan
    return float(np.count_nonzero(values > 0) / len(values))


def _notional(frame: pl.DataFrame, name: str) -> FloatArray:
    """|notional| per row: the ``notional`` column, else ``|quantity| * price``."""
    if "notional" in frame.columns:
        return np.abs(_float_column(frame, name, "notional"))
    _check_columns(frame, name, ["quantity", "price"])
    return np.abs(_float_column(frame, name, "quantity")) * _float_column(frame, name, "price")


def turnover(fills: pl.DataFrame, equity_frame: pl.DataFrame) -> float:
    """Traded notional over the period divided by the average equity (not annualized).

    `fills` has a ``timestamp`` and either ``notional`` or ``quantity`` and ``price``
    (numeric or Decimal, sign ignored), in the base currency; every fill must fall within
    the equity frame's span. The average equity is the mean over its bars.
    """
    ts, equity = _equity(equity_frame)
    _check_columns(fills, "fills", ["timestamp"])
    notional = _notional(fills, "fills")
    if len(equity) == 0:
        return math.nan
    fill_ts = fills.get_column("timestamp")
    if not isinstance(fill_ts.dtype, pl.Datetime):
        raise ValueError(f"fills.timestamp: expected pl.Datetime (UTC), got {fill_ts.dtype}")
    if len(fill_ts):
        if fill_ts.null_count():
            raise ValueError(f"fills.timestamp: {fill_ts.null_count()} null value(s)")
        lo, hi = ts[0], ts[-1]
        outside = fills.filter((pl.col("timestamp") < lo) | (pl.col("timestamp") > hi)).height
        if outside:
            raise ValueError(f"fills: {outside} fill(s) outside the equity span [{lo}, {hi}]")
    return float(notional.sum() / equity.mean())


@dataclass(frozen=True, slots=True)
class Exposure:
    """Time in the market and average gross exposure.

    time_in_market
        Share of the equity frame's bars with a non-zero position (for regular bars, the
        share of time).
    avg_gross_exposure
        Mean over the bars of ``sum(|position notional|) / equity``.
    """

    time_in_market: float
    avg_gross_exposure: float


def exposure(positions: pl.DataFrame, equity_frame: pl.DataFrame) -> Exposure:
    """Exposure of positions sampled on the equity frame's bars.

    `positions` is long format: ``timestamp`` plus either ``notional`` (signed or not) or
    ``quantity`` and ``price`` (the mark), one row per symbol held at that bar (a
    ``symbol`` column is allowed but not needed). A bar without rows is flat. Every
    position timestamp must be one of the equity frame's.
    """
    ts, equity = _equity(equity_frame)
    _check_columns(positions, "positions", ["timestamp"])
    notional = _notional(positions, "positions")
    if len(equity) == 0:
        return Exposure(math.nan, math.nan)
    pos_ts = positions.get_column("timestamp")
    if not isinstance(pos_ts.dtype, pl.Datetime):
        raise ValueError(f"positions.timestamp: expected pl.Datetime (UTC), got {pos_ts.dtype}")
    if pos_ts.null_count():
        raise ValueError(f"positions.timestamp: {pos_ts.null_count()} null value(s)")
    gross_rows = pl.DataFrame({"timestamp": pos_ts.cast(ts.dtype), "gross": notional})
    unknown = gross_rows.join(pl.DataFrame({"timestamp": ts}), on="timestamp", how="anti").height
    if unknown:
        raise ValueError(f"positions: {unknown} row(s) at timestamps not in the equity frame")
    gross_by_bar = gross_rows.group_by("timestamp").agg(pl.col("gross").sum())
    gross = (
        pl.DataFrame({"timestamp": ts})
        .join(gross_by_bar, on="timestamp", how="left")
        .get_column("gross")
        .fill_null(0.0)
        .to_numpy()
    )
    return Exposure(
        time_in_market=float(np.count_nonzero(gross > 0) / len(gross)),
        avg_gross_exposure=float(np.mean(gross / equity)),
    )


# --------------------------------------------------------------------------- summary


def summary(
    equity_frame: pl.DataFrame,
    *,
    trades: pl.DataFrame | None = None,
    positions: pl.DataFrame | None = None,
    fills: pl.DataFrame | None = None,
    periods_per_year: float | None = None,
    risk_free: float = 0.0,
) -> dict[str, float]:
    """The statistics above in one dict of floats.

    `periods_per_year` defaults to the calendar-time inference of `periods_per_year`
    (NaN when the frame has fewer than 2 bars). Trade keys appear only with `trades`
    (``hit_rate``, ``trades``), exposure keys with `positions` (``time_in_market``,
    ``avg_gross_exposure``), ``turnover`` with `fills`. Durations are in days.
    """
    r = returns(equity_frame)
    if periods_per_year is None:
        ts = equity_frame.get_column("timestamp")
        ppy = _infer_periods_per_year(ts) if len(ts) >= 2 else math.nan
    else:
        ppy = _check_periods(periods_per_year)
    dd = max_drawdown(equity_frame)
    has_ppy = math.isfinite(ppy)
    out: dict[str, float] = {
        "periods": float(r.height),
        "periods_per_year": ppy,
        "total_return": total_return(r),
        "annual_return": annual_return(r, ppy) if has_ppy else math.nan,
        "annual_volatility": annual_volatility(r, ppy) if has_ppy else math.nan,
        "sharpe": sharpe(r, ppy, risk_free) if has_ppy else math.nan,
        "sortino": sortino(r, ppy) if has_ppy else math.nan,
        "calmar": calmar(r, ppy) if has_ppy else math.nan,
        "max_drawdown": dd.depth,
        "max_drawdown_duration_days": dd.duration / dt.timedelta(days=1),
    }
    if trades is not None:
        out["hit_rate"] = hit_rate(trades)
        out["trades"] = float(trades.height)
    if positions is not None:
        exp = exposure(positions, equity_frame)
        out["time_in_market"] = exp.time_in_market
        out["avg_gross_exposure"] = exp.avg_gross_exposure
    if fills is not None:
        out["turnover"] = turnover(fills, equity_frame)
    return out
