"""The pure parts of the ccxt adapter: frame checks, ccxt structures to events, config.

Documented venue samples (from ccxt's own source comments and the venues' docs) go through
ccxt's real parse functions first, so the structures here are the ones ccxt produces.
"""

from __future__ import annotations

import json
import math
import types
from typing import Any

import ccxt.pro
import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import quantlab.adapters.ccxt as ccxt_adapter
from quantlab.adapters.ccxt import (
    CcxtDataConfig,
    CcxtDataSource,
    CcxtMarket,
    check_frame,
    handler_error,
    parse_ohlcv,
    parse_order_book,
    parse_ticker,
    parse_trades,
    transport_error,
)
from quantlab.adapters.ccxt.exchange import rewrite_urls
from quantlab.core.enums import Aggressor, EventType
from quantlab.core.errors import ConfigError
from quantlab.core.schemas import BAR_SCHEMA, QUOTE_SCHEMA, TRADE_SCHEMA
from quantlab.ingest.items import MAX_KEPT_RAW, Events, Reject

NS = 1_000_000
SYMBOLS = frozenset({"ETH/BTC", "BTC/USD"})
RECEIVED = 1_700_000_000_000 * NS


def events(items: list[Any], kind: EventType) -> list[dict[str, Any]]:
    return [
        row for i in items if isinstance(i, Events) and i.kind is kind for row in i.frame.to_dicts()
    ]


def reasons(items: list[Any]) -> list[str]:
    return [i.reason for i in items if isinstance(i, Reject)]


@pytest.fixture
async def binance() -> Any:
    ex = ccxt.pro.binance()
    ex.set_markets([
        ex.safe_market_structure({
            "id": "ETHBTC", "lowercaseId": "ethbtc", "symbol": "ETH/BTC", "base": "ETH",
            "quote": "BTC", "baseId": "ETH", "quoteId": "BTC", "type": "spot", "spot": True,
            "active": True,
        })
    ])  # fmt: skip
    yield ex
    await ex.close()


@pytest.fixture
async def coinbase() -> Any:
    ex = ccxt.pro.coinbase()
    ex.set_markets([
        ex.safe_market_structure({
            "id": "BTC-USD", "symbol": "BTC/USD", "base": "BTC", "quote": "USD", "baseId": "BTC",
            "quoteId": "USD", "type": "spot", "spot": True, "active": True,
        })
    ])  # fmt: skip
    yield ex
    await ex.close()


# --- documented samples through ccxt's parsers ---------------------------------------------


async def test_binance_trade_sample(binance: Any) -> None:
    raw = {
        "e": "trade", "E": 1579481530912, "s": "ETHBTC", "t": 158410082, "p": "0.01914100",
        "q": "0.00700000", "b": 586187049, "a": 586186710, "T": 1579481530910, "m": False,
        "M": True,
    }  # fmt: skip
    trade = binance.parse_ws_trade(raw, binance.market("ETH/BTC"))
    items = parse_trades([trade], SYMBOLS)
    assert len(items) == 1
    assert isinstance(items[0], Events)
    assert items[0].frame.schema == TRADE_SCHEMA
    (row,) = events(items, EventType.TRADE)
    assert row["symbol"] == "ETH/BTC"
    assert row["price"] == 0.019141
    assert row["size"] == 0.007
    assert row["aggressor"] == Aggressor.BUYER  # m=false: the buyer took liquidity
    assert row["trade_id"] == "158410082"
    assert row["timestamp"].timestamp() == 1579481530.910
    maker = binance.parse_ws_trade({**raw, "m": True}, binance.market("ETH/BTC"))
    assert (
        events(parse_trades([maker], SYMBOLS), EventType.TRADE)[0]["aggressor"] == Aggressor.SELLER
    )


async def test_binance_ticker_sample(binance: Any) -> None:
    raw = {
        "e": "24hrTicker", "E": 1579485598569, "s": "ETHBTC", "p": "-0.00004000",
        "P": "-0.209", "w": "0.01920495", "x": "0.01916500", "c": "0.01912500", "Q": "0.10400000",
        "b": "0.01912200", "B": "4.10400000", "a": "0.01912500", "A": "0.00100000",
        "o": "0.01916500", "h": "0.01956500", "l": "0.01887700", "v": "173518.11900000",
        "q": "3332.40703994", "O": 1579399197842, "C": 1579485597842, "F": 158251292,
        "L": 158414513, "n": 163222,
    }  # fmt: skip
    ticker = binance.parse_ws_ticker(raw, "spot")
    items = parse_ticker(ticker, SYMBOLS, received_ns=RECEIVED)
    (row,) = events(items, EventType.QUOTE)
    assert items[0].frame.schema == QUOTE_SCHEMA  # type: ignore[union-attr]
    assert (row["bid"], row["ask"], row["bid_size"], row["ask_size"]) == (
        0.019122,
        0.019125,
        4.104,
        0.001,
    )
    assert row["timestamp"].timestamp() == 1579485597.842  # ccxt uses C, the window's close


async def test_binance_depth_snapshot_sample(binance: Any) -> None:
    raw = {
        "lastUpdateId": 1027024,
        "bids": [["4.00000000", "431.00000000"]],
        "asks": [["4.00000200", "12.00000000"]],
    }
    book = binance.parse_order_book(raw, "ETH/BTC")
    (row,) = events(parse_order_book(book, SYMBOLS, received_ns=RECEIVED), EventType.QUOTE)
    assert (row["bid"], row["ask"], row["bid_size"], row["ask_size"]) == (
        4.0,
        4.000002,
        431.0,
        12.0,
    )
    assert row["timestamp"].timestamp() * 1e9 == pytest.approx(RECEIVED)  # snapshots carry no time


async def test_binance_kline_sample(binance: Any) -> None:
    raw = [1499040000000, "0.01634790", "0.80000000", "0.01575800", "0.01577100", "148976.11427815",
           1499644799999, "2434.19055334", 308, "1756.87402397", "28.46694368", "0"]  # fmt: skip
    items = parse_ohlcv([binance.parse_ohlcv(raw)], "ETH/BTC")
    assert items[0].frame.schema == BAR_SCHEMA  # type: ignore[union-attr]
    (row,) = events(items, EventType.BAR)
    assert (row["open"], row["high"], row["low"], row["close"], row["volume"]) == (
        0.0163479, 0.8, 0.015758, 0.015771, 148976.11427815,
    )  # fmt: skip
    assert row["timestamp"].timestamp() == 1499040000


async def test_coinbase_ticker_and_trade_samples(coinbase: Any) -> None:
    ticker = coinbase.parse_ws_ticker({
        "type": "ticker", "product_id": "BTC-USD", "price": "21932.98", "volume_24_h": "16038.28",
        "low_24_h": "21835.29", "high_24_h": "23011.18", "low_52_w": "15460", "high_52_w": "48240",
        "price_percent_chg_24_h": "-4.15", "best_bid": "21931.98", "best_bid_quantity": "0.5",
        "best_ask": "21933.98", "best_ask_quantity": "0.7",
    })  # fmt: skip
    ticker["timestamp"] = 1675974637167  # ccxt stamps tickers with the message's timestamp
    (quote,) = events(parse_ticker(ticker, SYMBOLS, received_ns=RECEIVED), EventType.QUOTE)
    assert (quote["bid"], quote["ask"], quote["bid_size"], quote["ask_size"]) == (
        21931.98,
        21933.98,
        0.5,
        0.7,
    )
    trade = coinbase.parse_trade({
        "trade_id": "000000000", "product_id": "BTC-USD", "price": "1260.01", "size": "0.3",
        "side": "SELL", "time": "2019-08-14T20:42:27.265Z",
    })  # fmt: skip
    (row,) = events(parse_trades([trade], SYMBOLS), EventType.TRADE)
    assert (row["price"], row["size"], row["aggressor"], row["trade_id"]) == (
        1260.01,
        0.3,
        Aggressor.SELLER,
        "000000000",
    )
    assert row["timestamp"].isoformat() == "2019-08-14T20:42:27.265000+00:00"


# --- bad ccxt structures --------------------------------------------------------------------


def trade(**overrides: Any) -> dict[str, Any]:
    base = {"symbol": "BTC/USD", "timestamp": 1_700_000_000_000, "price": 100.0, "amount": 1.0,
            "side": "buy", "id": "7", "info": {"raw": True}}  # fmt: skip
    return {**base, **overrides}


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"price": None}, "wrong_type"),  # ccxt makes an unparseable price None
        ({"amount": "abc"}, "wrong_type"),
        ({"price": True}, "wrong_type"),
        ({"timestamp": None}, "wrong_type"),
        ({"timestamp": "2024-01-01"}, "wrong_type"),
        ({"timestamp": float("nan")}, "wrong_type"),
        ({"symbol": None}, "wrong_type"),
        ({"symbol": "DOGE/USD"}, "unknown_symbol"),
    ],
)
def test_bad_trades_are_rejected_and_the_rest_kept(overrides: dict[str, Any], reason: str) -> None:
    items = parse_trades([trade(id="1"), trade(**overrides), trade(id="3")], SYMBOLS)
    assert [r["trade_id"] for r in events(items, EventType.TRADE)] == ["1", "3"]
    assert reasons(items) == [reason]
    bad = next(i for i in items if isinstance(i, Reject))
    assert json.loads(bad.raw) == {"raw": True}  # the venue's message, from ccxt's "info"


def test_trade_shapes() -> None:
    assert reasons(parse_trades({"not": "a list"}, SYMBOLS)) == ["wrong_type"]
    assert reasons(parse_trades(["nope"], SYMBOLS)) == ["wrong_type"]
    assert parse_trades([], SYMBOLS) == []
    (row,) = events(parse_trades([trade(side=None, id=None)], SYMBOLS), EventType.TRADE)
    assert (row["aggressor"], row["trade_id"]) == (Aggressor.UNKNOWN, "")


def test_suspicious_numbers_pass_through_for_the_quality_rules() -> None:
    rows = events(
        parse_trades(
            [trade(price=float("nan")), trade(price=-1.0), trade(amount=0), trade(price="5")],
            SYMBOLS,
        ),
        EventType.TRADE,
    )
    assert math.isnan(rows[0]["price"])
    assert rows[1]["price"] == -1.0
    assert rows[2]["size"] == 0.0
    assert rows[3]["price"] == 5.0


def test_ticker_cases() -> None:
    good = {
        "symbol": "BTC/USD",
        "timestamp": None,
        "bid": 1.0,
        "ask": 2.0,
        "bidVolume": None,
        "askVolume": 3,
    }
    (row,) = events(parse_ticker(good, SYMBOLS, received_ns=RECEIVED), EventType.QUOTE)
    assert (row["bid_size"], row["ask_size"]) == (0.0, 3.0)
    assert row["timestamp"].timestamp() * 1e9 == pytest.approx(RECEIVED)
    assert reasons(parse_ticker({**good, "bid": None}, SYMBOLS, received_ns=RECEIVED)) == [
        "wrong_type"
    ]
    assert reasons(parse_ticker({**good, "askVolume": "x"}, SYMBOLS, received_ns=RECEIVED)) == [
        "wrong_type"
    ]
    assert reasons(parse_ticker({**good, "symbol": "X/Y"}, SYMBOLS, received_ns=RECEIVED)) == [
        "unknown_symbol"
    ]
    assert reasons(parse_ticker(None, SYMBOLS, received_ns=RECEIVED)) == ["wrong_type"]


def test_order_book_cases() -> None:
    book = {
        "bids": [[10.0, 1.0], [9.0, 2.0]],
        "asks": [[11.0, 3.0]],
        "timestamp": 1_700_000_000_001,
    }
    (row,) = events(
        parse_order_book(book, SYMBOLS, symbol="BTC/USD", received_ns=RECEIVED), EventType.QUOTE
    )
    assert (row["symbol"], row["bid"], row["ask"], row["bid_size"], row["ask_size"]) == (
        "BTC/USD",
        10.0,
        11.0,
        1.0,
        3.0,
    )
    assert row["timestamp"].timestamp() == 1_700_000_000.001
    assert (
        parse_order_book({**book, "asks": []}, SYMBOLS, symbol="BTC/USD", received_ns=RECEIVED)
        == []
    )
    for bad in (
        {**book, "bids": None},
        {**book, "bids": [["x", 1.0]]},
        {**book, "asks": [[1.0]]},
        [1, 2],
    ):
        assert reasons(parse_order_book(bad, SYMBOLS, symbol="BTC/USD", received_ns=RECEIVED)) == [
            "wrong_type"
        ]
    assert reasons(parse_order_book(book, SYMBOLS, symbol="X/Y", received_ns=RECEIVED)) == [
        "unknown_symbol"
    ]
    assert reasons(
        parse_order_book({**book, "symbol": "X/Y"}, SYMBOLS, symbol="BTC/USD", received_ns=RECEIVED)
    ) == ["unknown_symbol"]


def test_ohlcv_cases() -> None:
    rows = [
        [60_000, 1, 2, 0.5, 1.5, 10],
        [120_000, 1, 2, 0.5, "x", 10],
        [180_000, 1],
        "nope",
        [None, 1, 1, 1, 1, 1],
    ]
    items = parse_ohlcv(rows, "BTC/USD")
    assert len(events(items, EventType.BAR)) == 1
    assert reasons(items) == ["wrong_type"] * 4
    assert reasons(parse_ohlcv(None, "BTC/USD")) == ["wrong_type"]


# --- raw frames and ccxt's exceptions -------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("x" * ((1 << 20) + 1), "oversized_frame"),
        (b"x" * ((1 << 20) + 1), "oversized_frame"),
        (b"\xff\xfe{}", "malformed_json"),
        ("hello", "malformed_json"),
        ("", "truncated_frame"),
        ("{", "truncated_frame"),
        ('"unterminated', "truncated_frame"),
        ("42", "wrong_type"),
        ("null", "wrong_type"),
        (' {"a": 1}', "unknown_message"),
        ('{"a": 1}', None),
        (b'[{"a": 1}]', None),
        ('{"broken": ', None),  # ccxt decodes it; its error comes back through handler_error
    ],
)
def test_check_frame(frame: str | bytes, reason: str | None) -> None:
    rejected = check_frame(frame)
    assert (rejected.reason if rejected else None) == reason
    if rejected is not None:
        assert len(rejected.raw) <= MAX_KEPT_RAW


def test_check_frame_options() -> None:
    assert check_frame("hello", json_only=False) is None
    assert check_frame("x" * 20, max_bytes=10).reason == "oversized_frame"  # type: ignore[union-attr]


def _error(decode: Any, text: str) -> Exception:
    try:
        decode(text)
    except Exception as exc:
        return exc
    raise AssertionError(f"{text!r} decoded")


@pytest.mark.parametrize("decode", [orjson.loads, json.loads], ids=["orjson", "stdlib"])
def test_handler_error_tells_decoder_errors_apart(decode: Any) -> None:
    truncated = '{"e":"trade","s":"BTC'
    assert handler_error(_error(decode, truncated), truncated).reason == "truncated_frame"
    malformed = '{"e":"trade","s":}'
    assert handler_error(_error(decode, malformed), malformed).reason == "malformed_json"


def test_handler_error_reasons() -> None:
    raw = b"\xff{" + b"x" * 10_000
    assert handler_error(_error(bytes.decode, raw), raw).reason == "malformed_json"  # type: ignore[arg-type]
    assert handler_error(TypeError("can only concatenate str"), "[1]").reason == "wrong_type"
    assert handler_error(ValueError("invalid literal for int()"), "{}").reason == "wrong_type"
    rejected = handler_error(ccxt.pro.ExchangeError("rate limit exceeded"), '{"type":"error"}')
    assert rejected.reason == "unknown_message"
    assert "rate limit exceeded" in rejected.detail
    assert rejected.raw == b'{"type":"error"}'
    assert len(handler_error(TypeError("x"), raw).raw) == MAX_KEPT_RAW


def test_transport_error() -> None:
    too_big = types.SimpleNamespace(code=1009)
    assert transport_error(too_big).reason == "oversized_frame"  # type: ignore[union-attr]
    assert (
        transport_error(Exception("Decompressed message exceeds size limit 10485760")) is not None
    )
    assert transport_error(types.SimpleNamespace(code=1006)) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "symbol",
                    "timestamp",
                    "price",
                    "amount",
                    "bid",
                    "ask",
                    "bids",
                    "asks",
                    "side",
                    "id",
                    "x",
                ]
            ),
            inner,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(value=json_values)
def test_parsers_never_raise(value: Any) -> None:
    for items in (
        parse_trades(value, SYMBOLS),
        parse_trades([value], SYMBOLS),
        parse_ticker(value, SYMBOLS, received_ns=RECEIVED),
        parse_order_book(value, SYMBOLS, symbol="BTC/USD", received_ns=RECEIVED),
        parse_ohlcv(value, "BTC/USD"),
        parse_ohlcv([value], "BTC/USD"),
    ):
        assert all(isinstance(i, Events | Reject) for i in items)


@settings(max_examples=200, deadline=None)
@given(frame=st.text(max_size=40) | st.binary(max_size=40))
def test_frame_checks_never_raise(frame: str | bytes) -> None:
    check_frame(frame)
    handler_error(ValueError("x"), frame)
    handler_error(json.JSONDecodeError("x", "doc", 0), frame)


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"exchange": "Binance!"}, "ccxt.exchange"),
        ({"symbols": ()}, "ccxt.symbols"),
        ({"symbols": ("BTCUSDT",)}, "ccxt.symbols"),
        ({"symbols": ("BTC/USDT", "BTC/USDT")}, "ccxt.symbols"),
        ({"channels": ("trades", "bars")}, "ccxt.channels"),
        ({"ws_url": "http://x"}, "ccxt.ws_url"),
        ({"rest_url": "ftp://x"}, "ccxt.rest_url"),
        ({"timeout_s": 0}, "ccxt.timeout_s"),
        ({"max_frame_bytes": 0}, "ccxt.max_frame_bytes"),
        ({"order_book_limit": 0}, "ccxt.order_book_limit"),
        ({"markets": (CcxtMarket(symbol="BTC/USDT", id=""),)}, "ccxt.markets"),
    ],
)
def test_config_errors_name_the_key(overrides: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        CcxtDataConfig(**{"exchange": "binance", "symbols": ("BTC/USDT",), **overrides})
    assert info.value.key == key


def test_config_refuses_unknown_fields_and_names_the_source() -> None:
    with pytest.raises(msgspec.ValidationError, match="sybmols"):
        msgspec.convert(
            {"exchange": "binance", "symbols": ["BTC/USDT"], "sybmols": []}, CcxtDataConfig
        )
    config = msgspec.convert({"exchange": "coinbase", "symbols": ["BTC/USD"]}, CcxtDataConfig)
    assert config.source_name == "ccxt-coinbase"
    assert CcxtDataConfig(exchange="kraken", symbols=("BTC/USD",), name="k").source_name == "k"


def test_source_checks_the_exchange_and_hides_credentials() -> None:
    with pytest.raises(ConfigError, match="nosuchvenue"):
        CcxtDataSource(CcxtDataConfig(exchange="nosuchvenue", symbols=("BTC/USD",)))
    with pytest.raises(ConfigError, match="apikey"):
        CcxtDataSource(
            CcxtDataConfig(exchange="binance", symbols=("BTC/USDT",)), credentials={"apikey": "k"}
        )
    source = CcxtDataSource(
        CcxtDataConfig(exchange="binance", symbols=("BTC/USDT",)),
        credentials={"apiKey": "k3y", "secret": "s3cret"},
    )
    assert "k3y" not in repr(source)
    assert "s3cret" not in repr(vars(source))


def test_rewrite_urls_keeps_paths() -> None:
    urls = ccxt.pro.binance().urls["api"]
    rewritten = rewrite_urls(urls, rest="http://127.0.0.1:9", ws="ws://127.0.0.1:9")
    assert rewritten["ws"]["spot"] == "ws://127.0.0.1:9/ws"
    assert rewritten["public"] == "http://127.0.0.1:9/api/v3"
    flat = json.dumps(rewritten)
    assert "binance.com" not in flat
    assert "binance.vision" not in flat


def test_public_names_are_sorted() -> None:
    names = list(ccxt_adapter.__all__)
    assert names == sorted(names, key=lambda n: (not n.isupper(), not n[:1].isupper(), n))
    assert all(hasattr(ccxt_adapter, n) for n in names)


def test_invalid_utf8_inside_a_json_string_is_malformed_not_a_crash() -> None:
    # Found by the property above: msgspec raises UnicodeDecodeError, not DecodeError, here.
    item = handler_error(json.JSONDecodeError("x", "doc", 0), b'"\x80"')
    assert item.reason == "malformed_json"
