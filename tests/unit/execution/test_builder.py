"""The order builder: limit price at the far touch, target sizing, deterministic ids."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from decimal import Decimal

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlab.adapters.sim.data import bundled_dir
from quantlab.bus import InProcessBus, topics
from quantlab.bus.base import Envelope
from quantlab.core import ids
from quantlab.core.enums import Liquidity, OrderStatus, OrderType, Side, TimeInForce
from quantlab.core.instruments import InstrumentBook, to_decimal
from quantlab.core.messages import Fill, Order, OrderEvent, Signal
from quantlab.execution.builder import OrderBuilder, limit_price

# Same examples on every run (no example database, no random seed): deterministic tests.
DETERMINISTIC = settings(derandomize=True, database=None, deadline=None)

TICK, LOT = Decimal("0.000001"), Decimal("0.001")
T0 = dt.datetime(2018, 1, 10, 4, 55, tzinfo=dt.UTC)
# Real ETH/BTC closes: prices with many significant digits near 0.09.
CLOSES = (
    pl.read_parquet(bundled_dir() / "binance_btc_pairs_5m_2018-01.parquet")
    .filter(pl.col("symbol") == "ETH/BTC")["close"]
    .head(500)
    .to_list()
)


def make_signal(
    side: Side = Side.BUY,
    mid: float = 0.091234,
    spread: float = 0.0000913,
    n: int = 0,
    symbol: str = "ETH/BTC",
) -> Signal:
    return Signal(
        signal_id=ids.signal_id("ema_cross", symbol, n),
        strategy_id="ema_cross",
        symbol=symbol,
        side=side,
        strength=1.0,
        confidence=0.5,
        timestamp=T0 + dt.timedelta(minutes=5 * n),
        mid=mid,
        spread=spread,
    )


def make_builder(notional: str = "1", tif: TimeInForce = TimeInForce.IOC) -> OrderBuilder:
    return OrderBuilder(
        InstrumentBook(TICK, LOT), order_notional=Decimal(notional), time_in_force=tif
    )


def fill_for(order: Order, quantity: Decimal, trade_id: str) -> Fill:
    return Fill(
        fill_id=ids.fill_id("paper", trade_id),
        order_id=order.order_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side,
        price=order.price or Decimal(1),
        quantity=quantity,
        fee=Decimal(0),
        fee_currency="BTC",
        liquidity=Liquidity.TAKER,
        timestamp=order.timestamp,
        venue="paper",
        trade_id=trade_id,
    )


# -- limit price ----------------------------------------------------------------------------


def test_limit_price_is_the_far_touch() -> None:
    assert limit_price(Side.BUY, 100.0, 0.5) == Decimal("100.25")
    assert limit_price(Side.SELL, 100.0, 0.5) == Decimal("99.75")
    assert limit_price(Side.BUY, 0.1, 0.0) == Decimal("0.1")  # no binary noise


@settings(DETERMINISTIC)
@given(
    st.sampled_from(CLOSES),
    st.floats(0.0, 50.0),
    st.sampled_from([Side.BUY, Side.SELL]),
)
def test_order_price_is_the_touch_rounded_to_tick_away_from_it(
    mid: float, spread_bps: float, side: Side
) -> None:
    spread = mid * spread_bps / 1e4
    order = make_builder().build(make_signal(side, mid, spread))
    assert order is not None
    assert order.price is not None
    touch = to_decimal(mid) + side.sign * to_decimal(spread) / 2
    assert touch == limit_price(side, mid, spread)
    assert order.price % TICK == 0
    if side is Side.BUY:  # rounded up: never below the ask, less than a tick above it
        assert touch <= order.price < touch + TICK
    else:  # rounded down
        assert touch - TICK < order.price <= touch


def test_order_price_on_real_data_example() -> None:
    mid = CLOSES[0]
    order = make_builder().build(make_signal(Side.BUY, mid, mid * 10 / 1e4))
    assert order is not None
    expected = ((to_decimal(mid) + to_decimal(mid * 10 / 1e4) / 2) / TICK).to_integral_value(
        "ROUND_CEILING"
    ) * TICK
    assert order.price == expected


# -- sizing ---------------------------------------------------------------------------------


def test_target_sizing_from_flat() -> None:
    builder = make_builder(notional="1")
    order = builder.build(make_signal(Side.BUY, mid=0.05, spread=0.0))
    assert order is not None
    assert order.quantity == Decimal("20")  # 1 BTC / 0.05
    assert order.side is Side.BUY
    sell = builder.build(make_signal(Side.SELL, mid=0.03, spread=0.0))
    assert sell is not None
    assert (sell.side, sell.quantity) == (Side.SELL, Decimal("33.333"))  # rounded down to lot


def test_target_sizing_reduces_by_exposure_and_stops_at_target() -> None:
    builder = make_builder(notional="1")
    first = builder.build(make_signal(Side.BUY, mid=0.05, spread=0.0, n=1))
    assert first is not None
    builder.book.add_order(first)  # on its way: pending +20
    assert builder.build(make_signal(Side.BUY, mid=0.05, spread=0.0, n=2)) is None
    assert builder.skipped["at_target"] == 1
    # Half filled, the rest canceled: 10 held, so the next buy tops up to 20.
    builder.book.apply_fill(fill_for(first, Decimal("10"), "p1"))
    builder.book.close_order(first.client_order_id)
    topup = builder.build(make_signal(Side.BUY, mid=0.05, spread=0.0, n=3))
    assert topup is not None
    assert topup.quantity == Decimal("10")
    # The price moved: 1 BTC at 0.04 is 25, so 15 more.
    more = builder.build(make_signal(Side.BUY, mid=0.04, spread=0.0, n=4))
    assert more is not None
    assert more.quantity == Decimal("15")
    # A sell from +10 targets -20: 30 to sell.
    flip = builder.build(make_signal(Side.SELL, mid=0.05, spread=0.0, n=5))
    assert flip is not None
    assert (flip.side, flip.quantity) == (Side.SELL, Decimal("30"))
    # Beyond the target already (price fell): no order either.
    assert builder.build(make_signal(Side.BUY, mid=0.1, spread=0.0, n=6)) is None
    assert builder.skipped["at_target"] == 2


def test_skips_below_lot_and_without_price() -> None:
    builder = make_builder(notional="0.00001")
    assert builder.build(make_signal(Side.BUY, mid=0.05)) is None  # 0.0002 < one lot
    assert builder.skipped["below_lot"] == 1
    assert make_builder().build(make_signal(Side.BUY, mid=0.0)) is None
    # A sell whose far touch rounds to zero has no price.
    builder = make_builder()
    assert builder.build(make_signal(Side.SELL, mid=0.0000004, spread=0.0000004)) is None
    assert builder.skipped["no_price"] == 1


# -- ids ------------------------------------------------------------------------------------


def test_client_order_id_is_derived_from_the_signal_id() -> None:
    signal = make_signal(n=7)
    a, b = make_builder().build(signal), make_builder().build(signal)
    assert a is not None
    assert b is not None
    assert a.client_order_id == b.client_order_id == ids.client_order_id(signal.signal_id)
    assert a.order_id == ids.order_id(a.client_order_id)
    assert a == b
    other = make_builder().build(make_signal(n=8))
    assert other is not None
    assert other.client_order_id != a.client_order_id


def test_order_fields() -> None:
    signal = make_signal(Side.SELL, n=3)
    order = make_builder(tif=TimeInForce.GTC).build(signal)
    assert order is not None
    assert order.order_type is OrderType.LIMIT
    assert order.time_in_force is TimeInForce.GTC
    assert (order.strategy_id, order.signal_id) == ("ema_cross", signal.signal_id)
    assert order.timestamp == signal.timestamp
    assert order.quantity % LOT == 0


# -- on the bus -----------------------------------------------------------------------------


@pytest.fixture
async def bus() -> AsyncIterator[InProcessBus]:
    bus = InProcessBus()
    yield bus
    await bus.close()


async def test_a_replayed_signal_builds_one_order(bus: InProcessBus) -> None:
    builder = make_builder()
    await builder.start(bus)
    orders: list[Order] = []

    async def collect(envelope: Envelope) -> None:
        orders.append(envelope.payload)

    bus.consume(topics.orders("new"), collect, name="test")
    signal = make_signal(n=1)
    await bus.publish(topics.signals("ema_cross"), signal, msg_id=str(signal.signal_id))
    await bus.publish(topics.signals("ema_cross"), signal, msg_id=str(signal.signal_id))
    await bus.publish(topics.signals("ema_cross"), signal, msg_id="another-delivery-id")
    await asyncio.wait_for(bus.drain(), 5)
    assert len(orders) == 1
    assert orders[0].client_order_id == ids.client_order_id(signal.signal_id)
    assert builder.built == 1
    # Canceled: the exposure is released, the next signal trades again.
    await bus.publish(topics.orders("canceled"), _canceled(orders[0]))
    await asyncio.wait_for(bus.drain(), 5)
    await bus.publish(topics.signals("ema_cross"), make_signal(n=2))
    await asyncio.wait_for(bus.drain(), 5)
    assert len(orders) == 2
    assert not bus.handler_errors


def _canceled(order: Order) -> OrderEvent:
    return OrderEvent(
        order_id=order.order_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        status=OrderStatus.CANCELED,
        venue="paper",
        timestamp=order.timestamp,
    )
