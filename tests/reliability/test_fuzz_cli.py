"""Bad input: notebook parameters and the command line fuzzed.

`validate_parameters` is called directly; the CLI is invoked in-process with Typer's
`CliRunner` (``run -p``, ``sweep --grid``, ``schedule --list`` on a config with a fuzzed cron,
``config show`` on a fuzzed path or file). Nothing is executed: the stubs stand in for the
kernel (`ensure_kernel`, called once every parameter has been checked) and for the sweep, and
raise `_StubReachedError`. A command's verdict:

- accepted: exit 0, or the stub reached (the arguments were decoded and checked);
- refused: exit 2 with a message (a usage error: click's ``Invalid value`` or ``BadParameter``),
  or a `QuantlabError` with a clear message (the console script's `main` prints it and exits
  2);
- crashed: any other exception (a traceback), or a hang.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import typer.main
from hypothesis import strategies as st
from test_fuzz import (
    NASTY_VALUES,
    RAWS,
    REFUSED,
    BadResultError,
    Raw,
    Tally,
    clear_error,
    fuzz,
    json_text,
    mutate_bytes,
    mutate_doc,
    pick,
    python_value,
)
from test_fuzz_files import toml_text
from typer.testing import CliRunner

from quantlab.cli import app
from quantlab.core.errors import QuantlabError
from quantlab.research.production import ParameterError, ProductionParameters, validate_parameters

N_PARAMS = 3000
N_CLI = 1000  # a command costs ~3-5 ms (the settings, the notebook's parameters cell)


class _StubReachedError(Exception):
    """Raised by the stubs in place of running a notebook: the arguments got through."""


# ---- notebook parameters ------------------------------------------------------------------------

_PARAM_SEEDS: list[dict[str, Any]] = [
    {
        "strategy": "hedge",
        "symbols": "ETH/BTC,LTC/BTC",
        "start": "2018-01-10",
        "end": "2018-01-20T12:00:00+02:00",
        "mode": "backtest",
        "run_id": "r-1.a_b",
        "run_dir": "runs/x",
        "data": ["bundled:binance_btc_pairs_5m_2018-01.parquet"],
    },
    {"mode": "paper", "duration_s": 30, "symbols": ["BTC/USD"]},
    {"mode": "replay", "duration_s": 1.5, "config": "", "strategy": None},
]


@st.composite
def _parameter_sets(draw: st.DrawFn, config: str) -> dict[str, Any]:
    seeds = [*_PARAM_SEEDS, {"config": config}]
    doc = python_value(mutate_doc(draw, seeds[pick(draw, len(seeds))]))
    if not isinstance(doc, dict):
        doc = {"symbols": doc}
    return {str(k): v for k, v in doc.items()}


def test_notebook_parameters_validate_or_refuse(tmp_path: Path) -> None:
    """The production notebook's parameters (`research.production.validate_parameters`),
    mutated: any JSON value (and dates, huge numbers, NaN, odd unicode, unknown names) for
    any parameter. A result is `ProductionParameters`; a refusal is `ParameterError` naming
    the parameter.

    Found: a ``config`` that is not a string (a number, bytes) raised TypeError from
    `Path`, one of 20,000 characters OSError (ENAMETOOLONG); a 400-digit ``duration_s``
    raised OverflowError in `math.isfinite`."""
    config = tmp_path / "quantlab.toml"
    config.write_text("")
    tally = Tally(
        "notebook parameters (research.production.validate_parameters)", (ParameterError,)
    )

    def decode(params: dict[str, Any]) -> None:
        out = validate_parameters(**params)
        if not isinstance(out, ProductionParameters):
            raise BadResultError(f"validate_parameters gave {type(out).__name__}")
        for name in ("start", "end"):
            when = getattr(out, name)
            if when is not None and when.tzinfo is None:
                raise BadResultError(f"{name} {when} is naive")
        for name in ("symbols", "data"):
            names = getattr(out, name)
            if names is not None and not all(isinstance(s, str) and s for s in names):
                raise BadResultError(f"{name} {names!r}")
        json.dumps(out.as_dict())  # what the run registry stores must be JSON

    fuzz(tally, _parameter_sets(str(config)), decode, N_PARAMS)
    tally.report(min_trials=N_PARAMS * 4 // 5)


# ---- the command line ---------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    """A CliRunner in an empty folder with the kernel and the sweep stubbed (`_StubReachedError`);
    the root logger (which ``run`` sets up) is restored after each command by `invoke`."""

    def no_kernel(name: str) -> None:
        raise _StubReachedError(name)

    def no_sweep(combos: list[dict[str, Any]], **kwargs: Any) -> None:
        raise _StubReachedError(combos)

    monkeypatch.setattr("quantlab.runs.executor.ensure_kernel", no_kernel)
    monkeypatch.setattr("quantlab.runs.sweep.sweep", no_sweep)
    # Typer builds the click command from the app on every invoke (2/3 of its time): once.
    command = typer.main.get_command(app)
    monkeypatch.setattr("typer.testing._get_command", lambda _app: command)
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def invoke(runner: CliRunner, args: list[str]) -> str | None:
    """Run ``quantlab <args>``: None if accepted, `REFUSED` if refused clearly, else raise
    `BadResultError` (a crash: the exception and its message)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        result = runner.invoke(app, args)
    finally:
        root.handlers[:], root.level = handlers, level
    exc = result.exception
    if result.exit_code == 0 or isinstance(exc, _StubReachedError):
        return None
    if isinstance(exc, SystemExit) and result.exit_code == 2:
        text = " ".join(result.output.split())
        if len(text) < 12:
            raise BadResultError(f"exit 2 without a message: {result.output!r}")
        return REFUSED
    if isinstance(exc, QuantlabError):
        if not clear_error(exc):
            raise BadResultError(f"unclear {type(exc).__name__}: {exc}")
        return REFUSED
    if exc is None or isinstance(exc, SystemExit):
        raise BadResultError(f"exit {result.exit_code}: {result.output[-300:]!r}")
    raise exc  # the crash itself, so that the tally names its type and place


def _arg(value: Any) -> str:
    """A fuzzed value as one command-line word (what a shell would pass)."""
    if isinstance(value, Raw):
        return value.json
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, str):
        return value
    return json_text(value)


_RUN_SEED = [
    "run",
    "--mode",
    "backtest",
    "--symbols",
    "ETH/BTC",
    "--start",
    "2018-01-10",
    "--end",
    "2018-01-12",
    "--strategy",
    "hedge",
    "--duration",
    "5",
    "--run-id",
    "r-1",
]
_PARAM_NAMES = ("symbols", "start", "end", "mode", "duration_s", "run_dir", "data", "config")


@st.composite
def _run_args(draw: st.DrawFn) -> list[str]:
    args = [_arg(a) for a in _flatten(mutate_doc(draw, _RUN_SEED))]
    for _ in range(pick(draw, 4)):
        name = _PARAM_NAMES[pick(draw, len(_PARAM_NAMES))] if pick(draw, 4) else draw(st.text())
        value = draw(NASTY_VALUES) if pick(draw, 2) else RAWS[pick(draw, len(RAWS))]
        sep = "=" if pick(draw, 8) else ""
        args += ["-p", f"{name}{sep}{_arg(value)}"]
    return ["run", *args[1:]] if pick(draw, 8) else args


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [x for v in value for x in _flatten(v)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _flatten(v)]
    return [value]


def test_cli_run_parameters_decode_or_refuse(cli: CliRunner) -> None:
    """``quantlab run`` with mutated options and ``-p NAME=VALUE`` pairs (a value is JSON
    when it parses: numbers, lists, deep nesting, 5000-digit numbers...), through the
    executor's checks up to the kernel (stubbed).

    Found: a ``-p`` value nested deeper than the recursion limit raised RecursionError and
    one of 5000 digits ValueError (`json.loads` in `_parse_params`, which caught only
    JSONDecodeError); ``-p run_dir=2`` raised TypeError from `Path` in the executor."""
    tally = Tally("CLI `run` options and -p NAME=VALUE (in-process CliRunner)")

    fuzz(tally, _run_args(), lambda args: invoke(cli, args), N_CLI)
    tally.report(min_trials=N_CLI * 4 // 5)


_GRID_SEEDS = [
    ["--grid", "strategy=hedge|ema_cross", "--grid", 'symbols=["ETH/BTC", "LTC/BTC"]'],
    ["-g", "duration_s=1|2.5|10", "-p", "mode=backtest"],
]


@st.composite
def _sweep_args(draw: st.DrawFn) -> list[str]:
    seed = _GRID_SEEDS[pick(draw, len(_GRID_SEEDS))]
    args = [_arg(a) for a in _flatten(mutate_doc(draw, seed))]
    if pick(draw, 3) == 0:
        value = RAWS[pick(draw, len(RAWS))].json
        args += ["--grid", f"x={value}" if pick(draw, 2) else f"x=[{value}]"]
    return ["sweep", *args]


def test_cli_sweep_grid_decodes_or_refuses(cli: CliRunner) -> None:
    """``quantlab sweep`` with mutated ``--grid NAME=V1|V2`` / ``NAME=[json]`` and ``-p``
    options, up to the sweep (stubbed).

    Found: a ``--grid`` JSON list nested deeper than the recursion limit raised
    RecursionError, one with a 5000-digit number ValueError (`_parse_grid`)."""
    tally = Tally("CLI `sweep --grid` values (in-process CliRunner)")
    fuzz(tally, _sweep_args(), lambda args: invoke(cli, args), N_CLI)
    tally.report(min_trials=N_CLI * 4 // 5)


_CRONS = ["0 1 * * 1-5", "*/15 9-17 * * mon-fri", "30 2 1 * *", "0 0 * * 0,7", "5 4 * * sun"]


@st.composite
def _schedule_files(draw: st.DrawFn) -> bytes:
    cron = _CRONS[pick(draw, len(_CRONS))]
    schedule: dict[str, Any] = {
        "name": "nightly",
        "cron": cron,
        "timezone": "Europe/London",
        "parameters": {"mode": "backtest"},
    }
    mutated = mutate_doc(draw, {"cron": cron.split(" "), "rest": schedule})
    if isinstance(mutated, dict) and isinstance(mutated.get("cron"), list):
        fields = [_arg(f) for f in mutated["cron"]]
        schedule["cron"] = " ".join(fields) if pick(draw, 4) else "".join(fields)
    if isinstance(mutated, dict) and isinstance(mutated.get("rest"), dict) and pick(draw, 3) == 0:
        schedule = {**mutated["rest"], "cron": schedule["cron"]}
    return mutate_bytes(draw, toml_text({"runs": {"schedules": [schedule]}}))


def test_cli_schedule_cron_decodes_or_refuses(cli: CliRunner, tmp_path: Path) -> None:
    """``quantlab schedule --list`` on a config whose schedule has a mutated cron (fields
    changed, ranges, steps, names, unicode digits, missing or extra fields), time zone and
    parameters: it prints the next fire times or refuses the schedule with a `ConfigError`
    naming ``runs.schedules.<name>``.

    Found: no cron crashed (the translation, `crontab_day_of_week`, and APScheduler's
    parser, whose errors become `ConfigError`, held); a file that is not UTF-8 raised
    UnicodeDecodeError (`tomllib.load` decodes it itself)."""
    path = tmp_path / "schedules.toml"
    tally = Tally("CLI `schedule` cron expressions (in-process CliRunner)")

    def decode(raw: bytes) -> str | None:
        path.write_bytes(raw)
        return invoke(cli, ["schedule", "--list", "--config", str(path)])

    fuzz(tally, _schedule_files(), decode, N_CLI)
    tally.report(min_trials=N_CLI * 4 // 5)


@st.composite
def _config_paths(draw: st.DrawFn, folder: Path) -> tuple[str, bytes | None]:
    """(the --config word, the file's bytes or None for no file)."""
    kind = pick(draw, 4)
    if kind == 0:
        return _arg(draw(NASTY_VALUES)), None  # a path of its own: NUL, 5000 chars, unicode
    if kind == 1:
        return str(folder), None  # a folder
    text = toml_text({"risk": {"collar_bps": 100.0}, "log_level": "INFO"})
    return str(folder / "c.toml"), mutate_bytes(draw, text, always=kind == 2)


def test_cli_config_show_decodes_or_refuses(cli: CliRunner, tmp_path: Path) -> None:
    """``quantlab config show --config PATH`` with a mutated path (NUL byte, 5000
    characters, a folder, missing) or a mutated file behind it.

    Found: a name too long for the file system raised OSError (ENAMETOOLONG) from
    `Path.exists` in `load_settings`; a file that is not UTF-8 UnicodeDecodeError."""
    tally = Tally("CLI `config show --config PATH` (in-process CliRunner)")

    def decode(data: tuple[str, bytes | None]) -> str | None:
        word, content = data
        if content is not None:
            Path(word).write_bytes(content)
        return invoke(cli, ["config", "show", "--config", word])

    fuzz(tally, _config_paths(tmp_path), decode, N_CLI)
    tally.report(min_trials=N_CLI * 4 // 5)
