"""The ``quantlab`` command."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from quantlab import __version__
from quantlab.config import SecretMaskingFilter, Settings, load_settings
from quantlab.core.errors import QuantlabError
from quantlab.engine import Node, RunResult

app = typer.Typer(
    name="quantlab",
    help="Research-to-production framework for systematic trading.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")

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


@app.command()
def run(
    config: ConfigOpt = None,
    data: Annotated[
        list[str] | None,
        typer.Option("--data", "-d", help="bar file(s) to replay; bundled:NAME for shipped data"),
    ] = None,
    symbols: Annotated[
        str | None, typer.Option("--symbols", "-s", help="comma-separated symbols")
    ] = None,
    start: Annotated[str | None, typer.Option(help="ISO start (UTC, inclusive)")] = None,
    end: Annotated[str | None, typer.Option(help="ISO end (UTC, exclusive)")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="output folder of this run")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Run the main job: a backtest of the configured strategy over the configured data."""
    data_overrides: dict[str, object] = {}
    if data:
        data_overrides["paths"] = data
    if symbols:
        data_overrides["symbols"] = [s.strip() for s in symbols.split(",") if s.strip()]
    if start:
        data_overrides["start"] = start
    if end:
        data_overrides["end"] = end
    settings = load_settings(config, **({"data": data_overrides} if data_overrides else {}))
    _setup_logging(settings)
    with Progress(
        TextColumn("[bold]replay[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
        transient=True,
    ) as bar:
        task = bar.add_task("replay", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        node = Node(settings, run_dir=run_dir, progress=progress)
        result = node.run()
    _print_summary(result)


def _print_summary(result: RunResult) -> None:
    s = result.summary
    table = Table(title=f"quantlab run {s.run_id}", show_header=False, title_justify="left")
    table.add_column("figure", style="bold")
    table.add_column("value")
    rejected = sum(s.rejected.values())
    rows = [
        ("mode", s.mode),
        ("data", ", ".join(s.data)),
        ("symbols", str(s.symbols)),
        (
            "events processed",
            f"{s.events:,} ({s.events_accepted:,} accepted, {rejected:,} rejected)",
        ),
        ("batches", f"{s.batches:,}"),
        ("signals", f"{s.signals:,}"),
        ("orders", f"{s.orders:,} ({s.approved:,} approved, {sum(s.denied.values()):,} denied)"),
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
    rows += [
        ("wall time", f"{s.wall_s:.3f} s"),
        ("events/s", f"{s.events_per_s:,.0f}"),
        ("summary", str(Path(s.run_dir) / "summary.json")),
    ]
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)


@config_app.command("show")
def config_show(config: ConfigOpt = None) -> None:
    """Print the effective configuration (secrets masked) as JSON."""
    settings = load_settings(config)
    out.print_json(json.dumps(settings.masked()))


def main() -> None:
    """Console-script entry point: a `QuantlabError` prints its message and exits with 2."""
    try:
        app()
    except QuantlabError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
