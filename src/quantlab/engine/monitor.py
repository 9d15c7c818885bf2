"""The monitor snapshot: what a running engine shares with the dashboard in other processes.

`MonitorWriter` is a bus component of a live `Node`. It follows market data, orders, fills,
denials, signals, expert weights and breaker events on the bus, and every
``live.monitor_every_s`` it writes one JSON document, atomically (temp file, fsync-free
rename), to ``<state_dir>/<paper|live>/monitor.json``: the engine's heartbeat and status, per
symbol the last price, spread and volume with a short history, positions and PnL with an
equity history, open orders, recent fills, order-state counts, rejects and denials with their
reasons, the latest signals (pattern neighbours included), expert weights over time, risk
(limit usage, VaR against its limit, the breaker and its history), pipeline health (events/s,
rejects, reconnects, lag per source, per-stage latency against the budget) and costs (the
ledger by agent, budgets and burn rate). On a clean stop it writes a last one with status
``stopped``. `read_snapshot` reads it back (None if absent or half-written).

The order book of record stays in SQL; this file is a view, rebuilt from scratch by every
engine start, so losing it loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import os
import socket
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import polars as pl

from quantlab.bus import topics
from quantlab.bus.base import Bus, Envelope
from quantlab.core.messages import (
    BreakerEvent,
    ExpertWeights,
    Fill,
    MarketBatch,
    OrderDenied,
    OrderEvent,
    Signal,
)
from quantlab.core.process import pid_alive

log = logging.getLogger(__name__)

HISTORY = 120  # points of price history per symbol in the snapshot
RECENT = 200  # fills, signals, rejects kept
EQUITY_POINTS = 600  # equity history (one point per write)
SCHEMA = 1

_PRICE_COLUMNS = {
    "quote": ("bid", "ask", "bid_size", "ask_size"),
    "trade": ("price", "size"),
    "bar": ("close", "volume"),
}


def _f(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


async def _cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel a periodic task and wait until it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class _Symbol:
    __slots__ = ("ask", "bid", "history", "kind", "last", "ts", "volume")

    def __init__(self) -> None:
        self.last: float | None = None
        self.bid: float | None = None
        self.ask: float | None = None
        self.volume = 0.0
        self.ts = 0
        self.kind = ""
        self.history: deque[tuple[int, float, float | None, float]] = deque(maxlen=HISTORY)


class MonitorWriter:
    """Keeps the dashboard's view of a running engine and writes it every `every_s` seconds.

    Parameters
    ----------
    path
        The snapshot file (``<state_dir>/<trading>/monitor.json`` for a live node).
    every_s
        Seconds between writes.
    collect
        Called at each write for the figures the engine holds itself (status, positions,
        PnL, risk, latency, ledger...); its dict is merged into the snapshot.
    """

    name = "monitor"

    def __init__(
        self, path: str | Path, *, every_s: float, collect: Callable[[], dict[str, Any]]
    ) -> None:
        if every_s <= 0:
            raise ValueError(f"monitor every_s must be > 0, got {every_s!r}")
        self.path = Path(path)
        self.every_s = every_s
        self.collect = collect
        self.symbols: dict[str, _Symbol] = {}
        self.order_states: Counter[str] = Counter()
        self.fills: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.rejects: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.reject_reasons: Counter[str] = Counter()
        self.signals: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.weights: dict[str, deque[dict[str, Any]]] = {}
        self.breaker: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.equity: deque[dict[str, Any]] = deque(maxlen=EQUITY_POINTS)
        self.charged: deque[tuple[float, dict[str, float]]] = deque(maxlen=EQUITY_POINTS)
        self.writes = 0
        self.write_errors = 0
        # The latest figures of each other role of a multi-process engine (`FigurePublisher`).
        self.roles: dict[str, dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self._started = dt.datetime.now(dt.UTC)

    # -- bus ----------------------------------------------------------------------------
    async def start(self, bus: Bus) -> None:
        bus.consume(topics.ALL_MARKET_DATA, self._on_market, name=f"{self.name}.market")
        bus.consume("orders.*", self._on_order, name=f"{self.name}.orders")
        bus.consume(topics.ALL_SIGNALS, self._on_signal, name=f"{self.name}.signals")
        bus.consume("weights.*", self._on_weights, name=f"{self.name}.weights")
        bus.consume(topics.risk("breaker"), self._on_breaker, name=f"{self.name}.breaker")
        bus.consume(topics.system("metric"), self._on_metric, name=f"{self.name}.metrics")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._started = dt.datetime.now(dt.UTC)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="monitor-writer")

    async def stop(self) -> None:
        await _cancel(self._task)
        self._task = None
        self.write(status="stopped")

    async def _loop(self) -> None:
        while True:
            self.write(status="running")
            await asyncio.sleep(self.every_s)

    async def _on_market(self, envelope: Envelope) -> None:
        batch = envelope.payload
        if not isinstance(batch, MarketBatch) or batch.frame.height == 0:
            return
        kind = batch.kind.topic_name
        cols = _PRICE_COLUMNS.get(kind)
        frame = batch.frame
        if cols is None or not set(cols) <= set(frame.columns):
            return
        for symbol, ts, first, ask, total in _latest(frame, kind, cols):
            sym = self.symbols.get(symbol)
            if sym is None:
                sym = self.symbols[symbol] = _Symbol()
            spread: float | None = None
            price: float | None
            if kind == "quote":
                bid, ask = _f(first), _f(ask)
                if bid is None or ask is None:
                    continue
                sym.bid, sym.ask = bid, ask
                price, spread = (bid + ask) / 2, ask - bid
                volume = 0.0
            else:
                price = _f(first)
                if price is None:
                    continue
                volume = _f(total) or 0.0
                sym.volume += volume
                if sym.bid is not None and sym.ask is not None:
                    # Quoted: the price shown is the mid (a trade prints at the bid or the
                    # ask, and a line through both would only draw the spread).
                    price, spread = (sym.bid + sym.ask) / 2, sym.ask - sym.bid
            ts = int(ts)
            if ts < sym.ts:
                continue  # an older event of another kind: the chart's time only moves forward
            sym.last, sym.ts, sym.kind = price, ts, kind
            sym.history.append((ts, price, spread, volume))

    async def _on_order(self, envelope: Envelope) -> None:
        msg = envelope.payload
        status = envelope.topic.rsplit(".", 1)[-1]
        self.order_states[status] += 1
        if isinstance(msg, Fill):
            self.fills.append(
                {
                    "timestamp": msg.timestamp.isoformat(),
                    "symbol": msg.symbol,
                    "side": msg.side.value,
                    "quantity": float(msg.quantity),
                    "price": float(msg.price),
                    "fee": float(msg.fee),
                    "venue": msg.venue,
                    "client_order_id": msg.client_order_id,
                }
            )
        elif isinstance(msg, OrderDenied):
            self.reject_reasons[f"risk: {msg.reason}"] += 1
            self.rejects.append(
                {
                    "timestamp": msg.timestamp.isoformat(),
                    "symbol": msg.order.symbol,
                    "source": "risk",
                    "reason": msg.reason,
                    "detail": msg.detail,
                }
            )
        elif isinstance(msg, OrderEvent) and status in ("rejected", "unknown"):
            self.reject_reasons[f"venue: {status}"] += 1
            self.rejects.append(
                {
                    "timestamp": msg.timestamp.isoformat(),
                    "symbol": msg.symbol,
                    "source": f"venue {msg.venue}",
                    "reason": status,
                    "detail": msg.reason,
                }
            )

    async def _on_signal(self, envelope: Envelope) -> None:
        s: Signal = envelope.payload
        meta = s.metadata
        self.signals.append(
            {
                "timestamp": s.timestamp.isoformat(),
                "strategy_id": s.strategy_id,
                "symbol": s.symbol,
                "side": s.side.value,
                "strength": s.strength,
                "confidence": s.confidence,
                "mid": s.mid,
                "pattern_neighbours": [
                    n for n in meta.get("pattern_neighbours", "").split(",") if n
                ],
                "pattern_similarity": [
                    float(x) for x in meta.get("pattern_similarities", "").split(",") if x
                ],
                "pattern_outcomes": [
                    float(x) for x in meta.get("pattern_outcomes", "").split(",") if x
                ],
            }
        )

    async def _on_weights(self, envelope: Envelope) -> None:
        w: ExpertWeights = envelope.payload
        history = self.weights.setdefault(w.strategy_id, deque(maxlen=EQUITY_POINTS))
        history.append({"timestamp": w.timestamp.isoformat(), "rounds": w.rounds, **w.weights})

    async def _on_metric(self, envelope: Envelope) -> None:
        report = envelope.payload
        if isinstance(report, dict) and report.get("kind") == ROLE_FIGURES_KIND:
            role = report.get("role")
            if isinstance(role, str):
                self.roles[role] = report

    async def _on_breaker(self, envelope: Envelope) -> None:
        e: BreakerEvent = envelope.payload
        self.breaker.append(
            {
                "timestamp": e.timestamp.isoformat(),
                "previous": e.previous.value,
                "state": e.state.value,
                "trigger": e.trigger,
                "reason": e.reason,
            }
        )

    # -- the snapshot ------------------------------------------------------------------------
    def snapshot(self, status: str) -> dict[str, Any]:
        now = time.time()
        extra = self.collect()
        pnl = extra.get("pnl", {})
        self.equity.append({"t": now, **{ccy: float(v.get("total", 0)) for ccy, v in pnl.items()}})
        charged = {k: float(v) for k, v in (extra.get("charged") or {}).items()}
        self.charged.append((now, charged))
        burn = {}
        first_t, first = self.charged[0]
        for i in range(len(self.charged) - 1, -1, -1):  # the point ~60 s back, or the first
            if now - self.charged[i][0] >= 60:
                first_t, first = self.charged[i]
                break
        span = now - first_t
        if span > 0:
            burn = {k: (v - first.get(k, 0.0)) / span * 3600 for k, v in charged.items()}
        markets = {
            name: {
                "last": s.last,
                "bid": s.bid,
                "ask": s.ask,
                "spread": None if s.bid is None or s.ask is None else s.ask - s.bid,
                "volume": s.volume,
                "ts": s.ts,
                "kind": s.kind,
                "history": [list(p) for p in s.history],
            }
            for name, s in sorted(self.symbols.items())
        }
        return {
            "schema": SCHEMA,
            "status": status,
            "pid": os.getpid(),
            "written_at": now,
            "engine_started": self._started.isoformat(),
            **extra,
            "markets": markets,
            "order_states": dict(self.order_states),
            "fills": list(self.fills),
            "rejects": list(self.rejects),
            "reject_reasons": dict(self.reject_reasons),
            "signals": list(self.signals)[-50:],
            "weights": {k: list(v) for k, v in self.weights.items()},
            "breaker_history": list(self.breaker),
            "equity": list(self.equity),
            "burn_per_hour": burn,
        }

    def write(self, status: str = "running") -> None:
        """Write the snapshot atomically; a failure is logged and counted, never raised."""
        try:
            data = msgspec.json.encode(self.snapshot(status))
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, self.path)
            self.writes += 1
        except Exception as exc:  # the dashboard's view must never stop the engine
            self.write_errors += 1
            if self.write_errors <= 3:
                log.warning(
                    "monitor snapshot %s not written: %s: %s", self.path, type(exc).__name__, exc
                )


def _latest(
    frame: pl.DataFrame, kind: str, cols: tuple[str, ...]
) -> list[tuple[Any, Any, Any, Any, Any]]:
    """Per symbol, in order of first appearance: (symbol, last timestamp in ns, last price
    (the bid for quotes), last ask (quotes), sum of the volume column (trades, bars)).

    Small batches are read row by row from the columns (a Polars ``group_by`` is a query with
    a fixed cost of hundreds of µs). The volume sum is taken that way only where it is exact
    by any order of summation (at most two rows per symbol); otherwise ``group_by`` sums it,
    as Polars always has.
    """
    symbols = frame.get_column("symbol").to_list()
    last = {name: i for i, name in enumerate(symbols)}  # first-appearance order, last row
    quote = kind == "quote"
    rows_per_symbol_ok = quote or len(symbols) == len(last)
    if not rows_per_symbol_ok and len(symbols) <= 2 * len(last):
        rows_per_symbol_ok = max(Counter(symbols).values()) <= 2
    if rows_per_symbol_ok:
        stamps = frame.get_column("timestamp").cast(pl.Datetime("ns", "UTC")).cast(pl.Int64)
        ts = stamps.to_list()
        first = frame.get_column(cols[0]).to_list()
        if quote:
            ask = frame.get_column("ask").to_list()
            return [(name, ts[i], first[i], ask[i], None) for name, i in last.items()]
        sizes = frame.get_column(cols[-1]).to_list()
        totals: dict[Any, float] = {}
        for name, size in zip(symbols, sizes, strict=True):
            if size is not None:
                totals[name] = totals[name] + size if name in totals else size
        return [(name, ts[i], first[i], None, totals.get(name, 0.0)) for name, i in last.items()]
    grouped = frame.group_by("symbol", maintain_order=True).agg(  # one query
        pl.col("timestamp").cast(pl.Datetime("ns", "UTC")).cast(pl.Int64).last(),
        pl.col(cols[0]).last(),
        pl.col(cols[-1]).sum().alias("__volume"),
    )
    return [(name, ts, price, None, total) for name, ts, price, total in grouped.iter_rows()]


ROLE_FIGURES_KIND = "role_figures"


class FigurePublisher:
    """A role process's figures, on ``system.metric`` every `every_s` seconds, for the
    monitor of the process that writes the snapshot (the execution role)."""

    def __init__(
        self,
        role: str,
        run_id: str,
        *,
        every_s: float,
        collect: Callable[[], dict[str, Any]],
        fingerprint: dict[str, str] | None = None,
    ) -> None:
        if every_s <= 0:
            raise ValueError(f"every_s must be > 0, got {every_s!r}")
        self.name = f"figures.{role}"
        self.role = role
        self.run_id = run_id
        self.fingerprint = fingerprint or {}
        self.every_s = every_s
        self.collect = collect
        self.published = 0
        self.errors = 0
        self._bus: Bus | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, bus: Bus) -> None:
        self._bus = bus
        await self.publish("starting")  # at once: the others check who joined (deployment)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        await _cancel(self._task)
        self._task = None
        await self.publish("stopped")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            await self.publish("running")

    async def publish(self, status: str) -> None:
        """Publish one report; a failure is logged and counted, never raised."""
        if self._bus is None:
            return
        try:
            await self._bus.publish(
                topics.system("metric"),
                {
                    "kind": ROLE_FIGURES_KIND,
                    "role": self.role,
                    "run_id": self.run_id,
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "status": status,
                    "written_at": time.time(),
                    "fingerprint": self.fingerprint,
                    "figures": self.collect() if status != "starting" else {},
                },
            )
            self.published += 1
        except Exception as exc:  # the figures must never stop the role
            self.errors += 1
            if self.errors <= 3:
                log.warning("%s: figures not published: %s: %s", self.name, type(exc).__name__, exc)


def read_snapshot(path: str | Path) -> dict[str, Any] | None:
    """The snapshot at `path`, or None if there is none (or it cannot be read)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    try:
        out = msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):  # bad UTF-8, too deep
        return None
    return out if isinstance(out, dict) and out.get("schema") == SCHEMA else None


def engine_running(snapshot: dict[str, Any] | None, *, stale_after_s: float = 5.0) -> bool:
    """Whether the engine that wrote `snapshot` is running now (fresh heartbeat, live pid).

    A snapshot whose ``written_at`` or ``pid`` is missing or not a number (a hand-edited or
    foreign file) is not a running engine.
    """
    if not snapshot or snapshot.get("status") != "running":
        return False
    written_at, pid = snapshot.get("written_at"), snapshot.get("pid")
    if isinstance(written_at, bool) or not isinstance(written_at, int | float):
        return False
    if isinstance(pid, bool) or not isinstance(pid, int):
        return False
    if not time.time() - written_at <= stale_after_s:  # also False for a NaN time
        return False
    return pid_alive(pid)
