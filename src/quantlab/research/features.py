"""Research helpers for features: the feature specs, computing them, checking them against
TA-Lib, and their information coefficient against forward returns.

The numbers are the production ones: `compute_features` runs the same streaming indicators the
engine runs (`quantlab.features`), and `feature_channels` the scale-free window channels the
models and the pattern memory read (`quantlab.signals.windows`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from quantlab.core.errors import DataError
from quantlab.features import compute, get_spec
from quantlab.signals.models.dataset import information_coefficient
from quantlab.signals.windows import CHANNELS, channel_frame

__all__ = [
    "compute_features",
    "describe_spec",
    "feature_channels",
    "forward_returns",
    "information_coefficients",
    "talib_agreement",
]


def describe_spec(spec: str = "default") -> pl.DataFrame:
    """The indicators of a feature spec: one row per indicator with its parameters and outputs.

    Examples
    --------
    >>> describe_spec("default").filter(pl.col("indicator") == "Rsi")["outputs"].item()
    'rsi_14'
    """
    found = get_spec(spec)
    rows = []
    for cls, kwargs in found.indicators:
        rows.append(
            {
                "spec": found.id,
                "indicator": cls.__name__,
                "params": ", ".join(f"{k}={v}" for k, v in kwargs.items()),
                "outputs": ", ".join(cls(**kwargs).outputs),
            }
        )
    return pl.DataFrame(rows)


def compute_features(bars: pl.DataFrame, spec: str = "default") -> pl.DataFrame:
    """The spec's features for every bar, exactly as the engine computes them.

    Parameters
    ----------
    bars
        Bars (``symbol, timestamp`` and the spec's inputs), e.g. from `load_bars`.
    spec
        The feature spec's name (``"default"``: SMA 20, EMA 12/26, RSI 14, MACD 12/26/9,
        Bollinger 20/2, ATR 14 and a row count ``n``).

    Returns
    -------
    pl.DataFrame
        ``symbol, timestamp, price`` and the spec's columns, in time order; values still
        warming up are null.

    Examples
    --------
    >>> features = compute_features(load_bars("bundled:btc_perp_1m_2022-01.parquet"))
    >>> features.columns[:4]
    ['symbol', 'timestamp', 'price', 'sma_20']
    """
    return compute(bars, spec)


def feature_channels(features: pl.DataFrame) -> pl.DataFrame:
    """The scale-free per-row channels the models and the pattern memory read.

    ``log_price`` is the log of the price here (windows make it relative to their last row);
    the others are ``ema_fast_gap`` (log ema_12/price), ``ema_slow_gap``, ``sma_gap``, ``rsi``
    (rsi/100 - 0.5), ``macd_hist`` (/price), ``bb_pos`` (position in the Bollinger band, -0.5
    .. 0.5) and ``atr`` (/price); warming-up values are 0.

    Returns
    -------
    pl.DataFrame
        ``symbol, timestamp`` and one Float64 column per channel.

    Examples
    --------
    >>> feature_channels(features).columns[2:4]
    ['log_price', 'ema_fast_gap']
    """
    values = channel_frame(features)
    return features.select("symbol", "timestamp").hstack(
        [pl.Series(name, values[:, i]) for i, name in enumerate(CHANNELS)]
    )


def forward_returns(
    frame: pl.DataFrame, horizons: Sequence[int] = (1, 12), *, price: str = "price"
) -> pl.DataFrame:
    """`frame` with ``fwd_<h>``: the log return from each row to the row `h` later of its symbol.

    The last `h` rows of each symbol have no outcome (null).

    Examples
    --------
    >>> forward_returns(features, [12]).select("fwd_12").null_count().item()
    12
    """
    if price not in frame.columns or "symbol" not in frame.columns:
        raise DataError(
            f"forward_returns needs columns 'symbol' and {price!r} (has {frame.columns})"
        )
    if not horizons:
        raise DataError("forward_returns needs at least one horizon")
    for h in horizons:
        if not isinstance(h, int) or isinstance(h, bool) or h < 1:
            raise DataError(f"horizons must be positive integers, got {h!r}")
    ordered = (
        frame if frame["timestamp"].is_sorted() else frame.sort("timestamp", maintain_order=True)
    )
    p = pl.col(price)
    return ordered.with_columns(
        (p.shift(-h) / p).log().over("symbol").alias(f"fwd_{h}") for h in horizons
    )


def information_coefficients(
    frame: pl.DataFrame,
    columns: Sequence[str] | None = None,
    horizons: Sequence[int] = (1, 12),
    *,
    price: str = "price",
    by_symbol: bool = False,
) -> pl.DataFrame:
    """Spearman rank correlation (IC) of each feature column with forward log returns.

    The IC is computed per symbol (a time series; levels of different symbols are not
    comparable) over the rows where both the feature and the outcome are known, then summarised
    over symbols.

    Parameters
    ----------
    frame
        Features (`compute_features`) or channels (`feature_channels` plus ``price``) with
        ``symbol, timestamp`` and `price`.
    columns
        Feature columns (default: every numeric column except ``price``, ``n`` and outcomes).
    horizons
        Forward horizons in rows of the symbol.
    by_symbol
        One row per (feature, horizon, symbol) instead of the summary.

    Returns
    -------
    pl.DataFrame
        ``feature, horizon, ic`` (mean over symbols), ``ic_std``, ``symbols``, ``rows``,
        sorted by |ic| (largest first); with `by_symbol`: ``feature, horizon, symbol, ic, rows``.

    Examples
    --------
    >>> ic = information_coefficients(compute_features(bars), horizons=[12])
    >>> ic.columns
    ['feature', 'horizon', 'ic', 'ic_std', 'symbols', 'rows']
    """
    with_fwd = forward_returns(frame, horizons, price=price)
    if columns is None:
        skip = {price, "n", *(f"fwd_{h}" for h in horizons)}
        columns = [c for c, t in frame.schema.items() if t.is_numeric() and c not in skip]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"information_coefficients: no columns {missing} (has {frame.columns})")
    if not columns:
        raise DataError("information_coefficients: no numeric feature column to score")
    rows = []
    for (symbol,), part in with_fwd.group_by("symbol", maintain_order=True):
        for h in horizons:
            realized = part[f"fwd_{h}"].cast(pl.Float64).fill_nan(None)
            for col in columns:
                value = part[col].cast(pl.Float64).fill_nan(None)
                ok = (value.is_not_null() & realized.is_not_null()).to_numpy()
                n = int(ok.sum())
                ic = (
                    information_coefficient(value.to_numpy()[ok], realized.to_numpy()[ok])
                    if n >= 3
                    else float("nan")
                )
                rows.append({"feature": col, "horizon": h, "symbol": symbol, "ic": ic, "rows": n})
    per = pl.DataFrame(
        rows,
        schema={
            "feature": pl.String,
            "horizon": pl.Int64,
            "symbol": pl.String,
            "ic": pl.Float64,
            "rows": pl.Int64,
        },
    )
    if by_symbol:
        return per
    return (
        per.filter(pl.col("ic").is_not_nan())
        .group_by("feature", "horizon", maintain_order=True)
        .agg(
            pl.col("ic").mean().alias("ic"),
            pl.col("ic").std().alias("ic_std"),
            pl.len().alias("symbols"),
            pl.col("rows").sum().alias("rows"),
        )
        .with_columns(pl.col("symbols").cast(pl.Int64), pl.col("rows").cast(pl.Int64))
        .sort(pl.col("ic").abs(), descending=True)
    )


def talib_agreement(bars: pl.DataFrame, features: pl.DataFrame | None = None) -> pl.DataFrame:
    """Compare the default spec's indicators with TA-Lib's, symbol by symbol.

    Needs TA-Lib (``import talib``; a development dependency). Each indicator of the default
    spec is recomputed by TA-Lib from the symbol's closes (highs and lows for ATR).

    Parameters
    ----------
    bars
        Bars with ``symbol, timestamp, high, low, close``.
    features
        ``compute_features(bars)`` if already computed (default: computed here).

    Returns
    -------
    pl.DataFrame
        ``symbol, feature, talib, rows, warmup_equal`` (both leave the same leading rows
        undefined) and ``max_rel_error`` (largest |ours - TA-Lib| / |TA-Lib| where defined).

    Examples
    --------
    >>> agreement = talib_agreement(load_bars("bundled:btc_perp_1m_2022-01.parquet"))
    >>> float(agreement["max_rel_error"].max()) < 1e-9
    True
    """
    try:
        import talib
    except ImportError as exc:  # pragma: no cover - talib is installed with the dev extra
        raise DataError("talib_agreement needs TA-Lib: pip install TA-Lib") from exc
    missing = {"symbol", "timestamp", "high", "low", "close"} - set(bars.columns)
    if missing:
        raise DataError(f"talib_agreement needs bar columns {sorted(missing)} (has {bars.columns})")
    ordered = bars.sort("timestamp", maintain_order=True)
    feats = compute_features(ordered) if features is None else features
    feats = feats.with_columns(pl.selectors.float().fill_null(np.nan))
    rows = []
    for symbol in ordered["symbol"].unique(maintain_order=True).to_list():
        b = ordered.filter(pl.col("symbol") == symbol)
        f = feats.filter(pl.col("symbol") == symbol)
        if f.height != b.height:
            raise DataError(
                f"features hold {f.height} rows of {symbol!r}, the bars {b.height}: "
                "pass the features computed from these bars"
            )
        c, h, lo = (b[col].to_numpy().astype(np.float64) for col in ("close", "high", "low"))
        line, signal, hist = talib.MACD(c, 12, 26, 9)
        upper, middle, lower = talib.BBANDS(c, 20, 2.0, 2.0)
        reference = {
            "sma_20": ("SMA(20)", talib.SMA(c, 20)),
            "ema_12": ("EMA(12)", talib.EMA(c, 12)),
            "ema_26": ("EMA(26)", talib.EMA(c, 26)),
            "rsi_14": ("RSI(14)", talib.RSI(c, 14)),
            "macd": ("MACD line", line),
            "macd_signal": ("MACD signal", signal),
            "macd_hist": ("MACD hist", hist),
            "bb_upper_20": ("BBANDS upper", upper),
            "bb_mid_20": ("BBANDS middle", middle),
            "bb_lower_20": ("BBANDS lower", lower),
            "atr_14": ("ATR(14)", talib.ATR(h, lo, c, 14)),
        }
        for col, (name, want) in reference.items():
            if col not in f.columns:
                raise DataError(f"features lack {col!r}: compute them with the default spec")
            got = f[col].to_numpy().astype(np.float64)
            ok = ~np.isnan(want)
            scale = np.maximum(np.abs(want[ok]), 1e-12)
            worst = float(np.max(np.abs(got[ok] - want[ok]) / scale)) if ok.any() else 0.0
            rows.append(
                {
                    "symbol": symbol,
                    "feature": col,
                    "talib": name,
                    "rows": int(ok.sum()),
                    "warmup_equal": bool(np.array_equal(np.isnan(got), np.isnan(want))),
                    "max_rel_error": worst,
                }
            )
    return pl.DataFrame(rows)
