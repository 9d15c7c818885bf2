"""The packed 32-byte MarketDataEvent record (DESIGN §4) and its zero-copy codec."""

from __future__ import annotations

import struct

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from quantlab.core import (
    MARKET_EVENT_DTYPE,
    CodecError,
    decode_events,
    encode_events,
    events_to_frame,
)
from quantlab.core.codec import FIELDS, RECORD_SIZE, empty_events

# The layout of DESIGN §4, written independently of the code under test.
LAYOUT = [
    # name, offset, numpy type string (byte order included), struct code
    ("event_type", 0, "|u1", "B"),
    ("symbol_id", 1, "<u4", "I"),
    ("timestamp_ns", 5, "<i8", "q"),
    ("price", 13, "<f8", "d"),
    ("size", 21, "<f8", "d"),
    ("side", 29, "|u1", "B"),
    ("exchange_id", 30, "<u2", "H"),  # 29 + 1: the last two bytes
]
STRUCT_FORMAT = "<" + "".join(code for *_, code in LAYOUT)  # "<BIqddBH"
INT_FIELDS = [name for name, _, kind, _ in LAYOUT if kind[1] in "ui"]
FLOAT_FIELDS = [name for name, _, kind, _ in LAYOUT if kind[1] == "f"]


def _columns(n: int) -> dict[str, np.ndarray]:
    return {
        "event_type": np.arange(n, dtype=np.uint8) % 3 + 1,
        "symbol_id": np.arange(n, dtype=np.uint32) * 7,
        "timestamp_ns": 1_704_448_800_000_000_000 + np.arange(n, dtype=np.int64) * 1_000,
        "price": 100.0 + np.arange(n) * 0.25,
        "size": np.linspace(0.5, 2.5, n),
        "side": np.arange(n, dtype=np.uint8) % 3,
        "exchange_id": np.arange(n, dtype=np.uint16) + 1000,
    }


# -- layout --------------------------------------------------------------------------------------


def test_record_is_exactly_32_bytes() -> None:
    assert MARKET_EVENT_DTYPE.itemsize == 32
    assert RECORD_SIZE == 32
    assert struct.calcsize(STRUCT_FORMAT) == 32


def test_fields_are_in_design_order() -> None:
    assert MARKET_EVENT_DTYPE.names == tuple(name for name, *_ in LAYOUT)
    assert tuple(name for name, *_ in LAYOUT) == FIELDS


@pytest.mark.parametrize(("name", "offset", "kind", "_code"), LAYOUT)
def test_field_offset_and_little_endian_type(name: str, offset: int, kind: str, _code: str) -> None:
    field_dtype, field_offset = MARKET_EVENT_DTYPE.fields[name][:2]
    assert field_offset == offset
    # `.str` spells the byte order: "<" little-endian, "|" single byte (no order).
    assert field_dtype.str == kind


def test_record_is_packed_without_padding() -> None:
    assert not MARKET_EVENT_DTYPE.isalignedstruct
    assert sum(MARKET_EVENT_DTYPE.fields[name][0].itemsize for name in FIELDS) == 32


def test_empty_events_has_the_record_dtype() -> None:
    events = empty_events(4)
    assert events.dtype == MARKET_EVENT_DTYPE
    assert events.shape == (4,)
    assert events.nbytes == 128


# -- independent check of the bytes --------------------------------------------------------------


def test_one_record_matches_struct_pack_byte_for_byte() -> None:
    values = (2, 4_000_000_000, -1_704_448_800_123_456_789, 101.25, 0.003, 1, 65_535)
    encoded = encode_events(**dict(zip(FIELDS, values, strict=True)))
    assert encoded == struct.pack(STRUCT_FORMAT, *values)


@settings(deadline=None)
@given(
    values=st.tuples(
        st.integers(0, 2**8 - 1),
        st.integers(0, 2**32 - 1),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(width=64),
        st.floats(width=64),
        st.integers(0, 2**8 - 1),
        st.integers(0, 2**16 - 1),
    )
)
def test_any_record_matches_struct_pack(values: tuple) -> None:
    encoded = encode_events(**dict(zip(FIELDS, values, strict=True)))
    # Bit-exact, NaN payloads and the sign of zero included.
    assert encoded == struct.pack(STRUCT_FORMAT, *values)


def test_many_records_are_concatenated_struct_records() -> None:
    cols = _columns(5)
    encoded = encode_events(**cols)
    expected = b"".join(
        struct.pack(STRUCT_FORMAT, *(cols[name][i].item() for name in FIELDS)) for i in range(5)
    )
    assert encoded == expected
    assert [rec for rec in struct.iter_unpack(STRUCT_FORMAT, encoded)] == [
        tuple(cols[name][i].item() for name in FIELDS) for i in range(5)
    ]


# -- round trip ----------------------------------------------------------------------------------


def _column_strategy(name: str, n: int) -> st.SearchStrategy[np.ndarray]:
    kind = MARKET_EVENT_DTYPE.fields[name][0]
    if name in FLOAT_FIELDS:
        elements = st.floats(width=64, allow_nan=True, allow_infinity=True)
    else:
        info = np.iinfo(kind)
        elements = st.integers(int(info.min), int(info.max))
    return hnp.arrays(kind, n, elements=elements)


_event_columns = st.integers(0, 500).flatmap(
    lambda n: st.fixed_dictionaries({name: _column_strategy(name, n) for name in FIELDS})
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cols=_event_columns)
def test_encode_decode_round_trip(cols: dict[str, np.ndarray]) -> None:
    n = len(cols["price"])
    buf = encode_events(**cols)
    assert isinstance(buf, bytes)
    assert len(buf) == n * 32

    decoded = decode_events(buf)
    assert decoded.dtype == MARKET_EVENT_DTYPE
    assert decoded.shape == (n,)
    for name in INT_FIELDS:
        np.testing.assert_array_equal(decoded[name], cols[name], err_msg=name)
    for name in FLOAT_FIELDS:
        assert np.array_equal(decoded[name], cols[name], equal_nan=True), name
        # Bit for bit: NaN payloads, infinities and -0.0 survive unchanged.
        got_bits = np.ascontiguousarray(decoded[name]).view(np.uint64)
        assert np.array_equal(got_bits, cols[name].view(np.uint64)), name


def test_scalars_broadcast_against_columns() -> None:
    buf = encode_events(
        event_type=2,
        symbol_id=[1, 2, 3],
        timestamp_ns=[10, 20, 30],
        price=1.5,
        size=[1.0, 2.0, 3.0],
    )
    decoded = decode_events(buf)
    assert len(decoded) == 3
    assert decoded["event_type"].tolist() == [2, 2, 2]
    assert decoded["symbol_id"].tolist() == [1, 2, 3]
    assert decoded["price"].tolist() == [1.5, 1.5, 1.5]
    # side and exchange_id default to 0
    assert decoded["side"].tolist() == [0, 0, 0]
    assert decoded["exchange_id"].tolist() == [0, 0, 0]


def test_all_scalars_give_one_record() -> None:
    buf = encode_events(event_type=1, symbol_id=9, timestamp_ns=5, price=2.0, size=3.0)
    assert len(buf) == 32
    assert decode_events(buf).tolist() == [(1, 9, 5, 2.0, 3.0, 0, 0)]


def test_columns_of_different_lengths_raise_codec_error_naming_the_shapes() -> None:
    with pytest.raises(CodecError, match="incompatible lengths") as info:
        encode_events(event_type=[1, 1], symbol_id=[1, 2, 3], timestamp_ns=0, price=1.0, size=1.0)
    assert "(2,)" in str(info.value)
    assert "(3,)" in str(info.value)


@pytest.mark.parametrize(
    "override",
    [
        {"event_type": 256},
        {"symbol_id": -1},
        {"symbol_id": 2**32},
        {"side": 300},
        {"exchange_id": 2**16},
        {"timestamp_ns": 2**63},
    ],
    ids=lambda o: f"{next(iter(o))}={next(iter(o.values()))}",
)
def test_out_of_range_integer_raises_codec_error(override: dict[str, int]) -> None:
    columns = {"event_type": 1, "symbol_id": 0, "timestamp_ns": 0, "price": 1.0, "size": 1.0}
    columns.update(override)
    with pytest.raises(CodecError):
        encode_events(**columns)


# -- zero copy -----------------------------------------------------------------------------------


def _reaches(obj: object, target: object) -> bool:
    """Follow `.base` (arrays) and `.obj` (memoryviews) from `obj`; True if `target` is met."""
    seen = 0
    while obj is not None and seen < 32:
        if obj is target:
            return True
        obj = obj.obj if isinstance(obj, memoryview) else getattr(obj, "base", None)
        seen += 1
    return False


def test_decode_of_bytearray_shares_memory_with_it() -> None:
    buf = bytearray(encode_events(**_columns(4)))
    events = decode_events(buf)

    assert np.shares_memory(events, np.frombuffer(buf, dtype=np.uint8))
    assert _reaches(events, buf)
    assert events.flags.writeable

    # Writing the buffer changes the decoded view ...
    struct.pack_into("<d", buf, 2 * 32 + 13, -7.5)
    assert events["price"][2] == -7.5
    buf[1 * 32 + 0] = 3
    assert events["event_type"][1] == 3
    # ... and writing the view changes the buffer.
    events["exchange_id"][3] = 4242
    assert struct.unpack_from("<H", buf, 3 * 32 + 30) == (4242,)


def test_decode_of_bytes_is_a_read_only_view() -> None:
    buf = encode_events(**_columns(3))
    events = decode_events(buf)
    assert _reaches(events, buf)
    assert not events.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        events["price"][0] = 1.0


def test_decode_of_a_memoryview_slice_shares_memory() -> None:
    buf = bytearray(encode_events(**_columns(6)))
    events = decode_events(memoryview(buf)[64:128])
    assert len(events) == 2
    assert events["symbol_id"].tolist() == [14, 21]
    struct.pack_into("<I", buf, 64 + 1, 99)
    assert events["symbol_id"][0] == 99


def test_decode_of_empty_buffer_is_empty() -> None:
    events = decode_events(b"")
    assert events.shape == (0,)
    assert events.dtype == MARKET_EVENT_DTYPE


@pytest.mark.parametrize("length", [1, 31, 33, 63, 65, 32 * 10 + 7])
def test_buffer_length_not_a_multiple_of_32_raises_naming_the_length(length: int) -> None:
    with pytest.raises(CodecError, match=rf"multiple of 32 bytes, got {length} ") as info:
        decode_events(bytes(length))
    assert f"{length % 32} stray bytes" in str(info.value)
    with pytest.raises(CodecError, match=rf"got {length} "):
        decode_events(memoryview(bytearray(length)))


# -- frames --------------------------------------------------------------------------------------


def test_events_to_frame_has_one_typed_column_per_field() -> None:
    cols = _columns(5)
    frame = events_to_frame(decode_events(encode_events(**cols)))
    assert frame.columns == list(FIELDS)
    assert frame.schema == pl.Schema(
        {
            "event_type": pl.UInt8,
            "symbol_id": pl.UInt32,
            "timestamp_ns": pl.Int64,
            "price": pl.Float64,
            "size": pl.Float64,
            "side": pl.UInt8,
            "exchange_id": pl.UInt16,
        }
    )
    assert frame.height == 5
    for name in FIELDS:
        assert frame[name].to_list() == cols[name].tolist(), name


def test_events_to_frame_copies_out_of_the_buffer() -> None:
    buf = bytearray(encode_events(**_columns(2)))
    frame = events_to_frame(decode_events(buf))
    struct.pack_into("<d", buf, 13, 12345.0)
    assert frame["price"][0] == 100.0


def test_events_to_frame_of_no_events() -> None:
    frame = events_to_frame(decode_events(b""))
    assert frame.height == 0
    assert frame.columns == list(FIELDS)
    assert frame.schema["symbol_id"] == pl.UInt32
