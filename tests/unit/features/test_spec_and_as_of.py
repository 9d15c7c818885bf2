"""Feature specs (named, versioned, shared by research and production) and point-in-time joins."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import quantlab
from quantlab.core.errors import DataError
from quantlab.features import DEFAULT, Ema, FeatureSpec, as_of, compute, get_spec, register_spec

BARS = quantlab.load_bars()


def test_default_spec_columns() -> None:
    out = compute(BARS)
    assert out.columns[:3] == ["symbol", "timestamp", "price"]
    assert {"sma_20", "ema_12", "ema_26", "rsi_14", "macd", "macd_signal", "macd_hist"} <= set(
        out.columns
    )
    assert out.columns == DEFAULT.columns
    assert out.height == BARS.height
    assert DEFAULT.id == "default@1"


def test_compute_equals_the_streaming_build_in_pieces() -> None:
    streaming = DEFAULT.build()
    parts = pl.concat([streaming.update(chunk) for chunk in BARS.iter_slices(1_234)])
    assert_frame_equal(parts, compute(BARS), check_exact=True)


def test_compute_sorts_by_time_and_keeps_each_symbols_order() -> None:
    shuffled = BARS.sample(fraction=1.0, shuffle=True, seed=3)
    assert_frame_equal(
        compute(shuffled).sort("symbol", "timestamp"),
        compute(BARS).sort("symbol", "timestamp"),
        check_exact=True,
    )


def test_specs_are_registered_by_name_and_versioned() -> None:
    mine = FeatureSpec("fast-ema", "1", ((Ema, {"n": 3}),))
    assert register_spec(mine) is mine
    assert get_spec("fast-ema") is mine
    assert compute(BARS.head(50), "fast-ema").columns == ["symbol", "timestamp", "price", "ema_3"]
    with pytest.raises(DataError, match="new version"):
        register_spec(FeatureSpec("fast-ema", "1", ((Ema, {"n": 4}),)))
    register_spec(FeatureSpec("fast-ema", "2", ((Ema, {"n": 4}),)))
    with pytest.raises(DataError, match="unknown feature spec 'nope'"):
        get_spec("nope")


def test_as_of_never_looks_ahead() -> None:
    features = compute(BARS.filter(pl.col("symbol") == "ETH/BTC"))
    t = features["timestamp"]
    labels = pl.DataFrame(
        {
            "symbol": ["ETH/BTC"] * 3,
            "timestamp": [t[100], t[100] + dt.timedelta(seconds=299), t[101]],
        }
    )
    joined = as_of(labels, features)
    # exactly at a bar: that bar; just before the next bar: still that bar; at the next: next
    assert joined["price"].to_list() == [features["price"][100]] * 2 + [features["price"][101]]
    stale = as_of(
        labels.with_columns(pl.col("timestamp") + dt.timedelta(hours=3)),
        features.head(102),
        tolerance=dt.timedelta(minutes=30),
    )
    assert stale["price"].null_count() == 3  # nothing recent enough


def test_as_of_keeps_symbols_apart() -> None:
    features = compute(BARS)
    t = features.filter(pl.col("symbol") == "ADA/BTC")["timestamp"][500]
    labels = pl.DataFrame({"symbol": ["ADA/BTC", "ZEC/BTC"], "timestamp": [t, t]})
    joined = as_of(labels, features)
    for symbol, price in joined.select("symbol", "price").rows():
        own = features.filter((pl.col("symbol") == symbol) & (pl.col("timestamp") <= t))
        assert price == own["price"][-1]
