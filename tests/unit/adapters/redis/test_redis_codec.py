"""The Redis bus codec: every payload kind survives the trip through bytes.

Test module named ``test_redis_codec`` (``tests/unit/core/test_codec.py`` exists; test modules
here are not packages, so basenames must be unique). The message builders are copied from
``tests/unit/core/test_messages.py`` for the same reason (it cannot be imported).
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlab.core import (
    Aggressor,
    Bar,
    BreakerEvent,
    BreakerState,
    DataGap,
    ExpertWeights,
    Fill,
    Liquidity,
    NewsEvent,
    Order,
    OrderDenied,
    OrderEvent,
    OrderStatus,
    OrderType,
    PositionUpdate,
    Quote,
    Side,
    Signal,
    TimeInForce,
    Trade,
)
from quantlab.core.messages import FeatureBatch, MarketBatch, WireMessage

UTC_TS = dt.datetime(2024, 1, 5, 10, 0, 0, 123456, tzinfo=dt.UTC)
PLUS_5 = dt.timezone(dt.timedelta(hours=5, minutes=30))
OFFSET_TS = dt.datetime(2024, 1, 5, 15, 30, 0, 654321, tzinfo=PLUS_5)
NAIVE_TS = dt.datetime(2024, 1, 5, 10, 0, 0)
TS_NS = 1_704_448_800_123_456_789

SIGNAL_ID = uuid.UUID("3f7c1a52-0000-4000-8000-000000000001")
ORDER_ID = uuid.UUID("3f7c1a52-0000-4000-8000-000000000002")
FILL_ID = uuid.UUID("3f7c1a52-0000-4000-8000-000000000003")

# More significant digits than a float64 holds: must survive the wire exactly.
FINE_QTY = Decimal("0.000000012345678901234567890123")
BIG_PRICE = Decimal("12345678901234567890.123456789")


def make_signal(**overrides: Any) -> Signal:
    fields: dict[str, Any] = {
        "signal_id": SIGNAL_ID,
        "strategy_id": "mom-fast",
        "symbol": "BTC/USD",
        "side": Side.BUY,
        "strength": 0.75,
        "confidence": 0.6,
        "timestamp": UTC_TS,
        "features": [0.1, -2.5, 1e-300, 1.7976931348623157e308, -0.0],
        "metadata": {"model": "onnx-v3", "note": "ünïcode ✓"},
        "mid": 43_250.5,
        "spread": 0.5,
    }
    fields.update(overrides)
    return Signal(**fields)


def make_order(**overrides: Any) -> Order:
    fields: dict[str, Any] = {
        "order_id": ORDER_ID,
        "client_order_id": "ql-0123456789abcdef0123456789abcdef",
        "symbol": "BTC/USD",
        "side": Side.SELL,
        "order_type": OrderType.LIMIT,
        "quantity": FINE_QTY,
        "price": BIG_PRICE,
        "time_in_force": TimeInForce.IOC,
        "strategy_id": "mom-fast",
        "signal_id": SIGNAL_ID,
        "timestamp": OFFSET_TS,
    }
    fields.update(overrides)
    return Order(**fields)


def make_fill(**overrides: Any) -> Fill:
    fields: dict[str, Any] = {
        "fill_id": FILL_ID,
        "order_id": ORDER_ID,
        "client_order_id": "ql-0123456789abcdef0123456789abcdef",
        "symbol": "ETH/USD",
        "side": Side.BUY,
        "price": Decimal("2250.123456789012345678"),
        "quantity": FINE_QTY,
        "fee": Decimal("-0.000001"),
        "fee_currency": "USD",
        "liquidity": Liquidity.MAKER,
        "timestamp": UTC_TS,
        "venue": "paper",
        "trade_id": "t-42",
        "strategy_id": "mom-fast",
    }
    fields.update(overrides)
    return Fill(**fields)


def make_quote(**overrides: Any) -> Quote:
    fields: dict[str, Any] = {
        "symbol": "BTC/USD",
        "ts_event": TS_NS,
        "bid": 100.0,
        "ask": 100.5,
        "bid_size": 2.0,
        "ask_size": 3.0,
    }
    fields.update(overrides)
    return Quote(**fields)


def make_trade(**overrides: Any) -> Trade:
    fields: dict[str, Any] = {
        "symbol": "BTC/USD",
        "ts_event": TS_NS,
        "price": 100.25,
        "size": 0.5,
        "aggressor": Aggressor.SELLER,
        "trade_id": "x-1",
    }
    fields.update(overrides)
    return Trade(**fields)


def make_bar(**overrides: Any) -> Bar:
    fields: dict[str, Any] = {
        "symbol": "AAPL",
        "ts_event": TS_NS,
        "open": 180.0,
        "high": 182.5,
        "low": 179.25,
        "close": 181.0,
        "volume": 12_345.0,
    }
    fields.update(overrides)
    return Bar(**fields)


WIRE_MESSAGES = {
    "Quote": make_quote(),
    "Trade": make_trade(),
    "Bar": make_bar(),
    "NewsEvent": NewsEvent(
        id="n-1",
        symbols=["AAPL", "MSFT"],
        headline="Tech rallies — “quotes” & ünïcode",
        source="wire",
        url="https://example.test/n-1",
        timestamp=OFFSET_TS,
    ),
    "Signal": make_signal(),
    "ExpertWeights": ExpertWeights(
        strategy_id="hedge",
        timestamp=UTC_TS,
        rounds=7,
        weights={"macd_cross": 0.125, "patterns": 0.375, "model": 0.5},
        advice={"macd_cross": -1.0, "patterns": 0.25, "model": 0.0625},
    ),
    "Order": make_order(),
    "OrderDenied": OrderDenied(
        order=make_order(order_type=OrderType.MARKET, price=None),
        reason="max_notional",
        detail="notional 1.2e6 > limit 1e6 for BTC/USD",
        timestamp=UTC_TS,
    ),
    "OrderEvent": OrderEvent(
        order_id=ORDER_ID,
        client_order_id="ql-0123456789abcdef0123456789abcdef",
        symbol="BTC/USD",
        status=OrderStatus.REJECTED,
        venue="paper",
        timestamp=UTC_TS,
        reason="insufficient funds",
    ),
    "Fill": make_fill(),
    "PositionUpdate": PositionUpdate(
        symbol="ETH/USD",
        quantity=Decimal("-1.500000000000000001"),  # short
        avg_price=Decimal("2250.123456789012345678"),
        realized_pnl=Decimal("-12.3400"),
        fees=Decimal("0.0012"),
        currency="USD",
        timestamp=OFFSET_TS,
    ),
    "BreakerEvent": BreakerEvent(
        state=BreakerState.HALTED,
        previous=BreakerState.REDUCING,
        trigger="drawdown",
        reason="drawdown 12.5% >= halt limit 10%",
        timestamp=OFFSET_TS,
    ),
    "DataGap": DataGap(
        source="coinbase",
        symbol="BTC/USD",
        start=UTC_TS,
        end=OFFSET_TS,
        seconds=7.5,
    ),
}


# -- the Redis codec ----------------------------------------------------------------------------

import polars as pl  # noqa: E402
from hypothesis import HealthCheck  # noqa: E402
from polars.testing import assert_frame_equal  # noqa: E402

from quantlab.adapters.redis import codec  # noqa: E402
from quantlab.bus import DeadLetter, Envelope  # noqa: E402
from quantlab.core import CodecError, EventType  # noqa: E402


def test_every_wire_message_type_is_covered() -> None:
    assert set(WIRE_MESSAGES) == {t.__name__ for t in WireMessage.__args__}


@pytest.mark.parametrize("message", WIRE_MESSAGES.values(), ids=WIRE_MESSAGES.keys())
def test_wire_messages_round_trip_as_json(message: Any) -> None:
    kind, data = codec.encode(message)
    assert kind == "w"
    assert data.startswith(b"{")
    back = codec.decode(kind, data)
    assert type(back) is type(message)
    assert back == message


FRAME = pl.DataFrame(
    {
        "symbol": ["BTC/USD", "ETH/USD", "BTC/USD"],
        "ts_event": [TS_NS, TS_NS + 1, TS_NS + 2],
        "price": [42_000.5, 2_250.25, 42_001.0],
        "size": [0.5, 1.25, None],
        "flags": pl.Series([0, 1, 0], dtype=pl.UInt8),
    }
)


def test_market_batch_round_trips_with_its_frame() -> None:
    batch = MarketBatch(
        kind=EventType.TRADE, frame=FRAME, seq=7, ts_min=TS_NS, ts_max=TS_NS + 2, source="cb"
    )
    kind, data = codec.encode(batch)
    assert kind == "mb"
    back = codec.decode(kind, data)
    assert isinstance(back, MarketBatch)
    assert back.kind is EventType.TRADE
    assert (back.seq, back.ts_min, back.ts_max, back.source) == (7, TS_NS, TS_NS + 2, "cb")
    assert_frame_equal(back.frame, FRAME)


def test_feature_batch_and_bare_frames_round_trip() -> None:
    batch = FeatureBatch(spec="momentum", version="v2", frame=FRAME, seq=3, ts_max=TS_NS)
    back = codec.decode(*codec.encode(batch))
    assert isinstance(back, FeatureBatch)
    assert (back.spec, back.version, back.seq, back.ts_max) == ("momentum", "v2", 3, TS_NS)
    assert_frame_equal(back.frame, FRAME)
    kind, data = codec.encode(FRAME.head(0))
    assert kind == "df"
    assert_frame_equal(codec.decode(kind, data), FRAME.head(0))


def test_dead_letter_round_trips_with_its_typed_payload() -> None:
    envelope = Envelope(
        id="m1", topic="signals.mom", payload=make_signal(), ts_publish=TS_NS, deliveries=3, seq=9
    )
    letter = DeadLetter(envelope=envelope, subscription="worker", reason="ValueError: no")
    kind, data = codec.encode(letter)
    assert kind == "dl"
    assert codec.decode(kind, data) == letter


plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)


@given(plain)
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_plain_data_round_trips(value: Any) -> None:
    kind, data = codec.encode(value)
    assert kind == "p"
    assert codec.decode(kind, data) == value


def test_tuples_come_back_as_lists() -> None:
    assert codec.decode(*codec.encode((1, "a"))) == [1, "a"]


@given(st.lists(st.tuples(st.text(min_size=1, max_size=20), st.integers(0, 2**63 - 1), plain)))
@settings(max_examples=100)
def test_events_of_one_entry_round_trip(events: list[tuple[str, int, Any]]) -> None:
    assert codec.decode_events(codec.encode_events(events)) == events


def test_mixed_events_in_one_entry() -> None:
    events = [("a", 1, make_order()), ("b", 2, {"x": [1, 2]}), ("c", 3, "text")]
    assert codec.decode_events(codec.encode_events(events)) == events


def test_what_cannot_travel_is_refused() -> None:
    with pytest.raises(CodecError, match="cannot encode object"):
        codec.encode(object())
    with pytest.raises(CodecError, match="cannot encode"):
        codec.encode({"nested": object()})
    with pytest.raises(CodecError, match="unknown bus payload kind 'zz'"):
        codec.decode("zz", b"")
    with pytest.raises(CodecError, match="cannot decode a bus payload of kind 'w'"):
        codec.decode("w", b'{"type": "Nope"}')
    with pytest.raises(CodecError, match="corrupt bus entry"):
        codec.decode_events(b"\xc1")


# -- entry layouts (one JSON for typed messages, one MessagePack for plain data, rows) --------


def test_an_entry_of_typed_messages_is_one_json_document() -> None:
    messages = list(WIRE_MESSAGES.values())
    events = [(f"m{i}", TS_NS, m) for i, m in enumerate(messages)]
    data = codec.encode_events(events)
    assert data[:1] == b"J"
    assert codec.count_events(data) == len(messages)
    back = codec.decode_events(data)
    assert back == events
    assert [type(p) for _, _, p in back] == [type(m) for m in messages]
    # each message as `encode` writes it: tz offsets, Decimals and UUIDs survive as in JSON
    for (_, _, got), want in zip(back, messages, strict=True):
        assert codec.encode(got) == codec.encode(want)


def test_entries_keep_each_events_publish_time() -> None:
    typed = [("a", 1, make_quote()), ("b", 2, make_quote())]
    plain = [("a", 1, {"x": 1}), ("b", 2, [1, 2])]
    for events in (typed, plain):
        assert codec.decode_events(codec.encode_events(events)) == events
    ids, ts, payloads = codec.decode_columns(codec.encode_batch(["a", "b"], 7, [1, 2]))
    assert (ids, ts, payloads) == (["a", "b"], 7, [1, 2])


def test_every_layout_tells_its_event_count() -> None:
    frame_events = [(f"f{i}", i, FRAME) for i in range(20)]  # rows: MessagePack array 16
    for events in ([], [("a", 1, 1)], [("a", 1, make_order())], frame_events[:3], frame_events):
        data = codec.encode_events(events)
        assert codec.count_events(data) == len(events)
        assert len(codec.decode_events(data)) == len(events)


def test_corrupt_entries_of_each_layout_are_refused() -> None:
    good = codec.encode_events([("a", 1, make_quote()), ("b", 1, make_quote())])
    with pytest.raises(CodecError, match="no event count"):
        codec.count_events(b"J\x00")
    with pytest.raises(CodecError, match="corrupt bus entry"):
        codec.decode_events(good[:-3])  # truncated JSON
    with pytest.raises(CodecError, match="columns of different lengths"):
        codec.decode_events(b"J\x00\x00\x00\x05" + good[5:])  # header says 5 events
    bad_quote = good.replace(b'"bid":100.0', b'"bid":-1.0')
    with pytest.raises(CodecError, match="corrupt bus entry"):
        codec.decode_events(bad_quote)  # a message's own checks run on decode
