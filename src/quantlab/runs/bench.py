"""`quantlab bench`: run every benchmark script and write one table of what they measured.

Each script in ``benchmarks/`` (``bench_*.py``) measures quantlab and its reference (TA-Lib,
a naive loop, redis-py, torch...) in the same run and prints, as its last stdout line, one
JSON object whose ``rows`` list its headline figures::

    {"case": "JSON frames of 1,000 events", "metric": "events/s", "quantlab": 385863.0,
     "reference": 324525.0, "reference_name": "naive per-event loop", "better": "higher",
     "target": 1000000.0, "meets_target": false}

`run_benchmarks` runs the scripts one after the other (``--quick``: the under-a-minute
versions), each in its own process, and `BenchReport` turns their rows into one table with the
machine's description: `to_markdown` and `to_json`. ``x_reference`` is how many times better
quantlab's figure is than the reference's (above 1: quantlab is better), whichever direction
the metric prefers.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from quantlab.core.errors import QuantlabError

ROW_FIELDS = ("case", "metric", "quantlab", "reference", "reference_name", "better", "target")
PACKAGES = ("polars", "numpy", "msgspec", "numba", "redis", "chromadb", "onnxruntime", "panel")


class BenchError(QuantlabError):
    """The benchmarks could not be run (no scripts, an unknown name)."""


@dataclass
class BenchResult:
    """One script's run: its last-line JSON, or why there is none."""

    name: str
    script: Path
    seconds: float
    returncode: int | None
    result: dict[str, Any] | None = None
    error: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


def find_benchmarks(folder: Path, only: Sequence[str] | None = None) -> list[Path]:
    """The ``bench_*.py`` scripts of `folder`, or those of `only` (names like ``ingest``)."""
    scripts = sorted(folder.glob("bench_*.py"))
    if not scripts:
        raise BenchError(f"no bench_*.py scripts in {folder}")
    by_name = {p.stem.removeprefix("bench_"): p for p in scripts}
    if only:
        unknown = [n for n in only if n not in by_name]
        if unknown:
            raise BenchError(f"unknown benchmarks {unknown}; known: {sorted(by_name)}")
        return [by_name[n] for n in only]
    return scripts


def _check_row(row: Any, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise ValueError(f"{where}: a row must be an object, got {type(row).__name__}")
    missing = [f for f in ROW_FIELDS if f not in row]
    if missing:
        raise ValueError(f"{where}: row {row.get('case')!r} lacks {missing}")
    if row["better"] not in ("higher", "lower"):
        raise ValueError(f"{where}: row {row['case']!r}: better must be 'higher' or 'lower'")
    for key in ("quantlab", "reference", "target"):
        value = row[key]
        if value is not None and not isinstance(value, int | float):
            raise ValueError(f"{where}: row {row['case']!r}: {key} {value!r} is not a number")
    return row


def parse_output(stdout: str, where: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The last non-empty line of a script's output as JSON, and its checked rows."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{where}: printed nothing")
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: last line is not JSON ({exc}): {lines[-1][:200]!r}") from exc
    if not isinstance(result, dict):
        raise ValueError(f"{where}: last line is JSON but not an object")
    rows = result.get("rows")
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{where}: its JSON has no 'rows' (the table's figures)")
    return result, [_check_row(r, where) for r in rows]


def run_benchmark(script: Path, *, quick: bool, timeout_s: float) -> BenchResult:
    """Run one script in its own process and read its figures."""
    name = script.stem.removeprefix("bench_")
    cmd = [sys.executable, str(script), *(["--quick"] if quick else [])]
    started = time.monotonic()
    try:
        done = subprocess.run(  # noqa: S603 (our interpreter, a script of the benchmarks folder)
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=script.parent.parent,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return BenchResult(
            name, script, time.monotonic() - started, None, error=f"timed out after {timeout_s}s"
        )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        return BenchResult(
            name,
            script,
            seconds,
            done.returncode,
            error=f"exited {done.returncode}: " + " | ".join(tail),
        )
    try:
        result, rows = parse_output(done.stdout, script.name)
    except ValueError as exc:
        return BenchResult(name, script, seconds, done.returncode, error=str(exc))
    return BenchResult(name, script, seconds, done.returncode, result=result, rows=rows)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = ""
    memory_gib = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory_gib = round(int(line.split()[1]) / 1024**2, 1)
                break
    except OSError:
        pass
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "packages": versions,
    }


def x_reference(row: dict[str, Any]) -> float | None:
    """How many times better quantlab's figure is than the reference's (None: no reference)."""
    q, r = row.get("quantlab"), row.get("reference")
    if q is None or r is None or not q or not r or math.isnan(q) or math.isnan(r):
        return None
    return float(q / r if row["better"] == "higher" else r / q)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "✓" if value else "✗"
    if isinstance(value, int | float):
        if math.isnan(value):
            return "n/a"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.4g}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def _times(x: float | None) -> str:
    if x is None:
        return ""
    return f"{x:.2f}×" if x >= 0.1 else f"{x:.2g}×"


@dataclass
class BenchReport:
    """Every script's figures as one table, with the machine's description."""

    quick: bool
    results: list[BenchResult]
    machine: dict[str, Any]
    started: str

    @property
    def failed(self) -> list[BenchResult]:
        return [r for r in self.results if not r.ok]

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for result in self.results:
            for row in result.rows:
                out.append({"benchmark": result.name, **row, "x_reference": x_reference(row)})
        return out

    def to_json(self) -> str:
        return json.dumps(
            {
                "quick": self.quick,
                "started": self.started,
                "machine": self.machine,
                "benchmarks": [
                    {
                        "name": r.name,
                        "script": str(r.script),
                        "seconds": round(r.seconds, 1),
                        "ok": r.ok,
                        "error": r.error,
                        "result": r.result,
                    }
                    for r in self.results
                ],
                "rows": self.rows(),
            },
            indent=2,
            allow_nan=True,
        )

    def to_markdown(self) -> str:
        m = self.machine
        lines = [
            f"# quantlab benchmarks ({'--quick' if self.quick else 'full'} run, {self.started})",
            "",
            f"Machine: {m['cpu'] or m['machine']}, {m['cpus']} CPUs, {m['memory_gib']} GiB, "
            f"{m['platform']}, Python {m['python']}; load average at start "
            f"{', '.join(str(x) for x in m['load_average'])}.",
            "Packages: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + ".",
            "",
            "| benchmark | case | metric | quantlab | reference | × reference | target | met |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | :---: |",
        ]
        for row in self.rows():
            ref = _fmt(row["reference"])
            if row["reference_name"] and row["reference"] is not None:
                ref = f"{ref} ({row['reference_name']})"
            x = row["x_reference"]
            lines.append(
                f"| {row['benchmark']} | {row['case']} | {row['metric']} | "
                f"{_fmt(row['quantlab'])} | {ref} | {_times(x)} | "
                f"{_fmt(row['target'])} | {_fmt(row.get('meets_target'))} |"
            )
        lines.append("")
        lines.append(
            "× reference: how many times better quantlab's figure is than the reference "
            "measured in the same run (above 1: quantlab is better)."
        )
        for r in self.results:
            status = "ok" if r.ok else f"FAILED: {r.error}"
            lines.append(f"- `{r.script.name}`: {r.seconds:.1f} s, {status}")
        return "\n".join(lines) + "\n"

    def write(self, folder: Path) -> tuple[Path, Path]:
        """Write ``bench.md`` and ``bench.json`` into `folder`; returns their paths."""
        folder.mkdir(parents=True, exist_ok=True)
        md, js = folder / "bench.md", folder / "bench.json"
        md.write_text(self.to_markdown())
        js.write_text(self.to_json())
        return md, js


def run_benchmarks(
    folder: Path,
    *,
    quick: bool,
    only: Sequence[str] | None = None,
    timeout_s: float = 1800.0,
    progress: Callable[[str, int, int], None] | None = None,
) -> BenchReport:
    """Run the scripts of `folder` one after the other (they would disturb each other's
    figures side by side) and gather their rows."""
    scripts = find_benchmarks(folder, only)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info = machine()
    results = []
    for i, script in enumerate(scripts):
        if progress is not None:
            progress(script.stem.removeprefix("bench_"), i, len(scripts))
        results.append(run_benchmark(script, quick=quick, timeout_s=timeout_s))
    if progress is not None:
        progress("", len(scripts), len(scripts))
    return BenchReport(quick=quick, results=results, machine=info, started=started)
