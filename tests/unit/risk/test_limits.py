"""Pre-trade limits (pure) and the risk engine on a real in-process bus."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlab.bus import InProcessBus, topics
from quantlab.bus.base import Envelope
from quantlab.core import ids
from quantlab.core.clock import SimulatedClock, datetime_to_ns
from quantlab.core.enums import Liquidity, OrderStatus, OrderType, Side, TimeInForce
from quantlab.core.instruments import InstrumentBook
from quantlab.core.messages import Fill, Order, OrderDenied, OrderEvent
from quantlab.risk.engine import RiskEngine
from quantlab.risk.limits import RiskLimits, check_order

# Same examples on every run (no example database, no random seed): deterministic tests.
DETERMINISTIC = settings(derandomize=True, database=None, deadline=None)

T0 = dt.datetime(2018, 1, 10, 4, 55, tzinfo=dt.UTC)
LIMITS = RiskLimits(max_position_notional=Decimal("10"), max_order_notional=Decimal("4"))


def make_order(
    side: Side,
    quantity: str | Decimal,
    price: str | Decimal | None = "0.05",
    n: int = 0,
    symbol: str = "ETH/BTC",
) -> Order:
    signal = ids.signal_id("risk-test", symbol, n)
    coid = ids.client_order_id(signal)
    return Order(
        order_id=ids.order_id(coid),
        client_order_id=coid,
        symbol=symbol,
        side=side,
        order_type=OrderType.LIMIT if price is not None else OrderType.MARKET,
        quantity=Decimal(quantity),
        price=None if price is None else Decimal(price),
        time_in_force=TimeInForce.IOC,
        strategy_id="risk-test",
        signal_id=signal,
        timestamp=T0,
    )


# -- check_order ----------------------------------------------------------------------------


def test_within_limits_is_allowed() -> None:
    assert check_order(make_order(Side.BUY, "80"), Decimal(0), LIMITS, "BTC") is None  # 4 BTC


def test_order_notional_denial_names_the_values() -> None:
    denial = check_order(make_order(Side.BUY, "80.02"), Decimal(0), LIMITS, "BTC")
    assert denial is not None
    assert denial.reason == "order_notional"
    assert "ETH/BTC" in denial.detail
    assert "order notional 4.001" in denial.detail  # 80.02 x 0.05
    assert "limit 4 BTC" in denial.detail


def test_position_limit_denial_names_the_values() -> None:
    denial = check_order(make_order(Side.BUY, "60"), Decimal("150"), LIMITS, "BTC")
    assert denial is not None
    assert denial.reason == "position_limit"
    assert "ETH/BTC" in denial.detail
    assert "projected position 210" in denial.detail
    assert "x 0.05" in denial.detail
    assert "= 10.5" in denial.detail  # 210 x 0.05
    assert "limit 10 BTC" in denial.detail
    # Short side too.
    denial = check_order(make_order(Side.SELL, "60"), Decimal("-150"), LIMITS, "BTC")
    assert denial is not None
    assert "projected position -210" in denial.detail


def test_reducing_orders_are_allowed_even_beyond_the_position_limit() -> None:
    # Long 1000 (50 BTC, far beyond the limit): selling some is allowed, so is buying back
    # from short, and so is a flip to a smaller opposite position.
    assert check_order(make_order(Side.SELL, "80"), Decimal("1000"), LIMITS, "BTC") is None
    assert check_order(make_order(Side.BUY, "80"), Decimal("-1000"), LIMITS, "BTC") is None
    assert check_order(make_order(Side.SELL, "80"), Decimal("50"), LIMITS, "BTC") is None


def test_the_order_notional_limit_applies_to_reducing_orders_too() -> None:
    # A fat-finger check, not a position check: a 5 BTC sell is refused even when it reduces.
    denial = check_order(make_order(Side.SELL, "100"), Decimal("1000"), LIMITS, "BTC")
    assert denial is not None
    assert denial.reason == "order_notional"


def test_an_order_without_price_is_denied() -> None:
    denial = check_order(make_order(Side.BUY, "1", price=None), Decimal(0), LIMITS, "BTC")
    assert denial is not None
    assert denial.reason == "no_price"


@settings(DETERMINISTIC, max_examples=300)
@given(
    st.sampled_from([Side.BUY, Side.SELL]),
    st.decimals(min_value=Decimal("0.001"), max_value=Decimal("500"), places=3),
    st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("1"), places=4),
    st.decimals(min_value=Decimal("-500"), max_value=Decimal("500"), places=3),
)
def test_check_order_matches_its_specification(
    side: Side, quantity: Decimal, price: Decimal, exposure: Decimal
) -> None:
    denial = check_order(make_order(side, quantity, price), exposure, LIMITS, "BTC")
    notional = quantity * price
    projected = exposure + side.sign * quantity
    reduces = abs(projected) <= abs(exposure)
    if notional > LIMITS.max_order_notional:
        assert denial is not None
        assert denial.reason == "order_notional"
    elif not reduces and abs(projected) * price > LIMITS.max_position_notional:
        assert denial is not None
        assert denial.reason == "position_limit"
    else:
        assert denial is None
    if reduces:  # a reducing order is never refused for the position
        assert denial is None or denial.reason != "position_limit"


# -- RiskEngine on the bus ------------------------------------------------------------------


@pytest.fixture
async def bus() -> AsyncIterator[InProcessBus]:
    bus = InProcessBus()
    yield bus
    await bus.close()


class Outcomes:
    def __init__(self) -> None:
        self.approved: list[Order] = []
        self.denied: list[OrderDenied] = []
        self.ids: list[str] = []

    async def on_approved(self, envelope: Envelope) -> None:
        self.approved.append(envelope.payload)
        self.ids.append(envelope.id)

    async def on_denied(self, envelope: Envelope) -> None:
        self.denied.append(envelope.payload)
        self.ids.append(envelope.id)


async def started(bus: InProcessBus) -> tuple[RiskEngine, Outcomes, SimulatedClock]:
    clock = SimulatedClock(datetime_to_ns(T0) + 1_000)
    engine = RiskEngine(LIMITS, InstrumentBook(Decimal("0.000001"), Decimal("0.001")), clock)
    await engine.start(bus)
    seen = Outcomes()
    bus.consume(topics.orders("approved"), seen.on_approved, name="test.approved")
    bus.consume(topics.orders("denied"), seen.on_denied, name="test.denied")
    return engine, seen, clock


async def settle(bus: InProcessBus) -> None:
    await asyncio.wait_for(bus.drain(), 5)
    assert not bus.handler_errors


async def test_risk_engine_approves_and_denies_on_the_bus(bus: InProcessBus) -> None:
    engine, seen, clock = await started(bus)
    ok = make_order(Side.BUY, "80", n=1)  # 4 BTC
    big = make_order(Side.BUY, "100", n=2)  # 5 BTC > order limit
    await bus.publish(topics.orders("new"), ok, msg_id=ok.client_order_id)
    await bus.publish(topics.orders("new"), big, msg_id=big.client_order_id)
    await settle(bus)
    assert seen.approved == [ok]
    (denied,) = seen.denied
    assert denied.order == big
    assert denied.reason == "order_notional"
    assert "order notional 5" in denied.detail
    assert "limit 4 BTC" in denied.detail
    assert denied.timestamp == clock.now()
    assert sorted(seen.ids) == sorted([ok.client_order_id, f"{big.client_order_id}:denied"])
    assert engine.approved == 1
    assert engine.denied == {"order_notional": 1}


async def test_risk_engine_counts_open_orders_and_fills_in_exposure(bus: InProcessBus) -> None:
    engine, seen, _ = await started(bus)
    orders = [make_order(Side.BUY, "80", n=i) for i in range(4)]  # 4 BTC each
    for order in orders[:3]:
        await bus.publish(topics.orders("new"), order, msg_id=order.client_order_id)
    await settle(bus)
    # 4 + 4 approved; the third would make 12 BTC > 10.
    assert [o.client_order_id for o in seen.approved] == [o.client_order_id for o in orders[:2]]
    assert [d.reason for d in seen.denied] == ["position_limit"]
    assert engine.book.exposure("ETH/BTC") == Decimal("160")

    # The first fills, the second is canceled: exposure 80, so one more 4 BTC order fits.
    await bus.publish(topics.orders("filled"), _fill(orders[0]))
    await bus.publish(topics.orders("canceled"), _event(orders[1], OrderStatus.CANCELED))
    await settle(bus)
    assert engine.book.position("ETH/BTC") == Decimal("80")
    assert engine.book.exposure("ETH/BTC") == Decimal("80")
    await bus.publish(topics.orders("new"), orders[3], msg_id=orders[3].client_order_id)
    await settle(bus)
    assert seen.approved[-1] == orders[3]

    # A sell that reduces the position is approved.
    sell = make_order(Side.SELL, "80", n=9)
    await bus.publish(topics.orders("new"), sell, msg_id=sell.client_order_id)
    await settle(bus)
    assert seen.approved[-1] == sell


async def test_a_redelivered_order_is_checked_once(bus: InProcessBus) -> None:
    engine, seen, _ = await started(bus)
    order = make_order(Side.BUY, "80", n=1)
    for _ in range(3):
        await bus.publish(topics.orders("new"), order, msg_id=order.client_order_id)
    await settle(bus)
    assert len(seen.approved) == 1
    assert engine.book.exposure("ETH/BTC") == Decimal("80")


def _fill(order: Order) -> Fill:
    assert order.price is not None
    return Fill(
        fill_id=ids.fill_id("paper", order.client_order_id),
        order_id=order.order_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side,
        price=order.price,
        quantity=order.quantity,
        fee=Decimal(0),
        fee_currency="BTC",
        liquidity=Liquidity.TAKER,
        timestamp=T0,
        venue="paper",
        trade_id=order.client_order_id,
    )


def _event(order: Order, status: OrderStatus) -> OrderEvent:
    return OrderEvent(
        order_id=order.order_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        status=status,
        venue="paper",
        timestamp=T0,
    )
