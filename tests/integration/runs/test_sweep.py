"""Sweeps: one registered run per parameter combination, fanned out on a Dask LocalCluster."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import nbformat
import pytest

from quantlab.config import load_settings
from quantlab.research.production import ParameterError
from quantlab.runs.executor import RunError
from quantlab.runs.registry import RunRegistry
from quantlab.runs.sweep import combinations, sweep
from quantlab.testing.notebooks import write_notebook

pytestmark = pytest.mark.integration


def local_cluster() -> Any:
    """A two-worker Dask cluster on 127.0.0.1, standing in for one given by address."""
    from dask.distributed import LocalCluster

    return LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address="127.0.0.1:0",
        host="127.0.0.1",
    )


def tiny_notebook(path: Path) -> Path:
    """Parameters ``x`` and ``fail``; writes a ``summary.json`` (headline metrics) and
    raises when ``fail`` is true."""
    return write_notebook(
        path,
        "x = 1\nfail = False\nrun_id = None\nrun_dir = None",
        "import json, pathlib\n"
        "if fail:\n"
        "    raise ValueError(f'asked to fail (x={x})')\n"
        "summary = {'mode': 'backtest', 'fills': x, 'pnl': {'BTC': {'total': x * 1.5}}}\n"
        "pathlib.Path(run_dir, 'summary.json').write_text(json.dumps(summary))\n"
        "print('x is', x)",
    )


def test_combinations() -> None:
    assert combinations({"x": [1, 2], "fail": False}) == [
        {"x": 1, "fail": False},
        {"x": 2, "fail": False},
    ]
    assert len(combinations({"x": [1, 2, 3], "fail": [True, False]})) == 6
    assert combinations([{"x": 1}, {"x": 2, "fail": True}]) == [{"x": 1}, {"x": 2, "fail": True}]
    with pytest.raises(RunError, match="'x' has no values"):
        combinations({"x": []})
    with pytest.raises(RunError, match="empty"):
        combinations([])


def test_bad_grid_is_refused_before_anything_runs(tmp_path: Path) -> None:
    settings = load_settings(storage={"runs_dir": str(tmp_path / "runs")})
    notebook = tiny_notebook(tmp_path / "tiny.ipynb")
    with pytest.raises(ParameterError, match="no parameter"):
        sweep({"nope": [1, 2]}, settings=settings, notebook=notebook, progress=False)
    with pytest.raises(ParameterError, match="set per run"):
        sweep([{"run_id": "a"}], settings=settings, notebook=notebook, progress=False)
    assert not (tmp_path / "runs").exists()


def test_sweep_on_a_local_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = load_settings(storage={"runs_dir": str(tmp_path / "runs")})
    notebook = tiny_notebook(tmp_path / "tiny.ipynb")
    grid = [{"x": 1}, {"x": 2}, {"x": 3, "fail": True}, {"x": 4}]

    result = sweep(grid, settings=settings, notebook=notebook, workers=2, progress=True)

    assert "sweep" in capsys.readouterr().err  # the progress bar, on stderr
    assert result.sweep_id.startswith("sweep-")
    assert [r["parameters"]["x"] for r in result.runs] == [1, 2, 3, 4]
    assert [r["status"] for r in result.runs] == [
        "succeeded",
        "succeeded",
        "failed",
        "succeeded",
    ]
    assert len(result.failed) == 1
    assert not result.ok
    assert "ValueError: asked to fail (x=3)" in result.failed[0]["error"]

    registry = RunRegistry.from_settings(settings)
    try:
        rows = registry.list(limit=None, sweep_id=result.sweep_id)
        assert len(registry.list(limit=None)) == 4
    finally:
        registry.close()
    assert len(rows) == 4
    assert {r.run_id for r in rows} == {r["run_id"] for r in result.runs}
    assert sorted(r.status for r in rows) == ["failed"] + ["succeeded"] * 3
    for row in rows:
        out = Path(row.output_dir)
        assert out.is_relative_to(tmp_path / "runs")
        assert (out / "tiny.ipynb").is_file()  # the failing run's notebook too
        assert row.report is not None
        assert Path(row.report).is_file()
        assert row.sweep_id == result.sweep_id

    frame = result.frame
    assert list(frame.columns[:2]) == ["x", "fail"]
    assert {"run_id", "status", "error", "report", "pnl.BTC", "fills"} <= set(frame.columns)
    assert len(frame) == 4
    assert frame.loc[frame.x == 4, "pnl.BTC"].item() == 6.0
    assert frame.loc[frame.x == 3, "status"].item() == "failed"

    page = result.to_html(tmp_path / "sweep.html")
    text = page.read_text()
    assert result.sweep_id in text
    assert "3 succeeded, 1 failed" in text
    assert text.count('href="runs/') == 4  # relative links to each report.html
    assert "report.html" in text
    json.dumps(result.runs)  # plain data


def test_registry_takes_concurrent_claims_from_processes(tmp_path: Path) -> None:
    """SQLite in WAL mode with a busy timeout: 4 processes claiming at once all get in."""
    settings = load_settings(storage={"runs_dir": str(tmp_path / "runs")})
    RunRegistry.from_settings(settings).close()  # created (migrated) once
    ctx = multiprocessing.get_context("fork")  # no re-import: fast
    with ctx.Pool(4) as pool:
        got = pool.starmap(_claim_many, [(str(tmp_path / "runs"), w) for w in range(4)])
    assert got == [10] * 4
    registry = RunRegistry.from_settings(settings)
    try:
        assert len(registry.list(limit=None)) == 40
        assert {r.status for r in registry.list(limit=None)} == {"succeeded"}
    finally:
        registry.close()


def _claim_many(runs_dir: str, worker: int) -> int:
    settings = load_settings(storage={"runs_dir": runs_dir})
    registry = RunRegistry.from_settings(settings)
    try:
        for i in range(10):
            run_id = f"w{worker}-{i}"
            registry.claim(run_id=run_id, notebook="n", parameters={"i": i}, output_dir=runs_dir)
            registry.finish(run_id, status="succeeded", metrics={"i": i})
        return len(registry.list(limit=None, status="succeeded")) and 10
    finally:
        registry.close()


def test_a_run_whose_worker_dies_is_retried_on_another(tmp_path: Path) -> None:
    """The notebook kills its Dask worker on the first attempt: the run is retried as
    ``<id>.r2`` and succeeds; the dead attempt's row is marked failed, naming the retry."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x = 1\nkill = False\nrun_id = None\nrun_dir = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        params,
        nbformat.v4.new_code_cell(
            "import os, signal\n"
            "if kill and not run_id.endswith('.r2'):\n"
            "    os.kill(os.getppid(), signal.SIGKILL)  # the kernel's parent: the worker\n"
            "print(x)"
        ),
    ]
    nb.metadata["kernelspec"] = {
        "name": "quantlab",
        "display_name": "quantlab",
        "language": "python",
    }
    notebook = tmp_path / "killer.ipynb"
    nbformat.write(nb, str(notebook))
    settings = load_settings(storage={"runs_dir": str(tmp_path / "runs")})

    result = sweep(
        [{"x": 1}, {"x": 2, "kill": True}],
        settings=settings,
        notebook=notebook,
        progress=False,
        retries=2,
    )

    assert result.ok
    base = f"{result.sweep_id}-001"
    assert [r["run_id"] for r in result.runs] == [f"{result.sweep_id}-000", f"{base}.r2"]
    registry = RunRegistry.from_settings(settings)
    try:
        dead = registry.get(base)
    finally:
        registry.close()
    assert dead.status == "failed"
    assert dead.error == f"the Dask worker running it died; retried as {base}.r2"


@pytest.mark.parametrize("given_by", ["argument", "configuration"])
def test_sweep_on_a_cluster_given_by_address(tmp_path: Path, given_by: str) -> None:
    """`scheduler=ADDRESS` (`quantlab sweep --scheduler`), or ``runs.dask_scheduler`` in the
    configuration alone: the runs go to that cluster."""
    settings = load_settings(storage={"runs_dir": str(tmp_path / "runs")})
    notebook = tiny_notebook(tmp_path / "tiny.ipynb")
    with local_cluster() as cluster:
        assert cluster.scheduler.transition_counter == 0
        by_argument = given_by == "argument"
        if not by_argument:
            settings = load_settings(
                storage={"runs_dir": str(tmp_path / "runs")},
                runs={"dask_scheduler": cluster.scheduler_address},
            )
        result = sweep(
            {"x": [5, 6]},
            settings=settings,
            notebook=notebook,
            scheduler=cluster.scheduler_address if by_argument else None,
            progress=False,
        )
        # The runs were tasks of this cluster's scheduler (which outlives the sweep).
        assert cluster.scheduler.transition_counter > 0
    assert result.ok
    assert [r["metrics"]["fills"] for r in result.runs] == [5, 6]


@pytest.mark.slow
def test_per_symbol_backtests_of_the_production_notebook_on_a_cluster_by_configuration(
    tmp_path: Path,
) -> None:
    """``runs.dask_scheduler`` alone sends one production backtest per symbol to a cluster."""
    with local_cluster() as cluster:
        settings = load_settings(
            storage={"runs_dir": str(tmp_path / "runs")},
            runs={"dask_scheduler": cluster.scheduler_address},
        )
        result = sweep(
            {"symbols": ["ETH/BTC", "LTC/BTC"]},
            settings=settings,
            notebook=Path(__file__).resolve().parents[3] / settings.runs.notebook,
            progress=False,
        )
        assert cluster.scheduler.transition_counter > 0  # the runs were this cluster's tasks
    assert result.ok, [r.get("error") for r in result.runs]
    assert [r["parameters"]["symbols"] for r in result.runs] == ["ETH/BTC", "LTC/BTC"]
    for r in result.runs:
        summary = json.loads((Path(r["output_dir"]) / "summary.json").read_text())
        assert summary["symbols"] == 1
        assert summary["fills"] > 0
