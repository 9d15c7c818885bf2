"""Snapshot → pandas frames, one function per dashboard view (no Panel, no Bokeh).

Every function takes the monitor snapshot (`quantlab.engine.monitor.read_snapshot`), or None
when no engine has run yet, and returns a frame with fixed columns (empty when the snapshot
has nothing for it), so the pages render the same way with or without data.
"""

from __future__ import annotations

import datetime as dt
import html
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from quantlab.engine.monitor import engine_running

Snapshot = Mapping[str, Any] | None

MARKET_COLUMNS = ["symbol", "last", "bid", "ask", "spread", "volume", "updated"]
HISTORY_COLUMNS = ["ts", "price", "spread", "volume"]
POSITION_COLUMNS = [
    "symbol", "currency", "quantity", "avg_price", "mark", "realized_pnl", "unrealized_pnl",
    "fees", "fills",
]  # fmt: skip
ORDER_COLUMNS = ["client_order_id", "symbol", "side", "quantity", "price", "status", "venue"]
FILL_COLUMNS = [
    "timestamp",
    "symbol",
    "side",
    "quantity",
    "price",
    "fee",
    "venue",
    "client_order_id",
]
REJECT_COLUMNS = ["timestamp", "symbol", "source", "reason", "detail"]
SIGNAL_COLUMNS = ["timestamp", "strategy_id", "symbol", "side", "strength", "confidence"]
NEIGHBOUR_COLUMNS = ["neighbour", "similarity", "outcome"]
USAGE_COLUMNS = ["symbol", "notional", "limit", "usage_pct"]
SOURCE_COLUMNS = ["source", "connected", "events", "events_per_s", "rejects", "reconnects",
                  "lag_ms", "stale", "last_error"]  # fmt: skip
LATENCY_COLUMNS = ["stage", "percentile", "count", "measured_ms", "spec_ms", "goal_ms",
                   "within_spec", "within_goal", "since_data_p95_ms"]  # fmt: skip
PROCESS_COLUMNS = ["role", "pid", "host", "status", "age_s", "run_id"]
AGENT_COLUMNS = ["agent", "charged", "burn_per_hour"]
BUDGET_COLUMNS = ["agent", "currency", "limit", "spent", "fraction_pct"]
RUN_COLUMNS = ["run_id", "status", "started_at", "duration_s", "notebook", "report", "error"]


def _frame(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    """A frame with exactly `columns` (missing keys are None)."""
    return pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=list(columns))


def _ns_time(ns: Any) -> pd.Timestamp | None:
    try:
        return pd.Timestamp(int(ns), unit="ns") if ns else None
    except (TypeError, ValueError, OverflowError):
        return None


def _iso_time(values: pd.Series) -> pd.Series:
    """ISO strings (with or without zone) → naive UTC timestamps (Bokeh wants naive)."""
    out = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
    return out.dt.tz_localize(None)


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


# -- header -------------------------------------------------------------------------------------
def status(snapshot: Snapshot, *, stale_after_s: float = 5.0) -> tuple[str, str]:
    """(state, text): state is ``running``, ``stopped`` or ``none``; text is the header line."""
    if not snapshot:
        return "none", "no engine has run yet"
    try:
        when = dt.datetime.fromtimestamp(float(snapshot.get("written_at", 0)), dt.UTC)
        stamp = when.strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError, OSError):  # a malformed snapshot: say so
        stamp = f"an unreadable time ({str(snapshot.get('written_at'))[:40]!r})"
    run = snapshot.get("run_id") or "?"
    if engine_running(dict(snapshot), stale_after_s=stale_after_s):
        trading = snapshot.get("trading") or ""
        return (
            "running",
            f"engine running ({trading} run {run}, pid {snapshot.get('pid')}) — updated {stamp}",
        )
    return "stopped", f"engine not running — showing the last stored state from {stamp} (run {run})"


# -- markets ------------------------------------------------------------------------------------
def symbols(snapshot: Snapshot) -> list[str]:
    return sorted((snapshot or {}).get("markets") or {})


def markets(snapshot: Snapshot) -> pd.DataFrame:
    rows = []
    for name, m in sorted(((snapshot or {}).get("markets") or {}).items()):
        rows.append({**m, "symbol": name, "updated": _ns_time(m.get("ts"))})
    df = _frame(rows, MARKET_COLUMNS)
    for c in ("last", "bid", "ask", "spread", "volume"):
        df[c] = df[c].astype("float64")
    df["updated"] = pd.to_datetime(df["updated"])
    return df


def history(snapshot: Snapshot, symbol: str | None, *, after_ns: int | None = None) -> pd.DataFrame:
    """The symbol's price history, only points newer than `after_ns` when given."""
    m = ((snapshot or {}).get("markets") or {}).get(symbol or "") or {}
    points = [p for p in m.get("history") or [] if after_ns is None or p[0] > after_ns]
    raw = pd.DataFrame(points, columns=["ts_ns", "price", "spread", "volume"])
    return pd.DataFrame(
        {
            "ts": pd.to_datetime(raw["ts_ns"].astype("int64"), unit="ns"),
            "price": raw["price"].astype("float64"),
            "spread": raw["spread"].astype("float64"),
            "volume": raw["volume"].astype("float64"),
        },
        columns=HISTORY_COLUMNS,
    ).reset_index(drop=True)


def last_ts(snapshot: Snapshot, symbol: str | None) -> int | None:
    m = ((snapshot or {}).get("markets") or {}).get(symbol or "") or {}
    hist = m.get("history") or []
    return int(hist[-1][0]) if hist else None


# -- portfolio ----------------------------------------------------------------------------------
def positions(snapshot: Snapshot) -> pd.DataFrame:
    return _frame((snapshot or {}).get("positions") or [], POSITION_COLUMNS)


def pnl(snapshot: Snapshot) -> pd.DataFrame:
    rows = [
        {
            "currency": ccy,
            **{k: _num(v.get(k)) for k in ("realized", "unrealized", "fees", "total")},
        }
        for ccy, v in sorted(((snapshot or {}).get("pnl") or {}).items())
    ]
    return _frame(rows, ["currency", "realized", "unrealized", "fees", "total"])


def currencies(snapshot: Snapshot) -> list[str]:
    return sorted(((snapshot or {}).get("pnl") or {}).keys())


def equity(snapshot: Snapshot, currency: str | None) -> pd.DataFrame:
    """Equity (PnL total) over time and its drawdown from the running peak."""
    points = [
        (p["t"], _num(p[currency]))
        for p in (snapshot or {}).get("equity") or []
        if currency and currency in p
    ]
    df = pd.DataFrame(points, columns=["t", "equity"])
    df["t"] = pd.to_datetime(df["t"].astype("float64"), unit="s")
    df["equity"] = df["equity"].astype("float64")
    df["drawdown"] = df["equity"] - df["equity"].cummax()
    return df


# -- orders -------------------------------------------------------------------------------------
def open_orders(snapshot: Snapshot) -> pd.DataFrame:
    return _frame((snapshot or {}).get("open_orders") or [], ORDER_COLUMNS)


def fills(snapshot: Snapshot) -> pd.DataFrame:
    return _frame((snapshot or {}).get("fills") or [], FILL_COLUMNS)


def fill_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """Identity of a fill (for appending only the new ones)."""
    return (row.get("timestamp"), row.get("client_order_id"), row.get("quantity"), row.get("price"))


def new_fills(snapshot: Snapshot, seen: set[tuple[Any, ...]]) -> pd.DataFrame:
    """The fills not in `seen` (oldest first); `seen` is updated."""
    rows = []
    for f in (snapshot or {}).get("fills") or []:
        key = fill_key(f)
        if key not in seen:
            seen.add(key)
            rows.append(f)
    return _frame(rows, FILL_COLUMNS)


def order_states(snapshot: Snapshot) -> pd.DataFrame:
    items = sorted(((snapshot or {}).get("order_states") or {}).items())
    return pd.DataFrame(items, columns=["state", "count"]).astype({"state": str, "count": "int64"})


def rejects(snapshot: Snapshot) -> pd.DataFrame:
    return _frame(list(reversed((snapshot or {}).get("rejects") or [])), REJECT_COLUMNS)


def reject_reasons(snapshot: Snapshot) -> pd.DataFrame:
    """Rejects by reason: order rejects and denials, and ingest rejects of the sources."""
    snap = snapshot or {}
    counts: dict[str, int] = {}
    for reason, n in (snap.get("reject_reasons") or {}).items():
        counts[str(reason)] = counts.get(str(reason), 0) + int(n)
    for reason, n in (snap.get("ingest_rejects") or {}).items():
        key = f"ingest: {reason}"
        counts[key] = counts.get(key, 0) + int(n)
    for name, src in (snap.get("sources") or {}).items():
        for reason, n in (src.get("rejects") or {}).items():
            key = f"source {name}: {reason}"
            counts[key] = counts.get(key, 0) + int(n)
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return pd.DataFrame(items, columns=["reason", "count"]).astype(
        {"reason": str, "count": "int64"}
    )


# -- signals ------------------------------------------------------------------------------------
def signals(snapshot: Snapshot) -> pd.DataFrame:
    """Latest signals, newest first."""
    return _frame(list(reversed((snapshot or {}).get("signals") or [])), SIGNAL_COLUMNS)


def weights(snapshot: Snapshot) -> pd.DataFrame:
    """Hedge weights in long form: timestamp, strategy, expert, weight."""
    rows = []
    for strategy, hist in sorted(((snapshot or {}).get("weights") or {}).items()):
        for point in hist:
            for expert, w in point.items():
                if expert in ("timestamp", "rounds"):
                    continue
                rows.append(
                    {
                        "timestamp": point.get("timestamp"),
                        "strategy": strategy,
                        "expert": f"{strategy}: {expert}",
                        "weight": _num(w),
                    }
                )
    df = _frame(rows, ["timestamp", "strategy", "expert", "weight"])
    df["timestamp"] = _iso_time(df["timestamp"])
    df["weight"] = df["weight"].astype("float64")
    return df


def neighbours(snapshot: Snapshot) -> pd.DataFrame:
    """Pattern-memory neighbours of the latest signal that has any."""
    for sig in reversed((snapshot or {}).get("signals") or []):
        ids = sig.get("pattern_neighbours") or []
        if ids:
            sims = list(sig.get("pattern_similarity") or [])
            outs = list(sig.get("pattern_outcomes") or [])
            rows = [
                {
                    "neighbour": n,
                    "similarity": sims[i] if i < len(sims) else None,
                    "outcome": outs[i] if i < len(outs) else None,
                }
                for i, n in enumerate(ids)
            ]
            return _frame(rows, NEIGHBOUR_COLUMNS)
    return _frame([], NEIGHBOUR_COLUMNS)


# -- risk ---------------------------------------------------------------------------------------
def usage(snapshot: Snapshot) -> pd.DataFrame:
    rows = [
        {**u, "usage_pct": _num(u.get("usage")) * 100}
        for u in ((snapshot or {}).get("risk") or {}).get("usage") or []
    ]
    df = _frame(rows, USAGE_COLUMNS)
    df["usage_pct"] = df["usage_pct"].astype("float64")
    return df


def var(snapshot: Snapshot) -> dict[str, Any]:
    """VaR figures: ready, value (the first historical/parametric figure found), limit, use."""
    v = dict(((snapshot or {}).get("risk") or {}).get("var") or {})
    value = None
    for key, x in v.items():
        if key.startswith(("historical_", "parametric_", "var_", "value")) and _num(x) == _num(x):
            value = _num(x)
            break
    limit = v.get("limit")
    use = value / limit if value is not None and limit else None
    return {"ready": bool(v.get("ready")), "value": value, "limit": limit, "usage": use, **v}


def breaker(snapshot: Snapshot) -> dict[str, Any]:
    return dict(((snapshot or {}).get("risk") or {}).get("breaker") or {})


def breaker_history(snapshot: Snapshot) -> pd.DataFrame:
    rows = list(reversed((snapshot or {}).get("breaker_history") or []))
    return _frame(rows, ["timestamp", "previous", "state", "trigger", "reason"])


# -- pipeline health ------------------------------------------------------------------------------
def sources(snapshot: Snapshot) -> pd.DataFrame:
    rows = []
    for name, s in sorted(((snapshot or {}).get("sources") or {}).items()):
        rows.append(
            {**s, "source": name, "rejects": sum(int(n) for n in (s.get("rejects") or {}).values())}
        )
    df = _frame(rows, SOURCE_COLUMNS)
    df["events_per_s"] = df["events_per_s"].astype("float64")
    return df


def processes(snapshot: Snapshot) -> pd.DataFrame:
    """The engine's processes: one row (``all``), or one per role of a multi-process engine,
    with the age of each role's last report (the snapshot's writer reports with the snapshot)."""
    snap = snapshot or {}
    written = float(snap.get("written_at") or 0)
    rows = []
    for role, p in sorted((snap.get("processes") or {}).items()):
        at = p.get("written_at")
        rows.append(
            {
                "role": role,
                "pid": p.get("pid"),
                "host": p.get("host") or "",
                "status": p.get("status") or "",
                "age_s": max(written - float(at), 0.0) if at else 0.0,
                "run_id": p.get("run_id") or "",
            }
        )
    return _frame(rows, PROCESS_COLUMNS)


def latency(snapshot: Snapshot) -> pd.DataFrame:
    """The DESIGN §7 stages: each one's own time against its budget, and (live) the time from
    the market data's arrival until the stage was done with what it caused."""
    lat = (snapshot or {}).get("latency") or {}
    since = lat.get("since_data") or {}
    rows = [
        {**row, "since_data_p95_ms": (since.get(row.get("consumer")) or {}).get("p95_ms")}
        for row in lat.get("stages") or []
    ]
    return _frame(rows, LATENCY_COLUMNS)


def latency_bars(snapshot: Snapshot) -> pd.DataFrame:
    """Long form for a grouped bar chart: stage, budget (measured/spec/goal), ms."""
    rows = []
    for s in ((snapshot or {}).get("latency") or {}).get("stages") or []:
        label = f"{s.get('stage')} ({s.get('percentile')})"
        for kind in ("measured", "spec", "goal"):
            rows.append({"stage": label, "budget": kind, "ms": _num(s.get(f"{kind}_ms"))})
    df = _frame(rows, ["stage", "budget", "ms"])
    df["ms"] = df["ms"].astype("float64").fillna(0.0)
    return df


# -- costs --------------------------------------------------------------------------------------
def agents(snapshot: Snapshot) -> pd.DataFrame:
    snap = snapshot or {}
    charged = snap.get("charged") or {}
    burn = snap.get("burn_per_hour") or {}
    rows = [
        {"agent": a, "charged": _num(charged.get(a, 0.0)), "burn_per_hour": _num(burn.get(a, 0.0))}
        for a in sorted(set(charged) | set(burn))
    ]
    return _frame(rows, AGENT_COLUMNS)


def expenses(snapshot: Snapshot) -> pd.DataFrame:
    """The ledger's expenses per currency and kind (long form)."""
    ledger = (snapshot or {}).get("ledger") or {}
    rows = [
        {"currency": ccy, "kind": kind, "amount": _num(x)}
        for ccy, kinds in sorted((ledger.get("expenses") or {}).items())
        for kind, x in sorted(kinds.items())
    ]
    return _frame(rows, ["currency", "kind", "amount"])


def budgets(snapshot: Snapshot) -> pd.DataFrame:
    ledger = (snapshot or {}).get("ledger") or {}
    rows = [
        {**b, "fraction_pct": _num(b.get("fraction")) * 100} for b in ledger.get("budgets") or []
    ]
    return _frame(rows, BUDGET_COLUMNS)


def costs(snapshot: Snapshot) -> pd.DataFrame:
    """Execution costs per currency (long form: currency, component, amount)."""
    rows = [
        {"currency": ccy, "component": k, "amount": _num(c.get(k))}
        for ccy, c in sorted(((snapshot or {}).get("costs") or {}).items())
        for k in ("fee", "spread", "slippage", "delay")
        if k in c
    ]
    df = _frame(rows, ["currency", "component", "amount"])
    df["amount"] = df["amount"].astype("float64")
    return df


# -- runs ---------------------------------------------------------------------------------------
def report_url(report: str | None, runs_dir: str | Path, *, prefix: str = "reports") -> str | None:
    """Where the dashboard serves a run's report: ``<prefix>/<path relative to runs_dir>``.

    `report` is absolute, or relative to the runs folder's parent (``runs/DAY/ID/report.html``)
    or to the runs folder itself.
    """
    if not report:
        return None
    root = Path(runs_dir).resolve()
    path = Path(report)
    candidates = [path] if path.is_absolute() else [root.parent / path, root / path]
    for cand in candidates:
        try:
            rel = cand.resolve().relative_to(root)
        except ValueError:
            continue
        return f"{prefix}/{rel.as_posix()}"
    return None


def runs(records: Iterable[Any], runs_dir: str | Path) -> pd.DataFrame:
    """Run records (`quantlab.runs.RunRecord`) → rows with the report's URL."""
    rows = []
    for r in records:
        rows.append(
            {
                "run_id": r.run_id,
                "status": r.status,
                "started_at": r.started_at,
                "duration_s": r.duration_s,
                "notebook": Path(r.notebook).name if r.notebook else "",
                "report": report_url(r.report, runs_dir),
                "error": (r.error or "")[:200],
            }
        )
    return _frame(rows, RUN_COLUMNS)


def runs_html(df: pd.DataFrame) -> str:
    """The runs as an HTML table, each report linked."""
    head = "".join(f"<th>{c}</th>" for c in RUN_COLUMNS)
    body = []
    for row in df.itertuples(index=False):
        cells = []
        for col, value in zip(RUN_COLUMNS, row, strict=True):
            if col == "report":
                cell = (
                    f'<a href="{html.escape(value)}" target="_blank">report</a>' if value else "—"
                )
            elif col == "duration_s":
                cell = "" if value is None or value != value else f"{value:,.1f}"
            elif col == "started_at" and value is not None:
                cell = html.escape(pd.Timestamp(value).strftime("%Y-%m-%d %H:%M:%S"))
            else:
                cell = html.escape("" if value is None else str(value))
            cells.append(f"<td>{cell}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(RUN_COLUMNS)}">no production runs yet</td></tr>')
    rows = "".join(body)
    return f'<table class="ql-runs"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def age_s(snapshot: Snapshot) -> float | None:
    if not snapshot:
        return None
    return time.time() - float(snapshot.get("written_at", 0))
