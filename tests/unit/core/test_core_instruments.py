"""Instruments: symbol parsing, tick and lot rounding."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlab.core import Side, ValidationError
from quantlab.core.instruments import Instrument, InstrumentBook, split_symbol, to_decimal

TICK = Decimal("0.01")
LOT = Decimal("0.001")


@pytest.mark.parametrize(
    ("symbol", "expected"),
    [
        ("BTC/USD", ("BTC", "USD")),
        ("ETH-USDT", ("ETH", "USDT")),
        ("BTC-PERP", ("BTC", "USD")),
        ("btc-perp", ("btc", "USD")),
        ("BRK.B/USD", ("BRK.B", "USD")),
    ],
)
def test_split_symbol(symbol: str, expected: tuple[str, str]) -> None:
    assert split_symbol(symbol) == expected


@pytest.mark.parametrize("symbol", ["AAPL", "/USD", "BTC/", "-", ""])
def test_split_symbol_refuses_naming_the_symbol(symbol: str) -> None:
    with pytest.raises(ValidationError, match=rf"of symbol {symbol!r}"):
        split_symbol(symbol)


def test_split_symbol_of_a_ccxt_swap_symbol() -> None:
    assert split_symbol("BTC/USDT:USDT") == ("BTC", "USDT")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.1, "0.1"), (1e-7, "1E-7"), (3, "3.0"), (43250.5, "43250.5"), (-2.675, "-2.675")],
)
def test_to_decimal_has_no_binary_noise(value: float, expected: str) -> None:
    assert to_decimal(value) == Decimal(expected)
    assert str(to_decimal(value)) == expected


@settings(deadline=None)
@given(value=st.floats(allow_nan=False, allow_infinity=False))
def test_to_decimal_round_trips_to_the_same_float(value: float) -> None:
    assert float(to_decimal(value)) == value


def test_instrument_from_symbol() -> None:
    inst = Instrument.from_symbol("ETH/USD", TICK, LOT)
    assert (inst.symbol, inst.base, inst.quote) == ("ETH/USD", "ETH", "USD")
    assert (inst.tick_size, inst.lot_size) == (TICK, LOT)


@pytest.mark.parametrize(("tick", "lot"), [(Decimal(0), LOT), (TICK, Decimal(-1))])
def test_instrument_needs_positive_tick_and_lot(tick: Decimal, lot: Decimal) -> None:
    with pytest.raises(ValidationError, match=rf"got tick {tick}, lot {lot} for X/Y"):
        Instrument.from_symbol("X/Y", tick, lot)


@pytest.mark.parametrize(
    ("price", "side", "expected"),
    [
        ("100.123", Side.BUY, "100.13"),  # buys round up
        ("100.123", Side.SELL, "100.12"),  # sells round down
        ("100.12", Side.BUY, "100.12"),  # on the tick: unchanged
        ("100.12", Side.SELL, "100.12"),
    ],
)
def test_round_price_to_the_tick(price: str, side: Side, expected: str) -> None:
    inst = Instrument.from_symbol("BTC/USD", TICK, LOT)
    assert inst.round_price(Decimal(price), side) == Decimal(expected)


def test_round_price_to_a_coarse_tick() -> None:
    inst = Instrument.from_symbol("X/Y", Decimal("0.05"), LOT)
    assert inst.round_price(Decimal("1.02"), Side.BUY) == Decimal("1.05")
    assert inst.round_price(Decimal("1.02"), Side.SELL) == Decimal("1.00")


@settings(deadline=None)
@given(
    price=st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("1e9"), places=6),
    side=st.sampled_from(Side),
)
def test_rounded_price_is_on_the_tick_and_within_one_tick(price: Decimal, side: Side) -> None:
    inst = Instrument.from_symbol("X/Y", TICK, LOT)
    rounded = inst.round_price(price, side)
    assert rounded % TICK == 0
    assert abs(rounded - price) < TICK
    assert (rounded >= price) if side is Side.BUY else (rounded <= price)


@settings(deadline=None)
@given(qty=st.decimals(min_value=Decimal(0), max_value=Decimal("1e9"), places=8))
def test_round_quantity_never_exceeds_what_was_asked(qty: Decimal) -> None:
    inst = Instrument.from_symbol("X/Y", TICK, LOT)
    rounded = inst.round_quantity(qty)
    assert rounded % LOT == 0
    assert qty - LOT < rounded <= qty


def test_instrument_book_prefers_configured_instruments() -> None:
    configured = Instrument.from_symbol("BTC/USD", Decimal("0.5"), Decimal("0.0001"))
    book = InstrumentBook(TICK, LOT, {"BTC/USD": configured})
    assert book["BTC/USD"] is configured
    derived = book["ETH-USD"]
    assert (derived.base, derived.quote, derived.tick_size, derived.lot_size) == (
        "ETH",
        "USD",
        TICK,
        LOT,
    )
    assert book["ETH-USD"] is derived  # derived once, then cached


def test_instrument_book_refuses_an_unparseable_symbol() -> None:
    with pytest.raises(ValidationError, match="'AAPL'"):
        InstrumentBook(TICK, LOT)["AAPL"]
