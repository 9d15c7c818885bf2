"""`quantlab bench`: every script run, its rows gathered into one table, failures named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from quantlab.runs.bench import BenchError, find_benchmarks, run_benchmarks, x_reference

GOOD = """\
import json, sys
quick = "--quick" in sys.argv
print("some progress output")
print(json.dumps({"benchmark": "good", "quick": quick, "rows": [
    {"case": "events", "metric": "events/s", "quantlab": 300.0 if quick else 400.0,
     "reference": 100.0, "reference_name": "naive loop", "better": "higher",
     "target": 1000.0, "meets_target": False},
    {"case": "latency", "metric": "p95 ms", "quantlab": 2.0, "reference": 8.0,
     "reference_name": "naive loop", "better": "lower", "target": 5.0, "meets_target": True},
    {"case": "alone", "metric": "s", "quantlab": 1.5, "reference": None,
     "reference_name": None, "better": "lower", "target": None, "meets_target": None},
]}))
"""
CRASHES = "raise SystemExit('boom: no redis-server')\n"
NO_ROWS = "import json\nprint(json.dumps({'benchmark': 'old', 'figure': 1}))\n"
BAD_ROW = (
    "import json\nprint(json.dumps({'rows': [{'case': 'x', 'metric': 's', 'quantlab': 'fast', "
    "'reference': None, 'reference_name': None, 'better': 'lower', 'target': None}]}))\n"
)


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    for name, text in (
        ("good", GOOD),
        ("crashes", CRASHES),
        ("norows", NO_ROWS),
        ("badrow", BAD_ROW),
    ):
        (folder / f"bench_{name}.py").write_text(text)
    (folder / "helper.py").write_text("x = 1\n")  # not a benchmark
    return folder


def test_ratios_say_how_many_times_better_quantlab_is() -> None:
    assert x_reference({"quantlab": 400.0, "reference": 100.0, "better": "higher"}) == 4.0
    assert x_reference({"quantlab": 2.0, "reference": 8.0, "better": "lower"}) == 4.0
    assert x_reference({"quantlab": 2.0, "reference": None, "better": "lower"}) is None


def test_every_script_runs_and_failures_are_named(scripts: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    report = run_benchmarks(scripts, quick=True, progress=lambda *a: seen.append(a))
    assert [r.name for r in report.results] == ["badrow", "crashes", "good", "norows"]
    assert seen[-1] == ("", 4, 4)
    errors = {r.name: r.error for r in report.failed}
    assert "exited 1" in (errors["crashes"] or "")
    assert "boom: no redis-server" in (errors["crashes"] or "")
    assert "no 'rows'" in (errors["norows"] or "")
    assert "'fast' is not a number" in (errors["badrow"] or "")
    rows = report.rows()
    assert [(r["benchmark"], r["case"]) for r in rows] == [
        ("good", "events"),
        ("good", "latency"),
        ("good", "alone"),
    ]
    assert rows[0]["quantlab"] == 300.0  # the --quick figure
    assert [r["x_reference"] for r in rows] == [3.0, 4.0, None]


def test_the_table_is_written_as_markdown_and_json(scripts: Path, tmp_path: Path) -> None:
    report = run_benchmarks(scripts, quick=False, only=["good"])
    md, js = report.write(tmp_path / "out")
    text = md.read_text()
    assert "full run" in text
    assert f"{report.machine['cpus']} CPUs" in text
    assert "| good | events | events/s | 400.0 | 100.0 (naive loop) | 4.00× | 1,000 | ✗ |" in text
    assert "| good | latency | p95 ms | 2 | 8 (naive loop) | 4.00× | 5 | ✓ |" in text
    data = json.loads(js.read_text())
    assert data["machine"]["python"]
    assert data["benchmarks"][0]["ok"] is True
    assert [r["x_reference"] for r in data["rows"]] == [4.0, 4.0, None]


def test_unknown_names_and_empty_folders_are_refused(scripts: Path, tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="unknown benchmarks \\['nope'\\]"):
        find_benchmarks(scripts, ["nope"])
    with pytest.raises(BenchError, match="no bench_"):
        find_benchmarks(tmp_path)


def test_the_command_exits_1_when_a_benchmark_failed(scripts: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "quantlab.cli", "bench", "--quick", "--dir", str(scripts)]
    done = subprocess.run(
        [*cmd, "--only", "good", "--out", str(tmp_path / "a")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "latency" in done.stdout
    assert (tmp_path / "a" / "bench.md").exists()
    done = subprocess.run(
        [*cmd, "--only", "crashes", "--out", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "crashes failed" in done.stderr
