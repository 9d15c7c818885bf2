"""The production run, as the production notebook calls it: parameters checked, then the engine.

`quantlab run` executes ``notebooks/production/production.ipynb`` with papermill; the
notebook's ``parameters`` cell holds the names below, its first cell after them calls
`validate_parameters`, then `run_production`. The same two calls work in any notebook or script.

Modes
-----
``backtest``
    The configured data replayed in lockstep on a simulated clock (deterministic).
``replay``
    The same data pushed through the live engine on the wall clock (time-flushed batches,
    the live code path), as fast as it goes unless the config's replay source sets a speed;
    it ends when the data does, or after ``duration_s``.
``paper``
    The live engine on the configured live sources (the synthetic source by default) with
    the paper venue, for ``duration_s`` seconds.

Secrets never travel as parameters: the kernel reads them from its environment.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from quantlab.config import Settings, StrategyConfig, load_settings
from quantlab.core.errors import QuantlabError
from quantlab.engine import Node, RunResult

__all__ = [
    "MODES",
    "ParameterError",
    "ProductionParameters",
    "production_settings",
    "run_bars",
    "run_production",
    "validate_parameters",
]

MODES = ("backtest", "replay", "paper")
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
_STRATEGIES: tuple[str, ...] = StrategyConfig.model_fields["name"].annotation.__args__  # type: ignore[union-attr]


class ParameterError(QuantlabError):
    """A production-run parameter is missing, unknown or has a bad value (named in the text)."""


@dataclass(frozen=True)
class ProductionParameters:
    """The checked parameters of a production run."""

    strategy: str | None
    symbols: list[str] | None
    start: dt.datetime | None
    end: dt.datetime | None
    mode: str
    config: str | None
    run_id: str | None
    run_dir: str | None
    data: list[str] | None
    duration_s: float | None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("start", "end"):
            if out[key] is not None:
                out[key] = out[key].isoformat()
        return out


def _time(name: str, value: object) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        when = value
    elif isinstance(value, dt.date):
        when = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ParameterError(
                f"parameter {name!r}: {value!r} is not an ISO date or time "
                "(e.g. '2022-01-03' or '2022-01-03T12:00:00Z')"
            ) from None
    else:
        raise ParameterError(
            f"parameter {name!r}: expected an ISO date string, got {type(value).__name__} {value!r}"
        )
    try:
        return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)
    except OverflowError:  # an offset that moves the time out of years 1-9999
        raise ParameterError(
            f"parameter {name!r}: {value!r} is out of range in UTC (years 1 to 9999)"
        ) from None


def _path(name: str, value: object) -> str | None:
    """A path parameter as a string; None for None or ""."""
    if value is None or value == "":
        return None
    if not isinstance(value, str | Path) or "\x00" in str(value):
        raise ParameterError(f"parameter {name!r} must be a path, got {value!r:.200}")
    return str(value)


def _names(name: str, value: object) -> list[str] | None:
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ParameterError(
            f"parameter {name!r}: expected a list of strings or a comma-separated string, "
            f"got {type(value).__name__} {value!r}"
        )
    bad = [v for v in items if not isinstance(v, str) or not v.strip()]
    if bad:
        raise ParameterError(f"parameter {name!r}: every item must be a non-empty string: {bad!r}")
    return [v.strip() for v in items]


def validate_parameters(
    *,
    strategy: str | None = None,
    symbols: str | list[str] | None = None,
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    mode: str = "backtest",
    config: str | Path | None = None,
    run_id: str | None = None,
    run_dir: str | Path | None = None,
    data: str | list[str] | None = None,
    duration_s: float | None = None,
    **unknown: Any,
) -> ProductionParameters:
    """Check every production parameter; raise `ParameterError` naming the first bad one.

    Parameters
    ----------
    strategy
        ``"hedge"`` or ``"ema_cross"``; None: the configured strategy.
    symbols
        Symbols to trade (a list, or ``"ETH/BTC,LTC/BTC"``); None: every symbol in the data.
    start, end
        ISO dates or times, UTC unless they say otherwise; ``start`` inclusive, ``end`` exclusive.
    mode
        ``"backtest"``, ``"replay"`` or ``"paper"`` (see the module's text).
    config
        A ``quantlab.toml``; None: ``./quantlab.toml`` if present, else the embedded defaults.
    run_id
        The run's id (letters, digits, ``._-``, at most 64); None: a fresh one.
    run_dir
        Where the engine writes its outputs; None: ``<runs_dir>/<date>/<run_id>``.
    data
        Bar files (``bundled:NAME`` for shipped data); None: the configured data.
    duration_s
        ``replay``/``paper``: stop after this many seconds (``paper`` needs it).

    Examples
    --------
    >>> p = validate_parameters(mode="backtest", symbols="ETH/BTC", start="2018-01-10")
    >>> p.symbols, p.start.isoformat()
    (['ETH/BTC'], '2018-01-10T00:00:00+00:00')
    """
    if unknown:
        names = ", ".join(sorted(unknown))
        raise ParameterError(
            f"unknown parameter(s) {names}; production parameters are strategy, symbols, start, "
            "end, mode, config, run_id, run_dir, data, duration_s"
        )
    if mode not in MODES:
        raise ParameterError(f"parameter 'mode' must be one of {', '.join(MODES)}; got {mode!r}")
    if strategy is not None and strategy not in _STRATEGIES:
        raise ParameterError(
            f"parameter 'strategy' must be one of {', '.join(_STRATEGIES)}; got {strategy!r}"
        )
    t0, t1 = _time("start", start), _time("end", end)
    if t0 is not None and t1 is not None and t0 >= t1:
        raise ParameterError(
            f"parameter 'start' ({t0.isoformat()}) must be before 'end' ({t1.isoformat()})"
        )
    config = _path("config", config)
    if config is not None:
        try:
            is_file = Path(config).is_file()
        except OSError:  # a name too long for the file system
            is_file = False
        if not is_file:
            raise ParameterError(f"parameter 'config': no such file {config!r:.300}")
    run_dir = _path("run_dir", run_dir)
    if run_id is not None and (not isinstance(run_id, str) or not RUN_ID.match(run_id)):
        raise ParameterError(
            f"parameter 'run_id' must be 1-64 letters, digits, '.', '_' or '-' (starting with a "
            f"letter or digit); got {run_id!r}"
        )
    seconds: float | None = None
    if duration_s is not None:
        if isinstance(duration_s, bool) or not isinstance(duration_s, int | float):
            raise ParameterError(
                f"parameter 'duration_s' must be a number of seconds, got {duration_s!r}"
            )
        try:
            seconds = float(duration_s)
        except OverflowError:  # an integer beyond 1.8e308
            seconds = math.inf
        if not (math.isfinite(seconds) and seconds > 0):
            raise ParameterError(f"parameter 'duration_s' must be > 0, got {duration_s!r:.100}")
    if mode == "paper" and duration_s is None:
        raise ParameterError("mode 'paper' runs on the wall clock: set 'duration_s' (seconds)")
    return ProductionParameters(
        strategy=strategy,
        symbols=_names("symbols", symbols),
        start=t0,
        end=t1,
        mode=mode,
        config=config,
        run_id=run_id or None,
        run_dir=run_dir,
        data=_names("data", data),
        duration_s=seconds,
    )


def production_settings(params: ProductionParameters) -> Settings:
    """The settings of a production run: the config file, then the parameters on top."""
    overrides: dict[str, Any] = {}
    data: dict[str, Any] = {}
    if params.data:
        data["paths"] = params.data
    if params.symbols:
        data["symbols"] = params.symbols
    if params.start is not None:
        data["start"] = params.start.isoformat()
    if params.end is not None:
        data["end"] = params.end.isoformat()
    if data:
        overrides["data"] = data
    if params.strategy is not None:
        overrides["strategy"] = {"name": params.strategy, "id": params.strategy}
    settings = load_settings(params.config, **overrides)
    if params.mode == "replay":
        d = settings.data
        source: dict[str, Any] = {"type": "replay", "name": "replay", "paths": list(d.paths)}
        for key in ("symbols", "start", "end"):
            value = getattr(d, key)
            if value is not None:
                source[key] = value.isoformat() if isinstance(value, dt.datetime) else value
        live = {**settings.live.model_dump(), "sources": [source]}
        settings = Settings.model_validate({**settings.model_dump(), "live": live})
    return settings


def in_own_loop(fn: Any) -> Any:
    """Run `fn()` here, or on a worker thread when an event loop already runs (a Jupyter cell):
    the engine runs its own loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()


def run_production(params: ProductionParameters) -> RunResult:
    """Run the engine as `params` say and return the finished run (summary, orders, fills...).

    Examples
    --------
    >>> result = run_production(validate_parameters(symbols="ETH/BTC"))  # doctest: +SKIP
    >>> result.summary.fills  # doctest: +SKIP
    """
    settings = production_settings(params)
    if params.mode == "backtest":
        node = Node(settings, run_id=params.run_id, run_dir=params.run_dir)
        return in_own_loop(node.run)  # type: ignore[no-any-return]
    node = Node(settings, mode="live", run_id=params.run_id, run_dir=params.run_dir)
    duration = params.duration_s

    def live() -> RunResult:
        return asyncio.run(node.run_async(duration_s=duration))

    return in_own_loop(live)  # type: ignore[no-any-return]


def run_bars(params: ProductionParameters) -> Any:
    """The bars a backtest or replay run saw (to mark its equity on); None for paper runs."""
    if params.mode == "paper":
        return None
    from quantlab.adapters.sim.data import read_bars

    d = production_settings(params).data
    return read_bars(list(d.paths), symbols=d.symbols, start=d.start, end=d.end)
