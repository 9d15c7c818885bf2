"""The Redis bus codec: every payload kind survives the trip through bytes.

Test module named ``test_redis_codec`` (``tests/unit/core/test_codec.py`` exists; test modules
here are not packages, so basenames must be unique). The example messages are the message
tests' own (`quantlab.testing.messages`).
"""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from quantlab.adapters.redis import codec
from quantlab.bus import DeadLetter, Envelope
from quantlab.core import CodecError, EventType
from quantlab.core.messages import FeatureBatch, MarketBatch, WireMessage
from quantlab.testing.messages import (
    TS_NS,
    WIRE_MESSAGES,
    make_order,
    make_quote,
    make_signal,
)


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
