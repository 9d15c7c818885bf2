"""Cost attribution: the parts add up to the shortfall against the decision, exactly, and the
arrival price is the first price the venue could trade at (checked on the real bars)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from quantlab.adapters.sim.data import bundled_dir
from quantlab.config import load_settings
from quantlab.engine import Node
from quantlab.testing.postgres_server import PostgresServer


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Node:
    node = Node(
        load_settings(data={"symbols": ["ETH/BTC", "LTC/BTC"]}),
        run_dir=tmp_path_factory.mktemp("costs"),
    )
    node.run()
    return node


@pytest.fixture(scope="module")
def pg_run(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[Node]:
    """The same backtest with its book and ledger on PostgreSQL (`storage.db_url` alone)."""
    node = Node(
        load_settings(
            data={"symbols": ["ETH/BTC", "LTC/BTC"]}, storage={"db_url": postgres.database()}
        ),
        run_dir=tmp_path_factory.mktemp("costs-pg"),
    )
    node.run()
    yield node
    node.store.engine.dispose()  # the connections the tests opened to read the book back


@pytest.fixture(params=["sqlite", "postgresql"])
def any_run(request: pytest.FixtureRequest) -> Node:
    run: Node = request.getfixturevalue("run" if request.param == "sqlite" else "pg_run")
    return run


def test_every_fill_is_attributed_and_the_parts_add_up(run: Node) -> None:
    costs = run.costs
    fills = run.store.fills_frame()
    assert fills.height > 30
    assert len(costs.records) == fills.height
    assert costs.unattributed == 0
    for r in costs.records:
        s = r.side.sign
        assert r.delay + r.spread + r.slippage + r.fee + r.funding == r.total
        assert r.total == s * r.quantity * (r.price - r.decision_mid) + r.fee
        assert r.spread >= 0
    fees = sum((f.fee for f in run.store.fills()), Decimal(0))  # exact, not the frame's 18 digits
    assert costs.totals()["BTC"]["fee"] == fees
    by_strategy = costs.by("strategy")
    assert by_strategy["fills"].to_list() == [fills.height]
    # the frames hold 18 decimals; the records and totals are exact
    assert abs(by_strategy["total"].to_list()[0] - costs.totals()["BTC"]["total"]) < Decimal(
        "1e-15"
    )
    assert (
        costs.by("order").height
        == run.store.orders_frame().filter(pl.col("filled_quantity") > 0).height
    )
    with pytest.raises(ValueError, match="level must be fill, order, signal or strategy"):
        costs.by("desk")


def test_the_arrival_price_is_the_open_of_the_bar_after_the_order(run: Node) -> None:
    bars = pl.read_parquet(bundled_dir() / "binance_btc_pairs_5m_2018-01.parquet")
    orders = {r["client_order_id"]: r for r in run.store.orders_frame().iter_rows(named=True)}
    checked = 0
    for r in run.costs.records[:200]:
        created: dt.datetime = orders[r.client_order_id]["created_at"]
        after = bars.filter((pl.col("symbol") == r.symbol) & (pl.col("timestamp") > created)).sort(
            "timestamp"
        )
        assert r.arrival_mid == Decimal(repr(after["open"][0]))
        checked += 1
    assert checked > 25


def test_the_run_summary_reports_costs_by_kind(run: Node, tmp_path: Path) -> None:
    totals = run.costs.totals()
    assert set(totals) == {"BTC"}
    assert set(totals["BTC"]) == {"delay", "spread", "slippage", "fee", "funding", "total"}
    assert totals["BTC"]["funding"] == 0


def test_the_ledger_balances_and_reconciles_with_cash_positions_and_fees(run: Node) -> None:
    settlement = run.settlement
    ledger = settlement.ledger
    assert len(ledger) == len(run.store.fills())
    assert all(v == 0 for v in ledger.trial_balance().values())
    portfolio = settlement.portfolio
    for ccy, cash in portfolio.cash.items():
        assert ledger.cash(ccy) == cash
    by_base: dict[str, Decimal] = {}
    for p in portfolio.positions.values():
        base = p.symbol.split("/")[0]
        by_base[base] = by_base.get(base, Decimal(0)) + p.quantity
    for base, quantity in by_base.items():
        assert ledger.position(base) == quantity
    # and with PnL: the ledger's cash plus its positions at the last marks is the PnL
    equity = ledger.cash("BTC") + sum(
        (ledger.position(symbol.split("/")[0]) * mark for symbol, mark in portfolio.marks.items()),
        Decimal(0),
    )
    assert abs(equity - settlement.pnl()["BTC"]["total"]) < Decimal("1e-18")
    fees = settlement.ledger_summary()["expenses"]["BTC"]["fees"]
    # the ledger sums exactly; the PnL and cost sums in Decimal's 28-digit default context
    tiny = Decimal("1e-20")
    assert abs(fees - run.costs.totals()["BTC"]["fee"]) < tiny
    assert abs(fees - settlement.pnl()["BTC"]["fees"]) < tiny


def test_ledger_costs_and_snapshots_are_kept_in_sql_and_read_back_exactly(any_run: Node) -> None:
    from quantlab.portfolio.ledger import Ledger

    run = any_run
    store = run.portfolio_store
    assert store is not None
    entries = store.entries()
    assert len(entries) == len(run.settlement.ledger)
    rebuilt = Ledger()
    assert rebuilt.post_all(entries) == len(entries)  # every entry balanced, read back
    assert rebuilt.balances() == run.settlement.ledger.balances()  # digit for digit
    costs = store.costs()
    assert len(costs) == len(run.costs.records)
    by_fill = {r.fill_id: r for r in run.costs.records}
    for row in costs:
        assert row["total"] == by_fill[row["fill_id"]].total
    snapshots = store.pnl_snapshots()
    # one row per snapshot time (none before the first fill; the final one replaces a
    # snapshot taken at the same time)
    assert 1 < len(snapshots) <= run.settlement.snapshots
    last = snapshots[-1]
    pnl = run.settlement.pnl()["BTC"]
    assert (last["currency"], last["total"], last["fees"]) == ("BTC", pnl["total"], pnl["fees"])
    positions = store.position_snapshots()
    final = {p["symbol"]: p for p in positions if p["timestamp"] == last["timestamp"]}
    for symbol, position in run.settlement.portfolio.positions.items():
        assert final[symbol]["quantity"] == position.quantity
