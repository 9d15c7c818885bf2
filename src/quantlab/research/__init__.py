"""The research facade: what notebooks and apps call. Same engine as `quantlab run`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl

from quantlab.adapters.sim.data import bundled_files, read_bars
from quantlab.config import Settings, load_settings
from quantlab.engine import Node, RunResult
from quantlab.research.charts import bar, cost_breakdown, hist, line, scatter, tear_sheet, to_pandas
from quantlab.research.data import (
    QualityReport,
    bundled_catalog,
    check_quality,
    load_market,
    open_lake,
    project_root,
    research_dir,
    return_spikes,
)
from quantlab.research.features import (
    compute_features,
    describe_spec,
    feature_channels,
    forward_returns,
    information_coefficients,
    talib_agreement,
)
from quantlab.research.models import (
    TrainedModel,
    labelled_windows,
    list_models,
    load_model,
    model_path,
    score_predictions,
    train_model,
)
from quantlab.research.patterns import (
    PatternEvaluation,
    Situation,
    build_pattern_memory,
    embed_windows,
    evaluate_pattern_expert,
    pattern_paths,
    similar_situations,
)
from quantlab.research.production import in_own_loop

__all__ = [
    "PatternEvaluation",
    "QualityReport",
    "Situation",
    "TrainedModel",
    "backtest",
    "bar",
    "build_pattern_memory",
    "bundled_catalog",
    "bundled_files",
    "check_quality",
    "compute_features",
    "cost_breakdown",
    "describe_spec",
    "embed_windows",
    "evaluate_pattern_expert",
    "feature_channels",
    "forward_returns",
    "hist",
    "information_coefficients",
    "labelled_windows",
    "line",
    "list_models",
    "load_bars",
    "load_market",
    "load_model",
    "model_path",
    "open_lake",
    "pattern_paths",
    "project_root",
    "research_dir",
    "return_spikes",
    "scatter",
    "score_predictions",
    "similar_situations",
    "talib_agreement",
    "tear_sheet",
    "to_pandas",
    "train_model",
]


def load_bars(
    paths: str | Path | list[str | Path] | None = None,
    *,
    symbols: list[str] | None = None,
    start: str | dt.datetime | None = None,
    end: str | dt.datetime | None = None,
) -> pl.DataFrame:
    """Bars from Parquet/CSV files (``bundled:NAME`` for the shipped real data), time-sorted.

    >>> bars = load_bars("bundled:btc_perp_1m_2022-01.parquet", start="2022-01-03")
    """
    if paths is None:
        paths = list(Settings().data.paths)
    if isinstance(paths, str | Path):
        paths = [paths]
    return read_bars(list(paths), symbols=symbols, start=start, end=end)


def backtest(
    data: str | Path | list[str | Path] | pl.DataFrame | None = None,
    *,
    symbols: list[str] | None = None,
    start: str | dt.datetime | None = None,
    end: str | dt.datetime | None = None,
    config: Settings | str | Path | None = None,
    run_dir: str | Path | None = None,
    **overrides: Any,
) -> RunResult:
    """Backtest the configured strategy on recorded bars through the full engine.

    Parameters
    ----------
    data
        Bar files (``bundled:NAME`` for shipped data) or a bar frame; default: the configured data.
    symbols, start, end
        Restrict the replay (``start`` inclusive, ``end`` exclusive; ISO strings are UTC).
    config
        A `Settings`, or the path of a ``quantlab.toml``; default: ``./quantlab.toml`` if present.
    run_dir
        Where the run's database and summary go; default ``runs/<date>/<run_id>``.
    overrides
        Settings sections to override, e.g. ``risk={"max_position_notional": 2}``.

    Returns
    -------
    RunResult
        ``.summary`` (figures), ``.orders``, ``.fills``, ``.positions`` (Polars), ``.pnl``.

    Examples
    --------
    >>> result = quantlab.backtest("bundled:binance_btc_pairs_5m_2018-01.parquet",
    ...                            symbols=["ETH/BTC"], features={"fast": 10, "slow": 30})
    >>> result.fills.head()
    """
    data_section: dict[str, Any] = dict(overrides.pop("data", {}))
    if isinstance(data, str | Path):
        data_section["paths"] = [str(data)]
    elif isinstance(data, list):
        data_section["paths"] = [str(p) for p in data]
    for key, value in (("symbols", symbols), ("start", start), ("end", end)):
        if value is not None:
            data_section[key] = value.isoformat() if isinstance(value, dt.datetime) else value
    if data_section:
        overrides["data"] = data_section
    if isinstance(config, Settings):
        settings = (
            Settings.model_validate({**config.model_dump(), **overrides}) if overrides else config
        )
    else:
        settings = load_settings(config, **overrides)
    node = Node(settings, bars=data if isinstance(data, pl.DataFrame) else None, run_dir=run_dir)
    return in_own_loop(node.run)  # type: ignore[no-any-return]
