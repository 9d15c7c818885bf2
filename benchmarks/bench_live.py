"""Live mode: data -> order latency at 100,000 market events/s, and resident memory over time.

One ``quantlab live`` process (``--role all``: the in-process bus), the synthetic market-data
source (100 symbols, paced to ``rate`` events/s of wall time), the ``ema_cross`` strategy on
EMA(2)/EMA(5) of the 1-second bars (short windows, so orders start a few seconds into a run;
the strategy's code is the same at any window), the paper venue, the order throttle raised to
1,000/s (as in ``bench_scale.py``), everything else as configured by default (lake writing,
dashboard snapshot every second, SQLite order store). The engine runs in a temporary folder
(`quantlab.testing.dashboard.DashboardStack`) and is stopped with SIGTERM; its figures come
from the run's ``summary.json`` (if the engine does not finish its drain in time: from its last
dashboard snapshot, and the output says so).

1. **Latency** (target: data -> order p95 < 20 ms at 100,000 events/s offered). The execution
   engine times every submission from the wall time its market data reached ingestion
   (``Order.ts_recv``) to the paper venue's answer (``execution.data_to_order``). Per stage:
   each bus consumer's own handling time per message (p50/p95/p99, ``latency.consumers``) and
   the time from market-data arrival until that consumer was done (``latency.since_data``);
   ``busy_s`` = count x mean handling time, the event-loop time a consumer took in the run.
   Ingest rate: events ingested per second of wall time in the measurement window (from the
   dashboard snapshots, first 2 s after the first event left out) against the offered rate.
   Reference, same run, same events: a naive per-event asyncio pipeline, one unbounded
   ``asyncio.Queue`` per stage: ingest (the same `SyntheticSource`, same seed, symbols and
   paced rate; each frame split into per-event tuples) -> per-event Python EMA fast/slow
   (mid for quotes, price for trades; the same windows) -> crossover signal -> order dict ->
   "venue" ack, timed per order from the arrival of its event's chunk to the ack.
2. **Memory** (target: max RSS <= 1 GB and flat). The engine process's RSS (psutil) sampled
   every second while it runs 100 symbols at ``--memory-rate`` (default 10,000 events/s, a
   busy but sustainable live feed) for ``--memory-seconds`` (full: 600 s; ``--quick``: 20 s).
   Warm-up RSS: the sample at 20 % of the run; growth after warm-up: final - warm-up, and
   the least-squares slope of the samples after warm-up (MB/min). **Flat** means that slope
   is below 1 % of the warm-up RSS per minute (``--quick``'s 20 s run is mostly warm-up: its
   slope is not a verdict on leaks, only the full run's is). Reference, same run: the RSS of a bare
   interpreter that imported quantlab and polars (baseline). The memory run also reports its
   data -> order latency (a second, realistic load).

The machine is shared (other jobs may run): latencies are wall-clock and include that noise.

    python benchmarks/bench_live.py --quick                               # under a minute
    python benchmarks/bench_live.py --out benchmarks/results/live.txt     # ~13 minutes

The last stdout line is one JSON object: ``latency``, ``reference``, ``memory``, ``ratios``
and ``rows`` (for `quantlab bench`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _rows import row

SYMBOLS = 100
RATE = 100_000  # offered market events/s of the latency run
MEMORY_RATE = 10_000  # events/s of the memory run
FAST, SLOW = 2, 5
TARGET_P95_MS = 20.0
TARGET_MAX_RSS_MB = 1024.0
FLAT_PCT_PER_MIN = 1.0  # "flat": post-warm-up slope below this % of warm-up RSS per minute
WARMUP_FRACTION = 0.2
STEADY_SKIP_S = 2.0  # left out of the ingest rate at the start of the window
PIPELINE = ("features", "strategies", "order_builder", "risk", "execution")
MB = 1024 * 1024

CONFIG = """\
[strategy]
name = "ema_cross"
id = "ema"
[features]
fast = {fast}
slow = {slow}
[[live.sources]]
type = "synthetic"
symbols = {symbols}
rate = {rate}
[risk]
orders_per_s = 1000
burst = 1000
[live]
monitor_every_s = 1.0
[storage]
lake_root = "{tmp}/lake"
"""


# -- the engine --------------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None  # not written yet, or caught mid-write


def _rss(proc: Any) -> tuple[float, float]:
    """RSS of the process and of its children (MB)."""
    import psutil

    own = proc.memory_info().rss / MB
    kids = 0.0
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            kids += child.memory_info().rss / MB
    return own, kids


def run_engine(*, symbols: int, rate: int, seconds: float, drain_s: float) -> dict[str, Any]:
    """Start ``quantlab live`` on the synthetic source, keep it running `seconds` after its
    first event, sampling RSS and the dashboard snapshot every second; stop it with SIGTERM
    and read its summary (waiting at most `drain_s` for it)."""
    import psutil

    from quantlab.testing.dashboard import DashboardStack

    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp_name:
        tmp = Path(tmp_name)
        stack = DashboardStack(tmp)
        config = CONFIG.format(fast=FAST, slow=SLOW, symbols=symbols, rate=rate, tmp=tmp.as_posix())
        snap_path = tmp / "state" / "paper" / "monitor.json"
        samples: list[dict[str, float]] = []  # t (s since the first event), rss, events...
        last_snap: dict[str, Any] | None = None
        try:
            started = time.monotonic()
            procs = stack.roles(config, ("all",), duration=int(seconds + drain_s + 120))
            engine = procs["all"]
            ps = psutil.Process(engine.pid)
            t_first: float | None = None
            next_tick = time.monotonic()
            while True:
                next_tick += 1.0
                time.sleep(max(0.0, next_tick - time.monotonic()))
                if engine.poll() is not None:
                    raise RuntimeError(f"the engine stopped early:\n{stack.log('all')}")
                now = time.monotonic()
                own, kids = _rss(ps)
                snap = _read_json(snap_path)
                if snap is not None and snap.get("status") == "running":
                    last_snap = snap
                events = (last_snap or {}).get("events", 0) or 0
                if t_first is None and events > 0:
                    t_first = now
                samples.append(
                    {
                        "t": round(now - (t_first or now), 2),
                        "rss_mb": round(own, 1),
                        "children_rss_mb": round(kids, 1),
                        "events": events,
                        "snap_at": (last_snap or {}).get("written_at", 0.0),
                        "orders": (last_snap or {}).get("orders_total", 0) or 0,
                    }
                )
                if t_first is None and now - started > 120:
                    raise RuntimeError(f"no events after 120 s:\n{stack.log('all')}")
                if t_first is not None and now - t_first >= seconds:
                    break
            t_stop = time.monotonic()
            engine.terminate()
            try:
                rc = engine.wait(timeout=drain_s)
                drained = True
            except subprocess.TimeoutExpired:
                engine.kill()
                engine.wait(timeout=10)
                rc, drained = 0, False
            stop_s = time.monotonic() - t_stop
            if rc != 0:
                raise RuntimeError(f"the engine failed (exit {rc}):\n{stack.log('all')}")
            summary = None
            if drained:
                for path in (tmp / "runs").rglob("summary.json"):
                    summary = json.loads(path.read_text())
        finally:
            stack.close()
    return _engine_figures(summary, last_snap, samples, rate, seconds, stop_s, drained)


def _round(figures: dict[str, Any] | None) -> dict[str, Any] | None:
    if not figures or not figures.get("count"):
        return None
    out = {"count": figures["count"]}
    for k in ("mean_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms"):
        v = figures.get(k)
        out[k] = None if v is None or (isinstance(v, float) and math.isnan(v)) else round(v, 3)
    return out


def _engine_figures(
    summary: dict[str, Any] | None,
    snap: dict[str, Any] | None,
    samples: list[dict[str, float]],
    rate: int,
    seconds: float,
    stop_s: float,
    drained: bool,
) -> dict[str, Any]:
    if summary is not None:
        source = "summary.json"
        d2o = summary["execution"]["data_to_order"]
        consumers = summary["latency"]["consumers"]
        since = summary["latency"]["since_data"]
        events, orders, fills = summary["events"], summary["orders"], summary["fills"]
        wall_s = summary["wall_s"]
    elif snap is not None:
        source = "last dashboard snapshot (the engine did not finish in time)"
        lat = snap["latency"]
        d2o, consumers, since = lat["data_to_order"], lat["consumers"], lat["since_data"]
        events, orders, fills = snap["events"], snap["orders_total"], snap["fills_total"]
        wall_s = None
    else:
        raise RuntimeError("no figures: neither a summary nor a dashboard snapshot")
    # ingest rate in the window, from the snapshots (their own write times)
    live = [s for s in samples if s["t"] >= 0 and s["events"] > 0]
    steady = [s for s in live if s["t"] >= STEADY_SKIP_S] or live
    first, last = steady[0], steady[-1]
    span = last["snap_at"] - first["snap_at"]
    ingest = (last["events"] - first["events"]) / span if span > 0 else float("nan")
    stages = {}
    for name, figures in sorted(consumers.items()):
        r = _round(figures)
        if r is None:
            continue
        r["busy_s"] = round(figures["count"] * figures["mean_ms"] / 1e3, 3)
        r["since_data"] = _round(since.get(name))
        stages[name] = r
    return {
        "figures_from": source,
        "drained": drained,
        "stop_s": round(stop_s, 1),
        "symbols": SYMBOLS,
        "offered_events_per_s": rate,
        "window_s": seconds,
        "ingested_events_per_s": round(ingest, 1),
        "ingested_vs_offered": round(ingest / rate, 3),
        "offered_events_in_window": int(rate * seconds),
        "events_ingested_in_window": int(live[-1]["events"]) if live else 0,
        "events_total": events,
        "engine_wall_s": wall_s,
        "orders": orders,
        "fills": fills,
        "data_to_order_ms": _round(d2o),
        "stages": stages,
        "rss_samples": [
            {k: s[k] for k in ("t", "rss_mb", "children_rss_mb", "events")} for s in samples
        ],
    }


# -- the reference: a naive per-event asyncio pipeline ---------------------------------------
async def _naive_pipeline(symbols: int, rate: int, seconds: float) -> dict[str, Any]:
    from quantlab.adapters.sim import SyntheticSource
    from quantlab.core.enums import EventType
    from quantlab.ingest.items import Events

    q_feat: asyncio.Queue[Any] = asyncio.Queue()
    q_sig: asyncio.Queue[Any] = asyncio.Queue()
    q_ord: asyncio.Queue[Any] = asyncio.Queue()
    q_venue: asyncio.Queue[Any] = asyncio.Queue()
    a_fast, a_slow = 2 / (FAST + 1), 2 / (SLOW + 1)
    latencies: list[float] = []
    counts = {"events": 0, "signals": 0, "orders": 0}
    stop = asyncio.Event()

    async def ingest() -> None:
        source = SyntheticSource(symbols, rate=rate)
        deadline = time.perf_counter() + seconds
        async for item in source.stream():
            if time.perf_counter() >= deadline:
                break
            if not isinstance(item, Events) or item.kind is EventType.BAR:
                continue
            arrived = time.perf_counter()
            f = item.frame
            if item.kind is EventType.QUOTE:
                prices = ((f["bid"] + f["ask"]) / 2).to_list()
            else:
                prices = f["price"].to_list()
            for symbol, ts, price in zip(
                f["symbol"].to_list(), f["timestamp"].to_list(), prices, strict=True
            ):
                counts["events"] += 1
                await q_feat.put((arrived, symbol, ts, price))
        stop.set()

    async def features() -> None:
        ema: dict[str, list[float]] = {}
        while True:
            arrived, symbol, ts, price = await q_feat.get()
            e = ema.get(symbol)
            if e is None:
                e = ema[symbol] = [price, price]
            else:
                e[0] += a_fast * (price - e[0])
                e[1] += a_slow * (price - e[1])
            await q_sig.put((arrived, symbol, ts, price, e[0], e[1]))
            q_feat.task_done()

    async def signals() -> None:
        side: dict[str, int] = {}
        while True:
            arrived, symbol, ts, price, fast, slow = await q_sig.get()
            s = 1 if fast > slow else -1 if fast < slow else side.get(symbol, 0)
            prev = side.get(symbol)
            side[symbol] = s
            if prev is not None and s != prev and s != 0:
                counts["signals"] += 1
                await q_ord.put((arrived, symbol, ts, price, s))
            q_sig.task_done()

    async def orders() -> None:
        n = 0
        while True:
            arrived, symbol, ts, price, s = await q_ord.get()
            n += 1
            order = {
                "client_order_id": f"naive-{n}",
                "symbol": symbol,
                "side": "buy" if s > 0 else "sell",
                "quantity": round(1.0 / price, 8),
                "price": price,
                "type": "limit",
                "timestamp": ts,
            }
            await q_venue.put((arrived, order))
            q_ord.task_done()

    async def venue() -> None:
        while True:
            arrived, order = await q_venue.get()
            ack = {"client_order_id": order["client_order_id"], "status": "submitted"}
            if ack["status"] == "submitted":
                counts["orders"] += 1
                latencies.append(time.perf_counter() - arrived)
            q_venue.task_done()

    t0 = time.perf_counter()
    workers = [asyncio.create_task(c()) for c in (features, signals, orders, venue)]
    await ingest()
    ingest_s = time.perf_counter() - t0
    for q in (q_feat, q_sig, q_ord, q_venue):
        await q.join()
    drain_s = time.perf_counter() - t0 - ingest_s
    for w in workers:
        w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    return {
        "latencies": latencies,
        "counts": counts,
        "ingest_s": ingest_s,
        "drain_s": drain_s,
    }


def run_reference(symbols: int, rate: int, seconds: float) -> dict[str, Any]:
    import numpy as np

    out = asyncio.run(_naive_pipeline(symbols, rate, seconds))
    lat = np.asarray(out["latencies"]) * 1e3
    pct = (
        {
            "count": int(lat.size),
            "mean_ms": round(float(lat.mean()), 3),
            **{f"p{q}_ms": round(float(np.percentile(lat, q)), 3) for q in (50, 95, 99)},
            "max_ms": round(float(lat.max()), 3),
        }
        if lat.size
        else None
    )
    events = out["counts"]["events"]
    return {
        "name": "naive per-event asyncio pipeline",
        "offered_events_per_s": rate,
        "window_s": seconds,
        "events": events,
        "ingested_events_per_s": round(events / out["ingest_s"], 1),
        "ingested_vs_offered": round(events / out["ingest_s"] / rate, 3),
        "signals": out["counts"]["signals"],
        "orders": out["counts"]["orders"],
        "drain_s": round(out["drain_s"], 2),
        "data_to_order_ms": pct,
    }


# -- memory ------------------------------------------------------------------------------------
def baseline_rss() -> float:
    """RSS (MB) of an interpreter that imported quantlab and polars, nothing else."""
    import psutil

    proc = subprocess.Popen(
        [sys.executable, "-c", "import quantlab, polars, sys, time; print(1, flush=True); "
         "sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        time.sleep(0.5)
        rss = psutil.Process(proc.pid).memory_info().rss / MB
    finally:
        proc.kill()
        proc.wait(timeout=10)
    return float(round(rss, 1))


def memory_figures(samples: list[dict[str, float]], baseline: float) -> dict[str, Any]:
    live = [s for s in samples if s["t"] >= 0 and s["events"] > 0] or samples
    t_end = live[-1]["t"]
    warm = next(s for s in live if s["t"] >= WARMUP_FRACTION * t_end)
    after = [s for s in live if s["t"] >= warm["t"]]
    n = len(after)
    mean_t = sum(s["t"] for s in after) / n
    mean_r = sum(s["rss_mb"] for s in after) / n
    var_t = sum((s["t"] - mean_t) ** 2 for s in after)
    slope_s = (
        sum((s["t"] - mean_t) * (s["rss_mb"] - mean_r) for s in after) / var_t if var_t else 0.0
    )
    slope_min = slope_s * 60
    max_rss = max(s["rss_mb"] for s in samples)
    pct = slope_min / warm["rss_mb"] * 100
    return {
        "samples": len(samples),
        "run_s": t_end,
        "warmup_at_s": warm["t"],
        "warmup_rss_mb": warm["rss_mb"],
        "max_rss_mb": max_rss,
        "final_rss_mb": live[-1]["rss_mb"],
        "max_children_rss_mb": max(s["children_rss_mb"] for s in samples),
        "growth_after_warmup_mb": round(live[-1]["rss_mb"] - warm["rss_mb"], 1),
        "slope_mb_per_min": round(slope_min, 2),
        "slope_pct_of_warmup_per_min": round(pct, 3),
        "flat": pct < FLAT_PCT_PER_MIN,
        "baseline_rss_mb": baseline,
        "max_vs_baseline": round(max_rss / baseline, 2),
        "meets_target": max_rss <= TARGET_MAX_RSS_MB and pct < FLAT_PCT_PER_MIN,
    }


# -- output ------------------------------------------------------------------------------------
def table_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    lat, ref, mem = result["latency"], result["reference"], result["memory"]
    naive = {"reference_name": ref["name"]}
    rows = []
    e2e, ref_e2e = lat["data_to_order_ms"], ref["data_to_order_ms"]
    case = f"live data → order, {lat['offered_events_per_s']:,} events/s offered, one process"
    if e2e is not None:
        rows.append(
            row(case, "p95 ms", e2e["p95_ms"], better="lower", target=TARGET_P95_MS,
                reference=ref_e2e and ref_e2e["p95_ms"], **naive)
        )  # fmt: skip
    rows.append(
        row(f"live ingest, {lat['offered_events_per_s']:,} events/s offered", "events/s",
            lat["ingested_events_per_s"], better="higher", target=lat["offered_events_per_s"],
            reference=ref["ingested_events_per_s"], **naive)
    )  # fmt: skip
    m = mem["engine"]
    mfig = mem["rss"]
    mcase = f"live RSS, {SYMBOLS} symbols at {m['offered_events_per_s']:,} events/s"
    rows.append(
        row(f"{mcase}, max", "MB", mfig["max_rss_mb"], better="lower", target=TARGET_MAX_RSS_MB,
            reference=mfig["baseline_rss_mb"], reference_name="import quantlab, polars")
    )  # fmt: skip
    # --quick's run is mostly warm-up: its slope is shown, but only a full run is a verdict
    flat_target = None if result.get("quick") else FLAT_PCT_PER_MIN
    rows.append(
        row(f"{mcase}, growth after warm-up", "% of RSS/min",
            mfig["slope_pct_of_warmup_per_min"], better="lower", target=flat_target)
    )  # fmt: skip
    if m["data_to_order_ms"] is not None:
        rows.append(
            row(f"live data → order, {m['offered_events_per_s']:,} events/s, one process",
                "p95 ms", m["data_to_order_ms"]["p95_ms"], better="lower", target=TARGET_P95_MS)
        )  # fmt: skip
    return rows


def _fmt(v: Any, spec: str = ">9.2f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return f"{'-':>9s}"
    return format(v, spec)


def report(result: dict[str, Any]) -> str:
    buf = io.StringIO()
    lat, ref, mem = result["latency"], result["reference"], result["memory"]

    def p(*a: Any) -> None:
        print(*a, file=buf)

    p(f"LIVE, one process, {SYMBOLS} symbols, ema_cross EMA({FAST})/EMA({SLOW}), paper venue")
    p(f"\n1. data -> order at {lat['offered_events_per_s']:,} events/s offered "
      f"({lat['window_s']:.0f} s window; figures from {lat['figures_from']})")  # fmt: skip
    p(f"{'':34s} {'p50':>9s} {'p95':>9s} {'p99':>9s} {'max':>9s} {'orders':>8s} {'ev/s in':>10s}")
    for label, r in (("quantlab live", lat), ("naive asyncio pipeline (ref)", ref)):
        d = r["data_to_order_ms"] or {}
        p(f"{label:34s} {_fmt(d.get('p50_ms'))} {_fmt(d.get('p95_ms'))} "
          f"{_fmt(d.get('p99_ms'))} {_fmt(d.get('max_ms'))} {d.get('count', 0):>8,} "
          f"{r['ingested_events_per_s']:>10,.0f}")  # fmt: skip
    p(f"ingested {lat['ingested_events_per_s']:,.0f} events/s of {lat['offered_events_per_s']:,} "
      f"offered ({lat['ingested_vs_offered']:.1%}); {lat['events_total']:,} events in all; "
      f"engine stop took {lat['stop_s']} s")  # fmt: skip
    _stages(p, lat)
    m = mem["engine"]
    r = mem["rss"]
    p(f"\n2. RSS, {SYMBOLS} symbols at {m['offered_events_per_s']:,} events/s for "
      f"{r['run_s']:.0f} s (ingested {m['ingested_events_per_s']:,.0f}/s)")  # fmt: skip
    p(f"baseline (import quantlab, polars) {r['baseline_rss_mb']:.0f} MB; warm-up "
      f"(t={r['warmup_at_s']:.0f} s) {r['warmup_rss_mb']:.0f} MB; max {r['max_rss_mb']:.0f} MB "
      f"({r['max_vs_baseline']}x baseline); final {r['final_rss_mb']:.0f} MB")  # fmt: skip
    p(f"growth after warm-up {r['growth_after_warmup_mb']:+.1f} MB, slope "
      f"{r['slope_mb_per_min']:+.2f} MB/min ({r['slope_pct_of_warmup_per_min']:+.3f} %/min): "
      + (f"max <= {TARGET_MAX_RSS_MB:.0f} MB: {'met' if r['max_rss_mb'] <= TARGET_MAX_RSS_MB else 'MISSED'}; "  # noqa: E501
         "flatness: no verdict on a --quick run (mostly warm-up)" if result.get("quick") else
         f"{'flat' if r['flat'] else 'NOT flat'}; target max <= {TARGET_MAX_RSS_MB:.0f} MB and "
         f"flat: {'met' if r['meets_target'] else 'MISSED'}"))  # fmt: skip
    d = m["data_to_order_ms"] or {}
    p(f"data -> order at {m['offered_events_per_s']:,} events/s: p50 {_fmt(d.get('p50_ms'), '.2f')}"
      f" p95 {_fmt(d.get('p95_ms'), '.2f')} p99 {_fmt(d.get('p99_ms'), '.2f')} ms "
      f"({d.get('count', 0):,} orders)")  # fmt: skip
    _stages(p, m)
    p(f"\nratios: {json.dumps(result['ratios'])}")
    return buf.getvalue()


def _stages(p: Any, r: dict[str, Any]) -> None:
    stages = r["stages"]
    p(f"  {'consumer (ms)':22s} {'n':>8s} {'p50':>8s} {'p95':>8s} {'p99':>8s} {'busy s':>7s}"
      f" | since data: {'p50':>8s} {'p95':>8s} {'p99':>8s}")  # fmt: skip
    heavy = sorted((n for n in stages if n not in PIPELINE), key=lambda n: -stages[n]["busy_s"])[:4]
    for name in [*PIPELINE, *heavy]:
        s = stages.get(name)
        if s is None:
            p(f"  {name:22s} (no message)")
            continue
        sd = s["since_data"] or {}
        p(f"  {name:22s} {s['count']:>8,} {_fmt(s['p50_ms'], '>8.2f')} {_fmt(s['p95_ms'], '>8.2f')}"
          f" {_fmt(s['p99_ms'], '>8.2f')} {s['busy_s']:>7.1f} |             "
          f"{_fmt(sd.get('p50_ms'), '>8.1f')} {_fmt(sd.get('p95_ms'), '>8.1f')} "
          f"{_fmt(sd.get('p99_ms'), '>8.1f')}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a run that finishes within a minute")
    ap.add_argument("--out", type=Path, default=None, help="also write the output to this file")
    ap.add_argument("--rate", type=int, default=RATE, help="offered events/s, latency run")
    ap.add_argument("--latency-seconds", type=float, default=None)
    ap.add_argument("--memory-rate", type=int, default=MEMORY_RATE)
    ap.add_argument("--memory-seconds", type=float, default=None)
    args = ap.parse_args()
    lat_s = args.latency_seconds or (10.0 if args.quick else 45.0)
    mem_s = args.memory_seconds or (20.0 if args.quick else 600.0)
    drain_s = 8.0 if args.quick else 120.0
    started = time.monotonic()
    baseline = baseline_rss()
    latency = run_engine(symbols=SYMBOLS, rate=args.rate, seconds=lat_s, drain_s=drain_s)
    reference = run_reference(SYMBOLS, args.rate, 5.0 if args.quick else 30.0)
    engine_mem = run_engine(symbols=SYMBOLS, rate=args.memory_rate, seconds=mem_s, drain_s=drain_s)
    rss = memory_figures(engine_mem["rss_samples"], baseline)
    e2e, ref_e2e = latency["data_to_order_ms"], reference["data_to_order_ms"]
    result: dict[str, Any] = {
        "benchmark": "live",
        "quick": args.quick,
        "machine": f"{platform.machine()} python {platform.python_version()}",
        "latency": latency,
        "reference": reference,
        "memory": {"engine": engine_mem, "rss": rss},
        "ratios": {
            "p95_vs_naive": round(e2e["p95_ms"] / ref_e2e["p95_ms"], 2)
            if e2e and ref_e2e and ref_e2e["p95_ms"]
            else None,
            "ingest_vs_naive": round(
                latency["ingested_events_per_s"] / reference["ingested_events_per_s"], 2
            ),
            "max_rss_vs_baseline": rss["max_vs_baseline"],
        },
        "targets": {
            "data_to_order_p95_ms": TARGET_P95_MS,
            "max_rss_mb": TARGET_MAX_RSS_MB,
            "flat_pct_per_min": FLAT_PCT_PER_MIN,
        },
        "meets_target": {
            "latency": bool(e2e and e2e["p95_ms"] is not None and e2e["p95_ms"] < TARGET_P95_MS),
            "ingest": latency["ingested_vs_offered"] >= 0.99,
            "memory": rss["meets_target"],
        },
        "seconds": 0.0,
    }
    result["seconds"] = round(time.monotonic() - started, 1)
    result["rows"] = table_rows(result)
    text = report(result) + json.dumps(result) + "\n"
    sys.stdout.write(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
