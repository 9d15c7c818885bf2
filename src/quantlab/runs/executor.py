"""Execute a notebook as a production run: papermill on the ``quantlab`` kernel, archived.

One run:

1. the parameters are checked (unknown names, secret-looking names or values, and for the
   production notebook every value, through `quantlab.research.production`);
2. the run is claimed in the registry (`RunRegistry`), once per idempotency key;
3. papermill executes the notebook on the configured kernel, over IPC sockets (no TCP port
   race between kernels started together); a kernel that dies before any cell ran is started
   again, up to ``runs.start_retries`` times;
4. the executed notebook and an HTML report (nbconvert, inputs hidden) are written to
   ``<runs_dir>/<date>/<run_id>/``, with ``run.log``; both are scanned for secret values;
5. the registry row gets the status, the end time, the headline metrics (from the engine's
   ``summary.json``) or the failing cell's error, and the output paths.

Secrets reach the kernel through its environment only, never as parameters.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantlab.config import SecretMaskingFilter, Settings, mask_secrets
from quantlab.core.errors import DataError, QuantlabError
from quantlab.engine.node import new_run_id
from quantlab.research.data import project_root
from quantlab.research.production import RUN_ID, ParameterError, validate_parameters
from quantlab.runs.registry import RunRecord, RunRegistry

log = logging.getLogger(__name__)

PRODUCTION_PARAMETERS = frozenset(
    {"strategy", "symbols", "start", "end", "mode", "config", "run_id", "run_dir", "data"}
)
_SECRET_WORDS = ("key", "secret", "token", "password", "passphrase", "credential")
MASK = "**********"


class RunError(QuantlabError):
    """A run could not start: bad notebook, bad parameters, missing kernel."""


@dataclass(frozen=True)
class RunOutcome:
    """What `execute` did: the registry record, and whether it ran (or was a repeat)."""

    record: RunRecord
    skipped: bool = False

    @property
    def ok(self) -> bool:
        return self.record.status == "succeeded"


def resolve_notebook(notebook: str | Path) -> Path:
    """`notebook` as given if it exists, else relative to the quantlab checkout."""
    path = Path(notebook)
    if path.is_file():
        return path.resolve()
    try:
        root: Path | None = project_root(Path(__file__).parent)  # a source checkout
    except DataError:
        root = None  # an installed package: no notebooks/ beside it
    if not path.is_absolute() and root is not None and (root / path).is_file():
        return (root / path).resolve()
    raise RunError(
        f"notebook {str(notebook)!r} not found (looked in {Path.cwd()} and the checkout)"
    )


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The names and defaults of the notebook's ``parameters`` cell (papermill's inspection)."""
    import papermill as pm

    found = pm.inspect_notebook(str(path))
    if not found:
        raise RunError(f"notebook {str(path)!r} has no cell tagged 'parameters'")
    return dict(found)


def check_secrets(parameters: dict[str, Any], secrets: list[str]) -> None:
    """Refuse a parameter whose name looks like a credential or whose value holds a secret."""
    for name, value in parameters.items():
        lowered = name.lower()
        if any(word in lowered for word in _SECRET_WORDS):
            raise ParameterError(
                f"parameter {name!r} looks like a credential: secrets are never notebook "
                "parameters; set QUANTLAB_<NAME> in the environment, the kernel reads it there"
            )
        text = json.dumps(value, default=str)
        if any(secret and secret in text for secret in secrets):
            raise ParameterError(
                f"parameter {name!r} holds a configured secret's value: secrets are never "
                "notebook parameters (the kernel reads them from its environment)"
            )


def ensure_kernel(name: str) -> None:
    """Check that the Jupyter kernel exists; register quantlab's own in this venv if missing."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(name)
        return
    except NoSuchKernel:
        pass
    if name == "quantlab" and sys.prefix != sys.base_prefix:
        from ipykernel.kernelspec import install

        install(kernel_name="quantlab", display_name="Python (quantlab)", prefix=sys.prefix)
        log.warning("registered the 'quantlab' Jupyter kernel in %s", sys.prefix)
        return
    raise RunError(
        f"no Jupyter kernel named {name!r}; register it with "
        f"`python -m ipykernel install --sys-prefix --name {name}`"
    )


def _ipc_kernel_manager() -> type:
    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        """Kernels over IPC sockets in a private temp folder: no TCP port race."""

        def __init__(self, **kw: Any) -> None:
            self._ql_dir = tempfile.mkdtemp(prefix="ql-kernel-")
            kw.setdefault("transport", "ipc")
            kw.setdefault("ip", os.path.join(self._ql_dir, "k"))
            super().__init__(**kw)

        async def _async_cleanup_resources(self, restart: bool = False) -> None:
            await super()._async_cleanup_resources(restart=restart)
            if not restart:
                shutil.rmtree(self._ql_dir, ignore_errors=True)

    return IPCKernelManager


def _cells_ran(path: Path) -> bool:
    """Whether any code cell of the (partly) executed notebook at `path` started."""
    import nbformat

    if not path.is_file():
        return False
    try:
        nb = nbformat.read(str(path), as_version=4)  # type: ignore[no-untyped-call]
    except Exception:  # a half-written file: nothing trustworthy ran
        return False
    return any(
        c.cell_type == "code"
        and (
            c.get("execution_count") is not None
            or c.metadata.get("papermill", {}).get("start_time")
        )
        for c in nb.cells
        if "injected-parameters" not in c.metadata.get("tags", [])
    )


def write_report(executed: Path, report: Path) -> None:
    """The executed notebook as HTML with the inputs hidden (nbconvert's lab template)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")  # type: ignore[no-untyped-call]
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    nb = nbformat.read(str(executed), as_version=4)  # type: ignore[no-untyped-call]
    for cell in nb.cells:  # holoviews' extension leaves empty display_data outputs behind
        if cell.cell_type == "code":
            cell.outputs = [
                o for o in cell.outputs if o.output_type != "display_data" or o.get("data")
            ]
    body, _ = exporter.from_notebook_node(nb)
    report.write_text(body, encoding="utf-8")


def mask(text: str, secrets: list[str]) -> str:
    """`text` with every secret value replaced by asterisks."""
    return mask_secrets(text, secrets, MASK)


def scrub_secrets(paths: list[Path], secrets: list[str]) -> list[Path]:
    """Mask any secret value found in `paths` (defence in depth); return the files changed."""
    changed = []
    for path in paths:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if any(s and s in text for s in secrets):
            path.write_text(mask(text, secrets), encoding="utf-8")
            changed.append(path)
    return changed


def headline_metrics(run_dir: Path) -> dict[str, Any]:
    """The figures the registry keeps from the engine's ``summary.json`` (empty if none)."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return {}
    s = json.loads(path.read_text())
    risk = s.get("risk") or {}
    out: dict[str, Any] = {
        "mode": s.get("mode"),
        "events": s.get("events"),
        "events_per_s": s.get("events_per_s"),
        "signals": s.get("signals"),
        "orders": s.get("orders"),
        "denied": sum((s.get("denied") or {}).values()),
        "fills": s.get("fills"),
        "pnl": {ccy: v.get("total") for ccy, v in (s.get("pnl") or {}).items()},
        "costs": {ccy: v.get("total") for ccy, v in (s.get("costs") or {}).items()},
        "breaker": (risk.get("breaker") or {}).get("state"),
        "wall_s": s.get("wall_s"),
    }
    base = s.get("pnl_base")
    if base:
        out["pnl_base"] = {"currency": base.get("currency"), "pnl": base.get("pnl")}
    return out


def _run_dir(settings: Settings, run_id: str, when: dt.datetime) -> Path:
    return Path(settings.storage.runs_dir) / when.astimezone(dt.UTC).date().isoformat() / run_id


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def execute(
    notebook: str | Path | None = None,
    parameters: dict[str, Any] | None = None,
    *,
    settings: Settings,
    config_path: str | Path | None = None,
    run_id: str | None = None,
    idempotency_key: str | None = None,
    scheduled_for: dt.datetime | None = None,
    sweep_id: str | None = None,
    registry: RunRegistry | None = None,
    progress: bool = False,
    kernel_manager_class: type | None = None,
    on_claimed: Callable[[RunRecord], None] | None = None,
) -> RunOutcome:
    """Run `notebook` (default ``runs.notebook``) with `parameters` and record it.

    Parameters
    ----------
    notebook
        The notebook to execute; it must have a cell tagged ``parameters``.
    parameters
        Values for names of that cell; ``run_id``, ``run_dir`` and ``config`` are filled in
        when the notebook declares them and they are not given.
    settings
        The configuration (runs directory, registry, kernel, secrets to keep out).
    config_path
        The ``quantlab.toml`` the kernel should read (passed as the ``config`` parameter).
    run_id
        The run's id (default: a fresh one, or ``parameters["run_id"]``).
    idempotency_key
        Schedules: a key the registry holds once (see `registry.idempotency_key`); a second
        run with it is skipped and returns the first one's record with ``skipped=True``.
    scheduled_for, sweep_id
        Recorded in the registry.
    progress
        Show papermill's per-cell progress bar (on stderr).
    kernel_manager_class
        The jupyter_client kernel manager (default: IPC transport).

    Returns
    -------
    RunOutcome
        ``.record`` (status ``succeeded`` or ``failed``) and ``.skipped``.

    Raises
    ------
    RunError, ParameterError
        Before anything is recorded: the notebook, the kernel or a parameter is bad.
    """
    import papermill as pm

    rs = settings.runs
    source = resolve_notebook(notebook or rs.notebook)
    declared = notebook_parameters(source)
    params = {k: _jsonable(v) for k, v in (parameters or {}).items()}
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ParameterError(
            f"notebook {source.name} has no parameter(s) {', '.join(unknown)}; "
            f"its parameters are {', '.join(declared)}"
        )
    secrets = settings.secrets.values()
    check_secrets(params, secrets)
    run_id = run_id or params.get("run_id") or new_run_id()
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise ParameterError(
            f"run id must be 1-64 letters, digits, '.', '_' or '-'; got {run_id!r}"
        )
    started = dt.datetime.now(dt.UTC)
    given_dir = params.get("run_dir")
    if given_dir is not None and not isinstance(given_dir, str):
        raise ParameterError(f"parameter 'run_dir' must be a path, got {given_dir!r:.200}")
    run_dir = Path(given_dir) if given_dir else _run_dir(settings, run_id, scheduled_for or started)
    if "run_id" in declared:
        params["run_id"] = run_id
    if "run_dir" in declared:
        params.setdefault("run_dir", str(run_dir))
    if "config" in declared and config_path is not None:
        params.setdefault("config", str(config_path))
    if set(declared) >= PRODUCTION_PARAMETERS:
        validate_parameters(**{k: v for k, v in params.items() if k in declared})
    ensure_kernel(rs.kernel)

    owned = registry is None
    registry = registry or RunRegistry.from_settings(settings)
    try:
        claimed = registry.claim(
            run_id=run_id,
            notebook=str(source),
            parameters=params,
            output_dir=str(run_dir),
            idempotency_key=idempotency_key,
            scheduled_for=scheduled_for,
            sweep_id=sweep_id,
            started_at=started,
        )
        first = registry.by_key(idempotency_key) if claimed is None and idempotency_key else None
        if claimed is None:
            if first is None:  # the key's row vanished between the clash and the lookup
                raise RunError(f"run {run_id!r} could not be claimed in the registry")
            log.info(
                "run %s (key %s) already done as %s", source.name, idempotency_key, first.run_id
            )
            return RunOutcome(first, skipped=True)
        if on_claimed is not None:
            on_claimed(claimed)
        return _execute_claimed(
            pm,
            registry,
            claimed,
            source,
            params,
            run_dir,
            settings,
            secrets,
            progress,
            kernel_manager_class,
        )
    finally:
        if owned:
            registry.close()


def _execute_claimed(
    pm: Any,
    registry: RunRegistry,
    claimed: RunRecord,
    source: Path,
    params: dict[str, Any],
    run_dir: Path,
    settings: Settings,
    secrets: list[str],
    progress: bool,
    kernel_manager_class: type | None,
) -> RunOutcome:
    rs = settings.runs
    run_dir.mkdir(parents=True, exist_ok=True)
    executed = run_dir / source.name
    report = run_dir / "report.html"
    handler = logging.FileHandler(run_dir / "run.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretMaskingFilter(secrets))
    run_log = logging.getLogger("quantlab.runs.run")  # the run's own log file, not stderr
    run_log.addHandler(handler)
    run_log.setLevel(logging.INFO)
    run_log.propagate = False
    error: str | None = None
    attempts = 0
    try:
        run_log.info("run %s: %s with %s", claimed.run_id, source, json.dumps(params, default=str))
        while True:
            attempts += 1
            try:
                pm.execute_notebook(
                    str(source),
                    str(executed),
                    parameters=params,
                    kernel_name=rs.kernel,
                    cwd=str(Path.cwd()),
                    progress_bar=progress,
                    log_output=False,
                    execution_timeout=rs.cell_timeout_s,
                    start_timeout=rs.start_timeout_s,
                    kernel_manager_class=kernel_manager_class or _ipc_kernel_manager(),
                )
                break
            except pm.PapermillExecutionError as exc:
                error = (
                    f"cell {exc.cell_index} (execution {exc.exec_count}): {exc.ename}: {exc.evalue}"
                )
                break
            except Exception as exc:
                if not _cells_ran(executed) and attempts <= rs.start_retries:
                    run_log.warning(
                        "kernel failed to start (attempt %d): %s: %s; retrying",
                        attempts,
                        type(exc).__name__,
                        exc,
                    )
                    continue
                error = f"{type(exc).__name__}: {exc}"
                break
        if error is not None:
            error = mask(error, secrets)  # a cell's error text may quote what it read
            run_log.error("run %s failed: %s", claimed.run_id, error)
        outputs = [executed]
        if executed.is_file():
            try:
                write_report(executed, report)
                outputs.append(report)
            except Exception as exc:  # the run's own result stands; the report is named as missing
                run_log.error(
                    "HTML report of %s failed: %s: %s", claimed.run_id, type(exc).__name__, exc
                )
        masked = scrub_secrets(outputs, secrets)
        if masked:
            run_log.error("secret values masked in %s", ", ".join(p.name for p in masked))
        metrics = headline_metrics(run_dir)
        record = registry.finish(
            claimed.run_id,
            status="failed" if error else "succeeded",
            metrics=metrics,
            error=error,
            output_notebook=str(executed) if executed.is_file() else None,
            report=str(report) if report.is_file() else None,
            attempts=attempts,
        )
        run_log.info("run %s %s", claimed.run_id, record.status)
        return RunOutcome(record)
    except BaseException as exc:
        # Whatever stopped us (Ctrl-C included), the row must not stay 'running'.
        registry.finish(
            claimed.run_id,
            status="failed",
            error=mask(f"{type(exc).__name__}: {exc}", secrets),
            attempts=attempts,
        )
        raise
    finally:
        run_log.removeHandler(handler)
        handler.close()
