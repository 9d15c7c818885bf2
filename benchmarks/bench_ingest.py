"""Ingestion throughput and latency: decode -> validate -> dedup -> batch.

Paths measured in one run, on the same synthetic trade stream (100 symbols, unique ids):

* ``json``: frames of JSON wire messages decoded with msgspec (`quantlab.ingest.wire`);
* ``binary``: buffers of packed 32-byte records decoded zero-copy (`core.codec`);
* ``naive``: the reference, a per-event Python loop (``json.loads`` per message, per-event
  checks, a dict for ordering, a set for duplicates, rows appended to a list and turned into
  a DataFrame every 1,000 rows).

Latency per event is the time from its frame's arrival until the event has passed
validation (for small frames that includes waiting for the batch to fill or the 5 ms flush).
Prints a table, then one JSON line (the last line) with the figures and the ratios.

    python benchmarks/bench_ingest.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import platform
import time
from typing import Any

import numpy as np
import polars as pl
from _rows import row

from quantlab.bus import InProcessBus
from quantlab.core.clock import SimulatedClock
from quantlab.core.codec import encode_events
from quantlab.core.registry import SymbolRegistry
from quantlab.ingest import IngestEngine
from quantlab.ingest.quality import QualityConfig
from quantlab.ingest.wire import WireParser, WireTrade, encode_json, parse_binary

NOW = 1_700_000_000_000_000_000


class _Source:
    asset_class = "crypto"
    total_rows = None

    def __init__(self, name: str) -> None:
        self.name = name

    async def stream(self):  # type: ignore[no-untyped-def]
        """Nothing: the run feeds `IngestEngine.on_item` directly."""
        for item in ():
            yield item


def make_events(n: int, symbols: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "sym": rng.integers(0, symbols, n),
        "ts": NOW + np.arange(n, dtype=np.int64) * 1_000,
        "price": 100.0 + rng.random(n),
        "size": 1.0 + rng.random(n),
    }


def engine_for(name: str) -> tuple[IngestEngine, InProcessBus]:
    bus = InProcessBus()
    eng = IngestEngine(
        [_Source(name)],  # type: ignore[list-item]
        clock=SimulatedClock(NOW),
        quality=QualityConfig(max_future_s=None, max_age_s=None),
    )
    return eng, bus


async def run_json(ev: dict[str, np.ndarray], frame_size: int) -> dict[str, float]:
    names = [f"S{i:03d}/USD" for i in range(int(ev["sym"].max()) + 1)]
    n = len(ev["ts"])
    trades = [
        WireTrade(S=names[s], t=int(t), p=float(p), s=float(z), a=1, i=str(i))
        for i, (s, t, p, z) in enumerate(
            zip(ev["sym"], ev["ts"], ev["price"], ev["size"], strict=True)
        )
    ]
    frames = [encode_json(trades[i : i + frame_size]) for i in range(0, n, frame_size)]
    eng, bus = engine_for("json")
    await eng.start(bus)
    parser = WireParser()
    lat: list[float] = []
    t0 = time.perf_counter()
    for raw in frames:
        a = time.perf_counter()
        for item in parser.parse_json(raw):
            await eng.on_item("json", item)
        lat.append(time.perf_counter() - a)
    await eng.flush()
    wall = time.perf_counter() - t0
    await bus.close()
    assert eng.rows_accepted == n, (eng.rows_accepted, n)
    return _figures(n, wall, lat, frame_size)


async def run_binary(ev: dict[str, np.ndarray], frame_size: int) -> dict[str, float]:
    n = len(ev["ts"])
    registry = SymbolRegistry([f"S{i:03d}/USD" for i in range(int(ev["sym"].max()) + 1)])
    bufs = [
        encode_events(
            event_type=2,
            symbol_id=ev["sym"][i : i + frame_size],
            timestamp_ns=ev["ts"][i : i + frame_size],
            price=ev["price"][i : i + frame_size],
            size=ev["size"][i : i + frame_size],
            side=1,
        )
        for i in range(0, n, frame_size)
    ]
    eng, bus = engine_for("binary")
    await eng.start(bus)
    lat: list[float] = []
    t0 = time.perf_counter()
    for buf in bufs:
        a = time.perf_counter()
        for item in parse_binary(buf, registry):
            await eng.on_item("binary", item)
        lat.append(time.perf_counter() - a)
    await eng.flush()
    wall = time.perf_counter() - t0
    await bus.close()
    # binary trades carry no trade id: equal (symbol, ts, price, size) would dedup; ours differ
    assert eng.rows_accepted == n, (eng.rows_accepted, n)
    return _figures(n, wall, lat, frame_size)


def run_naive(ev: dict[str, np.ndarray]) -> dict[str, float]:
    names = [f"S{i:03d}/USD" for i in range(int(ev["sym"].max()) + 1)]
    messages = [
        json.dumps(
            {"T": "t", "S": names[s], "t": int(t), "p": float(p), "s": float(z), "i": str(i)}
        )
        for i, (s, t, p, z) in enumerate(
            zip(ev["sym"], ev["ts"], ev["price"], ev["size"], strict=True)
        )
    ]
    last: dict[str, int] = {}
    seen: set[tuple[str, str]] = set()
    rows: list[dict[str, object]] = []
    batches = 0
    lat: list[float] = []
    t0 = time.perf_counter()
    for raw in messages:
        a = time.perf_counter()
        m = json.loads(raw)
        p, s, t = m["p"], m["s"], m["t"]
        ok = (
            math.isfinite(p)
            and p > 0
            and math.isfinite(s)
            and s > 0
            and t >= last.get(m["S"], -1)
            and (m["S"], m["i"]) not in seen
        )
        if ok:
            last[m["S"]] = t
            seen.add((m["S"], m["i"]))
            rows.append(m)
            if len(rows) == 1000:
                pl.DataFrame(rows)
                rows = []
                batches += 1
        lat.append(time.perf_counter() - a)
    if rows:
        pl.DataFrame(rows)
    wall = time.perf_counter() - t0
    return _figures(len(messages), wall, lat, 1)


def _figures(n: int, wall: float, frame_lat: list[float], frame_size: int) -> dict[str, float]:
    per_event = (
        np.repeat(np.asarray(frame_lat), frame_size)[:n]
        if frame_size > 1
        else np.asarray(frame_lat)
    )
    return {
        "events": n,
        "events_per_s": round(n / wall),
        "p50_us": round(float(np.percentile(per_event, 50)) * 1e6, 2),
        "p99_us": round(float(np.percentile(per_event, 99)) * 1e6, 2),
    }


async def main(quick: bool) -> dict[str, object]:
    n = 200_000 if quick else 2_000_000
    ev = make_events(n, symbols=100)
    results = {
        "json": await run_json(ev, frame_size=1000),
        "json_small_frames": await run_json(make_events(n // 4, 100, 2), frame_size=10),
        "binary": await run_binary(ev, frame_size=10_000),
        "naive": run_naive(make_events(n // 4 if quick else n // 2, 100, 3)),
    }
    naive = results["naive"]["events_per_s"]
    return {
        "benchmark": "ingest",
        "quick": quick,
        "machine": f"{platform.machine()} python {platform.python_version()}",
        **results,
        "ratios": {
            "json_vs_naive": round(results["json"]["events_per_s"] / naive, 2),
            "binary_vs_naive": round(results["binary"]["events_per_s"] / naive, 2),
        },
        "targets": {
            "json_events_per_s": 1_000_000,
            "binary_events_per_s": 5_000_000,
            "p99_us": 200,
        },
    }


def table_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Headline rows for `quantlab bench`: each path against the naive loop of the same run."""
    naive, targets = result["naive"], result["targets"]
    ref = {"reference_name": "naive per-event loop"}
    paths = (
        ("json", "JSON frames of 1,000 events", targets["json_events_per_s"], targets["p99_us"]),
        ("json_small_frames", "JSON frames of 10 events", None, None),
        ("binary", "packed 32-byte records, 10,000 per buffer", targets["binary_events_per_s"],
         None),
    )  # fmt: skip
    rows = []
    for key, case, target_rate, target_p99 in paths:
        r = result[key]
        rows.append(row(case, "events/s", r["events_per_s"], better="higher",
                        reference=naive["events_per_s"], target=target_rate, **ref))  # fmt: skip
        rows.append(row(case, "p99 µs", r["p99_us"], better="lower",
                        reference=naive["p99_us"], target=target_p99, **ref))  # fmt: skip
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a run that finishes within a minute")
    args = ap.parse_args()
    out = asyncio.run(main(args.quick))
    print(f"{'path':20s} {'events/s':>12s} {'p50 us':>10s} {'p99 us':>10s}")
    for key in ("json", "json_small_frames", "binary", "naive"):
        r = out[key]
        print(f"{key:20s} {r['events_per_s']:>12,} {r['p50_us']:>10} {r['p99_us']:>10}")
    out["rows"] = table_rows(out)
    print(json.dumps(out))
