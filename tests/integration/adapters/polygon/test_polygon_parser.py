"""Polygon parser: Polygon's documented sample messages, and every kind of bad input."""

from __future__ import annotations

import datetime as dt
import math

import msgspec
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlab.adapters.polygon import PolygonDataConfig, parse_aggregates, parse_frame
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
    Reject,
)

SYMBOLS = {"AAPL": "AAPL", "MSFT": "MSFT"}
# Polygon's documented samples (stocks websocket docs).
TRADE = {"ev": "T", "sym": "AAPL", "i": "52983525029461", "x": 4, "p": 114.125, "s": 100,
         "c": [0, 12], "t": 1536036818784, "q": 3681328}  # fmt: skip
QUOTE = {"ev": "Q", "sym": "AAPL", "bx": 4, "bp": 114.125, "bs": 100, "ax": 7, "ap": 114.128,
         "as": 160, "c": 0, "t": 1536036818784, "q": 50385480}  # fmt: skip
MINUTE = {"ev": "AM", "sym": "AAPL", "v": 4110, "av": 9470157, "op": 0.4372, "vw": 0.4488,
          "o": 0.4488, "c": 0.4486, "h": 0.4489, "l": 0.4486, "a": 0.4352, "z": 685,
          "s": 1610144640000, "e": 1610144700000}  # fmt: skip
SECOND = {**MINUTE, "ev": "A", "s": 1610144640000, "e": 1610144641000}


def enc(*events: object) -> str:
    return msgspec.json.encode(list(events)).decode()


def events_of(items: list[Events | Reject], kind: EventType) -> pl.DataFrame:
    frames = [i.frame for i in items if isinstance(i, Events) and i.kind is kind]
    assert len(frames) == 1
    return frames[0]


def rejects(items: list[Events | Reject]) -> list[Reject]:
    return [i for i in items if isinstance(i, Reject)]


def ts(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def test_trade_sample() -> None:
    out = parse_frame(enc(TRADE), SYMBOLS)
    frame = events_of(out.items, EventType.TRADE)
    assert frame.schema == TRADE_SCHEMA
    row = frame.row(0, named=True)
    assert row["symbol"] == "AAPL"
    assert row["timestamp"] == ts(1536036818784)
    assert frame["timestamp"].dt.epoch("ns")[0] == 1536036818784 * 1_000_000
    assert (row["price"], row["size"]) == (114.125, 100.0)
    assert row["aggressor"] == Aggressor.UNKNOWN
    assert row["trade_id"] == "52983525029461"
    assert out.statuses == []


def test_quote_sample_keeps_round_lot_sizes() -> None:
    frame = events_of(parse_frame(enc(QUOTE), SYMBOLS).items, EventType.QUOTE)
    assert frame.schema == QUOTE_SCHEMA
    row = frame.row(0, named=True)
    assert (row["bid"], row["ask"], row["bid_size"], row["ask_size"]) == (
        114.125,
        114.128,
        100.0,
        160.0,
    )
    assert row["timestamp"] == ts(1536036818784)


@pytest.mark.parametrize("sample", [MINUTE, SECOND], ids=["AM", "A"])
def test_aggregate_samples_are_bars_at_their_start(sample: dict[str, object]) -> None:
    frame = events_of(parse_frame(enc(sample), SYMBOLS).items, EventType.BAR)
    assert frame.schema == BAR_SCHEMA
    row = frame.row(0, named=True)
    assert row["timestamp"] == ts(1610144640000)
    assert (row["open"], row["high"], row["low"], row["close"], row["volume"]) == (
        0.4488,
        0.4489,
        0.4486,
        0.4486,
        4110.0,
    )


def test_mixed_frame_gives_one_frame_per_kind() -> None:
    msft = {**TRADE, "sym": "MSFT", "i": "2", "p": 250.5}
    out = parse_frame(enc(TRADE, QUOTE, msft, MINUTE), SYMBOLS)
    kinds = [i.kind for i in out.items if isinstance(i, Events)]
    assert sorted(kinds) == [EventType.QUOTE, EventType.TRADE, EventType.BAR]
    trades = events_of(out.items, EventType.TRADE)
    assert trades["symbol"].to_list() == ["AAPL", "MSFT"]
    assert rejects(out.items) == []


def test_status_messages_are_control_not_data() -> None:
    raw = (
        '[{"ev":"status","status":"connected","message":"Connected Successfully"},'
        '{"ev":"status","status":"success","message":"subscribed to: T.AAPL"}]'
    )
    out = parse_frame(raw, SYMBOLS)
    assert out.items == []
    assert [s.status for s in out.statuses] == ["connected", "success"]
    assert out.statuses[1].message == "subscribed to: T.AAPL"


def test_bytes_frames_parse_like_text() -> None:
    out = parse_frame(enc(TRADE).encode(), SYMBOLS)
    assert events_of(out.items, EventType.TRADE).height == 1


def test_integer_trade_id_and_float_ms_are_accepted() -> None:
    out = parse_frame(enc({**TRADE, "i": 42, "t": 1536036818784.0}), SYMBOLS)
    row = events_of(out.items, EventType.TRADE).row(0, named=True)
    assert row["trade_id"] == "42"


@pytest.mark.parametrize("price", [0, -1.5, "NaN", "inf", 1e308])
def test_bad_but_numeric_values_pass_through_for_the_quality_rules(price: object) -> None:
    out = parse_frame(enc({**TRADE, "p": price}), SYMBOLS)
    got = events_of(out.items, EventType.TRADE)["price"][0]
    expected = float(price)  # type: ignore[arg-type]
    assert (math.isnan(got) and math.isnan(expected)) or got == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'[{"ev":"T","sym":"AAPL"', TRUNCATED_FRAME),
        (b"", TRUNCATED_FRAME),
        (b"not json", MALFORMED_JSON),
        (b"[1, 2] trailing", MALFORMED_JSON),
        (b"\xff\xfe", MALFORMED_JSON),
        (b"[1e999]", MALFORMED_JSON),
        (b'{"ev":"T"}', WRONG_TYPE),
        (b'"hello"', WRONG_TYPE),
    ],
)
def test_frame_level_bad_input_is_one_reject(raw: bytes, reason: str) -> None:
    out = parse_frame(raw, SYMBOLS)
    assert out.statuses == []
    assert [(r.reason, r.raw) for r in rejects(out.items)] == [(reason, raw)]


def test_oversized_frame_is_rejected_before_decoding() -> None:
    raw = enc(*([TRADE] * (MAX_FRAME_BYTES // 100 + 10)))
    assert len(raw) > MAX_FRAME_BYTES
    out = parse_frame(raw, SYMBOLS)
    [rej] = rejects(out.items)
    assert rej.reason == OVERSIZED_FRAME
    assert len(rej.raw) == 4096  # only a prefix is kept for the dead-letter store


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({**TRADE, "sym": "TSLA"}, UNKNOWN_SYMBOL),
        ({**TRADE, "sym": None}, UNKNOWN_SYMBOL),
        ({k: v for k, v in TRADE.items() if k != "sym"}, UNKNOWN_SYMBOL),
        ({**TRADE, "ev": "LULD"}, UNKNOWN_MESSAGE),
        ({k: v for k, v in TRADE.items() if k != "ev"}, UNKNOWN_MESSAGE),
        ({**TRADE, "p": "abc"}, WRONG_TYPE),
        ({**TRADE, "p": None}, WRONG_TYPE),
        ({**TRADE, "p": True}, WRONG_TYPE),
        ({**TRADE, "p": [1]}, WRONG_TYPE),
        ({**TRADE, "s": 10**400}, WRONG_TYPE),
        ({k: v for k, v in TRADE.items() if k != "p"}, WRONG_TYPE),
        ({**TRADE, "t": "2021-01-01T00:00:00Z"}, WRONG_TYPE),
        ({**TRADE, "t": True}, WRONG_TYPE),
        ({**TRADE, "t": 1.5}, WRONG_TYPE),
        ({**TRADE, "t": 2**62}, WRONG_TYPE),
        ({**TRADE, "i": {"id": 1}}, WRONG_TYPE),
        ({**QUOTE, "bs": "x"}, WRONG_TYPE),
        ({k: v for k, v in QUOTE.items() if k != "ap"}, WRONG_TYPE),
        ({**MINUTE, "s": None}, WRONG_TYPE),
        ({**MINUTE, "v": "lots"}, WRONG_TYPE),
        ({"ev": "status", "status": 5}, WRONG_TYPE),
        ("just a string", WRONG_TYPE),
        (17, WRONG_TYPE),
    ],
)
def test_bad_event_is_rejected_and_the_good_ones_flow(event: object, reason: str) -> None:
    out = parse_frame(enc(TRADE, event, QUOTE), SYMBOLS)
    assert [r.reason for r in rejects(out.items)] == [reason]
    assert events_of(out.items, EventType.TRADE).height == 1
    assert events_of(out.items, EventType.QUOTE).height == 1


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)
_FIELDS = ["p", "s", "t", "i", "bp", "ap", "bs", "as", "o", "h", "l", "c", "v"]
_event = st.fixed_dictionaries(
    {
        "ev": st.sampled_from(["T", "Q", "A", "AM", "status", "X"]),
        "sym": st.sampled_from(["AAPL", "ZZZ"]),
    },
    optional={k: _json for k in _FIELDS},
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_event | _json, max_size=6))
def test_parser_never_raises(events: list[object]) -> None:
    try:
        raw = msgspec.json.encode(events)
    except (OverflowError, msgspec.EncodeError):
        return
    out = parse_frame(raw, SYMBOLS)
    for item in out.items:
        assert isinstance(item, Events | Reject)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_parser_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    parse_frame(raw, SYMBOLS)


def test_rest_aggregates_page() -> None:
    body = msgspec.json.encode(
        {
            "ticker": "AAPL",
            "status": "OK",
            "results": [
                {"v": 70790813, "vw": 131.6292, "o": 133.52, "c": 132.05, "h": 133.61,
                 "l": 126.76, "t": 1609740000000, "n": 1},
                {"v": 1.5, "o": 1, "c": 1, "h": 1, "l": 1, "t": 1609740060000},
                {"v": 1, "o": "x", "c": 1, "h": 1, "l": 1, "t": 1609740120000},
                "nope",
            ],
            "next_url": "https://api.polygon.io/v2/aggs/ticker/AAPL/range/1/minute/1/2?cursor=a",
        }
    )  # fmt: skip
    page = parse_aggregates(body, "AAPL")
    assert page.bars.schema == BAR_SCHEMA
    assert page.bars["timestamp"].to_list() == [ts(1609740000000), ts(1609740060000)]
    assert page.bars.row(0, named=True)["close"] == 132.05
    assert [r.reason for r in page.rejects] == [WRONG_TYPE, WRONG_TYPE]
    assert page.next_url is not None
    assert "cursor=a" in page.next_url


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>502</html>", MALFORMED_JSON),
        (b'{"results": [', TRUNCATED_FRAME),
        (b"[]", WRONG_TYPE),
        (b'{"results": 5}', WRONG_TYPE),
    ],
)
def test_rest_bad_bodies(body: bytes, reason: str) -> None:
    page = parse_aggregates(body, "AAPL")
    assert page.bars.is_empty()
    assert page.bars.schema == BAR_SCHEMA
    assert [r.reason for r in page.rejects] == [reason]


def test_rest_empty_range_has_no_results_key() -> None:
    page = parse_aggregates(b'{"ticker":"AAPL","resultsCount":0,"status":"OK"}', "AAPL")
    assert page.bars.is_empty()
    assert page.rejects == []
    assert page.next_url is None


def test_config_rejects_typos_and_bad_values() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"symbols": ["AAPL"], "chanels": ["T"]}, PolygonDataConfig)
    with pytest.raises(ConfigError, match="channels"):
        PolygonDataConfig(symbols=("AAPL",), channels=("A", "AM"))
    with pytest.raises(ConfigError, match="channels"):
        PolygonDataConfig(symbols=("AAPL",), channels=("TRADES",))
    with pytest.raises(ConfigError, match="symbols"):
        PolygonDataConfig(symbols=("aapl,msft",))
    with pytest.raises(ConfigError, match="symbols"):
        PolygonDataConfig(symbols=())
    cfg = PolygonDataConfig(symbols=("AAPL", "BRK.B"), channels=("T", "AM"))
    assert cfg.subscription() == "T.AAPL,T.BRK.B,AM.AAPL,AM.BRK.B"
