"""A runaway strategy: 10,000 orders in one simulated second are throttled, then halted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from riskkit import T0_NS, feed, make_order, start_engine

from quantlab.bus import InProcessBus, topics
from quantlab.core.clock import ns_to_datetime
from quantlab.core.enums import BreakerState, Side
from quantlab.risk import BreakerConfig, RiskLimits, read_state

RATE, BURST, MAX_ERRORS = 100.0, 20, 1000
STEP_NS = 100_000  # 10,000 orders 100 us apart: one simulated second


@pytest.fixture
async def bus() -> AsyncIterator[InProcessBus]:
    bus = InProcessBus()
    yield bus
    await bus.close()


async def test_a_runaway_strategy_is_throttled_then_halted(
    bus: InProcessBus, tmp_path: Path
) -> None:
    path = tmp_path / "breaker.json"
    limits = RiskLimits(
        max_position_notional=Decimal(10**9),
        max_order_notional=Decimal(10**9),
        rate_per_s=RATE,
        burst=BURST,
    )
    engine, seen, clock = await start_engine(
        bus,
        limits,
        breaker=BreakerConfig(
            state_path=str(path), max_errors=MAX_ERRORS, error_window_s=1.0, watch_s=3600
        ),
    )
    await feed(bus, clock, [("ETH/BTC", T0_NS, 0.05)])
    index: dict[str, int] = {}
    for i in range(10_000):
        clock.advance_to(T0_NS + i * STEP_NS)
        order = make_order(Side.BUY, "1", n=i, strategy="runaway")
        index[order.client_order_id] = i
        await bus.publish(topics.orders("new"), order, msg_id=order.client_order_id)
        await bus.drain()
    assert not bus.handler_errors

    # The bucket gives the burst, then one order per 10 ms; every refusal is an error, and
    # the (MAX_ERRORS + 1)-th within the second trips the breaker. Order i has then seen
    # i + 1 orders of which 20 + i // 100 were approved: i + 1 - 20 - i // 100 = 1001 at
    # i = 1030, after the burst and 10 refills.
    tripped_at = 1030
    approved = [index[o.client_order_id] for o in seen.approved]
    assert approved == [*range(BURST), *range(100, tripped_at, 100)]
    assert engine.approved == BURST + int(RATE * tripped_at * STEP_NS / 1e9) == 30
    assert engine.denied == {
        "rate_limit": MAX_ERRORS + 1,
        "halted": 10_000 - (tripped_at + 1),
    }
    rate_limited = [index[d.order.client_order_id] for d in seen.denied if d.reason == "rate_limit"]
    assert max(rate_limited) == tripped_at
    assert min(index[d.order.client_order_id] for d in seen.denied if d.reason == "halted") == (
        tripped_at + 1
    )

    # One breaker event, published after it was persisted.
    (event,) = seen.breaker
    assert (event.previous, event.state, event.trigger) == (
        BreakerState.ACTIVE,
        BreakerState.HALTED,
        "error_rate",
    )
    assert event.reason == "1001 errors (1001 rate_limit) within 1s > max_errors 1000"
    assert event.timestamp == ns_to_datetime(T0_NS + tripped_at * STEP_NS)
    record = read_state(path)
    assert record is not None
    assert (record.state, record.trigger, record.reason) == (
        BreakerState.HALTED,
        "error_rate",
        event.reason,
    )
    assert engine.breaker.state is BreakerState.HALTED
    await engine.stop()
