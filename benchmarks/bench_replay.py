"""Replay throughput: events/s of a whole backtest (ingestion, features, signals, risk,
execution and settlement on the paper venue), and how its cost grows with events and symbols.

Every case is ``Node(settings, bars=..., run_dir=...).run()`` (mode backtest), timed from the
construction of the `Node` to the end of ``run()`` after a small warm-up run in the same process
(imports, numba's cache), each case in a fresh subprocess so its peak RSS is its own. An event
is a bar replayed.

1. **Bundled real data**: what the main job (``make run`` / ``quantlab backtest`` on default
   settings) replays, ``bundled:binance_btc_pairs_5m_2018-01.parquet`` (57,546 5-minute bars of
   10 Binance pairs; read from the file by the engine, so ingestion is inside the timing):
   * the default strategy, ``hedge`` (five experts incl. the Chroma pattern memory and the ONNX
     model), default feature spec: quantlab only (no reference runs that ensemble);
   * ``ema_cross`` with bench_backtest.py's settings (EMA 10/30 of the close, always-in, fixed
     notional, IOC limit at close +/- half the assumed spread, no fees, risk limits out of the
     way) against backtrader running bench_backtest.py's ``EmaCrossBt`` on the same bars, one
     ``Cerebro`` per symbol (the strategy trades each symbol on its own; times summed).
2. **Synthetic, 100 symbols x 10,000,000 events** (``--quick``: 100,000): a seeded geometric
   random walk per symbol (bench_backtest.py's ``random_walk``), aligned 1-minute timestamps,
   every symbol on every minute, ``ema_cross`` as above. The Hedge ensemble is not used here:
   it replays a few thousand events/s, 10^7 events would take hours.
3. **Low turnover**: the same synthetic data and strategy with EMA 200/400, which trades on
   about one bar in 1,000 instead of one in 27, in 100,000-row batches (``ingest.batch_size``;
   an EMA crossover trades the same whatever the batch size): 100 symbols x 10,000,000 events
   (``--quick``: 1,000,000), and (full run) 1,000,000 with the default 1,000-row batches. The
   growth cases below are bound by the cost of a fill; this one by the cost of an event.
4. **Cost growth**: events/s and peak RSS at 1, 10 and 100 symbols x 10^5, 10^6, 10^7 events
   (``--quick``: 10^5 at 1 and 100 symbols). Peak RSS is the child's ``ru_maxrss``: it
   includes the bars in memory
   (``rss_before_mb`` is the RSS after generating them and the warm-up, before the run).
   The full run has a wall-clock budget (``--budget-s``): a case whose estimate (its events
   over the events/s of the same symbol count one size smaller, plus 20 %) does not fit what is
   left of the budget is skipped and listed with its estimate. Plot: ``--svg`` (full run
   default ``benchmarks/results/growth.svg``).

Reference, in the same run: backtrader on the bundled ``ema_cross`` case and on the 10^5-event
synthetic cases (``--quick``: 100 symbols only); not on 10^6+ (about 16,000 bars/s: minutes
per case). Fill counts of both are reported; they need not be equal on the real data (gaps,
IOC limits that miss) and are not checked (bench_backtest.py checks trade equality).

Target: >= 500,000 events/s (DESIGN §7). Prints a table and, as its last line, one JSON object.

    python benchmarks/bench_replay.py [--quick] [--out FILE] [--svg FILE] [--budget-s S]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import platform
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import polars as pl
from _rows import row
from bench_backtest import (
    FAST,
    SLOW,
    ema_cross_settings,
    random_walk,
    run_backtrader,
    to_pandas,
)

TARGET = 500_000.0  # events/s, DESIGN §7
BT = "backtrader"
SYMBOL_COUNTS = (100, 10, 1)
QUICK_SYMBOL_COUNTS = (100, 1)
LOW_FAST, LOW_SLOW, LOW_BATCH = 200, 400, 100_000  # the low-turnover case
FULL_SIZES = (100_000, 1_000_000, 10_000_000)
QUICK_SIZES = (100_000,)
QUICK_END = "2018-01-14"  # --quick replays the first 4 of the bundled file's 20 days with hedge
HERE = Path(__file__).resolve()


# -- the child: one case in a fresh process ---------------------------------------------------
def settings_for(
    strategy: str,
    *,
    fast: int = FAST,
    slow: int = SLOW,
    batch_size: int | None = None,
    **data: Any,
) -> Any:
    from quantlab.config import load_settings

    if strategy == "hedge":
        return load_settings(data=data) if data else load_settings()
    ingest = {} if batch_size is None else {"batch_size": batch_size}
    return ema_cross_settings(fast, slow, data=data, ingest=ingest)


def synthetic(events: int, symbols: int) -> pl.DataFrame:
    """`events` bars: `symbols` seeded random walks on the same 1-minute grid, time-sorted."""
    per = events // symbols
    frames = [
        random_walk(per, seed=1000 + i).with_columns(symbol=pl.lit(f"S{i:03d}/USD"))
        for i in range(symbols)
    ]
    return pl.concat(frames).sort("timestamp", "symbol")


def rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def run_case(spec: dict[str, Any]) -> dict[str, Any]:
    from quantlab.engine import Node

    strategy = spec["strategy"]
    bundled = spec["kind"] == "bundled"
    frame = None if bundled else synthetic(spec["events"], spec["symbols"])
    with tempfile.TemporaryDirectory() as tmp:
        Node(settings_for(strategy), bars=random_walk(3_000, seed=1), run_dir=f"{tmp}/w").run()
        if frame is None:
            settings = settings_for(strategy, end=spec.get("end"))
        else:
            settings = settings_for(
                strategy,
                fast=spec.get("fast", FAST),
                slow=spec.get("slow", SLOW),
                batch_size=spec.get("batch_size"),
                symbols=sorted(frame["symbol"].unique()),
            )
        before = rss_mb()
        t = time.perf_counter()
        result = Node(settings, bars=frame, run_dir=f"{tmp}/run").run()
        seconds = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    s = result.summary
    consumers = s.latency.get("consumers", {})
    stages = {k: c["count"] * c["mean_ms"] / 1e3 for k, c in consumers.items()}
    out: dict[str, Any] = {
        **spec,
        "events": s.events,
        "symbols": s.symbols,
        "seconds": round(seconds, 3),
        "events_per_s": round(s.events / seconds, 1),
        "rss_before_mb": round(before, 1),
        "peak_rss_mb": round(peak, 1),
        "fills": s.fills,
        "stage_seconds": {k: round(v, 3) for k, v in sorted(stages.items(), key=lambda kv: -kv[1])},
    }
    if spec.get("reference"):
        from quantlab.adapters.sim.data import read_bars

        bars = read_bars(settings.data.paths, end=spec.get("end")) if bundled else frame
        assert bars is not None
        run_backtrader(to_pandas(random_walk(3_000, seed=1)), FAST, SLOW)  # warm-up
        bt_s, bt_fills = 0.0, 0
        for _, part in bars.group_by("symbol", maintain_order=True):
            sec, fills = run_backtrader(to_pandas(part), FAST, SLOW)
            bt_s, bt_fills = bt_s + sec, bt_fills + fills.height
        out[BT] = {
            "seconds": round(bt_s, 3),
            "events_per_s": round(bars.height / bt_s, 1),
            "fills": bt_fills,
        }
        out["ratio_vs_backtrader"] = round(out["events_per_s"] / out[BT]["events_per_s"], 3)
    return out


def spawn(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run one case in a fresh interpreter; its last stdout line is the case's JSON."""
    cmd = [sys.executable, str(HERE), "--case", json.dumps(spec)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout_s:.0f} s"}
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-4:])
        return {**spec, "error": f"exited {done.returncode}: {tail}"}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- the plot ----------------------------------------------------------------------------------
def growth_svg(cases: list[dict[str, Any]]) -> str:
    """Two log-log panels, events/s and peak RSS (MB) against events, one line per symbol
    count."""
    colors = {1: "#1f77b4", 10: "#ff7f0e", 100: "#2ca02c"}
    w, h, m = 330, 250, (55, 15, 45, 30)  # panel size; margins left, right, bottom, top
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * w}" height="{h + 25}" '
        'font-family="sans-serif" font-size="11">'
    ]
    panels = (("events_per_s", "events/s"), ("peak_rss_mb", "peak RSS (MB)"))
    for p, (key, label) in enumerate(panels):
        pts = [(c["events"], c[key], c["symbols"]) for c in cases if key in c]
        if not pts:
            continue
        x0, y0 = p * w + m[0], m[3]
        pw, ph = w - m[0] - m[1], h - m[2] - m[3]
        xs = [math.log10(x) for x, _, _ in pts]
        ys = [math.log10(y) for _, y, _ in pts] + [math.log10(TARGET)] * (key == "events_per_s")
        xl, xh = math.floor(min(xs)), max(math.ceil(max(xs)), math.floor(min(xs)) + 1)
        yl, yh = math.floor(min(ys)), max(math.ceil(max(ys)), math.floor(min(ys)) + 1)

        def sx(v: float, xl: float = xl, xh: float = xh, x0: float = x0, pw: float = pw) -> float:
            return x0 + (math.log10(v) - xl) / (xh - xl) * pw

        def sy(v: float, yl: float = yl, yh: float = yh, y0: float = y0, ph: float = ph) -> float:
            return y0 + ph - (math.log10(v) - yl) / (yh - yl) * ph

        svg.append(
            f'<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>'
        )
        for e in range(xl, xh + 1):
            x = sx(10.0**e)
            svg.append(
                f'<line x1="{x:.1f}" y1="{y0 + ph}" x2="{x:.1f}" y2="{y0 + ph + 4}" '
                f'stroke="#444"/><text x="{x:.1f}" y="{y0 + ph + 15}" '
                f'text-anchor="middle">1e{e}</text>'
            )
        for e in range(yl, yh + 1):
            y = sy(10.0**e)
            svg.append(
                f'<line x1="{x0 - 4}" y1="{y:.1f}" x2="{x0 + pw}" y2="{y:.1f}" '
                f'stroke="#ddd"/><text x="{x0 - 6}" y="{y + 4:.1f}" '
                f'text-anchor="end">1e{e}</text>'
            )
        if key == "events_per_s":
            y = sy(TARGET)
            svg.append(
                f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + pw}" y2="{y:.1f}" stroke="red" '
                f'stroke-dasharray="4 3"/><text x="{x0 + pw - 2}" y="{y - 3:.1f}" '
                'text-anchor="end" fill="red">target 500k</text>'
            )
        for i, k in enumerate(sorted({s for _, _, s in pts})):
            line = sorted((x, y) for x, y, s in pts if s == k)
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in line)
            svg.append(
                f'<polyline points="{path}" fill="none" stroke="{colors.get(k, "#000")}" '
                'stroke-width="1.5"/>'
            )
            svg += [
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" '
                f'fill="{colors.get(k, "#000")}"/>'
                for x, y in line
            ]
            ly = y0 + 12 + 13 * i
            svg.append(  # the legend, in the RSS panel's top-left corner (small runs: low RSS)
                f'<line x1="{x0 + 8}" y1="{ly - 4}" x2="{x0 + 24}" y2="{ly - 4}" '
                f'stroke="{colors.get(k, "#000")}" stroke-width="2"/>'
                f'<text x="{x0 + 28}" y="{ly}">{k} symbol{"s" * (k > 1)}</text>'
                if key == "peak_rss_mb"
                else ""
            )
        svg.append(
            f'<text x="{x0 + pw / 2}" y="{h - 8}" text-anchor="middle">events (bars '
            f'replayed)</text><text x="{p * w + 12}" y="{y0 + ph / 2}" '
            f'text-anchor="middle" transform="rotate(-90 {p * w + 12} {y0 + ph / 2})">'
            f"{label}</text>"
        )
    svg.append(
        f'<text x="{w}" y="{h + 18}" text-anchor="middle">quantlab replay, ema_cross, '
        "paper venue (benchmarks/bench_replay.py)</text></svg>"
    )
    return "\n".join(svg) + "\n"


# -- the parent --------------------------------------------------------------------------------
def is_growth(c: dict[str, Any]) -> bool:
    """A case of the growth table (synthetic, EMA 10/30), not the low-turnover one."""
    return bool(c["kind"] == "synthetic" and "fast" not in c)


def name_of(c: dict[str, Any]) -> str:
    if c["kind"] == "bundled":
        part = f", to {c['end']}" if c.get("end") else ""
        return f"bundled 10 pairs 5m{part}, {c['strategy']}"
    if c.get("fast", FAST) != FAST:  # the low-turnover case
        batch = f", batches of {c['batch_size']:,}" if c.get("batch_size") else ""
        return (
            f"synthetic {c['symbols']} sym x {c['events']:,}, ema_cross "
            f"{c['fast']}/{c['slow']} (low turnover{batch})"
        )
    return f"synthetic {c['symbols']} sym x {c['events']:,}, ema_cross"


def main(quick: bool, budget_s: float) -> dict[str, Any]:
    started = time.monotonic()
    end = QUICK_END if quick else None
    specs: list[dict[str, Any]] = [
        {"kind": "bundled", "strategy": "hedge", "end": end},
        {"kind": "bundled", "strategy": "ema_cross", "end": None, "reference": True},
    ]
    # The growth cases trade on about one bar in 27 (EMA 10/30 of a random walk): the cost
    # per fill dominates. The same pipeline trading on about one bar in 1,000 (EMA 200/400),
    # fed in large batches (a backtest of this strategy gives the same trades whatever the
    # batch size), measures the per-event path.
    low = {"kind": "synthetic", "strategy": "ema_cross", "symbols": 100, "fast": LOW_FAST}
    low |= {"slow": LOW_SLOW, "batch_size": LOW_BATCH}
    specs.append({**low, "events": 1_000_000 if quick else 10_000_000})
    if not quick:  # the same with the default 1,000-row batches
        specs.append({**low, "events": 1_000_000, "batch_size": None})
    cases = [spawn(s, 1800) for s in specs]
    growth_start = time.monotonic()
    growth: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for events in QUICK_SIZES if quick else FULL_SIZES:
        for symbols in QUICK_SYMBOL_COUNTS if quick else SYMBOL_COUNTS:
            spec = {
                "kind": "synthetic",
                "strategy": "ema_cross",
                "events": events,
                "symbols": symbols,
                "reference": events == 100_000 and (symbols == 100 or not quick),
            }
            left = budget_s - (time.monotonic() - growth_start)
            prev = [c for c in growth if c["symbols"] == symbols and "events_per_s" in c]
            if prev:
                estimate = 1.2 * events / prev[-1]["events_per_s"] + 15
                if estimate > left:
                    skipped.append({**spec, "estimate_s": round(estimate), "left_s": round(left)})
                    continue
            growth.append(spawn(spec, max(left, 120) + 60))
    cases += growth
    done = [c for c in cases if "error" not in c]
    biggest = max((c for c in done if is_growth(c)), key=lambda c: c["events"], default=None)
    headline = [c for c in done if is_growth(c) and c["symbols"] == 100]
    return {
        "benchmark": "replay",
        "quick": quick,
        "machine": f"{platform.machine()} python {platform.python_version()}",
        "target_events_per_s": TARGET,
        "wall_s": round(time.monotonic() - started, 1),
        "budget_s": budget_s,
        "cases": cases,
        "skipped": skipped,
        "errors": [{"case": name_of(c), "error": c["error"]} for c in cases if "error" in c],
        "headline_synthetic": max(headline, key=lambda c: c["events"])["events"]
        if headline
        else None,
        "biggest_case": name_of(biggest) if biggest else None,
        "biggest_stage_seconds": biggest["stage_seconds"] if biggest else {},
        "ratios": {name_of(c): c["ratio_vs_backtrader"] for c in done if BT in c},
    }


def table_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """events/s of every case (against backtrader where it ran, against the target) and the
    peak RSS of every synthetic case."""
    rows = []
    for c in result["cases"]:
        if "error" in c:
            continue
        ref = c.get(BT)
        rows.append(
            row(
                name_of(c),
                "events/s",
                c["events_per_s"],
                better="higher",
                reference=ref["events_per_s"] if ref else None,
                reference_name="backtrader (same EMA crossover)" if ref else None,
                target=TARGET,
            )
        )
    rows += [
        row(name_of(c), "peak RSS MB", c["peak_rss_mb"], better="lower")
        for c in result["cases"]
        if "error" not in c and c["kind"] == "synthetic"
    ]
    return rows


def report(out: dict[str, Any]) -> None:
    print(
        f"{'case':52s} {'events':>11s} {'s':>8s} {'events/s':>10s} {'RSS0 MB':>8s} "
        f"{'peak MB':>8s} {'fills':>7s} {'bt ev/s':>9s} {'bt fills':>8s} {'x bt':>6s}"
    )
    for c in out["cases"]:
        if "error" in c:
            print(f"{name_of(c):52s} ERROR {c['error']}")
            continue
        ref = c.get(BT)
        bt = (
            f"{ref['events_per_s']:>9,.0f} {ref['fills']:>8,} {c['ratio_vs_backtrader']:>6.2f}"
            if ref
            else ""
        )
        print(
            f"{name_of(c):52s} {c['events']:>11,} {c['seconds']:>8.2f} "
            f"{c['events_per_s']:>10,.0f} {c['rss_before_mb']:>8.0f} {c['peak_rss_mb']:>8.0f} "
            f"{c['fills']:>7,} {bt}"
        )
    for s in out["skipped"]:
        print(
            f"{name_of(s):52s} skipped: estimate {s['estimate_s']:,} s > "
            f"{s['left_s']:,} s left of the {out['budget_s']:g} s budget"
        )
    if out["biggest_case"]:
        stages = out["biggest_stage_seconds"]
        top = ", ".join(f"{k} {v:.2f}" for k, v in list(stages.items())[:10])
        print(f"busy seconds per consumer, {out['biggest_case']}: {top}")
    print(f"target {TARGET:,.0f} events/s (DESIGN §7); wall {out['wall_s']} s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a run that finishes within a minute")
    ap.add_argument("--out", type=Path, default=None, help="also write the output to this file")
    ap.add_argument(
        "--svg",
        type=Path,
        default=None,
        help="write the growth plot here (full run default: results/growth.svg)",
    )
    ap.add_argument(
        "--budget-s",
        type=float,
        default=1200.0,
        help="wall-clock budget of the growth cases (default 1200)",
    )
    ap.add_argument(
        "--case",
        default=None,
        help="run one case in this process, given as JSON (what the full run spawns), e.g. "
        """'{"kind": "synthetic", "strategy": "ema_cross", "events": 1000000, "symbols": 100}'""",
    )
    ap.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="with --case: profile it (cProfile) and write the top functions to this file",
    )
    args = ap.parse_args()
    if args.case is not None:
        spec = json.loads(args.case)
        if args.profile is None:
            print(json.dumps(run_case(spec)))
            sys.exit(0)
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        result = profiler.runcall(run_case, spec)
        text_out = io.StringIO()
        text_out.write(f"cProfile of bench_replay.py --case '{args.case}'\n")
        text_out.write(f"{result['events']:,} events, {result['fills']:,} fills, ")
        text_out.write(f"{result['seconds']:.1f} s under the profiler\n")
        for key, n in (("tottime", 30), ("cumulative", 30)):
            pstats.Stats(profiler, stream=text_out).sort_stats(key).print_stats(n)
        args.profile.write_text(text_out.getvalue())
        print(json.dumps(result))
        sys.exit(0)
    buf = io.StringIO()
    out = main(args.quick, args.budget_s)
    with redirect_stdout(buf):
        report(out)
        out["rows"] = table_rows(out)
        print(json.dumps(out))
    text = buf.getvalue()
    sys.stdout.write(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    svg = args.svg or (None if args.quick else HERE.parent / "results" / "growth.svg")
    if svg is not None:
        svg.write_text(growth_svg([c for c in out["cases"] if is_growth(c) and "error" not in c]))
    if out["errors"]:
        sys.exit(f"{len(out['errors'])} case(s) failed: {out['errors']}")
