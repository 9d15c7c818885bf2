"""A circuit-breaker trip followed by kill -9: still tripped after the restart.

A child process runs the real `RiskEngine` with its breaker's state file, trips the breaker
one of three ways (a burst of venue rejections, a drawdown past the hard limit through
`on_equity`, the kill switch), says so the moment the trip is visible in memory, and is
SIGKILLed at once (or after a few milliseconds). A restarted breaker on the same file must be
HALTED, with the trigger that tripped it (that a restarted engine then denies orders is
`tests/unit/risk/test_breaker.py::test_a_restarted_engine_starts_halted`).
"""

from __future__ import annotations

import random
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from quantlab.core.enums import BreakerState
from quantlab.risk import BreakerConfig, CircuitBreaker, read_state
from quantlab.testing.reliability import record

KILLS_PER_TRIGGER = 6
TRIGGERS = ("error_rate", "drawdown", "kill_switch")

_TRIP = textwrap.dedent(
    """
    import asyncio, sys, uuid
    import datetime as dt
    from decimal import Decimal
    from quantlab.bus import InProcessBus, topics
    from quantlab.core.clock import SimulatedClock
    from quantlab.core.enums import BreakerState, OrderStatus
    from quantlab.core.instruments import InstrumentBook
    from quantlab.core.messages import OrderEvent
    from quantlab.risk import BreakerConfig, RiskEngine, RiskLimits

    async def main(path: str, how: str) -> None:
        bus = InProcessBus()
        engine = RiskEngine(
            RiskLimits(max_position_notional=Decimal(1000), max_order_notional=Decimal(1000)),
            InstrumentBook(Decimal("0.01"), Decimal("0.01")),
            SimulatedClock(1_515_560_100_000_000_000),
            breaker=BreakerConfig(
                state_path=path, max_errors=2, watch_s=3600, max_drawdown_hard=5_000.0
            ),
        )
        await engine.start(bus)
        print("started", flush=True)
        sys.stdin.readline()
        if how == "error_rate":  # three venue rejections > max_errors 2
            for i in range(3):
                event = OrderEvent(
                    order_id=uuid.uuid4(), client_order_id=f"c{i}", symbol="ETH/BTC",
                    status=OrderStatus.REJECTED, venue="paper",
                    timestamp=dt.datetime(2018, 1, 10, tzinfo=dt.UTC),
                )
                await bus.publish(topics.orders("rejected"), event, msg_id=f"c{i}:rejected")
            await bus.drain()
        elif how == "drawdown":
            now = 1_515_560_100_000_000_000
            engine.breaker.on_equity(100_000.0, now)
            engine.breaker.on_equity(1_000.0, now + 1_000_000_000)
        else:
            engine.breaker.kill("reliability test")
        assert engine.breaker.state is BreakerState.HALTED, engine.breaker.state
        print("tripped", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def _line(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> bytes:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the child said nothing"
    return proc.stdout.readline()


@pytest.mark.parametrize("how", TRIGGERS)
def test_a_tripped_breaker_is_still_tripped_after_kill_9(how: str, tmp_path: Path) -> None:
    rng = random.Random(how)
    untripped: list[str] = []
    kills = 0
    for k in range(KILLS_PER_TRIGGER):
        path = tmp_path / f"breaker-{k}.json"
        proc = subprocess.Popen(
            [sys.executable, "-c", _TRIP, str(path), how],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert _line(proc) == b"started\n", proc.stderr.read() if proc.stderr else ""
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
            line = _line(proc)
            assert line == b"tripped\n", proc.stderr.read() if proc.stderr else line
            time.sleep(rng.choice([0.0, 0.0, rng.uniform(0.0, 0.005)]))
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=10) == -signal.SIGKILL
            kills += 1
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        saved = read_state(path)
        restarted = CircuitBreaker(BreakerConfig(state_path=str(path)))
        if saved is None or restarted.state is not BreakerState.HALTED:
            untripped.append(f"life {k}: {None if saved is None else saved.state}")
        elif how != "kill_switch" and saved.trigger != how:
            untripped.append(f"life {k}: halted by {saved.trigger}, not {how}")
    record(
        "faults",
        f"circuit-breaker trip ({how.replace('_', ' ')}) then kill -9: still tripped",
        trials=kills,
        unit="kills",
        failed=len(untripped),
        failed_what="breakers not tripped after the restart",
        detail="restarted on the same state file; HALTED with its trigger",
    )
    assert kills == KILLS_PER_TRIGGER
    assert not untripped, untripped
