"""`FeatureEngine`: market batches in, feature batches out on ``features``."""

from __future__ import annotations

from typing import Any

from quantlab.bus import topics
from quantlab.bus.base import Bus, Envelope
from quantlab.core.enums import EventType
from quantlab.core.errors import BusError
from quantlab.core.messages import FeatureBatch, MarketBatch
from quantlab.features.streaming import CrossoverFeatures


class FeatureEngine:
    """Computes features per market batch with carried per-symbol state (exact streaming)."""

    name = "features"

    def __init__(self, features: CrossoverFeatures, kind: EventType = EventType.BAR) -> None:
        self.features = features
        self.kind = kind
        self._bus: Bus | None = None
        self.rows = 0
        self.batches = 0

    async def start(self, bus: Bus) -> None:
        self._bus = bus
        bus.consume(topics.market_data(self.kind), self._on_batch, name=self.name)

    async def stop(self) -> None:
        return None

    async def _on_batch(self, envelope: Envelope) -> None:
        batch: MarketBatch = envelope.payload
        if self._bus is None:
            raise BusError("FeatureEngine received a batch before start()")
        frame = self.features.update(batch.frame)
        self.rows += frame.height
        self.batches += 1
        await self._bus.publish(
            topics.features(),
            FeatureBatch(
                spec=self.features.spec,
                version=self.features.version,
                frame=frame,
                seq=batch.seq,
                ts_max=batch.ts_max,
            ),
            msg_id=f"features-{batch.kind.topic_name}-{batch.seq}",
        )

    def stats(self) -> dict[str, Any]:
        return {"rows": self.rows, "batches": self.batches}
