"""`ExecutionEngine`: approved orders to venues, venue reports to the tracker and the bus.

The order path, and what a crash at each step leaves behind (`faults` names the points):

1. the intent is committed to SQL as PENDING_SUBMIT (`intent_committed`);
2. the venue is called; its answer (`venue_acked`) is committed as SUBMITTED or the venue's
   own report (ACCEPTED, a fill) (`status_committed`), then published on ``orders.*``;
3. a definite refusal (`VenueRejectedError`) is REJECTED; anything else that fails (timeout,
   5xx, a dropped connection) is UNKNOWN: the order may be at the venue. An UNKNOWN order is
   never resubmitted: the resolver queries the venue until it answers, and only believes an
   order absent once the venue has not known it for `not_found_grace_s` (REJECTED). That is a
   belief, not the venue's word: the resolver keeps asking about such an order for
   `absent_watch_s`, and an order closed as absent that the venue reports after all (a query
   finds it, a fill or a status arrives) is **reopened** with the venue's state, so a late
   venue never leaves an order that trades marked REJECTED;
4. fills (`fill_received`) are committed, deduplicated on (venue, trade_id) (`fill_committed`),
   then published on ``orders.filled``.

With an `outbox` (live nodes), each event of steps 2 and 4 is written to the outbox table in
the transaction of the change it reports, published right after the commit and marked
published by the relay; events a crash left unpublished (killed at `status_committed` or
`fill_committed`) are published when the engine starts again, before anything else, and the
relay retries any whose publish failed (the bus was unreachable) every `outbox_every_s`.

On start the engine reconciles SQL with every venue (`reconcile.Reconciler`) before it takes
a new order; venues that do not push their reports are polled every `poll_interval_s`. A
HALTED breaker (``risk.breaker``) cancels every open order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from quantlab.bus import topics
from quantlab.bus.base import Bus, Envelope
from quantlab.bus.idempotent import IdempotentConsumer
from quantlab.bus.metrics import LatencySketch
from quantlab.core.clock import Clock
from quantlab.core.enums import BreakerState, OrderStatus
from quantlab.core.errors import BusError
from quantlab.core.messages import BreakerEvent, Fill, Order, OrderEvent
from quantlab.execution.faults import crash_point
from quantlab.execution.ports import (
    Outbox,
    Outgoing,
    Venue,
    VenueOrderState,
    VenueRejectedError,
    VenueReport,
)
from quantlab.execution.reconcile import CLOSED_AS_ABSENT, Reconciler, ReconcileReport
from quantlab.execution.router import Router
from quantlab.execution.tracker import LiveOrder, OrderTracker

log = logging.getLogger(__name__)

Halt = Callable[[str, str], Awaitable[None]]  # (trigger, reason): halt trading

_EVENT_TOPIC = {
    OrderStatus.SUBMITTED: "submitted",
    OrderStatus.ACCEPTED: "accepted",
    OrderStatus.REJECTED: "rejected",
    OrderStatus.CANCELED: "canceled",
    OrderStatus.EXPIRED: "expired",
    OrderStatus.UNKNOWN: "unknown",
}
_UNSETTLED = (OrderStatus.UNKNOWN,)
# Statuses only a venue reports: one about an order closed as absent proves it is there.
_VENUE_REPORTED = frozenset(
    {
        OrderStatus.ACCEPTED,
        OrderStatus.PARTIALLY_FILLED,
        OrderStatus.FILLED,
        OrderStatus.CANCELED,
        OrderStatus.EXPIRED,
    }
)


@dataclass(slots=True)
class _Absent:
    """An order closed as absent: its venue, when it was closed and when to ask next
    (monotonic seconds)."""

    venue: str
    closed: float
    next_at: float


class ExecutionEngine:
    """Routes approved orders, tracks them to a terminal state, and reconciles on start.

    Parameters
    ----------
    router, tracker
        Where orders go; the state machine over the order store.
    clock
        Stamps the events the engine makes itself (SUBMITTED, UNKNOWN, a resolution).
    not_found_grace_s
        How long a venue may answer "no such order" for an order whose submission outcome is
        unknown before the engine believes the order never arrived (REJECTED, "not at venue").
    absent_watch_s
        How long the resolver keeps asking the venue about an order it closed as absent, to
        reopen it if it shows up (see the module doc); default ten times the grace. A venue
        report about such an order reopens it at any time.
    resolve_every_s
        How often UNKNOWN orders are queried.
    reconcile
        Reconcile with the venues on start (off for a backtest: its venue starts empty).
    fills_lookback_s
        How far back reconciliation fetches the venues' fills.
    halt
        Called as ``halt(trigger, reason)`` when reconciliation finds positions that disagree:
        the risk breaker halts trading until a person resolves it.
    outbox, outbox_every_s
        The transactional outbox (see the module doc) and how often its relay runs.
    data_to_order
        Time each submission from the moment the market data it was decided on reached the
        ingest engine (`Order.ts_recv`, wall clock) to the venue's answer: the end-to-end
        data → order latency.
    """

    name = "execution"

    def __init__(
        self,
        router: Router,
        tracker: OrderTracker,
        *,
        clock: Clock | None = None,
        not_found_grace_s: float = 10.0,
        absent_watch_s: float | None = None,
        resolve_every_s: float = 1.0,
        reconcile: bool = False,
        fills_lookback_s: float = 7 * 86_400.0,
        halt: Halt | None = None,
        outbox: Outbox | None = None,
        outbox_every_s: float = 1.0,
        data_to_order: bool = False,
    ) -> None:
        self.router = router
        self.tracker = tracker
        self.clock = clock
        self.not_found_grace_s = not_found_grace_s
        self.absent_watch_s = 10 * not_found_grace_s if absent_watch_s is None else absent_watch_s
        if not self.absent_watch_s >= 0:
            raise ValueError(f"absent_watch_s must be >= 0 seconds, got {absent_watch_s!r}")
        self.resolve_every_s = resolve_every_s
        self.reconcile_on_start = reconcile
        self.fills_lookback_s = fills_lookback_s
        self.halt = halt
        self.reconcile_backoff_s = 1.0  # between the attempts to reconcile with a venue
        self.outbox = outbox
        self.outbox_every_s = outbox_every_s
        self._published: list[str] = []  # outbox ids published, not yet marked
        self.relayed = 0  # outbox events published by the relay (not right after the commit)
        self.publish_errors = 0
        self.data_to_order = LatencySketch() if data_to_order else None
        self._bus: Bus | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._unknown_since: dict[str, float] = {}  # client_order_id -> monotonic time
        self.submitted = 0
        self.fills = 0
        self.events: Counter[str] = Counter()
        self.duplicate_intents = 0
        self.venue_errors: Counter[str] = Counter()
        self.resolved: Counter[str] = Counter()
        self.canceled_on_halt = 0
        self.refused_halted = 0
        self.reconciliation: ReconcileReport | None = None
        # Set by a HALTED breaker (and at start by the node if it starts halted): nothing is
        # sent, and whatever a venue acknowledges meanwhile is canceled at once.
        self.halted = False
        # Orders the venue had acknowledged before they became UNKNOWN: never closed as
        # "absent" (the venue knew them; a person must look), only resolved by a query.
        self._acknowledged_unknown: set[str] = set()
        # Orders closed as absent after the grace: client_order_id -> what `_watch_absent`
        # needs. Queried while younger than `absent_watch_s`; reopened if they show up.
        self._closed_absent: dict[str, _Absent] = {}

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self, bus: Bus) -> None:
        self._bus = bus
        # Events committed by a previous process and never published go out first.
        await self.relay()
        self.tracker.recover()
        for venue in self.router.venues.values():
            venue.set_listener(self.on_report)
        for live in self.tracker.open_orders():
            if live.status in (OrderStatus.UNKNOWN, OrderStatus.PENDING_SUBMIT):
                self._unknown_since[live.order.client_order_id] = time.monotonic()
        if self.reconcile_on_start:
            self.reconciliation = await Reconciler(self).run(backoff_s=self.reconcile_backoff_s)
        bus.consume(
            topics.orders("approved"), IdempotentConsumer(self._on_approved), name=self.name
        )
        bus.consume(topics.risk("breaker"), self._on_breaker, name=f"{self.name}.breaker")
        loop = asyncio.get_running_loop()
        for venue in self.router.venues.values():
            if venue.poll_interval_s > 0:
                task = loop.create_task(self._poll_loop(venue), name=f"poll.{venue.name}")
                self._tasks.append(task)
        if self.resolve_every_s > 0:
            self._tasks.append(loop.create_task(self._resolve_loop(), name="resolve-unknown"))
        if self.outbox is not None:
            self._tasks.append(loop.create_task(self._relay_loop(), name="outbox-relay"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        # One last look at the venues: reports that arrived since the last poll are not lost.
        for venue in self.router.venues.values():
            if venue.poll_interval_s > 0:
                await self._poll_once(venue)
        await self.relay()

    # -- the outbox ------------------------------------------------------------------------
    async def _emit(self, topic: str, message: OrderEvent | Fill, msg_id: str) -> None:
        """Publish an event whose change is committed (and, with an outbox, its row too)."""
        if self._bus is None:
            raise BusError("ExecutionEngine publishes before start()")
        if self.outbox is None:
            await self._bus.publish(topic, message, msg_id=msg_id)
            return
        try:
            await self._bus.publish(topic, message, msg_id=msg_id)
        except Exception as exc:  # the row stays pending: the relay publishes it later
            self.publish_errors += 1
            log.error("publish of %s on %s failed (the outbox keeps it): %s", msg_id, topic, exc)
            return
        self._published.append(msg_id)

    async def relay(self) -> int:
        """Mark what was published; publish what is pending (left by a crash, or a failed
        publish). Returns how many events it published."""
        if self.outbox is None or self._bus is None:
            return 0
        done, self._published = self._published, []
        self.outbox.mark_published(done)
        sent = 0
        failed = False
        while not failed and (pending := self.outbox.pending()):
            published: list[str] = []
            for item in pending:
                try:
                    await self._bus.publish(item.topic, item.message, msg_id=item.msg_id)
                except Exception as exc:  # the rest waits for the next round
                    self.publish_errors += 1
                    log.error("outbox relay: publish of %s failed: %s", item.msg_id, exc)
                    failed = True
                    break
                published.append(item.msg_id)
            self.outbox.mark_published(published)
            sent += len(published)
            self.relayed += len(published)
        return sent

    async def _relay_loop(self) -> None:
        while True:
            await asyncio.sleep(self.outbox_every_s)
            try:
                await self.relay()
            except Exception:  # a long-running loop never dies of one failed round
                log.exception("outbox relay failed")

    # -- the order path --------------------------------------------------------------------
    async def _on_approved(self, envelope: Envelope) -> None:
        await self.submit(envelope.payload)

    async def submit(self, order: Order) -> None:
        """Commit the intent, send it, and record what the venue said (see the module doc)."""
        venue = self.router.venue_for(order.symbol)
        if not self.tracker.record_intent(order, venue.name):
            self.duplicate_intents += 1
            return
        crash_point("intent_committed")
        coid = order.client_order_id
        if self.halted:  # approved before the halt, still queued: never sent
            self.refused_halted += 1
            await self.on_report(
                self._event(order, venue, OrderStatus.REJECTED, "not sent: trading is halted")
            )
            return
        try:
            await venue.submit(order)
        except VenueRejectedError as exc:
            self.venue_errors["rejected"] += 1
            await self.on_report(self._event(order, venue, OrderStatus.REJECTED, str(exc)))
            return
        except Exception as exc:
            # The order may or may not have reached the venue: UNKNOWN until a query says.
            self.venue_errors["unknown"] += 1
            log.error("submit of %s to %s failed: %s", coid, venue.name, exc)
            await self.mark_unknown(order, venue, f"submit: {type(exc).__name__}: {exc}")
            return
        crash_point("venue_acked")
        self.submitted += 1
        if self.data_to_order is not None and order.ts_recv:
            self.data_to_order.update((time.time_ns() - order.ts_recv) / 1e9)
        # Not live any more: the venue's answer closed it already (a paper IOC fills inside
        # submit). `tracker.live` answers from memory; `tracker.status` would ask SQL.
        live = self.tracker.live(coid)
        if live is not None and live.status is OrderStatus.PENDING_SUBMIT:
            await self.on_report(self._event(order, venue, OrderStatus.SUBMITTED))
        if self.halted:  # the halt came while the request was in flight
            await self._cancel(self.tracker.live(coid), "breaker halted during submission")

    async def on_report(self, report: VenueReport) -> None:
        if self._bus is None:
            raise BusError("ExecutionEngine got a venue report before start()")
        if report.client_order_id in self._closed_absent:
            await self._absent_reported(report)
        if isinstance(report, Fill):
            crash_point("fill_received")
            topic, msg_id = topics.orders("filled"), str(report.fill_id)
            outgoing = self._outgoing(topic, msg_id, report)
            if self.tracker.on_fill(report, outgoing=outgoing) is not None:
                crash_point("fill_committed")
                self._unknown_since.pop(report.client_order_id, None)
                self.fills += 1
                await self._emit(topic, report, msg_id)
            return
        event = _EVENT_TOPIC.get(report.status)
        topic = topics.orders(event) if event is not None else ""
        msg_id = f"{report.client_order_id}:{report.status.value}"
        if self.tracker.transition(
            report.client_order_id,
            report.status,
            report.timestamp,
            report.reason,
            outgoing=self._outgoing(topic, msg_id, report) if event is not None else None,
        ):
            crash_point("status_committed")
            if report.status is not OrderStatus.UNKNOWN:
                self._unknown_since.pop(report.client_order_id, None)
                self._acknowledged_unknown.discard(report.client_order_id)
            if event is not None:
                self.events[event] += 1
                await self._emit(topic, report, msg_id)

    async def apply_state(self, state: VenueOrderState, venue: Venue) -> None:
        """Bring the tracker to what the venue says about an order (fills first)."""
        for fill in state.fills:
            await self.on_report(fill)
        live = self.tracker.live(state.client_order_id)
        if live is None:
            return
        status = state.status
        if status in (OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED):
            # The fills themselves move the order (a poll delivers those not listed here);
            # until then the venue has it: ACCEPTED.
            status = OrderStatus.ACCEPTED
        # A partly filled order only moves on to a terminal state.
        partial = live.status is OrderStatus.PARTIALLY_FILLED
        if status is not live.status and (status.is_terminal or not partial):
            await self.on_report(self._event(live.order, venue, status, state.reason))
        if self.halted and not status.is_terminal:
            await self._cancel(self.tracker.live(state.client_order_id), "breaker halted")

    # -- unknown outcomes ------------------------------------------------------------------
    async def mark_unknown(self, order: Order, venue: Venue, reason: str) -> None:
        """The order may be at the venue or not: UNKNOWN until a query settles it."""
        live = self.tracker.live(order.client_order_id)
        if live is None:  # it closed meanwhile (filled during a failing call): nothing unknown
            return
        self._unknown_since.setdefault(order.client_order_id, time.monotonic())
        if live.status in (OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED):
            self._acknowledged_unknown.add(order.client_order_id)
        if live.status is not OrderStatus.UNKNOWN:
            await self.on_report(self._event(order, venue, OrderStatus.UNKNOWN, reason))

    async def resolve_unknown(self) -> int:
        """Query the venue about every order whose outcome is unknown; returns how many
        were settled (found, or absent for longer than the grace period)."""
        settled = 0
        now = time.monotonic()
        for live in self.tracker.open_orders():
            if live.status not in _UNSETTLED:
                continue
            coid = live.order.client_order_id
            venue = self.router.venues.get(live.venue)
            if venue is None:
                continue
            try:
                state = await venue.query_order(coid)
            except Exception as exc:
                self.venue_errors["query"] += 1
                log.warning("query of %s at %s failed: %s", coid, venue.name, exc)
                continue
            if state is not None:
                await self.apply_state(state, venue)
                self.resolved["found"] += 1
                settled += 1
                continue
            since = self._unknown_since.setdefault(coid, now)
            if coid in self._acknowledged_unknown:
                # The venue acknowledged it once and now cannot find it: it may have traded.
                # Never closed by the engine; flagged until a query finds it.
                self.resolved["acknowledged_missing"] += 1
                log.error("order %s was acknowledged by %s, now not found", coid, venue.name)
                continue
            if now - since >= self.not_found_grace_s:
                reason = (
                    f"not at venue {venue.name} {now - since:.1f}s after an unknown "
                    f"submission outcome; {CLOSED_AS_ABSENT}"
                )
                await self.on_report(self._event(live.order, venue, OrderStatus.REJECTED, reason))
                if self.tracker.live(coid) is None:
                    closed = time.monotonic()
                    self._closed_absent[coid] = _Absent(venue.name, closed, closed)
                self.resolved["absent"] += 1
                settled += 1
        await self._watch_absent()
        return settled

    @property
    def watching_absent(self) -> int:
        """Orders closed as absent that the resolver still asks the venue about."""
        now = time.monotonic()
        return sum(now - a.closed < self.absent_watch_s for a in self._closed_absent.values())

    async def _watch_absent(self) -> None:
        """Ask the venue again about the orders closed as absent within `absent_watch_s`;
        reopen any it has after all.

        Each is asked at doubling intervals (about `resolve_every_s`, then 2, 4, 8... times
        that after it was closed), so that a burst of them (an outage of order entry) does not
        spend the venue's rate limit: a handful of queries each over the whole watch.
        """
        now = time.monotonic()
        for coid, absent in list(self._closed_absent.items()):
            venue = self.router.venues.get(absent.venue)
            if venue is None or now - absent.closed >= self.absent_watch_s:
                continue  # no longer asked; a report from the venue still reopens it
            if now < absent.next_at:
                continue
            absent.next_at = now + max(now - absent.closed, self.resolve_every_s)
            try:
                state = await venue.query_order(coid)
            except Exception as exc:
                self.venue_errors["query"] += 1
                log.warning(
                    "query of %s (closed as absent) at %s failed: %s", coid, venue.name, exc
                )
                continue
            if state is None or coid not in self._closed_absent:
                continue
            if state.status is OrderStatus.REJECTED and state.filled_quantity == 0:
                del self._closed_absent[coid]  # the venue refused it: REJECTED stands
                continue
            await self.reopen(coid, venue, f"found by a query ({state.status.value})")
            await self.apply_state(state, venue)

    async def _absent_reported(self, report: VenueReport) -> None:
        """A venue report about an order closed as absent: it is at the venue after all."""
        coid = report.client_order_id
        venue = self.router.venues.get(self._closed_absent[coid].venue)
        if venue is None or self.tracker.live(coid) is not None:
            return
        if isinstance(report, Fill):
            await self.reopen(coid, venue, f"fill {report.trade_id} reported")
        elif report.status is OrderStatus.REJECTED:
            del self._closed_absent[coid]  # the venue's own refusal (or ours, repeated)
        elif report.status in _VENUE_REPORTED:
            await self.reopen(coid, venue, f"{report.status.value} reported")

    async def reopen(self, coid: str, venue: Venue, evidence: str) -> None:
        """Reopen an order closed as absent that the venue has after all.

        REJECTED is final in the tracker's state machine (a venue's refusal is), but this one
        was the engine's belief: the order store of record is corrected (ACCEPTED, or
        PARTIALLY_FILLED / FILLED if fills reached it meanwhile) and the tracker takes it back,
        so that its fills and closing status land as for any open order. The correction is
        published on ``orders.accepted`` (the order builder counts the order as working).
        """
        self._closed_absent.pop(coid, None)
        store = self.tracker.store
        record = store.get(coid)
        if record is None or record.status is not OrderStatus.REJECTED:
            return
        filled, quantity = record.filled_quantity, record.order.quantity
        status = (
            OrderStatus.FILLED
            if filled >= quantity
            else OrderStatus.PARTIALLY_FILLED
            if filled > 0
            else OrderStatus.ACCEPTED
        )
        reason = f"at venue {venue.name} after being closed as absent: {evidence}; reopened"
        event = self._event(record.order, venue, OrderStatus.ACCEPTED, reason)
        topic, msg_id = topics.orders("accepted"), f"{coid}:accepted"
        store.set_status(
            coid, status, event.timestamp, reason, outgoing=self._outgoing(topic, msg_id, event)
        )
        self.tracker.reload(coid)
        self.resolved["reopened"] += 1
        log.error("order %s %s", coid, reason)
        self.events["accepted"] += 1
        await self._emit(topic, event, msg_id)

    async def _resolve_loop(self) -> None:
        while True:
            await asyncio.sleep(self.resolve_every_s)
            try:
                await self.resolve_unknown()
            except Exception:  # a long-running loop never dies of one bad answer
                log.exception("resolving unknown orders failed")

    # -- polling venues --------------------------------------------------------------------
    async def _poll_once(self, venue: Venue) -> None:
        try:
            await venue.poll()
        except Exception as exc:
            self.venue_errors["poll"] += 1
            log.warning("poll of %s failed: %s", venue.name, exc)

    async def _poll_loop(self, venue: Venue) -> None:
        while True:
            await asyncio.sleep(venue.poll_interval_s)
            await self._poll_once(venue)

    # -- the breaker -----------------------------------------------------------------------
    async def _on_breaker(self, envelope: Envelope) -> None:
        event: BreakerEvent = envelope.payload
        self.halted = event.state is BreakerState.HALTED
        if self.halted:
            await self.cancel_all(f"breaker halted: {event.reason}")

    async def cancel_all(self, reason: str) -> int:
        """Ask every venue to cancel every open order; returns how many were asked."""
        asked = 0
        for live in self.tracker.open_orders():
            # An order still PENDING_SUBMIT has its request in flight: `submit` cancels it
            # when the venue answers (`halted` is set).
            if live.status is not OrderStatus.PENDING_SUBMIT and await self._cancel(live, reason):
                asked += 1
        return asked

    async def _cancel(self, live: LiveOrder | None, reason: str) -> bool:
        if live is None:
            return False
        venue = self.router.venues.get(live.venue)
        if venue is None:
            return False
        try:
            await venue.cancel(live.order.client_order_id)
        except Exception as exc:
            self.venue_errors["cancel"] += 1
            log.error("cancel of %s (%s) failed: %s", live.order.client_order_id, reason, exc)
            return False
        self.canceled_on_halt += 1
        return True

    # -- helpers ---------------------------------------------------------------------------
    def _outgoing(self, topic: str, msg_id: str, message: OrderEvent | Fill) -> Outgoing | None:
        if self.outbox is None:
            return None
        return Outgoing(topic=topic, msg_id=msg_id, message=message)

    def _event(
        self, order: Order, venue: Venue, status: OrderStatus, reason: str = ""
    ) -> OrderEvent:
        at = self.clock.now() if self.clock is not None else order.timestamp
        return OrderEvent(
            order_id=order.order_id,
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            status=status,
            venue=venue.name,
            timestamp=max(at, order.timestamp),
            reason=reason,
        )

    def stats(self) -> dict[str, Any]:
        return {
            "submitted": self.submitted,
            "fills": self.fills,
            "events": dict(self.events),
            "duplicate_intents": self.duplicate_intents,
            "duplicate_fills": self.tracker.duplicate_fills,
            "overfills": self.tracker.overfills,
            "invalid_transitions": dict(self.tracker.invalid_transitions),
            "venue_errors": dict(self.venue_errors),
            "resolved": dict(self.resolved),
            "watching_absent": self.watching_absent,
            "canceled_on_halt": self.canceled_on_halt,
            "refused_halted": self.refused_halted,
            "reconciliation": (
                None if self.reconciliation is None else self.reconciliation.summary()
            ),
            "outbox": (
                None
                if self.outbox is None
                else {
                    **self.outbox.counts(),
                    "relayed": self.relayed,
                    "publish_errors": self.publish_errors,
                }
            ),
            "data_to_order": (None if self.data_to_order is None else self.data_to_order.summary()),
        }
