"""Snapshot → frames of the dashboard's views, on a hand-built snapshot."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace
from typing import Any

import pytest

from quantlab.dashboard import data


@pytest.fixture
def snap() -> dict[str, Any]:
    t0 = 1_795_500_000_000_000_000
    return {
        "schema": 1, "status": "running", "pid": os.getpid(), "written_at": time.time(),
        "run_id": "r1", "trading": "paper", "events": 10, "events_per_s": 5.0,
        "ingest_rejects": {"stale": 2},
        "sources": {"synthetic": {"events": 10, "events_per_s": 5.0, "rejects": {"bad": 1},
                                  "reconnects": 3, "lag_ms": 1.5, "connected": True,
                                  "stale": 0, "last_error": ""}},
        "markets": {
            "B/USD": {"last": 2.0, "bid": 1.9, "ask": 2.1, "spread": 0.2, "volume": 5.0,
                      "ts": t0 + 2, "history": [[t0 + 1, 1.5, 0.2, 1.0], [t0 + 2, 2.0, 0.2, 4.0]]},
            "A/USD": {"last": 1.0, "bid": None, "ask": None, "spread": None, "volume": 0.0,
                      "ts": t0, "history": [[t0, 1.0, None, 0.0]]},
        },
        "positions": [{"symbol": "A/USD", "currency": "USD", "quantity": 1.0, "avg_price": 1.0,
                       "mark": 1.1, "realized_pnl": 0.0, "unrealized_pnl": 0.1, "fees": 0.01,
                       "fills": 1}],
        "pnl": {"USD": {"realized": 0.5, "unrealized": 0.1, "fees": 0.01, "total": 0.59}},
        "equity": [{"t": 1.0}, {"t": 2.0, "USD": 1.0}, {"t": 3.0, "USD": 0.5},
                   {"t": 4.0, "USD": 2.0}],
        "open_orders": [{"client_order_id": "o1", "symbol": "A/USD", "side": "buy"}],
        "fills": [{"timestamp": "2026-11-24T00:00:00+00:00", "symbol": "A/USD", "side": "buy",
                   "quantity": 1.0, "price": 1.0, "fee": 0.01, "venue": "paper",
                   "client_order_id": "o0"}],
        "order_states": {"new": 2, "filled": 1},
        "rejects": [{"timestamp": "t", "symbol": "A/USD", "source": "risk", "reason": "limit",
                     "detail": "too big"}],
        "reject_reasons": {"risk: limit": 1},
        "signals": [
            {"timestamp": "t1", "strategy_id": "h", "symbol": "A/USD", "side": "buy",
             "strength": 0.3, "confidence": 0.6, "pattern_neighbours": ["n1", "n2"],
             "pattern_similarity": [0.9, 0.8], "pattern_outcomes": [0.01, -0.02]},
            {"timestamp": "t2", "strategy_id": "h", "symbol": "B/USD", "side": "sell",
             "strength": 0.1, "confidence": 0.5, "pattern_neighbours": [],
             "pattern_similarity": [], "pattern_outcomes": []},
        ],
        "weights": {"h": [{"timestamp": "2026-11-24T00:00:00+00:00", "rounds": 1, "ema": 0.4,
                           "patterns": 0.6}]},
        "risk": {"breaker": {"state": "tripped", "trigger": "drawdown", "reason": "dd 5%"},
                 "var": {"ready": True, "historical_99": 2.0, "limit": 8.0},
                 "usage": [{"symbol": "A/USD", "notional": 0.5, "limit": 1.0, "usage": 0.5}]},
        "breaker_history": [{"timestamp": "t", "previous": "active", "state": "tripped",
                             "trigger": "drawdown", "reason": "dd 5%"}],
        "latency": {"stages": [{"stage": "a → b", "percentile": "p95", "count": 3,
                                "measured_ms": 1.0, "spec_ms": 10.0, "goal_ms": None}]},
        "ledger": {"entries": 1, "expenses": {"USD": {"fees": 0.01, "total": 0.01}},
                   "budgets": [{"agent": "llm", "currency": "USD", "limit": 10.0, "spent": 2.5,
                                "fraction": 0.25}]},
        "charged": {"llm": 2.5}, "burn_per_hour": {"llm": 1.0},
        "costs": {"USD": {"fee": 0.01, "spread": 0.02, "slippage": 0.0, "delay": -0.01,
                          "total": 0.02}},
    }  # fmt: skip


def test_status_lines(snap: dict[str, Any]) -> None:
    assert data.status(None) == ("none", "no engine has run yet")
    state, text = data.status(snap)
    assert state == "running"
    assert text.startswith("engine running")
    old = {**snap, "written_at": snap["written_at"] - 60}
    state, text = data.status(old, stale_after_s=5)
    assert state == "stopped"
    assert text.startswith("engine not running — showing the last stored state from ")


def test_a_malformed_snapshot_time_is_shown_not_raised(snap: dict[str, Any]) -> None:
    for bad in ("soon", None, 1e300, [1]):
        state, text = data.status({**snap, "written_at": bad})
        assert state in ("running", "stopped")
        assert "an unreadable time" in text


def test_markets_and_history(snap: dict[str, Any]) -> None:
    assert data.symbols(snap) == ["A/USD", "B/USD"]
    m = data.markets(snap)
    assert list(m.columns) == data.MARKET_COLUMNS
    assert list(m["symbol"]) == ["A/USD", "B/USD"]
    h = data.history(snap, "B/USD")
    assert list(h["price"]) == [1.5, 2.0]
    assert str(h["ts"].dtype) == "datetime64[ns]"
    last = data.last_ts(snap, "B/USD")
    assert last is not None
    assert data.history(snap, "B/USD", after_ns=last - 1)["price"].tolist() == [2.0]
    assert data.history(snap, "B/USD", after_ns=last).empty
    assert data.history(None, None).columns.tolist() == data.HISTORY_COLUMNS


def test_portfolio(snap: dict[str, Any]) -> None:
    assert data.positions(snap)["symbol"].tolist() == ["A/USD"]
    assert data.pnl(snap).iloc[0]["total"] == pytest.approx(0.59)
    eq = data.equity(snap, "USD")
    assert eq["equity"].tolist() == [1.0, 0.5, 2.0]
    assert eq["drawdown"].tolist() == [0.0, -0.5, 0.0]
    assert data.equity(None, None).empty


def test_orders_and_fills(snap: dict[str, Any]) -> None:
    assert data.open_orders(snap)["client_order_id"].tolist() == ["o1"]
    seen: set[Any] = set()
    assert len(data.new_fills(snap, seen)) == 1
    assert data.new_fills(snap, seen).empty
    more = {**snap, "fills": [*snap["fills"], {**snap["fills"][0], "client_order_id": "o2"}]}
    assert data.new_fills(more, seen)["client_order_id"].tolist() == ["o2"]
    assert dict(data.order_states(snap).values.tolist()) == {"filled": 1, "new": 2}
    reasons = dict(data.reject_reasons(snap).values.tolist())
    assert reasons == {"risk: limit": 1, "ingest: stale": 2, "source synthetic: bad": 1}
    assert data.rejects(snap)["reason"].tolist() == ["limit"]


def test_signals_weights_neighbours(snap: dict[str, Any]) -> None:
    assert data.signals(snap)["symbol"].tolist() == ["B/USD", "A/USD"]  # newest first
    w = data.weights(snap)
    assert sorted(w["expert"]) == ["h: ema", "h: patterns"]
    n = data.neighbours(snap)
    assert n.values.tolist() == [["n1", 0.9, 0.01], ["n2", 0.8, -0.02]]
    assert data.neighbours(None).empty


def test_risk(snap: dict[str, Any]) -> None:
    assert data.usage(snap)["usage_pct"].tolist() == [50.0]
    v = data.var(snap)
    assert v["value"] == 2.0
    assert v["usage"] == 0.25
    assert data.breaker(snap)["reason"] == "dd 5%"
    assert data.breaker_history(snap)["state"].tolist() == ["tripped"]


def test_pipeline_and_costs(snap: dict[str, Any]) -> None:
    s = data.sources(snap).iloc[0]
    assert (s["source"], s["rejects"], s["reconnects"]) == ("synthetic", 1, 3)
    bars = data.latency_bars(snap)
    assert bars["ms"].tolist() == [1.0, 10.0, 0.0]
    snap["latency"]["stages"][0]["consumer"] = "risk"
    snap["latency"]["since_data"] = {"risk": {"p95_ms": 12.5}}
    assert data.latency(snap)["since_data_p95_ms"].tolist() == [12.5]
    assert data.agents(snap).values.tolist() == [["llm", 2.5, 1.0]]
    assert data.budgets(snap)["fraction_pct"].tolist() == [25.0]
    assert data.expenses(snap)["kind"].tolist() == ["fees", "total"]
    assert data.costs(snap)["component"].tolist() == ["fee", "spread", "slippage", "delay"]


def test_processes_of_a_multi_process_engine(snap: dict[str, Any]) -> None:
    written = snap["written_at"]
    snap["processes"] = {
        "execution": {"pid": 10, "status": "running", "run_id": "r1"},
        "ingest": {"pid": 11, "status": "running", "run_id": "r2", "host": "a",
                   "written_at": written - 2.0},
        "strategy": {"pid": 12, "status": "stopped", "run_id": "r3", "host": "b",
                     "written_at": written - 0.5},
    }  # fmt: skip
    frame = data.processes(snap)
    assert frame["role"].tolist() == ["execution", "ingest", "strategy"]
    assert frame["pid"].tolist() == [10, 11, 12]
    assert frame["age_s"].tolist() == [0.0, 2.0, 0.5]
    assert frame["status"].tolist() == ["running", "running", "stopped"]


def test_empty_snapshot_gives_empty_frames() -> None:
    for fn in (data.markets, data.positions, data.fills, data.signals, data.usage,
               data.sources, data.latency, data.agents, data.budgets, data.costs,
               data.processes):  # fmt: skip
        assert fn(None).empty


def test_runs_link_reports(tmp_path: Any) -> None:
    runs_dir = tmp_path / "runs"
    started = __import__("datetime").datetime(2026, 11, 24, 1, 2, 3)
    rec = SimpleNamespace(run_id="R1", status="succeeded", started_at=started, duration_s=3.0,
                          notebook="nb/x.ipynb", report="runs/2026-11-24/R1/report.html",
                          error=None)  # fmt: skip
    absolute = SimpleNamespace(
        **{**rec.__dict__, "run_id": "R2", "report": str(runs_dir / "d" / "R2" / "report.html")}
    )
    df = data.runs([rec, absolute], runs_dir)
    assert df["report"].tolist() == [
        "reports/2026-11-24/R1/report.html",
        "reports/d/R2/report.html",
    ]
    page = data.runs_html(df)
    assert 'href="reports/2026-11-24/R1/report.html"' in page
    assert "<table" in page
    assert data.report_url("/elsewhere/x.html", runs_dir) is None
    assert "no production runs yet" in data.runs_html(data.runs([], runs_dir))
