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

from quantlab.core.enums import OrderStatus, Side
from quantlab.core.errors import OrderError
from quantlab.core.messages import Fill, Order, OrderEvent

VenueReport = OrderEvent | Fill
VenueListener = Callable[[VenueReport], Awaitable[None]]


class Outgoing(msgspec.Struct, frozen=True, kw_only=True):
    """An event to publish once the change it reports is committed (the outbox row written
    in the same transaction as the change)."""

    topic: str
    msg_id: str
    message: OrderEvent | Fill


class VenueError(OrderError):
    """A venue call failed. Subclasses say what is known about the order afterwards."""


class VenueRejectedError(VenueError):
    """The venue definitely refused the order (it will never trade): the order is REJECTED."""


class VenueUnknownError(VenueError):
    """The call's outcome is unknown (timeout, 5xx, dropped connection): the order is UNKNOWN
    until `Venue.query_order` resolves it. Never resubmit such an order."""


class VenueOrderState(msgspec.Struct, frozen=True, kw_only=True):
    """An order as the venue sees it (the answer of a query or an open-orders listing).

    `status` is mapped to quantlab's `OrderStatus` (ACCEPTED, PARTIALLY_FILLED, FILLED,
    CANCELED, REJECTED, EXPIRED). `fills` holds the order's individual executions when the
    venue reports them (each `Fill` with a venue trade id), possibly empty while
    `filled_quantity` is already > 0 (fills are then reported by `Venue.poll`).
    """

    client_order_id: str
    venue_order_id: str
    symbol: str
    side: Side
    quantity: Decimal
    filled_quantity: Decimal
    status: OrderStatus
    price: Decimal | None = None
    fills: tuple[Fill, ...] = ()
    reason: str = ""
    updated_at: dt.datetime | None = None


@runtime_checkable
class Venue(Protocol):
    """Where orders go. Reports (status changes, fills) come back through the listener.

    Contract every adapter keeps (tested against each adapter's fake server):

    * `submit` is idempotent on ``client_order_id``: a venue answer "client order id already
      used" means the order is already placed; the adapter looks it up (never resubmits) and
      reports what it found. A rate limit (HTTP 429) is retried after the venue's Retry-After.
      A definite refusal raises `VenueRejectedError`; a timeout, a 5xx or a dropped connection
      raises `VenueUnknownError`.
    * `query_order` returns None only when the venue has no order with that client order id;
      shortly after a submission that does not prove the order lost (the engine waits a grace
      period before it believes it).
    * `poll` reports (through the listener) every status change and fill of the orders this
      venue object has submitted or queried since it was created; fills carry the venue's
      trade id, so a fill reported twice is deduplicated downstream.
    """

    name: str
    paper: bool  # True for a paper/sandbox/testnet endpoint, False for real money
    poll_interval_s: float  # 0: the venue pushes its reports itself (the paper venue)

    def set_listener(self, listener: VenueListener) -> None: ...

    async def submit(self, order: Order) -> None:
        """Send `order`; its acceptance, rejection and fills arrive as reports."""
        ...

    async def cancel(self, client_order_id: str) -> None: ...

    async def query_order(self, client_order_id: str) -> VenueOrderState | None: ...

    async def open_orders(self) -> list[VenueOrderState]: ...

    async def fills_since(self, since: dt.datetime) -> list[Fill]:
        """The account's fills at or after `since` (for reconciliation at start)."""
        ...

    async def positions(self) -> dict[str, Decimal] | None:
        """Signed position per symbol as the venue holds it; None if the venue keeps none
        (a spot account's balances are not positions of one strategy)."""
        ...

    async def poll(self) -> None:
        """Fetch and report changes since the last poll (no-op for push venues)."""
        ...


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
        self,
        client_order_id: str,
        status: OrderStatus,
        at: dt.datetime,
        reason: str = "",
        *,
        outgoing: Outgoing | None = None,
    ) -> None:
        """Move an order to `status`; `outgoing` goes to the outbox in the same transaction."""
        ...

    def record_fill(
        self, fill: Fill, status: OrderStatus, *, outgoing: Outgoing | None = None
    ) -> bool:
        """Insert a fill and move its order to `status` (and write `outgoing` to the outbox)
        in one transaction.

        False (and no change) if a fill with the same (venue, trade_id) exists.
        """
        ...

    def has_fill(self, venue: str, trade_id: str) -> bool: ...

    def net_positions(self, venue: str) -> dict[str, Decimal]:
        """Signed net quantity per symbol from the fills of `venue`'s orders."""
        ...

    def get(self, client_order_id: str) -> OrderRecord | None: ...

    def open_orders(self) -> list[OrderRecord]: ...

    def order_id_for(self, client_order_id: str) -> uuid.UUID | None: ...


@runtime_checkable
class Outbox(Protocol):
    """The events committed with the book's changes and not yet published (the relay's side
    of the transactional outbox)."""

    def pending(self, limit: int = 1000) -> list[Outgoing]:
        """Unpublished events, oldest first."""
        ...

    def mark_published(self, msg_ids: list[str]) -> None: ...

    def counts(self) -> dict[str, int]:
        """``{"pending": n, "published": m}``."""
        ...
