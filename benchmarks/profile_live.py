"""Where a live engine's time goes: py-spy samples of `bench_live.py`'s engine, by function.

Starts ``quantlab live`` (one process) with `bench_live.py`'s configuration (100 synthetic
symbols, EMA(2)/EMA(5) crossover, paper venue, lake and dashboard snapshot on) at `--rate`
events/s, lets it warm up, records `--seconds` of py-spy samples of every thread (``--format
raw``: one collapsed stack per line with its count), stops it, and prints, for the engine's
main thread and for the other threads, the share of samples in which each quantlab function
(and the top third-party frames) is on the stack: the inclusive share of its thread's samples,
the busiest first. Needs py-spy (in the dev extra).

    python benchmarks/profile_live.py [--rate 100000] [--seconds 15] [--warmup 10] [--out FILE]
"""

from __future__ import annotations

import argparse
import collections
import io
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

from bench_live import CONFIG, FAST, SLOW, SYMBOLS


def frames_of(stack: str) -> list[str]:
    """'func (file.py:12)' frames of a collapsed stack, outermost first, without line numbers."""
    out = []
    for frame in stack.split(";"):
        name, _, where = frame.partition(" (")
        path = where.rsplit(":", 1)[0]
        if "quantlab/" in path:
            path = "quantlab/" + path.split("quantlab/", 1)[1]
        elif "site-packages/" in path:
            path = path.split("site-packages/", 1)[1]
        out.append(f"{name} ({path})")
    return out


def summarise(raw: str, top: int) -> str:
    threads: dict[str, collections.Counter[str]] = {}
    totals: collections.Counter[str] = collections.Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        thread, _, rest = stack.partition(";")
        kind = "main thread" if "MainThread" in thread or "main" in thread.lower() else "others"
        totals[kind] += count
        seen = set(frames_of(rest))
        counter = threads.setdefault(kind, collections.Counter())
        for frame in seen:
            counter[frame] += count
    buf = io.StringIO()
    for kind in ("main thread", "others"):
        if not totals[kind]:
            continue
        print(f"\n{kind}: {totals[kind]:,} samples; share of them with the function on the stack",
              file=buf)  # fmt: skip
        shown = 0
        for frame, n in threads[kind].most_common():
            if "quantlab/" not in frame and shown >= top // 2:
                continue
            print(f"  {100 * n / totals[kind]:5.1f} %  {frame}", file=buf)
            shown += 1
            if shown >= top:
                break
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=100_000)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    from quantlab.testing.dashboard import DashboardStack

    with tempfile.TemporaryDirectory(prefix="profile-live-") as tmp_name:
        tmp = Path(tmp_name)
        stack = DashboardStack(tmp)
        config = CONFIG.format(fast=FAST, slow=SLOW, symbols=SYMBOLS, rate=a.rate, tmp=tmp)
        try:
            engine = stack.roles(config, ("all",), duration=int(a.warmup + a.seconds + 60))["all"]
            time.sleep(a.warmup)
            raw = tmp / "pyspy.txt"
            spy = Path(sys.executable).with_name("py-spy")
            subprocess.run(
                [str(spy), "record", "--format", "raw", "--threads", "--nonblocking", "-d",
                 str(a.seconds), "-r", "200", "-p", str(engine.pid), "-o", str(raw)],
                check=True, capture_output=True,
            )  # fmt: skip
            text = raw.read_text()
        finally:
            stack.close()
    out = io.StringIO()
    with redirect_stdout(out):
        print(f"py-spy, {a.seconds} s after {a.warmup:g} s of warm-up: quantlab live, "
              f"{SYMBOLS} synthetic symbols at {a.rate:,} events/s offered, "
              f"EMA({FAST})/EMA({SLOW})")  # fmt: skip
        print(summarise(text, a.top))
    sys.stdout.write(out.getvalue())
    if a.out is not None:
        a.out.write_text(out.getvalue())


if __name__ == "__main__":
    main()
