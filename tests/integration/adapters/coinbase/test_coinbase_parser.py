"""Coinbase parser on documented sample messages and on every kind of bad input."""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import polars as pl
import pytest

import quantlab.adapters.coinbase as coinbase
from quantlab.adapters.coinbase import (
    CoinbaseDataConfig,
    CoinbaseFeedParser,
    parse_candles,
    to_product,
    to_symbol,
)
from quantlab.adapters.coinbase.parser import parse_time_ns
from quantlab.core.enums import Aggressor, EventType
from quantlab.core.errors import ConfigError
from quantlab.core.schemas import BAR_SCHEMA, QUOTE_SCHEMA, TRADE_SCHEMA
from quantlab.ingest.items import (
    MALFORMED_JSON,
    MAX_FRAME_BYTES,
    OVERSIZED_FRAME,
    TRUNCATED_FRAME,
    UNKNOWN_MESSAGE,
    UNKNOWN_SYMBOL,
    WRONG_TYPE,
    Events,
    Heartbeat,
    Reject,
)

T0 = "2023-02-09T20:32:50.714964855Z"
T0_NS = 1_675_974_770_714_964_855

# Documented sample messages (Coinbase Advanced Trade websocket docs; see ECOSYSTEM §6).
TICKER = {
    "channel": "ticker",
    "client_id": "",
    "timestamp": T0,
    "sequence_num": 0,
    "events": [
        {
            "type": "snapshot",
            "tickers": [
                {
                    "type": "ticker",
                    "product_id": "BTC-USD",
                    "price": "21932.98",
                    "volume_24_h": "16038.28",
                    "low_24_h": "21835.29",
                    "high_24_h": "23011.18",
                    "low_52_w": "15460",
                    "high_52_w": "48240",
                    "price_percent_chg_24_h": "-4.15",
                    "best_bid": "21931.98",
                    "best_bid_quantity": "0.5",
                    "best_ask": "21933.98",
                    "best_ask_quantity": "0.7",
                }
            ],
        }
    ],
}
TRADES = {
    "channel": "market_trades",
    "client_id": "",
    "timestamp": T0,
    "sequence_num": 0,
    "events": [
        {
            "type": "snapshot",
            "trades": [
                {
                    "trade_id": "000000000",
                    "product_id": "ETH-USD",
                    "price": "1260.01",
                    "size": "0.3",
                    "side": "BUY",
                    "time": "2019-08-14T20:42:27.265Z",
                },
                {
                    "trade_id": "000000001",
                    "product_id": "ETH-USD",
                    "price": "1260.00",
                    "size": "1.5",
                    "side": "SELL",
                    "time": "2019-08-14T20:42:27.266Z",
                },
            ],
        }
    ],
}
HEARTBEAT = {
    "channel": "heartbeats",
    "client_id": "",
    "timestamp": "2023-06-23T20:31:26.122969572Z",
    "sequence_num": 0,
    "events": [
        {
            "current_time": "2023-06-23 20:31:56.121961769 +0000 UTC m=+91717.525857105",
            "heartbeat_counter": "3049",
        }
    ],
}
ACK = {
    "channel": "subscriptions",
    "client_id": "",
    "timestamp": T0,
    "sequence_num": 0,
    "events": [{"subscriptions": {"ticker": ["BTC-USD"]}}],
}


def level(side: str, price: str, qty: str, t: str = T0) -> dict[str, str]:
    return {"side": side, "event_time": t, "price_level": price, "new_quantity": qty}


def l2(kind: str, updates: list[Any], product: str = "BTC-USD", seq: int = 0) -> dict[str, Any]:
    return {
        "channel": "l2_data",
        "client_id": "",
        "timestamp": T0,
        "sequence_num": seq,
        "events": [{"type": kind, "product_id": product, "updates": updates}],
    }


def enc(msg: Any) -> bytes:
    return json.dumps(msg).encode()


def parser() -> CoinbaseFeedParser:
    return CoinbaseFeedParser(["BTC/USD", "ETH/USD"])


def events(items: list[Any], kind: EventType) -> pl.DataFrame:
    frames = [i.frame for i in items if isinstance(i, Events) and i.kind == kind]
    assert len(frames) <= 1
    return frames[0] if frames else pl.DataFrame()


def rejects(items: list[Any]) -> list[Reject]:
    return [i for i in items if isinstance(i, Reject)]


def test_public_names_are_sorted() -> None:
    assert coinbase.__all__ == sorted(coinbase.__all__)
    for name in coinbase.__all__:
        assert hasattr(coinbase, name)


def test_symbols_map_to_products_and_back() -> None:
    assert to_product("BTC/USD") == "BTC-USD"
    assert to_symbol("ETH-USDT") == "ETH/USDT"
    with pytest.raises(ConfigError, match="BTCUSD"):
        to_product("BTCUSD")


def test_times_keep_nanoseconds() -> None:
    assert parse_time_ns(T0) == T0_NS
    assert parse_time_ns("2019-08-14T20:42:27.265Z") == 1_565_815_347_265_000_000
    assert parse_time_ns("2019-08-14T20:42:27Z") == 1_565_815_347_000_000_000
    assert parse_time_ns("2019-08-14T22:42:27+02:00") == 1_565_815_347_000_000_000
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_time_ns("yesterday")


def test_ticker_becomes_a_quote_and_nothing_else() -> None:
    items = parser().parse(enc(TICKER))
    assert len(items) == 1
    quotes = events(items, EventType.QUOTE)
    assert quotes.schema == QUOTE_SCHEMA
    row = quotes.row(0, named=True)
    assert row["symbol"] == "BTC/USD"
    assert (row["bid"], row["ask"], row["bid_size"], row["ask_size"]) == (
        21931.98,
        21933.98,
        0.5,
        0.7,
    )
    assert quotes["timestamp"].cast(pl.Int64).item() == T0_NS


def test_market_trades_become_trades_with_the_taker_side() -> None:
    trades = events(parser().parse(enc(TRADES)), EventType.TRADE)
    assert trades.schema == TRADE_SCHEMA
    assert trades["symbol"].to_list() == ["ETH/USD", "ETH/USD"]
    assert trades["price"].to_list() == [1260.01, 1260.00]
    assert trades["size"].to_list() == [0.3, 1.5]
    assert trades["aggressor"].to_list() == [Aggressor.BUYER, Aggressor.SELLER]
    assert trades["trade_id"].to_list() == ["000000000", "000000001"]
    assert trades["timestamp"].cast(pl.Int64).to_list() == [
        1_565_815_347_265_000_000,
        1_565_815_347_266_000_000,
    ]


def test_an_unknown_trade_side_is_an_unknown_aggressor() -> None:
    msg = json.loads(json.dumps(TRADES))
    msg["events"][0]["trades"][0]["side"] = "UNKNOWN_ORDER_SIDE"
    trades = events(parser().parse(enc(msg)), EventType.TRADE)
    assert trades["aggressor"].to_list() == [Aggressor.UNKNOWN, Aggressor.SELLER]


def test_heartbeats_and_acks() -> None:
    p = parser()
    assert p.parse(enc(HEARTBEAT)) == [Heartbeat(ts_ns=1_687_552_286_122_969_572)]
    assert p.parse(enc(ACK)) == []


def test_level2_snapshot_then_updates_emit_a_quote_when_the_top_changes() -> None:
    p = parser()
    t1, t2, t3 = (f"2023-02-09T20:33:0{i}.000000001Z" for i in (1, 2, 3))
    snap = l2(
        "snapshot",
        [
            level("bid", "100.00", "1.5"),
            level("bid", "99.50", "2"),
            level("offer", "100.50", "0.25"),
            level("offer", "101.00", "4"),
        ],
    )
    quotes = events(p.parse(enc(snap)), EventType.QUOTE)
    assert quotes.rows() == [("BTC/USD", quotes["timestamp"][0], 100.0, 100.5, 1.5, 0.25)]
    assert quotes["timestamp"].cast(pl.Int64).item() == T0_NS
    # a deeper level changes: no quote
    assert p.parse(enc(l2("update", [level("bid", "99.00", "3", t1)], seq=1))) == []
    # the best bid is removed ("0"), then a new best ask: two runs of event_time, two quotes
    upd = l2(
        "update",
        [level("bid", "100.00", "0", t2), level("offer", "100.25", "1", t3)],
        seq=2,
    )
    quotes = events(p.parse(enc(upd)), EventType.QUOTE)
    assert [r[2:] for r in quotes.rows()] == [(99.5, 100.5, 2.0, 0.25), (99.5, 100.25, 2.0, 1.0)]
    assert quotes["timestamp"].cast(pl.Int64).to_list() == [parse_time_ns(t2), parse_time_ns(t3)]
    # several updates sharing an event_time are one change: one quote
    same = l2(
        "update",
        [level("bid", "99.75", "1", t3), level("bid", "99.80", "1", t3)],
        seq=3,
    )
    quotes = events(p.parse(enc(same)), EventType.QUOTE)
    assert [r[2:] for r in quotes.rows()] == [(99.8, 100.25, 1.0, 1.0)]


def test_level2_quotes_need_both_sides() -> None:
    p = parser()
    assert p.parse(enc(l2("snapshot", [level("bid", "100", "1")]))) == []
    quotes = events(
        p.parse(enc(l2("update", [level("offer", "101", "1")], seq=1))), EventType.QUOTE
    )
    assert quotes.height == 1


def test_a_sequence_gap_drops_the_books_and_asks_for_a_resync() -> None:
    p = parser()
    p.parse(enc(l2("snapshot", [level("bid", "100", "1"), level("offer", "101", "1")], seq=5)))
    assert p.take_resync() == {}
    p.parse(enc({**HEARTBEAT, "sequence_num": 6}))
    assert p.gaps == 0
    # 7 and 8 are lost; 9 is an update to a book that is no longer trusted
    items = p.parse(enc(l2("update", [level("bid", "100.5", "1")], seq=9)))
    assert (p.gaps, p.missed) == (1, 2)
    assert items == []
    assert p.books == {}
    assert p.ignored_updates == 1
    assert p.take_resync() == {
        "ticker": ["BTC-USD", "ETH-USD"],
        "market_trades": ["BTC-USD", "ETH-USD"],
        "level2": ["BTC-USD", "ETH-USD"],
    }
    assert p.take_resync() == {}
    # the new snapshot rebuilds the book
    snap = l2("snapshot", [level("bid", "100.5", "1"), level("offer", "101", "1")], seq=10)
    quotes = events(p.parse(enc(snap)), EventType.QUOTE)
    assert [r[2:] for r in quotes.rows()] == [(100.5, 101.0, 1.0, 1.0)]
    # a replayed (lower) sequence number is not a gap
    p.parse(enc({**HEARTBEAT, "sequence_num": 3}))
    p.parse(enc({**HEARTBEAT, "sequence_num": 11}))
    assert p.gaps == 1


def test_numbers_that_parse_pass_through_for_the_validator() -> None:
    msg = json.loads(json.dumps(TICKER))
    ticker = msg["events"][0]["tickers"][0]
    ticker.update(best_bid="NaN", best_ask="-1", best_bid_quantity="0", best_ask_quantity=0.7)
    row = events(parser().parse(enc(msg)), EventType.QUOTE).row(0, named=True)
    assert math.isnan(row["bid"])
    assert (row["ask"], row["bid_size"]) == (-1.0, 0.0)


# ---- bad input ---------------------------------------------------------------------------------


def one_reject(raw: bytes | str, p: CoinbaseFeedParser | None = None) -> Reject:
    items = (p or parser()).parse(raw)
    assert len(items) == 1, items
    assert isinstance(items[0], Reject), items
    return items[0]


def test_malformed_truncated_and_oversized_frames() -> None:
    assert one_reject(b"{not json").reason == MALFORMED_JSON
    assert one_reject(b"\xff\xfe").reason == MALFORMED_JSON
    assert one_reject(enc(TICKER)[:-7]).reason == TRUNCATED_FRAME
    big = json.dumps({**TICKER, "pad": "x" * MAX_FRAME_BYTES})
    r = one_reject(big)
    assert r.reason == OVERSIZED_FRAME
    assert len(r.raw) == 4096


def test_a_deep_level2_snapshot_may_exceed_the_frame_limit() -> None:
    deep = [level("bid", f"{50_000 - i * 0.01:.2f}", "0.5") for i in range(12_000)]
    raw = enc(l2("snapshot", [*deep, level("offer", "50001.00", "2")]))
    assert MAX_FRAME_BYTES < len(raw) < 2 * MAX_FRAME_BYTES
    p = CoinbaseFeedParser(["BTC/USD"], max_snapshot_bytes=2 * MAX_FRAME_BYTES)
    quotes = events(p.parse(raw), EventType.QUOTE)
    assert [r[2:] for r in quotes.rows()] == [(50_000.0, 50_001.0, 0.5, 2.0)]
    assert len(p.books["BTC-USD"].bids) == 12_000
    # over its own limit, or not a snapshot, it is an oversized frame
    small = CoinbaseFeedParser(["BTC/USD"], max_snapshot_bytes=MAX_FRAME_BYTES)
    assert one_reject(raw, small).reason == OVERSIZED_FRAME
    update = enc(l2("update", deep))
    assert one_reject(update, p).reason == OVERSIZED_FRAME


@pytest.mark.parametrize(
    ("msg", "reason"),
    [
        ([1, 2], WRONG_TYPE),  # not an object
        ("hello", WRONG_TYPE),
        ({"channel": "level3", "sequence_num": 0, "events": []}, UNKNOWN_MESSAGE),
        ({"channel": ["ticker"], "events": []}, UNKNOWN_MESSAGE),
        ({"sequence_num": 0, "events": []}, UNKNOWN_MESSAGE),  # no channel
        ({"type": "error", "message": "Failure to subscribe"}, UNKNOWN_MESSAGE),
        ({**TICKER, "events": 5}, WRONG_TYPE),  # a number where a list is expected
        ({**TICKER, "sequence_num": "7"}, WRONG_TYPE),
        ({**TICKER, "sequence_num": True}, WRONG_TYPE),
    ],
)
def test_a_bad_frame_is_rejected_whole(msg: Any, reason: str) -> None:
    r = one_reject(enc(msg))
    assert r.reason == reason
    assert r.raw == enc(msg)


@pytest.mark.parametrize(
    "msg",
    [
        {**TICKER, "events": [3]},
        {**TICKER, "events": [{"type": "update", "tickers": 3}]},
        {**TICKER, "timestamp": "soon"},
        {**HEARTBEAT, "timestamp": 17},
        {**TRADES, "events": [{"type": "update", "trades": {"a": 1}}]},
    ],
)
def test_a_bad_event_is_rejected_alone(msg: dict[str, Any]) -> None:
    r = one_reject(enc(msg))
    assert r.reason == WRONG_TYPE
    assert r.raw == msgspec.json.encode(msg["events"][0])


def ticker_with(**fields: Any) -> bytes:
    msg = json.loads(json.dumps(TICKER))
    msg["events"][0]["tickers"][0].update(fields)
    return enc(msg)


def trade_with(**fields: Any) -> bytes:
    msg = json.loads(json.dumps(TRADES))
    msg["events"][0]["trades"][0].update(fields)
    return enc(msg)


@pytest.mark.parametrize(
    ("raw", "reason", "detail"),
    [
        (ticker_with(best_bid="abc"), WRONG_TYPE, "best_bid"),
        (ticker_with(best_ask=None), WRONG_TYPE, "best_ask"),
        (ticker_with(best_ask_quantity=[1]), WRONG_TYPE, "best_ask_quantity"),
        (ticker_with(best_bid=True), WRONG_TYPE, "best_bid"),
        (ticker_with(product_id="DOGE-USD"), UNKNOWN_SYMBOL, "DOGE-USD"),
        (ticker_with(product_id=7), WRONG_TYPE, "product_id"),
        (trade_with(price="abc"), WRONG_TYPE, "price"),
        (trade_with(time="2019-13-99"), WRONG_TYPE, "time"),
        (trade_with(side=1), WRONG_TYPE, "side"),
        (trade_with(trade_id=None), WRONG_TYPE, "trade_id"),
        (trade_with(product_id="SOL-USD"), UNKNOWN_SYMBOL, "SOL-USD"),
    ],
)
def test_a_bad_item_is_rejected_and_the_rest_of_the_frame_flows(
    raw: bytes, reason: str, detail: str
) -> None:
    items = parser().parse(raw)
    bad = rejects(items)
    assert [r.reason for r in bad] == [reason]
    assert detail in bad[0].detail
    good = [i for i in items if isinstance(i, Events)]
    if b"market_trades" in raw:  # the second trade of the sample still arrives
        assert good[0].frame["trade_id"].to_list() == ["000000001"]
    else:
        assert good == []


def test_a_numeric_trade_id_becomes_a_string() -> None:
    trades = events(parser().parse(trade_with(trade_id=12345)), EventType.TRADE)
    assert trades["trade_id"].to_list() == ["12345", "000000001"]


@pytest.mark.parametrize(
    "updates",
    [
        [level("bid", "abc", "1")],
        [level("ask", "100", "1")],  # the side is "offer"
        [level("bid", "100", "NaN")],
        [level("bid", "100", "1", t="later")],
        [7],
        5,  # a number where a list is expected
    ],
)
def test_a_bad_level2_update_is_rejected_and_its_book_resynced(updates: Any) -> None:
    p = parser()
    p.parse(enc(l2("snapshot", [level("bid", "99", "1"), level("offer", "101", "1")])))
    p.parse(enc(l2("snapshot", [level("bid", "9", "1")], product="ETH-USD", seq=1)))
    r = one_reject(enc(l2("update", updates, seq=2)), p)
    assert r.reason == WRONG_TYPE
    assert sorted(p.books) == ["ETH-USD"]
    assert p.take_resync() == {"level2": ["BTC-USD"]}


def test_level2_for_an_unknown_product_is_rejected() -> None:
    p = parser()
    r = one_reject(enc(l2("snapshot", [level("bid", "1", "1")], product="DOGE-USD")), p)
    assert r.reason == UNKNOWN_SYMBOL
    assert p.take_resync() == {}


# ---- REST candles ------------------------------------------------------------------------------


def test_candles_become_bars() -> None:
    body = {
        "candles": [
            {
                "start": "1700000060",
                "low": "1",
                "high": "4",
                "open": "2",
                "close": "3",
                "volume": "10.5",
            },
            {"start": 1700000000, "low": 1, "high": 2, "open": 1, "close": 2, "volume": 0},
        ]
    }
    items = parse_candles(json.dumps(body), "BTC/USD")
    bars = events(items, EventType.BAR)
    assert bars.schema == BAR_SCHEMA
    assert bars.row(0)[2:] == (2.0, 4.0, 1.0, 3.0, 10.5)
    assert bars["timestamp"].cast(pl.Int64).to_list() == [
        1_700_000_060 * 10**9,
        1_700_000_000 * 10**9,
    ]


@pytest.mark.parametrize(
    ("candle", "detail"),
    [
        (
            {"start": "soon", "low": "1", "high": "1", "open": "1", "close": "1", "volume": "1"},
            "start",
        ),
        (
            {"start": "1", "low": "abc", "high": "1", "open": "1", "close": "1", "volume": "1"},
            "low",
        ),
        ({"start": "1", "high": "1", "open": "1", "close": "1", "volume": "1"}, "low"),
        ([1, 2, 3], "object"),
    ],
)
def test_a_bad_candle_is_rejected(candle: Any, detail: str) -> None:
    bad = rejects(parse_candles(json.dumps({"candles": [candle]}), "BTC/USD"))
    assert [r.reason for r in bad] == [WRONG_TYPE]
    assert detail in bad[0].detail


@pytest.mark.parametrize(
    ("body", "reason"),
    [("{oops", MALFORMED_JSON), ('{"candles": [', TRUNCATED_FRAME), ('{"candles": 3}', WRONG_TYPE)],
)
def test_an_unreadable_candles_body_is_rejected(body: str, reason: str) -> None:
    assert [r.reason for r in rejects(parse_candles(body, "BTC/USD"))] == [reason]


# ---- config ------------------------------------------------------------------------------------


def test_config_is_frozen_and_rejects_unknown_fields() -> None:
    cfg = CoinbaseDataConfig(symbols=("BTC/USD",))
    assert cfg.products == ("BTC-USD",)
    with pytest.raises(AttributeError):
        cfg.name = "other"  # type: ignore[misc]
    with pytest.raises(msgspec.ValidationError, match="symbls"):
        msgspec.convert({"symbls": ["BTC/USD"]}, CoinbaseDataConfig)
    assert msgspec.convert({"symbols": ["ETH/USD"]}, CoinbaseDataConfig).symbols == ("ETH/USD",)


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"symbols": ("BTCUSD",)}, "symbols"),
        ({"symbols": ("BTC/USD", "BTC/USD")}, "symbols"),
        ({"channels": ("level3",)}, "channels"),
        ({"ws_url": "http://x"}, "ws_url"),
        ({"rest_url": "ftp://x"}, "rest_url"),
        ({"open_timeout_s": 0.0}, "open_timeout_s"),
        ({"max_frame_bytes": 1024}, "max_frame_bytes"),
        ({"rest_retries": -1}, "rest_retries"),
        ({"max_snapshot_bytes": 1024}, "max_snapshot_bytes"),
        ({"max_snapshot_bytes": 64 << 20}, "max_snapshot_bytes"),
    ],
)
def test_bad_config_fails_with_the_key(fields: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        CoinbaseDataConfig(**fields)
    assert info.value.key == key
