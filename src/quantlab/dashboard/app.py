# mypy: disable-error-code="no-untyped-call"
"""The live dashboard (Panel + HoloViews/Bokeh): eight tabs following the engine's snapshot.

`create_dashboard()` builds one browser session's page. Each session polls the snapshot file
every ``dashboard.refresh_ms`` (the file itself is decoded once per change, shared by all
sessions), updates the header and the visible tab, and stops polling when the session ends.
Charts stream: the price chart appends only the new history points (`holoviews.streams.Buffer`),
the others are pushed through `Pipe` only when their data changed, and the fills table grows
with `Tabulator.stream`.
"""

from __future__ import annotations

import contextlib
import html
import logging
import time
from pathlib import Path
from typing import Any

import holoviews as hv
import pandas as pd
import panel as pn
from holoviews.streams import Buffer, Pipe

from quantlab.config import Settings, load_settings
from quantlab.dashboard import data
from quantlab.engine.monitor import read_snapshot

log = logging.getLogger(__name__)

TABS = ("markets", "portfolio", "orders", "signals", "risk", "pipeline", "costs", "runs")
PRICE_POINTS = 2000  # points kept by the price chart of the selected symbol
RUNS_EVERY_S = 10.0

_CSS = """
.ql-status { padding: 6px 12px; border-radius: 4px; font-weight: 600; }
.ql-running { background: #e3f6e5; color: #17612a; border: 1px solid #8fd19e; }
.ql-stopped { background: #fff4e0; color: #8a5300; border: 1px solid #f0c36d; }
.ql-none { background: #eeeeee; color: #444444; border: 1px solid #bbbbbb; }
table.ql-runs, table.ql-kv { border-collapse: collapse; font-size: 13px; }
table.ql-runs td, table.ql-runs th, table.ql-kv td, table.ql-kv th {
  border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
"""


class _SnapshotCache:
    """Decode the snapshot file once per change, whatever the number of sessions."""

    def __init__(self) -> None:
        self._key: tuple[str, int, int] | None = None
        self._value: dict[str, Any] | None = None

    def get(self, path: Path) -> dict[str, Any] | None:
        try:
            st = path.stat()
        except OSError:
            self._key, self._value = None, None
            return None
        key = (str(path), st.st_mtime_ns, st.st_size)
        if key != self._key:
            value = read_snapshot(path)
            if (
                value is None
                and self._value is not None
                and self._key
                and self._key[0] == str(path)
            ):
                return self._value  # caught mid-write (should not happen: renames are atomic)
            self._key, self._value = key, value
        return self._value


_CACHE = _SnapshotCache()


def snapshot_path(settings: Settings) -> Path:
    return Path(settings.storage.state_dir) / settings.dashboard.trading / "monitor.json"


def _table(df: pd.DataFrame, height: int = 260, **kw: Any) -> pn.widgets.Tabulator:
    return pn.widgets.Tabulator(
        df,
        show_index=False,
        height=height,
        sizing_mode="stretch_width",
        disabled=True,
        layout="fit_data_fill",
        **kw,
    )


def _set(table: pn.widgets.Tabulator, df: pd.DataFrame) -> None:
    """Replace a table's rows only when they changed."""
    current = table.value
    if current is None or not df.equals(current):
        table.value = df


def _pane(obj: Any, height: int = 260) -> pn.pane.HoloViews:
    return pn.pane.HoloViews(obj, sizing_mode="stretch_width", height=height, linked_axes=False)


class _PipeChart:
    """A chart fed by a `Pipe`: `update(df)` pushes only when the data changed."""

    def __init__(self, empty: pd.DataFrame, build: Any, height: int = 260, **opts: Any) -> None:
        self.pipe = Pipe(data=empty)
        self._last: pd.DataFrame = empty
        dmap = hv.DynamicMap(build, streams=[self.pipe]).opts(
            framewise=True, responsive=True, height=height, **opts
        )
        self.pane = _pane(dmap, height)

    def update(self, df: pd.DataFrame) -> None:
        if not df.equals(self._last):
            self._last = df
            self.pipe.send(df)


class _MultiLine:
    """Lines keyed by a column; the plot is rebuilt only when the set of keys changes."""

    def __init__(self, x: str, y: str, by: str, height: int = 260, title: str = "") -> None:
        self.x, self.y, self.by, self.height, self.title = x, y, by, height, title
        self.keys: tuple[str, ...] | None = None
        self.pipe: Pipe | None = None
        self._last: pd.DataFrame | None = None
        self.pane = _pane(None, height)
        self.update(pd.DataFrame({x: pd.Series(dtype="datetime64[ns]"), y: [], by: []}))

    def _build(self, data: pd.DataFrame) -> hv.NdOverlay:
        keys = self.keys or ("",)
        curves = {}
        for k in keys:
            part = data[data[self.by] == k] if self.keys else data
            curves[k] = hv.Curve(part, self.x, self.y)
        return hv.NdOverlay(curves, kdims=[self.by])

    def update(self, df: pd.DataFrame) -> None:
        keys = tuple(sorted(df[self.by].astype(str).unique()))
        if keys != self.keys:
            self.keys = keys
            self.pipe = Pipe(data=df)
            dmap = hv.DynamicMap(self._build, streams=[self.pipe]).opts(
                hv.opts.NdOverlay(framewise=True, responsive=True, height=self.height,
                                  title=self.title, legend_position="right"),
            )  # fmt: skip
            self.pane.object = dmap
            self._last = df
        elif self.pipe is not None and (self._last is None or not df.equals(self._last)):
            self._last = df
            self.pipe.send(df)


def _bars(kdims: list[str], vdim: str, title: str, height: int = 260, **opts: Any) -> _PipeChart:
    empty = pd.DataFrame({**{k: pd.Series(dtype=str) for k in kdims}, vdim: pd.Series(dtype=float)})
    return _PipeChart(
        empty,
        lambda data: hv.Bars(data, kdims, vdim).opts(title=title, tools=["hover"], **opts),
        height,
    )


def _fmt(x: Any, spec: str = ",.6f") -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "—"
    return "—" if v != v else format(v, spec)


def _kv(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    return f'<table class="ql-kv"><tbody>{cells}</tbody></table>'


class Dashboard:
    """One session's dashboard: widgets, charts, and `refresh()` which re-reads the snapshot."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self.path = snapshot_path(self.settings)
        self.snapshot: dict[str, Any] | None = None
        self._run_id: Any = None
        self._fill_keys: set[tuple[Any, ...]] = set()
        self._runs_at = 0.0
        self.header = pn.pane.HTML("", sizing_mode="stretch_width", stylesheets=[_CSS])
        self.pages = {
            "markets": self._markets(),
            "portfolio": self._portfolio(),
            "orders": self._orders(),
            "signals": self._signals(),
            "risk": self._risk(),
            "pipeline": self._pipeline(),
            "costs": self._costs(),
            "runs": self._runs(),
        }
        self.tabs = pn.Tabs(*self.pages.items(), dynamic=False, sizing_mode="stretch_width")
        self.tabs.param.watch(lambda _e: self.refresh(read=False), "active")
        self.layout = pn.Column(
            self.header, self.tabs, sizing_mode="stretch_width", stylesheets=[_CSS]
        )
        self.refresh()

    # -- pages -----------------------------------------------------------------------------
    def _markets(self) -> pn.viewable.Viewable:
        self.symbol = pn.widgets.Select(label="symbol", options=[], width=220)
        self.symbol.param.watch(lambda _e: self._update_markets(), "value")
        self._shown_symbol: str | None = None
        self._last_ns: int | None = None
        empty = data.history(None, None)
        self.prices = Buffer(empty, length=PRICE_POINTS, index=False)

        def line(y: str, title: str, height: int) -> hv.DynamicMap:
            return hv.DynamicMap(
                lambda data: hv.Curve(data, "ts", y).opts(title=title, tools=["hover"]),
                streams=[self.prices],
            ).opts(framewise=True, responsive=True, height=height)

        self.last_price = pn.pane.HTML("", stylesheets=[_CSS])
        self.market_table = _table(data.markets(None), height=300)
        return pn.Column(
            pn.Row(self.symbol, self.last_price),
            _pane(line("price", "price (mid or last trade)", 300), 300),
            pn.Row(
                _pane(line("spread", "spread", 220), 220),
                _pane(line("volume", "traded volume per update", 220), 220),
                sizing_mode="stretch_width",
            ),
            pn.pane.Markdown("**all symbols**"),
            self.market_table,
            sizing_mode="stretch_width",
        )

    def _portfolio(self) -> pn.viewable.Viewable:
        self.currency = pn.widgets.Select(label="currency", options=[], width=160)
        self.pnl_numbers = {
            k: pn.indicators.Number(label=k, value=0.0, format="{value:,.6f}", font_size="20pt",
                                    title_size="11pt")
            for k in ("realized", "unrealized", "fees", "total")
        }  # fmt: skip
        empty = data.equity(None, None)
        self.equity_chart = _PipeChart(
            empty, lambda data: hv.Curve(data, "t", "equity").opts(title="equity (PnL total)",
                                                                   tools=["hover"])
        )  # fmt: skip
        self.drawdown_chart = _PipeChart(
            empty,
            lambda data: hv.Area(data, "t", "drawdown").opts(title="drawdown", color="#d62728",
                                                             alpha=0.5, tools=["hover"]),
        )  # fmt: skip
        self.positions_table = _table(data.positions(None))
        return pn.Column(
            pn.Row(self.currency, *self.pnl_numbers.values()),
            pn.Row(self.equity_chart.pane, self.drawdown_chart.pane, sizing_mode="stretch_width"),
            pn.pane.Markdown("**positions**"),
            self.positions_table,
            sizing_mode="stretch_width",
        )

    def _orders(self) -> pn.viewable.Viewable:
        self.open_orders_table = _table(data.open_orders(None), height=180)
        self.fills_table = _table(data.fills(None), height=300, css_classes=["ql-fills"])
        self.states_chart = _bars(["state"], "count", "order states")
        self.states_table = _table(data.order_states(None), height=220)
        self.rejects_table = _table(data.rejects(None), height=220)
        self.order_reasons_table = _table(data.reject_reasons(None), height=220)
        return pn.Column(
            pn.pane.Markdown("**open orders**"),
            self.open_orders_table,
            pn.pane.Markdown("**recent fills**"),
            self.fills_table,
            pn.Row(self.states_chart.pane, self.states_table, sizing_mode="stretch_width"),
            pn.pane.Markdown("**rejects and denials**"),
            pn.Row(self.rejects_table, self.order_reasons_table, sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )

    def _signals(self) -> pn.viewable.Viewable:
        self.signals_table = _table(data.signals(None), height=300)
        self.weights_chart = _MultiLine(
            "timestamp", "weight", "expert", title="Hedge weights per expert"
        )
        self.neighbours_title = pn.pane.Markdown("**pattern neighbours of the latest signal**")
        self.neighbours_table = _table(data.neighbours(None), height=220)
        return pn.Column(
            pn.pane.Markdown("**latest signals**"),
            self.signals_table,
            self.weights_chart.pane,
            self.neighbours_title,
            self.neighbours_table,
            sizing_mode="stretch_width",
        )

    def _risk(self) -> pn.viewable.Viewable:
        self.usage_chart = _bars(["symbol"], "usage_pct", "limit usage per symbol (%)")
        self.usage_table = _table(data.usage(None), height=220)
        self.breaker_html = pn.pane.HTML("", stylesheets=[_CSS])
        self.var_html = pn.pane.HTML("", stylesheets=[_CSS])
        self.breaker_table = _table(data.breaker_history(None), height=200)
        return pn.Column(
            pn.Row(self.breaker_html, self.var_html),
            pn.Row(self.usage_chart.pane, self.usage_table, sizing_mode="stretch_width"),
            pn.pane.Markdown("**breaker history**"),
            self.breaker_table,
            sizing_mode="stretch_width",
        )

    def _pipeline(self) -> pn.viewable.Viewable:
        self.pipeline_html = pn.pane.HTML("", stylesheets=[_CSS])
        self.rate_chart = _bars(["source"], "events_per_s", "events/s per source")
        self.sources_table = _table(data.sources(None), height=160)
        self.processes_table = _table(data.processes(None), height=140)
        self.reasons_table = _table(data.reject_reasons(None), height=200)
        self.latency_chart = _bars(
            ["stage", "budget"], "ms", "stage latency vs spec and goal (ms)", height=320,
            xrotation=20,
        )  # fmt: skip
        self.latency_table = _table(data.latency(None), height=240)
        return pn.Column(
            self.pipeline_html,
            pn.Row(self.rate_chart.pane, self.sources_table, sizing_mode="stretch_width"),
            pn.pane.Markdown("**processes**"),
            self.processes_table,
            pn.pane.Markdown("**rejects by reason**"),
            self.reasons_table,
            self.latency_chart.pane,
            self.latency_table,
            sizing_mode="stretch_width",
        )

    def _costs(self) -> pn.viewable.Viewable:
        self.costs_html = pn.pane.HTML("", stylesheets=[_CSS])
        self.costs_chart = _bars(["currency", "component"], "amount", "execution costs")
        self.agents_table = _table(data.agents(None), height=180)
        self.expenses_table = _table(data.expenses(None), height=180)
        self.budgets_table = _table(data.budgets(None), height=180)
        return pn.Column(
            self.costs_html,
            pn.pane.Markdown("**ledger by agent (charged, burn per hour)**"),
            self.agents_table,
            pn.pane.Markdown("**expenses**"),
            self.expenses_table,
            pn.pane.Markdown("**budgets**"),
            self.budgets_table,
            self.costs_chart.pane,
            sizing_mode="stretch_width",
        )

    def _runs(self) -> pn.viewable.Viewable:
        self.runs_html = pn.pane.HTML(data.runs_html(data.runs([], ".")), stylesheets=[_CSS])
        self.runs_chart = _bars(["run_id"], "duration_s", "run durations (s)", xrotation=30)
        return pn.Column(
            pn.pane.Markdown("**production runs** (newest first; reports open in a new tab)"),
            self.runs_html,
            self.runs_chart.pane,
            sizing_mode="stretch_width",
        )

    # -- updates ---------------------------------------------------------------------------
    def refresh(self, read: bool = True) -> None:
        """Re-read the snapshot (unless `read` is false), update the header and the visible tab."""
        if read:
            self.snapshot = _CACHE.get(self.path)
        d = self.settings.dashboard
        state, text = data.status(self.snapshot, stale_after_s=d.stale_after_s)
        body = f'<div class="ql-status ql-{state}">{html.escape(text)}</div>'
        if self.header.object != body:
            self.header.object = body
        run_id = (self.snapshot or {}).get("run_id")
        if run_id != self._run_id:  # another engine run: the fills start over
            self._run_id = run_id
            self._fill_keys = set()
            self.fills_table.value = data.fills(None)
        name = TABS[self.tabs.active] if 0 <= self.tabs.active < len(TABS) else TABS[0]
        try:
            getattr(self, f"_update_{name}")()
        except Exception:  # a bad snapshot must not kill the session's callback
            log.exception("dashboard %s page update failed", name)

    def _update_markets(self) -> None:
        snap = self.snapshot
        syms = data.symbols(snap)
        if syms != list(self.symbol.options):
            self.symbol.options = syms
        if self.symbol.value not in syms:
            self.symbol.value = syms[0] if syms else None
            return  # the watcher on value calls us back
        sym = self.symbol.value
        if sym != self._shown_symbol:
            self._shown_symbol, self._last_ns = sym, None
            self.prices.clear()
            new = data.history(snap, sym)
            self.prices.send(new)
        else:
            new = data.history(snap, sym, after_ns=self._last_ns)
            if len(new):
                self.prices.send(new)
        last = data.last_ts(snap, sym)
        if last is not None:
            self._last_ns = last
        m = ((snap or {}).get("markets") or {}).get(sym or "") or {}
        self.last_price.object = (
            f'<b>{html.escape(sym or "—")}</b> last <span class="ql-last-price">'
            f"{_fmt(m.get('last'), ',.4f')}</span> bid {_fmt(m.get('bid'), ',.4f')} "
            f"ask {_fmt(m.get('ask'), ',.4f')} spread {_fmt(m.get('spread'), ',.4f')}"
        )
        _set(self.market_table, data.markets(snap))

    def _update_portfolio(self) -> None:
        snap = self.snapshot
        ccys = data.currencies(snap)
        if ccys != list(self.currency.options):
            self.currency.options = ccys
        if self.currency.value not in ccys:
            self.currency.value = ccys[0] if ccys else None
        pnl = data.pnl(snap)
        row = pnl[pnl["currency"] == self.currency.value]
        for k, number in self.pnl_numbers.items():
            value = float(row[k].iloc[0]) if len(row) else 0.0
            if number.value != value:
                number.value = value
        eq = data.equity(snap, self.currency.value)
        self.equity_chart.update(eq)
        self.drawdown_chart.update(eq)
        _set(self.positions_table, data.positions(snap))

    def _update_orders(self) -> None:
        snap = self.snapshot
        _set(self.open_orders_table, data.open_orders(snap))
        new = data.new_fills(snap, self._fill_keys)
        if len(new):
            self.fills_table.stream(new, rollover=1000, follow=True)
        states = data.order_states(snap)
        self.states_chart.update(states)
        _set(self.states_table, states)
        _set(self.rejects_table, data.rejects(snap))
        _set(self.order_reasons_table, data.reject_reasons(snap))

    def _update_signals(self) -> None:
        snap = self.snapshot
        _set(self.signals_table, data.signals(snap))
        self.weights_chart.update(data.weights(snap))
        _set(self.neighbours_table, data.neighbours(snap))

    def _update_risk(self) -> None:
        snap = self.snapshot
        b = data.breaker(snap)
        self.breaker_html.object = "<b>breaker</b>" + _kv(
            [
                ("state", b.get("state", "—")),
                ("trigger", b.get("trigger") or "—"),
                ("reason", b.get("reason") or "—"),
                ("since", b.get("since") or "—"),
                ("drawdown", _fmt(b.get("drawdown"))),
            ]
        )
        v = data.var(snap)
        risk = (snap or {}).get("risk") or {}
        self.var_html.object = "<b>value at risk</b>" + _kv(
            [
                ("method", f"{v.get('method', '—')} {v.get('confidence', '')}"),
                ("ready", "yes" if v["ready"] else f"no ({v.get('rows', 0)} rows)"),
                ("VaR", _fmt(v["value"])),
                ("limit", _fmt(v["limit"]) if v["limit"] is not None else "none"),
                ("use of limit", _fmt(v["usage"] * 100, ",.1f") + " %" if v["usage"] else "—"),
                (
                    "orders approved / denied",
                    f"{risk.get('approved', 0)} / {sum((risk.get('denied') or {}).values())}",
                ),
            ]
        )
        u = data.usage(snap)
        self.usage_chart.update(u[["symbol", "usage_pct"]].astype({"symbol": str}))
        _set(self.usage_table, u)
        _set(self.breaker_table, data.breaker_history(snap))

    def _update_pipeline(self) -> None:
        snap = self.snapshot or {}
        bus = snap.get("bus") or {}
        e2e = (snap.get("latency") or {}).get("data_to_order") or {}
        self.pipeline_html.object = _kv(
            [
                ("events", f"{snap.get('events', 0):,}"),
                ("events/s", _fmt(snap.get("events_per_s"), ",.1f")),
                ("batches", f"{snap.get('batches', 0):,}"),
                ("gaps", snap.get("gaps", 0)),
                (
                    "bus published / dead letters / handler errors",
                    f"{bus.get('published', 0):,} / {bus.get('dead_letters', 0)} / "
                    f"{bus.get('handler_errors', 0)}",
                ),
                (
                    "data → order p50 / p95 / p99 (ms)",
                    " / ".join(_fmt(e2e.get(k), ",.2f") for k in ("p50_ms", "p95_ms", "p99_ms")),
                ),
            ]
        )
        _set(self.processes_table, data.processes(self.snapshot))
        src = data.sources(self.snapshot)
        self.rate_chart.update(src[["source", "events_per_s"]].astype({"source": str}))
        _set(self.sources_table, src)
        _set(self.reasons_table, data.reject_reasons(self.snapshot))
        self.latency_chart.update(data.latency_bars(self.snapshot))
        _set(self.latency_table, data.latency(self.snapshot))

    def _update_costs(self) -> None:
        snap = self.snapshot or {}
        ledger = snap.get("ledger") or {}
        self.costs_html.object = _kv(
            [("ledger entries", ledger.get("entries", 0))]
            + [
                (f"costs {ccy}", _fmt(c.get("total")))
                for ccy, c in sorted((snap.get("costs") or {}).items())
            ]
        )
        _set(self.agents_table, data.agents(self.snapshot))
        _set(self.expenses_table, data.expenses(self.snapshot))
        _set(self.budgets_table, data.budgets(self.snapshot))
        self.costs_chart.update(data.costs(self.snapshot)[["currency", "component", "amount"]])

    def _update_runs(self) -> None:
        now = time.monotonic()
        if now - self._runs_at < RUNS_EVERY_S and self._runs_at:
            return
        self._runs_at = now
        runs_dir = Path(self.settings.storage.runs_dir)
        try:
            from quantlab.runs import RunRegistry

            registry = RunRegistry.from_settings(self.settings)
            try:
                records = registry.list(limit=50)
            finally:
                registry.close()
        except Exception as exc:
            log.warning("run registry unavailable: %s: %s", type(exc).__name__, exc)
            records = []
        df = data.runs(records, runs_dir)
        body = data.runs_html(df)
        if self.runs_html.object != body:
            self.runs_html.object = body
        durations = df[["run_id", "duration_s"]].copy()
        durations["duration_s"] = durations["duration_s"].astype("float64").fillna(0.0)
        self.runs_chart.update(durations.iloc[::-1].reset_index(drop=True))


def create_dashboard(settings: Settings | None = None) -> pn.viewable.Viewable:
    """The dashboard of one browser session; polls the snapshot while the session lives."""
    pn.extension("tabulator", notifications=False)
    hv.extension("bokeh", logo=False)
    board = Dashboard(settings)
    doc = pn.state.curdoc
    if doc is not None and doc.session_context is not None:
        cb = pn.state.add_periodic_callback(
            board.refresh, period=board.settings.dashboard.refresh_ms
        )

        def stop(_ctx: Any) -> None:
            with contextlib.suppress(Exception):
                cb.stop()

        pn.state.on_session_destroyed(stop)
    return board.layout
