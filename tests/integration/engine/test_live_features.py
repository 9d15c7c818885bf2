"""A live run writes its feature history to the lake, readable from a notebook."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from quantlab.config import load_settings
from quantlab.engine import Node
from quantlab.storage.lake import Lake


async def test_feature_history_lands_in_the_lake(tmp_path: Path) -> None:
    settings = load_settings(
        storage={"lake_root": str(tmp_path / "lake"), "lake_cold_root": str(tmp_path / "cold")},
        live={"sources": [{"type": "synthetic", "symbols": 3, "rate": 3000}]},
    )
    node = Node(settings, mode="live", run_dir=tmp_path / "run")
    result = await node.run_async(duration_s=3.0)
    history = Lake(tmp_path / "lake").scan("features").collect()
    assert history.height == result.summary.feature_rows > 0
    assert {"symbol", "timestamp", "ema_12", "rsi_14", "macd"} <= set(history.columns)
    assert history["symbol"].n_unique() == 3
    latest = node.feature_store.get("SYN0/USD")
    assert latest is not None
    last_row = history.filter(pl.col("symbol") == "SYN0/USD").sort("timestamp").tail(1)
    assert latest["price"] == last_row["price"].item()
