"""Dashboard under load: updates delivered to a browser and the server's CPU share.

A live engine streams 100 synthetic symbols; `quantlab dashboard` serves the page to headless
Debian chromium (Playwright), which stays on the markets tab (the heaviest: 100-row table, price
chart streaming). Over the window we count the Bokeh websocket messages the browser receives
(updates/s) and the `panel serve` process's CPU share. Reference: the same dashboard with no
engine (idle, nothing changes), and the engine's own CPU share.

    python benchmarks/bench_dashboard.py            # 30 s windows; writes results/dashboard.txt
    python benchmarks/bench_dashboard.py --quick    # 6 s windows, under a minute

The last stdout line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from _rows import row

from quantlab.testing.dashboard import CHROMIUM, CHROMIUM_ARGS, DashboardStack

ROOT = Path(__file__).resolve().parents[1]


def _server(proc: subprocess.Popen[bytes]) -> psutil.Process:
    """The `panel serve` child of `quantlab dashboard` (the process doing the work)."""
    parent = psutil.Process(proc.pid)
    for _ in range(100):
        kids = parent.children(recursive=True)
        if kids:
            return kids[0]
        time.sleep(0.1)
    return parent


def _cpu(procs: list[psutil.Process], seconds: float) -> list[float]:
    """CPU share (% of one core) of each process over `seconds`."""
    t0 = [p.cpu_times() for p in procs]
    start = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - start
    out = []
    for p, a in zip(procs, t0, strict=True):
        b = p.cpu_times()
        out.append(100 * ((b.user - a.user) + (b.system - a.system)) / wall)
    return out


def measure(tmp: Path, *, engine: bool, symbols: int, rate: int, window: float) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    stack = DashboardStack(tmp)
    try:
        eng = None
        if engine:
            stack.engine(symbols=symbols, rate=rate, duration=int(window + 60))
            eng = stack.procs[-1]
        base = stack.dashboard(timeout=60)
        dash = stack.procs[-1]
        if engine:
            stack.wait_snapshot(timeout=60)
        server = _server(dash)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            frames = {"n": 0, "bytes": 0}

            def on_ws(ws: Any) -> None:
                def got(payload: Any) -> None:
                    frames["n"] += 1
                    frames["bytes"] += len(payload)

                ws.on("framereceived", got)

            page.on("websocket", on_ws)
            page.goto(f"{base}/dashboard")
            page.locator(".bk-Canvas >> visible=true").first.wait_for(timeout=30_000)
            page.wait_for_timeout(3000)  # settle: first render done
            n0, b0, t0 = frames["n"], frames["bytes"], time.monotonic()
            watched = [server] + ([psutil.Process(eng.pid)] if eng else [])
            # the CPU window runs in this thread; Playwright's events are pumped after it
            cpu = _cpu(watched, window)
            page.wait_for_timeout(200)
            elapsed = time.monotonic() - t0
            n, nbytes = frames["n"] - n0, frames["bytes"] - b0
            price = page.locator(".ql-last-price").first.inner_text() if engine else None
            browser.close()
        return {
            "engine": engine,
            "symbols": symbols if engine else 0,
            "window_s": round(elapsed, 2),
            "ws_messages_per_s": round(n / elapsed, 2),
            "ws_kbytes_per_s": round(nbytes / elapsed / 1024, 2),
            "server_cpu_pct": round(cpu[0], 1),
            "engine_cpu_pct": round(cpu[1], 1) if engine else None,
            "last_price_shown": price,
        }
    finally:
        stack.close()


def table_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Headline rows for `quantlab bench`: the streaming dashboard against the same dashboard
    with no engine (and its CPU against the engine it follows)."""
    case = f"{result['symbols']} symbols streaming, 1 browser"
    idle = "same dashboard, no engine"
    rows = [
        row(case, "updates/s", result["updates_per_s"], better="higher",
            reference=result["idle_updates_per_s"], reference_name=idle),
        row(case, "server CPU %", result["server_cpu_pct"], better="lower",
            reference=result["idle_server_cpu_pct"], reference_name=idle),
        row(case, "websocket KiB/s", result["ws_kbytes_per_s"], better="lower"),
    ]  # fmt: skip
    if result["engine_cpu_pct"] is not None:
        rows.append(
            row(f"{case}, dashboard vs engine", "CPU %", result["server_cpu_pct"],
                better="lower", reference=result["engine_cpu_pct"],
                reference_name="the engine it follows")
        )  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="6 s windows (under a minute)")
    ap.add_argument("--symbols", type=int, default=100)
    ap.add_argument("--rate", type=int, default=2000, help="engine events/s")
    args = ap.parse_args()
    window = 6.0 if args.quick else 30.0
    with tempfile.TemporaryDirectory(prefix="ql-bench-dash-") as d:
        (Path(d) / "live").mkdir()
        (Path(d) / "idle").mkdir()
        live = measure(Path(d) / "live", engine=True, symbols=args.symbols, rate=args.rate,
                       window=window)  # fmt: skip
        idle = measure(Path(d) / "idle", engine=False, symbols=0, rate=0, window=window)
    for name, r in (("100 symbols streaming", live), ("idle (no engine)", idle)):
        print(
            f"{name:24s} ws messages/s {r['ws_messages_per_s']:7.2f}  "
            f"{r['ws_kbytes_per_s']:8.2f} KiB/s  dashboard server CPU {r['server_cpu_pct']:5.1f} %"
            + (
                f"  engine CPU {r['engine_cpu_pct']:5.1f} %"
                if r["engine_cpu_pct"] is not None
                else ""
            )
        )
    result = {
        "benchmark": "dashboard",
        "quick": args.quick,
        "window_s": window,
        "symbols": args.symbols,
        "engine_events_per_s": args.rate,
        "updates_per_s": live["ws_messages_per_s"],
        "ws_kbytes_per_s": live["ws_kbytes_per_s"],
        "server_cpu_pct": live["server_cpu_pct"],
        "engine_cpu_pct": live["engine_cpu_pct"],
        "idle_updates_per_s": idle["ws_messages_per_s"],
        "idle_server_cpu_pct": idle["server_cpu_pct"],
        # Ratios: the dashboard's CPU against the engine it follows, and against itself idle.
        "server_vs_engine_cpu": (
            round(live["server_cpu_pct"] / live["engine_cpu_pct"], 3)
            if live["engine_cpu_pct"]
            else None
        ),
        "server_cpu_streaming_minus_idle_pct": round(
            live["server_cpu_pct"] - idle["server_cpu_pct"], 1
        ),
    }
    result["rows"] = table_rows(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
