"""The walking skeleton end to end on real data: replay -> ... -> settlement.

The PnL the engine reports is checked against an independent recomputation from the fills
stored in SQL and the last prices read straight from the data file.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

import quantlab
from quantlab.engine import RunResult

DATA_FILE = "binance_btc_pairs_5m_2018-01.parquet"


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    return quantlab.backtest(f"bundled:{DATA_FILE}", run_dir=tmp_path_factory.mktemp("run") / "a")


def test_skeleton_trades_on_real_data(result: RunResult) -> None:
    s = result.summary
    assert s.events == 57_546
    assert s.events_accepted == s.events
    assert s.symbols == 10
    assert s.batches == 58  # 1000-row batches
    assert s.signals > 100
    assert s.orders > 100
    assert s.fills > 100
    assert s.handler_errors == 0
    assert s.dead_letters == 0
    assert result.orders.height == s.approved
    assert result.fills.height == s.fills
    assert set(result.orders["status"].unique()) <= {"filled", "canceled", "accepted"}
    # An order is left open only if it was decided on its symbol's last bar: no bar follows
    # to fill it on (the paper venue never fills on the decision bar itself).
    bars = quantlab.load_bars(f"bundled:{DATA_FILE}")
    last_bar = dict(bars.group_by("symbol").agg(pl.col("timestamp").max()).iter_rows())
    for symbol, created in (
        result.orders.filter(pl.col("status") == "accepted").select("symbol", "created_at").rows()
    ):
        assert created == last_bar[symbol], (symbol, created)


def test_reported_pnl_equals_recomputation_from_stored_fills(result: RunResult) -> None:
    db = result.run_dir / "quantlab.db"
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT o.symbol, o.side, f.price, f.quantity, f.fee FROM fills f "
            "JOIN orders o ON o.id = f.order_id"
        ).fetchall()
    assert len(rows) == result.summary.fills
    cash = Decimal(0)
    position: dict[str, Decimal] = {}
    for symbol, side, price, qty, fee in rows:
        sign = 1 if side == "buy" else -1
        cash -= sign * Decimal(qty) * Decimal(price) + Decimal(fee)
        position[symbol] = position.get(symbol, Decimal(0)) + sign * Decimal(qty)
    bars = pl.read_parquet(Path(quantlab.__file__).parent / "_data" / "market" / DATA_FILE)
    last = dict(bars.sort("timestamp").group_by("symbol").agg(pl.col("close").last()).iter_rows())
    equity = cash + sum(q * Decimal(repr(last[sym])) for sym, q in position.items())
    reported = result.pnl["BTC"]["total"]
    assert abs(reported - equity) <= Decimal("1e-15"), (reported, equity)
    # and the settlement's positions equal the signed sums of the stored fills
    held = {sym: q for sym, q in result.positions.select("symbol", "quantity").iter_rows()}
    assert held == {s: q for s, q in position.items()}


def test_summary_json_written(result: RunResult) -> None:
    import json

    data = json.loads((result.run_dir / "summary.json").read_text())
    assert data["fills"] == result.summary.fills
    assert data["run_id"] == result.summary.run_id


def test_two_runs_are_identical(result: RunResult, tmp_path: Path) -> None:
    again = quantlab.backtest(f"bundled:{DATA_FILE}", run_dir=tmp_path / "b")
    assert again.orders.drop("updated_at").equals(result.orders.drop("updated_at"))
    assert again.fills.equals(result.fills)
    assert again.pnl == result.pnl


def test_backtest_of_a_frame_and_overrides(tmp_path: Path) -> None:
    bars = quantlab.load_bars(f"bundled:{DATA_FILE}", symbols=["ETH/BTC"], end="2018-01-15")
    res = quantlab.backtest(
        bars,
        run_dir=tmp_path / "f",
        features={"fast": 5, "slow": 20},
        risk={"max_order_notional": 5},
    )
    assert res.summary.symbols == 1
    assert res.summary.events == bars.height
    assert res.fills.height > 0
    assert set(res.fills["symbol"].unique()) == {"ETH/BTC"}


def test_bad_arguments_have_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(quantlab.DataError, match=r"symbols \['NOPE/BTC'\] are not in the data"):
        quantlab.backtest(f"bundled:{DATA_FILE}", symbols=["NOPE/BTC"], run_dir=tmp_path)
    with pytest.raises(quantlab.DataError, match=r"no bundled data file 'missing\.parquet'"):
        quantlab.backtest("bundled:missing.parquet", run_dir=tmp_path)
    with pytest.raises(quantlab.ConfigError, match="features"):
        quantlab.backtest(f"bundled:{DATA_FILE}", features={"fast": 9, "slow": 3})
