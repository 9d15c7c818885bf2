"""The `Node`: the one composition root. It wires bus, stages and adapters for a mode.

* ``backtest``: simulated clock, replay source, paper venue, lockstep ingestion (each batch's
  consequences settle before the next batch is released): deterministic and causal.
* ``live``: wall clock, the configured sources (synthetic by default) in the multiplexer,
  the configured venues (the paper venue by default), batches flushed by size or time, every
  batch appended to the lake; runs until stopped (a signal, `stop()`, or `duration_s`). Its
  order database and risk state live in ``<storage.state_dir>/<paper|live>/`` so that a
  restart reconciles with the venues and keeps the breaker's state.

A run trades on paper unless ``trading="live"`` (`engine.venues` keeps the two apart).

A live node runs on the bus of ``bus.backend``: in-process (default), or Redis Streams, where
one `role` may run per process (``quantlab live --role``), on one machine or several:

* ``ingest``: the sources, quality checks and batching (and the lake writer): market data out;
* ``strategy``: features, sketches, strategies and the order builder: signals and orders out;
* ``execution``: risk, the venues, execution (with its outbox), costs, settlement and the
  ledger, and the monitor snapshot the dashboard follows;
* ``all``: every stage in one process (the default).

Roles without the monitor publish their own figures on ``system.metric`` every
``live.monitor_every_s``; the execution role's monitor merges them into the snapshot.

The stages are the same objects in both modes; only the clock, the sources and the pacing differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
import logging
import os
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

from quantlab.adapters.sim import ReplaySource
from quantlab.bus.component import Component
from quantlab.bus.memory import InProcessBus
from quantlab.bus.metrics import stages_from_summary
from quantlab.config import Settings
from quantlab.core.clock import Clock, SimulatedClock, WallClock
from quantlab.core.enums import BreakerState, TimeInForce
from quantlab.core.errors import BusError, QuantlabError
from quantlab.core.instruments import InstrumentBook
from quantlab.engine.deployment import DeploymentCheck, fingerprint
from quantlab.engine.monitor import FigurePublisher, MonitorWriter
from quantlab.engine.result import RunResult, RunSummary
from quantlab.engine.sources import build_backfill, build_sources
from quantlab.engine.strategies import build_strategy
from quantlab.engine.venues import Trading, build_venues
from quantlab.execution import ExecutionEngine, OrderBuilder, OrderTracker, Router
from quantlab.execution.sizing import FixedNotional, KellySizer, Sizer
from quantlab.features import Count, Ema, FeatureEngine, FeatureStore, get_spec
from quantlab.ingest import IngestEngine
from quantlab.ingest.backfill import Backfiller
from quantlab.ingest.multiplexer import Backoff
from quantlab.ingest.ports import MarketDataSource
from quantlab.ingest.quality import QualityConfig
from quantlab.portfolio import SettlementEngine
from quantlab.portfolio.costs import CostEngine
from quantlab.portfolio.ledger import Budget, BudgetAlert
from quantlab.portfolio.metering import CostMeter, Price
from quantlab.risk import BreakerConfig, RiskEngine, RiskLimits, VarConfig
from quantlab.signals import EmaCross, StrategyContext, StrategyEngine
from quantlab.signals.hedge_strategy import HedgeStrategy
from quantlab.signals.sketches import SketchEngine
from quantlab.storage.deadletter import DeadLetterFile
from quantlab.storage.lake import Lake
from quantlab.storage.lake_writer import LakeWriter
from quantlab.storage.signal_log import SignalLog, read_signals, signals_frame
from quantlab.storage.sql.engine import claim_trading_mode, make_engine, upgrade
from quantlab.storage.sql.outbox import SqlOutbox
from quantlab.storage.sql.portfolio_store import SqlPortfolioStore
from quantlab.storage.sql.store import SqlOrderStore

if TYPE_CHECKING:
    from quantlab.adapters.redis import RedisStreamsBus

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
Mode = Literal["backtest", "live"]
Role = Literal["all", "ingest", "strategy", "execution"]
ROLES: tuple[Role, ...] = ("all", "ingest", "strategy", "execution")
# The consumers from a market batch to the venue: a live in-process bus runs them first.
ORDER_PATH = (
    FeatureEngine.name,
    StrategyEngine.name,
    OrderBuilder.name,
    RiskEngine.name,
    ExecutionEngine.name,
)

# The monitor snapshot's figures each role owns (the rest belong to the execution role).
ROLE_FIGURES: dict[str, tuple[str, ...]] = {
    "ingest": (
        "events",
        "events_accepted",
        "events_per_s",
        "batches",
        "ingest_rejects",
        "gaps",
        "sources",
    ),
    "strategy": ("signals_total", "orders_total"),
}


class EngineError(QuantlabError):
    """A stage failed while the engine ran; the message names the stage and the error."""


def new_run_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


class Node:
    """Builds and runs the engine for one run.

    Parameters
    ----------
    settings
        The run's configuration.
    mode
        ``"backtest"`` (default) or ``"live"``.
    bars
        Backtest only: bars to replay instead of ``settings.data`` (a frame in the bar schema).
    sources
        Live only: sources to run instead of ``settings.live.sources``.
    run_dir
        Where the run writes its database, dead letters and summary; default
        ``<runs_dir>/<YYYY-MM-DD>/<run_id>``.
    progress
        Backtest: called as ``progress(rows_done, rows_total)`` while data is replayed.
    trading
        ``"paper"`` (default) or ``"live"`` (real money; live mode only, every venue must be
        a live endpoint with live credentials).
    role
        Live mode on the Redis bus: the stages this process runs (see the module doc).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        mode: Mode = "backtest",
        bars: pl.DataFrame | None = None,
        sources: list[MarketDataSource] | None = None,
        run_dir: str | Path | None = None,
        run_id: str | None = None,
        progress: Progress | None = None,
        trading: Trading = "paper",
        role: Role = "all",
    ) -> None:
        if mode not in ("backtest", "live"):
            raise QuantlabError(f"unknown mode {mode!r}; expected 'backtest' or 'live'")
        if trading == "live" and mode != "live":
            raise QuantlabError("live-money trading needs mode='live'; a backtest is paper only")
        if role not in ROLES:
            raise QuantlabError(f"unknown role {role!r}; expected one of {list(ROLES)}")
        if role != "all" and (mode != "live" or settings.bus.backend != "redis"):
            raise QuantlabError(
                f"role {role!r} runs one part of a live engine and needs the others on a shared "
                f"bus: use mode='live' with bus.backend = 'redis' (got mode={mode!r}, "
                f"bus.backend={settings.bus.backend!r})"
            )
        self.role: Role = role
        self.trading: Trading = trading
        self.settings = settings
        # Which code and settings this process runs (`engine.deployment`): reported at start,
        # with the role figures, in the snapshot and in the run's summary.
        self.fingerprint = fingerprint(settings)
        self.mode = mode
        self.run_id = run_id or new_run_id()
        day = dt.datetime.now(dt.UTC).date().isoformat()
        self.run_dir = Path(run_dir or Path(settings.storage.runs_dir) / day / self.run_id)
        s = settings
        self.clock: Clock
        self.replay = False
        backfill: Backfiller | None = None
        if mode == "backtest":
            self.clock = SimulatedClock()
            replay = ReplaySource(
                paths=None if bars is not None else list(s.data.paths),
                frame=bars,
                symbols=s.data.symbols,
                start=s.data.start,
                end=s.data.end,
                chunk_rows=max(s.ingest.batch_size, 10_000),
            )
            self.sources: list[MarketDataSource] = [replay]
            self.symbols = replay.symbols
            quality = QualityConfig(max_future_s=None, max_age_s=None)
        elif self._replays_only(s, sources):
            # Recorded data through the live code path: time is the data's (event time), the
            # book is scratch in the run folder, as in a backtest; batches flush by size or
            # wall time, and nothing waits for the bus between them.
            self.replay = True
            self.clock = SimulatedClock()
            self.sources = sources if sources is not None else build_sources(s, self.clock)
            self.symbols = []
            quality = QualityConfig(max_future_s=None, max_age_s=None)
        else:
            self.clock = WallClock()
            self.sources = sources if sources is not None else build_sources(s, self.clock)
            self.symbols = []
            quality = QualityConfig(max_future_s=s.live.max_future_s)
            # The configured sources' holes, healed in the lake from their venues' REST bars
            # (by the process that runs the sources and writes the lake).
            if sources is None and role in ("all", "ingest") and s.live.write_lake:
                backfill = build_backfill(s)
        # On the wall clock, with a book that outlives the process (restart reconciliation).
        self.on_wall_clock = mode == "live" and not self.replay
        self._redis: Any = None
        self.bus: InProcessBus | RedisStreamsBus = self._make_bus(settings, mode)
        self.instruments = InstrumentBook(s.execution.tick_size, s.execution.lot_size)
        # A backtest's book is scratch, in its run folder; a live run's book must outlive the
        # process (restart reconciliation), one per trading mode.
        self.state_dir = Path(s.storage.state_dir) / trading if self.on_wall_clock else self.run_dir
        self.db_url = s.storage.db_url or f"sqlite:///{self.state_dir / 'quantlab.db'}"
        self.dead_letters = DeadLetterFile(self.run_dir / "rejected.parquet")
        total = sum(src.total_rows or 0 for src in self.sources)
        self.ingest = IngestEngine(
            self.sources,
            clock=self.clock,
            batch_size=s.ingest.batch_size,
            flush_ms=s.ingest.flush_ms,
            lockstep=mode == "backtest",
            quality=quality,
            reject_sink=self.dead_letters,
            progress=(lambda n: progress(n, total)) if progress else None,
            backoff=Backoff(
                s.live.backoff_initial_s, max(s.live.backoff_max_s, s.live.backoff_initial_s)
            ),
            stale_after_s=s.live.stale_after_s if self.on_wall_clock else None,
            backfill=backfill,
        )
        # The configured spec, plus the windows the strategy reads if the spec lacks them.
        self.spec = get_spec(s.features.spec).with_indicators(
            ((Ema, {"n": s.features.fast}), (Ema, {"n": s.features.slow}), (Count, {"name": "n"}))
        )
        self.feature_store = FeatureStore(
            self.clock, ttl_s=s.features.ttl_s, max_symbols=s.features.max_symbols
        )
        self.features = FeatureEngine(self.spec, self.feature_store)
        # Only a process that runs the strategy builds it (and opens its pattern memory).
        self.strategy: EmaCross | HedgeStrategy | None = (
            build_strategy(s, feature_spec=get_spec(s.features.spec).id, run_dir=self.run_dir)
            if role in ("all", "strategy")
            else None
        )
        self.sketches = SketchEngine(self.feature_store)
        self.signal_log = SignalLog(self.run_dir / "signals.msgpack", fsync=mode == "live")
        self.strategies = StrategyEngine(
            [] if self.strategy is None else [self.strategy],
            StrategyContext(
                clock=self.clock,
                assumed_spread_bps=s.execution.assumed_spread_bps,
                features=self.feature_store,
            ),
            settle=mode == "backtest",
        )
        ex = s.execution
        sizer: Sizer = (
            KellySizer(
                capital=ex.capital,
                kelly_fraction=ex.kelly_fraction,
                cap=ex.kelly_cap,
                prior_win_loss=ex.prior_win_loss,
            )
            if ex.sizing == "kelly"
            else FixedNotional(ex.order_notional)
        )
        self.builder = OrderBuilder(
            self.instruments, sizer=sizer, time_in_force=TimeInForce(ex.time_in_force)
        )
        r = s.risk
        self.risk = RiskEngine(
            RiskLimits(
                max_position_notional=r.max_position_notional,
                max_order_notional=r.max_order_notional,
                max_gross_notional=r.max_gross_notional,
                max_order_quantity=r.max_order_quantity,
                collar_bps=r.collar_bps,
                stale_after_s=r.stale_after_s,
                rate_per_s=r.orders_per_s if self.on_wall_clock else None,
                burst=r.burst,
            ),
            self.instruments,
            self.clock,
            var=VarConfig(
                method=r.var_method,
                confidence=r.var_confidence,
                limit=r.var_limit,
                window=r.var_window,
                interval_s=r.var_interval_s,
            ),
            breaker=BreakerConfig(
                state_path=(
                    str(self.risk_state_path(s, trading)) if self.on_wall_clock else r.state_file
                ),
                max_drawdown_soft=r.max_drawdown_soft,
                max_drawdown_hard=r.max_drawdown_hard,
                loss_window_s=r.loss_window_s,
                max_window_loss_soft=r.max_window_loss_soft,
                max_window_loss_hard=r.max_window_loss_hard,
                error_window_s=r.error_window_s,
                max_errors=r.max_errors,
            ),
        )
        self.venues = build_venues(s, self.instruments, trading)
        self.venue = next(v for v in self.venues if v.name == ex.venue)
        self.portfolio_store: SqlPortfolioStore | None = None  # set once the SQL engine exists
        self.costs = CostEngine(self.instruments)
        self.settlement = SettlementEngine(
            self.instruments, base_currency=s.portfolio.base_currency, fx=dict(s.portfolio.fx)
        )
        ledger = self.settlement.ledger
        self.meter = CostMeter(
            ledger,
            [
                Price(
                    agent=c.agent,
                    kind=c.kind,
                    currency=c.currency,
                    per_event=c.per_event,
                    per_row=c.per_row,
                    per_call=c.per_call,
                    subscription=c.subscription,
                    period=dt.timedelta(days=c.period_days),
                )
                for c in s.ledger.costs
            ],
            self.clock,
            on_exhausted=self._budget_exhausted,
        )
        self.settlement.after_post = self.meter.check_alerts
        # A backtest's own database is scratch (the run can be recomputed): no fsync per commit.
        durable = self.on_wall_clock or s.storage.db_url is not None
        self._sql = make_engine(self.db_url, durable=durable)
        self._sql_status = (
            make_engine(self.db_url, synchronous="NORMAL")
            if durable and self.db_url.startswith("sqlite")
            else None
        )
        self.store = SqlOrderStore(self._sql, status_engine=self._sql_status)
        self.portfolio_store = SqlPortfolioStore(self._sql)
        self.costs.store = self.portfolio_store
        self.settlement.store = self.portfolio_store
        self.meter.store = self.portfolio_store
        self.execution = ExecutionEngine(
            Router(self.venues, default=ex.venue, routes=ex.routes),
            OrderTracker(self.store),
            clock=self.clock,
            not_found_grace_s=ex.not_found_grace_s,
            resolve_every_s=ex.resolve_every_s,
            reconcile=self.on_wall_clock,
            fills_lookback_s=ex.fills_lookback_s,
            halt=self.risk.halt,
            # A live book's events go through the outbox: published even across a crash.
            outbox=SqlOutbox(self._sql, mark_engine=self._sql_status)
            if self.on_wall_clock
            else None,
            data_to_order=self.on_wall_clock,
        )
        self.lake_writer: LakeWriter | None = None
        if self.on_wall_clock and s.live.write_lake:
            lake = Lake(s.storage.lake_root, cold_root=s.storage.lake_cold_root)
            self.lake_writer = LakeWriter(lake)
        runs_strategy = role in ("all", "strategy")
        runs_execution = role in ("all", "execution")
        # In the order they start (and stop): venues first, the ingestion last.
        strategy_part: list[Component] = [
            self.features,
            self.sketches,
            self.strategies,
            self.signal_log,
            self.builder,
        ]
        execution_part: list[Component] = [
            self.risk,
            self.execution,
            self.costs,
            self.settlement,
            self.meter,
        ]
        self.components: list[Component] = [
            *(v for v in self.venues if isinstance(v, Component) and runs_execution),
            *(strategy_part if runs_strategy else []),
            *(execution_part if runs_execution else []),
        ]
        if role in ("all", "ingest") and self.lake_writer is not None:
            self.components.append(self.lake_writer)
        # A live engine shares its state with the dashboard (`quantlab dashboard`): the process
        # that holds the book writes the snapshot; the other roles publish their figures.
        self.monitor: MonitorWriter | None = None
        self.reporter: FigurePublisher | None = None
        if self.on_wall_clock and role in ("all", "execution"):
            self.monitor = MonitorWriter(
                self.state_dir / "monitor.json",
                every_s=s.live.monitor_every_s,
                collect=self._monitor_figures,
            )
            self.components.append(self.monitor)
        elif self.on_wall_clock:
            self.reporter = FigurePublisher(
                role,
                self.run_id,
                every_s=s.live.monitor_every_s,
                collect=self._role_figures,
                fingerprint=self.fingerprint,
            )
            self.components.append(self.reporter)
        # The process that trades refuses to while another runs other code or settings.
        self.deployment: DeploymentCheck | None = None
        if self.on_wall_clock and role == "execution":
            self.deployment = DeploymentCheck(self.fingerprint, self.risk.halt)
            self.components.append(self.deployment)
        if role in ("all", "ingest"):
            self.components.append(self.ingest)
        self._stop = asyncio.Event()
        self._started: dt.datetime | None = None
        self._t0 = 0.0

    def _make_bus(self, settings: Settings, mode: Mode) -> InProcessBus | RedisStreamsBus:
        """The in-process bus, or (live, ``bus.backend = "redis"``) Redis Streams."""
        b = settings.bus
        if mode == "backtest":  # consumers take turns in message order: deterministic
            return InProcessBus()
        if b.backend == "memory":  # live: the order path before the other market-data work
            return InProcessBus(urgent=ORDER_PATH)
        try:
            import redis.asyncio as aioredis

            from quantlab.adapters.redis import RedisStreamsBus
        except ImportError as exc:  # pragma: no cover - the db extra is part of the test deps
            raise QuantlabError(
                "bus.backend = 'redis' needs the redis client: pip install 'quantlab[db]'"
            ) from exc
        password = settings.secrets.redis_password
        self._redis = aioredis.Redis.from_url(
            b.url, password=password.get_secret_value() if password else None
        )
        return RedisStreamsBus(
            self._redis,
            namespace=b.namespace,
            maxlen=b.maxlen,
            batch_size=b.batch_size,
            ack_timeout=b.ack_timeout_s,
            max_deliveries=b.max_deliveries,
        )

    async def _load_ledger(self) -> None:
        """The ledger of a live run goes on from what its database holds (a restart), then
        the budgets count that history: one exhausted before stops its agent again now."""
        ledger = self.settlement.ledger
        if self.on_wall_clock and self.portfolio_store is not None:
            ledger.post_all(self.portfolio_store.entries())
        for b in self.settings.ledger.budgets:
            history = ledger.add_budget(
                Budget(
                    currency=b.currency,
                    limit=b.limit,
                    agent=b.agent,
                    strategy=b.strategy,
                    period=dt.timedelta(days=b.period_days) if b.period_days else None,
                    alert_at=tuple(b.alert_at),
                )
            )
            for alert in history:
                if alert.exhausted:
                    await self._budget_exhausted(alert)

    async def _budget_exhausted(self, alert: BudgetAlert) -> None:
        """A budget ran out: a strategy's stops that strategy; any other agent's halts trading
        (its cost cannot be stopped from here)."""
        reason = (
            f"budget of {alert.agent} exhausted: spent {alert.spent} of {alert.limit} "
            f"{alert.currency}"
        )
        if alert.budget.strategy is not None:
            self.risk.block_strategy(alert.budget.strategy, reason)
        else:
            await self.risk.halt("budget", reason)

    @staticmethod
    def risk_state_path(settings: Settings, trading: Trading) -> Path:
        """Where a live run of `trading` keeps its breaker state (`risk.state_file` if set)."""
        if settings.risk.state_file:
            return Path(settings.risk.state_file)
        return Path(settings.storage.state_dir) / trading / "breaker.json"

    # -- running ---------------------------------------------------------------------------
    def run(self, *, duration_s: float | None = None) -> RunResult:
        """Run (blocking) to the end of the data, or in live mode until stopped."""
        return asyncio.run(self.run_async(duration_s=duration_s))

    def stop(self) -> None:
        """Ask a live run to stop: flush batches, settle, persist, summarise."""
        self._stop.set()

    async def run_async(
        self, *, duration_s: float | None = None, strict: bool | None = None
    ) -> RunResult:
        """Run and return the result.

        With `strict` (default in backtests), a stage that raised (its message was
        dead-lettered after retries) fails the run with an `EngineError` at the end; a live
        run keeps going and reports the errors in its summary instead.
        """
        strict = self.mode == "backtest" if strict is None else strict
        self._stop = asyncio.Event()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        upgrade(self._sql)
        claim_trading_mode(self._sql, self.trading)
        await self._load_ledger()
        self._started = dt.datetime.now(dt.UTC)
        self._t0 = time.perf_counter()
        try:
            for component in self.components:
                await component.start(self.bus)
            if self.on_wall_clock:
                # A restart: what the book of record holds (brought up to date by the
                # reconciliation) is exposure already, for the order builder and for risk.
                # Both books drop a fill they have seen, so one that also came over the bus
                # counts once.
                open_orders = [x.order for x in self.execution.tracker.open_orders()]
                fills = self.store.fills()
                self.builder.seed(open_orders, fills)
                self.risk.seed(open_orders, fills)
                self.settlement.seed(fills)
            if self.execution in self.components and (
                self.risk.breaker.state is BreakerState.HALTED
            ):
                # Halted before this process started (kill switch, a loss, a mismatch): the
                # open orders a restart found at the venues are canceled too.
                self.execution.halted = True
                await self.execution.cancel_all("breaker halted at start")
            stopped = asyncio.ensure_future(self._stop.wait())
            if self.ingest in self.components:
                ingest = asyncio.get_running_loop().create_task(self.ingest.run(), name="ingest")
                waiters = [ingest, stopped]
                await asyncio.wait(waiters, timeout=duration_s, return_when=asyncio.FIRST_COMPLETED)
                await self.ingest.stop()
                with contextlib.suppress(asyncio.CancelledError):
                    if not ingest.done():
                        await asyncio.wait_for(ingest, timeout=30)
                    elif ingest.exception() is not None:
                        raise ingest.exception()  # type: ignore[misc]
            else:  # a role without sources runs until it is stopped
                await asyncio.wait([stopped], timeout=duration_s)
            stopped.cancel()
            await self._drain()
            for component in self.components:
                await component.stop()
            await self._drain()
            state_file = self.settings.strategy.state_file
            if isinstance(self.strategy, HedgeStrategy) and state_file:
                self.strategy.save(state_file)  # the learnt weights survive a restart
        finally:
            for venue in self.venues:
                close = getattr(venue, "close", None)
                if close is not None:
                    with contextlib.suppress(Exception):
                        done = close()
                        if inspect.isawaitable(done):
                            await done
            await self.bus.close()
            if self._redis is not None:
                await self._redis.aclose()
            self.dead_letters.flush()
        wall = time.perf_counter() - self._t0
        errors = self.bus.handler_errors
        if strict and errors:
            stage, exc = errors[0]
            raise EngineError(
                f"stage {stage!r} failed {len(errors)} time(s); first: {type(exc).__name__}: {exc}"
            ) from exc
        result = self._result(wall)
        (self.run_dir / "summary.json").write_bytes(result.summary.to_json())
        self._sql.dispose()
        if self._sql_status is not None:
            self._sql_status.dispose()
        return result

    async def _drain(self) -> None:
        """Wait until what was published is handled. On Redis the consumers are other
        processes, which may have stopped first: what they left waits in Redis for their next
        start, so a drain that times out there is reported, not fatal."""
        if isinstance(self.bus, InProcessBus):
            await self.bus.drain(timeout=60)
            return
        try:
            await self.bus.drain(timeout=10)
        except BusError as exc:
            log.warning("%s: stopping with messages not yet handled elsewhere: %s", self.role, exc)

    def _role_figures(self) -> dict[str, Any]:
        """The figures this process owns as a role (see `ROLE_FIGURES`), its stages' latency
        and its bus counters: what a role publishes for the monitor, and part of it."""
        ingest = self.ingest.stats()
        wall = max(time.perf_counter() - self._t0, 1e-9) if self._t0 else 0.0
        return {
            "events": ingest["rows_in"],
            "events_accepted": ingest["rows_accepted"],
            "events_per_s": ingest["rows_in"] / wall if wall else 0.0,
            "batches": ingest["batches"],
            "ingest_rejects": ingest["rejected"],
            "gaps": ingest["gaps"],
            "sources": ingest["sources"],
            "signals_total": sum(self.strategies.signals.values()),
            "orders_total": self.builder.built,
            "latency": {
                "consumers": self.bus.latency.summary(),
                "since_data": self.bus.latency.since_data_summary(),
            },
            "bus": {
                "published": self.bus.published,
                "dead_letters": self.bus.dead_lettered,
                "handler_errors": len(self.bus.handler_errors),
            },
        }

    def _monitor_figures(self) -> dict[str, Any]:
        """What the monitor snapshot takes from the engine's stages (see `engine.monitor`),
        with the figures the other roles published (multi-process) in place of this
        process's."""
        own = self._role_figures()
        consumers = dict(own["latency"]["consumers"])
        since_data = dict(own["latency"]["since_data"])
        processes: dict[str, dict[str, Any]] = {
            self.role: {
                "pid": os.getpid(),
                "status": "running",
                "run_id": self.run_id,
                "fingerprint": self.fingerprint,
            }
        }
        for role, report in (self.monitor.roles if self.monitor is not None else {}).items():
            theirs = report.get("figures") or {}
            for key in ROLE_FIGURES.get(role, ()):
                if key in theirs:
                    own[key] = theirs[key]
            consumers.update((theirs.get("latency") or {}).get("consumers") or {})
            since_data.update((theirs.get("latency") or {}).get("since_data") or {})
            processes[role] = {
                k: report.get(k)
                for k in ("pid", "status", "run_id", "written_at", "host", "fingerprint")
            }
        risk = self.risk.stats()
        marks = self.monitor.symbols if self.monitor is not None else {}
        lim = self.settings.risk
        usage = []
        for symbol in sorted(marks):
            exposure = float(self.risk.book.exposure(symbol))
            price = marks[symbol].last or 0.0
            notional = abs(exposure) * price
            usage.append(
                {
                    "symbol": symbol,
                    "exposure": exposure,
                    "notional": notional,
                    "limit": float(lim.max_position_notional),
                    "usage": notional / float(lim.max_position_notional)
                    if lim.max_position_notional
                    else None,
                }
            )
        ledger = self.settlement.ledger
        now = self.clock.now()
        budgets = []
        for b in ledger.budgets:
            spent = ledger.spent(b, now)
            budgets.append(
                {
                    "agent": b.key,
                    "currency": b.currency,
                    "limit": float(b.limit),
                    "spent": float(spent),
                    "fraction": float(spent / b.limit) if b.limit else None,
                    "period_days": b.period.total_seconds() / 86400 if b.period else None,
                }
            )
        expenses = {
            ccy: {k: float(v) for k, v in parts.items()}
            for ccy, parts in self.settlement.ledger_summary()["expenses"].items()
        }
        open_orders = [
            {
                "client_order_id": x.order.client_order_id,
                "timestamp": x.order.timestamp.isoformat(),
                "strategy_id": x.order.strategy_id,
                "symbol": x.order.symbol,
                "side": x.order.side.value,
                "quantity": float(x.order.quantity),
                "price": None if x.order.price is None else float(x.order.price),
                "filled": float(x.filled),
                "status": x.status.value,
                "venue": x.venue,
            }
            for x in self.execution.tracker.open_orders()
        ]
        positions = [
            {k: (float(v) if isinstance(v, Decimal) else v) for k, v in row.items()}
            for row in self.settlement.positions_frame().iter_rows(named=True)
        ]
        return {
            "run_id": self.run_id,
            "mode": self.mode,
            "trading": self.trading,
            "role": self.role,
            "processes": processes,
            **{k: own[k] for k in (*ROLE_FIGURES["ingest"], *ROLE_FIGURES["strategy"])},
            "fills_total": self.execution.fills,
            "positions": positions,
            "open_orders": open_orders,
            "pnl": {
                ccy: {k: float(v) for k, v in parts.items()}
                for ccy, parts in self.settlement.pnl().items()
            },
            "risk": {
                "breaker": risk["breaker"],
                "var": risk["var"],
                "approved": risk["approved"],
                "denied": risk["denied"],
                "limits": {
                    name: None if getattr(lim, name) is None else float(getattr(lim, name))
                    for name in (
                        "max_position_notional",
                        "max_order_notional",
                        "max_gross_notional",
                        "var_limit",
                    )
                },
                "usage": usage,
            },
            "latency": {
                "stages": stages_from_summary(consumers),
                "consumers": consumers,
                "since_data": since_data,
                "data_to_order": self.execution.stats()["data_to_order"],
            },
            "bus": own["bus"],
            "ledger": {"entries": len(ledger), "expenses": expenses, "budgets": budgets},
            "charged": {k: float(v) for k, v in self.meter.charged.items()},
            "costs": {
                ccy: {k: float(v) for k, v in parts.items()}
                for ccy, parts in self.costs.totals().items()
            },
        }

    @staticmethod
    def _replays_only(settings: Settings, sources: list[MarketDataSource] | None) -> bool:
        if sources is not None:
            return bool(sources) and all(isinstance(src, ReplaySource) for src in sources)
        specs = settings.live.sources
        return bool(specs) and all(spec.type == "replay" for spec in specs)

    def status(self) -> dict[str, Any]:
        """Live figures while running (events, orders, fills, per-source metrics)."""
        ingest = self.ingest.stats()
        wall = max(time.perf_counter() - self._t0, 1e-9) if self._t0 else 0.0
        return {
            "events": ingest["rows_in"],
            "events_per_s": ingest["rows_in"] / wall if wall else 0.0,
            "batches": ingest["batches"],
            "rejected": sum(ingest["rejected"].values()),
            "signals": sum(self.strategies.signals.values()),
            "weights": dict(getattr(self.strategy, "weights", {})),
            "orders": self.builder.built,
            "fills": self.execution.fills,
            "sources": ingest["sources"],
        }

    def _result(self, wall: float) -> RunResult:
        ingest = self.ingest.stats()
        fills = self.store.fills_frame()
        symbols = self.symbols or sorted(
            {p.symbol for p in self.settlement.portfolio.positions.values()}
        )
        summary = RunSummary(
            run_id=self.run_id,
            mode=self.mode,
            started_at=(self._started or dt.datetime.now(dt.UTC)).isoformat(),
            data=[s.name for s in self.sources]
            if self.mode == "live"
            else list(self.settings.data.paths),
            symbols=len(symbols),
            events=ingest["rows_in"],
            events_accepted=ingest["rows_accepted"],
            rejected=ingest["rejected"],
            flagged=ingest["flagged"],
            gaps=ingest["gaps"],
            batches=ingest["batches"],
            feature_spec=self.spec.id,
            feature_rows=self.features.rows,
            signals=sum(self.strategies.signals.values()),
            orders=self.builder.built,
            approved=self.risk.approved,
            denied=dict(self.risk.denied),
            fills=fills.height,
            pnl=self.settlement.pnl(),
            wall_s=round(wall, 4),
            events_per_s=round(ingest["rows_in"] / wall, 1) if wall > 0 else 0.0,
            handler_errors=len(self.bus.handler_errors),
            dead_letters=self.bus.dead_lettered,
            run_dir=str(self.run_dir),
            database=self._sql.url.render_as_string(hide_password=True),
            sources=ingest["sources"] if self.mode == "live" else {},
            strategy=self.strategies.stats(),
            sketches=self.sketches.metrics(),
            risk=self.risk.stats(),
            pnl_base=self.settlement.in_base(),
            costs=self.costs.totals(),
            ledger={**self.settlement.ledger_summary(), **self.meter.stats()},
            execution=self.execution.stats(),
            latency={
                "consumers": self.bus.latency.summary(),
                "stages": self.bus.latency.stages(),
                "since_data": self.bus.latency.since_data_summary(),
            },
            role=self.role,
            fingerprint=self.fingerprint,
            deployment=self.deployment.stats() if self.deployment is not None else {},
        )
        weights = pl.DataFrame(
            [
                {"timestamp": w.timestamp, "rounds": w.rounds, **w.weights}
                for w in self.strategies.weights_history
            ]
        )
        return RunResult(
            summary=summary,
            orders=self.store.orders_frame(),
            fills=fills,
            positions=self.settlement.positions_frame(),
            run_dir=self.run_dir,
            signals=signals_frame(read_signals(self.signal_log.path)),
            weights=weights,
        )
