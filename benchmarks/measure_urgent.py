"""A/B of the live in-process bus's urgent order path: data -> order with and without it.

The same live engine (synthetic source, EMA(2)/EMA(5) crossover on 1-second bars, paper
venue) runs for `--seconds` with the bus a live engine gets (`InProcessBus(urgent=ORDER_PATH)`:
the consumers from features to execution go first) and with a plain `InProcessBus()`
(consumers take turns in message order), alternately, `--repeats` times each. Prints each
run's data -> order p50/p95/p99 (`ExecutionEngine.data_to_order`) and the time from the data's
arrival until each order-path stage was done (p95); last line: one JSON object.

    python benchmarks/measure_urgent.py [--symbols 20] [--rate 2000] [--seconds 15] [--repeats 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from typing import Any

from quantlab.bus import InProcessBus
from quantlab.config import load_settings
from quantlab.engine import Node
from quantlab.engine.node import ORDER_PATH


def run(symbols: int, rate: int, seconds: float, urgent: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="measure-urgent-") as d:
        settings = load_settings(
            strategy={"name": "ema_cross", "id": "ema"},
            features={"fast": 2, "slow": 5},
            live={
                "sources": [{"type": "synthetic", "symbols": symbols, "rate": rate}],
                "monitor_every_s": 1.0,
            },
            risk={"orders_per_s": 1000, "burst": 1000},
            storage={"lake_root": f"{d}/lake", "state_dir": f"{d}/state", "runs_dir": f"{d}/runs"},
        )
        node = Node(settings, mode="live", run_dir=f"{d}/run")
        if not urgent:  # before anything subscribed: the bus of a backtest
            node.bus = InProcessBus()
        summary = asyncio.run(node.run_async(duration_s=seconds)).summary
    e2e = summary.execution.get("data_to_order") or {}
    since = summary.latency.get("since_data", {})
    return {
        "urgent": urgent,
        "events": summary.events,
        "orders": e2e.get("count", 0),
        "data_to_order_ms": {k: round(e2e[k], 2) for k in ("p50_ms", "p95_ms", "p99_ms")}
        if e2e.get("count")
        else None,
        "since_data_p95_ms": {k: round(since[k]["p95_ms"], 2) for k in ORDER_PATH if k in since},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=20)
    ap.add_argument("--rate", type=int, default=2_000, help="events/s of the synthetic source")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    runs = []
    for _ in range(a.repeats):
        for urgent in (False, True):
            r = run(a.symbols, a.rate, a.seconds, urgent)
            runs.append(r)
            print(
                f"{'urgent' if urgent else 'plain '} events {r['events']:,} orders {r['orders']}"
                f" data->order {r['data_to_order_ms']} since-data p95 {r['since_data_p95_ms']}",
                flush=True,
            )
    print(json.dumps({"benchmark": "measure_urgent", "args": vars(a), "runs": runs}))


if __name__ == "__main__":
    main()
