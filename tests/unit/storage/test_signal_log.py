"""Signals at rest: MessagePack records, a repeated signal_id written once, torn tails caught;
signals and expert weights round-trip through the bus's JSON format."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest

from quantlab.bus import InProcessBus, topics
from quantlab.core import ids
from quantlab.core.enums import Side
from quantlab.core.errors import DataError, ValidationError
from quantlab.core.messages import ExpertWeights, Signal, from_json, to_json, to_msgpack
from quantlab.storage.signal_log import SignalLog, read_signals, signals_frame

T0 = dt.datetime(2018, 1, 10, tzinfo=dt.UTC)


def signal(n: int, strategy: str = "hedge") -> Signal:
    return Signal(
        signal_id=ids.signal_id(strategy, "ETH/BTC", n),
        strategy_id=strategy,
        symbol="ETH/BTC",
        side=Side.BUY if n % 2 else Side.SELL,
        strength=0.5,
        confidence=0.25,
        timestamp=T0 + dt.timedelta(minutes=5 * n),
        features=[0.5, -1.0, 1.0],
        metadata={"w_patterns": "0.3000", "pattern_neighbours": "strategy:hedge:pattern:1:X"},
        mid=0.09,
        spread=0.0001,
    )


async def test_a_repeated_signal_id_is_written_once(tmp_path: Path) -> None:
    bus = InProcessBus()
    log = SignalLog(tmp_path / "signals.msgpack")
    await log.start(bus)
    for n in (1, 2, 1, 3, 2):  # 1 and 2 delivered twice under different message ids
        await bus.publish(topics.signals("hedge"), signal(n), msg_id=f"delivery-{n}-{id(n)}")
    await asyncio.wait_for(bus.drain(), 5)
    await log.stop()
    await bus.close()
    stored = read_signals(log.path)
    assert [s.signal_id for s in stored] == [signal(n).signal_id for n in (1, 2, 3)]
    assert stored[0] == signal(1)  # every field survives MessagePack
    assert (log.written, log.duplicates) == (3, 2)
    assert signals_frame(stored).height == 3


async def test_restart_keeps_the_log_free_of_repeats(tmp_path: Path) -> None:
    path = tmp_path / "signals.msgpack"
    for batch in ((1, 2), (2, 3)):
        bus = InProcessBus()
        log = SignalLog(path)
        await log.start(bus)
        for n in batch:
            await bus.publish(topics.signals("hedge"), signal(n))
        await asyncio.wait_for(bus.drain(), 5)
        await log.stop()
        await bus.close()
    assert [s.signal_id for s in read_signals(path)] == [signal(n).signal_id for n in (1, 2, 3)]


def test_a_torn_record_is_reported_not_decoded(tmp_path: Path) -> None:
    path = tmp_path / "signals.msgpack"
    record = to_msgpack(signal(1))
    path.write_bytes(len(record).to_bytes(4, "little") + record[:-3])
    with pytest.raises(DataError, match="torn record"):
        read_signals(path)


def test_json_on_the_bus_round_trips() -> None:
    s = signal(7)
    assert from_json(to_json(s)) == s
    w = ExpertWeights(strategy_id="hedge", timestamp=T0, rounds=3, weights={"a": 0.25, "b": 0.75})
    assert from_json(to_json(w)) == w
    with pytest.raises(ValidationError, match="sum to 1"):
        ExpertWeights(strategy_id="hedge", timestamp=T0, rounds=1, weights={"a": 0.5})
