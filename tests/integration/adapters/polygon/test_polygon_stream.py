"""The Polygon source (native websockets client) against the local fake server."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable

import polars as pl
import pytest
from pydantic import SecretStr

from quantlab.adapters.polygon import PolygonDataConfig, PolygonDataSource, PolygonHistoricalBars
from quantlab.core.enums import EventType
from quantlab.core.errors import ConfigError, DataError
from quantlab.ingest.items import (
    MALFORMED_JSON,
    OVERSIZED_FRAME,
    UNKNOWN_SYMBOL,
    Events,
    Heartbeat,
    Reject,
    SourceItem,
)
from quantlab.ingest.ports import MarketDataSource, SourceDisconnected
from quantlab.testing.fakes.polygon import FakePolygon, bar_event, quote_event, trade_event

KEY = "test-key"
T0 = 1536036818784


def config(fake: FakePolygon, **kw: object) -> PolygonDataConfig:
    base: dict[str, object] = {
        "symbols": ("AAPL", "MSFT"),
        "ws_url": fake.ws_url,
        "rest_url": fake.rest_url,
        "close_timeout_s": 0.2,
        "heartbeat_interval_s": None,
        "rest_max_rate": 1000.0,
        "rest_period_s": 1.0,
    }
    return PolygonDataConfig(**{**base, **kw})  # type: ignore[arg-type]


async def take(
    stream: AsyncIterator[SourceItem], done: Callable[[list[SourceItem]], bool], timeout: float = 5
) -> list[SourceItem]:
    """Items from `stream` until `done(items)`; the stream is closed afterwards."""
    items: list[SourceItem] = []
    try:
        async with asyncio.timeout(timeout):
            async for item in stream:
                items.append(item)
                if done(items):
                    break
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    return items


def frames(items: list[SourceItem], kind: EventType) -> pl.DataFrame:
    parts = [i.frame for i in items if isinstance(i, Events) and i.kind is kind]
    return pl.concat(parts) if parts else pl.DataFrame()


def count(kind: EventType, n: int) -> Callable[[list[SourceItem]], bool]:
    return lambda items: frames(items, kind).height >= n


async def test_auth_subscribe_and_all_kinds_arrive_as_events() -> None:
    async with FakePolygon(api_key=KEY) as fake:
        source = PolygonDataSource(config(fake, channels=("T", "Q", "AM")), api_key=KEY)
        assert isinstance(source, MarketDataSource)
        assert (source.name, source.asset_class) == ("polygon", "equity")
        fake.send(trade_event("AAPL", 114.125, 100, T0, "t1"), trade_event("MSFT", 250.5, 7, T0))
        fake.send(quote_event("AAPL", 114.12, 114.13, T0 + 1, bid_size=3, ask_size=4))
        fake.send(bar_event("AAPL", 1610144640000, 10.0, 11.0, 9.5, 10.5, 4110))
        items = await take(source.stream(), count(EventType.BAR, 1))

        assert fake.auths == [KEY]
        expected = ["T.AAPL", "T.MSFT", "Q.AAPL", "Q.MSFT", "AM.AAPL", "AM.MSFT"]
        assert fake.subscriptions == [expected]
        assert fake.received == [
            {"action": "auth", "params": KEY},
            {"action": "subscribe", "params": ",".join(expected)},
        ]
        trades = frames(items, EventType.TRADE)
        assert trades.select("symbol", "price", "size", "trade_id").rows() == [
            ("AAPL", 114.125, 100.0, "t1"),
            ("MSFT", 250.5, 7.0, "1"),
        ]
        assert trades["timestamp"].dt.epoch("ns").to_list() == [T0 * 1_000_000] * 2
        quote = frames(items, EventType.QUOTE).row(0, named=True)
        assert (quote["bid"], quote["ask"], quote["bid_size"], quote["ask_size"]) == (
            114.12,
            114.13,
            3.0,
            4.0,
        )
        bar = frames(items, EventType.BAR)
        assert bar["timestamp"].dt.epoch("ms").to_list() == [1610144640000]
        assert bar.select("open", "high", "low", "close", "volume").row(0) == (
            10.0,
            11.0,
            9.5,
            10.5,
            4110.0,
        )
        # The subscription acks came as a control frame: proof of life, not data.
        assert any(isinstance(i, Heartbeat) for i in items)


async def test_bad_frames_over_the_wire_are_counted_and_the_stream_goes_on() -> None:
    async with FakePolygon(api_key=KEY) as fake:
        source = PolygonDataSource(config(fake), api_key=KEY)
        fake.send_raw("[" + '{"ev":"T"},' * 200_000 + "{}]")  # ~2.2 MB: over the 1 MiB limit
        fake.send_raw("{not json")
        fake.send(trade_event("TSLA", 1.0, 1, T0))  # not subscribed: the fake still sends it
        fake.send_raw('[{"ev":"T","sym":"TSLA","i":"x","p":1,"s":1,"t":1}]')
        fake.send(trade_event("AAPL", 114.125, 100, T0))
        items = await take(source.stream(), count(EventType.TRADE, 1))
        reasons = [i.reason for i in items if isinstance(i, Reject)]
        assert reasons == [OVERSIZED_FRAME, MALFORMED_JSON, UNKNOWN_SYMBOL]
        assert frames(items, EventType.TRADE)["symbol"].to_list() == ["AAPL"]
        assert fake.connections == 1


async def test_wrong_key_fails_with_a_config_error_that_hides_the_key() -> None:
    canary = "CANARY-wrong-key-0123456789abcdef"
    async with FakePolygon(api_key=KEY) as fake:
        source = PolygonDataSource(config(fake), api_key=SecretStr(canary))
        with pytest.raises(ConfigError, match="api_key") as info:
            await take(source.stream(), lambda _: True)
        assert canary not in str(info.value)
        assert canary not in repr(info.value)
        assert fake.auths == [canary]
        assert fake.subscriptions == []


async def test_quiet_stream_yields_heartbeats_from_pongs() -> None:
    async with FakePolygon(api_key=KEY) as fake:
        source = PolygonDataSource(config(fake, heartbeat_interval_s=0.05), api_key=KEY)

        def three_beats(items: list[SourceItem]) -> bool:
            return sum(isinstance(i, Heartbeat) for i in items) >= 3

        items = await take(source.stream(), three_beats, timeout=3)
        assert all(isinstance(i, Heartbeat) for i in items)


async def test_hung_server_without_pongs_raises_source_disconnected() -> None:
    async with FakePolygon(api_key=KEY) as fake:
        cfg = config(fake, heartbeat_interval_s=0.05, pong_timeout_s=0.2)
        stream = PolygonDataSource(cfg, api_key=KEY).stream()
        task = asyncio.create_task(take(stream, lambda _: False))
        await fake.wait_subscribed()
        fake.go_silent()
        with pytest.raises(SourceDisconnected, match="no pong"):
            await task


async def test_cut_connection_raises_source_disconnected() -> None:
    async with FakePolygon(api_key=KEY) as fake:
        stream = PolygonDataSource(config(fake), api_key=KEY).stream()
        fake.send(trade_event("AAPL", 1.0, 1, T0))
        first = await anext(stream)
        assert isinstance(first, Heartbeat | Events)
        fake.drop_connections()
        with pytest.raises(SourceDisconnected, match="connection lost"):
            await take(stream, lambda _: False)


async def test_unreachable_server_raises_source_disconnected() -> None:
    async with FakePolygon(api_key=KEY) as fake:
        url = fake.ws_url
    cfg = PolygonDataConfig(symbols=("AAPL",), ws_url=url, open_timeout_s=1.0)
    with pytest.raises(SourceDisconnected, match="cannot connect"):
        await take(PolygonDataSource(cfg, api_key=KEY).stream(), lambda _: True)


async def test_canary_key_never_reaches_logs_reprs_or_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    canary = "CANARY0123456789abcdefCANARY0123456789abcdef"  # long: websockets elides frames
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    async with FakePolygon(api_key=canary) as fake:
        cfg = config(fake)
        source = PolygonDataSource(cfg, api_key=canary)
        fake.send(trade_event("AAPL", 1.0, 1, T0))
        await take(source.stream(), count(EventType.TRADE, 1))
        fake.drop_connections()

        hist = PolygonHistoricalBars(cfg, api_key=SecretStr(canary))
        fake.bars["AAPL"] = [{"v": 1, "o": 1, "c": 1, "h": 1, "l": 1, "t": T0}]
        assert (await hist.fetch_bars("AAPL", *_window())).height == 1

        wrong = "CANARY-bad-" + canary
        bad_source = PolygonDataSource(cfg, api_key=wrong)
        with pytest.raises(ConfigError) as ws_error:
            await take(bad_source.stream(), lambda _: True)
        errors.append(ws_error.value)
        bad_hist = PolygonHistoricalBars(cfg, api_key=wrong)
        with pytest.raises(DataError, match="401") as rest_error:
            await bad_hist.fetch_bars("AAPL", *_window())
        errors.append(rest_error.value)

    # The fake server's own logs show what it received; everything else is ours or a library's.
    ours = [r for r in caplog.records if not r.name.startswith("websockets.server")]
    text = "\n".join(r.getMessage() for r in ours)
    assert "subscribe" in text  # websockets' debug frame dumps were captured...
    assert "HTTP Request" in text  # ...and so were httpx's request lines
    shown = [text, *(str(r.args) for r in ours)]
    shown += [repr(x) for x in (source, hist, cfg, bad_source, bad_hist)]
    shown += [str(e) for e in errors] + [repr(e) for e in errors]
    shown += [repr(vars(x)) for x in (source, hist)]
    for text in shown:
        assert "CANARY" not in text


def _window() -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.fromtimestamp(T0 / 1000, tz=dt.UTC) - dt.timedelta(minutes=1)
    return start, start + dt.timedelta(minutes=5)
