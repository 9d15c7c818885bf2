"""A live engine shares its state with the dashboard through the monitor snapshot."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from quantlab.config import load_settings
from quantlab.engine import Node
from quantlab.engine.monitor import engine_running, read_snapshot


async def test_a_live_run_writes_snapshots_while_running_and_a_last_one_on_stop(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        storage={"state_dir": str(tmp_path / "state"), "lake_root": str(tmp_path / "lake")},
        strategy={"name": "ema_cross", "id": "ema"},
        features={"fast": 3, "slow": 8},
        live={
            "sources": [{"type": "synthetic", "symbols": 4, "rate": 800}],
            "monitor_every_s": 0.2,
        },
    )
    node = Node(settings, mode="live", run_dir=tmp_path / "run")
    path = tmp_path / "state" / "paper" / "monitor.json"
    task = asyncio.create_task(node.run_async(duration_s=12.0))
    seen: list[dict] = []
    while not task.done():
        await asyncio.sleep(0.5)
        snap = read_snapshot(path)
        if snap is not None:
            seen.append(snap)
    result = await task
    running = [s for s in seen if s["status"] == "running"]
    assert len(running) >= 10
    assert engine_running(running[-1], stale_after_s=60)
    assert running[-1]["pid"] == os.getpid()
    # Prices move between snapshots; every symbol has a history in time order.
    last = [s["markets"]["SYN0/USD"]["last"] for s in running if "SYN0/USD" in s["markets"]]
    assert len(set(last)) > 3
    final = read_snapshot(path)
    assert final is not None
    assert final["status"] == "stopped"
    assert not engine_running(final)
    assert sorted(final["markets"]) == [f"SYN{i}/USD" for i in range(4)]
    for m in final["markets"].values():
        ts = [p[0] for p in m["history"]]
        assert ts == sorted(ts)
        assert m["last"] > 0
    # The snapshot agrees with the run's own summary.
    assert final["fills_total"] == result.summary.fills
    assert len(final["fills"]) == min(result.summary.fills, 200)
    assert final["order_states"].get("filled", 0) == result.summary.fills
    assert final["signals_total"] == result.summary.signals
    assert {st["stage"] for st in final["latency"]["stages"]} >= {"risk → order submitted"}
    assert len(final["equity"]) >= 10
    assert json.loads(path.read_text())["run_id"] == result.summary.run_id


def test_a_missing_or_torn_snapshot_reads_as_none(tmp_path: Path) -> None:
    assert read_snapshot(tmp_path / "nope.json") is None
    (tmp_path / "torn.json").write_text('{"schema": 1, "status": "runn')
    assert read_snapshot(tmp_path / "torn.json") is None
    assert not engine_running(None)
