"""`StrategyEngine`: feature batches in, signals out on ``signals.<strategy>``.

A strategy that learns expert weights (it has ``weights_message(now)``) also has them
published on ``weights.<strategy>`` after every learning round, for the dashboard; the engine
keeps the history (`weights_history`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from quantlab.bus import topics
from quantlab.bus.base import Bus, Envelope
from quantlab.core.errors import BusError
from quantlab.core.messages import ExpertWeights, FeatureBatch
from quantlab.signals.strategy import Strategy, StrategyContext


class StrategyEngine:
    """Runs every strategy on every feature batch and publishes what they signal."""

    name = "strategies"

    def __init__(
        self, strategies: list[Strategy], ctx: StrategyContext, *, settle: bool = False
    ) -> None:
        ids = [s.strategy_id for s in strategies]
        if len(set(ids)) != len(ids):
            raise BusError(f"strategy ids must be unique, got {ids}")
        self.strategies = strategies
        self.ctx = ctx
        # Backtest: a batch holds many decision times. Before the signals of each time go
        # out, everything the earlier ones caused (orders, fills, cancels) is settled, as it
        # would be live, where those times are minutes apart.
        self.settle = settle
        self._bus: Bus | None = None
        self.signals: Counter[str] = Counter()
        self.weights_history: list[ExpertWeights] = []

    async def start(self, bus: Bus) -> None:
        self._bus = bus
        bus.consume(topics.features(), self._on_features, name=self.name)

    async def stop(self) -> None:
        return None

    async def _on_features(self, envelope: Envelope) -> None:
        batch: FeatureBatch = envelope.payload
        if self._bus is None:
            raise BusError("StrategyEngine received features before start()")
        settle = getattr(self._bus, "settle", None) if self.settle else None
        for strategy in self.strategies:
            at = None
            for decided in strategy.on_features(batch.frame, self.ctx):
                # The signal carries when its data was received (end-to-end latency).
                signal = (
                    msgspec.structs.replace(decided, ts_recv=batch.ts_recv)
                    if batch.ts_recv and not decided.ts_recv
                    else decided
                )
                if settle is not None and signal.timestamp != at:
                    await settle()
                    at = signal.timestamp
                self.signals[strategy.strategy_id] += 1
                await self._bus.publish(
                    topics.signals(strategy.strategy_id), signal, msg_id=str(signal.signal_id)
                )
            learn = getattr(strategy, "learn", None)
            if learn is not None:  # after the signals are out: off the decision path
                learn()
            weights_message = getattr(strategy, "weights_message", None)
            if weights_message is not None:
                update: ExpertWeights | None = weights_message(self.ctx.clock.now())
                if update is not None:
                    self.weights_history.append(update)
                    await self._bus.publish(
                        topics.weights(strategy.strategy_id),
                        update,
                        msg_id=f"{strategy.strategy_id}:weights:{update.rounds}",
                    )

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"signals": dict(self.signals)}
        for strategy in self.strategies:
            metrics = getattr(strategy, "metrics", None)
            if metrics is not None:
                out[strategy.strategy_id] = metrics()
        return out
