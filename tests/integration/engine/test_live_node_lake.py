"""A live Node on a vendor feed: a disconnect mid-stream, messages resent after the reconnect,
and the lake ends with every event exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from quantlab.adapters.coinbase import CoinbaseDataConfig, CoinbaseDataSource
from quantlab.config import load_settings
from quantlab.engine import Node
from quantlab.storage.lake import Lake
from quantlab.testing.fakes.coinbase import FakeCoinbase

pytestmark = pytest.mark.integration


async def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_disconnect_and_resend_leave_no_duplicate_rows_in_the_lake(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        storage={"lake_root": str(tmp_path / "lake"), "lake_cold_root": str(tmp_path / "cold")},
        live={"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "stale_after_s": 5.0},
    )
    now = time.time_ns()
    async with FakeCoinbase(products=("BTC-USD",), resend_last=3) as fake:
        source = CoinbaseDataSource(
            CoinbaseDataConfig(
                symbols=("BTC/USD",),
                channels=("market_trades", "heartbeats"),
                ws_url=fake.ws_url,
                rest_url=fake.rest_url,
            )
        )
        node = Node(settings, mode="live", sources=[source], run_dir=tmp_path / "run")
        for i in range(10):
            fake.trade("BTC-USD", f"a{i}", 100.0 + i, 1.0, ts_ns=now + i * 1_000_000)
        task = asyncio.create_task(node.run_async())
        await until(lambda: node.ingest.rows_in >= 10)
        fake.drop_connections()
        for i in range(10):
            fake.trade("BTC-USD", f"b{i}", 200.0 + i, 1.0, ts_ns=now + (20 + i) * 1_000_000)
        await until(lambda: node.ingest.rows_in >= 23)  # 20 trades + 3 resent
        node.stop()
        result = await task
    lake = Lake(tmp_path / "lake")
    rows = lake.scan("trade").collect()
    ids = rows["trade_id"].to_list()
    assert sorted(ids) == sorted([f"a{i}" for i in range(10)] + [f"b{i}" for i in range(10)])
    assert rows.height == rows.unique(["symbol", "trade_id"]).height
    assert result.summary.rejected.get("duplicate") == 3
    stats = result.summary.sources[source.name]
    assert stats["reconnects"] == 1
    assert fake.connections == 2
    assert set(pl.Series(ids).str.slice(0, 1).unique()) == {"a", "b"}
