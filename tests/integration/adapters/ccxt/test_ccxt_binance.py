"""The real ccxt.pro binance client against the local fake Binance: values, bad frames,
order book resync, disconnects and staleness through the multiplexer, REST backfill."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from ccxt_helpers import OPTIONS_SPOT_ONLY, Collector, MuxRun, heartbeats, reasons, rows, until

from quantlab.adapters.ccxt import CcxtDataConfig, CcxtDataSource, CcxtHistoricalBars
from quantlab.core.enums import Aggressor, EventType
from quantlab.core.errors import ConfigError, DataError
from quantlab.core.schemas import BAR_SCHEMA
from quantlab.ingest.items import Heartbeat, Reject
from quantlab.ingest.multiplexer import Backoff, Multiplexer
from quantlab.ingest.ports import HistoricalBars, MarketDataSource, SourceDisconnected
from quantlab.ingest.ratelimit import limiter
from quantlab.testing.fakes.binance import FakeBinance

NS = 1_000_000


def config(fake: FakeBinance, **overrides: Any) -> CcxtDataConfig:
    settings: dict[str, Any] = {
        "exchange": "binance",
        "symbols": ("BTC/USDT", "ETH/USDT"),
        "channels": ("trades",),
        "rest_url": fake.rest_url,
        "ws_url": fake.ws_url,
        "options": OPTIONS_SPOT_ONLY,
        "order_book_limit": 100,
    }
    settings.update(overrides)
    return CcxtDataConfig(**settings)


def trade_ids(items: list[Any]) -> list[str]:
    return [r["trade_id"] for r in rows(items, EventType.TRADE)]


async def test_trades_and_quotes_arrive_with_the_venues_values(binance: FakeBinance) -> None:
    source = CcxtDataSource(config(binance, channels=("trades", "ticker", "order_book")))
    assert isinstance(source, MarketDataSource)
    assert source.asset_class == "crypto"
    now = time.time_ns() // NS
    binance.set_book("BTC/USDT", bids=[(100.0, 1.5), (99.0, 3.0)], asks=[(101.0, 2.0)])
    binance.trade("BTC/USDT", 100.5, 0.25, trade_id=7, ts_ms=now)  # taker bought
    binance.trade("BTC/USDT", 100.4, 0.5, trade_id=8, ts_ms=now + 1, buyer_is_maker=True)
    binance.ticker("ETH/USDT", 2000.1, 2000.3, 4.0, 5.5, ts_ms=now + 2)
    async with Collector(source.stream()) as got:
        await got.until(lambda c: len(c.rows(EventType.TRADE)) == 2)
        await got.until(lambda c: any(q["symbol"] == "BTC/USDT" for q in c.rows(EventType.QUOTE)))
        await got.until(lambda c: any(q["symbol"] == "ETH/USDT" for q in c.rows(EventType.QUOTE)))
        binance.depth("BTC/USDT", bids=[(100.2, 0.7)], ts_ms=now + 3)  # a better bid
        await got.until(lambda c: any(q["bid"] == 100.2 for q in c.rows(EventType.QUOTE)))
        await until(lambda: len(_depth_calls(binance)) == 2, what="both book snapshots")
        await until(lambda: len(binance.subscriptions) == 6, what="every subscription")

    trades = got.rows(EventType.TRADE)
    assert [(t["trade_id"], t["price"], t["size"], t["aggressor"]) for t in trades] == [
        ("7", 100.5, 0.25, Aggressor.BUYER),
        ("8", 100.4, 0.5, Aggressor.SELLER),
    ]
    assert trades[0]["symbol"] == "BTC/USDT"
    assert trades[0]["timestamp"] == dt.datetime.fromtimestamp(now / 1000, dt.UTC)
    quotes = got.rows(EventType.QUOTE)
    eth = next(q for q in quotes if q["symbol"] == "ETH/USDT")
    assert (eth["bid"], eth["ask"], eth["bid_size"], eth["ask_size"]) == (2000.1, 2000.3, 4.0, 5.5)
    assert eth["timestamp"] == dt.datetime.fromtimestamp((now + 2) / 1000, dt.UTC)
    btc = [q for q in quotes if q["symbol"] == "BTC/USDT"]
    assert (btc[0]["bid"], btc[0]["ask"], btc[0]["bid_size"], btc[0]["ask_size"]) == (
        100.0, 101.0, 1.5, 2.0,
    )  # fmt: skip
    assert (btc[-1]["bid"], btc[-1]["bid_size"]) == (100.2, 0.7)
    assert btc[-1]["timestamp"] == dt.datetime.fromtimestamp((now + 3) / 1000, dt.UTC)
    # What ccxt sent: one SUBSCRIBE per (symbol, channel), the 24h ticker (bid/ask) stream,
    # and the REST calls: markets once, then a depth snapshot per book of the asked size.
    streams = sorted(t for topics in binance.subscriptions for t in topics)
    assert streams == sorted(
        f"{s}@{c}" for s in ("btcusdt", "ethusdt") for c in ("trade", "ticker", "depth")
    )
    subscribes = [m for m in binance.received if m.get("method") == "SUBSCRIBE"]
    assert len(subscribes) == 6
    assert all(isinstance(m["id"], int) for m in subscribes)
    paths = [r.path for r in binance.rest_requests]
    assert paths.count("/api/v3/exchangeInfo") == 1
    depth = _depth_calls(binance)
    assert sorted(q["symbol"] for q in depth) == ["BTCUSDT", "ETHUSDT"]
    assert {q["limit"] for q in depth} == {"100"}
    assert not reasons(got.items)


def _depth_calls(fake: FakeBinance) -> list[dict[str, str]]:
    return [r.query for r in fake.rest_requests if r.path == "/api/v3/depth"]


async def test_combined_stream_envelope_is_unwrapped() -> None:
    async with FakeBinance(ping_interval_s=None) as fake:
        # ccxt appends /ws/<n> to the base: the fake wraps events for paths under /stream.
        source = CcxtDataSource(config(fake, ws_url=f"{fake.ws_url}/stream", symbols=("BTC/USDT",)))
        fake.trade("BTC/USDT", 100.5, 0.25, trade_id=1)
        async with Collector(source.stream()) as got:
            await got.until(lambda c: len(c.rows(EventType.TRADE)) == 1)
        assert fake.paths == ["/stream/ws/0"]


async def test_server_pings_become_heartbeats() -> None:
    async with FakeBinance(ping_interval_s=0.05) as fake:
        source = CcxtDataSource(config(fake, symbols=("BTC/USDT",)))
        async with Collector(source.stream()) as got:
            await got.until(lambda c: heartbeats(c.items) >= 3)
        assert all(isinstance(i, Heartbeat) and i.ts_ns > 0 for i in got.items)


async def test_bad_frames_through_the_real_client_become_rejects(binance: FakeBinance) -> None:
    source = CcxtDataSource(config(binance, symbols=("BTC/USDT",)))
    topic = "btcusdt@trade"
    binance.trade("BTC/USDT", 100.0, 1.0, trade_id=1)
    good = '{"e":"trade","E":1,"s":"BTCUSDT","t":9,"p":"1","q":"1","T":1,"m":false,"M":true}'
    binance.send_raw('{"e":"trade","s":"BTCUSDT","p":"1', topic)  # truncated
    binance.send_raw('{"e":"trade","s":}', topic)  # malformed
    binance.send_raw("hello", topic)  # not JSON: ccxt alone would drop it silently
    binance.send_raw("42", topic)  # JSON, not an object
    binance.send_raw(b"\xff\xfe{}", topic)  # not UTF-8: ccxt alone would stall the socket
    binance.send_raw("[1, 2, 3]", topic)  # ccxt's handler raises a TypeError
    binance.send_raw(good.replace('"p":"1"', '"p":"abc"'), topic)  # ccxt raises a ValueError
    binance.send_raw(good.replace('"p":"1"', '"p":{"x":1}'), topic)  # ccxt makes price None
    binance.send_raw(good.replace('"T":1', '"T":"soon"'), topic)  # ccxt makes timestamp None
    binance.send_raw('{"e":"trade","pad":"' + "x" * (1_200_000) + '"}', topic)  # > 1 MiB
    binance.send_raw(good.replace("BTCUSDT", "XYZUSDT"), topic)  # ccxt files it away: unseen
    binance.trade("BTC/USDT", 101.0, 2.0, trade_id=2)
    async with Collector(source.stream()) as got:
        await got.until(lambda c: trade_ids(c.items) == ["1", "2"])
        await got.until(lambda c: sum(reasons(c.items).values()) == 10)
    assert reasons(got.items) == {
        "truncated_frame": 1,
        "malformed_json": 3,
        "wrong_type": 5,
        "oversized_frame": 1,
    }


async def test_a_venue_error_on_a_subscription_is_a_reject_and_the_watch_goes_on(
    binance: FakeBinance,
) -> None:
    source = CcxtDataSource(config(binance, symbols=("BTC/USDT",)))
    binance.trade("BTC/USDT", 100.0, 1.0, trade_id=1)
    error = '{"error":{"code":2,"msg":"Invalid request: stream name"},"id":1}'
    async with Collector(source.stream()) as got:
        await got.until(lambda c: trade_ids(c.items) == ["1"])
        binance.send_raw(error, "btcusdt@trade")
        await got.until(lambda c: reasons(c.items)["unknown_message"] == 1)
        binance.trade("BTC/USDT", 101.0, 1.0, trade_id=2)
        binance.trade("BTC/USDT", 102.0, 1.0, trade_id=3)
        await got.until(lambda c: trade_ids(c.items)[-1] == "3")
    assert "Invalid request" in next(i.detail for i in got.items if isinstance(i, Reject))


async def test_frame_over_ccxts_own_limit_is_counted_then_the_stream_disconnects(
    binance: FakeBinance,
) -> None:
    source = CcxtDataSource(config(binance, symbols=("BTC/USDT",)))
    binance.trade("BTC/USDT", 100.0, 1.0, trade_id=1)
    async with Collector(source.stream()) as got:
        await got.until(lambda c: trade_ids(c.items) == ["1"])
        binance.send_raw('{"pad":"' + "x" * (11 << 20) + '"}', "btcusdt@trade")  # > 10 MiB
        await until(lambda: got.error is not None, what="the disconnect")
    assert isinstance(got.error, SourceDisconnected)
    assert reasons(got.items) == {"oversized_frame": 1}


async def test_order_book_gap_resyncs_from_a_new_snapshot(binance: FakeBinance) -> None:
    source = CcxtDataSource(config(binance, symbols=("BTC/USDT",), channels=("order_book",)))
    binance.set_book("BTC/USDT", bids=[(100.0, 1.0)], asks=[(101.0, 1.0)])
    async with Collector(source.stream()) as got:
        await got.until(lambda c: len(c.rows(EventType.QUOTE)) == 1)
        binance.depth("BTC/USDT", bids=[(100.5, 2.0)], skip_ids=1)  # a lost update before it
        await got.until(lambda c: any(q["bid"] == 100.5 for q in c.rows(EventType.QUOTE)))
    assert source.resyncs == 1
    assert [r.path for r in binance.rest_requests].count("/api/v3/depth") == 2
    assert binance.subscriptions == [("btcusdt@depth",), ("btcusdt@depth",)]
    assert not reasons(got.items)


async def test_disconnect_mid_stream_reconnects_resubscribes_and_loses_nothing() -> None:
    async with FakeBinance(ping_interval_s=None, resend_last=2) as fake:
        source = CcxtDataSource(config(fake, symbols=("BTC/USDT",)))
        mux = Multiplexer([source], backoff=Backoff(initial=0.01, maximum=0.05), stale_after_s=5)
        async with MuxRun(mux) as run:
            for i in range(1, 6):
                fake.trade("BTC/USDT", 100.0 + i, 1.0, trade_id=i)
            await until(lambda: len(set(trade_ids(run.items))) == 5, what="first trades")
            fake.drop_connections()
            await until(lambda: mux.stats[source.name].reconnects >= 1, what="a reconnect")
            for i in range(6, 11):
                fake.trade("BTC/USDT", 100.0 + i, 1.0, trade_id=i)
            await until(lambda: len(set(trade_ids(run.items))) == 10, what="every trade")
        ids = trade_ids(run.items)
        assert set(ids) == {str(i) for i in range(1, 11)}
        assert ids.count("4") == 2
        assert ids.count("5") == 2
        assert mux.stats[source.name].reconnects == 1
        assert fake.subscriptions == [("btcusdt@trade",), ("btcusdt@trade",)]
        assert [r.path for r in fake.rest_requests].count("/api/v3/exchangeInfo") == 2
        assert fake.connections == 2


async def test_a_silent_venue_is_detected_stale_and_reconnected(binance: FakeBinance) -> None:
    source = CcxtDataSource(config(binance, symbols=("BTC/USDT",), close_timeout_s=0.2))
    mux = Multiplexer([source], backoff=Backoff(initial=0.01, maximum=0.05), stale_after_s=0.3)
    async with MuxRun(mux) as run:
        binance.trade("BTC/USDT", 100.0, 1.0, trade_id=1)
        await until(lambda: trade_ids(run.items) == ["1"])
        binance.go_silent()
        await until(lambda: len(binance.subscriptions) == 2, what="a new subscription")
        binance.trade("BTC/USDT", 101.0, 1.0, trade_id=2)
        await until(lambda: trade_ids(run.items) == ["1", "2"])
    stats = mux.stats[source.name]
    assert stats.stale >= 1
    assert stats.reconnects >= 1
    assert "no message or heartbeat" in stats.last_error


async def test_unknown_symbol_fails_at_start_with_the_symbol_named(binance: FakeBinance) -> None:
    source = CcxtDataSource(config(binance, symbols=("BTC/USDT", "DOGE/USDT")))
    async with Collector(source.stream()) as got:
        await until(lambda: got.error is not None, what="the error")
    assert isinstance(got.error, ConfigError)
    assert "['DOGE/USDT'] not among the markets of binance" in str(got.error)


async def test_backfill_pages_by_since_and_is_paced(binance: FakeBinance) -> None:
    t0 = int(dt.datetime(2024, 3, 1, tzinfo=dt.UTC).timestamp() * 1000)
    minute = 60_000
    klines = [
        (t0 + i * minute, 100.0 + i, 101.0 + i, 99.0 + i, 100.5 + i, 10.0 + i) for i in range(700)
    ]
    del klines[300:420]  # two hours without trades: no candles, and one page comes back empty
    binance.add_klines("BTC/USDT", klines)
    pace = limiter(1, 0.1)
    async with CcxtHistoricalBars(config(binance, ohlcv_page_limit=100), limiter=pace) as hist:
        assert isinstance(hist, HistoricalBars)
        start = dt.datetime.fromtimestamp((t0 + 10 * minute) / 1000, dt.UTC)
        end = dt.datetime.fromtimestamp((t0 + 650 * minute) / 1000, dt.UTC)
        began = time.monotonic()
        bars = await hist.fetch_bars("BTC/USDT", start, end, "1m")
        elapsed = time.monotonic() - began
    assert bars.schema == BAR_SCHEMA
    expected = [k for k in klines if t0 + 10 * minute <= k[0] < t0 + 650 * minute]
    assert bars.height == len(expected) == 520
    first = bars.row(0, named=True)
    assert first["timestamp"] == start
    assert (first["open"], first["high"], first["low"], first["close"], first["volume"]) == (
        110.0, 111.0, 109.0, 110.5, 20.0,
    )  # fmt: skip
    assert bars["timestamp"].is_sorted()
    assert bars["timestamp"].n_unique() == bars.height
    pages = [r.query for r in binance.rest_requests if r.path == "/api/v3/klines"]
    assert len(pages) == 7  # 640 minutes in pages of 100
    starts = [10, 110, 210, 300, 400, 500, 600]  # after 299 the next page starts at 300
    assert [int(p["startTime"]) for p in pages] == [t0 + m * minute for m in starts]
    assert all(p["limit"] == "100" and p["interval"] == "1m" for p in pages)
    assert int(pages[-1]["endTime"]) == t0 + 650 * minute - 1
    assert elapsed >= 0.6  # 8 calls (markets + 7 pages) at 1 per 0.1 s
    assert hist.requests == 8
    assert hist.last_rejects == []


async def test_backfill_rejects_a_bad_timeframe_or_symbol(binance: FakeBinance) -> None:
    async with CcxtHistoricalBars(config(binance)) as hist:
        start = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
        with pytest.raises(DataError, match="timeframe '7m'"):
            await hist.fetch_bars("BTC/USDT", start, start + dt.timedelta(hours=1), "7m")
        with pytest.raises(DataError, match="'XRP/USDT' is not a market"):
            await hist.fetch_bars("XRP/USDT", start, start + dt.timedelta(hours=1))
        with pytest.raises(DataError, match="must be before"):
            await hist.fetch_bars("BTC/USDT", start, start)
        binance.rest_replies["/api/v3/klines"] = [
            (429, {"code": -1003, "msg": "Too many requests"})
        ]
        with pytest.raises(
            DataError, match=r"fetch_ohlcv ETH/USDT 1h since \d+ failed: DDoSProtection"
        ):
            await hist.fetch_bars("ETH/USDT", start, start + dt.timedelta(days=1), "1h")


@pytest.mark.parametrize("channel", ["ticker", "order_book"])
async def test_quote_channels_alone(binance: FakeBinance, channel: str) -> None:
    source = CcxtDataSource(config(binance, symbols=("BTC/USDT",), channels=(channel,)))
    binance.set_book("BTC/USDT", bids=[(10.0, 1.0)], asks=[(11.0, 1.0)])
    binance.ticker("BTC/USDT", 10.0, 11.0)
    async with Collector(source.stream()) as got:
        await got.until(lambda c: len(c.rows(EventType.QUOTE)) >= 1)
    quote = got.rows(EventType.QUOTE)[0]
    assert (quote["bid"], quote["ask"]) == (10.0, 11.0)
