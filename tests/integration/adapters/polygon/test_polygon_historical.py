"""REST backfill of Polygon aggregates against the local fake: pages, retries, failures."""

from __future__ import annotations

import datetime as dt
import time

import msgspec
import pytest

from quantlab.adapters.polygon import PolygonDataConfig, PolygonHistoricalBars, parse_timeframe
from quantlab.core.errors import ConfigError, DataError, ValidationError
from quantlab.core.schemas import BAR_SCHEMA
from quantlab.ingest.items import MALFORMED_JSON
from quantlab.ingest.ports import HistoricalBars
from quantlab.testing.fakes.polygon import FakePolygon, RestReply, rest_bar

KEY = "test-key"
START = dt.datetime(2024, 1, 2, 14, 30, tzinfo=dt.UTC)
START_MS = int(START.timestamp() * 1000)


def history(fake: FakePolygon, **kw: object) -> PolygonHistoricalBars:
    base: dict[str, object] = {
        "symbols": ("AAPL",),
        "rest_url": fake.rest_url,
        "rest_max_rate": 1000.0,
        "rest_period_s": 1.0,
    }
    return PolygonHistoricalBars(PolygonDataConfig(**{**base, **kw}), api_key=KEY)  # type: ignore[arg-type]


def minute_bars(n: int) -> list[dict[str, object]]:
    return [
        rest_bar(START_MS + 60_000 * k, 100 + k, 101 + k, 99 + k, 100.5 + k, 1000 + k)
        for k in range(n)
    ]


async def test_backfill_follows_next_url_and_returns_bar_schema() -> None:
    async with FakePolygon(api_key=KEY, page_size=100) as fake:
        fake.bars["AAPL"] = minute_bars(250)
        hist = history(fake)
        assert isinstance(hist, HistoricalBars)
        bars = await hist.fetch_bars("AAPL", START, START + dt.timedelta(minutes=250))

        assert bars.schema == BAR_SCHEMA
        assert bars.height == 250
        assert bars["timestamp"].is_sorted()
        assert bars["timestamp"][0] == START
        assert bars.row(3, named=True) == {
            "symbol": "AAPL",
            "timestamp": START + dt.timedelta(minutes=3),
            "open": 103.0,
            "high": 104.0,
            "low": 102.0,
            "close": 103.5,
            "volume": 1003.0,
        }
        assert hist.last_rejects == []
        first, *rest = fake.rest_requests
        assert len(rest) == 2  # three pages
        assert first.path == (
            f"/v2/aggs/ticker/AAPL/range/1/minute/{START_MS}/{START_MS + 250 * 60_000}"
        )
        assert first.query == {"adjusted": "true", "sort": "asc", "limit": "50000"}
        assert all(set(r.query) == {"cursor"} for r in rest)
        assert all(r.authorization == f"Bearer {KEY}" for r in fake.rest_requests)
        assert all("apiKey" not in r.query for r in fake.rest_requests)


async def test_range_is_half_open_and_timeframes_map_to_polygon() -> None:
    async with FakePolygon(api_key=KEY) as fake:
        fake.bars["AAPL"] = minute_bars(10)
        hist = history(fake)
        bars = await hist.fetch_bars("AAPL", START, START + dt.timedelta(minutes=5), "1m")
        assert bars.height == 5  # the bar starting at `end` is not included
        await hist.fetch_bars("AAPL", START, START + dt.timedelta(hours=1), "15m")
        assert "/range/15/minute/" in fake.rest_requests[-1].path
    assert parse_timeframe("1d") == (1, "day")
    assert parse_timeframe("1s") == (1, "second")
    for bad in ("1", "0m", "m", "1y", "1 m"):
        with pytest.raises(ConfigError, match="timeframe"):
            parse_timeframe(bad)


async def test_empty_range_gives_an_empty_bar_frame() -> None:
    async with FakePolygon(api_key=KEY) as fake:
        bars = await history(fake).fetch_bars("AAPL", START, START + dt.timedelta(days=1))
        assert bars.is_empty()
        assert bars.schema == BAR_SCHEMA


async def test_429_honours_retry_after() -> None:
    async with FakePolygon(api_key=KEY) as fake:
        fake.bars["AAPL"] = minute_bars(3)
        fake.rest_replies.append(RestReply(429, {"Retry-After": "0.3"}, b'{"status":"ERROR"}'))
        t0 = time.monotonic()
        bars = await history(fake).fetch_bars("AAPL", START, START + dt.timedelta(minutes=3))
        assert time.monotonic() - t0 >= 0.3
        assert bars.height == 3
        assert len(fake.rest_requests) == 2


async def test_requests_are_paced_by_the_limiter() -> None:
    async with FakePolygon(api_key=KEY, page_size=1) as fake:
        fake.bars["AAPL"] = minute_bars(4)
        hist = history(fake, rest_max_rate=2.0, rest_period_s=0.5)
        t0 = time.monotonic()
        bars = await hist.fetch_bars("AAPL", START, START + dt.timedelta(minutes=4))
        assert bars.height == 4
        assert time.monotonic() - t0 >= 0.4  # 4 requests at 2 per 0.5 s


async def test_failures_raise_data_error_naming_path_and_status() -> None:
    end = START + dt.timedelta(minutes=3)
    async with FakePolygon(api_key=KEY) as fake:
        hist = history(fake, rest_max_retries=1, rest_timeout_s=0.6)
        fake.rest_replies.append(RestReply(500, body=b'{"status":"ERROR","error":"boom"}'))
        with pytest.raises(DataError, match=r"/v2/aggs/ticker/AAPL/.*HTTP 500.*boom"):
            await hist.fetch_bars("AAPL", START, end)
        fake.rest_replies += [
            RestReply(503, {"Retry-After": "0"})
        ] * 2  # retried once, then given up
        with pytest.raises(DataError, match="HTTP 503"):
            await hist.fetch_bars("AAPL", START, end)
        fake.rest_replies.append(RestReply(delay_s=3.0))
        with pytest.raises(DataError, match="timed out"):
            await hist.fetch_bars("AAPL", START, end)
        bad_key = PolygonHistoricalBars(hist.config, api_key="nope")
        with pytest.raises(DataError, match=r"HTTP 401.*Unknown API Key"):
            await bad_key.fetch_bars("AAPL", START, end)


async def test_malformed_body_and_rows_become_rejects_not_a_crash() -> None:
    async with FakePolygon(api_key=KEY) as fake:
        hist = history(fake)
        fake.rest_replies.append(RestReply(200, body=b"<html>oops</html>"))
        bars = await hist.fetch_bars("AAPL", START, START + dt.timedelta(minutes=3))
        assert bars.is_empty()
        assert [r.reason for r in hist.last_rejects] == [MALFORMED_JSON]


async def test_next_url_to_another_host_is_refused() -> None:
    async with FakePolygon(api_key=KEY) as fake:
        body = {"status": "OK", "results": minute_bars(1), "next_url": "https://evil.example/x"}
        fake.rest_replies.append(RestReply(200, body=msgspec.json.encode(body)))
        with pytest.raises(DataError, match="refusing to send the API key"):
            await history(fake).fetch_bars("AAPL", START, START + dt.timedelta(minutes=3))
        assert len(fake.rest_requests) == 1


async def test_naive_or_reversed_ranges_are_refused() -> None:
    async with FakePolygon(api_key=KEY) as fake:
        hist = history(fake)
        with pytest.raises(ValidationError, match="timezone-aware"):
            await hist.fetch_bars("AAPL", START.replace(tzinfo=None), START)
        with pytest.raises(ValidationError, match="before"):
            await hist.fetch_bars("AAPL", START, START)
        assert fake.rest_requests == []
