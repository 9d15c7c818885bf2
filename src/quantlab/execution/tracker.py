"""The order tracker: the order state machine, persisted through the `OrderStore` port.

The intent is committed before the venue is called, so a crash can never leave an order at
the venue that the store does not know. Fills are deduplicated on (venue, trade_id) by the
store; an invalid transition is refused and counted, never applied.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from decimal import Decimal
from typing import NamedTuple

from quantlab.core.enums import OrderStatus as S
from quantlab.core.errors import OrderError
from quantlab.core.messages import Fill, Order
from quantlab.execution.ports import OrderRecord, OrderStore, Outgoing

log = logging.getLogger(__name__)

_AFTER_SEND = {S.ACCEPTED, S.PARTIALLY_FILLED, S.FILLED, S.REJECTED, S.CANCELED, S.EXPIRED}
TRANSITIONS: dict[S, frozenset[S]] = {
    S.NEW: frozenset({S.PENDING_SUBMIT, S.REJECTED}),
    S.PENDING_SUBMIT: frozenset({S.SUBMITTED, S.UNKNOWN, *_AFTER_SEND}),
    S.SUBMITTED: frozenset({S.UNKNOWN, *_AFTER_SEND}),
    S.ACCEPTED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.UNKNOWN}),
    S.PARTIALLY_FILLED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.UNKNOWN}),
    S.UNKNOWN: frozenset({S.SUBMITTED, *_AFTER_SEND}),
    S.FILLED: frozenset(),
    S.CANCELED: frozenset(),
    S.REJECTED: frozenset(),
    S.EXPIRED: frozenset(),
}


def check_transition(current: S, new: S, client_order_id: str) -> None:
    if new not in TRANSITIONS[current]:
        raise OrderError(
            f"order {client_order_id}: transition {current.value} -> {new.value} is not allowed"
        )


class _Live:
    __slots__ = ("filled", "order", "status", "venue")

    def __init__(self, order: Order, status: S, venue: str = "") -> None:
        self.order, self.status, self.filled, self.venue = order, status, Decimal(0), venue


class LiveOrder(NamedTuple):
    """An order the tracker holds open: what it is, where it went, how far it got."""

    order: Order
    status: S
    venue: str
    filled: Decimal


class OrderTracker:
    def __init__(self, store: OrderStore) -> None:
        self.store = store
        self._live: dict[str, _Live] = {}
        self.invalid_transitions: Counter[str] = Counter()
        self.duplicate_fills = 0
        self.overfills = 0
        self.status_reports_ignored = 0
        self.late_fills = 0

    def recover(self) -> int:
        """Load the store's open orders (after a restart), so that their fills land.

        Returns how many orders are live again.
        """
        for record in self.store.open_orders():
            self._load(record)
        return len(self._live)

    def _load(self, record: OrderRecord) -> None:
        live = _Live(record.order, record.status, record.venue)
        live.filled = record.filled_quantity
        self._live[record.order.client_order_id] = live

    def reload(self, client_order_id: str) -> bool:
        """Take one order back from the store if it is open there (an order the engine had
        closed and the store of record reopened); False if it is not open."""
        record = self.store.get(client_order_id)
        if record is None or record.status.is_terminal:
            return False
        self._load(record)
        return True

    def status(self, client_order_id: str) -> S | None:
        live = self._live.get(client_order_id)
        if live is not None:
            return live.status
        record = self.store.get(client_order_id)
        return None if record is None else record.status

    def record_intent(self, order: Order, venue: str) -> bool:
        """Commit the order as PENDING_SUBMIT; False if it exists already (never send twice)."""
        if order.client_order_id in self._live or not self.store.record_intent(
            order, venue, S.PENDING_SUBMIT
        ):
            return False
        self._live[order.client_order_id] = _Live(order, S.PENDING_SUBMIT, venue)
        return True

    def live(self, client_order_id: str) -> LiveOrder | None:
        found = self._live.get(client_order_id)
        if found is None:
            return None
        return LiveOrder(found.order, found.status, found.venue, found.filled)

    def open_orders(self, venue: str | None = None) -> list[LiveOrder]:
        """The orders not yet in a terminal state (optionally of one venue), oldest first."""
        return [
            LiveOrder(x.order, x.status, x.venue, x.filled)
            for x in self._live.values()
            if venue is None or x.venue == venue
        ]

    def transition(
        self,
        client_order_id: str,
        new: S,
        at: dt.datetime,
        reason: str = "",
        *,
        outgoing: Outgoing | None = None,
    ) -> bool:
        """Apply a status change; False (counted) if it is not allowed from the current one."""
        live = self._live.get(client_order_id)
        if live is None:
            self.invalid_transitions[f"unknown_order->{new.value}"] += 1
            return False
        if new in (S.FILLED, S.PARTIALLY_FILLED):
            # Fill states follow from fills (`on_fill`), never from a bare status report:
            # a venue may report "filled" before the trade report that carries the quantity.
            self.status_reports_ignored += 1
            return False
        if live.status == new:
            return False  # a repeated report
        try:
            check_transition(live.status, new, client_order_id)
        except OrderError as exc:
            self.invalid_transitions[f"{live.status.value}->{new.value}"] += 1
            log.warning("%s", exc)
            return False
        self.store.set_status(client_order_id, new, at, reason, outgoing=outgoing)
        live.status = new
        if new.is_terminal:
            del self._live[client_order_id]
        return True

    def on_fill(self, fill: Fill, *, outgoing: Outgoing | None = None) -> S | None:
        """Book a fill (and `outgoing`, the event that reports it, in the same transaction);
        the order's new status, or None for a duplicate fill or an overfill."""
        live = self._live.get(fill.client_order_id)
        if live is None:
            return self._late_fill(fill, outgoing)
        total = live.filled + fill.quantity
        if total > live.order.quantity:
            if self.store.has_fill(fill.venue, fill.trade_id):  # a repeat, not an overfill
                self.duplicate_fills += 1
                return None
            self.overfills += 1
            log.error(
                "overfill refused: order %s qty %s, filled %s, fill %s",
                fill.client_order_id,
                live.order.quantity,
                live.filled,
                fill.quantity,
            )
            return None
        new = S.FILLED if total == live.order.quantity else S.PARTIALLY_FILLED
        try:
            check_transition(live.status, new, fill.client_order_id)
        except OrderError:
            self.invalid_transitions[f"{live.status.value}->{new.value}"] += 1
            return None
        if not self.store.record_fill(fill, new, outgoing=outgoing):
            self.duplicate_fills += 1
            return None
        live.filled, live.status = total, new
        if new.is_terminal:
            del self._live[fill.client_order_id]
        return new

    def _late_fill(self, fill: Fill, outgoing: Outgoing | None) -> S | None:
        """A fill for an order that is no longer open here.

        Either a repeat (dropped on (venue, trade_id)), or a real execution that raced a
        cancel or an expiry (the venue traded before it closed the order): that one is
        committed, the order keeps its terminal status, and nothing is lost.
        """
        record = self.store.get(fill.client_order_id)
        if record is None:
            self.invalid_transitions["fill_for_unknown_order"] += 1
            return None
        if self.store.has_fill(fill.venue, fill.trade_id):
            self.duplicate_fills += 1
            return None
        if record.filled_quantity + fill.quantity > record.order.quantity:
            self.overfills += 1
            log.error(
                "overfill refused: closed order %s, fill %s", fill.client_order_id, fill.trade_id
            )
            return None
        if not self.store.record_fill(fill, record.status, outgoing=outgoing):
            self.duplicate_fills += 1
            return None
        self.late_fills += 1
        return record.status
