"""`quantlab run` as the production path: papermill, the registry, reports, failures, secrets."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from quantlab.testing.notebooks import write_notebook

QUANTLAB = [sys.executable, "-m", "quantlab.cli"]
DATA = "bundled:binance_btc_pairs_5m_2018-01.parquet"
CANARIES = {
    "QUANTLAB_ALPACA_API_KEY": "PKCANARY7f3e9a1b2c4d",
    "QUANTLAB_ALPACA_API_SECRET": "canary-secret-5d8c2e7f9a1b3c4d6e",
    "QUANTLAB_BINANCE_API_KEY": "canary-binance-0a9b8c7d6e5f",
    "QUANTLAB_POLYGON_API_KEY": "canary-polygon-1q2w3e4r5t6y",
}

pytestmark = pytest.mark.integration


def run(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*QUANTLAB, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=300,
        check=False,
    )


def show(cwd: Path, run_id: str) -> dict:
    done = run(cwd, "runs", "show", run_id, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def run_id_of(stdout: str) -> str:
    return next(line.split()[1] for line in stdout.splitlines() if line.startswith("run "))


@pytest.fixture(scope="module")
def succeeded(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    cwd = tmp_path_factory.mktemp("cwd")
    done = run(
        cwd,
        "run",
        "-d",
        DATA,
        "-s",
        "ETH/BTC,LTC/BTC",
        "--start",
        "2018-01-12",
        "--run-id",
        "nb-ok-1",
        "-q",
    )
    return cwd, done


def test_a_run_executes_the_production_notebook_and_registers_it(
    succeeded: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    cwd, done = succeeded
    assert done.returncode == 0, done.stderr
    record = show(cwd, "nb-ok-1")
    assert record["status"] == "succeeded"
    assert record["error"] is None
    out = Path(record["output_dir"])
    assert out == Path("runs") / record["started_at"][:10] / "nb-ok-1"
    assert record["parameters"]["symbols"] == "ETH/BTC,LTC/BTC"
    assert record["parameters"]["start"] == "2018-01-12"
    assert record["parameters"]["run_id"] == "nb-ok-1"
    assert record["ended_at"] > record["started_at"]
    # Headline metrics come from the engine's own summary, written in the same folder.
    summary = json.loads((cwd / out / "summary.json").read_text())
    metrics = record["metrics"]
    assert metrics["fills"] == summary["fills"] > 0
    assert metrics["orders"] == summary["orders"]
    assert metrics["mode"] == "backtest"
    assert summary["symbols"] == 2
    assert metrics["pnl"]["BTC"] == summary["pnl"]["BTC"]["total"]
    # The executed notebook carries the injected parameters and every cell's output.
    nb = nbformat.read(cwd / record["output_notebook"], as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    assert 'symbols = "ETH/BTC,LTC/BTC"' in injected[0].source
    assert nb.metadata.papermill.parameters["run_id"] == "nb-ok-1"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    assert not any(o.output_type == "error" for c in code for o in c.outputs)
    # The HTML report shows outputs, not inputs.
    html = (cwd / record["report"]).read_text()
    assert "Latency against the budget" in html
    assert "risk → order submitted" in html
    assert "validate_parameters(" not in html
    assert "bk-root" in html or "bokeh" in html.lower()  # the equity chart
    assert (cwd / out / "run.log").read_text().count("succeeded") == 1


def test_runs_ls_lists_the_run(succeeded: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    cwd, _ = succeeded
    done = run(cwd, "runs", "ls", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["run_id"] for r in rows] == ["nb-ok-1"]
    assert run(cwd, "runs", "ls", "--status", "failed", "--json").stdout.strip() == "[]"
    table = run(cwd, "runs", "ls", env={"COLUMNS": "200"})
    assert "nb-ok-1" in table.stdout
    assert "succeeded" in table.stdout


def test_a_failing_run_is_recorded_failed_and_exits_non_zero(tmp_path: Path) -> None:
    done = run(tmp_path, "run", "-d", "bundled:no_such_file.parquet", "--run-id", "nb-bad", "-q")
    assert done.returncode == 1
    stderr = " ".join(done.stderr.split())
    assert "run nb-bad failed" in stderr
    assert "no bundled data file 'no_such_file.parquet'" in stderr
    record = show(tmp_path, "nb-bad")
    assert record["status"] == "failed"
    assert "DataError" in record["error"]
    assert record["error"].startswith("cell ")
    # The failed notebook and its report are kept for the post-mortem.
    nb = nbformat.read(tmp_path / record["output_notebook"], as_version=4)
    assert nb.metadata.papermill.exception is True
    assert (tmp_path / record["report"]).is_file()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--mode", "live"], "'mode' must be one of backtest, replay, paper"),
        (["-p", "lookback=5"], "no parameter(s) lookback"),
        (["--start", "2018-13-01"], "parameter 'start'"),
        (["--start", "2018-01-20", "--end", "2018-01-10"], "must be before 'end'"),
        (["--mode", "paper"], "set 'duration_s'"),
        (["--run-id", "../escape"], "run id"),
        (["-p", "api_key=x"], "no parameter(s) api_key"),
    ],
)
def test_bad_parameters_are_refused_before_anything_runs(
    tmp_path: Path, args: list[str], named: str
) -> None:
    done = run(tmp_path, "run", "-q", *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert named in " ".join(done.stderr.split()), done.stderr
    assert "Traceback" not in done.stderr
    ls = run(tmp_path, "runs", "ls", "--json")
    assert json.loads(ls.stdout) == []


def _leaks(root: Path, secrets: list[str]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path}: {s[:6]}…" for s in secrets if s.encode() in data]
    return hits


def test_canary_secrets_never_reach_notebooks_reports_logs_or_the_registry(tmp_path: Path) -> None:
    secrets = list(CANARIES.values())
    # A notebook that reads a key from its environment and prints it: the kernel sees the
    # environment (that is how secrets reach it), and what it prints is masked on the way out.
    write_notebook(
        tmp_path / "leaky.ipynb",
        "run_id = None\nrun_dir = None",
        "import os\nkey = os.environ['QUANTLAB_ALPACA_API_KEY']\nprint('the key is', key)\nkey",
        "raise RuntimeError('failed with ' + key)",
    )
    outputs = [
        run(
            tmp_path,
            "run",
            "-d",
            DATA,
            "-s",
            "ETH/BTC",
            "--start",
            "2018-01-25",
            "-q",
            env=CANARIES,
        ),
        run(tmp_path, "run", "--notebook", "leaky.ipynb", "--run-id", "leaky", "-q", env=CANARIES),
        # A secret as a parameter is refused, and the refusal does not echo it.
        run(
            tmp_path,
            "run",
            "-q",
            "-p",
            f"symbols={CANARIES['QUANTLAB_BINANCE_API_KEY']}",
            env=CANARIES,
        ),
        run(tmp_path, "runs", "ls", env=CANARIES),
    ]
    assert outputs[0].returncode == 0, outputs[0].stderr
    assert outputs[1].returncode == 1  # the leaky notebook raised, on purpose
    assert outputs[2].returncode == 2
    assert "holds a configured secret" in " ".join(outputs[2].stderr.split())
    for done in outputs:
        for secret in secrets:
            assert secret not in done.stdout + done.stderr
    leaky_record = show(tmp_path, "leaky")
    nb_text = (tmp_path / leaky_record["output_notebook"]).read_text()
    assert "the key is **********" in nb_text  # the kernel had the key; the archive does not
    assert _leaks(tmp_path, secrets) == []
    with sqlite3.connect(tmp_path / "runs" / "registry.db") as db:
        rows = db.execute("SELECT * FROM runs").fetchall()
    assert len(rows) == 2
    assert not [r for r in rows if any(s in json.dumps(r, default=str) for s in secrets)]
