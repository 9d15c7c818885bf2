"""The risk engine on a real in-process bus: every denial reason, exposure, marks, speed."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

import numpy as np
import pytest
from riskkit import (
    SECOND,
    T0,
    T0_NS,
    WIDE,
    Outcomes,
    batch,
    event_of,
    feed,
    fill_of,
    make_order,
    quotes,
    settle,
    start_engine,
    submit,
)

from quantlab.bus import InProcessBus, topics
from quantlab.core.clock import SimulatedClock
from quantlab.core.enums import BreakerState, EventType, OrderStatus, Side
from quantlab.core.messages import OrderDenied
from quantlab.risk import REASONS, BreakerConfig, RiskEngine, RiskLimits, VarConfig
from quantlab.risk.var import portfolio_var

LIMITS = RiskLimits(max_position_notional=Decimal("10"), max_order_notional=Decimal("4"))
MARK = ("ETH/BTC", T0_NS, 0.05)


@pytest.fixture
async def bus() -> AsyncIterator[InProcessBus]:
    bus = InProcessBus()
    yield bus
    await bus.close()


async def started(
    bus: InProcessBus, limits: RiskLimits = LIMITS, **kwargs: object
) -> tuple[RiskEngine, Outcomes, SimulatedClock]:
    engine, seen, clock = await start_engine(bus, limits, **kwargs)  # type: ignore[arg-type]
    await feed(bus, clock, [MARK])
    return engine, seen, clock


# -- approvals, exposure, redelivery --------------------------------------------------------


async def test_risk_engine_approves_and_denies_on_the_bus(bus: InProcessBus) -> None:
    engine, seen, clock = await started(bus)
    ok = make_order(Side.BUY, "80", n=1)  # 4 BTC
    big = make_order(Side.BUY, "100", n=2)  # 5 BTC > order limit
    await submit(bus, ok, big)
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
    assert engine.stats()["denied"] == {"order_notional": 1}
    await engine.stop()


async def test_risk_engine_counts_open_orders_and_fills_in_exposure(bus: InProcessBus) -> None:
    engine, seen, _ = await started(bus)
    orders = [make_order(Side.BUY, "80", n=i) for i in range(4)]  # 4 BTC each
    await submit(bus, *orders[:3])
    # 4 + 4 approved; the third would make 12 BTC > 10.
    assert [o.client_order_id for o in seen.approved] == [o.client_order_id for o in orders[:2]]
    assert [d.reason for d in seen.denied] == ["position_limit"]
    assert engine.book.exposure("ETH/BTC") == Decimal("160")

    # The first fills, the second is canceled: exposure 80, so one more 4 BTC order fits.
    await bus.publish(topics.orders("filled"), fill_of(orders[0]))
    await bus.publish(topics.orders("canceled"), event_of(orders[1], OrderStatus.CANCELED))
    await settle(bus)
    assert engine.book.position("ETH/BTC") == Decimal("80")
    assert engine.book.exposure("ETH/BTC") == Decimal("80")
    await submit(bus, orders[3])
    assert seen.approved[-1] == orders[3]

    # A sell that reduces the position is approved.
    sell = make_order(Side.SELL, "80", n=9)
    await submit(bus, sell)
    assert seen.approved[-1] == sell
    await engine.stop()


async def test_a_redelivered_order_is_checked_once(bus: InProcessBus) -> None:
    engine, seen, _ = await started(bus)
    order = make_order(Side.BUY, "80", n=1)
    for _ in range(3):
        await bus.publish(topics.orders("new"), order, msg_id=order.client_order_id)
    await settle(bus)
    assert len(seen.approved) == 1
    assert engine.book.exposure("ETH/BTC") == Decimal("80")


async def test_a_market_order_is_valued_at_the_mid_of_quotes(bus: InProcessBus) -> None:
    engine, seen, clock = await start_engine(bus, LIMITS)
    frame = quotes([("ETH/BTC", T0_NS, 0.049, 0.051), ("ETH/BTC", T0_NS + SECOND, 0.059, 0.061)])
    clock.advance_to(T0_NS + SECOND)
    await bus.publish(topics.market_data(EventType.QUOTE), batch(frame, EventType.QUOTE))
    await settle(bus)
    assert engine.marks["ETH/BTC"] == pytest.approx(0.06)
    now = clock.now()
    ok = make_order(Side.BUY, "60", price=None, n=1, timestamp=now)  # 60 x 0.06 = 3.6 BTC
    big = make_order(Side.BUY, "70", price=None, n=2, timestamp=now)  # 4.2 BTC
    await submit(bus, ok, big)
    assert seen.approved == [ok]
    assert [d.reason for d in seen.denied] == ["order_notional"]
    assert "order notional 4.2" in seen.denied[0].detail


async def test_older_data_never_moves_a_mark_back(bus: InProcessBus) -> None:
    engine, _, clock = await started(bus)
    await feed(bus, clock, [("ETH/BTC", T0_NS + 60 * SECOND, 0.06)])
    await feed(bus, clock, [("ETH/BTC", T0_NS + 30 * SECOND, 0.04)])  # late
    assert engine.marks["ETH/BTC"] == 0.06
    assert engine.last_ts["ETH/BTC"] == T0_NS + 60 * SECOND


async def test_an_order_is_valued_at_the_market_its_strategy_saw(bus: InProcessBus) -> None:
    # One backtest batch holds many bars: an order from the first bar is collared against
    # that bar's price, not the batch's last (from the order's point of view, the future).
    engine, seen, clock = await start_engine(bus, LIMITS)
    rows = [("ETH/BTC", T0_NS + k * 300 * SECOND, 0.05 + 0.0001 * k) for k in range(101)]
    await feed(bus, clock, rows)
    assert engine.marks["ETH/BTC"] == pytest.approx(0.06)
    early = make_order(Side.BUY, "1", "0.0501", n=1)  # at T0: mid 0.05
    late = make_order(Side.BUY, "1", "0.0501", n=2, timestamp=clock.now())  # mid 0.06
    await submit(bus, early, late)
    assert seen.approved == [early]
    (denial,) = seen.denied
    assert denial.order == late
    assert "limit price 0.0501 is 1650.0 bps from mid 0.06" in denial.detail
    # Between bars: the last bar at or before the order; after the batch: the newest mark.
    assert engine.mark_at("ETH/BTC", T0 + dt.timedelta(minutes=4)) == 0.05
    assert engine.mark_at("ETH/BTC", T0 + dt.timedelta(minutes=5)) == pytest.approx(0.0501)
    assert engine.mark_at("ETH/BTC", T0.replace(year=2019)) == pytest.approx(0.06)


# -- every denial reason --------------------------------------------------------------------

Scenario = Callable[[InProcessBus], Awaitable[tuple[list[OrderDenied], list[str]]]]


async def _halted(bus: InProcessBus) -> tuple[list[OrderDenied], list[str]]:
    engine, seen, _ = await started(bus)
    await engine.kill("operator pressed the button")
    assert engine.breaker.state is BreakerState.HALTED
    await submit(bus, make_order(Side.SELL, "1"))  # even a reducing order
    return seen.denied, ["breaker HALTED", "kill_switch: operator pressed the button"]


async def _bad_quantity(bus: InProcessBus) -> tuple[list[OrderDenied], list[str]]:
    _, seen, _ = await started(bus)
    await submit(bus, make_order(Side.BUY, "NaN"))
    return seen.denied, ["quantity NaN must be a finite number > 0"]


async def _bad_price(bus: InProcessBus) -> tuple[list[OrderDenied], list[str]]:
    _, seen, _ = await started(bus)
    await submit(bus, make_order(Side.BUY, "1", price="-0.05"))
    return seen.denied, ["price -0.05 must be a finite number > 0"]


async def _unknown_symbol(bus: InProcessBus) -> tuple[list[OrderDenied], list[str]]:
    _, seen, _ = await started(bus)
    await submit(bus, make_order(Side.BUY, "1", symbol="LTC/BTC"))  # never seen
    return seen.denied, ["LTC/BTC: no market data seen for it"]


async def _stale_data(bus: InProcessBus) -> tuple[list[OrderDenied], list[str]]:
    _, seen, clock = await started(bus)
    clock.advance_by(901 * SECOND)
    await submit(bus, make_order(Side.BUY, "1"))
    return seen.denied, [
        "last market data at 2018-01-10T04:55:00+00:00 is 901.000s old",
        "> stale_after_s 900s",
    ]


async def _reduce_only(bus: InProcessBus) -> tuple[list[OrderDenied], list[str]]:
    engine, seen, clock = await started(
        bus, breaker=BreakerConfig(max_drawdown_soft=0.5, max_drawdown_hard=5.0)
    )
    buy = make_order(Side.BUY, "80", n=1)  # 4 BTC
    await submit(bus, buy)
    await bus.publish(topics.orders("filled"), fill_of(buy))
    await settle(bus)
    await feed(bus, clock, [("ETH/BTC", T0_NS + 300 * SECOND, 0.04)])  # equity -0.8 BTC
    assert engine.breaker.state is BreakerState.REDUCING
    assert [e.trigger for e in seen.breaker] == ["drawdown"]
    more, less = make_order(Side.BUY, "1", "0.04", n=2), make_order(Side.SELL, "10", "0.04", n=3)
    await submit(bus, more, less)
    assert seen.approved[-1] == less  # reducing is allowed
    return seen.denied, ["breaker REDUCING (drawdown:", "buy 1 would take position 80 to 81"]


async def _order_quantity(bus: InProcessBus) -> tuple[list[OrderDenied], list[str]]:
    limits = RiskLimits(
        max_position_notional=Decimal(10),
        max_order_notional=Decimal(4),
        max_order_quantity=Decimal(50),
    )
    _, seen, _ = await started(bus, limits)
    await submit(bus, make_order(Side.BUY, "60"))
    return seen.denied, ["order quantity 60 > limit 50"]


async def _order_notional(bus: InProcessBus) -> tuple[list[OrderDenied], list[str]]:
    _, seen, _ = await started(bus)
    await submit(bus, make_order(Side.BUY, "100"))
    return seen.denied, ["order notional 5.00 BTC > limit 4 BTC"]


async def _price_collar(bus: InProcessBus) -> tuple[list[OrderDenied], list[str]]:
    _, seen, _ = await started(bus)
    await submit(bus, make_order(Side.BUY, "1", price="0.06"))
    return seen.denied, ["limit price 0.06 is 2000.0 bps from mid 0.05 > collar 500 bps"]


async def _position_limit(bus: InProcessBus) -> tuple[list[OrderDenied], list[str]]:
    _, seen, _ = await started(bus)
    await submit(bus, *(make_order(Side.BUY, "80", n=i) for i in range(3)))
    return seen.denied, ["projected position 240 x 0.05 = 12.00 BTC > limit 10 BTC"]


async def _rate_limit(bus: InProcessBus) -> tuple[list[OrderDenied], list[str]]:
    limits = RiskLimits(
        max_position_notional=Decimal(10), max_order_notional=Decimal(4), rate_per_s=1, burst=2
    )
    _, seen, _ = await started(bus, limits)
    await submit(bus, *(make_order(Side.BUY, "1", n=i) for i in range(3)))
    assert len(seen.approved) == 2
    return seen.denied, ["strategy risk-test: more than 1 orders/s (burst 2)"]


async def _var_limit(bus: InProcessBus) -> tuple[list[OrderDenied], list[str]]:
    var = VarConfig(limit=0.05, min_obs=30, interval_s=300.0)
    engine, seen, clock = await started(bus, WIDE, var=var)
    # 41 five-minute bars (40 closed intervals: 39 returns), alternating +2% / -1%.
    price, rows = 0.05, []
    for k in range(41):
        rows.append(("ETH/BTC", T0_NS + k * 300 * SECOND, price))
        price *= 1.02 if k % 2 == 0 else 0.99
    await feed(bus, clock, rows)
    assert engine.var.window.count == 39
    mark = engine.marks["ETH/BTC"]
    px, now = f"{mark:.6f}", clock.now()
    small = make_order(Side.BUY, "40", px, n=1, timestamp=now)
    big = make_order(Side.BUY, "100", px, n=2, timestamp=now)
    await submit(bus, small, big)
    assert seen.approved == [small]  # 40 x 0.0557 x 1% = 0.022 < 0.05
    # 99% over 39 scenarios: the worst loss, -1% of the position's notional.
    returns = engine.var.window.returns()
    pre = portfolio_var(returns, np.array([40 * mark]), 0.99)
    post = portfolio_var(returns, np.array([140 * mark]), 0.99)
    assert post == pytest.approx(140 * mark * 0.01)
    return seen.denied, [
        f"portfolio historical VaR 99% would be {post:.8g} BTC",
        f"(now {pre:.8g}, incremental {post - pre:+.8g})",
        "> limit 0.05 BTC",
    ]


SCENARIOS: dict[str, Scenario] = {
    "halted": _halted,
    "bad_quantity": _bad_quantity,
    "bad_price": _bad_price,
    "unknown_symbol": _unknown_symbol,
    "stale_data": _stale_data,
    "reduce_only": _reduce_only,
    "order_quantity": _order_quantity,
    "order_notional": _order_notional,
    "price_collar": _price_collar,
    "position_limit": _position_limit,
    "rate_limit": _rate_limit,
    "var_limit": _var_limit,
}


def test_every_reason_has_a_scenario() -> None:
    assert list(SCENARIOS) == list(REASONS)


@pytest.mark.parametrize("reason", REASONS)
async def test_each_denial_reason_on_the_bus(bus: InProcessBus, reason: str) -> None:
    denied, details = await SCENARIOS[reason](bus)
    (denial,) = denied
    assert denial.reason == reason
    for part in details:
        assert part in denial.detail, f"{part!r} not in {denial.detail!r}"
    assert denial.timestamp.tzinfo is not None


async def test_a_symbol_with_no_instrument_is_unknown(bus: InProcessBus) -> None:
    _, seen, _ = await started(bus)
    await submit(bus, make_order(Side.BUY, "1", symbol="ETHBTC"))
    (denial,) = seen.denied
    assert denial.reason == "unknown_symbol"
    assert "ETHBTC: no instrument" in denial.detail


@pytest.mark.parametrize(
    ("quantity", "price", "reason", "part"),
    [
        ("0", "0.05", "bad_quantity", "quantity 0 must"),
        ("-1", "0.05", "bad_quantity", "quantity -1 must"),
        ("Infinity", "0.05", "bad_quantity", "quantity Infinity must"),
        ("1", "NaN", "bad_price", "price NaN must"),
        ("1", "0", "bad_price", "price 0 must"),
        ("1", "Infinity", "bad_price", "price Infinity must"),
    ],
)
async def test_bad_values_never_leave(
    bus: InProcessBus, quantity: str, price: str, reason: str, part: str
) -> None:
    engine, seen, _ = await started(bus)
    await submit(bus, make_order(Side.BUY, quantity, price))
    assert seen.approved == []
    assert [(d.reason, part in d.detail) for d in seen.denied] == [(reason, True)]
    assert engine.book.exposure("ETH/BTC") == 0


async def test_gross_position_limit_on_the_bus(bus: InProcessBus) -> None:
    limits = RiskLimits(
        max_position_notional=Decimal(10),
        max_order_notional=Decimal(4),
        max_gross_notional=Decimal(10),
    )
    engine, seen, _ = await started(bus, limits)
    buy, sell = make_order(Side.BUY, "80", n=1), make_order(Side.SELL, "80", n=2)
    await submit(bus, buy, sell)  # net 0, open 80 each side: gross 8 BTC
    assert seen.approved == [buy, sell]
    await submit(bus, make_order(Side.SELL, "50", n=3))  # net -2.5 BTC, gross 10.5 BTC
    (denial,) = seen.denied
    assert denial.reason == "position_limit"
    assert "projected gross open exposure 210 x 0.05 = 10.50 BTC > gross limit 10 BTC" in (
        denial.detail
    )
    # A fill moves quantity from open to position: gross is unchanged, still long 80 + short 80.
    await bus.publish(topics.orders("filled"), fill_of(buy))
    await settle(bus)
    assert engine.sides.gross("ETH/BTC", engine.book.position("ETH/BTC")) == Decimal(160)


async def test_var_is_not_a_reason_to_refuse_an_order_that_lowers_it(bus: InProcessBus) -> None:
    var = VarConfig(limit=0.01, min_obs=30, interval_s=300.0)
    engine, seen, clock = await started(bus, WIDE, var=var)
    price, rows = 0.05, []
    for k in range(41):
        rows.append(("ETH/BTC", T0_NS + k * 300 * SECOND, price))
        price *= 1.02 if k % 2 == 0 else 0.99
    await feed(bus, clock, rows)
    px, now = f"{engine.marks['ETH/BTC']:.6f}", clock.now()
    long = make_order(
        Side.BUY, "30", px, n=1, timestamp=now
    )  # VaR 30 x 0.0557 x 1% = 0.0167 > 0.01: denied
    await submit(bus, long)
    assert [d.reason for d in seen.denied] == ["var_limit"]
    # Hold a position anyway (a fill from before), then: selling part of it lowers VaR.
    await bus.publish(topics.orders("filled"), fill_of(long))
    await settle(bus)
    assert engine.var.value() > 0.01
    sell = make_order(Side.SELL, "10", px, n=2, timestamp=now)  # VaR 0.011 > 0.01 still, but lower
    await submit(bus, sell)
    assert seen.approved == [sell]
    assert engine.var.value() > 0.01


# -- the check path -------------------------------------------------------------------------


async def test_check_is_pure_and_well_under_a_millisecond(bus: InProcessBus) -> None:
    limits = RiskLimits(
        max_position_notional=Decimal(10**6),
        max_order_notional=Decimal(10**6),
        max_gross_notional=Decimal(10**6),
        max_order_quantity=Decimal(10**6),
        rate_per_s=1.0,
        burst=1,
    )
    var = VarConfig(limit=10.0**6, min_obs=30, window=500, interval_s=60.0)
    engine, _, clock = await start_engine(bus, limits, var=var)
    rng = np.random.default_rng(7)
    symbols = ["ETH/BTC", "LTC/BTC", "XMR/BTC", "ZEC/BTC", "DASH/BTC"]
    prices = dict.fromkeys(symbols, 0.05)
    rows = []
    for k in range(600):
        for s in symbols:
            prices[s] *= 1.0 + rng.normal(0.0, 0.01)
            rows.append((s, T0_NS + k * 60 * SECOND, prices[s]))
    await feed(bus, clock, rows)
    assert engine.var.ready
    assert engine.var.window.count == 500
    now = clock.now()
    for i, s in enumerate(symbols):  # a portfolio to compute VaR over
        order = make_order(
            Side.BUY, "10", f"{engine.marks[s]:.6f}", n=i, symbol=s, strategy=s, timestamp=now
        )
        await submit(bus, order)
    assert engine.approved == 5
    order = make_order(Side.SELL, "3", f"{engine.marks['ETH/BTC']:.6f}", n=99, timestamp=now)
    times = np.empty(3000)
    for i in range(times.size):
        t = time.perf_counter_ns()
        denial = engine.check(order)
        times[i] = time.perf_counter_ns() - t
    assert denial is None
    refreshes = engine.var.refreshes
    assert refreshes == 1  # the covariance is computed once for the window, not per order
    p99_us = float(np.percentile(times[100:], 99)) / 1000
    assert p99_us < 1000, f"check p99 {p99_us:.1f} us"
    # Side-effect free: the strategy's one token is still there.
    assert engine.throttle is not None
    assert engine.throttle.available(order.strategy_id, clock.now_ns())


async def test_stats_report_var_and_the_breaker(bus: InProcessBus) -> None:
    engine, _, _ = await started(bus)
    stats = engine.stats()
    assert stats["breaker"]["state"] == "active"
    assert stats["var"]["ready"] is False
    assert stats["var"]["symbols"] == 1
    assert stats["throttle"] is None
