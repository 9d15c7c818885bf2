"""The ``quantlab`` command."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from quantlab import __version__
from quantlab.config import (
    SecretMaskingFilter,
    Secrets,
    Settings,
    load_settings,
    mask_secrets,
)
from quantlab.core.errors import QuantlabError
from quantlab.engine import Node, RunResult, RunSummary
from quantlab.engine.importer import import_file
from quantlab.engine.node import ROLES
from quantlab.runs.registry import RunRecord
from quantlab.storage.deadletter import DeadLetterFile
from quantlab.storage.lake import Lake

app = typer.Typer(
    name="quantlab",
    help="Research-to-production framework for systematic trading.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")
data_app = typer.Typer(help="Import recorded data into the lake and list it.", no_args_is_help=True)
app.add_typer(data_app, name="data")
risk_app = typer.Typer(
    help="The risk circuit breaker: status, kill switch, manual reset.", no_args_is_help=True
)
app.add_typer(risk_app, name="risk")
runs_app = typer.Typer(
    help="The run registry: production runs and their reports.", no_args_is_help=True
)
app.add_typer(runs_app, name="runs")
model_app = typer.Typer(
    help="Train signal models and list the model registry.", no_args_is_help=True
)
app.add_typer(model_app, name="model")
check_app = typer.Typer(
    help="Check the installation: the reliability suite and its report.", no_args_is_help=True
)
app.add_typer(check_app, name="check")

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="quantlab.toml to read (default: ./quantlab.toml)"),
]


def _version(value: bool) -> None:
    if value:
        out.print(f"quantlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """quantlab: one package for research notebooks, production runs and live monitoring."""


def _setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretMaskingFilter(settings.secrets.values()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)


def _parse_params(items: list[str] | None) -> dict[str, Any]:
    """``NAME=VALUE`` pairs; a value is read as JSON when it parses (numbers, lists, null)."""
    out: dict[str, Any] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise typer.BadParameter(f"-p takes NAME=VALUE, got {item!r}")
        try:
            out[name.strip()] = json.loads(value)
        except (ValueError, RecursionError):  # not JSON (or too deep, or 5000 digits): text
            out[name.strip()] = value
    return out


@app.command()
def run(
    config: ConfigOpt = None,
    mode: Annotated[
        str,
        typer.Option(
            help="backtest: replay the data in lockstep on a simulated clock; replay: the same "
            "data through the live engine; paper: the live sources (synthetic by default) "
            "with the paper venue for --duration seconds"
        ),
    ] = "backtest",
    data: Annotated[
        list[str] | None,
        typer.Option("--data", "-d", help="bar file(s) to replay; bundled:NAME for shipped data"),
    ] = None,
    symbols: Annotated[
        str | None, typer.Option("--symbols", "-s", help="comma-separated symbols")
    ] = None,
    start: Annotated[str | None, typer.Option(help="ISO start (UTC, inclusive)")] = None,
    end: Annotated[str | None, typer.Option(help="ISO end (UTC, exclusive)")] = None,
    strategy: Annotated[
        str | None, typer.Option(help="hedge | ema_cross (default: the configured one)")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="replay/paper: stop after this many seconds")
    ] = None,
    run_id: Annotated[str | None, typer.Option(help="the run's id (default: a fresh one)")] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="output folder (default: runs/<date>/<run_id>)")
    ] = None,
    notebook: Annotated[
        Path | None,
        typer.Option(help="notebook to execute (default: runs.notebook, the production one)"),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="NAME=VALUE for the notebook's parameters cell"),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Run the production notebook with papermill: the engine as the parameters say, then
    its report. Writes the executed notebook and an HTML report to runs/<date>/<run_id>/
    and records the run (`quantlab runs ls`). Exits 1 if the run fails."""
    from quantlab.runs import execute

    settings = load_settings(config)
    _setup_logging(settings)
    params = _parse_params(param)
    given = {
        "mode": mode,
        "data": data,
        "symbols": symbols,
        "start": start,
        "end": end,
        "strategy": strategy,
        "duration_s": duration,
        "run_dir": str(run_dir) if run_dir else None,
    }
    custom = (
        notebook is not None and Path(notebook).resolve() != Path(settings.runs.notebook).resolve()
    )
    for name, value in given.items():
        if value is not None and not (custom and name == "mode" and value == "backtest"):
            params.setdefault(name, value)
    outcome = execute(
        notebook,
        params,
        settings=settings,
        config_path=config,
        run_id=run_id,
        progress=not quiet,
    )
    record = outcome.record
    summary_file = Path(record.output_dir) / "summary.json"
    if summary_file.is_file():
        _print_summary(msgspec.json.decode(summary_file.read_bytes(), type=RunSummary))
    _print_record(record, metrics=False)  # the summary above has the figures
    if record.status != "succeeded":
        err.print(f"[bold red]run {record.run_id} failed:[/] {escape(record.error or '')}")
        raise typer.Exit(1)


def _print_record(record: RunRecord, *, metrics: bool = True) -> None:
    table = Table(title=f"run {record.run_id}", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    colour = {"succeeded": "green", "failed": "red"}.get(record.status, "yellow")
    duration = f"{record.duration_s:.1f} s" if record.duration_s is not None else ""
    rows = [
        ("status", f"[{colour}]{record.status}[/]"),
        ("notebook", record.notebook),
        ("parameters", escape(json.dumps(record.parameters, default=str))),
        ("started", f"{record.started_at:%Y-%m-%d %H:%M:%S} UTC"),
        ("duration", duration),
        ("executed notebook", record.output_notebook or ""),
        ("report", record.report or ""),
    ]
    if record.scheduled_for is not None:
        rows.append(("scheduled for", record.scheduled_for.isoformat()))
    if record.sweep_id:
        rows.append(("sweep", record.sweep_id))
    if record.attempts > 1:
        rows.append(("kernel starts", str(record.attempts)))
    if record.error:
        rows.append(("error", f"[red]{escape(record.error)}[/]"))
    for key, value in record.metrics.items() if metrics else ():
        rows.append((key, escape(json.dumps(value, default=str))))
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)


@runs_app.command("ls")
def runs_ls(
    config: ConfigOpt = None,
    limit: Annotated[int, typer.Option(help="newest N runs")] = 20,
    status: Annotated[
        str | None, typer.Option(help="only runs with this status: running|succeeded|failed")
    ] = None,
    sweep: Annotated[str | None, typer.Option(help="only the runs of this sweep id")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List the run registry, newest first."""
    from quantlab.runs import RunRegistry

    registry = RunRegistry.from_settings(load_settings(config))
    try:
        records = registry.list(limit=limit, status=status, sweep_id=sweep)
    finally:
        registry.close()
    if as_json:
        out.print_json(json.dumps([r.as_dict() for r in records], default=str))
        return
    table = Table(title=f"runs ({len(records)} shown)", title_justify="left")
    for col in ("run id", "status", "started (UTC)", "duration", "mode", "fills", "PnL", "report"):
        table.add_column(col, overflow="fold")
    for r in records:
        colour = {"succeeded": "green", "failed": "red"}.get(r.status, "yellow")
        pnl = ", ".join(
            f"{Decimal(str(v)):.6f} {ccy}" for ccy, v in (r.metrics.get("pnl") or {}).items()
        )
        table.add_row(
            r.run_id,
            f"[{colour}]{r.status}[/]",
            f"{r.started_at:%Y-%m-%d %H:%M:%S}",
            f"{r.duration_s:.1f} s" if r.duration_s is not None else "",
            str(r.parameters.get("mode", r.metrics.get("mode", ""))),
            str(r.metrics.get("fills", "")),
            pnl,
            r.report or (escape(r.error or "")[:60]),
        )
    out.print(table)


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="the run's id (see `quantlab runs ls`)")],
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show one run: parameters, status, timings, metrics, error and output files."""
    from quantlab.runs import RunRegistry

    registry = RunRegistry.from_settings(load_settings(config))
    try:
        record = registry.get(run_id)
    finally:
        registry.close()
    if as_json:
        out.print_json(json.dumps(record.as_dict(), default=str))
        return
    _print_record(record)


def _strategy_rows(stats: dict[str, Any]) -> list[tuple[str, str]]:
    """Expert weights, the pattern memory and the model of an ensemble strategy."""
    rows = []
    for sid, m in stats.items():
        if not isinstance(m, dict) or "weights" not in m:
            continue
        weights = ", ".join(f"{e} {w:.3f}" for e, w in m["weights"].items())
        rows.append((f"{sid} weights", f"{weights} ({m['rounds']} rounds)"))
        experts = m.get("experts", {})
        if "patterns" in experts:
            p = experts["patterns"]
            rows.append(
                (
                    "pattern memory",
                    f"{p['size']:,} stored, {p['queries']:,} queries "
                    f"({p['search_path']}), {p['swept']:,} swept",
                )
            )
        if "model" in experts:
            rows.append(("model", f"{experts['model']['model']} (onnxruntime)"))
    return rows


def _progress(label: str) -> Progress:
    """A transient progress bar on stderr: `label` (a rich template), bar, n of m, time."""
    return Progress(
        TextColumn(f"[bold]{label}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )


def _print_summary(s: RunSummary) -> None:
    table = Table(title=f"quantlab run {s.run_id}", show_header=False, title_justify="left")
    table.add_column("figure", style="bold")
    table.add_column("value")
    rejected = sum(s.rejected.values())
    flagged = sum(s.flagged.values())
    rows = [
        ("mode", s.mode if s.role == "all" else f"{s.mode}, role {s.role} (its own stages only)"),
        (
            "code / config",
            f"{s.fingerprint.get('code', '?')[:12]} / {s.fingerprint.get('config', '?')[:12]}",
        ),
        ("data", ", ".join(s.data)),
        ("symbols", str(s.symbols)),
        (
            "events processed",
            f"{s.events:,} ({s.events_accepted:,} accepted, {rejected:,} rejected)",
        ),
        ("data quality", f"{flagged:,} flagged, {s.gaps:,} gaps"),
        ("batches", f"{s.batches:,}"),
        ("signals", f"{s.signals:,}"),
        *_strategy_rows(s.strategy),
        ("orders", f"{s.orders:,} ({s.approved:,} approved, {sum(s.denied.values()):,} denied)"),
        *_risk_rows(s.denied, s.risk, s.execution),
        ("fills", f"{s.fills:,}"),
    ]
    for ccy, pnl in s.pnl.items():
        rows.append(
            (
                f"PnL ({ccy})",
                f"{pnl['total']:.8f} (realized {pnl['realized']:.8f}, "
                f"unrealized {pnl['unrealized']:.8f}, fees {pnl['fees']:.8f})",
            )
        )
    for ccy, c in s.costs.items():
        rows.append(
            (
                f"costs ({ccy})",
                f"{c['total']:.8f} = fees {c['fee']:.8f} + spread {c['spread']:.8f} + "
                f"slippage {c['slippage']:.8f} + delay {c['delay']:.8f}",
            )
        )
    if s.ledger:
        fees = ", ".join(
            f"fees {Decimal(str(row.get('fees', 0))):.8f} {ccy}"
            for ccy, row in s.ledger["expenses"].items()
        )
        state = "balanced" if s.ledger["balanced"] else f"UNBALANCED {s.ledger['trial_balance']}"
        text = f"{s.ledger['entries']:,} entries, {state}; {fees}".rstrip("; ")
        charged = s.ledger.get("charged", {})
        if charged:
            text += "; " + ", ".join(f"{k} {Decimal(v):.4f}" for k, v in charged.items())
        exhausted = [a["agent"] for a in s.ledger.get("alerts", []) if a["exhausted"]]
        if exhausted:
            text += f"; budget exhausted: {', '.join(exhausted)}"
        rows.append(("ledger", text))
    if s.pnl_base is not None:
        b = s.pnl_base
        base_pnl, equity, cash = (Decimal(str(b[k])) for k in ("pnl", "equity", "cash"))
        text = f"{base_pnl:.8f} (equity {equity:.8f}, cash {cash:.8f})"
        if b["unconverted"]:
            text += f"; no rate for {', '.join(b['unconverted'])} (set portfolio.fx)"
        rows.append((f"PnL in {b['currency']}", text))
    rows += [
        ("wall time", f"{s.wall_s:.3f} s"),
        ("events/s", f"{s.events_per_s:,.0f}"),
        ("summary", str(Path(s.run_dir) / "summary.json")),
    ]
    for name, src in s.sources.items():
        rows.append(
            (
                f"source {name}",
                f"{src['events']:,} events, {src['reconnects']} reconnects, "
                f"{sum(src['rejects'].values()):,} rejects",
            )
        )
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)


def _risk_rows(
    denied: dict[str, int], risk: dict[str, Any], execution: dict[str, Any]
) -> list[tuple[str, str]]:
    rows = []
    if denied:
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(denied.items(), key=lambda x: -x[1]))
        rows.append(("denied", reasons))
    if risk:
        breaker = risk["breaker"]
        text = f"breaker {breaker['state']}"
        if breaker["state"] != "active":
            text += f" ({breaker['trigger']}: {breaker['reason']})"
        var = risk["var"]
        if var.get("ready"):
            text += (
                f"; VaR 95/99% hist {var['historical_95']:.4g}/{var['historical_99']:.4g}, "
                f"param {var['parametric_95']:.4g}/{var['parametric_99']:.4g}"
            )
            if var["limit"] is not None:
                text += f" (limit {var['limit']:g})"
        rows.append(("risk", text))
    if execution:
        events = execution.get("events", {})
        closed = ", ".join(f"{k} {v:,}" for k, v in sorted(events.items()) if k != "submitted")
        text = closed or "no venue events"
        dup = execution.get("duplicate_fills", 0) + execution.get("duplicate_intents", 0)
        text += f"; duplicates dropped {dup:,}"
        rows.append(("execution", text))
    return rows


@app.command()
def live(
    config: ConfigOpt = None,
    duration: Annotated[
        float | None, typer.Option(help="stop after this many seconds (default: until Ctrl-C)")
    ] = None,
    run_dir: Annotated[Path | None, typer.Option(help="output folder of this run")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no status line")] = False,
    live_trading: Annotated[
        bool,
        typer.Option(
            "--live-trading",
            help="trade REAL MONEY: every venue must be a live endpoint with live credentials "
            "(default: paper trading; the two never share a database)",
        ),
    ] = False,
    role: Annotated[
        str,
        typer.Option(
            help="the part of the engine this process runs: ingest | strategy | execution | "
            "all; a part needs bus.backend = 'redis' (the others run in their own processes)",
        ),
    ] = "all",
) -> None:
    """Run the engine live on the wall clock (synthetic source by default) with the configured
    venues (the paper venue by default) until Ctrl-C or SIGTERM; then flush, settle, persist
    and print a summary. A restart reconciles with the venues before its first order.

    With bus.backend = "redis", ingestion, strategies and execution can run as separate
    processes (``--role ingest``, ``--role strategy``, ``--role execution``), on one machine
    or several, sharing the Redis server and the SQL database (storage.db_url)."""
    if role not in ROLES:
        raise QuantlabError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    settings = load_settings(config)
    _setup_logging(settings)
    node = Node(
        settings,
        mode="live",
        run_dir=run_dir,
        trading="live" if live_trading else "paper",
        role=role,
    )
    err.print(
        f"quantlab live, role {role}, pid {os.getpid()}: code {node.fingerprint['code'][:12]} "
        f"config {node.fingerprint['config'][:12]}",
        highlight=False,
    )
    result = asyncio.run(_live(node, duration, quiet, settings.live.status_every_s))
    _print_summary(result.summary)


async def _live(node: Node, duration: float | None, quiet: bool, every: float) -> RunResult:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, node.stop)
    status = None if quiet else loop.create_task(_status(node, every))
    try:
        return await node.run_async(duration_s=duration)
    finally:
        if status is not None:
            status.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _status(node: Node, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        st = node.status()
        err.print(
            f"[dim]live[/] events {st['events']:,} ({st['events_per_s']:,.0f}/s) "
            f"rejected {st['rejected']:,} signals {st['signals']:,} orders {st['orders']:,} "
            f"fills {st['fills']:,}",
            highlight=False,
        )


@app.command()
def schedule(
    config: ConfigOpt = None,
    list_only: Annotated[
        bool, typer.Option("--list", help="print the schedules and their next fire times")
    ] = False,
    once: Annotated[bool, typer.Option(help="return after the first firing")] = False,
) -> None:
    """Run the production notebooks of `runs.schedules` (cron) until Ctrl-C or SIGTERM.

    Each scheduled time runs once, however many schedulers fire it (an idempotency key of
    notebook, parameters and scheduled time in the run registry)."""
    import threading

    from quantlab.runs.schedule import check_schedules, next_fire_times, run_schedules

    settings = load_settings(config)
    _setup_logging(settings)
    if not settings.runs.schedules:
        err.print("no schedules: add [[runs.schedules]] (name, cron, parameters) to the config")
        raise typer.Exit(2)
    check_schedules(settings)
    table = Table(title="schedules", title_justify="left")
    for col in ("name", "cron", "timezone", "notebook", "parameters", "next runs"):
        table.add_column(col, overflow="fold")
    upcoming = next_fire_times(settings, n=3)
    for sc in settings.runs.schedules:
        table.add_row(
            sc.name,
            sc.cron,
            sc.timezone,
            sc.notebook or settings.runs.notebook,
            escape(json.dumps(sc.parameters)),
            "\n".join(f"{t:%Y-%m-%d %H:%M %Z}" for t in upcoming.get(sc.name, [])),
        )
    out.print(table)
    if list_only:
        return
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def fired(name: str, outcome: Any) -> None:
        r = outcome.record
        if outcome.skipped:
            out.print(f"{name}: already ran as {r.run_id} ({r.status}), skipped")
        else:
            colour = "green" if r.status == "succeeded" else "red"
            out.print(f"{name}: run {r.run_id} [{colour}]{r.status}[/] {r.report or ''}")
            if r.error:
                err.print(f"  {escape(r.error)}")

    err.print("[dim]scheduler running; Ctrl-C stops it (a running notebook finishes first)[/]")
    run_schedules(settings, config_path=config, stop=stop, once=once, on_fired=fired)


def _parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``NAME=A|B|C`` (or ``NAME=[json list]``) per option into a grid of values."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not name.strip() or not values:
            raise typer.BadParameter(f"--grid takes NAME=V1|V2|..., got {item!r}")
        if values.lstrip().startswith("["):
            try:
                parsed = json.loads(values)
            except (ValueError, RecursionError) as exc:  # JSONDecodeError, 5000 digits, too deep
                raise typer.BadParameter(f"--grid {name}: not a JSON list: {exc}") from None
            if not isinstance(parsed, list) or not parsed:
                raise typer.BadParameter(f"--grid {name}: expected a non-empty JSON list")
            grid[name.strip()] = parsed
        else:
            grid[name.strip()] = [_parse_params([f"v={v}"])["v"] for v in values.split("|")]
    return grid


@app.command()
def sweep(
    grid: Annotated[
        list[str],
        typer.Option(
            "--grid",
            "-g",
            help="NAME=V1|V2|... (or NAME=[JSON list]); every combination of every --grid runs",
        ),
    ],
    config: ConfigOpt = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="NAME=VALUE given to every run"),
    ] = None,
    notebook: Annotated[
        Path | None, typer.Option(help="notebook to run (default: the production one)")
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="Dask scheduler address (default: runs.dask_scheduler, else a LocalCluster "
            "on this machine)"
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="LocalCluster workers (one kernel each)")] = 2,
    html: Annotated[
        Path | None, typer.Option(help="results table (default: <runs_dir>/sweeps/<id>.html)")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Run the production notebook once per combination of the --grid values, on Dask.

    Every run is registered (same sweep id) with its executed notebook and report; the
    results table is printed and written as HTML. Exits 1 if any run failed."""
    from quantlab.runs.sweep import combinations
    from quantlab.runs.sweep import sweep as run_sweep

    settings = load_settings(config)
    _setup_logging(settings)
    fixed = _parse_params(param)
    varied = _parse_grid(grid)
    combos = [{**fixed, **combo} for combo in combinations(varied)]
    result = run_sweep(
        combos,
        settings=settings,
        notebook=notebook,
        config_path=config,
        scheduler=scheduler,
        workers=workers,
        progress=not quiet,
    )
    target = html or Path(settings.storage.runs_dir) / "sweeps" / f"{result.sweep_id}.html"
    result.to_html(target)
    table = Table(title=f"sweep {result.sweep_id}", title_justify="left")
    names = sorted(varied)  # the fixed --param values are the same in every row
    for col in ("run id", *names, "status", "fills", "PnL", "duration"):
        table.add_column(col, overflow="fold")
    for r in result.runs:
        colour = "green" if r["status"] == "succeeded" else "red"
        metrics = r.get("metrics") or {}
        pnl = ", ".join(f"{Decimal(str(v)):.6f} {c}" for c, v in (metrics.get("pnl") or {}).items())
        duration = r.get("duration_s")
        table.add_row(
            r["run_id"],
            *(escape(str(r["parameters"].get(n, ""))) for n in names),
            f"[{colour}]{r['status']}[/]",
            str(metrics.get("fills", "")),
            pnl or escape((r.get("error") or "")[:80]),
            f"{duration:.1f} s" if duration is not None else "",
        )
    out.print(table)
    out.print(f"results: {target}")
    if result.failed:
        err.print(f"[bold red]{len(result.failed)} of {len(result.runs)} runs failed[/]")
        raise typer.Exit(1)


def _dashboard_app() -> Path:
    from quantlab.research.data import project_root

    try:
        root = project_root(Path(__file__).parent)
    except QuantlabError:
        root = Path.cwd()
    app_file = root / "apps" / "dashboard.py"
    if not app_file.is_file():
        raise QuantlabError(f"the dashboard app {app_file} is missing (a source checkout has it)")
    return app_file


def _is_loopback(address: str) -> bool:
    import ipaddress

    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@app.command()
def bench(
    quick: Annotated[
        bool, typer.Option("--quick", help="the under-a-minute version of every benchmark")
    ] = False,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="run this benchmark only (ingest, features, ...); repeatable"),
    ] = None,
    folder: Annotated[
        Path | None, typer.Option("--dir", help="the benchmark scripts (default: benchmarks/)")
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out", help="where bench.md and bench.json go (default: benchmarks/results)"
        ),
    ] = None,
) -> None:
    """Run every benchmark in benchmarks/ (one after the other) and write one table, Markdown
    and JSON, of quantlab's figures, the references measured in the same run, their ratios
    and the targets, with the machine's description. Exits 1 if a benchmark failed."""
    from quantlab.research.data import project_root
    from quantlab.runs.bench import run_benchmarks

    scripts = folder or project_root() / "benchmarks"
    target = out_dir or scripts / "results" / ("bench-quick" if quick else "bench")
    with _progress("benchmark {task.description}") as bar:
        task = bar.add_task("", total=None)

        def progress(name: str, done: int, total: int) -> None:
            bar.update(task, description=name, completed=done, total=total)

        report = run_benchmarks(scripts, quick=quick, only=only, progress=progress)
    md, js = report.write(target)
    table = Table(title=f"benchmarks ({'quick' if quick else 'full'})", title_justify="left")
    for col in ("benchmark", "case", "metric", "quantlab", "reference", "× ref", "target", "met"):
        table.add_column(col, overflow="fold")
    for row in report.rows():
        x = row["x_reference"]
        met = row.get("meets_target")
        table.add_row(
            row["benchmark"],
            escape(row["case"]),
            escape(row["metric"]),
            f"{row['quantlab']:,.4g}",
            "" if row["reference"] is None else f"{row['reference']:,.4g}",
            "" if x is None else f"{x:.2f}×",
            "" if row["target"] is None else f"{row['target']:,.4g}",
            "" if met is None else ("[green]✓[/]" if met else "[red]✗[/]"),
        )
    if out.width >= 120:
        out.print(table)
    else:  # a narrow terminal or a pipe: the Markdown table, unwrapped
        out.print(md.read_text(), markup=False, highlight=False, soft_wrap=True)
    for r in report.failed:
        err.print(f"[bold red]{r.name} failed:[/] {escape(r.error or '')}")
    out.print(f"table: {md}\nfigures: {js}", soft_wrap=True, highlight=False)
    if report.failed:
        raise typer.Exit(1)


_CREDENTIAL_WORDS = ("KEY", "SECRET", "PASSWORD", "PASSPHRASE", "TOKEN", "CREDENTIAL")


def _dashboard_env(settings: Settings) -> dict[str, str]:
    """The environment of the ``panel serve`` process: ours without the credentials.

    The dashboard reads the engine's snapshot and the run registry; it needs no venue key,
    no Redis password and not the dashboard password (which goes to panel in a 0600 file).
    Dropped: the ``QUANTLAB_*`` secrets, any variable holding a configured secret's value,
    and any variable named like a credential (``*KEY*``, ``*TOKEN*``, ...) except panel's
    and bokeh's own settings (``PANEL_*``, ``BOKEH_*``).
    """
    secret_names = {f"QUANTLAB_{name}".upper() for name in type(settings.secrets).model_fields}
    values = [v for v in settings.secrets.values() if len(v) >= 4]
    env = {}
    for name, value in os.environ.items():
        upper = name.upper()
        if upper in secret_names or any(v in value for v in values):
            continue
        own = upper.startswith(("PANEL_", "BOKEH_"))
        if not own and any(word in upper for word in _CREDENTIAL_WORDS):
            continue
        env[name] = value
    return env


@app.command()
def dashboard(
    config: ConfigOpt = None,
    address: Annotated[
        str | None, typer.Option(help="bind address (default: dashboard.address, 127.0.0.1)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="port (default: dashboard.port, 5006)")] = None,
    trading: Annotated[
        str | None, typer.Option(help="follow the paper or the live engine (default: paper)")
    ] = None,
    origin: Annotated[
        list[str] | None,
        typer.Option(help="extra HOST:PORT allowed to open the websocket (a proxy's name)"),
    ] = None,
) -> None:
    """Serve the live dashboard (Panel) until Ctrl-C: markets, portfolio, orders, signals,
    risk, pipeline health, costs and runs, following the running engine.

    Basic auth is on when QUANTLAB_DASHBOARD_PASSWORD (and QUANTLAB_DASHBOARD_COOKIE_SECRET)
    are set; without it the dashboard only binds a loopback address."""
    import subprocess
    import tempfile

    settings = load_settings(config)
    d = settings.dashboard
    address = address or d.address
    port = port or d.port
    if trading is not None and trading not in ("paper", "live"):
        raise typer.BadParameter(f"--trading must be 'paper' or 'live', got {trading!r}")
    password = settings.secrets.dashboard_password
    if password is None and not _is_loopback(address):
        raise QuantlabError(
            f"refusing to serve the dashboard on {address} without authentication: set "
            "QUANTLAB_DASHBOARD_PASSWORD and QUANTLAB_DASHBOARD_COOKIE_SECRET, or bind 127.0.0.1"
        )
    _setup_logging(settings)
    env = _dashboard_env(settings)  # the server gets no credential it does not need
    if config is not None:
        env["QUANTLAB_CONFIG"] = str(Path(config).resolve())
    if trading is not None:
        env["QUANTLAB_DASHBOARD__TRADING"] = trading
    app_file = _dashboard_app()
    runs_dir = Path(settings.storage.runs_dir).resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    origins = {f"{address}:{port}", f"localhost:{port}", f"127.0.0.1:{port}", *(origin or [])}
    cmd = [
        sys.executable, "-m", "panel", "serve", str(app_file),
        "--address", address, "--port", str(port), "--liveness",
        "--static-dirs", f"reports={runs_dir}",
        *(arg for o in sorted(origins) for arg in ("--allow-websocket-origin", o)),
    ]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="ql-dashboard-") as tmp:
        if password is not None:
            cookie = settings.secrets.dashboard_cookie_secret
            if cookie is None:
                raise QuantlabError(
                    "QUANTLAB_DASHBOARD_PASSWORD is set but QUANTLAB_DASHBOARD_COOKIE_SECRET is "
                    "not: basic auth signs its cookie with that secret"
                )
            users = Path(tmp) / "users.json"
            users.touch(mode=0o600)
            users.write_text(json.dumps({d.user: password.get_secret_value()}))
            cmd += [
                "--basic-auth",
                str(users),
                "--basic-login-template",
                str(app_file.parent / "login.html"),
            ]
            env["PANEL_COOKIE_SECRET"] = cookie.get_secret_value()
        auth = f"basic auth as {d.user!r}" if password is not None else "no auth (loopback only)"
        err.print(f"dashboard on http://{address}:{port}/dashboard ({auth}); Ctrl-C stops it")
        proc = subprocess.Popen(cmd, env=env)  # noqa: S603 (our own interpreter and app)
        signal.signal(signal.SIGTERM, lambda *_: proc.terminate())  # never orphan the server
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            code = proc.wait(timeout=15)
    if code not in (0, -signal.SIGTERM, -signal.SIGINT):
        raise typer.Exit(code)


@data_app.command("import")
def data_import(
    paths: Annotated[list[Path], typer.Argument(help="Parquet, CSV or ccxt OHLCV JSON files")],
    config: ConfigOpt = None,
    symbol: Annotated[
        str | None, typer.Option(help="symbol of a ccxt OHLCV list (files without a symbol)")
    ] = None,
    lake_root: Annotated[Path | None, typer.Option(help="lake folder (default: config)")] = None,
) -> None:
    """Validate files and append what passes to the lake (rejects go to the dead-letter file)."""
    settings = load_settings(config)
    root = lake_root or Path(settings.storage.lake_root)
    lake = Lake(root, cold_root=settings.storage.lake_cold_root)
    dead = DeadLetterFile(root / "_rejected" / "import.parquet")
    table = Table()
    for col in ("file", "dataset", "symbols", "rows", "written", "rejected", "flagged"):
        table.add_column(col)
    with _progress("{task.description}") as bar:
        for path in paths:
            task = bar.add_task(path.name, total=None)

            def progress(n: int, total: int, t: TaskID = task) -> None:
                bar.update(t, completed=n, total=total)

            done = import_file(path, lake, symbol=symbol, dead_letters=dead, progress=progress)
            table.add_row(
                path.name,
                done["dataset"],
                ", ".join(done["symbols"]),
                f"{done['rows']:,}",
                f"{done['written']:,}",
                ", ".join(f"{k} {v:,}" for k, v in done["rejected"].items()) or "0",
                ", ".join(f"{k} {v:,}" for k, v in done["flagged"].items()) or "0",
            )
    out.print(f"imported into {root}", soft_wrap=True, highlight=False)
    out.print(table)


@data_app.command("ls")
def data_ls(
    config: ConfigOpt = None,
    lake_root: Annotated[Path | None, typer.Option(help="lake folder (default: config)")] = None,
) -> None:
    """List the lake: datasets, symbols, first and last timestamps, row counts."""
    settings = load_settings(config)
    root = lake_root or Path(settings.storage.lake_root)
    inventory = Lake(root, cold_root=settings.storage.lake_cold_root).inventory()
    if inventory.is_empty():
        out.print(f"the lake at {root} is empty; add data with `quantlab data import FILE`")
        return
    out.print(f"lake {root}", soft_wrap=True, highlight=False)
    table = Table()
    for col in ("dataset", "symbol", "first", "last", "rows"):
        table.add_column(col, justify="right" if col == "rows" else "left")
    for ds, sym, first, last, rows in inventory.rows():
        table.add_row(
            ds, sym, f"{first:%Y-%m-%d %H:%M:%S}", f"{last:%Y-%m-%d %H:%M:%S}", f"{rows:,}"
        )
    out.print(table)


def _model_registry(settings: Settings, registry: Path | None) -> Path:
    from quantlab.signals.models import BUNDLED_MODELS

    return registry or (
        Path(settings.models.registry) if settings.models.registry else BUNDLED_MODELS
    )


@model_app.command("train")
def model_train(
    config: ConfigOpt = None,
    data: Annotated[
        list[str] | None,
        typer.Option(
            "--data", "-d", help="bar file(s); default bundled:btc_perp_1m_2022-01.parquet"
        ),
    ] = None,
    registry: Annotated[
        Path | None, typer.Option(help="registry folder (default: config, else the bundled one)")
    ] = None,
    name: Annotated[str, typer.Option(help="registered model name")] = "direction_mlp",
    kind: Annotated[str, typer.Option(help="mlp or gru")] = "mlp",
    target: Annotated[str, typer.Option(help="direction or return")] = "direction",
    window: Annotated[int, typer.Option(help="rows per feature window")] = 32,
    horizon: Annotated[int, typer.Option(help="rows until the predicted outcome")] = 12,
    hidden: Annotated[int, typer.Option(help="hidden units")] = 32,
    epochs: Annotated[int, typer.Option(help="passes over the training rows")] = 2,
    lr: Annotated[float, typer.Option(help="AdamW learning rate")] = 3e-4,
    splits: Annotated[int, typer.Option(help="walk-forward test folds")] = 4,
    embargo: Annotated[int, typer.Option(help="time steps embargoed before each fold")] = 0,
    seed: Annotated[int, typer.Option(help="random seed")] = 7,
) -> None:
    """Train a model on bars (purged walk-forward CV, fit, ONNX export with a parity check)
    and register it; the defaults reproduce the bundled direction_mlp."""
    from quantlab.adapters.sim.data import read_bars
    from quantlab.features import compute, get_spec
    from quantlab.signals.models.train import TrainConfig, train_and_register

    settings = load_settings(config)
    paths = data or ["bundled:btc_perp_1m_2022-01.parquet"]
    cfg = TrainConfig(
        kind=kind,  # type: ignore[arg-type]  # checked by TrainConfig
        target=target,  # type: ignore[arg-type]
        window=window, horizon=horizon, hidden=hidden, epochs=epochs, lr=lr,
        n_splits=splits, embargo=embargo, seed=seed,
    )  # fmt: skip
    bars = read_bars(list(paths))
    spec = get_spec(settings.features.spec)
    files = [Path(p.removeprefix("bundled:")).name for p in paths]
    with err.status(f"training {name} on {len(bars):,} bars"):
        result = train_and_register(
            compute(bars, spec), feature_spec=spec.id, registry=_model_registry(settings, registry),
            name=name, config=cfg, data_files=files,
        )  # fmt: skip
    e = result.entry
    table = Table(title=f"model {e.name}-v{e.version}", show_header=False, title_justify="left")
    table.add_column("figure", style="bold")
    table.add_column("value")
    for key, value in (
        ("file", str(_model_registry(settings, registry) / e.file)),
        ("sha256", e.sha256),
        ("kind / target", f"{e.kind} / {e.target}"),
        ("feature spec", f"{e.feature_spec}, window {e.window}, horizon {e.horizon}"),
        ("training rows", f"{e.training.rows:,} ({e.training.start} .. {e.training.end})"),
        *((f"cv {k}", f"{v:.4f}") for k, v in result.cv.mean.items()),
        ("onnx parity", f"{result.parity:.2e} max abs"),
        ("wall time", f"{result.seconds:.1f} s"),
    ):
        table.add_row(key, value)
    out.print(table)


@model_app.command("ls")
def model_ls(
    config: ConfigOpt = None,
    registry: Annotated[
        Path | None, typer.Option(help="registry folder (default: config, else the bundled one)")
    ] = None,
) -> None:
    """List the registered models with their walk-forward CV metrics."""
    from quantlab.signals.models import ModelRegistry

    root = _model_registry(load_settings(config), registry)
    entries = ModelRegistry(root).entries()
    if not entries:
        out.print(f"no models registered in {root}; train one with `quantlab model train`")
        return
    out.print(f"model registry {root}", soft_wrap=True, highlight=False)
    table = Table(caption="W/h: window/horizon rows; acc, ic: walk-forward CV means")
    for col in ("model", "kind", "target", "spec", "W/h", "acc", "ic"):
        table.add_column(col, justify="right" if col in ("acc", "ic") else "left")
    for e in entries:
        cv = e.metrics.get("cv", {}).get("mean", {})
        table.add_row(
            f"{e.name}-v{e.version}", e.kind, e.target, e.feature_spec, f"{e.window}/{e.horizon}",
            f"{cv.get('accuracy', float('nan')):.3f}", f"{cv.get('ic', float('nan')):.3f}",
        )  # fmt: skip
    out.print(table)


def _risk_state_file(config: Path | None, trading: str, state: Path | None) -> Path:
    if state is not None:
        return state
    if trading not in ("paper", "live"):
        raise typer.BadParameter(f"--trading must be 'paper' or 'live', got {trading!r}")
    settings = load_settings(config)
    return Node.risk_state_path(settings, trading)  # type: ignore[arg-type]


TradingOpt = Annotated[str, typer.Option(help="whose breaker: the paper or the live-money runs'")]
StateOpt = Annotated[
    Path | None, typer.Option(help="the breaker's state file (default: from --trading)")
]


def _print_breaker(path: Path) -> None:
    from quantlab.risk.statefile import read_state

    record = read_state(path)
    if record is None:
        out.print(f"breaker [bold]active[/] (no state recorded yet at {path})")
        return
    colour = {"active": "green", "reducing": "yellow", "halted": "red"}[record.state.value]
    out.print(
        f"breaker [bold {colour}]{record.state.value}[/] since {record.timestamp:%Y-%m-%d %H:%M:%S}"
        f" UTC ({record.trigger}: {escape(record.reason)}); file {path}"
    )


@risk_app.command("status")
def risk_status(
    config: ConfigOpt = None, trading: TradingOpt = "paper", state: StateOpt = None
) -> None:
    """Show the breaker's state."""
    _print_breaker(_risk_state_file(config, trading, state))


@risk_app.command("kill")
def risk_kill(
    reason: Annotated[str, typer.Option(help="why (kept in the state file and the event)")],
    config: ConfigOpt = None,
    trading: TradingOpt = "paper",
    state: StateOpt = None,
) -> None:
    """The kill switch: HALT trading now. A running engine picks it up within a second,
    cancels every open order and refuses new ones until `quantlab risk reset`."""
    from quantlab.risk.statefile import kill

    path = _risk_state_file(config, trading, state)
    kill(path, reason)
    _print_breaker(path)


@risk_app.command("reset")
def risk_reset(
    reason: Annotated[str, typer.Option(help="why it is safe to trade again")],
    config: ConfigOpt = None,
    trading: TradingOpt = "paper",
    state: StateOpt = None,
) -> None:
    """Manual reset: back to ACTIVE (the only way out of REDUCING or HALTED)."""
    from quantlab.risk.statefile import reset

    path = _risk_state_file(config, trading, state)
    reset(path, reason)
    _print_breaker(path)


@config_app.command("show")
def config_show(config: ConfigOpt = None) -> None:
    """Print the effective configuration (secrets masked) as JSON."""
    settings = load_settings(config)
    out.print_json(json.dumps(settings.masked()))


@check_app.command("reliability")
def check_reliability(
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out", help="where reliability.md and .json go (default: reports/reliability)"
        ),
    ] = None,
    tests: Annotated[
        Path | None,
        typer.Option("--tests", help="the suite (default: tests/reliability of the checkout)"),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", "-n", min=1, help="pytest worker processes")
    ] = 2,
    select: Annotated[
        str | None, typer.Option("-k", help="only the checks whose test ids match (pytest -k)")
    ] = None,
) -> None:
    """Run the reliability suite (faults, bad input, security: tests/reliability) and write
    its report of figures, Markdown and JSON. Exits 1 unless every test passed and every row
    counts zero lost, zero duplicated and zero leaked."""
    from quantlab.research.data import project_root
    from quantlab.runs.reliability import run_reliability
    from quantlab.testing.reliability import COUNTS

    root = project_root()
    suite = tests or root / "tests" / "reliability"
    target = out_dir or root / "reports" / "reliability"
    target.mkdir(parents=True, exist_ok=True)
    report = run_reliability(suite, workers=workers, select=select, log=target / "pytest.log")
    md, js = report.write(target)
    for row in report.rows:  # one line a check; the report has the table and the details
        bad = report.bad_counts(row)
        counts = ", ".join(f"{k} {row[k]}" for k in COUNTS if row[k] is not None)
        mark = "[bold red]✗[/]" if bad else "[green]✓[/]"
        out.print(
            f"{mark} {row['area']}: {escape(row['check'])} — {row['trials']:,} {row['unit']}; "
            f"{counts}",
            highlight=False,
        )
    verdict = "[green]passed[/]" if report.passed else "[bold red]FAILED[/]"
    out.print(f"reliability {verdict}: {md} and {js}")
    if not report.passed:
        for name in report.failures:
            err.print(f"  {escape(name)}")
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point: a `QuantlabError` prints its message and exits with 2."""
    try:
        app()
    except QuantlabError as exc:
        err.print(f"[bold red]error:[/] {escape(_masked(str(exc)))}")
        sys.exit(2)


def _masked(text: str) -> str:
    """`text` with the secrets of the environment masked (an error may quote one)."""
    try:
        secrets = [v for v in Secrets().values() if len(v) >= 4]
    except Exception:  # a malformed secret must not hide the error itself
        return text
    return mask_secrets(text, secrets)


if __name__ == "__main__":
    main()
