"""The production report: what a finished run did, as tables and charts for a notebook.

Every function takes a `quantlab.engine.RunResult` (what `quantlab.backtest` and
`run_production` return) and gives a Polars frame or an hvPlot/HoloViews object; the
production notebook shows them one per cell, so its HTML report (inputs hidden) reads as a
report.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import polars as pl

from quantlab.engine import RunResult
from quantlab.portfolio.tearsheet import TearSheet, tear_sheet, tear_sheet_for_run
from quantlab.storage.sql.engine import make_engine
from quantlab.storage.sql.portfolio_store import SqlPortfolioStore

__all__ = [
    "costs_table",
    "denials_table",
    "equity_report",
    "headline",
    "latency_table",
    "ledger_table",
    "risk_events",
    "trades_table",
]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.6g}"
    if isinstance(value, Decimal):
        return f"{value:.8f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def headline(result: RunResult) -> pl.DataFrame:
    """The run's headline figures as a two-column table (figure, value)."""
    s = result.summary
    rows: list[tuple[str, str]] = [
        ("run id", s.run_id),
        ("mode", s.mode),
        ("data", ", ".join(s.data)),
        ("symbols", _fmt(s.symbols)),
        ("events", f"{s.events:,} ({s.events_accepted:,} accepted)"),
        ("signals", _fmt(s.signals)),
        ("orders", f"{s.orders:,} ({s.approved:,} approved, {sum(s.denied.values()):,} denied)"),
        ("fills", _fmt(s.fills)),
    ]
    for ccy, pnl in s.pnl.items():
        rows.append((f"PnL ({ccy})", f"{pnl['total']:.8f}"))
    if s.pnl_base is not None:
        rows.append((f"PnL in {s.pnl_base['currency']}", f"{s.pnl_base['pnl']:.8f}"))
    breaker = (s.risk or {}).get("breaker", {})
    if breaker:
        rows.append(("circuit breaker", str(breaker.get("state"))))
    rows += [
        ("wall time", f"{s.wall_s:.2f} s"),
        ("events/s", f"{s.events_per_s:,.0f}"),
        ("handler errors", _fmt(s.handler_errors)),
        ("dead letters", _fmt(s.dead_letters)),
    ]
    return pl.DataFrame(rows, schema=["figure", "value"], orient="row")


def _snapshots(result: RunResult) -> pl.DataFrame:
    engine = make_engine(result.summary.database, durable=False)
    try:
        rows = SqlPortfolioStore(engine).pnl_snapshots()
    finally:
        engine.dispose()
    if not rows:
        return pl.DataFrame(
            schema={
                "timestamp": pl.Datetime("us", "UTC"),
                "currency": pl.String,
                "equity": pl.Float64,
            }
        )
    return pl.DataFrame(
        {
            "timestamp": [r["timestamp"] for r in rows],
            "currency": [r["currency"] for r in rows],
            "equity": [float(r["equity"]) for r in rows],
        }
    )


def equity_report(
    result: RunResult, bars: pl.DataFrame | None = None, *, currency: str | None = None
) -> TearSheet | None:
    """Equity and drawdown of the run in one quote currency, as a tear sheet.

    With `bars` (backtests and replays: the data the run saw), the curve marks the positions
    to every bar (`portfolio.tearsheet.tear_sheet_for_run`). Without, it is the settlement's
    PnL snapshots from the run's database (at most one a minute of the run's clock), on a
    capital of the run's largest absolute PnL (so that the equity stays positive). None if
    the run never traded in `currency`.
    """
    currencies = sorted(result.pnl)
    if not currencies or result.fills.height == 0:
        return None
    currency = currency or currencies[0]
    if currency not in currencies:
        raise ValueError(f"currency {currency!r}: the run has PnL in {currencies}")
    if bars is not None and bars.height:
        return tear_sheet_for_run(result, bars, currency=currency, title=f"{currency} equity")
    snaps = _snapshots(result).filter(pl.col("currency") == currency)
    if snaps.height < 2:
        return None
    scale = max(float(snaps.get_column("equity").abs().max() or 0.0), 1e-9)  # type: ignore[arg-type]
    curve = snaps.select("timestamp", (pl.col("equity") + 2 * scale).alias("equity"))
    return tear_sheet(
        curve,
        title=f"{currency} equity (PnL snapshots on capital {2 * scale:.6g})",
        window=min(30, max(2, curve.height // 3)),
    )


def trades_table(result: RunResult, last: int = 20) -> pl.DataFrame:
    """The last `last` fills (time, symbol, side, quantity, price, fee)."""
    fills = result.fills
    if fills.height == 0:
        return fills
    keep = [
        c
        for c in ("timestamp", "symbol", "side", "quantity", "price", "fee", "liquidity")
        if c in fills.columns
    ]
    return fills.sort("timestamp").tail(last).select(keep)


def costs_table(result: RunResult) -> pl.DataFrame:
    """Implementation-shortfall costs per currency: fees, spread, slippage, delay and total."""
    rows = [
        {"currency": ccy, **{k: float(v) for k, v in parts.items()}}
        for ccy, parts in result.summary.costs.items()
    ]
    return pl.DataFrame(rows) if rows else pl.DataFrame(schema={"currency": pl.String})


def ledger_table(result: RunResult) -> pl.DataFrame:
    """The payments ledger: entries, balance, expenses per currency and metered charges."""
    ledger = result.summary.ledger
    if not ledger:
        return pl.DataFrame(schema={"item": pl.String, "value": pl.String})
    rows = [
        ("journal entries", _fmt(ledger.get("entries", 0))),
        ("balanced", str(ledger.get("balanced"))),
    ]
    for ccy, expenses in (ledger.get("expenses") or {}).items():
        for kind, amount in expenses.items():
            rows.append((f"{kind} ({ccy})", f"{Decimal(str(amount)):.8f}"))
    for agent, amount in (ledger.get("charged") or {}).items():
        rows.append((f"charged: {agent}", f"{Decimal(str(amount)):.4f}"))
    for alert in ledger.get("alerts", []):
        state = "exhausted" if alert.get("exhausted") else "alert"
        spent = f"{alert.get('spent')} of {alert.get('limit')} {alert.get('currency')}"
        rows.append((f"budget {alert.get('agent')}", f"{state}: {spent}"))
    return pl.DataFrame(rows, schema=["item", "value"], orient="row")


def risk_events(result: RunResult) -> pl.DataFrame:
    """Circuit-breaker changes of the run (time, from, to, trigger, reason)."""
    history = (result.summary.risk or {}).get("breaker_history", [])
    schema = {k: pl.String for k in ("timestamp", "previous", "state", "trigger", "reason")}
    return pl.DataFrame(history, schema=schema) if history else pl.DataFrame(schema=schema)


def denials_table(result: RunResult) -> pl.DataFrame:
    """Risk denials by reason, with the latest denial's detail for each."""
    risk = result.summary.risk or {}
    latest: dict[str, str] = {}
    for d in risk.get("recent_denials", []):
        latest[d["reason"]] = d["detail"]
    rows = [
        {"reason": reason, "orders": n, "latest": latest.get(reason, "")}
        for reason, n in sorted(result.summary.denied.items(), key=lambda kv: -kv[1])
    ]
    schema = {"reason": pl.String, "orders": pl.Int64, "latest": pl.String}
    return pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)


def latency_table(result: RunResult) -> pl.DataFrame:
    """Per-stage handler latency against the DESIGN §7 budget (spec and quantlab's goal).

    ``measured_ms`` is the stage's percentile (the budget's own, p95 or p99) of the wall time
    its consumer spent per message; in a backtest a features/signals message is a whole batch
    of bars (``ingest.batch_size`` rows over many decision times), live it is what arrived
    within ``ingest.flush_ms``.
    """
    stages = (result.summary.latency or {}).get("stages", [])
    rows = []
    for st in stages:
        measured = st.get("measured_ms")
        rows.append(
            {
                "stage": st["stage"],
                "percentile": st["percentile"],
                "messages": st["count"],
                "measured_ms": None if measured is None or math.isnan(measured) else measured,
                "spec_ms": st.get("spec_ms"),
                "goal_ms": st.get("goal_ms"),
                "within_spec": st.get("within_spec"),
                "within_goal": st.get("within_goal"),
            }
        )
    schema = {
        "stage": pl.String,
        "percentile": pl.String,
        "messages": pl.Int64,
        "measured_ms": pl.Float64,
        "spec_ms": pl.Float64,
        "goal_ms": pl.Float64,
        "within_spec": pl.Boolean,
        "within_goal": pl.Boolean,
    }
    return pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)
