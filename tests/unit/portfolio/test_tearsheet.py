"""The tear sheet: its statistics are `analytics.summary`'s, its plots render to Bokeh."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from quantlab.engine import RunResult
from quantlab.portfolio import analytics
from quantlab.portfolio.equity import equity_curve, positions_over_time, round_trips
from quantlab.portfolio.tearsheet import TearSheet, tear_sheet, tear_sheet_for_run

T0 = dt.datetime(2021, 1, 1, tzinfo=dt.UTC)


def same(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a
    )


def render(sheet: TearSheet) -> object:
    import holoviews as hv
    from bokeh.model import Model

    model = hv.render(sheet.layout, backend="bokeh")
    assert isinstance(model, Model)
    return model


def test_synthetic_curve_stats_and_plots() -> None:
    rng = np.random.default_rng(7)
    equity = 100 * np.cumprod(1 + rng.normal(0, 0.01, 200))
    curve = pl.DataFrame(
        {"timestamp": [T0 + i * dt.timedelta(hours=1) for i in range(200)], "equity": equity}
    )
    sheet = tear_sheet(curve, title="synthetic", window=20)
    assert same(sheet.stats, analytics.summary(curve))
    import holoviews as hv

    assert isinstance(sheet.layout, hv.Layout)
    assert len(sheet.layout) == 4
    render(sheet)
    assert "sharpe" in sheet._repr_html_()
    with pytest.raises(ValueError, match="window"):
        tear_sheet(curve, window=1)


def test_run_tear_sheet(eth_backtest: tuple[RunResult, pl.DataFrame]) -> None:
    result, bars = eth_backtest
    sheet = tear_sheet_for_run(result, bars)
    curve = sheet.equity
    fills = result.fills  # one symbol, quoted in BTC
    start = curve["equity"][0]
    assert start == pytest.approx(equity_curve(fills, bars, currency="BTC")["gross_exposure"].max())
    assert curve["pnl"][-1] == pytest.approx(float(result.summary.pnl["BTC"]["total"]), rel=1e-9)
    expected = analytics.summary(
        curve,
        trades=round_trips(fills),
        fills=fills,
        positions=positions_over_time(fills, bars, currency="BTC"),
    )
    assert same(sheet.stats, expected)
    assert {"hit_rate", "trades", "turnover", "time_in_market"} <= sheet.stats.keys()
    render(sheet)

    explicit = tear_sheet_for_run(result, bars, currency="BTC", starting_cash=10, window=50)
    assert explicit.equity["equity"][0] == pytest.approx(10 + explicit.equity["pnl"][0])
