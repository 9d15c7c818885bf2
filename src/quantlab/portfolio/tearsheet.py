"""A performance tear sheet: the statistics of `analytics.summary` and their plots.

The plots are HoloViews objects made with hvPlot, imported only when a tear sheet is built
(plotting is an optional, notebook-side dependency): an equity curve, the drawdown
(underwater) curve, a rolling Sharpe ratio and a histogram of the returns. In a notebook
the layout displays itself; headless, ``holoviews.render(sheet.layout, backend="bokeh")``
gives a Bokeh model (``bokeh.io.save`` writes it as HTML).

hvPlot gets pandas frames built column by column from NumPy (``hvplot.pandas``): hvPlot's
own Polars path converts through pyarrow, which quantlab does not require. Timestamps are
plotted in UTC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import polars as pl

from quantlab.core.instruments import split_symbol
from quantlab.portfolio import analytics
from quantlab.portfolio.equity import equity_curve, positions_over_time, round_trips

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["TearSheet", "tear_sheet", "tear_sheet_for_run"]


@dataclass(frozen=True)
class TearSheet:
    """Statistics (`analytics.summary`) and an hvPlot/HoloViews layout of a curve."""

    stats: dict[str, float]
    layout: Any  # holoviews.Layout (typed loosely: holoviews is imported lazily)
    equity: pl.DataFrame = field(repr=False)

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td>{k}</td><td>{v:.6g}</td></tr>" for k, v in self.stats.items())
        return f"<table>{rows}</table>"


class _Run(Protocol):
    """What `tear_sheet_for_run` needs of a run result (`quantlab.engine.RunResult`)."""

    @property
    def fills(self) -> pl.DataFrame: ...

    @property
    def pnl(self) -> dict[str, dict[str, Decimal]]: ...


def _pandas(frame: pl.DataFrame) -> pd.DataFrame:
    """A pandas copy via NumPy (no pyarrow); UTC timestamps become naive UTC."""
    import pandas as pd

    return pd.DataFrame({c: frame.get_column(c).to_numpy() for c in frame.columns})


def _rolling_sharpe(returns: pl.DataFrame, window: int, ppy: float) -> pl.DataFrame:
    r = pl.col("returns")
    ratio = r.rolling_mean(window) / r.rolling_std(window, ddof=1) * math.sqrt(ppy)
    return returns.select(
        "timestamp",
        pl.when(ratio.is_finite()).then(ratio).otherwise(None).alias("rolling_sharpe"),
    )


def tear_sheet(
    equity: pl.DataFrame,
    *,
    trades: pl.DataFrame | None = None,
    fills: pl.DataFrame | None = None,
    positions: pl.DataFrame | None = None,
    title: str = "",
    window: int = 30,
    periods_per_year: float | None = None,
    bins: int = 50,
) -> TearSheet:
    """The tear sheet of an equity frame (``timestamp``, ``equity`` > 0; see `analytics`).

    ``stats`` is ``analytics.summary(equity, trades=, positions=, fills=,
    periods_per_year=)``. The rolling Sharpe ratio is over `window` bars, annualized with
    `periods_per_year` (default: inferred from the bar spacing), blank where undefined.
    """
    if window < 2:
        raise ValueError(f"window: need at least 2 bars, got {window}")
    stats = analytics.summary(
        equity, trades=trades, positions=positions, fills=fills, periods_per_year=periods_per_year
    )
    import holoviews as hv
    import hvplot.pandas  # noqa: F401  (registers DataFrame.hvplot)

    curve = equity.select("timestamp", pl.col("equity").cast(pl.Float64))
    underwater = curve.select(
        "timestamp", (pl.col("equity") / pl.col("equity").cum_max() - 1.0).alias("drawdown")
    )
    rets = analytics.returns(curve)
    ppy = stats["periods_per_year"]
    sharpe = _rolling_sharpe(rets, window, ppy if math.isfinite(ppy) else math.nan)
    xlabel = "time (UTC)"
    plots = [
        _pandas(curve).hvplot.line(
            x="timestamp", y="equity", title="Equity", xlabel=xlabel, responsive=True, height=250
        ),
        _pandas(underwater).hvplot.area(
            x="timestamp",
            y="drawdown",
            title=f"Drawdown (max {stats['max_drawdown']:.2%})",
            xlabel=xlabel,
            color="firebrick",
            alpha=0.5,
            responsive=True,
            height=250,
        ),
        _pandas(sharpe).hvplot.line(
            x="timestamp",
            y="rolling_sharpe",
            title=f"Rolling Sharpe ({window} bars, annualized)",
            xlabel=xlabel,
            responsive=True,
            height=250,
        ),
        _pandas(rets).hvplot.hist(
            "returns", bins=bins, title="Returns per bar", responsive=True, height=250
        ),
    ]
    layout = hv.Layout(plots).cols(2)
    if title:
        layout = layout.opts(title=title)
    return TearSheet(stats=stats, layout=layout, equity=equity)


def tear_sheet_for_run(
    result: _Run,
    bars: pl.DataFrame,
    *,
    currency: str | None = None,
    starting_cash: Decimal | float | None = None,
    title: str = "",
    window: int = 30,
    periods_per_year: float | None = None,
) -> TearSheet:
    """The tear sheet of a run (`quantlab.engine.RunResult`) marked to `bars`.

    The curve is `equity.equity_curve` of the run's fills in `currency` (default: the run's
    only PnL currency); ``trades`` are its `round_trips`, ``positions`` its
    `positions_over_time`, and the fills in that currency give the turnover. Returns need a
    positive equity, hence a capital: `starting_cash` defaults to the largest gross
    exposure the run held (the capital of an unlevered account), or 1 if it never traded.
    """
    if currency is None:
        currencies = sorted(result.pnl)
        if len(currencies) != 1:
            raise ValueError(f"currency: the run has PnL in {currencies}; name one")
        currency = currencies[0]
    symbols = result.fills.get_column("symbol").unique().to_list()
    mine = [s for s in symbols if split_symbol(s)[1] == currency]
    fills = result.fills.filter(pl.col("symbol").is_in(mine))
    if starting_cash is None:
        flat = equity_curve(fills, bars, currency=currency)
        peak = float(np.max(flat.get_column("gross_exposure").to_numpy(), initial=0.0))
        starting_cash = peak if peak > 0 else 1.0
    curve = equity_curve(fills, bars, currency=currency, starting_cash=starting_cash)
    return tear_sheet(
        curve,
        trades=round_trips(fills),
        fills=fills,
        positions=positions_over_time(fills, bars, currency=currency),
        title=title or f"{currency} equity",
        window=window,
        periods_per_year=periods_per_year,
    )
