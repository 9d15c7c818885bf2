"""`quantlab.research.charts`: hvPlot charts of Polars frames, the tear sheet and costs."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import holoviews as hv
import numpy as np
import polars as pl
import pytest

from quantlab.core.errors import DataError
from quantlab.research import (
    backtest,
    bar,
    cost_breakdown,
    hist,
    line,
    load_bars,
    scatter,
    tear_sheet,
    to_pandas,
)

PAIRS = "bundled:binance_btc_pairs_5m_2018-01.parquet"


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return load_bars(PAIRS, symbols=["ETH/BTC", "LTC/BTC"], end="2018-01-13")


def test_to_pandas_without_pyarrow(bars: pl.DataFrame) -> None:
    frame = bars.with_columns(pl.col("close").cast(pl.Decimal(20, 8)).alias("dec"))
    pdf = to_pandas(frame, ["timestamp", "close", "dec"])
    assert list(pdf.columns) == ["timestamp", "close", "dec"]
    assert pdf["timestamp"].dt.tz is None  # naive UTC
    first = bars["timestamp"][0].replace(tzinfo=None)
    assert pdf["timestamp"].iloc[0].to_pydatetime() == first
    np.testing.assert_allclose(pdf["dec"].to_numpy(), bars["close"].to_numpy(), rtol=1e-8)
    with pytest.raises(DataError, match=r"no columns \['nope'\]"):
        to_pandas(bars, ["nope"])


def test_charts_are_holoviews_objects(bars: pl.DataFrame) -> None:
    by_symbol = line(bars, "timestamp", "close", by="symbol")
    assert isinstance(by_symbol, hv.NdOverlay)
    assert sorted(by_symbol.keys()) == ["ETH/BTC", "LTC/BTC"]
    eth = bars.filter(pl.col("symbol") == "ETH/BTC")
    curve = line(eth, "timestamp", "close")
    assert isinstance(curve, hv.Curve)
    np.testing.assert_allclose(curve.dimension_values("close"), eth["close"].to_numpy())
    two = line(eth, "timestamp", ["open", "close"])
    assert len(two) == 2
    h = hist(eth, "volume", bins=20)
    assert isinstance(h, hv.Histogram)
    assert len(h.dimension_values(0)) == 20
    counts = eth.group_by("symbol").len()
    b = bar(counts, "symbol", "len")
    assert isinstance(b, hv.Bars)
    assert list(b.dimension_values("len")) == [eth.height]
    s = scatter(eth, "open", "close")
    assert isinstance(s, hv.Scatter)
    assert len(s) == eth.height


def test_chart_errors_name_the_column(bars: pl.DataFrame) -> None:
    with pytest.raises(DataError, match=r"chart columns \['price'\] are not in the frame"):
        line(bars, "timestamp", "price")
    with pytest.raises(DataError, match=r"bins must be a positive integer, got 0"):
        hist(bars, "close", bins=0)


def test_tear_sheet_and_costs_of_a_backtest(bars: pl.DataFrame, tmp_path: Path) -> None:
    result = backtest(bars, run_dir=tmp_path / "run")
    assert result.summary.fills > 0
    sheet = tear_sheet(result, bars)
    assert {"total_return", "sharpe", "max_drawdown", "trades", "turnover"} <= set(sheet.stats)
    assert isinstance(sheet.layout, hv.Layout)
    assert len(sheet.layout) == 4
    first = sheet.equity["timestamp"].min()
    assert first >= bars["timestamp"].min() - dt.timedelta(minutes=5)

    costs = cost_breakdown(result)
    assert costs.columns == ["currency", "component", "amount"]
    btc = dict(costs.filter(pl.col("currency") == "BTC").select("component", "amount").rows())
    parts = ("delay", "spread", "slippage", "fee", "funding")
    assert set(parts) | {"total"} <= set(btc)
    assert sum(btc[p] for p in parts) == pytest.approx(btc["total"], abs=1e-12)
    fees = sum((Decimal(str(f)) for f in result.fills["fee"].to_list()), Decimal(0))
    assert btc["fee"] == pytest.approx(float(fees), rel=1e-9)
    with pytest.raises(DataError, match=r"cost_breakdown needs a backtest result, got dict"):
        cost_breakdown({})  # type: ignore[arg-type]
