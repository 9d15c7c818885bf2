"""ExposureBook: position plus open-order exposure, from orders and fills."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from quantlab.core import Fill, Liquidity, Order, OrderType, Side, TimeInForce
from quantlab.core.exposure import ExposureBook

TS = dt.datetime(2024, 1, 5, tzinfo=dt.UTC)


def order(cid: str, qty: str, side: Side = Side.BUY, symbol: str = "BTC/USD") -> Order:
    return Order(
        order_id=uuid.uuid5(uuid.NAMESPACE_URL, cid),
        client_order_id=cid,
        symbol=symbol,
        side=side,
        order_type=OrderType.MARKET,
        quantity=Decimal(qty),
        price=None,
        time_in_force=TimeInForce.IOC,
        strategy_id="s",
        signal_id=uuid.uuid4(),
        timestamp=TS,
    )


def fill(
    cid: str, qty: str, side: Side = Side.BUY, symbol: str = "BTC/USD", fill_id: str = ""
) -> Fill:
    return Fill(
        fill_id=uuid.uuid5(uuid.NAMESPACE_URL, fill_id or f"{cid}:{qty}:{uuid.uuid4()}"),
        order_id=uuid.uuid5(uuid.NAMESPACE_URL, cid),
        client_order_id=cid,
        symbol=symbol,
        side=side,
        price=Decimal(100),
        quantity=Decimal(qty),
        fee=Decimal(0),
        fee_currency="USD",
        liquidity=Liquidity.TAKER,
        timestamp=TS,
        venue="paper",
        trade_id="t",
    )


def test_an_empty_book_is_flat() -> None:
    book = ExposureBook()
    assert book.position("X") == book.pending("X") == book.exposure("X") == 0


def test_open_orders_count_as_pending_signed_by_side() -> None:
    book = ExposureBook()
    book.add_order(order("a", "2"))
    book.add_order(order("b", "0.5", Side.SELL))
    book.add_order(order("c", "7", symbol="ETH/USD"))
    assert book.pending("BTC/USD") == Decimal("1.5")
    assert book.exposure("BTC/USD") == Decimal("1.5")
    assert book.position("BTC/USD") == 0
    assert book.pending("ETH/USD") == 7
    assert book.is_open("a")


def test_adding_the_same_order_twice_counts_once() -> None:
    book = ExposureBook()
    book.add_order(order("a", "2"))
    book.add_order(order("a", "2"))
    assert book.pending("BTC/USD") == 2


def test_partial_fills_move_pending_into_position() -> None:
    book = ExposureBook()
    book.add_order(order("a", "2"))
    assert book.apply_fill(fill("a", "0.5"))
    assert (book.position("BTC/USD"), book.pending("BTC/USD")) == (Decimal("0.5"), Decimal("1.5"))
    assert book.is_open("a")
    assert book.apply_fill(fill("a", "1.5"))
    assert (book.position("BTC/USD"), book.pending("BTC/USD")) == (2, 0)
    assert not book.is_open("a")
    assert book.exposure("BTC/USD") == 2


def test_sell_fills_are_negative() -> None:
    book = ExposureBook()
    book.add_order(order("s", "3", Side.SELL))
    book.apply_fill(fill("s", "1", Side.SELL))
    assert (book.position("BTC/USD"), book.pending("BTC/USD")) == (-1, -2)
    assert book.exposure("BTC/USD") == -3


def test_a_fill_is_booked_once() -> None:
    book = ExposureBook()
    book.add_order(order("a", "2"))
    once = fill("a", "1", fill_id="f-1")
    assert book.apply_fill(once) is True
    assert book.apply_fill(once) is False
    assert (book.position("BTC/USD"), book.pending("BTC/USD")) == (1, 1)


def test_an_overfill_closes_the_order_without_negative_pending() -> None:
    book = ExposureBook()
    book.add_order(order("a", "2"))
    book.apply_fill(fill("a", "3"))
    assert (book.position("BTC/USD"), book.pending("BTC/USD")) == (3, 0)
    assert not book.is_open("a")


def test_closing_an_order_releases_what_is_left() -> None:
    book = ExposureBook()
    book.add_order(order("a", "2"))
    book.apply_fill(fill("a", "0.5"))
    book.close_order("a")
    book.close_order("a")  # twice: harmless
    book.close_order("unknown")
    assert (book.position("BTC/USD"), book.pending("BTC/USD")) == (Decimal("0.5"), 0)
    assert not book.is_open("a")


def test_a_fill_of_an_unknown_order_moves_only_the_position() -> None:
    book = ExposureBook()
    book.add_order(order("a", "2"))
    book.apply_fill(fill("other", "1"))
    assert (book.position("BTC/USD"), book.pending("BTC/USD")) == (1, 2)


@settings(deadline=None)
@given(
    parts=st.lists(st.integers(1, 1000), min_size=1, max_size=20),
    side=st.sampled_from(Side),
)
def test_fills_that_complete_an_order_leave_nothing_pending(parts: list[int], side: Side) -> None:
    total = sum(parts)
    book = ExposureBook()
    book.add_order(order("a", str(total), side))
    for i, part in enumerate(parts):
        assert book.exposure("BTC/USD") == total * side.sign  # exposure is conserved
        book.apply_fill(fill("a", str(part), side, fill_id=f"f{i}"))
    assert book.position("BTC/USD") == total * side.sign
    assert book.pending("BTC/USD") == 0
    assert not book.is_open("a")
