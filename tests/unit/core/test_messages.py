"""Wire messages (DESIGN §4): JSON and MessagePack round trips, and constructor validation."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlab.core import (
    NewsEvent,
    Order,
    OrderDenied,
    OrderEvent,
    OrderStatus,
    OrderType,
    PositionUpdate,
    Side,
    Signal,
    TimeInForce,
    ValidationError,
)
from quantlab.core.messages import from_json, from_msgpack, to_json, to_msgpack
from quantlab.testing.messages import (
    BIG_PRICE,
    FILL_ID,
    FINE_QTY,
    NAIVE_TS,
    ORDER_ID,
    SIGNAL_ID,
    UTC_TS,
    WIRE_MESSAGES,
    make_bar,
    make_fill,
    make_order,
    make_quote,
    make_signal,
    make_trade,
)


def _decimal_fields(message: Any) -> dict[str, str]:
    """Every Decimal in `message` (nested one level for OrderDenied), as its exact string."""
    found = {}
    for name in message.__struct_fields__:
        value = getattr(message, name)
        if isinstance(value, Decimal):
            found[name] = str(value)
        elif isinstance(value, msgspec.Struct):
            found.update({f"{name}.{k}": v for k, v in _decimal_fields(value).items()})
    return found


def _timestamps(message: Any) -> list[dt.datetime]:
    found = []
    for name in message.__struct_fields__:
        value = getattr(message, name)
        if isinstance(value, dt.datetime):
            found.append(value)
        elif isinstance(value, msgspec.Struct):
            found.extend(_timestamps(value))
    return found


# -- round trips ---------------------------------------------------------------------------------


def test_every_wire_message_is_covered() -> None:
    from quantlab.core.messages import WireMessage

    assert set(WIRE_MESSAGES) == {t.__name__ for t in WireMessage.__args__}


@pytest.mark.parametrize("message", WIRE_MESSAGES.values(), ids=WIRE_MESSAGES.keys())
def test_json_round_trip(message: Any) -> None:
    data = to_json(message)
    assert isinstance(data, bytes)
    decoded = from_json(data)
    assert type(decoded) is type(message)
    assert decoded == message
    assert _decimal_fields(decoded) == _decimal_fields(message)
    for got, sent in zip(_timestamps(decoded), _timestamps(message), strict=True):
        assert got.tzinfo is not None
        assert got == sent
        # JSON carries the offset itself, not only the instant.
        assert got.utcoffset() == sent.utcoffset()
    # The union decoder also takes text.
    assert from_json(data.decode()) == message


@pytest.mark.parametrize("message", WIRE_MESSAGES.values(), ids=WIRE_MESSAGES.keys())
def test_msgpack_round_trip(message: Any) -> None:
    data = to_msgpack(message)
    decoded = from_msgpack(data)
    assert type(decoded) is type(message)
    assert decoded == message
    assert _decimal_fields(decoded) == _decimal_fields(message)
    for got, sent in zip(_timestamps(decoded), _timestamps(message), strict=True):
        assert got.tzinfo is not None
        assert got == sent


def test_json_carries_decimals_as_exact_strings_not_floats() -> None:
    data = to_json(make_order())
    # msgspec writes str(Decimal): "1.2345678901234567890123E-8", every digit kept
    assert f'"quantity":"{FINE_QTY}"'.encode() in data
    assert b'"price":"12345678901234567890.123456789"' in data
    decoded = from_json(data)
    assert decoded.quantity == FINE_QTY
    assert str(decoded.price) == str(BIG_PRICE)


def test_json_carries_the_message_type_tag() -> None:
    assert msgspec.json.decode(to_json(make_signal()))["type"] == "Signal"
    assert msgspec.json.decode(to_json(make_fill()))["type"] == "Fill"


def test_market_order_without_price_round_trips() -> None:
    order = make_order(order_type=OrderType.MARKET, price=None)
    assert from_json(to_json(order)).price is None
    assert from_msgpack(to_msgpack(order)) == order


_aware_datetimes = st.builds(
    lambda naive, minutes: naive.replace(tzinfo=dt.timezone(dt.timedelta(minutes=minutes))),
    st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2200, 1, 1)),
    st.integers(-23 * 60 - 59, 23 * 60 + 59),
)
_unit = st.floats(0.0, 1.0)
_finite = st.floats(allow_nan=False, allow_infinity=False)

_signals = st.builds(
    Signal,
    signal_id=st.uuids(),
    strategy_id=st.text(min_size=1, max_size=20),
    symbol=st.text(min_size=1, max_size=12),
    side=st.sampled_from(Side),
    strength=_unit,
    confidence=_unit,
    timestamp=_aware_datetimes,
    features=st.lists(_finite, max_size=16),
    metadata=st.dictionaries(st.text(max_size=8), st.text(max_size=16), max_size=4),
    mid=_finite.map(abs),
    spread=_finite.map(abs),
)

_positive_decimals = st.decimals(
    min_value=Decimal("1e-18"), max_value=Decimal("1e15"), allow_nan=False, allow_infinity=False
)


@st.composite
def _orders(draw: st.DrawFn) -> Order:
    order_type = draw(st.sampled_from(OrderType))
    price = draw(
        _positive_decimals if order_type is OrderType.LIMIT else st.none() | _positive_decimals
    )
    return Order(
        order_id=draw(st.uuids()),
        client_order_id=draw(st.text(min_size=1, max_size=64)),
        symbol=draw(st.text(min_size=1, max_size=12)),
        side=draw(st.sampled_from(Side)),
        order_type=order_type,
        quantity=draw(_positive_decimals),
        price=price,
        time_in_force=draw(st.sampled_from(TimeInForce)),
        strategy_id=draw(st.text(min_size=1, max_size=20)),
        signal_id=draw(st.uuids()),
        timestamp=draw(_aware_datetimes),
    )


@settings(max_examples=150, deadline=None)
@given(signal=_signals)
def test_any_signal_round_trips(signal: Signal) -> None:
    for decoded in (from_json(to_json(signal)), from_msgpack(to_msgpack(signal))):
        assert decoded == signal
        assert decoded.timestamp.tzinfo is not None
        # float lists compare bit for bit (== would accept -0.0 for 0.0)
        assert [math.copysign(1, f) for f in decoded.features] == [
            math.copysign(1, f) for f in signal.features
        ]


@settings(max_examples=150, deadline=None)
@given(order=_orders())
def test_any_order_round_trips(order: Order) -> None:
    for decoded in (from_json(to_json(order)), from_msgpack(to_msgpack(order))):
        assert decoded == order
        assert str(decoded.quantity) == str(order.quantity)
        assert str(decoded.price) == str(order.price)
        assert decoded.timestamp.tzinfo is not None


@pytest.mark.parametrize(
    "build",
    [
        lambda: make_signal(features=[1.0, math.nan]),
        lambda: make_signal(features=[math.inf]),
        lambda: make_signal(mid=math.nan),
        lambda: make_bar(volume=math.nan),
        lambda: make_quote(bid_size=math.inf),
    ],
    ids=[
        "signal-nan-feature",
        "signal-inf-feature",
        "signal-nan-mid",
        "bar-nan-volume",
        "quote-inf-size",
    ],
)
def test_a_message_that_constructs_survives_json(build: Any) -> None:
    try:
        message = build()
    except ValidationError:
        return  # refused at construction: also a correct outcome
    assert from_json(to_json(message)) is not None


# -- decoding bad input --------------------------------------------------------------------------


def _signal_json(**overrides: Any) -> bytes:
    raw = msgspec.json.decode(to_json(make_signal()))
    raw.update(overrides)
    return msgspec.json.encode(raw)


def test_decoding_a_signal_with_strength_2_is_refused() -> None:
    # Whatever the exception type, an out-of-range value must not get through the decoder.
    with pytest.raises((msgspec.ValidationError, ValidationError), match=r"strength.*2"):
        from_json(_signal_json(strength=2))


def test_decoding_a_signal_with_strength_2_raises_msgspec_validation_error() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"strength.*2"):
        from_json(_signal_json(strength=2))


def test_decoding_a_signal_with_a_naive_timestamp_is_refused() -> None:
    with pytest.raises((msgspec.ValidationError, ValidationError), match="naive"):
        from_json(_signal_json(timestamp="2024-01-05T10:00:00"))


def test_decoding_a_wrongly_typed_field_raises_msgspec_validation_error() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.strength"):
        from_json(_signal_json(strength="strong"))


def test_decoding_an_unknown_message_type_raises_msgspec_validation_error() -> None:
    with pytest.raises(msgspec.ValidationError, match="Nope"):
        from_json(b'{"type": "Nope"}')


def test_decoding_malformed_json_raises_msgspec_decode_error() -> None:
    with pytest.raises(msgspec.DecodeError):
        from_json(b'{"type": "Signal", ')


# -- validation: Signal --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("strength", 1.5, "1.5"),
        ("strength", -0.01, "-0.01"),
        ("strength", math.nan, "nan"),
        ("confidence", -0.1, "-0.1"),
        ("confidence", 1.0000001, "1.0000001"),
        ("confidence", math.inf, "inf"),
    ],
)
def test_signal_out_of_unit_range_names_the_value(field: str, value: float, shown: str) -> None:
    with pytest.raises(ValidationError, match=rf"signal {field} must be in \[0, 1\], got {shown}"):
        make_signal(**{field: value})


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_signal_unit_range_is_closed(value: float) -> None:
    signal = make_signal(strength=value, confidence=value)
    assert signal.strength == value
    assert signal.confidence == value


def test_signal_with_naive_timestamp_names_it() -> None:
    with pytest.raises(ValidationError, match=r"naive 2024-01-05T10:00:00"):
        make_signal(timestamp=NAIVE_TS)


def test_signal_defaults_are_fresh_per_instance() -> None:
    a = make_signal(features=[], metadata={})
    b = Signal(
        signal_id=SIGNAL_ID,
        strategy_id="s",
        symbol="X",
        side=Side.BUY,
        strength=0.5,
        confidence=0.5,
        timestamp=UTC_TS,
    )
    c = Signal(
        signal_id=SIGNAL_ID,
        strategy_id="s",
        symbol="X",
        side=Side.BUY,
        strength=0.5,
        confidence=0.5,
        timestamp=UTC_TS,
    )
    assert a.features == b.features == []
    assert b.features is not c.features
    assert b.metadata is not c.metadata


def test_messages_are_frozen() -> None:
    signal = make_signal()
    with pytest.raises(AttributeError):
        signal.strength = 0.1  # type: ignore[misc]


# -- validation: Order and Fill ------------------------------------------------------------------


@pytest.mark.parametrize(
    "quantity", [Decimal(0), Decimal(-1), Decimal("NaN"), Decimal("Infinity"), Decimal("-0.0001")]
)
def test_order_with_a_bad_quantity_survives_the_wire_to_reach_risk(quantity: Decimal) -> None:
    # The risk manager denies such an intent with a reason (tests/unit/risk); the message
    # itself must carry it there, also across processes.
    order = make_order(quantity=quantity)
    back = from_json(to_json(order))
    assert str(back.quantity) == str(quantity)


def test_limit_order_without_price_is_refused_naming_the_order() -> None:
    with pytest.raises(ValidationError, match=r"limit order needs a price \(ql-0123456789abcdef"):
        make_order(order_type=OrderType.LIMIT, price=None)


@pytest.mark.parametrize("price", [Decimal(0), Decimal(-3), Decimal("NaN")])
def test_order_with_a_bad_price_survives_the_wire_to_reach_risk(price: Decimal) -> None:
    order = make_order(price=price)
    assert str(from_json(to_json(order)).price) == str(price)


def test_order_with_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"order timestamp.*naive"):
        make_order(timestamp=NAIVE_TS)


def test_market_order_needs_no_price() -> None:
    assert make_order(order_type=OrderType.MARKET, price=None).price is None


@pytest.mark.parametrize(
    ("field", "value", "pattern"),
    [
        ("quantity", Decimal(0), "fill quantity must be > 0, got 0"),
        ("quantity", Decimal("NaN"), "fill quantity must be > 0, got NaN"),
        ("price", Decimal(-1), "fill price must be > 0, got -1"),
        ("price", Decimal("Infinity"), "fill price must be > 0, got Infinity"),
    ],
)
def test_fill_quantity_and_price_must_be_positive(field: str, value: Decimal, pattern: str) -> None:
    with pytest.raises(ValidationError, match=pattern) as info:
        make_fill(**{field: value})
    assert str(FILL_ID) in str(info.value)


def test_fill_may_carry_a_negative_fee_rebate() -> None:
    assert make_fill(fee=Decimal("-0.01")).fee == Decimal("-0.01")


@pytest.mark.parametrize(
    "build",
    [
        lambda: make_fill(timestamp=NAIVE_TS),
        lambda: OrderEvent(
            order_id=ORDER_ID,
            client_order_id="c",
            symbol="X",
            status=OrderStatus.ACCEPTED,
            venue="paper",
            timestamp=NAIVE_TS,
        ),
        lambda: OrderDenied(order=make_order(), reason="r", detail="d", timestamp=NAIVE_TS),
        lambda: NewsEvent(
            id="n", symbols=[], headline="h", source="s", url="u", timestamp=NAIVE_TS
        ),
        lambda: PositionUpdate(
            symbol="X",
            quantity=Decimal(1),
            avg_price=Decimal(1),
            realized_pnl=Decimal(0),
            fees=Decimal(0),
            currency="USD",
            timestamp=NAIVE_TS,
        ),
    ],
    ids=["Fill", "OrderEvent", "OrderDenied", "NewsEvent", "PositionUpdate"],
)
def test_every_timestamped_message_refuses_naive_timestamps(build: Any) -> None:
    with pytest.raises(ValidationError, match="naive"):
        build()


# -- validation: market data ---------------------------------------------------------------------


def test_crossed_quote_names_both_prices() -> None:
    with pytest.raises(ValidationError, match=r"crossed quote for BTC/USD: bid 101.0 > ask 100.0"):
        make_quote(bid=101.0, ask=100.0)


def test_locked_quote_is_allowed_and_has_a_mid() -> None:
    assert make_quote(bid=100.0, ask=100.0).mid == 100.0
    assert make_quote(bid=100.0, ask=101.0).mid == 100.5


@pytest.mark.parametrize("field", ["bid", "ask"])
@pytest.mark.parametrize(("value", "shown"), [(math.nan, "nan"), (0.0, "0.0"), (-1.0, "-1.0")])
def test_quote_prices_must_be_finite_and_positive(field: str, value: float, shown: str) -> None:
    with pytest.raises(
        ValidationError, match=rf"{field} must be a finite number > 0, got {shown} for BTC/USD"
    ):
        make_quote(**{field: value})


@pytest.mark.parametrize("field", ["price", "size"])
@pytest.mark.parametrize(
    ("value", "shown"),
    [(math.nan, "nan"), (0.0, "0.0"), (-2.5, "-2.5"), (math.inf, "inf"), (-math.inf, "-inf")],
)
def test_trade_price_and_size_must_be_finite_and_positive(
    field: str, value: float, shown: str
) -> None:
    with pytest.raises(
        ValidationError, match=rf"{field} must be a finite number > 0, got {shown} for BTC/USD"
    ):
        make_trade(**{field: value})


def test_bar_low_above_high_names_both() -> None:
    with pytest.raises(ValidationError, match=r"bar low 183.0 > high 182.5 for AAPL"):
        make_bar(low=183.0)


@pytest.mark.parametrize("field", ["open", "high", "low", "close"])
def test_bar_prices_must_be_finite_and_positive(field: str) -> None:
    with pytest.raises(ValidationError, match=rf"{field} must be a finite number > 0, got nan"):
        make_bar(**{field: math.nan})


def test_validation_error_is_a_quantlab_error() -> None:
    from quantlab.core import QuantlabError

    assert issubclass(ValidationError, QuantlabError)
