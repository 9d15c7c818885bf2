"""Research helpers for charts and run reports: hvPlot charts of Polars frames, and the tear
sheet and costs of a backtest.

hvPlot's own Polars path (``hvplot.polars``) converts through pyarrow, which quantlab does not
require; these helpers hand hvPlot a pandas frame built column by column from NumPy instead,
so charts render inline in JupyterLab with what quantlab installs. UTC timestamps are shown as
naive UTC. hvPlot and pandas are imported only when a chart is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import polars as pl

from quantlab.core.errors import DataError
from quantlab.portfolio.tearsheet import TearSheet, tear_sheet_for_run

if TYPE_CHECKING:
    import pandas as pd

    from quantlab.engine import RunResult

__all__ = [
    "bar",
    "cost_breakdown",
    "hist",
    "line",
    "scatter",
    "tear_sheet",
    "to_pandas",
]


def to_pandas(frame: pl.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A pandas copy of `frame` (or of its `columns`) made via NumPy, without pyarrow.

    Timestamps become naive UTC ``datetime64``; Decimal columns become floats.

    Examples
    --------
    >>> to_pandas(pl.DataFrame({"x": [1, 2]})).shape
    (2, 1)
    """
    import pandas as pd

    names = list(frame.columns if columns is None else columns)
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise DataError(f"to_pandas: no columns {missing} (has {frame.columns})")
    data: dict[str, Any] = {}
    for name in names:
        col = frame.get_column(name)
        if isinstance(col.dtype, pl.Decimal):
            col = col.cast(pl.Float64)
        elif isinstance(col.dtype, pl.Datetime) and col.dtype.time_zone is not None:
            col = col.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        data[name] = col.to_numpy()
    return pd.DataFrame(data)


def _columns(frame: pl.DataFrame, *cols: str | Sequence[str] | None) -> list[str]:
    names: list[str] = []
    for c in cols:
        if c is None:
            continue
        names.extend([c] if isinstance(c, str) else list(c))
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise DataError(f"chart columns {missing} are not in the frame (has {frame.columns})")
    return list(dict.fromkeys(names))


def _plot(frame: pl.DataFrame, cols: list[str]) -> Any:
    import hvplot.pandas  # noqa: F401  (registers DataFrame.hvplot)

    return to_pandas(frame, cols).hvplot


def line(
    frame: pl.DataFrame,
    x: str,
    y: str | Sequence[str],
    *,
    by: str | None = None,
    **opts: Any,
) -> Any:
    """A line chart of `y` (one column or several) against `x`, one line per `by` value.

    `opts` go to ``hvplot.line`` (``title``, ``height``, ``width``, ``logy`` ...).

    Examples
    --------
    >>> line(bars, "timestamp", "close", by="symbol", title="closes")  # doctest: +SKIP
    """
    cols = _columns(frame, x, y, by)
    return _plot(frame, cols).line(x=x, y=y if isinstance(y, str) else list(y), by=by, **opts)


def scatter(frame: pl.DataFrame, x: str, y: str, *, by: str | None = None, **opts: Any) -> Any:
    """A scatter chart of `y` against `x` (colour by `by`); `opts` go to ``hvplot.scatter``.

    Examples
    --------
    >>> scatter(evaluation.rows, "score", "realized")  # doctest: +SKIP
    """
    cols = _columns(frame, x, y, by)
    return _plot(frame, cols).scatter(x=x, y=y, by=by, **opts)


def hist(frame: pl.DataFrame, y: str, *, bins: int = 50, by: str | None = None, **opts: Any) -> Any:
    """A histogram of column `y` in `bins` bins; `opts` go to ``hvplot.hist``.

    Examples
    --------
    >>> hist(features, "rsi_14", bins=40)  # doctest: +SKIP
    """
    if not isinstance(bins, int) or bins < 1:
        raise DataError(f"bins must be a positive integer, got {bins!r}")
    cols = _columns(frame, y, by)
    return _plot(frame, cols).hist(y, bins=bins, by=by, **opts)


def bar(
    frame: pl.DataFrame, x: str, y: str | Sequence[str], *, by: str | None = None, **opts: Any
) -> Any:
    """A bar chart of `y` per `x` category (grouped by `by`); `opts` go to ``hvplot.bar``.

    Examples
    --------
    >>> bar(ic.filter(pl.col("horizon") == 12), "feature", "ic")  # doctest: +SKIP
    """
    cols = _columns(frame, x, y, by)
    return _plot(frame, cols).bar(x=x, y=y if isinstance(y, str) else list(y), by=by, **opts)


def tear_sheet(
    result: RunResult,
    bars: pl.DataFrame,
    *,
    currency: str | None = None,
    starting_cash: Decimal | float | None = None,
    title: str = "",
    window: int = 30,
) -> TearSheet:
    """The tear sheet of a backtest marked to `bars`: ``.stats`` (returns, Sharpe, drawdown,
    trades, turnover ...) and ``.layout`` (equity, drawdown, rolling Sharpe, return histogram).

    Parameters
    ----------
    result
        A `quantlab.backtest` result.
    bars
        The bars it ran on (marks).
    currency
        The quote currency whose PnL is shown (default: the run's only one).
    starting_cash
        Capital for returns (default: the largest gross exposure the run held).
    window
        Bars of the rolling Sharpe ratio.

    Examples
    --------
    >>> sheet = tear_sheet(result, bars)  # doctest: +SKIP
    >>> sheet.stats["sharpe"]  # doctest: +SKIP
    """
    return tear_sheet_for_run(
        result, bars, currency=currency, starting_cash=starting_cash, title=title, window=window
    )


def cost_breakdown(result: RunResult) -> pl.DataFrame:
    """The run's trading costs per quote currency and component, as floats.

    Components (implementation shortfall against the decision mid, ``result.summary.costs``):
    ``delay`` (the mid moved between decision and arrival), ``spread`` (the expected cost of
    crossing to the touch), ``slippage`` (what the fill cost beyond that), ``fee``, ``funding``
    and their ``total``; positive is a cost, negative a gain.

    Examples
    --------
    >>> cost_breakdown(result).columns
    ['currency', 'component', 'amount']
    """
    costs = getattr(getattr(result, "summary", None), "costs", None)
    if costs is None:
        raise DataError(f"cost_breakdown needs a backtest result, got {type(result).__name__}")
    rows = [
        {"currency": ccy, "component": name, "amount": float(value)}
        for ccy, parts in sorted(costs.items())
        for name, value in parts.items()
    ]
    return pl.DataFrame(
        rows, schema={"currency": pl.String, "component": pl.String, "amount": pl.Float64}
    )
