"""`quantlab.research.features`: specs, features, TA-Lib agreement and information coefficients."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import talib

from quantlab.core.errors import DataError
from quantlab.research import (
    compute_features,
    describe_spec,
    feature_channels,
    forward_returns,
    information_coefficients,
    load_bars,
    talib_agreement,
)

PAIRS = "bundled:binance_btc_pairs_5m_2018-01.parquet"
PERP = "bundled:btc_perp_1m_2022-01.parquet"


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return load_bars(PAIRS)


@pytest.fixture(scope="module")
def features(bars: pl.DataFrame) -> pl.DataFrame:
    return compute_features(bars)


def test_describe_spec_lists_every_indicator() -> None:
    spec = describe_spec("default")
    assert spec["indicator"].to_list() == [
        "Sma", "Ema", "Ema", "Rsi", "Macd", "Bollinger", "Atr", "Count"
    ]  # fmt: skip
    assert spec.filter(pl.col("indicator") == "Macd")["outputs"].item() == (
        "macd, macd_signal, macd_hist"
    )
    assert (spec["spec"] == "default@1").all()
    with pytest.raises(DataError, match=r"unknown feature spec 'nope'"):
        describe_spec("nope")


def test_compute_features_is_talib_rsi(bars: pl.DataFrame, features: pl.DataFrame) -> None:
    eth = features.filter(pl.col("symbol") == "ETH/BTC")
    close = bars.filter(pl.col("symbol") == "ETH/BTC")["close"].to_numpy()
    want = talib.RSI(close, 14)
    got = eth["rsi_14"].fill_null(np.nan).to_numpy()
    np.testing.assert_allclose(got[14:], want[14:], rtol=1e-9)
    assert np.isnan(got[:14]).all()


def test_talib_agreement_on_real_bars() -> None:
    perp = load_bars(PERP)
    agreement = talib_agreement(perp)
    assert agreement.height == 11
    assert agreement["warmup_equal"].all()
    assert agreement["max_rel_error"].max() < 1e-9
    assert agreement.filter(pl.col("feature") == "macd")["rows"].item() == perp.height - 33


def test_talib_agreement_catches_a_wrong_indicator(
    bars: pl.DataFrame, features: pl.DataFrame
) -> None:
    wrong = features.with_columns(pl.col("sma_20") * 1.001)
    agreement = talib_agreement(bars, wrong)
    sma = agreement.filter(pl.col("feature") == "sma_20")
    assert sma.height == 10
    assert sma["max_rel_error"].min() == pytest.approx(1e-3, rel=1e-6)
    others = agreement.filter(pl.col("feature") != "sma_20")
    assert others["max_rel_error"].max() < 1e-9
    with pytest.raises(DataError, match=r"features hold"):
        talib_agreement(bars, features.head(100))


def test_forward_returns_per_symbol(features: pl.DataFrame) -> None:
    out = forward_returns(features, [1, 12])
    eth = out.filter(pl.col("symbol") == "ETH/BTC")
    price = eth["price"].to_numpy()
    np.testing.assert_allclose(
        eth["fwd_12"].to_numpy()[:-12], np.log(price[12:] / price[:-12]), rtol=1e-12
    )
    assert eth["fwd_12"].tail(12).null_count() == 12
    assert out["fwd_1"].null_count() == features["symbol"].n_unique()
    with pytest.raises(DataError, match=r"horizons must be positive integers, got 0"):
        forward_returns(features, [0])


def test_information_coefficient_of_an_oracle_and_of_noise(features: pl.DataFrame) -> None:
    rng = np.random.default_rng(1)
    frame = forward_returns(features, [12]).rename({"fwd_12": "oracle"})
    frame = frame.with_columns(pl.Series("noise", rng.standard_normal(frame.height)))
    ic = information_coefficients(frame, ["oracle", "noise"], horizons=[12])
    assert ic.filter(pl.col("feature") == "oracle")["ic"].item() == pytest.approx(1.0)
    assert abs(ic.filter(pl.col("feature") == "noise")["ic"].item()) < 0.03
    assert (ic["symbols"] == 10).all()
    per = information_coefficients(frame, ["noise"], horizons=[12], by_symbol=True)
    assert per.height == 10
    assert per.columns == ["feature", "horizon", "symbol", "ic", "rows"]


def test_channels_mean_revert_on_5m_pairs(features: pl.DataFrame) -> None:
    channels = feature_channels(features).with_columns(features["price"])
    assert channels.columns[2:10] == [
        "log_price", "ema_fast_gap", "ema_slow_gap", "sma_gap", "rsi", "macd_hist", "bb_pos",
        "atr",
    ]  # fmt: skip
    np.testing.assert_allclose(
        channels["rsi"].to_numpy(), features["rsi_14"].fill_null(50.0).to_numpy() / 100 - 0.5
    )
    ic = information_coefficients(channels, ["rsi", "bb_pos"], horizons=[12], by_symbol=True)
    assert (ic["ic"] < 0).all()  # every symbol: overbought now, lower later


def test_information_coefficients_names_missing_columns(features: pl.DataFrame) -> None:
    with pytest.raises(DataError, match=r"no columns \['nope'\]"):
        information_coefficients(features, ["nope"])
