"""The order throttle: a token bucket per strategy, exact on a simulated clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from riskkit import SECOND, T0_NS, feed, make_order, start_engine, submit

from quantlab.bus import InProcessBus, topics
from quantlab.core.enums import Side
from quantlab.core.errors import ConfigError
from quantlab.risk import BreakerConfig, RiskLimits
from quantlab.risk.throttle import Throttle

MS = 1_000_000


def test_the_bucket_starts_full_and_refills_one_token_per_period() -> None:
    t = Throttle(rate_per_s=10, burst=3)  # one token per 100 ms
    assert t.period_ns == 100 * MS
    for _ in range(3):
        assert t.available("a", 0)
        t.consume("a", 0)
    assert not t.available("a", 0)
    assert not t.available("a", 100 * MS - 1)  # one nanosecond short
    assert t.available("a", 100 * MS)
    t.consume("a", 100 * MS)
    assert not t.available("a", 100 * MS)
    assert t.tokens("a", 150 * MS) == pytest.approx(0.5)
    assert t.tokens("a", 60 * SECOND) == 3.0  # never more than the burst


def test_keys_have_their_own_buckets() -> None:
    t = Throttle(rate_per_s=1, burst=1)
    t.consume("a", 0)
    assert not t.available("a", 0)
    assert t.available("b", 0)


def test_a_clock_that_steps_back_refills_nothing() -> None:
    t = Throttle(rate_per_s=1, burst=1)
    t.consume("a", 10 * SECOND)
    assert not t.available("a", 5 * SECOND)
    assert not t.available("a", 10 * SECOND + SECOND - 1)
    assert t.available("a", 11 * SECOND)


def test_fractional_rates_round_the_period_to_the_nanosecond() -> None:
    t = Throttle(rate_per_s=3, burst=1)
    assert t.period_ns == 333_333_333
    with pytest.raises(ConfigError, match=r"risk\.rate_per_s"):
        Throttle(rate_per_s=0, burst=1)


@pytest.fixture
async def bus() -> AsyncIterator[InProcessBus]:
    bus = InProcessBus()
    yield bus
    await bus.close()


def _limits(rate: float, burst: int) -> RiskLimits:
    return RiskLimits(
        max_position_notional=Decimal(10**9),
        max_order_notional=Decimal(4),
        rate_per_s=rate,
        burst=burst,
    )


async def test_the_engine_throttles_each_strategy_on_its_clock(bus: InProcessBus) -> None:
    engine, seen, clock = await start_engine(bus, _limits(2, 2))
    await feed(bus, clock, [("ETH/BTC", T0_NS, 0.05)])
    a = [make_order(Side.BUY, "1", n=i, strategy="a") for i in range(6)]
    b = make_order(Side.BUY, "1", n=0, strategy="b")
    await submit(bus, a[0], a[1], a[2], b)  # t=0: two of a, then a is out; b has its own
    assert seen.approved == [a[0], a[1], b]
    clock.advance_by(SECOND // 2 - 1)
    await submit(bus, a[3])  # 1 ns short of a token
    clock.advance_by(1)
    await submit(bus, a[4], a[5])  # t=0.5 s: exactly one token
    assert seen.approved == [a[0], a[1], b, a[4]]
    assert [d.order for d in seen.denied] == [a[2], a[3], a[5]]
    assert {d.reason for d in seen.denied} == {"rate_limit"}
    assert engine.denied == {"rate_limit": 3}


async def test_a_refused_order_costs_no_token(bus: InProcessBus) -> None:
    _, seen, clock = await start_engine(bus, _limits(1, 1))
    await feed(bus, clock, [("ETH/BTC", T0_NS, 0.05)])
    big, ok = make_order(Side.BUY, "100", n=1), make_order(Side.BUY, "1", n=2)
    await submit(bus, big, ok)
    assert [d.reason for d in seen.denied] == ["order_notional"]
    assert seen.approved == [ok]


async def test_one_simulated_second_of_orders_gets_burst_plus_rate(bus: InProcessBus) -> None:
    # 10,000 orders 100 us apart: the burst of 20, then one per 10 ms for 0.9999 s: 99 more.
    engine, seen, clock = await start_engine(
        bus, _limits(100, 20), breaker=BreakerConfig(max_errors=None)
    )
    await feed(bus, clock, [("ETH/BTC", T0_NS, 0.05)])
    index = {}
    for i in range(10_000):
        clock.advance_to(T0_NS + i * 100_000)
        order = make_order(Side.BUY, "1", n=i)
        index[order.client_order_id] = i
        await bus.publish(topics.orders("new"), order, msg_id=order.client_order_id)
        await bus.drain()
    assert engine.approved == 20 + 99
    assert engine.denied == {"rate_limit": 10_000 - 119}
    # Which ones: the first 20, then the one arriving as each token is due (every 100th).
    approved = [index[o.client_order_id] for o in seen.approved]
    assert approved == [*range(20), *range(100, 10_000, 100)]
