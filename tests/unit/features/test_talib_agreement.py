"""Every indicator against TA-Lib on the real recorded series, to 1e-9 relative after warm-up.

Each series is fed through `IndicatorSet` (all symbols of a file interleaved in time order,
in 1,000-row batches, as the engine feeds them) and through the `pl.Expr` API, and compared
per symbol with TA-Lib's C functions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import talib

from quantlab.features import (
    Atr,
    Bollinger,
    Ema,
    IndicatorSet,
    Macd,
    Rsi,
    Sma,
    atr,
    bollinger,
    ema,
    macd,
    rsi,
    sma,
)

FILES = ["binance_btc_pairs_5m_2018-01.parquet", "btc_perp_1m_2022-01.parquet"]


def series(data_dir: Path, name: str) -> pl.DataFrame:
    return pl.read_parquet(data_dir / name).sort("timestamp", "symbol")


def agree(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{what}: warm-up differs"
    ok = ~np.isnan(want)
    scale = np.maximum(np.abs(want[ok]), 1e-12)
    worst = float(np.max(np.abs(got[ok] - want[ok]) / scale)) if ok.any() else 0.0
    assert worst <= 1e-9, f"{what}: relative error {worst:.3g}"


def set_for() -> IndicatorSet:
    return IndicatorSet(
        [Sma(20), Ema(12), Ema(26), Rsi(14), Macd(12, 26, 9), Bollinger(20, 2.0), Atr(14)]
    )


@pytest.mark.parametrize("name", FILES)
def test_streaming_set_matches_talib(data_dir: Path, name: str) -> None:
    bars = series(data_dir, name)
    ind = set_for()
    out = pl.concat([ind.update(chunk) for chunk in bars.iter_slices(1000)])
    out = out.with_columns(pl.selectors.float().fill_null(np.nan))
    for symbol in bars["symbol"].unique().sort().to_list():
        b = bars.filter(pl.col("symbol") == symbol)
        o = out.filter(pl.col("symbol") == symbol)
        c, h, lo = (b[col].to_numpy() for col in ("close", "high", "low"))
        cols = {col: o[col].to_numpy() for col in o.columns if col not in ("symbol", "timestamp")}
        agree(cols["sma_20"], talib.SMA(c, 20), f"{symbol} SMA")
        agree(cols["ema_12"], talib.EMA(c, 12), f"{symbol} EMA12")
        agree(cols["ema_26"], talib.EMA(c, 26), f"{symbol} EMA26")
        agree(cols["rsi_14"], talib.RSI(c, 14), f"{symbol} RSI")
        line, signal, hist = talib.MACD(c, 12, 26, 9)
        agree(cols["macd"], line, f"{symbol} MACD")
        agree(cols["macd_signal"], signal, f"{symbol} MACD signal")
        agree(cols["macd_hist"], hist, f"{symbol} MACD hist")
        upper, middle, lower = talib.BBANDS(c, 20, 2.0, 2.0)
        agree(cols["bb_mid_20"], middle, f"{symbol} BB mid")
        agree(cols["bb_upper_20"], upper, f"{symbol} BB upper")
        agree(cols["bb_lower_20"], lower, f"{symbol} BB lower")
        agree(cols["atr_14"], talib.ATR(h, lo, c, 14), f"{symbol} ATR")


def test_expression_api_matches_talib_per_symbol(data_dir: Path) -> None:
    bars = series(data_dir, FILES[0])
    out = bars.with_columns(
        sma("close", 20).over("symbol").alias("sma"),
        ema("close", 12).over("symbol").alias("ema"),
        rsi("close", 14).over("symbol").alias("rsi"),
        *(e.over("symbol") for e in macd("close")),
        *(e.over("symbol") for e in bollinger("close", 20, 2.0)),
        atr("high", "low", "close", 14).over("symbol").alias("atr"),
    ).with_columns(pl.selectors.float().fill_null(np.nan))
    for symbol in ["ADA/BTC", "ETH/BTC", "ZEC/BTC"]:
        o = out.filter(pl.col("symbol") == symbol)
        c = o["close"].to_numpy()
        agree(o["sma"].to_numpy(), talib.SMA(c, 20), f"{symbol} sma()")
        agree(o["ema"].to_numpy(), talib.EMA(c, 12), f"{symbol} ema()")
        agree(o["rsi"].to_numpy(), talib.RSI(c, 14), f"{symbol} rsi()")
        agree(o["macd_signal"].to_numpy(), talib.MACD(c)[1], f"{symbol} macd()")
        agree(o["bb_upper_20"].to_numpy(), talib.BBANDS(c, 20, 2.0, 2.0)[0], f"{symbol} bb()")
        h, lo = o["high"].to_numpy(), o["low"].to_numpy()
        agree(o["atr"].to_numpy(), talib.ATR(h, lo, c, 14), f"{symbol} atr()")
