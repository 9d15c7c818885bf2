"""AlpacaParser on Alpaca's documented messages and on every kind of bad input."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import msgpack
import msgspec
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import quantlab.adapters.alpaca as alpaca_adapter
from quantlab.adapters.alpaca import AlpacaControl, AlpacaParser
from quantlab.adapters.alpaca.parser import rfc3339_ns, timestamp_ns
from quantlab.core.enums import Aggressor, EventType
from quantlab.core.schemas import SCHEMAS
from quantlab.ingest.items import (
    MALFORMED_JSON,
    MALFORMED_MSGPACK,
    MAX_FRAME_BYTES,
    OVERSIZED_FRAME,
    TRUNCATED_FRAME,
    UNKNOWN_MESSAGE,
    UNKNOWN_SYMBOL,
    WRONG_TYPE,
    Events,
    Reject,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:websockets.legacy is deprecated:DeprecationWarning"  # alpaca-py 0.44 imports it
)

T_NS = 1_613_998_304_208_123_456  # 2021-02-22T12:51:44.208123456Z
TS = msgpack.Timestamp.from_unix_nano(T_NS)

# Alpaca's documented samples (docs.alpaca.markets, "Real-time stock / crypto data"),
# with msgpack Timestamps as the msgpack stream sends them.
STOCK_TRADE = {
    "T": "t", "S": "AAPL", "i": 96921, "x": "D", "p": 126.55, "s": 1, "t": TS,
    "c": ["@", "I"], "z": "C",
}  # fmt: skip
STOCK_QUOTE = {
    "T": "q", "S": "AAPL", "bx": "U", "bp": 87.66, "bs": 1, "ax": "Q", "ap": 87.68, "as": 4,
    "t": TS, "c": ["R"], "z": "C",
}  # fmt: skip
STOCK_BAR = {
    "T": "b", "S": "AAPL", "o": 388.985, "h": 389.13, "l": 388.975, "c": 389.12, "v": 49378,
    "t": TS, "n": 461, "vw": 389.062639,
}  # fmt: skip
CRYPTO_TRADE = {
    "T": "t", "S": "BTC/USD", "p": 61950.7, "s": 0.0012, "t": TS, "i": 3447222699, "tks": "S",
}  # fmt: skip
CRYPTO_QUOTE = {
    "T": "q", "S": "BTC/USD", "bp": 61940.1, "bs": 0.2, "ap": 61951.9, "as": 0.35, "t": TS,
}  # fmt: skip


def frame(*messages: object) -> bytes:
    raw: bytes = msgpack.packb(list(messages))
    return raw


def events(items: list[Any], kind: EventType) -> pl.DataFrame:
    frames = [i.frame for i in items if isinstance(i, Events) and i.kind == kind]
    assert len(frames) == 1, items
    assert frames[0].schema == SCHEMAS[kind]
    return frames[0]


def rejects(items: list[Any]) -> list[str]:
    return [i.reason for i in items if isinstance(i, Reject)]


@pytest.fixture
def parser() -> AlpacaParser:
    return AlpacaParser(["AAPL", "BTC/USD"])


def test_public_names_are_sorted() -> None:
    assert alpaca_adapter.__all__ == sorted(alpaca_adapter.__all__)
    assert all(hasattr(alpaca_adapter, name) for name in alpaca_adapter.__all__)


def test_stock_trade_quote_bar_in_one_frame(parser: AlpacaParser) -> None:
    items = parser.parse_frame(frame(STOCK_TRADE, STOCK_QUOTE, STOCK_BAR))
    assert rejects(items) == []
    trade = events(items, EventType.TRADE).row(0, named=True)
    assert trade["symbol"] == "AAPL"
    assert trade["price"] == 126.55
    assert trade["size"] == 1.0
    assert trade["trade_id"] == "96921"
    assert trade["aggressor"] == Aggressor.UNKNOWN  # stock trades carry no taker side
    quote = events(items, EventType.QUOTE).row(0, named=True)
    assert (quote["bid"], quote["ask"], quote["bid_size"], quote["ask_size"]) == (
        87.66, 87.68, 1.0, 4.0,
    )  # fmt: skip
    bar = events(items, EventType.BAR).row(0, named=True)
    assert (bar["open"], bar["high"], bar["low"], bar["close"], bar["volume"]) == (
        388.985, 389.13, 388.975, 389.12, 49378.0,
    )  # fmt: skip
    ts = events(items, EventType.TRADE)["timestamp"].cast(pl.Int64)[0]
    assert ts == T_NS  # nanoseconds survive the msgpack Timestamp


def test_crypto_trades_carry_the_taker_side(parser: AlpacaParser) -> None:
    buy = {**CRYPTO_TRADE, "tks": "B", "i": 1}
    odd = {**CRYPTO_TRADE, "tks": ["?"], "i": 2}
    items = parser.parse_frame(frame(CRYPTO_TRADE, buy, odd, CRYPTO_QUOTE))
    trades = events(items, EventType.TRADE)
    assert trades["symbol"].to_list() == ["BTC/USD"] * 3
    assert trades["aggressor"].to_list() == [Aggressor.SELLER, Aggressor.BUYER, Aggressor.UNKNOWN]
    assert trades["trade_id"].to_list() == ["3447222699", "1", "2"]
    assert events(items, EventType.QUOTE)["ask"].to_list() == [61951.9]


def test_json_text_frames_with_rfc3339_timestamps(parser: AlpacaParser) -> None:
    text = (
        '[{"T":"t","S":"AAPL","i":96921,"x":"D","p":126.55,"s":1,'
        '"t":"2021-02-22T15:51:44.208123456Z","c":["@","I"],"z":"C"}]'
    )
    trades = events(parser.parse_frame(text), EventType.TRADE)
    assert trades["timestamp"].cast(pl.Int64)[0] == rfc3339_ns("2021-02-22T15:51:44.208123456Z")
    assert trades["timestamp"][0] == dt.datetime(2021, 2, 22, 15, 51, 44, 208123, tzinfo=dt.UTC)


def test_control_messages(parser: AlpacaParser) -> None:
    connected = parser.parse_frame(frame({"T": "success", "msg": "connected"}))
    assert connected == [AlpacaControl("success", msg="connected")]
    failed = parser.parse_frame(frame({"T": "error", "code": 402, "msg": "auth failed"}))
    assert failed == [AlpacaControl("error", msg="auth failed", code=402)]
    ack = {"T": "subscription", "trades": ["AAPL"], "quotes": [], "bars": ["*"]}
    (sub,) = parser.parse_frame(frame(ack))
    assert isinstance(sub, AlpacaControl)
    assert sub.kind == "subscription"
    assert sub.channels == {"trades": ["AAPL"], "quotes": [], "bars": ["*"]}


def test_odd_numbers_pass_through_for_the_quality_rules(parser: AlpacaParser) -> None:
    odd = [
        {**STOCK_TRADE, "p": math.nan}, {**STOCK_TRADE, "p": math.inf}, {**STOCK_TRADE, "p": 0},
        {**STOCK_TRADE, "p": -1.5}, {**STOCK_TRADE, "p": "126.5"}, {**STOCK_TRADE, "s": "NaN"},
    ]  # fmt: skip
    items = parser.parse_frame(frame(*odd))
    assert rejects(items) == []
    prices = events(items, EventType.TRADE)["price"].to_list()
    assert math.isnan(prices[0])
    assert prices[1:] == [math.inf, 0.0, -1.5, 126.5, 126.55]


def test_trade_without_an_id(parser: AlpacaParser) -> None:
    trade = {k: v for k, v in STOCK_TRADE.items() if k != "i"}
    assert events(parser.parse_frame(frame(trade)), EventType.TRADE)["trade_id"][0] == ""


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(b"\xc1", MALFORMED_MSGPACK, id="reserved-byte"),
        pytest.param(frame(STOCK_TRADE) + b"\x00", MALFORMED_MSGPACK, id="trailing-bytes"),
        pytest.param(b"\x91\x81\x01\x02", MALFORMED_MSGPACK, id="int-map-key"),
        pytest.param(b"\x91\x81\xa1T\xc4\x05\xff", TRUNCATED_FRAME, id="cut-bin"),
        pytest.param(b"\x93\x01", TRUNCATED_FRAME, id="cut-array"),
        pytest.param(frame(STOCK_TRADE)[:-5], TRUNCATED_FRAME, id="cut-message"),
        pytest.param(b"\x92", TRUNCATED_FRAME, id="empty-array-header"),
        pytest.param(b"\xa3\xff\xfe\xfd", MALFORMED_MSGPACK, id="invalid-utf8"),
        pytest.param('[{"T":"t",', TRUNCATED_FRAME, id="cut-json"),
        pytest.param("not json", MALFORMED_JSON, id="text-not-json"),
        pytest.param(msgpack.packb(STOCK_TRADE), WRONG_TYPE, id="map-not-array"),
        pytest.param(msgpack.packb("hello"), WRONG_TYPE, id="string-not-array"),
    ],
)
def test_undecodable_frames_are_rejected(parser: AlpacaParser, raw: bytes, reason: str) -> None:
    items = parser.parse_frame(raw)
    assert rejects(items) == [reason], items
    assert isinstance(items[0], Reject)
    assert items[0].raw == (raw.encode() if isinstance(raw, str) else raw)


def test_oversized_frames_are_rejected_before_decoding(parser: AlpacaParser) -> None:
    big = frame(*[STOCK_TRADE] * (MAX_FRAME_BYTES // 50))
    assert len(big) > MAX_FRAME_BYTES
    (item,) = parser.parse_frame(big)
    assert isinstance(item, Reject)
    assert item.reason == OVERSIZED_FRAME
    assert len(item.raw) == 4096  # only the head is kept for the dead letters


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        pytest.param({**STOCK_TRADE, "S": "MSFT"}, UNKNOWN_SYMBOL, id="unsubscribed"),
        pytest.param({**CRYPTO_TRADE, "S": "BTCUSD"}, UNKNOWN_SYMBOL, id="old-crypto-name"),
        pytest.param({**STOCK_TRADE, "T": "zz"}, UNKNOWN_MESSAGE, id="unknown-T"),
        pytest.param({**STOCK_BAR, "T": "d"}, UNKNOWN_MESSAGE, id="daily-bar-not-subscribed"),
        pytest.param({"S": "AAPL", "p": 1.0}, UNKNOWN_MESSAGE, id="no-T"),
        pytest.param({**STOCK_TRADE, "T": ["t"]}, UNKNOWN_MESSAGE, id="T-is-a-list"),
        pytest.param([1, 2, 3], WRONG_TYPE, id="message-is-a-list"),
        pytest.param("t", WRONG_TYPE, id="message-is-a-string"),
        pytest.param({**STOCK_TRADE, "S": 7}, WRONG_TYPE, id="symbol-not-a-string"),
        pytest.param({**STOCK_TRADE, "p": "abc"}, WRONG_TYPE, id="price-not-a-number"),
        pytest.param({**STOCK_TRADE, "s": None}, WRONG_TYPE, id="size-null"),
        pytest.param({**STOCK_TRADE, "p": True}, WRONG_TYPE, id="price-bool"),
        pytest.param({**STOCK_QUOTE, "bp": [87.66]}, WRONG_TYPE, id="bid-a-list"),
        pytest.param({k: v for k, v in STOCK_BAR.items() if k != "c"}, WRONG_TYPE, id="bar-no-c"),
        pytest.param({k: v for k, v in STOCK_TRADE.items() if k != "t"}, WRONG_TYPE, id="no-t"),
        pytest.param({**STOCK_TRADE, "t": 1613998304}, WRONG_TYPE, id="t-int"),
        pytest.param({**STOCK_TRADE, "t": "yesterday"}, WRONG_TYPE, id="t-not-rfc3339"),
        pytest.param({**STOCK_TRADE, "t": "2021-02-30T10:00:00Z"}, WRONG_TYPE, id="t-feb-30"),
        pytest.param({**STOCK_TRADE, "t": msgpack.ExtType(5, b"x")}, WRONG_TYPE, id="t-ext"),
    ],
)
def test_bad_messages_are_rejected_and_the_rest_of_the_frame_kept(
    parser: AlpacaParser, message: object, reason: str
) -> None:
    items = parser.parse_frame(frame(STOCK_QUOTE, message, STOCK_TRADE))
    assert rejects(items) == [reason], items
    assert events(items, EventType.TRADE)["trade_id"].to_list() == ["96921"]
    assert events(items, EventType.QUOTE).height == 1


def test_timestamps() -> None:
    assert rfc3339_ns("1970-01-01T00:00:00Z") == 0
    assert rfc3339_ns("2024-03-12T10:27:48.858228144Z") == 1_710_239_268_858_228_144
    assert rfc3339_ns("2024-03-12T06:27:48.5-04:00") == 1_710_239_268_500_000_000
    assert timestamp_ns(TS) == T_NS
    aware = dt.datetime(2021, 2, 22, 12, 51, 44, 208123, tzinfo=dt.UTC)
    assert timestamp_ns(aware) == T_NS // 1000 * 1000
    for bad in ("2024-03-12", "2024-03-12T10:27:48", "2024-03-12T10:27:48.1234567891Z"):
        with pytest.raises(ValueError, match="RFC 3339"):
            rfc3339_ns(bad)
    with pytest.raises(ValueError, match="msgpack Timestamp"):
        timestamp_ns(dt.datetime(2024, 1, 1))  # naive


def test_alpaca_py_models(parser: AlpacaParser) -> None:
    from alpaca.data.models import Bar, Quote, Trade

    wire = {**STOCK_TRADE, "t": TS.to_datetime()}
    models = [
        ("t", Trade("AAPL", wire)),
        ("q", Quote("AAPL", {**STOCK_QUOTE, "t": TS.to_datetime()})),
        ("b", Bar("AAPL", {**STOCK_BAR, "t": TS.to_datetime()})),
        ("t", Trade("MSFT", {**wire, "S": "MSFT"})),
        ("x", Trade("AAPL", wire)),
        ("q", Trade("AAPL", wire)),  # a trade where a quote was expected
    ]
    items = parser.parse_models(models)
    assert sorted(rejects(items)) == [UNKNOWN_MESSAGE, UNKNOWN_SYMBOL, WRONG_TYPE]
    trade = events(items, EventType.TRADE).row(0, named=True)
    assert (trade["price"], trade["size"], trade["trade_id"]) == (126.55, 1.0, "96921")
    # alpaca-py's datetimes stop at microseconds
    assert events(items, EventType.TRADE)["timestamp"].cast(pl.Int64)[0] == T_NS // 1000 * 1000
    assert events(items, EventType.QUOTE)["bid"].to_list() == [87.66]
    assert events(items, EventType.BAR)["close"].to_list() == [389.12]


def test_rest_bars_page() -> None:
    parser = AlpacaParser(["AAPL"])
    body = {
        "bars": {
            "AAPL": [
                {"t": "2022-01-03T09:00:00Z", "o": 178.26, "h": 178.34, "l": 177.76,
                 "c": 178.08, "v": 60937, "n": 1727, "vw": 177.954244},
                {"t": "2022-01-03T09:01:00Z", "o": "x", "h": 1, "l": 1, "c": 1, "v": 1},
                "not a bar",
            ],
            "MSFT": [],
        },
        "next_page_token": "QUFQTHxNfDIwMjItMDEtMDNUMDk6MDA6MDAuMDAwMDAwMDAwWg==",
    }  # fmt: skip
    items, token = parser.parse_bars_page(body)
    assert token == body["next_page_token"]
    assert sorted(rejects(items)) == [UNKNOWN_SYMBOL, WRONG_TYPE, WRONG_TYPE]
    bars = events(items, EventType.BAR)
    assert bars.row(0) == (
        "AAPL", dt.datetime(2022, 1, 3, 9, tzinfo=dt.UTC), 178.26, 178.34, 177.76, 178.08, 60937.0,
    )  # fmt: skip
    assert parser.parse_bars_page({"bars": {}, "next_page_token": None}) == ([], None)
    assert parser.parse_bars_page({"bars": None, "next_page_token": ""}) == ([], None)
    bad: object
    for bad in ([], {"bars": []}, {"bars": {"AAPL": {}}}, {"bars": {}, "next_page_token": 5}):
        items, token = parser.parse_bars_page(bad)
        assert rejects(items) == [WRONG_TYPE]
        assert token is None


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text()
    | st.binary() | st.sampled_from(["t", "q", "b", "T", "S", "AAPL", "error", "subscription"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=5)
    ),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    for item in AlpacaParser(["AAPL"]).parse_frame(raw):
        assert isinstance(item, Events | Reject | AlpacaControl)


@settings(max_examples=300, deadline=None)
@given(st.lists(msgpack_values | st.fixed_dictionaries({"T": st.sampled_from("tqb")}, optional={
    "S": st.sampled_from(["AAPL", "MSFT", 1]), "t": st.just(TS) | msgpack_values,
    "p": msgpack_values, "s": msgpack_values, "bp": msgpack_values, "ap": msgpack_values,
}), max_size=5))  # fmt: skip
def test_arbitrary_messages_never_raise(messages: list[object]) -> None:
    parser = AlpacaParser(["AAPL"])
    for item in parser.parse_frame(msgpack.packb(messages)):
        assert isinstance(item, Events | Reject | AlpacaControl)
    parser.parse_frame(msgspec.json.encode(messages, enc_hook=repr).decode())
