"""`quantlab check reliability`: run the reliability suite and write its report.

The suite is ``tests/reliability`` of a source checkout: faults (kill -9 during fills, Parquet
writes and bus consumption, disconnect storms, exchange errors, breaker trips, mixed
deployments), bad input (fuzzing every decoder) and security (secrets, authentication, SQL
injection, untrusted models, bind addresses). Each test records its figures with
`quantlab.testing.reliability.record` before it asserts; `run_reliability` runs pytest with
the figures going to a file, reads them back with the tests' outcomes (JUnit XML) and returns
a `ReliabilityReport`, which `write` turns into ``reliability.md`` and ``reliability.json``.

The report passes when every test passed (none failed, none skipped: a check that did not run
proves nothing), it has at least one row, and every row counts zero lost, zero duplicated,
zero leaked and zero failures of its kind.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantlab.core.errors import QuantlabError
from quantlab.runs.bench import machine
from quantlab.testing.reliability import AREAS, COUNTS, ENV


class ReliabilityError(QuantlabError):
    """The reliability suite could not be run (no tests folder, pytest missing)."""


@dataclass
class ReliabilityReport:
    """The suite's rows, its tests' outcomes and the machine it ran on."""

    rows: list[dict[str, Any]]
    tests: dict[str, int]
    failures: list[str]
    seconds: float
    returncode: int
    machine: dict[str, Any] = field(default_factory=machine)
    created: str = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    )

    @staticmethod
    def bad_counts(row: dict[str, Any]) -> dict[str, int]:
        return {k: row[k] for k in COUNTS if row.get(k)}

    @property
    def passed(self) -> bool:
        return (
            self.returncode == 0
            and self.tests.get("failed", 0) == 0
            and self.tests.get("errors", 0) == 0
            and self.tests.get("skipped", 0) == 0
            and bool(self.rows)
            and not any(self.bad_counts(r) for r in self.rows)
        )

    def totals(self) -> dict[str, Any]:
        """Sums over the rows: trials by unit, and each count."""
        by_unit: dict[str, int] = {}
        for row in self.rows:
            by_unit[row["unit"]] = by_unit.get(row["unit"], 0) + row["trials"]
        sums = {k: sum(r[k] or 0 for r in self.rows) for k in COUNTS}
        return {"rows": len(self.rows), "trials": by_unit, **sums}

    def to_json(self) -> dict[str, Any]:
        return {
            "report": "reliability",
            "passed": self.passed,
            "created": self.created,
            "seconds": round(self.seconds, 1),
            "machine": self.machine,
            "tests": self.tests,
            "failures": self.failures,
            "totals": self.totals(),
            "rows": self.rows,
        }

    def to_markdown(self) -> str:
        def cell(value: Any) -> str:
            return "–" if value is None else f"{value:,}" if isinstance(value, int) else str(value)

        t = self.tests
        totals = self.totals()
        lines = [
            "# Reliability report",
            "",
            f"**{'PASSED' if self.passed else 'FAILED'}**: {t.get('passed', 0)} tests passed, "
            f"{t.get('failed', 0)} failed, {t.get('errors', 0)} errors, "
            f"{t.get('skipped', 0)} skipped, in {self.seconds:.0f} s "
            f"({self.created}; {self.machine.get('cpus')} CPUs, "
            f"Python {self.machine.get('python')}, {self.machine.get('platform')}).",
            "",
            "Totals: "
            + ", ".join(f"{n:,} {unit}" for unit, n in sorted(totals["trials"].items()))
            + f"; lost {totals['lost']}, duplicated {totals['duplicated']}, "
            f"leaked {totals['leaked']}, other failures {totals['failed']}.",
            "",
            "Counts are of what must be zero; – : not what this check measures.",
        ]
        for area in AREAS:
            rows = [r for r in self.rows if r["area"] == area]
            if not rows:
                continue
            lines += [
                "",
                f"## {area.capitalize()}",
                "",
                "| check | trials | lost | duplicated | leaked | failures (of what) | detail |",
                "| --- | ---: | ---: | ---: | ---: | --- | --- |",
            ]
            for r in rows:
                failed = "–" if r["failed"] is None else f"{r['failed']:,} ({r['failed_what']})"
                lines.append(
                    f"| {r['check']} | {r['trials']:,} {r['unit']} | {cell(r['lost'])} | "
                    f"{cell(r['duplicated'])} | {cell(r['leaked'])} | {failed} | "
                    f"{r['detail'].replace('|', '/')} |"
                )
        if self.failures:
            lines += ["", "## Failed tests", ""] + [f"- `{f}`" for f in self.failures]
        return "\n".join(lines) + "\n"

    def write(self, folder: Path) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        md, js = folder / "reliability.md", folder / "reliability.json"
        md.write_text(self.to_markdown())
        js.write_text(json.dumps(self.to_json(), indent=1, default=str) + "\n")
        return md, js


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows the tests recorded (one JSON object a line), in the suite's order."""
    if not path.exists():
        return []
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ReliabilityError(f"{path}:{n}: not a JSON row ({exc}): {line[:120]!r}") from exc
    order = {a: i for i, a in enumerate(AREAS)}
    return sorted(rows, key=lambda r: (order.get(r["area"], 99), r["test"], r["at"]))


def read_junit(path: Path) -> tuple[dict[str, int], list[str]]:
    """(outcome counts, ids of the failed tests) from pytest's JUnit XML file."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures: list[str] = []
    if not path.exists():
        return counts, failures
    root = ET.parse(path).getroot()  # noqa: S314 - written by our own pytest run
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None:
            counts["failed"] += 1
            failures.append(name)
        elif case.find("error") is not None:
            counts["errors"] += 1
            failures.append(name)
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
            failures.append(f"{name} (skipped)")
        else:
            counts["passed"] += 1
    return counts, failures


def run_reliability(
    tests_dir: Path,
    *,
    workers: int = 2,
    select: str | None = None,
    log: Path | None = None,
    extra_args: Sequence[str] = (),
) -> ReliabilityReport:
    """Run the suite in `tests_dir` with pytest (`workers` processes, ``-k select``); its
    output goes to the console and, with `log`, to that file too."""
    if not tests_dir.is_dir():
        raise ReliabilityError(
            f"no reliability suite at {tests_dir}: run this from a quantlab source checkout"
        )
    with tempfile.TemporaryDirectory(prefix="ql-reliability-") as scratch:
        rows_file, junit = Path(scratch) / "rows.jsonl", Path(scratch) / "junit.xml"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            str(tests_dir),
            "-p",
            "no:cacheprovider",
            "-q",
            f"--junitxml={junit}",
            "-o",
            "junit_family=xunit2",
            *(["-n", str(workers), "--dist", "loadfile"] if workers > 1 else []),
            *(["-k", select] if select else []),
            *extra_args,
        ]
        env = {**os.environ, ENV: str(rows_file)}
        started = time.monotonic()
        out = open(log, "w") if log is not None else None  # noqa: SIM115 - closed below
        try:
            proc = subprocess.Popen(  # noqa: S603 - our interpreter running pytest
                cmd,
                cwd=tests_dir.parent.parent,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for line in proc.stdout or ():
                sys.stdout.write(line)
                sys.stdout.flush()
                if out is not None:
                    out.write(line)
            returncode = proc.wait()
        finally:
            if out is not None:
                out.close()
        seconds = time.monotonic() - started
        tests, failures = read_junit(junit)
        return ReliabilityReport(read_rows(rows_file), tests, failures, seconds, returncode)
