"""`RiskEngine`: every order intent is checked before it may leave (``orders.new`` ->
``orders.approved`` | ``orders.denied``)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from quantlab.bus import topics
from quantlab.bus.base import Bus, Envelope
from quantlab.bus.idempotent import IdempotentConsumer
from quantlab.core.clock import Clock
from quantlab.core.errors import BusError
from quantlab.core.exposure import ExposureBook
from quantlab.core.instruments import InstrumentBook
from quantlab.core.messages import Fill, Order, OrderDenied, OrderEvent
from quantlab.risk.limits import RiskLimits, check_order

_CLOSING_EVENTS = ("rejected", "canceled", "expired")


class RiskEngine:
    name = "risk"

    def __init__(self, limits: RiskLimits, instruments: InstrumentBook, clock: Clock) -> None:
        self.limits = limits
        self.instruments = instruments
        self.clock = clock
        self.book = ExposureBook()
        self._bus: Bus | None = None
        self.approved = 0
        self.denied: Counter[str] = Counter()

    async def start(self, bus: Bus) -> None:
        self._bus = bus
        bus.consume(topics.orders("new"), IdempotentConsumer(self._on_order), name=self.name)
        bus.consume(topics.orders("filled"), self._on_fill, name=f"{self.name}.fills")
        for event in _CLOSING_EVENTS:
            bus.consume(topics.orders(event), self._on_closed, name=f"{self.name}.{event}")

    async def stop(self) -> None:
        return None

    async def _on_order(self, envelope: Envelope) -> None:
        if self._bus is None:
            raise BusError("RiskEngine received an order before start()")
        order: Order = envelope.payload
        currency = self.instruments[order.symbol].quote
        denial = check_order(order, self.book.exposure(order.symbol), self.limits, currency)
        if denial is not None:
            self.denied[denial.reason] += 1
            await self._bus.publish(
                topics.orders("denied"),
                OrderDenied(
                    order=order,
                    reason=denial.reason,
                    detail=denial.detail,
                    timestamp=self.clock.now(),
                ),
                msg_id=f"{order.client_order_id}:denied",
            )
            return
        self.book.add_order(order)
        self.approved += 1
        await self._bus.publish(topics.orders("approved"), order, msg_id=order.client_order_id)

    async def _on_fill(self, envelope: Envelope) -> None:
        fill: Fill = envelope.payload
        self.book.apply_fill(fill)

    async def _on_closed(self, envelope: Envelope) -> None:
        event: OrderEvent = envelope.payload
        self.book.close_order(event.client_order_id)

    def stats(self) -> dict[str, Any]:
        return {"approved": self.approved, "denied": dict(self.denied)}
