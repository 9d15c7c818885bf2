"""The feature store: O(1) latest vectors, TTL on the engine's clock, bounded memory, metrics."""

from __future__ import annotations

import tracemalloc

import polars as pl
import pytest

import quantlab
from quantlab.core.clock import SimulatedClock
from quantlab.core.errors import ConfigError
from quantlab.features import FeatureStore, compute

BARS = quantlab.load_bars()
FEATURES = compute(BARS)
HOUR = 3_600_000_000_000


def test_latest_vector_per_symbol() -> None:
    store = FeatureStore(SimulatedClock(0))
    assert store.put(FEATURES) == 10
    last = FEATURES.filter(pl.col("symbol") == "ETH/BTC").tail(1)
    got = store.get("ETH/BTC")
    assert got is not None
    assert got["rsi_14"] == last["rsi_14"].item()
    assert got.ts_ns == last["timestamp"].cast(pl.Int64).item()
    assert store.get("NOPE/BTC") is None
    assert store.metrics() == {
        "symbols": 10, "hits": 1, "misses": 1, "expired": 0, "evicted": 0, "writes": 10,
    }  # fmt: skip


def test_entries_expire_after_the_ttl_on_the_simulated_clock() -> None:
    clock = SimulatedClock(0)
    store = FeatureStore(clock, ttl_s=3600)
    store.put(FEATURES.head(100))
    clock.advance_by(HOUR)  # exactly the TTL: still fresh
    assert store.get("ADA/BTC") is not None
    clock.advance_by(1)
    assert store.get("ADA/BTC") is None
    assert store.metrics()["expired"] == 1
    store.put(FEATURES.slice(100, 50))  # a fresh write resets the age
    assert store.get("ADA/BTC") is not None


def test_sweep_drops_every_expired_entry() -> None:
    clock = SimulatedClock(0)
    store = FeatureStore(clock, ttl_s=1)
    store.put(FEATURES.head(20))
    clock.advance_by(2_000_000_000)
    assert store.sweep() == 10
    assert len(store) == 0


def test_memory_is_bounded_by_the_size_cap() -> None:
    store = FeatureStore(SimulatedClock(0), max_symbols=50)
    many = pl.concat(
        [FEATURES.head(1).with_columns(pl.lit(f"S{i}").alias("symbol")) for i in range(5_000)]
    )
    tracemalloc.start()
    for chunk in many.iter_slices(500):
        store.put(chunk)
    base, _ = tracemalloc.get_traced_memory()
    for chunk in many.iter_slices(500):
        store.put(chunk.with_columns(pl.col("symbol") + "x"))
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(store) == 50
    assert store.metrics()["evicted"] == 10_000 - 50
    assert after - base < 256 * 1024  # no growth with 5,000 more symbols written
    assert store.get("S4999x") is not None  # the most recent survive
    assert store.get("S0") is None


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="ttl_s"):
        FeatureStore(SimulatedClock(0), ttl_s=0)
    with pytest.raises(ConfigError, match="max_symbols"):
        FeatureStore(SimulatedClock(0), max_symbols=0)


def test_the_engine_fills_the_store_and_records_the_spec(tmp_path: object) -> None:
    from quantlab.config import load_settings
    from quantlab.engine import Node

    node = Node(load_settings(data={"symbols": ["ETH/BTC", "LTC/BTC"]}), run_dir=tmp_path)
    result = node.run()
    assert result.summary.feature_spec == "default@1"
    vector = node.feature_store.get("ETH/BTC")
    assert vector is not None
    assert {"sma_20", "ema_12", "ema_26", "rsi_14", "macd", "atr_14"} <= set(vector.values)
