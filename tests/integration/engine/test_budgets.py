"""The payments ledger in a backtest: data, subscription and inference costs from the
configuration are posted as they occur, the ledger balances, and an exhausted budget stops the
agent: a strategy's orders are refused, any other agent halts trading."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import polars as pl

from quantlab.config import load_settings
from quantlab.engine import Node
from quantlab.engine.result import RunResult

DATA = {"symbols": ["ETH/BTC"]}


def run(tmp_path: Path, **ledger: object) -> tuple[Node, RunResult]:
    node = Node(load_settings(data=DATA, ledger=ledger), run_dir=tmp_path)
    return node, node.run()


def test_costs_from_the_configuration_are_posted_and_the_ledger_balances(tmp_path: Path) -> None:
    node, result = run(
        tmp_path,
        costs=[
            {"agent": "replay", "kind": "data", "per_event": "0.0001", "subscription": "30"},
            {"agent": "direction_mlp", "kind": "inference", "per_row": "0.000002"},
            {"agent": "paper", "kind": "api", "per_call": "0.01"},
        ],
    )
    ledger = node.settlement.ledger
    assert all(v == 0 for v in ledger.trial_balance().values())
    events = result.summary.events
    rows = result.summary.feature_rows
    assert ledger.balance("expenses:data:replay:USD") > Decimal("0.0001") * events
    assert ledger.balance("expenses:inference:direction_mlp:USD") == Decimal("0.000002") * rows
    # the subscription accrues pro rata over the replayed span (30 USD per 30 days)
    first, last = _span(node)
    subscription = ledger.balance("expenses:data:replay:USD") - Decimal("0.0001") * events
    expected = Decimal(30) * Decimal((last - first).total_seconds()) / Decimal(30 * 86_400)
    assert abs(subscription - expected) < Decimal("1e-9")
    orders = result.orders.height
    assert orders > 0
    assert ledger.balance("expenses:api:paper:USD") == Decimal("0.01") * orders  # one per order
    assert ledger.cash("USD") == -(
        ledger.balance("expenses:data:replay:USD")
        + ledger.balance("expenses:inference:direction_mlp:USD")
        + ledger.balance("expenses:api:paper:USD")
    )
    assert result.summary.ledger["balanced"] is True
    # every entry, metered costs included, is kept in SQL
    store = node.portfolio_store
    assert store is not None
    assert len(store.entries()) == len(ledger)


def _span(node: Node) -> tuple[dt.datetime, dt.datetime]:
    from quantlab.adapters.sim.data import bundled_dir

    ts = pl.read_parquet(bundled_dir() / "binance_btc_pairs_5m_2018-01.parquet").filter(
        pl.col("symbol") == "ETH/BTC"
    )["timestamp"]
    return ts.min(), ts.max()  # type: ignore[return-value]


def test_an_exhausted_strategy_budget_stops_that_strategy(tmp_path: Path) -> None:
    node, result = run(
        tmp_path, budgets=[{"strategy": "hedge", "currency": "BTC", "limit": "0.002"}]
    )
    alerts = node.meter.alerts
    assert [float(a.fraction) for a in alerts] == [0.5, 0.8, 1.0]
    assert alerts[-1].exhausted
    assert result.summary.denied.get("budget_exhausted", 0) > 0
    assert "hedge" in node.risk.blocked
    assert alerts[-1].spent >= Decimal("0.002")
    # The fill whose fee exhausted the budget; orders already approved in the same batch
    # (a batch spans 1,000 bars of 5 minutes) may still go out, none after it.
    fill_id = alerts[-1].entry_id.removeprefix("fill:")
    at = result.fills.filter(pl.col("fill_id") == fill_id)["timestamp"][0]
    later = result.orders.filter(pl.col("created_at") > at + dt.timedelta(minutes=5 * 1000))
    assert later.height == 0
    assert result.orders.filter(pl.col("created_at") > at).height < result.orders.height


def test_an_exhausted_data_budget_halts_trading(tmp_path: Path) -> None:
    node, result = run(
        tmp_path,
        costs=[{"agent": "replay", "kind": "data", "per_event": "0.001"}],
        budgets=[{"agent": "replay", "currency": "USD", "limit": "2"}],
    )
    assert node.meter.alerts[-1].exhausted
    assert node.risk.breaker.state.value == "halted"
    assert node.risk.breaker.record.trigger == "budget"
    assert "budget of replay exhausted" in node.risk.breaker.record.reason
    assert result.summary.denied.get("halted", 0) > 0
