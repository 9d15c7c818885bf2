"""Parameter sweeps: one production run per parameter combination, fanned out on Dask.

Every combination is a full run (`execute`): its own executed notebook, HTML report and
registry row, all rows sharing the sweep's id (``quantlab runs ls --sweep <id>``). By default
the runs go to a `distributed.LocalCluster` of worker *processes*, one thread (one kernel)
each, on the loopback interface; give `scheduler` to use an existing Dask cluster.

A run whose notebook fails is recorded ``failed`` and the sweep goes on. A kernel that dies
before any cell ran is started again inside `execute` (``runs.start_retries``); a Dask worker
that dies under a run has the run retried on another worker (`retries`), the dead attempt's
registry row being marked failed.

Examples
--------
>>> result = sweep({"symbols": ["ETH/BTC", "LTC/BTC"], "strategy": ["hedge", "ema_cross"]},
...                settings=load_settings())  # doctest: +SKIP
>>> result.frame[["symbols", "strategy", "status", "pnl.BTC"]]  # doctest: +SKIP
>>> result.to_html("sweep.html")  # doctest: +SKIP
"""

from __future__ import annotations

import html
import itertools
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantlab.config import Settings
from quantlab.engine.node import new_run_id
from quantlab.research.production import ParameterError
from quantlab.runs.executor import (
    RunError,
    ensure_kernel,
    execute,
    notebook_parameters,
    resolve_notebook,
)
from quantlab.runs.registry import RunNotFoundError, RunRegistry

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

Grid = Mapping[str, Sequence[Any] | Any] | Sequence[Mapping[str, Any]]

#: The columns of `SweepResult.frame` that are not parameters or metrics.
RUN_COLUMNS = ("run_id", "status", "error", "duration_s", "attempts", "report")


def combinations(grid: Grid) -> list[dict[str, Any]]:
    """The parameter sets of `grid`: the cartesian product of a dict of lists, or the list.

    A dict value that is not a list or tuple is one value (``{"mode": "backtest"}``).

    Raises
    ------
    RunError
        The grid is empty, or a dict value is an empty list.
    """
    if isinstance(grid, Mapping):
        names = list(grid)
        values = []
        for name in names:
            v = grid[name]
            v = list(v) if isinstance(v, list | tuple) else [v]
            if not v:
                raise RunError(f"sweep grid: parameter {name!r} has no values")
            values.append(v)
        combos = [dict(zip(names, c, strict=True)) for c in itertools.product(*values)]
    else:
        combos = [dict(c) for c in grid]
        bad = [c for c in combos if not isinstance(c, dict)]
        if bad:
            raise RunError(f"sweep grid: each combination must be a dict, got {bad[0]!r}")
    if not combos:
        raise RunError("sweep grid is empty: nothing to run")
    return combos


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def _failed_row(index: int, parameters: dict[str, Any], error: str | None) -> dict[str, Any]:
    """A sweep row before its run is known (or when it never got a registry row)."""
    return {
        "index": index,
        "parameters": parameters,
        "run_id": None,
        "status": "failed",
        "error": error,
        "metrics": {},
        "duration_s": None,
        "attempts": 0,
        "output_dir": None,
        "output_notebook": None,
        "report": None,
    }


def run_one(
    index: int,
    parameters: dict[str, Any],
    *,
    notebook: str,
    settings_data: dict[str, Any],
    config_path: str | None,
    sweep_id: str,
) -> dict[str, Any]:
    """One sweep run, in a Dask worker: `execute` it and return a plain dict, never raise.

    The settings travel as plain data without secrets (``Settings.model_dump()``): the worker
    reads its own environment for those, as the notebook's kernel does.
    """
    out = _failed_row(index, parameters, None)
    registry = None
    try:
        settings = Settings.model_validate(settings_data)
        registry = RunRegistry.from_settings(settings)
        run_id = _free_run_id(registry, f"{sweep_id}-{index:03d}")
        out["run_id"] = run_id
        outcome = execute(
            notebook,
            parameters,
            settings=settings,
            config_path=config_path,
            run_id=run_id,
            sweep_id=sweep_id,
            registry=registry,
            progress=False,
        )
        rec = outcome.record
        out.update(
            run_id=rec.run_id,
            status=rec.status,
            error=rec.error,
            metrics=rec.metrics,
            duration_s=rec.duration_s,
            attempts=rec.attempts,
            output_dir=rec.output_dir,
            output_notebook=rec.output_notebook,
            report=rec.report,
        )
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if registry is not None:
            registry.close()
    return out


def _free_run_id(registry: RunRegistry, base: str) -> str:
    """`base`, or on a Dask retry (the worker died) the next free ``base.rN``.

    An earlier attempt's row still ``running`` belonged to the dead worker: it is marked
    failed, naming the retry.
    """
    for attempt in range(1, 100):
        run_id = base if attempt == 1 else f"{base}.r{attempt}"
        try:
            rec = registry.get(run_id)
        except RunNotFoundError:
            return run_id
        if rec.status == "running":
            registry.finish(
                run_id,
                status="failed",
                error=f"the Dask worker running it died; retried as {base}.r{attempt + 1}",
            )
    raise RunError(f"run {base!r} was retried too many times")


@dataclass
class SweepResult:
    """The outcome of a `sweep`: one plain dict per run, in grid order.

    Attributes
    ----------
    sweep_id
        The id every run's registry row carries.
    runs
        Per run: ``index``, ``run_id``, ``parameters``, ``status`` (``succeeded`` or
        ``failed``), ``error``, ``metrics`` (the headline figures), ``duration_s``,
        ``attempts``, ``output_dir``, ``output_notebook``, ``report``.
    """

    sweep_id: str
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The runs that did not succeed (empty when all did)."""
        return [r for r in self.runs if r["status"] != "succeeded"]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def frame(self) -> pd.DataFrame:
        """One row per run: the parameters as columns, then ``run_id``, ``status``,
        ``error``, ``duration_s``, ``attempts``, ``report``, and the headline metrics
        flattened (``pnl.BTC``, ``pnl_base.pnl``, ...)."""
        import pandas as pd

        names: list[str] = []
        for r in self.runs:
            names += [k for k in r["parameters"] if k not in names]
        metric_names: list[str] = []
        rows = []
        for r in self.runs:
            row: dict[str, Any] = {n: r["parameters"].get(n) for n in names}
            row.update({c: r.get(c) for c in RUN_COLUMNS})
            metrics: dict[str, Any] = {}
            _flatten("", r.get("metrics") or {}, metrics)
            metric_names += [k for k in metrics if k not in metric_names]
            row.update(metrics)
            rows.append(row)
        columns = names + [c for c in RUN_COLUMNS if c not in names]
        columns += [m for m in metric_names if m not in columns]
        return pd.DataFrame(rows, columns=columns)

    def to_html(self, path: str | Path) -> Path:
        """Write the runs as an HTML table to `path`, each run linking to its report.

        Links are relative to `path`'s folder when the report is below it on the same
        drive, else ``file://`` URLs.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame = self.frame
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
        body = []
        for row in frame.itertuples(index=False):
            cells = []
            for col, value in zip(frame.columns, row, strict=True):
                if col == "report" and isinstance(value, str) and value:
                    href = _link(Path(value), path.parent)
                    cells.append(f'<td><a href="{html.escape(href)}">report</a></td>')
                elif col == "run_id" and isinstance(value, str):
                    cells.append(f"<td><code>{html.escape(value)}</code></td>")
                elif col == "status":
                    cls = "ok" if value == "succeeded" else "bad"
                    cells.append(f'<td class="{cls}">{html.escape(str(value))}</td>')
                else:
                    cells.append(f"<td>{_cell(value)}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        n, bad = len(self.runs), len(self.failed)
        text = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>sweep {html.escape(self.sweep_id)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }}
th {{ background: #f3f3f3; }}
td.ok {{ color: #137333; }} td.bad {{ color: #b3261e; font-weight: bold; }}
</style></head><body>
<h1>sweep <code>{html.escape(self.sweep_id)}</code></h1>
<p>{n} runs: {n - bad} succeeded, {bad} failed.</p>
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table></body></html>
"""
        path.write_text(text, encoding="utf-8")
        return path


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return html.escape(str(value))


def _link(target: Path, base: Path) -> str:
    try:
        return os.path.relpath(target.resolve(), base.resolve()).replace(os.sep, "/")
    except ValueError:  # another drive
        return target.resolve().as_uri()


def _progress(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("[bold]sweep[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )


def sweep(
    grid: Grid,
    *,
    settings: Settings,
    notebook: str | Path | None = None,
    config_path: str | Path | None = None,
    scheduler: str | None = None,
    workers: int = 2,
    progress: bool = True,
    retries: int = 2,
    sweep_id: str | None = None,
) -> SweepResult:
    """Run `notebook` once per parameter combination of `grid`, in parallel on Dask.

    Parameters
    ----------
    grid
        A dict of parameter name to list of values (every combination is run: the cartesian
        product), or a list of parameter dicts (each run as given).
    settings
        The configuration (runs directory, registry, kernel). It is sent to the workers
        without the secrets; they read those from their own environment.
    notebook
        The notebook (default ``runs.notebook``). Every grid name must be one of its
        parameters.
    config_path
        The ``quantlab.toml`` the notebooks' kernels read (the ``config`` parameter).
    scheduler
        The address of a running Dask scheduler (``tcp://host:8786``); default:
        ``runs.dask_scheduler``, and if that is unset too a `LocalCluster`
        of `workers` processes, one thread each, on 127.0.0.1, no dashboard.
        With a remote cluster, the runs directory and the registry must be shared.
    workers
        Worker processes of the local cluster (runs at once).
    progress
        Show a progress bar (rich, on stderr) as runs complete.
    retries
        How many times a run whose Dask worker died is started again elsewhere (a kernel
        that fails to start is retried inside the run, see ``runs.start_retries``).
    sweep_id
        The sweep's id (default: ``sweep-<time>-<random>``).

    Returns
    -------
    SweepResult
        ``.sweep_id``, ``.runs``, ``.frame``, ``.failed``, ``.to_html(path)``.

    Raises
    ------
    RunError, ParameterError
        Before anything runs: an empty grid, a grid name the notebook lacks, a missing
        notebook or kernel, a missing Dask.
    """
    try:
        import dask
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:  # pragma: no cover - dask is an optional dependency
        raise RunError(
            f"sweeps need dask[distributed] ({exc}); pip install 'dask[distributed]'"
        ) from None

    combos = combinations(grid)
    nb = str(notebook or settings.runs.notebook)
    source = resolve_notebook(nb)
    declared = notebook_parameters(source)
    for combo in combos:
        unknown = sorted(set(combo) - set(declared))
        if unknown:
            raise ParameterError(
                f"sweep grid: notebook {source.name} has no parameter(s) {', '.join(unknown)}; "
                f"its parameters are {', '.join(declared)}"
            )
        if "run_id" in combo or "run_dir" in combo:
            raise ParameterError("sweep grid: run_id and run_dir are set per run by the sweep")
    if workers < 1:
        raise RunError(f"workers must be at least 1, got {workers}")
    ensure_kernel(settings.runs.kernel)
    sweep_id = sweep_id or f"sweep-{new_run_id()}"
    # The parent creates (migrates) the registry once, before the workers race to it.
    RunRegistry.from_settings(settings).close()

    settings_data = settings.model_dump()
    cfg = str(Path(config_path).resolve()) if config_path is not None else None
    result = SweepResult(sweep_id)
    by_index: dict[int, dict[str, Any]] = {}
    log.info("sweep %s: %d runs of %s", sweep_id, len(combos), source)

    scheduler = scheduler or settings.runs.dask_scheduler
    with dask.config.set({"distributed.scheduler.allowed-failures": retries}):
        if scheduler is None:
            cluster: Any = LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address="127.0.0.1:0",  # None still binds 0.0.0.0:8787 for /metrics
                host="127.0.0.1",
            )
        else:
            cluster = None
        try:
            with Client(cluster if cluster is not None else scheduler) as client:  # type: ignore[no-untyped-call]
                futures = {
                    client.submit(
                        run_one,
                        i,
                        combo,
                        notebook=str(source),
                        settings_data=settings_data,
                        config_path=cfg,
                        sweep_id=sweep_id,
                        key=f"{sweep_id}-{i:03d}",
                        pure=False,
                        retries=retries,
                    ): i
                    for i, combo in enumerate(combos)
                }
                failed = 0
                with _progress(progress) as bar:
                    task = bar.add_task(sweep_id, total=len(combos))
                    for future in as_completed(futures):  # type: ignore[no-untyped-call]
                        i = futures[future]
                        try:
                            run = future.result()
                        except Exception as exc:  # the worker died `retries` times
                            run = _lost(i, combos[i], sweep_id, exc)
                        by_index[i] = run
                        if run["status"] != "succeeded":
                            failed += 1
                            log.warning(
                                "sweep %s: run %s %s failed: %s",
                                sweep_id,
                                run["run_id"],
                                combos[i],
                                run["error"],
                            )
                        bar.update(
                            task,
                            advance=1,
                            description=f"{sweep_id} ({failed} failed)" if failed else sweep_id,
                        )
        finally:
            if cluster is not None:
                cluster.close()
    result.runs = [by_index[i] for i in range(len(combos))]
    _close_lost_rows(settings, result)
    log.info("sweep %s: %d runs, %d failed", sweep_id, len(result.runs), len(result.failed))
    return result


def _lost(
    index: int, parameters: dict[str, Any], sweep_id: str, exc: BaseException
) -> dict[str, Any]:
    return _failed_row(index, parameters, f"{type(exc).__name__}: {exc}")


def _close_lost_rows(settings: Settings, result: SweepResult) -> None:
    """Mark failed any row of the sweep still ``running``: its worker died for good."""
    registry = RunRegistry.from_settings(settings)
    try:
        for rec in registry.list(limit=None, status="running", sweep_id=result.sweep_id):
            registry.finish(rec.run_id, status="failed", error="the Dask worker running it died")
            for run in result.runs:
                if (
                    run["run_id"] is None
                    and run["error"]
                    and rec.run_id.startswith(f"{result.sweep_id}-{run['index']:03d}")
                ):
                    run["run_id"] = rec.run_id
    finally:
        registry.close()
