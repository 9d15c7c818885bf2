"""AlpacaHistoricalBars (alpaca-py's Stock/CryptoHistoricalDataClient) against the fake REST."""

from __future__ import annotations

import base64
import datetime as dt
import time
from collections.abc import AsyncIterator

import pytest

from quantlab.adapters.alpaca import (
    AlpacaDataConfig,
    AlpacaHistoricalBars,
    parse_timeframe,
)
from quantlab.core.errors import DataError
from quantlab.core.schemas import BAR_SCHEMA
from quantlab.ingest.items import WRONG_TYPE
from quantlab.ingest.ports import HistoricalBars
from quantlab.ingest.ratelimit import limiter
from quantlab.testing.fakes.alpaca import FakeAlpaca

pytestmark = pytest.mark.filterwarnings(
    "ignore:websockets.legacy is deprecated:DeprecationWarning"  # alpaca-py 0.44 imports it
)

START = dt.datetime(2022, 1, 3, 9, 0, tzinfo=dt.UTC)


def rest_bar(minute: int, close: float) -> dict[str, object]:
    """A bar as Alpaca's REST API documents it."""
    t = (START + dt.timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"t": t, "o": close - 1, "h": close + 1, "l": close - 2, "c": close, "v": 100 + minute,
            "n": 12, "vw": close}  # fmt: skip


@pytest.fixture
async def fake() -> AsyncIterator[FakeAlpaca]:
    async with FakeAlpaca() as server:
        yield server


def client(
    fake: FakeAlpaca, *, crypto: bool = False, key: str | None = "test-key", **kw: object
) -> AlpacaHistoricalBars:
    config = AlpacaDataConfig(
        asset_class="crypto" if crypto else "equity",
        symbols=("BTC/USD",) if crypto else ("AAPL",),
        rest_url=fake.rest_url,
    )
    secret = "test-secret" if key else None
    return AlpacaHistoricalBars(config, key, secret, **kw)  # type: ignore[arg-type]


async def test_stock_bars_follow_pagination(fake: FakeAlpaca) -> None:
    fake.bars["AAPL"] = [rest_bar(m, 178.0 + m) for m in range(5)]
    fake.bars["MSFT"] = [rest_bar(0, 300.0)]
    bars_client = client(fake)
    assert isinstance(bars_client, HistoricalBars)
    bars = await bars_client.fetch_bars("AAPL", START, START + dt.timedelta(minutes=10))
    assert bars.schema == BAR_SCHEMA
    assert bars["symbol"].to_list() == ["AAPL"] * 5
    assert bars["close"].to_list() == [178.0, 179.0, 180.0, 181.0, 182.0]
    assert bars.row(0) == ("AAPL", START, 177.0, 179.0, 176.0, 178.0, 100.0)
    # 5 bars in pages of 2: three requests, each after the first carrying the previous token
    paths = [path for path, _ in fake.rest_requests]
    assert paths == ["/v2/stocks/bars"] * 3
    assert bars_client.requests == 3
    params = [p for _, p in fake.rest_requests]
    assert params[0]["symbols"] == "AAPL"
    assert params[0]["timeframe"] == "1Min"
    assert params[0]["feed"] == "iex"
    assert params[0]["limit"] == "10000"
    assert params[0]["start"].startswith("2022-01-03T09:00:00")
    assert "page_token" not in params[0]
    assert [base64.b64decode(p["page_token"]) for p in params[1:]] == [b"2", b"4"]


async def test_crypto_bars_need_no_keys(fake: FakeAlpaca) -> None:
    fake.bars["BTC/USD"] = [rest_bar(m, 61_000.0 + m) for m in range(3)]
    bars = await client(fake, crypto=True, key=None).fetch_bars(
        "BTC/USD", START, START + dt.timedelta(minutes=1), timeframe="1min"
    )
    assert fake.rest_requests[0][0] == "/v1beta3/crypto/us/bars"
    assert fake.rest_requests[0][1]["symbols"] == "BTC/USD"
    assert bars["close"].to_list() == [61_000.0, 61_001.0]  # the end is inclusive, as Alpaca's


async def test_pages_are_paced_by_the_limiter(fake: FakeAlpaca) -> None:
    fake.bars["AAPL"] = [rest_bar(m, 100.0) for m in range(6)]
    paced = client(fake, limiter=limiter(1, 0.1))
    t0 = time.monotonic()
    bars = await paced.fetch_bars("AAPL", START, START + dt.timedelta(hours=1))
    assert bars.height == 6
    assert paced.requests == 3
    assert time.monotonic() - t0 >= 0.18  # one request now, then one per 0.1 s


async def test_bad_bars_are_left_out_and_counted(fake: FakeAlpaca) -> None:
    fake.bars["AAPL"] = [rest_bar(0, 100.0), {**rest_bar(1, 0.0), "c": "abc"}, rest_bar(2, 102.0)]
    bars_client = client(fake)
    bars = await bars_client.fetch_bars("AAPL", START, START + dt.timedelta(hours=1))
    assert bars["close"].to_list() == [100.0, 102.0]
    assert bars_client.rejects == {WRONG_TYPE: 1}


async def test_no_bars_is_an_empty_frame(fake: FakeAlpaca) -> None:
    bars = await client(fake).fetch_bars("AAPL", START, START + dt.timedelta(hours=1), "1h")
    assert bars.is_empty()
    assert bars.schema == BAR_SCHEMA
    assert fake.rest_requests[0][1]["timeframe"] == "1Hour"


async def test_errors_name_the_request(fake: FakeAlpaca) -> None:
    with pytest.raises(DataError, match=r"/stocks/bars for AAPL failed: APIError.*forbidden"):
        await client(fake, key="wrong").fetch_bars("AAPL", START, START + dt.timedelta(hours=1))
    with pytest.raises(DataError, match="timezone-aware start < end"):
        await client(fake).fetch_bars("AAPL", START, START)
    with pytest.raises(DataError, match="timezone-aware"):
        await client(fake).fetch_bars("AAPL", START.replace(tzinfo=None), START)


def test_timeframes() -> None:
    assert [parse_timeframe(t).value for t in ("1m", "15min", "1h", "4H", "1d", "1w", "3mo")] == [
        "1Min", "15Min", "1Hour", "4Hour", "1Day", "1Week", "3Month",
    ]  # fmt: skip
    for bad in ("1s", "m", "90m", "2d", "5mo", ""):
        with pytest.raises(DataError, match="timeframe"):
            parse_timeframe(bad)
