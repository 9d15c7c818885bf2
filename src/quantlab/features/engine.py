"""`FeatureEngine`: market batches in, feature batches out on ``features``; the latest vector
per symbol into the feature store."""

from __future__ import annotations

from typing import Any

from quantlab.bus import topics
from quantlab.bus.base import Bus, Envelope
from quantlab.core.enums import EventType
from quantlab.core.errors import BusError
from quantlab.core.messages import FeatureBatch, MarketBatch
from quantlab.features.spec import FeatureSpec
from quantlab.features.store import FeatureStore


class FeatureEngine:
    """Computes a feature spec per market batch with carried per-symbol state (exact
    streaming), stores each symbol's latest vector, and publishes the batch."""

    name = "features"

    def __init__(
        self,
        spec: FeatureSpec,
        store: FeatureStore | None = None,
        kind: EventType = EventType.BAR,
    ) -> None:
        self.spec = spec
        self.features = spec.build()
        self.store = store
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
        if self.store is not None:
            self.store.put(frame)
        self.rows += frame.height
        self.batches += 1
        await self._bus.publish(
            topics.features(),
            FeatureBatch(
                spec=self.spec.name,
                version=self.spec.version,
                frame=frame,
                seq=batch.seq,
                ts_max=batch.ts_max,
                ts_recv=batch.ts_recv,
            ),
            msg_id=f"features-{batch.source}-{batch.kind.topic_name}-{batch.seq}",
        )

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rows": self.rows, "batches": self.batches, "spec": self.spec.id}
        if self.store is not None:
            out["store"] = self.store.metrics()
        return out
