"""The real ccxt.pro coinbase client against the local fake Advanced Trade venue: values,
heartbeats, venue errors and bad frames, disconnects and staleness, REST candles."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

from ccxt_helpers import Collector, MuxRun, heartbeats, reasons, rows, until

from quantlab.adapters.ccxt import CcxtDataConfig, CcxtDataSource, CcxtHistoricalBars, CcxtMarket
from quantlab.core.enums import Aggressor, EventType
from quantlab.core.schemas import BAR_SCHEMA
from quantlab.ingest.multiplexer import Backoff, Multiplexer
from quantlab.testing.fakes.coinbase_ccxt import FakeCoinbaseAdvancedTrade

NS = 1_000_000
MARKETS = (CcxtMarket(symbol="BTC/USD", id="BTC-USD"), CcxtMarket(symbol="ETH/USD", id="ETH-USD"))


def config(fake: FakeCoinbaseAdvancedTrade, **overrides: Any) -> CcxtDataConfig:
    settings: dict[str, Any] = {
        "exchange": "coinbase",
        "symbols": ("BTC/USD", "ETH/USD"),
        "channels": ("trades",),
        "rest_url": fake.rest_url,
        "ws_url": fake.ws_url,
        "markets": MARKETS,
    }
    settings.update(overrides)
    return CcxtDataConfig(**settings)


def trade_ids(items: list[Any]) -> list[str]:
    return [r["trade_id"] for r in rows(items, EventType.TRADE)]


def at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


async def test_trades_quotes_and_book_arrive_with_the_venues_values(
    coinbase: FakeCoinbaseAdvancedTrade,
) -> None:
    source = CcxtDataSource(config(coinbase, channels=("trades", "ticker", "order_book")))
    now = time.time_ns() // NS
    coinbase.l2_update("BTC-USD", bids=[(21000.0, 1.5), (20999.0, 2.0)], asks=[(21001.0, 0.5)])
    coinbase.trades(
        "BTC-USD", [("100", 21000.5, 0.3, "BUY", now), ("101", 21000.25, 0.1, "SELL", now + 1)]
    )
    coinbase.ticker("ETH-USD", 1260.01, 1260.05, 2.5, 3.5, ts_ms=now + 2)
    async with Collector(source.stream()) as got:
        await got.until(lambda c: len(c.rows(EventType.TRADE)) == 2)
        await got.until(
            lambda c: {q["symbol"] for q in c.rows(EventType.QUOTE)} >= {"BTC/USD", "ETH/USD"}
        )
        coinbase.l2_update("BTC-USD", bids=[(21000.5, 0.25)], ts_ms=now + 3)
        await got.until(lambda c: any(q["bid"] == 21000.5 for q in c.rows(EventType.QUOTE)))
        await until(lambda: len(coinbase.subscriptions) == 7, what="every subscription")

    trades = got.rows(EventType.TRADE)  # Coinbase sends newest first; ccxt restores the order
    assert [(t["trade_id"], t["price"], t["size"], t["aggressor"]) for t in trades] == [
        ("100", 21000.5, 0.3, Aggressor.BUYER),
        ("101", 21000.25, 0.1, Aggressor.SELLER),
    ]
    assert [t["timestamp"] for t in trades] == [at(now), at(now + 1)]
    quotes = got.rows(EventType.QUOTE)
    eth = next(q for q in quotes if q["symbol"] == "ETH/USD")
    assert (eth["bid"], eth["ask"], eth["bid_size"], eth["ask_size"]) == (
        1260.01,
        1260.05,
        2.5,
        3.5,
    )
    assert eth["timestamp"] == at(now + 2)
    btc = [q for q in quotes if q["symbol"] == "BTC/USD" and q["bid"] != 21000.5]
    assert (btc[0]["bid"], btc[0]["ask"], btc[0]["bid_size"], btc[0]["ask_size"]) == (
        21000.0, 21001.0, 1.5, 0.5,
    )  # fmt: skip
    last = quotes[-1]
    assert (last["bid"], last["bid_size"], last["timestamp"]) == (21000.5, 0.25, at(now + 3))
    # One subscribe per (channel, product), plus the heartbeats channel ccxt does not join.
    subscribed = sorted(t for topics in coinbase.subscriptions for t in topics)
    assert subscribed == sorted(
        ["heartbeats"]
        + [
            f"{ch}:{p}"
            for ch in ("market_trades", "ticker", "level2")
            for p in ("BTC-USD", "ETH-USD")
        ]
    )
    assert {
        "type": "subscribe",
        "product_ids": ["BTC-USD", "ETH-USD"],
        "channel": "heartbeats",
    } in (coinbase.received)
    assert coinbase.rest_requests == []  # markets were seeded
    assert not reasons(got.items)


async def test_heartbeat_messages_become_heartbeats() -> None:
    async with FakeCoinbaseAdvancedTrade(heartbeat_interval_s=0.05) as fake:
        source = CcxtDataSource(config(fake, symbols=("BTC/USD",)))
        async with Collector(source.stream()) as got:
            await got.until(lambda c: heartbeats(c.items) >= 3)
    assert heartbeats(got.items) == len(got.items)


async def test_venue_errors_and_bad_frames_are_rejects_and_the_stream_goes_on(
    coinbase: FakeCoinbaseAdvancedTrade,
) -> None:
    source = CcxtDataSource(config(coinbase, symbols=("BTC/USD",)))
    topic = "market_trades:BTC-USD"
    coinbase.trade("BTC-USD", 100.0, 1.0, trade_id="1")
    coinbase.send_raw('{"type":"error","message":"rate limit exceeded"}', topic)
    coinbase.send_raw('{"channel":"market_trades","events":[{"type":"upd', topic)
    bad_price = {"trade_id": "9", "product_id": "BTC-USD", "price": "abc", "size": "1",
                 "side": "BUY", "time": "2024-04-24T09:56:38.063Z"}  # fmt: skip
    message = {"channel": "market_trades", "events": [{"type": "update", "trades": [bad_price]}]}
    coinbase.send_raw(json.dumps(message), topic)  # ccxt's parse_trade raises on the price
    coinbase.send_raw("not json", topic)
    coinbase.send_raw("{}" + " " * (1 << 20), topic)
    coinbase.trade("BTC-USD", 101.0, 1.0, trade_id="2")
    async with Collector(source.stream()) as got:
        await got.until(lambda c: trade_ids(c.items) == ["1", "2"])
        await got.until(lambda c: sum(reasons(c.items).values()) == 5)
    assert reasons(got.items) == {
        "unknown_message": 1,
        "truncated_frame": 1,
        "wrong_type": 1,
        "malformed_json": 1,
        "oversized_frame": 1,
    }
    error = next(i for i in got.items if getattr(i, "reason", "") == "unknown_message")
    assert "rate limit exceeded" in error.detail  # type: ignore[union-attr]
    assert error.raw.startswith(b'{"type":"error"')  # type: ignore[union-attr]


async def test_disconnect_mid_stream_resubscribes_everything_and_loses_nothing() -> None:
    async with FakeCoinbaseAdvancedTrade(heartbeat_interval_s=None, resend_last=1) as fake:
        source = CcxtDataSource(config(fake, symbols=("BTC/USD",), channels=("trades", "ticker")))
        mux = Multiplexer([source], backoff=Backoff(initial=0.01, maximum=0.05), stale_after_s=5)
        async with MuxRun(mux) as run:
            for i in range(1, 4):
                fake.trade("BTC-USD", 100.0 + i, 1.0, trade_id=str(i))
            await until(lambda: len(set(trade_ids(run.items))) == 3)
            await until(lambda: len(fake.subscriptions) == 3, what="trades, ticker, heartbeats")
            fake.drop_connections()
            await until(lambda: len(fake.subscriptions) == 6, what="a second round of subscribes")
            for i in range(4, 7):
                fake.trade("BTC-USD", 100.0 + i, 1.0, trade_id=str(i))
            await until(lambda: len(set(trade_ids(run.items))) == 6, what="every trade")
        ids = trade_ids(run.items)
        assert ids.count("3") == 2  # the venue's snapshot of the last trade, sent again
        assert mux.stats[source.name].reconnects == 1
        assert sorted(fake.subscriptions[:3]) == sorted(fake.subscriptions[3:])
        assert fake.connections == 2


async def test_a_silent_venue_is_detected_stale_and_reconnected(
    coinbase: FakeCoinbaseAdvancedTrade,
) -> None:
    source = CcxtDataSource(config(coinbase, symbols=("BTC/USD",), close_timeout_s=0.2))
    mux = Multiplexer([source], backoff=Backoff(initial=0.01, maximum=0.05), stale_after_s=0.3)
    async with MuxRun(mux) as run:
        coinbase.trade("BTC-USD", 100.0, 1.0, trade_id="1")
        await until(lambda: trade_ids(run.items) == ["1"])
        coinbase.go_silent()
        await until(lambda: coinbase.connections == 2, what="a new connection")
        coinbase.trade("BTC-USD", 101.0, 1.0, trade_id="2")
        await until(lambda: trade_ids(run.items) == ["1", "2"])
    assert mux.stats[source.name].stale >= 1


async def test_backfill_pages_coinbase_candles(coinbase: FakeCoinbaseAdvancedTrade) -> None:
    t0 = int(dt.datetime(2024, 3, 1, tzinfo=dt.UTC).timestamp())
    candles = [(t0 + 60 * i, 10.0 + i, 11.0 + i, 9.0 + i, 10.5 + i, 1.0 + i) for i in range(800)]
    coinbase.add_candles("BTC-USD", candles)
    async with CcxtHistoricalBars(config(coinbase)) as hist:
        bars = await hist.fetch_bars("BTC/USD", at(t0 * 1000), at((t0 + 60 * 700) * 1000), "1m")
    assert bars.schema == BAR_SCHEMA
    assert bars.height == 700
    assert bars["timestamp"][0] == at(t0 * 1000)
    assert bars["timestamp"][-1] == at((t0 + 60 * 699) * 1000)
    assert bars.row(5) == ("BTC/USD", at((t0 + 300) * 1000), 15.0, 16.0, 14.0, 15.5, 6.0)
    pages = [r.query for r in coinbase.rest_requests]
    assert len(pages) == 3  # 300 per call, as coinbase allows
    assert all(p["granularity"] == "ONE_MINUTE" for p in pages)
    assert all((int(p["end"]) - int(p["start"])) // 60 < 350 for p in pages)
