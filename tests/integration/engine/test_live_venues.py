"""A live run routes by symbol to several venues at once (the paper venue and Alpaca through
alpaca-py against its fake), and a restart reconciles with both before trading."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from quantlab.config import load_settings
from quantlab.engine import Node
from quantlab.testing.fakes.alpaca_trading import FakeAlpacaTrading


async def test_orders_are_routed_by_symbol_and_a_restart_reconciles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUANTLAB_ALPACA_API_KEY", "PKFAKE")
    monkeypatch.setenv("QUANTLAB_ALPACA_API_SECRET", "fake-secret")
    with FakeAlpacaTrading(key="PKFAKE", secret="fake-secret") as fake:  # noqa: S106
        settings = load_settings(
            strategy={"name": "ema_cross", "id": "ema"},
            storage={"lake_root": str(tmp_path / "lake"), "lake_cold_root": str(tmp_path / "c")},
            features={"fast": 3, "slow": 8},
            live={
                "sources": [
                    {"type": "synthetic", "symbols": 3, "rate": 3000, "bar_interval_s": 0.05}
                ]
            },
            execution={
                "venues": [
                    {"type": "paper"},
                    {"type": "alpaca", "url": fake.url, "poll_interval_s": 0.05},
                ],
                "routes": {"SYN1/USD": "alpaca"},
                "sizing": "fixed",
                "order_notional": "1000",
            },
            risk={"max_position_notional": "100000", "max_order_notional": "100000"},
        )
        first = await Node(settings, mode="live", run_dir=tmp_path / "one").run_async(
            duration_s=4.0
        )
        orders = first.orders
        assert orders.height > 0
        by_venue = orders.group_by("venue").agg(pl.col("symbol").unique())
        venues = {row[0]: set(row[1]) for row in by_venue.iter_rows()}
        assert venues["alpaca"] == {"SYN1/USD"}
        assert "SYN1/USD" not in venues.get("paper", set())
        at_alpaca = set(orders.filter(pl.col("venue") == "alpaca")["client_order_id"])
        assert at_alpaca == set(fake.orders)
        assert max(fake.create_count.values()) == 1
        alpaca_fills = first.fills.filter(pl.col("venue") == "alpaca")
        assert set(alpaca_fills["trade_id"]) == {f["id"] for f in fake.fills}

        # A restart with the same state folder: reconciliation finds nothing to fix.
        node = Node(settings, mode="live", run_dir=tmp_path / "two")
        second = await node.run_async(duration_s=1.0)
        report = node.execution.reconciliation
        assert report is not None
        assert report.clean, report.summary()
        assert report.fills_recovered == 0
        assert second.orders.height >= orders.height  # the same book, carried over
        assert max(fake.create_count.values()) == 1
        # The restarted builder and risk manager count the first life's fills as exposure.
        fills = second.fills.with_columns(
            signed=pl.when(pl.col("side") == "buy")
            .then(pl.col("quantity"))
            .otherwise(-pl.col("quantity"))
        )
        net = dict(fills.group_by("symbol").agg(pl.col("signed").sum()).iter_rows())
        assert net
        for symbol, quantity in net.items():
            assert node.risk.book.position(symbol) == quantity
            assert node.builder.book.position(symbol) == quantity
            assert node.settlement.portfolio.positions[symbol].quantity == quantity
        # the ledger went on from the first life's entries, and still balances
        ledger = node.settlement.ledger
        assert len(ledger) >= second.fills.height
        assert all(v == 0 for v in ledger.trial_balance().values())
