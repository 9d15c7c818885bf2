"""Ports of the execution stage: what a venue and an order store must offer.

Adapters implement these (`quantlab.adapters.sim.PaperVenue`, `quantlab.storage.sql.SqlOrderStore`);
the engine injects them. The stage itself knows no network and no database.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Protocol, runtime_checkable

import msgspec

from quantlab.core.enums import OrderStatus
from quantlab.core.messages import Fill, Order, OrderEvent

VenueReport = OrderEvent | Fill
VenueListener = Callable[[VenueReport], Awaitable[None]]


@runtime_checkable
class Venue(Protocol):
    """Where orders go. Reports (status changes, fills) come back through the listener."""

    name: str

    def set_listener(self, listener: VenueListener) -> None: ...

    async def submit(self, order: Order) -> None:
        """Send `order`; its acceptance, rejection and fills arrive as reports."""
        ...

    async def cancel(self, client_order_id: str) -> None: ...


class OrderRecord(msgspec.Struct, frozen=True, kw_only=True):
    """An order as the store of record holds it."""

    order: Order
    status: OrderStatus
    venue: str
    filled_quantity: Decimal
    reason: str
    updated_at: dt.datetime


@runtime_checkable
class OrderStore(Protocol):
    """The durable book of orders and fills (SQL). Every method commits before it returns."""

    def record_intent(self, order: Order, venue: str, status: OrderStatus) -> bool:
        """Insert a new order; False (and no change) if its client_order_id already exists."""
        ...

    def set_status(
        self, client_order_id: str, status: OrderStatus, at: dt.datetime, reason: str = ""
    ) -> None: ...

    def record_fill(self, fill: Fill, status: OrderStatus) -> bool:
        """Insert a fill and move its order to `status` in one transaction.

        False (and no change) if a fill with the same (venue, trade_id) exists.
        """
        ...

    def get(self, client_order_id: str) -> OrderRecord | None: ...

    def open_orders(self) -> list[OrderRecord]: ...

    def order_id_for(self, client_order_id: str) -> uuid.UUID | None: ...
