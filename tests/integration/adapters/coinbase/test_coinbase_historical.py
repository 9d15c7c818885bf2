"""`CoinbaseHistoricalBars` (httpx) against the fake Coinbase REST candles endpoint."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import pytest

from quantlab.adapters.coinbase import CoinbaseDataConfig, CoinbaseHistoricalBars
from quantlab.core.errors import DataError
from quantlab.core.schemas import BAR_SCHEMA
from quantlab.ingest.items import WRONG_TYPE
from quantlab.ingest.ports import HistoricalBars
from quantlab.testing.fakes.coinbase import FakeCoinbase

START_S = 1_699_920_000  # midnight UTC: candles start on multiples of their granularity
START = dt.datetime.fromtimestamp(START_S, dt.UTC)


def minute(i: int) -> dt.datetime:
    return START + dt.timedelta(minutes=i)


@pytest.fixture
async def fake() -> AsyncIterator[FakeCoinbase]:
    async with FakeCoinbase(products=("BTC-USD",), heartbeat_interval_s=None) as f:
        rows = [
            (START_S + 60 * i, 100.0 + i, 101.0 + i, 99.0 + i, 100.5 + i, 1.0 * i)
            for i in range(1000)
        ]
        f.set_candles("BTC-USD", rows)
        f.set_candles(
            "BTC-USD",
            [(START_S + 300 * i, 1.0, 2.0, 0.5, 1.5, 9.0) for i in range(10)],
            "FIVE_MINUTE",
        )
        yield f


def bars_for(fake: FakeCoinbase, **fields: object) -> CoinbaseHistoricalBars:
    return CoinbaseHistoricalBars(CoinbaseDataConfig(rest_url=fake.rest_url, **fields))  # type: ignore[arg-type]


def queries(fake: FakeCoinbase) -> list[dict[str, str]]:
    return [{k: v[0] for k, v in parse_qs(urlsplit(p).query).items()} for p in fake.rest_requests]


async def test_backfill_pages_by_time_windows_into_the_bar_schema(fake: FakeCoinbase) -> None:
    async with bars_for(fake) as source:
        assert isinstance(source, HistoricalBars)
        frame = await source.fetch_bars("BTC/USD", START, minute(1000))
    assert frame.schema == BAR_SCHEMA
    assert frame.height == 1000
    assert frame["timestamp"].is_sorted()
    assert frame["timestamp"][0] == START
    assert frame.row(999) == ("BTC/USD", minute(999), 1099.0, 1100.0, 1098.0, 1099.5, 999.0)
    assert all(
        p.startswith("/api/v3/brokerage/market/products/BTC-USD/candles?")
        for p in fake.rest_requests
    )
    windows = queries(fake)
    assert len(windows) == 3
    for q in windows:
        assert q["granularity"] == "ONE_MINUTE"
        assert (int(q["end"]) - int(q["start"])) // 60 + 1 <= 350
    assert int(windows[0]["start"]) == START_S
    assert [int(w["start"]) for w in windows[1:]] == [int(w["end"]) + 1 for w in windows[:-1]]


async def test_the_range_is_start_inclusive_end_exclusive(fake: FakeCoinbase) -> None:
    async with bars_for(fake) as source:
        frame = await source.fetch_bars("BTC/USD", minute(10) + dt.timedelta(seconds=1), minute(20))
        five = await source.fetch_bars("BTC/USD", START, minute(60), "5m")
        empty = await source.fetch_bars("BTC/USD", minute(5000), minute(5010))
    assert frame["timestamp"].to_list() == [minute(i) for i in range(11, 20)]
    assert five.height == 10
    assert queries(fake)[1]["granularity"] == "FIVE_MINUTE"
    assert empty.schema == BAR_SCHEMA
    assert empty.height == 0


async def test_rate_limited_and_failing_requests_are_retried(fake: FakeCoinbase) -> None:
    fake.override_rest(429, '{"error":"RATE_LIMITED"}')
    fake.override_rest(503, "unavailable")
    async with bars_for(fake) as source:
        frame = await source.fetch_bars("BTC/USD", START, minute(5))
        assert frame.height == 5
        assert source.requests == 3
        fake.override_rest(500, "boom", times=4)
        with pytest.raises(DataError, match="HTTP 500"):
            await source.fetch_bars("BTC/USD", START, minute(5))
        fake.override_rest(400, '{"error":"INVALID_ARGUMENT"}')
        with pytest.raises(DataError, match="HTTP 400"):  # not retried
            await source.fetch_bars("BTC/USD", START, minute(5))
    assert len(fake.rest_requests) == 3 + 4 + 1


async def test_requests_are_paced_by_the_limiter(fake: FakeCoinbase) -> None:
    async with bars_for(fake, rest_max_rate=5.0) as source:
        begin = time.monotonic()
        # 2100 minutes = 6 windows: a burst of 5, then one more after ~0.2 s
        await source.fetch_bars("BTC/USD", START, minute(2100))
        elapsed = time.monotonic() - begin
    assert len(fake.rest_requests) == 6
    assert elapsed >= 0.15


async def test_bad_bodies_and_bad_candles(fake: FakeCoinbase) -> None:
    async with bars_for(fake) as source:
        fake.override_rest(200, '{"candles": [')
        with pytest.raises(DataError, match="truncated"):
            await source.fetch_bars("BTC/USD", START, minute(5))
        good = {"start": str(START_S + 60), "low": "1", "high": "2", "open": "1", "close": "2"}
        bad = {"start": str(START_S), "low": "abc"}
        fake.override_rest(200, json.dumps({"candles": [bad, {**good, "volume": "3"}]}))
        frame = await source.fetch_bars("BTC/USD", START, minute(5))
        assert frame["timestamp"].to_list() == [minute(1)]
        assert source.rejects == {WRONG_TYPE: 1}


async def test_bad_arguments_fail_clearly(fake: FakeCoinbase) -> None:
    async with bars_for(fake) as source:
        with pytest.raises(DataError, match="timeframe '3m'"):
            await source.fetch_bars("BTC/USD", START, minute(5), "3m")
        with pytest.raises(DataError, match="timezone-aware"):
            await source.fetch_bars("BTC/USD", START.replace(tzinfo=None), minute(5))
        with pytest.raises(DataError, match="before end"):
            await source.fetch_bars("BTC/USD", minute(5), START)
    assert fake.rest_requests == []
