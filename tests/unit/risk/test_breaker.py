"""The circuit breaker: each trigger, no de-escalation, the state file, other processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from riskkit import (
    INSTRUMENTS,
    SECOND,
    T0_NS,
    WIDE,
    Outcomes,
    event_of,
    feed,
    make_order,
    start_engine,
    submit,
)

from quantlab.bus import InProcessBus, topics
from quantlab.bus.base import Envelope
from quantlab.core.clock import SimulatedClock
from quantlab.core.enums import BreakerState, OrderStatus, Side
from quantlab.core.errors import ConfigError, StorageError
from quantlab.core.messages import BreakerEvent
from quantlab.risk import BreakerConfig, CircuitBreaker, RiskEngine, kill, read_state, reset
from quantlab.risk.statefile import BreakerRecord

ACTIVE, REDUCING, HALTED = BreakerState.ACTIVE, BreakerState.REDUCING, BreakerState.HALTED


def _states(changes: tuple[object, ...]) -> list[tuple[BreakerState, BreakerState, str]]:
    out = []
    for change in changes:
        event = change.event  # type: ignore[attr-defined]
        out.append((event.previous, event.state, event.trigger))
    return out


def breaker(**config: object) -> CircuitBreaker:
    return CircuitBreaker(BreakerConfig(**config), SimulatedClock(T0_NS))  # type: ignore[arg-type]


# -- triggers -------------------------------------------------------------------------------


def test_drawdown_soft_reduces_hard_halts_and_recovery_changes_nothing() -> None:
    b = breaker(max_drawdown_soft=5.0, max_drawdown_hard=10.0, max_errors=None)
    assert b.on_equity(100.0, 0) == ()
    assert b.on_equity(95.0, 1) == ()  # exactly the soft limit: not beyond it
    (change,) = b.on_equity(94.0, 2)
    assert _states((change,)) == [(ACTIVE, REDUCING, "drawdown")]
    assert change.event.reason == "drawdown 6 from peak 100 (equity 94) > soft limit 5"
    assert b.on_equity(99.0, 3) == ()  # recovered: still REDUCING, never down by itself
    assert b.state is REDUCING
    (change,) = b.on_equity(89.5, 4)
    assert _states((change,)) == [(REDUCING, HALTED, "drawdown")]
    assert "drawdown 10.5 from peak 100 (equity 89.5) > hard limit 10" in change.event.reason
    assert b.on_equity(500.0, 5) == ()
    assert b.state is HALTED


def test_a_crash_straight_past_the_hard_limit_halts_at_once() -> None:
    b = breaker(max_drawdown_soft=5.0, max_drawdown_hard=10.0)
    b.on_equity(0.0, 0)
    assert _states(b.on_equity(-50.0, 1)) == [(ACTIVE, HALTED, "drawdown")]


def test_window_loss_counts_only_the_last_window() -> None:
    b = breaker(loss_window_s=60.0, max_window_loss_soft=3.0, max_window_loss_hard=6.0)
    # A slow bleed of 1 a minute never loses 3 within a minute.
    for minute in range(30):
        assert b.on_equity(100.0 - minute, minute * 60 * SECOND) == ()
    t = 30 * 60 * SECOND
    assert b.on_equity(71.0, t) == ()
    (change,) = b.on_equity(67.5, t + 30 * SECOND)  # 3.5 within 30 s
    assert _states((change,)) == [(ACTIVE, REDUCING, "window_loss")]
    assert "loss 3.5 within 60s (from 71 to 67.5) > soft limit 3" in change.event.reason
    (change,) = b.on_equity(64.0, t + 50 * SECOND)
    assert _states((change,)) == [(REDUCING, HALTED, "window_loss")]
    assert "loss 7 within 60s" in change.event.reason


def test_an_error_burst_halts_but_a_trickle_does_not() -> None:
    b = breaker(max_errors=3, error_window_s=10.0)
    for i in range(10):  # one every 4 s: at most 3 in any 10 s
        assert b.record_error(i * 4 * SECOND, "venue_reject") == ()
    t = 100 * SECOND
    assert b.record_error(t, "venue_reject") == ()
    assert b.record_error(t + 1, "rate_limit") == ()
    assert b.record_error(t + 2, "venue_reject") == ()
    (change,) = b.record_error(t + 3, "rate_limit")
    assert _states((change,)) == [(ACTIVE, HALTED, "error_rate")]
    assert change.event.reason == (
        "4 errors (2 rate_limit, 2 venue_reject) within 10s > max_errors 3"
    )
    assert b.record_error(t + 4, "rate_limit") == ()


def test_kill_halt_and_reset() -> None:
    b = breaker()
    assert _states(b.kill("fat finger")) == [(ACTIVE, HALTED, "kill_switch")]
    assert b.halt("reconciliation", "again") == ()  # already there
    assert b.escalate(REDUCING, "drawdown", "x") == ()  # never down by escalating
    assert b.state is HALTED
    (change,) = b.reset("checked the positions")
    assert _states((change,)) == [(HALTED, ACTIVE, "reset")]
    assert change.event.reason == "checked the positions"
    assert b.reset("again") == ()  # already ACTIVE
    (change,) = b.halt("reconciliation", "position mismatch ETH/BTC: venue 81, book 80")
    assert _states((change,)) == [(ACTIVE, HALTED, "reconciliation")]
    assert change.event.timestamp == b.clock.now()


def test_reset_starts_the_drawdown_from_the_current_equity() -> None:
    b = breaker(max_drawdown_soft=5.0, max_drawdown_hard=10.0)
    b.on_equity(100.0, 0)
    b.on_equity(80.0, 1)
    assert b.state is HALTED
    b.reset("new day")
    assert b.on_equity(79.0, 2) == ()  # 1 below the new peak, not 21 below the old one
    assert b.peak == 79.0


def test_config_is_validated_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"risk\.breaker\.max_drawdown_soft"):
        BreakerConfig(max_drawdown_soft=10.0, max_drawdown_hard=5.0)
    with pytest.raises(ConfigError, match=r"risk\.breaker\.max_errors"):
        BreakerConfig(max_errors=0)


# -- the state file -------------------------------------------------------------------------


def test_every_change_is_in_the_file_when_the_event_is_returned(tmp_path: Path) -> None:
    path = tmp_path / "risk" / "breaker.json"
    b = breaker(state_path=str(path), max_drawdown_soft=1.0, max_drawdown_hard=2.0)
    first = read_state(path)
    assert first is not None
    assert (first.state, first.version, first.pid) == (ACTIVE, 0, os.getpid())
    b.on_equity(10.0, 0)
    for equity, state in [(8.5, REDUCING), (7.0, HALTED)]:
        (change,) = b.on_equity(equity, 1)
        on_disk = read_state(path)
        assert on_disk is not None
        assert (on_disk.state, on_disk.trigger, on_disk.reason) == (
            state,
            "drawdown",
            change.event.reason,
        )
        assert on_disk.version == change.version
    assert sorted(p.name for p in path.parent.iterdir()) == ["breaker.json", "breaker.json.lock"]
    # A restart keeps the state.
    again = breaker(state_path=str(path))
    assert again.state is HALTED
    assert again.record.trigger == "drawdown"
    assert again.record.version == 2


def test_a_state_file_that_cannot_be_read_halts(tmp_path: Path) -> None:
    path = tmp_path / "breaker.json"
    path.write_text("{not json")
    with pytest.raises(StorageError, match=r"breaker\.json"):
        read_state(path)
    b = breaker(state_path=str(path))
    assert b.state is HALTED
    assert b.record.trigger == "state_file"
    assert read_state(path) == b.record


def test_module_kill_and_reset_edit_the_file(tmp_path: Path) -> None:
    path = tmp_path / "breaker.json"
    assert read_state(path) is None
    killed = kill(path, "from the command line")
    assert (killed.state, killed.previous, killed.trigger, killed.version) == (
        HALTED,
        ACTIVE,
        "kill_switch",
        1,
    )
    assert read_state(path) == killed
    cleared = reset(path, "all clear")
    assert (cleared.state, cleared.previous, cleared.trigger, cleared.version) == (
        ACTIVE,
        HALTED,
        "reset",
        2,
    )


def test_poll_applies_what_another_writer_put_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "breaker.json"
    b = breaker(state_path=str(path), watch_s=0.0)
    assert b.poll() == ()
    kill(path, "operator")
    (change,) = b.poll()
    assert _states((change,)) == [(ACTIVE, HALTED, "kill_switch")]
    assert change.event.reason == "operator"
    assert b.poll() == ()  # applied once
    reset(path, "fine")
    assert _states(b.poll()) == [(HALTED, ACTIVE, "reset")]
    assert b.external == 2


def test_poll_reads_the_file_at_most_every_watch_s(tmp_path: Path) -> None:
    path = tmp_path / "breaker.json"
    b = breaker(state_path=str(path), watch_s=3600.0)
    assert b.poll() == ()  # reads now, then not for an hour
    kill(path, "operator")
    assert b.poll() == ()
    assert b.state is ACTIVE
    assert _states(b.poll(force=True)) == [(ACTIVE, HALTED, "kill_switch")]


def test_an_escalation_never_overwrites_a_kill_written_meanwhile(tmp_path: Path) -> None:
    path = tmp_path / "breaker.json"
    b = breaker(state_path=str(path), watch_s=3600.0, max_drawdown_soft=1.0)
    b.poll()
    b.on_equity(10.0, 0)
    kill(path, "operator")  # not polled yet
    changes = b.on_equity(5.0, 1)  # would be REDUCING; the kill wins
    assert _states(changes) == [(ACTIVE, HALTED, "kill_switch")]
    on_disk = read_state(path)
    assert on_disk is not None
    assert (on_disk.state, on_disk.trigger) == (HALTED, "kill_switch")


# -- other processes ------------------------------------------------------------------------


def _run_python(code: str, *args: str) -> None:
    subprocess.run([sys.executable, "-c", code, *args], check=True, timeout=60)


@pytest.fixture
async def bus() -> AsyncIterator[InProcessBus]:
    bus = InProcessBus()
    yield bus
    await bus.close()


async def test_a_restarted_engine_starts_halted(bus: InProcessBus, tmp_path: Path) -> None:
    path = tmp_path / "breaker.json"
    kill(path, "before the start")
    engine, seen, clock = await start_engine(bus, breaker=BreakerConfig(state_path=str(path)))
    assert engine.breaker.state is HALTED
    await feed(bus, clock, [("ETH/BTC", T0_NS, 0.05)])
    await submit(bus, make_order(Side.SELL, "1"))
    assert [d.reason for d in seen.denied] == ["halted"]
    assert "kill_switch: before the start" in seen.denied[0].detail
    assert seen.breaker == []  # a loaded state is not a change
    await engine.stop()


async def test_a_reset_from_another_process_is_picked_up_on_the_order_path(
    bus: InProcessBus, tmp_path: Path
) -> None:
    path = tmp_path / "breaker.json"
    engine, seen, clock = await start_engine(
        bus, breaker=BreakerConfig(state_path=str(path), watch_s=0.0)
    )
    await feed(bus, clock, [("ETH/BTC", T0_NS, 0.05)])
    await engine.kill("investigating")
    await submit(bus, make_order(Side.BUY, "1", n=1))
    assert [d.reason for d in seen.denied] == ["halted"]
    _run_python(
        "import sys; from quantlab.risk import reset; reset(sys.argv[1], 'all clear')", str(path)
    )
    order = make_order(Side.BUY, "1", n=2)
    await submit(bus, order)
    assert seen.approved == [order]
    assert engine.breaker.state is ACTIVE
    assert [(e.state, e.trigger, e.reason) for e in seen.breaker] == [
        (HALTED, "kill_switch", "investigating"),
        (ACTIVE, "reset", "all clear"),
    ]
    await engine.stop()


async def test_a_kill_from_another_process_is_published_without_any_order(
    bus: InProcessBus, tmp_path: Path
) -> None:
    path = tmp_path / "breaker.json"
    engine, seen, _ = await start_engine(
        bus, breaker=BreakerConfig(state_path=str(path), watch_s=0.02)
    )
    _run_python(
        "import sys; from quantlab.risk import kill; kill(sys.argv[1], 'runaway')", str(path)
    )
    for _ in range(500):  # the watch timer runs every 20 ms
        if seen.breaker:
            break
        await asyncio.sleep(0.01)
    await bus.drain()
    assert engine.breaker.state is HALTED
    assert [(e.previous, e.state, e.trigger, e.reason) for e in seen.breaker] == [
        (ACTIVE, HALTED, "kill_switch", "runaway")
    ]
    await engine.stop()
    assert engine._watcher is None


async def test_the_engine_publishes_only_what_is_already_on_disk(
    bus: InProcessBus, tmp_path: Path
) -> None:
    path = tmp_path / "breaker.json"
    engine, _, _ = await start_engine(
        bus, breaker=BreakerConfig(state_path=str(path), max_errors=2, watch_s=3600)
    )
    on_disk_at_publish: list[tuple[BreakerEvent, BreakerRecord | None]] = []

    async def check_disk(envelope: Envelope) -> None:
        on_disk_at_publish.append((envelope.payload, read_state(path)))

    bus.consume(topics.risk("breaker"), check_disk, name="test.disk")
    orders = [make_order(Side.BUY, "1", n=i) for i in range(3)]
    for order in orders:
        await bus.publish(topics.orders("rejected"), event_of(order, OrderStatus.REJECTED))
    await bus.drain()
    ((event, record),) = on_disk_at_publish
    assert record is not None
    assert (event.state, event.trigger) == (HALTED, "error_rate")
    assert (record.state, record.trigger, record.reason) == (HALTED, "error_rate", event.reason)
    assert engine.stats()["breaker"]["state"] == "halted"
    await engine.stop()


async def test_halt_fits_the_execution_engines_halt_port(bus: InProcessBus) -> None:
    engine, seen, _ = await start_engine(bus)
    halt: Callable[[str, str], Awaitable[None]] = engine.halt
    await halt("reconciliation", "position mismatch at start: ETH/BTC venue 81, book 80")
    await bus.drain()
    assert [(e.state, e.trigger) for e in seen.breaker] == [(HALTED, "reconciliation")]
    await engine.reset("positions fixed by hand")
    await bus.drain()
    assert engine.breaker.state is ACTIVE
    assert [e.state for e in seen.breaker] == [HALTED, ACTIVE]


async def test_a_halt_before_start_is_published_at_start(bus: InProcessBus) -> None:
    engine = RiskEngine(WIDE, INSTRUMENTS, SimulatedClock(T0_NS))
    await engine.halt("reconciliation", "mismatch")
    assert engine.breaker.state is HALTED
    seen = Outcomes().attach(bus)
    await engine.start(bus)
    await bus.drain()
    assert [(e.state, e.trigger) for e in seen.breaker] == [(HALTED, "reconciliation")]
