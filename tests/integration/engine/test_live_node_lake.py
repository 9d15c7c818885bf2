"""A live Node on each vendor feed: a disconnect mid-stream, messages resent after the
reconnect, and the lake ends with every event exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from quantlab.adapters.alpaca import AlpacaDataConfig, AlpacaDataSource
from quantlab.adapters.ccxt import CcxtDataConfig, CcxtDataSource
from quantlab.adapters.coinbase import CoinbaseDataConfig, CoinbaseDataSource
from quantlab.adapters.polygon import PolygonDataConfig, PolygonDataSource
from quantlab.config import load_settings
from quantlab.engine import Node, RunResult
from quantlab.ingest.ports import MarketDataSource
from quantlab.storage.lake import Lake
from quantlab.testing.fakes.alpaca import STOCK_PATH, FakeAlpaca
from quantlab.testing.fakes.binance import FakeBinance
from quantlab.testing.fakes.coinbase import FakeCoinbase
from quantlab.testing.fakes.polygon import FakePolygon, trade_event

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning"),
]
RESENT = 3


async def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def round_trip(
    tmp_path: Path,
    source: MarketDataSource,
    send: Callable[[str, int], None],
    drop: Callable[[], None],
) -> tuple[RunResult, pl.DataFrame]:
    """10 trades, a cut connection, 10 more trades; returns the result and the lake's trades."""
    settings = load_settings(
        None,
        storage={"lake_root": str(tmp_path / "lake"), "lake_cold_root": str(tmp_path / "cold")},
        live={"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "stale_after_s": 5.0},
    )
    node = Node(settings, mode="live", sources=[source], run_dir=tmp_path / "run")
    for i in range(10):
        send("a", i)
    task = asyncio.create_task(node.run_async())
    await until(lambda: node.ingest.rows_in >= 10)
    drop()
    for i in range(10):
        send("b", i)
    await until(lambda: node.ingest.rows_in >= 20 + RESENT)
    node.stop()
    result = await task
    return result, Lake(tmp_path / "lake").scan("trade").collect()


def check(
    result: RunResult, rows: pl.DataFrame, source: MarketDataSource, numeric: bool = False
) -> None:
    ids = rows["trade_id"].to_list()
    sent = [trade_id("a", i, numeric) for i in range(10)] + [
        trade_id("b", i, numeric) for i in range(10)
    ]
    assert sorted(ids) == sorted(sent)
    assert rows.height == rows.unique(["symbol", "trade_id"]).height  # no duplicate rows
    assert result.summary.rejected.get("duplicate") == RESENT
    assert result.summary.sources[source.name]["reconnects"] == 1


def trade_id(tag: str, i: int, numeric: bool = False) -> str:
    return str((1000 if tag == "a" else 2000) + i) if numeric else f"{tag}{i}"


async def test_coinbase(tmp_path: Path) -> None:
    now = time.time_ns()
    async with FakeCoinbase(products=("BTC-USD",), resend_last=RESENT) as fake:
        source = CoinbaseDataSource(
            CoinbaseDataConfig(
                symbols=("BTC/USD",),
                channels=("market_trades", "heartbeats"),
                ws_url=fake.ws_url,
                rest_url=fake.rest_url,
            )
        )
        step = iter(range(100))

        def send(tag: str, i: int) -> None:
            fake.trade("BTC-USD", f"{tag}{i}", 100.0 + i, 1.0, ts_ns=now + next(step) * 1_000_000)

        result, rows = await round_trip(tmp_path, source, send, fake.drop_connections)
        assert fake.connections == 2
    check(result, rows, source)


@pytest.mark.parametrize("transport", ["websocket", "alpaca-py"])
async def test_alpaca(tmp_path: Path, transport: str) -> None:
    now = time.time_ns()
    async with FakeAlpaca() as fake:
        fake.resend_last = RESENT
        source = AlpacaDataSource(
            AlpacaDataConfig(
                asset_class="equity",
                symbols=("AAPL",),
                channels=("trades",),
                stream_url=fake.stream_url(STOCK_PATH),
                transport=transport,  # type: ignore[arg-type]
            ),
            "test-key",
            "test-secret",
        )
        step = iter(range(100))

        def send(tag: str, i: int) -> None:
            k = next(step)
            fake.push(
                {"T": "t", "S": "AAPL", "i": int(trade_id(tag, i, numeric=True)), "x": "V",
                 "p": 100.0 + i, "s": 1, "t": now + k * 1_000_000}
            )  # fmt: skip

        result, rows = await round_trip(tmp_path, source, send, fake.drop_connections)
    check(result, rows, source, numeric=True)


async def test_polygon(tmp_path: Path) -> None:
    now_ms = time.time_ns() // 1_000_000
    async with FakePolygon(api_key="pk-test", resend_last=RESENT) as fake:
        source = PolygonDataSource(
            PolygonDataConfig(symbols=("AAPL",), channels=("T",), ws_url=fake.ws_url),
            api_key="pk-test",
        )
        step = iter(range(100))

        def send(tag: str, i: int) -> None:
            fake.send(trade_event("AAPL", 100.0 + i, 1.0, now_ms + next(step), f"{tag}{i}"))

        result, rows = await round_trip(tmp_path, source, send, fake.drop_connections)
    check(result, rows, source)


async def test_ccxt_binance(tmp_path: Path) -> None:
    now_ms = time.time_ns() // 1_000_000
    async with FakeBinance(ping_interval_s=None, resend_last=RESENT) as fake:
        source = CcxtDataSource(
            CcxtDataConfig(
                exchange="binance",
                symbols=("BTC/USDT",),
                channels=("trades",),
                rest_url=fake.rest_url,
                ws_url=fake.ws_url,
                options={"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False},
            )
        )
        step = iter(range(100))

        def send(tag: str, i: int) -> None:
            k = next(step)
            fake.trade(
                "BTC/USDT", 100.0 + i, 1.0, trade_id=int(trade_id(tag, i, True)), ts_ms=now_ms + k
            )

        result, rows = await round_trip(tmp_path, source, send, fake.drop_connections)
    check(result, rows, source, numeric=True)
