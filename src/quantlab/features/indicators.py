"""Indicator expressions (Polars). Pure functions of columns; usable in a notebook cell.

The full library (RSI, MACD, Bollinger, ATR, ... with TA-Lib's conventions) lives here too;
these are the moving averages the walking skeleton needs.
"""

from __future__ import annotations

import polars as pl

from quantlab.core.errors import DataError


def _window(n: int) -> int:
    if not isinstance(n, int) or n < 1:
        raise DataError(f"window must be a positive integer, got {n!r}")
    return n


def sma(expr: pl.Expr | str, n: int) -> pl.Expr:
    """Simple moving average over `n` rows; null until `n` rows are seen."""
    e = pl.col(expr) if isinstance(expr, str) else expr
    return e.rolling_mean(_window(n))


def ema_alpha(n: int) -> float:
    """The smoothing factor 2 / (n + 1) of an `n`-period EMA."""
    return 2.0 / (_window(n) + 1.0)


def ema(expr: pl.Expr | str, n: int) -> pl.Expr:
    """Exponential moving average ``y_t = y_{t-1} + α (x_t - y_{t-1})``, seeded with the first x.

    Nulls are skipped (the recursion continues over them), which is what lets a carried value
    seed the next batch exactly (`CrossoverFeatures`).
    """
    e = pl.col(expr) if isinstance(expr, str) else expr
    return e.ewm_mean(alpha=ema_alpha(n), adjust=False, ignore_nulls=True)
