"""The `Node`: the one composition root. It wires bus, stages and adapters for a mode.

Backtest: simulated clock, replay source, paper venue, lockstep ingestion (each batch's
consequences settle before the next batch). The same components serve the other modes; only
the clock, the sources and the venue differ.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import polars as pl

from quantlab.adapters.sim import PaperVenue, ReplaySource
from quantlab.bus.component import Component
from quantlab.bus.memory import InProcessBus
from quantlab.config import Settings
from quantlab.core.clock import SimulatedClock
from quantlab.core.enums import TimeInForce
from quantlab.core.errors import QuantlabError
from quantlab.core.instruments import InstrumentBook
from quantlab.engine.result import RunResult, RunSummary
from quantlab.execution import ExecutionEngine, OrderBuilder, OrderTracker, Router
from quantlab.features import CrossoverFeatures, FeatureEngine
from quantlab.ingest import IngestEngine
from quantlab.portfolio import SettlementEngine
from quantlab.risk import RiskEngine, RiskLimits
from quantlab.signals import EmaCross, StrategyContext, StrategyEngine
from quantlab.storage.deadletter import DeadLetterFile
from quantlab.storage.sql.engine import make_engine, upgrade
from quantlab.storage.sql.store import SqlOrderStore

Progress = Callable[[int, int], None]


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
    bars
        Bars to replay instead of ``settings.data`` (a frame in the bar schema).
    run_dir
        Where the run writes its database, dead letters and summary; default
        ``<runs_dir>/<YYYY-MM-DD>/<run_id>``.
    progress
        Called as ``progress(rows_done, rows_total)`` while data is replayed.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        bars: pl.DataFrame | None = None,
        run_dir: str | Path | None = None,
        run_id: str | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.settings = settings
        self.run_id = run_id or new_run_id()
        day = dt.datetime.now(dt.UTC).date().isoformat()
        self.run_dir = Path(run_dir or Path(settings.storage.runs_dir) / day / self.run_id)
        self.progress = progress
        s = settings
        self.source = ReplaySource(
            paths=None if bars is not None else list(s.data.paths),
            frame=bars,
            symbols=s.data.symbols,
            start=s.data.start,
            end=s.data.end,
            chunk_rows=max(s.ingest.batch_size, 10_000),
        )
        self.clock = SimulatedClock()
        self.bus = InProcessBus()
        self.instruments = InstrumentBook(s.execution.tick_size, s.execution.lot_size)
        self.db_url = s.storage.db_url or f"sqlite:///{self.run_dir / 'quantlab.db'}"
        self.dead_letters = DeadLetterFile(self.run_dir / "rejected.parquet")
        total = self.source.total_rows or 0
        self.ingest = IngestEngine(
            [self.source],
            clock=self.clock,
            batch_size=s.ingest.batch_size,
            flush_ms=s.ingest.flush_ms,
            lockstep=True,
            reject_sink=self.dead_letters,
            progress=(lambda n: progress(n, total)) if progress else None,
        )
        self.features = FeatureEngine(CrossoverFeatures(s.features.fast, s.features.slow))
        self.strategies = StrategyEngine(
            [EmaCross(s.features.fast, s.features.slow, strategy_id=s.strategy.id)],
            StrategyContext(clock=self.clock, assumed_spread_bps=s.execution.assumed_spread_bps),
        )
        self.builder = OrderBuilder(
            self.instruments,
            order_notional=s.execution.order_notional,
            time_in_force=TimeInForce(s.execution.time_in_force),
        )
        self.risk = RiskEngine(
            RiskLimits(
                max_position_notional=s.risk.max_position_notional,
                max_order_notional=s.risk.max_order_notional,
            ),
            self.instruments,
            self.clock,
        )
        self.venue = PaperVenue(
            self.instruments,
            maker_fee_bps=s.execution.maker_fee_bps,
            taker_fee_bps=s.execution.taker_fee_bps,
        )
        self.settlement = SettlementEngine(self.instruments)
        # A backtest's own database is scratch (the run can be recomputed): no fsync per commit.
        self._sql = make_engine(self.db_url, durable=s.storage.db_url is not None)
        self.store = SqlOrderStore(self._sql)
        self.execution = ExecutionEngine(
            Router([self.venue], default=self.venue.name), OrderTracker(self.store)
        )
        self.components: list[Component] = [
            self.venue,
            self.features,
            self.strategies,
            self.builder,
            self.risk,
            self.execution,
            self.settlement,
            self.ingest,
        ]

    def run(self) -> RunResult:
        """Run to the end of the data (blocking); see `run_async`."""
        return asyncio.run(self.run_async())

    async def run_async(self, *, strict: bool = True) -> RunResult:
        """Run to the end of the data and return the result.

        With `strict`, a stage that raised (its message was dead-lettered after retries)
        fails the run with an `EngineError` once the data are through.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        upgrade(self._sql)
        started = dt.datetime.now(dt.UTC)
        t0 = time.perf_counter()
        try:
            for component in self.components:
                await component.start(self.bus)
            await self.ingest.run()
            await self.bus.drain()
            for component in self.components:
                await component.stop()
        finally:
            await self.bus.close()
            self.dead_letters.flush()
        wall = time.perf_counter() - t0
        errors = self.bus.handler_errors
        if strict and errors:
            stage, exc = errors[0]
            raise EngineError(
                f"stage {stage!r} failed {len(errors)} time(s); first: {type(exc).__name__}: {exc}"
            ) from exc
        result = self._result(started, wall)
        (self.run_dir / "summary.json").write_bytes(result.summary.to_json())
        self._sql.dispose()
        return result

    def _result(self, started: dt.datetime, wall: float) -> RunResult:
        ingest = self.ingest.stats()
        orders = self.store.orders_frame()
        fills = self.store.fills_frame()
        summary = RunSummary(
            run_id=self.run_id,
            mode="backtest",
            started_at=started.isoformat(),
            data=list(self.settings.data.paths),
            symbols=len(self.source.symbols),
            events=ingest["rows_in"],
            events_accepted=ingest["rows_accepted"],
            rejected=ingest["rejected"],
            batches=ingest["batches"],
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
            dead_letters=len(self.bus.dead_letters),
            run_dir=str(self.run_dir),
            database=self._sql.url.render_as_string(hide_password=True),
        )
        return RunResult(
            summary=summary,
            orders=orders,
            fills=fills,
            positions=self.settlement.positions_frame(),
            run_dir=self.run_dir,
        )
