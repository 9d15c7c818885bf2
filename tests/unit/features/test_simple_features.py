"""Returns, volatility, z-score, VWAP and quote features: the streaming indicators equal their
Polars expressions on real data, and the expressions equal plain definitions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_series_equal

import quantlab
from quantlab.features import (
    IndicatorSet,
    OrderFlowImbalance,
    Returns,
    Volatility,
    Vwap,
    ZScore,
    log_returns,
    microprice,
    mid,
    order_flow_imbalance,
    returns,
    spread,
    volatility,
    vwap,
    zscore,
)

BARS = quantlab.load_bars()


def close_enough(a: pl.Series, b: pl.Series) -> None:
    assert_series_equal(
        a.fill_nan(None).alias("x"), b.fill_nan(None).alias("x"), check_exact=False, rel_tol=1e-9,
        abs_tol=1e-12, check_dtypes=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("indicator", "expression"),
    [
        (Returns(), returns("close")),
        (Returns(log=True), log_returns("close")),
        (Volatility(20), volatility("close", 20)),
        (ZScore(20), zscore("close", 20)),
        (Vwap(12), vwap("close", "volume", 12)),
    ],
)
def test_streaming_equals_the_expression(indicator, expression) -> None:  # type: ignore[no-untyped-def]
    ind = IndicatorSet([indicator])
    got = pl.concat([ind.update(chunk) for chunk in BARS.iter_slices(999)])
    want = BARS.select(expression.over("symbol").alias("want"))["want"]
    close_enough(got[indicator.outputs[0]], want)


def test_expressions_match_plain_definitions() -> None:
    eth = BARS.filter(pl.col("symbol") == "ETH/BTC")
    c = eth["close"].to_numpy()
    out = eth.select(
        returns("close").alias("r"),
        log_returns("close").alias("lr"),
        volatility("close", 10).alias("vol"),
        zscore("close", 10).alias("z"),
        vwap("close", "volume").alias("cvwap"),
    )
    np.testing.assert_allclose(out["r"].to_numpy()[1:], c[1:] / c[:-1] - 1, rtol=1e-9, atol=1e-15)
    lr = np.log(c[1:] / c[:-1])
    np.testing.assert_allclose(out["lr"].to_numpy()[1:], lr, rtol=1e-12)
    i = 50
    np.testing.assert_allclose(out["vol"][i], np.std(lr[i - 10 : i], ddof=1), rtol=1e-9)
    window = c[i - 9 : i + 1]
    np.testing.assert_allclose(out["z"][i], (c[i] - window.mean()) / window.std(ddof=1), rtol=1e-9)
    v = eth["volume"].to_numpy()
    np.testing.assert_allclose(out["cvwap"][i], (c[: i + 1] * v[: i + 1]).sum() / v[: i + 1].sum())


def test_quote_features_on_real_quotes(data_dir: Path) -> None:
    quotes = pl.read_parquet(data_dir / "binance_btcusdt_quotes_2021-01-08.parquet")
    out = quotes.with_columns(
        mid().alias("mid"),
        spread().alias("spread"),
        microprice().alias("micro"),
        order_flow_imbalance().alias("ofi"),
    )
    assert (out["spread"] >= 0).all()
    assert ((out["micro"] >= out["bid"]) & (out["micro"] <= out["ask"])).all()
    np.testing.assert_allclose(out["mid"], (quotes["bid"] + quotes["ask"]) / 2)
    # OFI by its definition, row by row
    b, a = quotes["bid"].to_list(), quotes["ask"].to_list()
    bs, az = quotes["bid_size"].to_list(), quotes["ask_size"].to_list()
    expected = [None]
    for t in range(1, len(b)):
        bf = bs[t] if b[t] > b[t - 1] else bs[t] - bs[t - 1] if b[t] == b[t - 1] else -bs[t - 1]
        af = az[t] if a[t] < a[t - 1] else az[t] - az[t - 1] if a[t] == a[t - 1] else -az[t - 1]
        expected.append(bf - af)
    close_enough(out["ofi"], pl.Series(expected, dtype=pl.Float64))
    # and the streaming indicator gives the same, in any batches
    ind = IndicatorSet([OrderFlowImbalance()], price="bid")
    streamed = pl.concat([ind.update(chunk) for chunk in quotes.iter_slices(37)])
    close_enough(streamed["ofi"], pl.Series(expected, dtype=pl.Float64))
