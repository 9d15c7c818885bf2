"""Indicator expressions for research: each returns a `pl.Expr` (TA-Lib's conventions, see
`features.kernels`). For many symbols, window them: ``ema("close", 12).over("symbol")``.

The recursive ones run the same compiled kernels as the streaming engine, so a notebook's
numbers are the production numbers.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from quantlab.features.library import Atr, Bollinger, Ema, Indicator, Macd, Rsi, _window


def _col(expr: pl.Expr | str) -> pl.Expr:
    return pl.col(expr) if isinstance(expr, str) else expr


def _kernel(expr: pl.Expr | str, make: type[Indicator], *args: float, output: int = 0) -> pl.Expr:
    def run(s: pl.Series) -> pl.Series:
        ind = make(*args)
        values = s.cast(pl.Float64).to_numpy()
        result = ind.update(np.zeros(len(values), np.int64), {"price": values})
        return pl.Series(s.name, list(result.values())[output]).fill_nan(None)

    return _col(expr).map_batches(run, return_dtype=pl.Float64)


def sma(expr: pl.Expr | str, n: int) -> pl.Expr:
    """Simple moving average of the last `n` values (null during warm-up)."""
    return _col(expr).rolling_mean(_window(n))


def ema(expr: pl.Expr | str, n: int) -> pl.Expr:
    """EMA with k = 2/(n+1), seeded with the SMA of the first `n` values (TA-Lib)."""
    return _kernel(expr, Ema, _window(n))


def ema_alpha(n: int) -> float:
    """The smoothing factor 2 / (n + 1) of an `n`-period EMA."""
    return 2.0 / (_window(n) + 1.0)


def rsi(expr: pl.Expr | str, n: int = 14) -> pl.Expr:
    """Wilder's RSI (TA-Lib): first value after `n` differences."""
    return _kernel(expr, Rsi, _window(n))


def macd(
    expr: pl.Expr | str, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """MACD line, signal and histogram (TA-Lib's seeding; all start at slow + signal - 2)."""
    return (
        _kernel(expr, Macd, fast, slow, signal, output=0).alias("macd"),
        _kernel(expr, Macd, fast, slow, signal, output=1).alias("macd_signal"),
        _kernel(expr, Macd, fast, slow, signal, output=2).alias("macd_hist"),
    )


def bollinger(expr: pl.Expr | str, n: int = 20, k: float = 2.0) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """Middle, upper and lower band: SMA ± k population standard deviations (TA-Lib)."""
    return (
        _kernel(expr, Bollinger, _window(n), k, output=0).alias(f"bb_mid_{n}"),
        _kernel(expr, Bollinger, _window(n), k, output=1).alias(f"bb_upper_{n}"),
        _kernel(expr, Bollinger, _window(n), k, output=2).alias(f"bb_lower_{n}"),
    )


def atr(
    high: pl.Expr | str = "high", low: pl.Expr | str = "low", close: pl.Expr | str = "close",
    n: int = 14,
) -> pl.Expr:  # fmt: skip
    """Average true range (TA-Lib): Wilder's smoothing of the true range, first value after n."""
    n = _window(n)

    def run(s: pl.Series) -> pl.Series:
        parts = s.struct.unnest()
        h, lo, c = (parts[name].cast(pl.Float64).to_numpy() for name in ("h", "l", "c"))
        out = Atr(n).update(np.zeros(len(c), np.int64), {"high": h, "low": lo, "price": c})
        return pl.Series("atr", out[f"atr_{n}"]).fill_nan(None)

    return pl.struct(h=_col(high), l=_col(low), c=_col(close)).map_batches(
        run, return_dtype=pl.Float64
    )


def returns(expr: pl.Expr | str) -> pl.Expr:
    """Simple returns x_t / x_{t-1} - 1."""
    return _col(expr).pct_change()


def log_returns(expr: pl.Expr | str) -> pl.Expr:
    """Log returns ln(x_t / x_{t-1})."""
    e = _col(expr)
    return (e / e.shift(1)).log()


def volatility(expr: pl.Expr | str, n: int) -> pl.Expr:
    """Rolling standard deviation (sample) of the log returns over `n` values."""
    return log_returns(expr).rolling_std(_window(n))


def zscore(expr: pl.Expr | str, n: int) -> pl.Expr:
    """(x - rolling mean) / rolling sample standard deviation over `n` values."""
    e = _col(expr)
    return (e - e.rolling_mean(_window(n))) / e.rolling_std(n)


def vwap(price: pl.Expr | str, volume: pl.Expr | str, n: int | None = None) -> pl.Expr:
    """Volume-weighted average price: cumulative, or over the last `n` rows."""
    p, v = _col(price), _col(volume)
    if n is None:
        return (p * v).cum_sum() / v.cum_sum()
    return (p * v).rolling_sum(_window(n)) / v.rolling_sum(n)


def mid(bid: pl.Expr | str = "bid", ask: pl.Expr | str = "ask") -> pl.Expr:
    return (_col(bid) + _col(ask)) / 2


def spread(bid: pl.Expr | str = "bid", ask: pl.Expr | str = "ask") -> pl.Expr:
    return _col(ask) - _col(bid)


def microprice(
    bid: pl.Expr | str = "bid",
    ask: pl.Expr | str = "ask",
    bid_size: pl.Expr | str = "bid_size",
    ask_size: pl.Expr | str = "ask_size",
) -> pl.Expr:
    """Size-weighted mid: (bid·ask_size + ask·bid_size) / (bid_size + ask_size)."""
    b, a, bs, az = _col(bid), _col(ask), _col(bid_size), _col(ask_size)
    return (b * az + a * bs) / (bs + az)


def order_flow_imbalance(
    bid: pl.Expr | str = "bid",
    ask: pl.Expr | str = "ask",
    bid_size: pl.Expr | str = "bid_size",
    ask_size: pl.Expr | str = "ask_size",
) -> pl.Expr:
    """Cont, Kukanov and Stoikov's order-flow imbalance per quote update (null for the first)."""
    b, a, bs, az = _col(bid), _col(ask), _col(bid_size), _col(ask_size)
    pb, pa, pbs, paz = b.shift(1), a.shift(1), bs.shift(1), az.shift(1)
    bid_flow = pl.when(b > pb).then(bs).when(b == pb).then(bs - pbs).otherwise(-pbs)
    ask_flow = pl.when(a < pa).then(az).when(a == pa).then(az - paz).otherwise(-paz)
    return bid_flow - ask_flow
