"""Average-cost accounting (Decimal) and the exposure book, by property."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from quantlab.core import ids
from quantlab.core.enums import Liquidity, OrderType, Side, TimeInForce
from quantlab.core.exposure import ExposureBook
from quantlab.core.messages import Fill, Order
from quantlab.portfolio.accounting import Converter, Portfolio, Position

# Same examples on every run (no example database, no random seed): deterministic tests.
DETERMINISTIC = settings(derandomize=True, database=None, deadline=None)

ZERO = Decimal(0)
T0 = dt.datetime(2018, 1, 10, 4, 55, tzinfo=dt.UTC)

sides = st.sampled_from([Side.BUY, Side.SELL])
# Round lots often, so positions return exactly to zero and flip through it.
quantities = st.one_of(
    st.sampled_from([Decimal("1"), Decimal("2"), Decimal("0.5"), Decimal("3")]),
    st.decimals(min_value=Decimal("0.001"), max_value=Decimal("1000"), places=3),
)
prices = st.one_of(
    st.decimals(min_value=Decimal("0.00001"), max_value=Decimal("0.1"), places=8),  # ADA/BTC
    st.decimals(min_value=Decimal("1000"), max_value=Decimal("60000"), places=2),  # BTC/USD
)
fees = st.decimals(min_value=Decimal(0), max_value=Decimal("5"), places=6)
fills = st.lists(st.tuples(sides, quantities, prices, fees), min_size=1, max_size=40)


def close_enough(a: Decimal, b: Decimal, scale: Decimal) -> bool:
    """Equal up to the rounding of Decimal division in the average price (28 digits)."""
    return abs(a - b) <= Decimal("1e-18") * max(Decimal(1), scale)


@settings(DETERMINISTIC, max_examples=300)
@given(fills, prices)
def test_pnl_equals_cash_flow_plus_marked_position(
    seq: list[tuple[Side, Decimal, Decimal, Decimal]], mark: Decimal
) -> None:
    pos = Position("ETH/BTC", "BTC")
    cash, signed_sum, realized_sum, scale = ZERO, ZERO, ZERO, ZERO
    for side, qty, price, fee in seq:
        before, before_avg = pos.quantity, pos.avg_price
        realized_sum += pos.apply(side, qty, price, fee)
        signed_sum += side.sign * qty
        cash += -side.sign * qty * price - fee
        scale += qty * price
        after = pos.quantity
        assert after == signed_sum  # exactly: quantities are never divided
        if after == 0:
            assert pos.avg_price == 0
        elif before == 0 or (before > 0) != (after > 0):
            assert pos.avg_price == price  # opened, or flipped through zero, at this price
        elif abs(after) < abs(before):
            assert pos.avg_price == before_avg  # reduced: what is left keeps its cost
        else:  # added: the new average lies between the old one and the fill price
            assert min(before_avg, price) <= pos.avg_price <= max(before_avg, price)

    total = pos.realized + pos.unrealized(mark) - pos.fees
    equity = cash + pos.quantity * mark
    assert close_enough(total, equity, scale + abs(pos.quantity * mark))
    assert pos.realized == realized_sum
    assert pos.fees == sum((f for *_, f in seq), ZERO)
    assert pos.traded_notional == sum((q * p for _, q, p, _ in seq), ZERO)
    assert pos.fills == len(seq)
    assert pos.unrealized(None) == 0


@settings(DETERMINISTIC, max_examples=200)
@given(st.lists(st.tuples(sides, quantities, prices), min_size=1, max_size=30))
def test_reducing_keeps_the_average_cost(seq: list[tuple[Side, Decimal, Decimal]]) -> None:
    pos = Position("ETH/BTC", "BTC")
    for side, qty, price in seq:
        before_q, before_avg = pos.quantity, pos.avg_price
        realized = pos.apply(side, qty, price)
        after = pos.quantity
        same_side = before_q != 0 and after != 0 and (before_q > 0) == (after > 0)
        if same_side and abs(after) < abs(before_q):
            assert pos.avg_price == before_avg
            assert realized == qty * (price - before_avg) * (1 if before_q > 0 else -1)
        if before_q == 0 or (before_q > 0) == (side is Side.BUY):
            assert realized == 0  # opening or adding realizes nothing


def test_round_trip_examples() -> None:
    pos = Position("BTC-PERP", "USD")
    assert pos.apply(Side.BUY, Decimal("2"), Decimal("100"), Decimal("0.1")) == 0
    assert pos.apply(Side.BUY, Decimal("2"), Decimal("110")) == 0
    assert pos.avg_price == Decimal("105")
    assert pos.apply(Side.SELL, Decimal("1"), Decimal("120")) == Decimal("15")
    assert pos.avg_price == Decimal("105")
    # Flip: sell 5 from +3 closes 3 at 100 (-15) and opens -2 at 100.
    assert pos.apply(Side.SELL, Decimal("5"), Decimal("100")) == Decimal("-15")
    assert (pos.quantity, pos.avg_price) == (Decimal("-2"), Decimal("100"))
    assert pos.unrealized(Decimal("90")) == Decimal("20")  # short gains when price falls
    assert pos.apply(Side.BUY, Decimal("2"), Decimal("95")) == Decimal("10")
    assert (pos.quantity, pos.avg_price, pos.realized) == (ZERO, ZERO, Decimal("10"))
    assert pos.fees == Decimal("0.1")


def test_pnl_by_currency() -> None:
    book = Portfolio()
    eth = book.position("ETH/BTC", "BTC")
    eth.apply(Side.BUY, Decimal("10"), Decimal("0.09"), Decimal("0.001"))
    ada = book.position("ADA/BTC", "BTC")
    ada.apply(Side.SELL, Decimal("1000"), Decimal("0.00005"))
    perp = book.position("BTC-PERP", "USD")
    perp.apply(Side.BUY, Decimal("1"), Decimal("40000"), Decimal("4"))
    assert book.position("ETH/BTC", "BTC") is eth
    book.marks.update({"ETH/BTC": Decimal("0.1"), "BTC-PERP": Decimal("41000")})  # ADA unmarked
    pnl = book.pnl_by_currency()
    assert pnl["BTC"] == {
        "realized": ZERO,
        "unrealized": Decimal("0.1"),  # 10 x (0.1 - 0.09); ADA has no mark, so 0
        "fees": Decimal("0.001"),
        "total": Decimal("0.099"),
    }
    assert pnl["USD"]["unrealized"] == Decimal("1000")
    assert pnl["USD"]["total"] == Decimal("996")


# -- ExposureBook ---------------------------------------------------------------------------


def make_order(n: int, side: Side, quantity: Decimal, symbol: str = "ETH/BTC") -> Order:
    signal = ids.signal_id("exposure-test", symbol, n)
    coid = ids.client_order_id(signal)
    return Order(
        order_id=ids.order_id(coid),
        client_order_id=coid,
        symbol=symbol,
        side=side,
        order_type=OrderType.LIMIT,
        quantity=quantity,
        price=Decimal("0.05"),
        time_in_force=TimeInForce.GTC,
        strategy_id="exposure-test",
        signal_id=signal,
        timestamp=T0,
    )


def make_fill(order: Order, quantity: Decimal, trade_id: str) -> Fill:
    return Fill(
        fill_id=ids.fill_id("paper", trade_id),
        order_id=order.order_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side,
        price=Decimal("0.05"),
        quantity=quantity,
        fee=ZERO,
        fee_currency="BTC",
        liquidity=Liquidity.MAKER,
        timestamp=T0,
        venue="paper",
        trade_id=trade_id,
    )


def test_exposure_arithmetic() -> None:
    book = ExposureBook()
    buy = make_order(1, Side.BUY, Decimal("10"))
    sell = make_order(2, Side.SELL, Decimal("3"))
    book.add_order(buy)
    book.add_order(buy)  # the same order twice counts once
    book.add_order(sell)
    assert book.pending("ETH/BTC") == Decimal("7")
    assert book.exposure("ETH/BTC") == Decimal("7")
    assert book.is_open(buy.client_order_id)

    assert book.apply_fill(make_fill(buy, Decimal("4"), "a")) is True
    assert book.apply_fill(make_fill(buy, Decimal("4"), "a")) is False  # same fill id
    assert (book.position("ETH/BTC"), book.pending("ETH/BTC")) == (Decimal("4"), Decimal("3"))
    assert book.exposure("ETH/BTC") == Decimal("7")  # a fill moves pending to position

    book.close_order(buy.client_order_id)  # canceled with 6 left
    book.close_order(buy.client_order_id)  # twice: no effect
    assert not book.is_open(buy.client_order_id)
    assert (book.position("ETH/BTC"), book.pending("ETH/BTC")) == (Decimal("4"), Decimal("-3"))

    assert book.apply_fill(make_fill(sell, Decimal("3"), "b"))
    assert not book.is_open(sell.client_order_id)  # fully filled: closed
    assert (book.position("ETH/BTC"), book.pending("ETH/BTC")) == (Decimal("1"), ZERO)
    assert book.exposure("ADA/BTC") == 0


def test_a_fill_of_an_unknown_order_moves_only_the_position() -> None:
    book = ExposureBook()
    stray = make_order(9, Side.SELL, Decimal("2"))
    assert book.apply_fill(make_fill(stray, Decimal("2"), "s"))
    assert (book.position("ETH/BTC"), book.pending("ETH/BTC")) == (Decimal("-2"), ZERO)


@settings(DETERMINISTIC, max_examples=200)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "fill", "close"]),
            st.integers(0, 4),  # which order
            st.integers(1, 8),  # quantity in halves
            st.integers(0, 6),  # trade id
        ),
        max_size=40,
    )
)
def test_exposure_is_position_plus_open_remainders(ops: list[tuple[str, int, int, int]]) -> None:
    book = ExposureBook()
    orders = [make_order(i, Side.BUY if i % 2 else Side.SELL, Decimal(1 + i)) for i in range(5)]
    remaining: dict[int, Decimal] = {}
    seen: set[str] = set()
    position = ZERO
    for op, i, halves, trade in ops:
        order = orders[i]
        if op == "add":
            book.add_order(order)
            remaining.setdefault(i, order.quantity)
        elif op == "close":
            book.close_order(order.client_order_id)
            remaining.pop(i, None)
        else:
            qty = Decimal(halves) / 2
            applied = book.apply_fill(make_fill(order, qty, f"t{trade}"))
            assert applied is (f"t{trade}" not in seen)
            if applied:
                seen.add(f"t{trade}")
                position += order.side.sign * qty
                if i in remaining:
                    remaining[i] -= min(qty, remaining[i])
                    if remaining[i] == 0:
                        del remaining[i]
        pending = sum((orders[k].side.sign * r for k, r in remaining.items()), ZERO)
        assert book.position("ETH/BTC") == position
        assert book.pending("ETH/BTC") == pending
        assert book.exposure("ETH/BTC") == position + pending
        for k in range(5):
            assert book.is_open(orders[k].client_order_id) is (k in remaining)


# -- the portfolio: several symbols and currencies, cash, conversion -------------------------

SYMBOLS = {"ETH/BTC": "BTC", "LTC/BTC": "BTC", "BTC/USD": "USD", "ETH-PERP": "USD"}
portfolio_fills = st.lists(
    st.tuples(st.sampled_from(sorted(SYMBOLS)), sides, quantities, prices, fees),
    min_size=1,
    max_size=60,
)


@settings(DETERMINISTIC, max_examples=200)
@given(portfolio_fills, st.dictionaries(st.sampled_from(sorted(SYMBOLS)), prices))
def test_equity_per_currency_equals_pnl_and_positions_equal_the_fills(
    seq: list[tuple[str, Side, Decimal, Decimal, Decimal]], marks: dict[str, Decimal]
) -> None:
    book = Portfolio()
    signed: dict[str, Decimal] = {}
    cash: dict[str, Decimal] = {}
    scale: dict[str, Decimal] = {}
    for symbol, side, qty, price, fee in seq:
        ccy = SYMBOLS[symbol]
        book.apply(symbol, ccy, side, qty, price, fee)
        signed[symbol] = signed.get(symbol, ZERO) + side.sign * qty
        cash[ccy] = cash.get(ccy, ZERO) - side.sign * qty * price - fee
        scale[ccy] = scale.get(ccy, ZERO) + qty * price
    book.marks.update(marks)
    for symbol, quantity in signed.items():
        assert book.positions[symbol].quantity == quantity  # the signed sum of its fills
    assert book.cash == cash  # exactly: no division on the cash path
    pnl = book.pnl_by_currency()
    equity = book.equity_by_currency()
    for ccy, row in pnl.items():
        held = sum(
            (abs(p.quantity) * book.marks.get(p.symbol, p.avg_price))
            for p in book.positions.values()
            if p.currency == ccy
        )
        # realized + unrealized - fees == the change in equity (cash + marked positions)
        assert close_enough(row["total"], equity[ccy], scale[ccy] + held)


def test_a_fee_in_another_currency_is_paid_in_that_currency() -> None:
    book = Portfolio()
    book.apply("ETH/BTC", "BTC", Side.BUY, Decimal("2"), Decimal("0.05"), Decimal("0.3"), "BNB")
    assert book.cash == {"BTC": Decimal("-0.10"), "BNB": Decimal("-0.3")}
    assert book.positions["ETH/BTC"].fees == 0
    assert book.other_fees == {"BNB": Decimal("0.3")}


def test_conversion_to_a_base_currency_uses_the_marks_then_fixed_rates() -> None:
    marks = {"BTC/USDT": Decimal("40000"), "ETH-PERP": Decimal("2500"), "USD/JPY": Decimal("150")}
    to_usdt = Converter("USDT")
    assert to_usdt.rate("BTC", marks) == Decimal("40000")
    assert to_usdt.rate("USDT", marks) == 1
    to_usd = Converter("USD", {"EUR": Decimal("1.1")})
    assert to_usd.rate("ETH", marks) == Decimal("2500")  # ETH-PERP is ETH in USD
    assert to_usd.rate("JPY", marks) == 1 / Decimal("150")  # from USD/JPY, inverted
    assert to_usd.rate("EUR", marks) == Decimal("1.1")  # configured
    assert to_usd.rate("BTC", marks) is None  # no BTC/USD price: never guessed
    total, missing = to_usd.convert(
        {"USD": Decimal("10"), "EUR": Decimal("2"), "BTC": Decimal("1"), "XRP": ZERO}, marks
    )
    assert total == Decimal("10") + Decimal("2.2")
    assert missing == ["BTC"]  # left out and named; a zero amount needs no rate
