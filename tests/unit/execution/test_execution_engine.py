"""The execution engine against a scripted venue: unknown outcomes are resolved by queries and
never resubmitted, reconciliation adopts, closes, flags and halts, a halt cancels."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from quantlab.bus import InProcessBus, topics
from quantlab.bus.base import Envelope
from quantlab.core import ids
from quantlab.core.enums import (
    BreakerState,
    Liquidity,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from quantlab.core.errors import BusError
from quantlab.core.messages import BreakerEvent, Fill, Order, OrderEvent
from quantlab.execution import (
    ExecutionEngine,
    OrderTracker,
    Router,
    VenueListener,
    VenueOrderState,
    VenueRejectedError,
    VenueUnknownError,
)
from quantlab.execution.ports import Venue
from quantlab.storage.sql.engine import make_engine, upgrade
from quantlab.storage.sql.outbox import SqlOutbox
from quantlab.storage.sql.store import SqlOrderStore

S = OrderStatus
T0 = dt.datetime(2024, 3, 1, 14, 30, tzinfo=dt.UTC)


def make_order(n: int, quantity: str = "2", symbol: str = "BTC/USD") -> Order:
    signal = ids.signal_id("test", symbol, n)
    coid = ids.client_order_id(signal)
    return Order(
        order_id=ids.order_id(coid),
        client_order_id=coid,
        symbol=symbol,
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        quantity=Decimal(quantity),
        price=Decimal("100"),
        time_in_force=TimeInForce.GTC,
        strategy_id="test",
        signal_id=signal,
        timestamp=T0,
    )


def make_fill(order: Order, quantity: str, trade_id: str, venue: str = "scripted") -> Fill:
    return Fill(
        fill_id=ids.fill_id(venue, trade_id),
        order_id=order.order_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side,
        price=Decimal("100"),
        quantity=Decimal(quantity),
        fee=Decimal("0.01"),
        fee_currency="USD",
        liquidity=Liquidity.MAKER,
        timestamp=T0 + dt.timedelta(seconds=1),
        venue=venue,
        trade_id=trade_id,
    )


class ScriptedVenue:
    """A `Venue` whose answers the test scripts; it records every call."""

    def __init__(self, name: str = "scripted") -> None:
        self.name = name
        self.paper = True
        self.poll_interval_s = 0.0
        self.listener: VenueListener | None = None
        self.orders: dict[str, VenueOrderState] = {}
        self.fills: list[Fill] = []
        self.held: dict[str, Decimal] | None = None
        self.submits: list[str] = []
        self.cancels: list[str] = []
        self.queries: list[str] = []
        self.submit_error: Exception | None = None
        self.accept_on_submit = True

    def set_listener(self, listener: VenueListener) -> None:
        self.listener = listener

    def state(self, order: Order, status: S = S.ACCEPTED, filled: str = "0") -> VenueOrderState:
        return VenueOrderState(
            client_order_id=order.client_order_id,
            venue_order_id=f"v-{order.client_order_id}",
            symbol=order.symbol,
            side=order.side,
            quantity=order.quantity,
            filled_quantity=Decimal(filled),
            status=status,
            price=order.price,
        )

    async def submit(self, order: Order) -> None:
        self.submits.append(order.client_order_id)
        if self.submit_error is not None:
            error, self.submit_error = self.submit_error, None
            if isinstance(error, VenueUnknownError):
                self.orders[order.client_order_id] = self.state(order)  # it did land
            raise error
        self.orders[order.client_order_id] = self.state(order)
        if self.accept_on_submit and self.listener is not None:
            await self.listener(
                OrderEvent(
                    order_id=order.order_id,
                    client_order_id=order.client_order_id,
                    symbol=order.symbol,
                    status=S.ACCEPTED,
                    venue=self.name,
                    timestamp=T0,
                )
            )

    async def cancel(self, client_order_id: str) -> None:
        self.cancels.append(client_order_id)

    async def query_order(self, client_order_id: str) -> VenueOrderState | None:
        self.queries.append(client_order_id)
        return self.orders.get(client_order_id)

    async def open_orders(self) -> list[VenueOrderState]:
        return [s for s in self.orders.values() if not s.status.is_terminal]

    async def fills_since(self, since: dt.datetime) -> list[Fill]:
        return [f for f in self.fills if f.timestamp >= since]

    async def positions(self) -> dict[str, Decimal] | None:
        return self.held

    async def poll(self) -> None:
        return None


class Harness:
    def __init__(self, db: str, venue: ScriptedVenue, **options: object) -> None:
        self.sql = make_engine(db)
        upgrade(self.sql)
        self.store = SqlOrderStore(self.sql)
        self.venue = venue
        self.bus = InProcessBus()
        self.halts: list[tuple[str, str]] = []
        self.published: dict[str, list[object]] = {}

        async def halt(trigger: str, reason: str) -> None:
            self.halts.append((trigger, reason))

        self.engine = ExecutionEngine(
            Router([venue], default=venue.name),
            OrderTracker(self.store),
            halt=halt,
            resolve_every_s=0,  # the tests call resolve_unknown() themselves
            fills_lookback_s=5 * 365 * 86_400.0,  # the fills are of 2024
            **options,  # type: ignore[arg-type]
        )

    async def start(self) -> None:
        async def record(envelope: Envelope) -> None:
            self.published.setdefault(envelope.topic, []).append(envelope.payload)

        self.bus.consume("orders.*", record, name="recorder")
        await self.engine.start(self.bus)

    async def close(self) -> None:
        await self.engine.stop()
        await self.bus.drain(timeout=5)
        await self.bus.close()
        self.sql.dispose()

    def status(self, order: Order) -> S | None:
        record = self.store.get(order.client_order_id)
        return None if record is None else record.status


@pytest.fixture(params=["sqlite", "postgresql"])
def book(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The order book's URL: a SQLite file, and a database on a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'book.db'}"
    return str(request.getfixturevalue("postgres").database())


@pytest.fixture
async def harness(book: str) -> AsyncIterator[Harness]:
    h = Harness(book, ScriptedVenue(), not_found_grace_s=0.2)
    await h.start()
    yield h
    await h.close()


def test_the_scripted_venue_is_a_venue() -> None:
    assert isinstance(ScriptedVenue(), Venue)


async def test_a_submission_is_committed_then_accepted(harness: Harness) -> None:
    order = make_order(1)
    await harness.engine.submit(order)
    await harness.engine.submit(order)  # the same intent again: never sent twice
    assert harness.venue.submits == [order.client_order_id]
    assert harness.status(order) is S.ACCEPTED
    assert harness.engine.duplicate_intents == 1


async def test_a_definite_refusal_is_rejected(harness: Harness) -> None:
    order = make_order(2)
    harness.venue.submit_error = VenueRejectedError("insufficient buying power")
    await harness.engine.submit(order)
    await harness.bus.drain(timeout=5)
    record = harness.store.get(order.client_order_id)
    assert record is not None
    assert record.status is S.REJECTED
    assert "insufficient buying power" in record.reason
    assert [e.client_order_id for e in harness.published["orders.rejected"]] == [  # type: ignore[attr-defined]
        order.client_order_id
    ]


async def test_an_unknown_outcome_is_resolved_by_a_query_never_by_a_resubmit(
    harness: Harness,
) -> None:
    order = make_order(3)
    harness.venue.submit_error = VenueUnknownError("timeout after 5 s")
    await harness.engine.submit(order)
    assert harness.status(order) is S.UNKNOWN  # never REJECTED on a timeout
    assert await harness.engine.resolve_unknown() == 1
    assert harness.status(order) is S.ACCEPTED  # the venue had it
    assert harness.venue.submits == [order.client_order_id]  # sent once


async def test_not_found_within_the_grace_period_is_not_lost(harness: Harness) -> None:
    order = make_order(4)
    harness.venue.submit_error = VenueUnknownError("connection reset")
    await harness.engine.submit(order)
    harness.venue.orders.pop(order.client_order_id)  # the venue does not know it (yet)
    assert await harness.engine.resolve_unknown() == 0
    assert harness.status(order) is S.UNKNOWN
    await asyncio.sleep(0.25)  # past the grace period
    assert await harness.engine.resolve_unknown() == 1
    record = harness.store.get(order.client_order_id)
    assert record is not None
    assert record.status is S.REJECTED
    assert "never resubmitted" in record.reason
    assert harness.venue.submits == [order.client_order_id]


async def test_fills_settle_an_unknown_order_and_repeat_fills_are_dropped(
    harness: Harness,
) -> None:
    order = make_order(5)
    harness.venue.submit_error = VenueUnknownError("502")
    await harness.engine.submit(order)
    fills = (make_fill(order, "1", "t1"), make_fill(order, "1", "t2"))
    harness.venue.orders[order.client_order_id] = msgspec_replace(
        harness.venue.orders[order.client_order_id], fills=fills, status=S.FILLED
    )
    await harness.engine.resolve_unknown()
    assert harness.status(order) is S.FILLED
    for fill in fills:  # reported again, e.g. by a poll
        assert harness.engine.tracker.on_fill(fill) is None
    assert harness.engine.fills == 2
    assert harness.engine.tracker.duplicate_fills == 2


async def test_a_halted_breaker_cancels_every_open_order(harness: Harness) -> None:
    orders = [make_order(n) for n in (10, 11, 12)]
    for order in orders:
        await harness.engine.submit(order)
    await harness.bus.publish(
        topics.risk("breaker"),
        BreakerEvent(
            state=BreakerState.HALTED,
            previous=BreakerState.ACTIVE,
            trigger="kill_switch",
            reason="manual kill",
            timestamp=T0,
        ),
    )
    await harness.bus.drain(timeout=5)
    assert sorted(harness.venue.cancels) == sorted(o.client_order_id for o in orders)


def msgspec_replace(state: VenueOrderState, **changes: object) -> VenueOrderState:
    import msgspec

    return msgspec.structs.replace(state, **changes)


# -- reconciliation at start ----------------------------------------------------------------


async def test_reconciliation_adopts_closes_flags_and_recovers_fills(book: str) -> None:
    venue = ScriptedVenue()
    db = book
    # A first life: four orders, then the process dies (nothing more is written).
    first = Harness(db, venue)
    await first.start()
    pending, accepted, canceled, filled = (make_order(n) for n in (20, 21, 22, 23))
    for order in (accepted, canceled, filled):
        await first.engine.submit(order)
    first.engine.tracker.record_intent(pending, venue.name)  # died before the network call
    await first.close()
    # While it was down: one order canceled, one filled, a stranger's order appeared.
    venue.orders[canceled.client_order_id] = venue.state(canceled, S.CANCELED)
    venue.orders[filled.client_order_id] = venue.state(filled, S.FILLED, "2")
    venue.fills = [make_fill(filled, "0.5", "f1"), make_fill(filled, "1.5", "f2")]
    stranger = make_order(99)
    venue.orders[stranger.client_order_id] = venue.state(stranger)
    venue.held = {"BTC/USD": Decimal("2")}

    second = Harness(db, venue, reconcile=True, not_found_grace_s=0.0)
    await second.start()
    report = second.engine.reconciliation
    assert report is not None
    assert accepted.client_order_id in report.adopted
    assert canceled.client_order_id in report.closed
    assert report.unknown == [pending.client_order_id]  # not resubmitted
    assert report.orphans == [stranger.client_order_id]
    assert (report.fills_recovered, report.fills_known) == (2, 0)
    assert report.position_mismatches == {}
    assert second.status(canceled) is S.CANCELED
    assert second.status(filled) is S.FILLED
    assert second.status(pending) is S.UNKNOWN
    assert pending.client_order_id not in venue.submits  # never sent after the restart
    assert await second.engine.resolve_unknown() == 1  # absent past the grace: closed
    assert second.status(pending) is S.REJECTED
    assert second.halts == []
    await second.close()

    # A third life: the same fills reported again are dropped; a position the venue holds
    # that our fills do not explain halts trading.
    venue.held = {"BTC/USD": Decimal("3")}
    third = Harness(db, venue, reconcile=True)
    await third.start()
    report = third.engine.reconciliation
    assert report is not None
    assert (report.fills_recovered, report.fills_known) == (0, 2)
    assert report.position_mismatches == {"BTC/USD": {"ours": "2.0", "venue": "3"}}
    assert third.halts
    assert third.halts[0][0] == "reconciliation"
    assert "BTC/USD: ours 2.0 vs venue 3" in third.halts[0][1]
    await third.close()


async def test_reconciliation_reopens_orders_closed_as_absent_that_the_venue_has(
    book: str,
) -> None:
    """Closed as absent (REJECTED "never resubmitted"), then the process restarts, and the
    venue shows one of them open and the other filled: both are reopened with the venue's
    state, not flagged as conflicts, and nothing halts."""
    venue = ScriptedVenue()
    first = Harness(book, venue, not_found_grace_s=0.0)
    await first.start()
    shows_up, trades = make_order(40), make_order(41)
    for order in (shows_up, trades):
        venue.submit_error = VenueUnknownError("timeout")
        await first.engine.submit(order)
        venue.orders.pop(order.client_order_id)  # not visible (yet)
    assert await first.engine.resolve_unknown() == 2
    assert first.status(shows_up) is S.REJECTED
    await first.close()
    # While it was down, the venue's lagging view caught up: one open, one filled.
    venue.orders[shows_up.client_order_id] = venue.state(shows_up)
    venue.orders[trades.client_order_id] = venue.state(trades, S.FILLED, "2")
    venue.fills = [make_fill(trades, "2", "late-1")]

    second = Harness(book, venue, reconcile=True)
    await second.start()
    report = second.engine.reconciliation
    assert report is not None
    assert report.conflicts == []
    assert shows_up.client_order_id in report.adopted
    assert trades.client_order_id in report.adopted
    assert second.status(shows_up) is S.ACCEPTED
    assert second.status(trades) is S.FILLED
    assert report.fills_recovered == 1
    assert second.halts == []
    await second.close()


def halted_event() -> BreakerEvent:
    return BreakerEvent(
        state=BreakerState.HALTED,
        previous=BreakerState.ACTIVE,
        trigger="kill_switch",
        reason="manual kill",
        timestamp=T0,
    )


async def test_orders_approved_before_a_halt_are_never_sent(harness: Harness) -> None:
    await harness.bus.publish(topics.risk("breaker"), halted_event())
    await harness.bus.drain(timeout=5)
    queued = make_order(30)
    await harness.engine.submit(queued)  # approved earlier, still in the queue
    assert harness.venue.submits == []
    assert harness.status(queued) is S.REJECTED
    assert harness.engine.refused_halted == 1


async def test_a_halt_during_a_submission_cancels_the_order_when_the_venue_answers(
    harness: Harness,
) -> None:
    order = make_order(31)
    gate = asyncio.Event()
    submit = harness.venue.submit

    async def slow_submit(o: Order) -> None:
        await gate.wait()
        await submit(o)

    harness.venue.submit = slow_submit  # type: ignore[method-assign]
    task = asyncio.create_task(harness.engine.submit(order))
    await asyncio.sleep(0.01)
    await harness.bus.publish(topics.risk("breaker"), halted_event())
    await harness.bus.drain(timeout=5)
    assert harness.venue.cancels == []  # in flight: nothing to cancel yet
    gate.set()
    await task
    assert harness.venue.cancels == [order.client_order_id]


async def test_an_order_the_venue_acknowledged_and_then_lost_is_never_closed_by_us(
    book: str,
) -> None:
    venue = ScriptedVenue()
    h = Harness(book, venue, not_found_grace_s=0.0)
    await h.start()
    order = make_order(32)
    await h.engine.submit(order)
    assert h.status(order) is S.ACCEPTED
    venue.orders.clear()  # the venue no longer finds it
    await h.engine.mark_unknown(order, venue, "lost track")
    assert await h.engine.resolve_unknown() == 0
    assert h.status(order) is S.UNKNOWN  # flagged, not REJECTED: it may have traded
    assert h.engine.resolved["acknowledged_missing"] == 1
    await h.close()


async def test_a_venue_that_cannot_be_reconciled_halts_and_its_orders_become_unknown(
    book: str,
) -> None:
    venue = ScriptedVenue()
    db = book
    first = Harness(db, venue)
    await first.start()
    order = make_order(33)
    await first.engine.submit(order)
    await first.close()

    async def down() -> list[VenueOrderState]:
        raise ConnectionError("venue unreachable")

    venue.open_orders = down  # type: ignore[method-assign]
    second = Harness(db, venue, reconcile=True)
    second.engine.reconcile_backoff_s = 0.0
    await second.start()
    report = second.engine.reconciliation
    assert report is not None
    assert report.errors == ["scripted: ConnectionError: venue unreachable"]
    assert second.status(order) is S.UNKNOWN  # the resolver keeps asking
    assert second.halts
    assert "could not be reconciled" in second.halts[0][1]
    await second.close()


async def test_an_order_open_at_the_venue_but_closed_in_our_book_halts(book: str) -> None:
    venue = ScriptedVenue()
    db = book
    first = Harness(db, venue, not_found_grace_s=0.0)
    await first.start()
    order = make_order(34)
    await first.engine.submit(order)
    await first.engine.apply_state(venue.state(order, S.CANCELED), venue)  # the venue said so
    assert first.status(order) is S.CANCELED
    await first.close()
    venue.orders[order.client_order_id] = venue.state(order)  # ...and then shows it open
    # (An order *we* closed as absent is reopened instead: the test above.)
    second = Harness(db, venue, reconcile=True)
    await second.start()
    report = second.engine.reconciliation
    assert report is not None
    assert report.conflicts == [order.client_order_id]
    assert second.halts
    assert "closed in our book" in second.halts[0][1]
    await second.close()


async def test_an_event_whose_publish_failed_stays_in_the_outbox_until_the_relay(
    book: str,
) -> None:
    """The bus is unreachable for a moment: the committed event is not lost, the relay
    publishes it (under the same message id) once the bus answers again."""
    h = Harness(book, ScriptedVenue(), not_found_grace_s=0.2)
    outbox = SqlOutbox(h.sql)
    h.engine.outbox = outbox
    await h.start()
    try:
        publish = h.bus.publish
        failing = {"orders.accepted"}

        async def flaky(topic: str, payload: object, *, msg_id: str | None = None) -> str:
            if topic in failing:
                raise BusError("redis: connection refused")
            return await publish(topic, payload, msg_id=msg_id)

        h.bus.publish = flaky  # type: ignore[method-assign]
        order = make_order(7)
        await h.engine.submit(order)
        await h.bus.drain(timeout=5)
        assert h.status(order) is S.ACCEPTED  # the book moved on
        assert "orders.accepted" not in h.published  # the event did not go out
        assert outbox.counts()["pending"] == 1
        assert h.engine.publish_errors == 1

        failing.clear()  # the bus is back
        assert await h.engine.relay() == 1
        await h.bus.drain(timeout=5)
        accepted = h.published["orders.accepted"]
        assert [e.client_order_id for e in accepted] == [order.client_order_id]  # type: ignore[attr-defined]
        assert outbox.counts() == {"pending": 0, "published": 1}
        assert await h.engine.relay() == 0
    finally:
        await h.close()
