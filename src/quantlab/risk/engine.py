"""`RiskEngine`: every order intent is checked before it may leave (``orders.new`` ->
``orders.approved`` | ``orders.denied``).

It consumes market data (marks, staleness, the VaR return window, equity), fills and the
closing order events (exposure, equity, venue rejections), runs the limit checks of
`check` in the order of `quantlab.risk.limits.REASONS`, and drives the `CircuitBreaker`,
publishing its `BreakerEvent`s on ``risk.breaker`` (on HALTED the execution engine cancels
every open order).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

import numpy as np
import polars as pl

from quantlab.bus import topics
from quantlab.bus.base import Bus, Envelope
from quantlab.bus.idempotent import IdempotentConsumer
from quantlab.core.clock import Clock, datetime_to_ns, ns_to_datetime
from quantlab.core.enums import BreakerState, EventType, OrderStatus, Side
from quantlab.core.errors import BusError, ValidationError
from quantlab.core.exposure import ExposureBook
from quantlab.core.instruments import InstrumentBook
from quantlab.core.messages import Fill, MarketBatch, Order, OrderDenied, OrderEvent
from quantlab.core.schemas import PRICE_COLUMN
from quantlab.risk.book import OpenSides
from quantlab.risk.breaker import BreakerChange, BreakerConfig, CircuitBreaker
from quantlab.risk.equity import EquityTracker
from quantlab.risk.limits import Denial, RiskLimits, check_limits, check_values
from quantlab.risk.throttle import Throttle
from quantlab.risk.var import VarConfig, VarModel

log = logging.getLogger(__name__)

HISTORY = 1000  # breaker changes and denials kept for reports

_CLOSING_EVENTS = ("rejected", "canceled", "expired")
_ALL_KINDS = (EventType.BAR, EventType.TRADE, EventType.QUOTE)
_NS = 1_000_000_000


class RiskEngine:
    """The pre-trade risk manager on the bus.

    Parameters
    ----------
    limits
        Per-order and per-symbol limits, staleness, collar and throttle (`RiskLimits`).
    instruments
        Quote currency per symbol; a symbol none can be derived for is ``unknown_symbol``.
    clock
        The engine's clock: staleness, throttle, loss and error windows all run on it, so a
        backtest's simulated clock gives the same decisions as the live run.
    var
        VaR settings (`VarConfig`); default: historical 99%, computed but not enforced.
    breaker
        Circuit-breaker settings (`BreakerConfig`) or a ready `CircuitBreaker`; default: in
        memory, error-rate trigger only.
    kinds
        Market-data batch kinds to read marks from (default: bars, trades and quotes; a
        quote's mark is its mid).
    """

    name = "risk"

    def __init__(
        self,
        limits: RiskLimits,
        instruments: InstrumentBook,
        clock: Clock,
        *,
        var: VarConfig | None = None,
        breaker: BreakerConfig | CircuitBreaker | None = None,
        kinds: Iterable[EventType] = _ALL_KINDS,
    ) -> None:
        self.limits = limits
        self.instruments = instruments
        self.clock = clock
        self.kinds = tuple(kinds)
        self.book = ExposureBook()
        self.sides = OpenSides()
        self.breaker = (
            breaker if isinstance(breaker, CircuitBreaker) else CircuitBreaker(breaker, clock)
        )
        self.var_config = var or VarConfig()
        self.var = VarModel(self.var_config)
        self.throttle = (
            Throttle(limits.rate_per_s, limits.burst) if limits.rate_per_s is not None else None
        )
        self.equity = EquityTracker()
        self.marks: dict[str, float] = {}
        self.last_ts: dict[str, int] = {}
        # Each symbol's rows of the newest batch: (times, prices), for marks as of an order.
        self._recent: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._quotes: dict[str, str] = {}
        self._stale_ns = (
            round(limits.stale_after_s * _NS) if limits.stale_after_s is not None else None
        )
        self._now = 0
        self._bus: Bus | None = None
        self._pending: list[BreakerChange] = []
        self._watcher: asyncio.Task[None] | None = None
        self.approved = 0
        self.denied: Counter[str] = Counter()
        self.blocked: dict[str, str] = {}  # strategy id -> why it may not trade
        self.breaker_events = 0
        # The latest breaker changes and denials, for reports and dashboards (bounded).
        self.breaker_history: deque[dict[str, str]] = deque(maxlen=HISTORY)
        self.recent_denials: deque[dict[str, str]] = deque(maxlen=HISTORY)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self, bus: Bus) -> None:
        self._bus = bus
        bus.consume(topics.orders("new"), IdempotentConsumer(self._on_order), name=self.name)
        bus.consume(topics.orders("filled"), self._on_fill, name=f"{self.name}.fills")
        for event in _CLOSING_EVENTS:
            bus.consume(
                topics.orders(event),
                IdempotentConsumer(self._on_closed),
                name=f"{self.name}.{event}",
            )
        for kind in self.kinds:
            bus.consume(
                topics.market_data(kind), self._on_market, name=f"{self.name}.{kind.topic_name}"
            )
        pending, self._pending = self._pending, []
        await self._publish(tuple(pending))
        if self.breaker.path is not None:
            self._watcher = asyncio.get_running_loop().create_task(
                self._watch(), name=f"{self.name}.breaker-watch"
            )

    async def stop(self) -> None:
        task, self._watcher = self._watcher, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        """Apply a kill or reset written by another process even when no order arrives."""
        period = max(self.breaker.config.watch_s, 0.01)
        while True:
            await asyncio.sleep(period)
            try:  # the kill switch must keep working: log, never let the watch die
                await self._publish(self.breaker.poll(force=True))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("watching the breaker state file %s failed", self.breaker.path)

    # -- the check -------------------------------------------------------------------------
    def check(self, order: Order) -> Denial | None:
        """The first limit `order` breaks, or None: synchronous and side-effect free (a
        throttle token is only taken when the order is approved), so it can be timed alone.

        Order: ``halted``, ``budget_exhausted`` (a strategy whose budget ran out),
        ``bad_quantity``, ``bad_price``, ``unknown_symbol``,
        ``stale_data``, ``reduce_only``, ``order_quantity``, ``order_notional``,
        ``price_collar``, ``position_limit``, ``rate_limit``, ``var_limit``.
        """
        record = self.breaker.record
        state = record.state
        symbol = order.symbol
        if state is BreakerState.HALTED:
            return Denial(
                "halted",
                f"{symbol}: breaker HALTED since {record.timestamp.isoformat()} "
                f"({record.trigger}: {record.reason}); order {order.client_order_id} refused",
            )
        if self.blocked and order.strategy_id in self.blocked:
            return Denial(
                "budget_exhausted",
                f"{symbol}: strategy {order.strategy_id!r} stopped: "
                f"{self.blocked[order.strategy_id]}; order {order.client_order_id} refused",
            )
        denial = check_values(order)
        if denial is not None:
            return denial
        quote = self._quotes.get(symbol)
        if quote is None:
            try:
                quote = self.instruments[symbol].quote
            except ValidationError as exc:
                return Denial("unknown_symbol", f"{symbol}: no instrument: {exc}")
            self._quotes[symbol] = quote
        mark = self.marks.get(symbol)
        if mark is None:
            return Denial(
                "unknown_symbol",
                f"{symbol}: no market data seen for it; cannot value order {order.client_order_id}",
            )
        self._now = now = self.clock.now_ns()
        if self._stale_ns is not None:
            last = self.last_ts[symbol]
            if now - last > self._stale_ns:
                return Denial(
                    "stale_data",
                    f"{symbol}: last market data at {ns_to_datetime(last).isoformat()} is "
                    f"{(now - last) / _NS:.3f}s old > stale_after_s "
                    f"{self.limits.stale_after_s:g}s",
                )
        exposure = self.book.exposure(symbol)
        signed = order.quantity if order.side is Side.BUY else -order.quantity
        if state is BreakerState.REDUCING and abs(exposure + signed) > abs(exposure):
            return Denial(
                "reduce_only",
                f"{symbol}: breaker REDUCING ({record.trigger}: {record.reason}); "
                f"{order.side.value} {order.quantity:f} would take position {exposure:f} to "
                f"{exposure + signed:f}",
            )
        gross = None
        if self.limits.max_gross_notional is not None:
            gross = self.sides.gross(symbol, self.book.position(symbol))
        mid = self.mark_at(symbol, order.timestamp) if symbol in self._recent else mark
        denial = check_limits(order, exposure, self.limits, quote, mid=mid, gross=gross)
        if denial is not None:
            return denial
        throttle = self.throttle
        if throttle is not None and not throttle.available(order.strategy_id, now):
            return Denial(
                "rate_limit",
                f"strategy {order.strategy_id}: more than {throttle.rate_per_s:g} orders/s "
                f"(burst {throttle.burst}); order {order.client_order_id} on {symbol} refused",
            )
        limit = self.var_config.limit
        if limit is not None and self.var.ready:
            col = self.var.window.columns.get(symbol)
            if col is not None:
                pre, post = self.var.incremental(col, float(signed) * mid)
                if post > limit and post > pre:
                    cfg = self.var_config
                    return Denial(
                        "var_limit",
                        f"{symbol}: portfolio {cfg.method} VaR {cfg.confidence:.0%} would be "
                        f"{post:.8g} {quote} (now {pre:.8g}, incremental {post - pre:+.8g}) "
                        f"> limit {limit:g} {quote}",
                    )
        return None

    # -- handlers ----------------------------------------------------------------------------
    async def _on_order(self, envelope: Envelope) -> None:
        bus = self._bus
        if bus is None:
            raise BusError("RiskEngine received an order before start()")
        if self.breaker.path is not None:
            await self._publish(self.breaker.poll())
        order: Order = envelope.payload
        denial = self.check(order)
        if denial is not None:
            self.denied[denial.reason] += 1
            self.recent_denials.append(
                {
                    "timestamp": self.clock.now().isoformat(),
                    "strategy_id": order.strategy_id,
                    "symbol": order.symbol,
                    "side": order.side.value,
                    "reason": denial.reason,
                    "detail": denial.detail,
                }
            )
            await bus.publish(
                topics.orders("denied"),
                OrderDenied(
                    order=order,
                    reason=denial.reason,
                    detail=denial.detail,
                    timestamp=self.clock.now(),
                ),
                msg_id=f"{order.client_order_id}:denied",
            )
            if denial.reason == "rate_limit":
                await self._publish(self.breaker.record_error(self._now, "rate_limit"))
            return
        if self.throttle is not None:
            self.throttle.consume(order.strategy_id, self._now)
        self.book.add_order(order)
        self.sides.add(order)
        self._sync_var(order.symbol)
        self.approved += 1
        await bus.publish(topics.orders("approved"), order, msg_id=order.client_order_id)

    def seed(self, open_orders: list[Order], fills: list[Fill]) -> None:
        """Rebuild the exposure and equity books from the order book of record (a restart):
        the open orders first, then every fill, as if they had come over the bus."""
        for order in open_orders:
            self.book.add_order(order)
            self.sides.add(order)
        for fill in fills:
            if self.book.apply_fill(fill):
                self.sides.fill(fill)
                try:
                    base: str | None = self.instruments[fill.symbol].base
                except ValidationError:
                    base = None
                self.equity.apply(fill, base)

    async def _on_fill(self, envelope: Envelope) -> None:
        fill: Fill = envelope.payload
        if not self.book.apply_fill(fill):
            return  # seen before
        self.sides.fill(fill)
        try:
            base: str | None = self.instruments[fill.symbol].base
        except ValidationError:
            base = None
        self.equity.apply(fill, base)
        self._sync_var(fill.symbol)
        equity = self.equity.equity(self.marks)
        await self._publish(self.breaker.on_equity(equity, self.clock.now_ns()))

    async def _on_closed(self, envelope: Envelope) -> None:
        event: OrderEvent = envelope.payload
        self.book.close_order(event.client_order_id)
        self.sides.close(event.client_order_id)
        self._sync_var(event.symbol)
        if event.status is OrderStatus.REJECTED:
            await self._publish(self.breaker.record_error(self.clock.now_ns(), "venue_reject"))

    async def _on_market(self, envelope: Envelope) -> None:
        batch = envelope.payload
        if not isinstance(batch, MarketBatch) or batch.frame.height == 0:
            return
        # Batches are small and frequent (a flush every few ms), so the columns are taken
        # once as numpy and the rest is numpy and dict look-ups: no DataFrame-level or
        # lazy-engine call, each of which costs a fixed 20-500 us whatever the batch size.
        frame = batch.frame
        prices = _prices(batch.kind, frame)
        ts = _epoch_ns(frame.get_column("timestamp"))
        window = self.var.window
        known = window.n
        symbols = frame.get_column("symbol").to_list()
        distinct = dict.fromkeys(symbols)  # the batch's few symbols
        if len(distinct) == 1:
            cols = np.full(len(symbols), window.column(symbols[0]), np.int64)
        else:
            mapping = {s: window.column(s) for s in distinct}
            cols = np.fromiter(map(mapping.__getitem__, symbols), np.int64, len(symbols))
        valid = np.isfinite(prices) & (prices > 0)
        if not valid.all():
            cols, ts, prices = cols[valid], ts[valid], prices[valid]
            if cols.size == 0:
                return
        # The newest row per symbol sets its mark and last-seen time (rows are time-ordered
        # per symbol; older data than already seen never moves a mark back).
        names = window.symbols
        if cols[0] == cols[-1] and (cols == cols[0]).all():  # one symbol
            self._set_mark(names[int(cols[0])], ts, prices)
        else:
            by_col = np.argsort(cols, kind="stable")
            sorted_cols = cols[by_col]
            sorted_ts, sorted_prices = ts[by_col], prices[by_col]
            bounds = (np.flatnonzero(sorted_cols[1:] != sorted_cols[:-1]) + 1).tolist()
            starts = [0, *bounds]
            ends = [*bounds, sorted_cols.size]
            for col, start, end in zip(sorted_cols[starts].tolist(), starts, ends, strict=True):
                self._set_mark(names[col], sorted_ts[start:end], sorted_prices[start:end])
        for symbol in names[known:]:  # new columns: VaR learns what is already held
            self._sync_var(symbol)
        window.update(cols, ts, prices)
        self.var.prices_changed()
        if self.equity.holds:
            equity = self.equity.equity(self.marks)
            await self._publish(self.breaker.on_equity(equity, self.clock.now_ns()))

    def _set_mark(self, symbol: str, ts: np.ndarray, prices: np.ndarray) -> None:
        """One symbol's rows of a batch (time-ordered): its mark, last time and recent rows,
        unless its newest row is older than what was already seen."""
        t = int(ts[-1])
        if t >= self.last_ts.get(symbol, t):
            self.last_ts[symbol] = t
            self.marks[symbol] = float(prices[-1])
            self._recent[symbol] = (ts, prices)

    def mark_at(self, symbol: str, when: dt.datetime) -> float:
        """The symbol's price as of `when` if the newest batch covers it, else its newest.

        Orders are valued at the market their strategy saw: in a backtest one batch holds
        many bars and an order from an early bar must not be priced at the batch's last.
        """
        recent = self._recent.get(symbol)
        if recent is not None:
            ts, prices = recent
            t = datetime_to_ns(when)
            if t < ts[-1]:
                i = int(np.searchsorted(ts, t, side="right")) - 1
                if i >= 0:
                    return float(prices[i])
        return self.marks[symbol]

    def _sync_var(self, symbol: str) -> None:
        col = self.var.window.columns.get(symbol)
        if col is not None:
            self.var.set_quantity(col, float(self.book.exposure(symbol)))

    # -- the breaker -------------------------------------------------------------------------
    async def _publish(self, changes: tuple[BreakerChange, ...]) -> None:
        if not changes:
            return
        if self._bus is None:
            self._pending.extend(changes)
            return
        for change in changes:
            event = change.event
            log.warning(
                "circuit breaker %s -> %s (%s): %s",
                event.previous.value,
                event.state.value,
                event.trigger,
                event.reason,
            )
            self.breaker_events += 1
            self.breaker_history.append(
                {
                    "timestamp": event.timestamp.isoformat(),
                    "previous": event.previous.value,
                    "state": event.state.value,
                    "trigger": event.trigger,
                    "reason": event.reason,
                }
            )
            await self._bus.publish(topics.risk("breaker"), event, msg_id=change.msg_id)

    async def halt(self, trigger: str, reason: str) -> None:
        """HALTED by an outside decision; reconciliation calls ``halt("reconciliation", ...)``
        on a position mismatch (it fits `quantlab.execution.engine.Halt`)."""
        await self._publish(self.breaker.halt(trigger, reason))

    def block_strategy(self, strategy_id: str, reason: str) -> None:
        """Stop one strategy (its budget is exhausted): its orders are denied
        ``budget_exhausted``; the others trade on."""
        self.blocked[strategy_id] = reason

    async def kill(self, reason: str) -> None:
        """The manual kill switch: HALTED."""
        await self._publish(self.breaker.kill(reason))

    async def reset(self, reason: str) -> None:
        """Back to ACTIVE: a person's decision, the only way down."""
        await self._publish(self.breaker.reset(reason))

    # -- reporting ---------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        var: dict[str, Any] = {
            "method": self.var_config.method,
            "confidence": self.var_config.confidence,
            "limit": self.var_config.limit,
            "ready": self.var.ready,
            "rows": self.var.window.count,
            "symbols": self.var.window.n,
        }
        if self.var.ready:
            var.update(self.var.report())
        return {
            "approved": self.approved,
            "denied": dict(self.denied),
            "breaker": self.breaker.stats(),
            "breaker_events": self.breaker_events,
            "breaker_history": list(self.breaker_history),
            "recent_denials": list(self.recent_denials),
            "var": var,
            "cash": float(self.equity.cash),
            "throttle": self.throttle.stats() if self.throttle is not None else None,
        }


def _prices(kind: EventType, frame: pl.DataFrame) -> np.ndarray:
    """The batch's mark per row as float64 (a quote's mid): NaN where one is missing."""
    if kind is EventType.QUOTE:
        bid, ask = frame.get_column("bid"), frame.get_column("ask")
        if bid.dtype == pl.Float64 and ask.dtype == pl.Float64:  # the schema's: numpy
            mid: np.ndarray = (bid.to_numpy() + ask.to_numpy()) / 2.0
            return mid
        return ((bid + ask) / 2.0).cast(pl.Float64).to_numpy()
    return frame.get_column(PRICE_COLUMN[kind]).cast(pl.Float64).to_numpy()


def _epoch_ns(timestamps: pl.Series) -> np.ndarray:
    """Event times as int64 ns since the epoch."""
    dtype = timestamps.dtype
    if isinstance(dtype, pl.Datetime) and dtype.time_unit == "ns" and not timestamps.null_count():
        return timestamps.cast(pl.Int64).to_numpy()  # the physical value: no compute
    return timestamps.dt.epoch("ns").to_numpy()
