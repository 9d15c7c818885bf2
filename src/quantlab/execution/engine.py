"""`ExecutionEngine`: approved orders to venues, venue reports to the tracker and the bus."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from quantlab.bus import topics
from quantlab.bus.base import Bus, Envelope
from quantlab.bus.idempotent import IdempotentConsumer
from quantlab.core.enums import OrderStatus
from quantlab.core.errors import BusError
from quantlab.core.messages import Fill, Order, OrderEvent
from quantlab.execution.ports import VenueReport
from quantlab.execution.router import Router
from quantlab.execution.tracker import OrderTracker

log = logging.getLogger(__name__)

_EVENT_TOPIC = {
    OrderStatus.SUBMITTED: "submitted",
    OrderStatus.ACCEPTED: "accepted",
    OrderStatus.REJECTED: "rejected",
    OrderStatus.CANCELED: "canceled",
    OrderStatus.EXPIRED: "expired",
}


class ExecutionEngine:
    name = "execution"

    def __init__(self, router: Router, tracker: OrderTracker) -> None:
        self.router = router
        self.tracker = tracker
        self._bus: Bus | None = None
        self.submitted = 0
        self.fills = 0
        self.events: Counter[str] = Counter()
        self.duplicate_intents = 0

    async def start(self, bus: Bus) -> None:
        self._bus = bus
        self.tracker.recover()
        for venue in self.router.venues.values():
            venue.set_listener(self._on_report)
        bus.consume(
            topics.orders("approved"), IdempotentConsumer(self._on_approved), name=self.name
        )

    async def stop(self) -> None:
        return None

    async def _on_approved(self, envelope: Envelope) -> None:
        order: Order = envelope.payload
        venue = self.router.venue_for(order.symbol)
        if not self.tracker.record_intent(order, venue.name):
            self.duplicate_intents += 1
            return
        try:
            await venue.submit(order)
        except Exception as exc:
            # The order may or may not have reached the venue: UNKNOWN until a query says.
            log.error("submit of %s to %s failed: %s", order.client_order_id, venue.name, exc)
            self.tracker.transition(
                order.client_order_id, OrderStatus.UNKNOWN, order.timestamp, f"submit: {exc}"
            )
            return
        self.submitted += 1
        if self.tracker.status(order.client_order_id) is OrderStatus.PENDING_SUBMIT:
            await self._on_report(
                OrderEvent(
                    order_id=order.order_id,
                    client_order_id=order.client_order_id,
                    symbol=order.symbol,
                    status=OrderStatus.SUBMITTED,
                    venue=venue.name,
                    timestamp=order.timestamp,
                )
            )

    async def _on_report(self, report: VenueReport) -> None:
        if self._bus is None:
            raise BusError("ExecutionEngine got a venue report before start()")
        if isinstance(report, Fill):
            if self.tracker.on_fill(report) is not None:
                self.fills += 1
                await self._bus.publish(topics.orders("filled"), report, msg_id=str(report.fill_id))
            return
        if self.tracker.transition(
            report.client_order_id, report.status, report.timestamp, report.reason
        ):
            event = _EVENT_TOPIC.get(report.status)
            if event is not None:
                self.events[event] += 1
                await self._bus.publish(
                    topics.orders(event),
                    report,
                    msg_id=f"{report.client_order_id}:{report.status.value}",
                )

    def stats(self) -> dict[str, Any]:
        return {
            "submitted": self.submitted,
            "fills": self.fills,
            "events": dict(self.events),
            "duplicate_intents": self.duplicate_intents,
            "duplicate_fills": self.tracker.duplicate_fills,
            "invalid_transitions": dict(self.tracker.invalid_transitions),
        }
