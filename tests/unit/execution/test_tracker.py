"""The order tracker's state machine, checked statefully against an in-memory order store."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from decimal import Decimal

import msgspec
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from quantlab.core import ids
from quantlab.core.enums import Liquidity, OrderStatus, OrderType, Side, TimeInForce
from quantlab.core.errors import OrderError, StorageError
from quantlab.core.messages import Fill, Order
from quantlab.execution.ports import OrderRecord, OrderStore, Outgoing
from quantlab.execution.tracker import TRANSITIONS, OrderTracker, check_transition

# Same examples on every run (no example database, no random seed): deterministic tests.
DETERMINISTIC = settings(derandomize=True, database=None, deadline=None)

S = OrderStatus
T0 = dt.datetime(2018, 1, 10, 4, 55, tzinfo=dt.UTC)


class MemoryOrderStore:
    """An in-memory `OrderStore` with the SQL store's semantics; it logs every status change."""

    def __init__(self) -> None:
        self.records: dict[str, OrderRecord] = {}
        self.trades: set[tuple[str, str]] = set()
        self.fills: list[Fill] = []
        self.changes: list[tuple[str, S, S]] = []  # (client_order_id, old, new)
        self.outbox: list[Outgoing] = []

    def record_intent(self, order: Order, venue: str, status: S) -> bool:
        if order.client_order_id in self.records:
            return False
        self.records[order.client_order_id] = OrderRecord(
            order=order,
            status=status,
            venue=venue,
            filled_quantity=Decimal(0),
            reason="",
            updated_at=order.timestamp,
        )
        return True

    def set_status(
        self,
        client_order_id: str,
        status: S,
        at: dt.datetime,
        reason: str = "",
        *,
        outgoing: Outgoing | None = None,
    ) -> None:
        if outgoing is not None:
            self.outbox.append(outgoing)
        record = self.records.get(client_order_id)
        if record is None:
            raise StorageError(f"no order with client_order_id {client_order_id!r}")
        self.changes.append((client_order_id, record.status, status))
        self.records[client_order_id] = msgspec.structs.replace(
            record, status=status, updated_at=at, reason=reason or record.reason
        )

    def record_fill(self, fill: Fill, status: S, *, outgoing: Outgoing | None = None) -> bool:
        record = self.records.get(fill.client_order_id)
        if record is None:
            raise StorageError(f"fill {fill.trade_id} for unknown order {fill.client_order_id!r}")
        if (fill.venue, fill.trade_id) in self.trades:
            return False
        if outgoing is not None:
            self.outbox.append(outgoing)
        self.trades.add((fill.venue, fill.trade_id))
        self.fills.append(fill)
        if status is not record.status:
            self.changes.append((fill.client_order_id, record.status, status))
        self.records[fill.client_order_id] = msgspec.structs.replace(
            record,
            status=status,
            filled_quantity=record.filled_quantity + fill.quantity,
            updated_at=fill.timestamp,
        )
        return True

    def has_fill(self, venue: str, trade_id: str) -> bool:
        return (venue, trade_id) in self.trades

    def net_positions(self, venue: str) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for f in self.fills:
            if self.records[f.client_order_id].venue == venue:
                out[f.symbol] = out.get(f.symbol, Decimal(0)) + f.quantity * f.side.sign
        return out

    def get(self, client_order_id: str) -> OrderRecord | None:
        return self.records.get(client_order_id)

    def open_orders(self) -> list[OrderRecord]:
        return [r for r in self.records.values() if not r.status.is_terminal]

    def order_id_for(self, client_order_id: str) -> uuid.UUID | None:
        record = self.records.get(client_order_id)
        return None if record is None else record.order.order_id


def make_order(n: int, quantity: Decimal = Decimal("1")) -> Order:
    signal = ids.signal_id("test", "ETH/BTC", n)
    coid = ids.client_order_id(signal)
    return Order(
        order_id=ids.order_id(coid),
        client_order_id=coid,
        symbol="ETH/BTC",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        quantity=quantity,
        price=Decimal("0.05"),
        time_in_force=TimeInForce.GTC,
        strategy_id="test",
        signal_id=signal,
        timestamp=T0,
    )


def make_fill(order: Order, quantity: Decimal, trade_id: str, venue: str = "paper") -> Fill:
    return Fill(
        fill_id=ids.fill_id(venue, trade_id),
        order_id=order.order_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side,
        price=Decimal("0.05"),
        quantity=quantity,
        fee=Decimal(0),
        fee_currency="BTC",
        liquidity=Liquidity.MAKER,
        timestamp=T0 + dt.timedelta(minutes=5),
        venue=venue,
        trade_id=trade_id,
    )


def test_memory_store_is_an_order_store() -> None:
    assert isinstance(MemoryOrderStore(), OrderStore)


def test_transition_table_shape() -> None:
    assert set(TRANSITIONS) == set(S)
    for status in S:
        assert (TRANSITIONS[status] == frozenset()) == status.is_terminal
        assert S.NEW not in TRANSITIONS[status]
    check_transition(S.ACCEPTED, S.FILLED, "x")
    with pytest.raises(OrderError, match=r"ql-1: transition filled -> accepted"):
        check_transition(S.FILLED, S.ACCEPTED, "ql-1")


class TrackerMachine(RuleBasedStateMachine):
    """The tracker against a model: what it applies, refuses and counts."""

    orders = Bundle("orders")

    def __init__(self) -> None:
        super().__init__()
        self.store = MemoryOrderStore()
        self.tracker = OrderTracker(self.store)
        self.by_coid: dict[str, Order] = {}
        self.status: dict[str, S] = {}
        self.filled: dict[str, Decimal] = {}
        self.frozen: dict[str, tuple[S, Decimal]] = {}
        self.trades: set[tuple[str, str]] = set()
        self.invalid: Counter[str] = Counter()
        self.duplicates = 0
        self.overfills = 0
        self.late = 0

    @rule(target=orders, quarters=st.integers(1, 12))
    def new_order(self, quarters: int) -> str:
        order = make_order(len(self.by_coid), Decimal(quarters) / 4)
        assert self.tracker.record_intent(order, "paper") is True
        assert self.tracker.record_intent(order, "paper") is False  # never twice
        coid = order.client_order_id
        self.by_coid[coid] = order
        self.status[coid] = S.PENDING_SUBMIT
        self.filled[coid] = Decimal(0)
        return coid

    @rule(coid=orders, new=st.sampled_from(list(S)))
    def report(self, coid: str, new: S) -> None:
        current = self.status[coid]
        applied = self.tracker.transition(coid, new, T0, f"to {new.value}")
        if current.is_terminal:
            expected = False
            self.invalid[f"unknown_order->{new.value}"] += 1
        elif new in (S.FILLED, S.PARTIALLY_FILLED):
            expected = False  # fill states come from fills only, never from a status report
        elif current == new:
            expected = False  # a repeated report: ignored, not counted
        elif new in TRANSITIONS[current]:
            expected = True
        else:
            expected = False
            self.invalid[f"{current.value}->{new.value}"] += 1
        assert applied is expected
        if applied:
            self.status[coid] = new

    @rule(
        coid=orders,
        quarters=st.integers(1, 12),
        trade=st.integers(0, 25),
        venue=st.sampled_from(["paper", "other"]),
    )
    def fill(self, coid: str, quarters: int, trade: int, venue: str) -> None:
        order = self.by_coid[coid]
        quantity = Decimal(quarters) / 4
        current, filled = self.status[coid], self.filled[coid]
        result = self.tracker.on_fill(make_fill(order, quantity, f"t{trade}", venue))
        total = filled + quantity
        new = S.FILLED if total == order.quantity else S.PARTIALLY_FILLED
        if current.is_terminal:
            # A fill after the order closed: a repeat, an overfill, or a real execution that
            # raced the cancel or expiry, which is kept (the status stays terminal).
            if (venue, f"t{trade}") in self.trades:
                expected, self.duplicates = None, self.duplicates + 1
            elif total > order.quantity:
                expected, self.overfills = None, self.overfills + 1
            else:
                expected, self.late = current, self.late + 1
                self.trades.add((venue, f"t{trade}"))
                self.filled[coid] = total
            assert result is expected
            return
        if total > order.quantity and (venue, f"t{trade}") in self.trades:
            expected = None  # a repeated fill is a duplicate, even where it would overfill
            self.duplicates += 1
        elif total > order.quantity:
            expected = None
            self.overfills += 1
        elif new not in TRANSITIONS[current]:
            expected = None
            self.invalid[f"{current.value}->{new.value}"] += 1
        elif (venue, f"t{trade}") in self.trades:
            expected = None
            self.duplicates += 1
        else:
            expected = new
            self.trades.add((venue, f"t{trade}"))
        assert result is expected
        if expected is not None:
            self.status[coid], self.filled[coid] = new, total

    @rule(new=st.sampled_from(list(S)))
    def report_for_an_unknown_order(self, new: S) -> None:
        assert self.tracker.transition("ql-unknown", new, T0) is False
        self.invalid[f"unknown_order->{new.value}"] += 1
        assert self.tracker.status("ql-unknown") is None

    @invariant()
    def store_matches_the_model(self) -> None:
        for coid, status in self.status.items():
            record = self.store.get(coid)
            assert record is not None
            assert self.tracker.status(coid) is status
            assert record.status is status
            assert record.filled_quantity == self.filled[coid]

    @invariant()
    def filled_never_exceeds_the_order(self) -> None:
        for coid, record in self.store.records.items():
            assert record.filled_quantity <= self.by_coid[coid].quantity
            assert sum(f.quantity for f in self.store.fills if f.client_order_id == coid) == (
                record.filled_quantity
            )

    @invariant()
    def only_allowed_transitions_were_applied(self) -> None:
        for _coid, old, new in self.store.changes:
            assert new in TRANSITIONS[old], f"{old} -> {new}"

    @invariant()
    def terminal_states_never_change(self) -> None:
        # The status of a closed order is final; its filled quantity only grows, by fills
        # that raced its cancel or expiry (never past the order's quantity).
        for coid, record in self.store.records.items():
            if coid in self.frozen:
                status, filled = self.frozen[coid]
                assert record.status is status
                assert record.filled_quantity >= filled
            if record.status.is_terminal:
                self.frozen[coid] = (record.status, record.filled_quantity)

    @invariant()
    def duplicates_are_never_applied(self) -> None:
        keys = [(f.venue, f.trade_id) for f in self.store.fills]
        assert len(keys) == len(set(keys))

    @invariant()
    def counters_match(self) -> None:
        assert self.tracker.invalid_transitions == self.invalid
        assert self.tracker.duplicate_fills == self.duplicates
        assert self.tracker.overfills == self.overfills
        assert self.tracker.late_fills == self.late


TrackerMachine.TestCase.settings = settings(DETERMINISTIC, max_examples=100, stateful_step_count=50)
test_tracker_state_machine = TrackerMachine.TestCase


# -- examples -------------------------------------------------------------------------------


def test_a_full_life_cycle() -> None:
    store = MemoryOrderStore()
    tracker = OrderTracker(store)
    order = make_order(1, Decimal("1.5"))
    coid = order.client_order_id
    assert tracker.record_intent(order, "paper")
    assert tracker.status(coid) is S.PENDING_SUBMIT
    assert tracker.transition(coid, S.SUBMITTED, T0)
    assert tracker.transition(coid, S.ACCEPTED, T0)
    assert tracker.transition(coid, S.ACCEPTED, T0) is False  # a repeated report
    assert tracker.on_fill(make_fill(order, Decimal("0.5"), "a")) is S.PARTIALLY_FILLED
    assert tracker.on_fill(make_fill(order, Decimal("0.5"), "a")) is None  # duplicate
    assert tracker.on_fill(make_fill(order, Decimal("1.5"), "b")) is None  # overfill
    assert tracker.on_fill(make_fill(order, Decimal("1.0"), "c")) is S.FILLED
    assert tracker.status(coid) is S.FILLED  # from the store, once no longer live
    assert tracker.transition(coid, S.CANCELED, T0) is False
    record = store.get(coid)
    assert record is not None
    assert (record.status, record.filled_quantity) == (S.FILLED, Decimal("1.5"))
    assert (tracker.duplicate_fills, tracker.overfills) == (1, 1)
    assert tracker.invalid_transitions == Counter({"unknown_order->canceled": 1})


def test_an_intent_already_in_the_store_is_not_sent_again() -> None:
    store = MemoryOrderStore()
    order = make_order(2)
    OrderTracker(store).record_intent(order, "paper")
    # A restarted process (new tracker, same store) must not send the order a second time.
    assert OrderTracker(store).record_intent(order, "paper") is False


def test_fills_of_open_orders_are_booked_after_a_restart() -> None:
    store = MemoryOrderStore()
    order = make_order(3)
    first = OrderTracker(store)
    first.record_intent(order, "paper")
    first.transition(order.client_order_id, S.ACCEPTED, T0)
    restarted = OrderTracker(store)  # the process crashed and came back
    assert restarted.recover() == 1
    assert restarted.on_fill(make_fill(order, Decimal("1"), "r1")) is S.FILLED
    record = store.get(order.client_order_id)
    assert record is not None
    assert record.filled_quantity == Decimal("1")


def test_a_fill_reported_after_a_filled_status_is_booked() -> None:
    store = MemoryOrderStore()
    tracker = OrderTracker(store)
    order = make_order(4)
    tracker.record_intent(order, "paper")
    tracker.transition(order.client_order_id, S.ACCEPTED, T0)
    # Venues may send the order's status update before its execution (trade) report.
    tracker.transition(order.client_order_id, S.FILLED, T0)
    tracker.on_fill(make_fill(order, Decimal("1"), "f1"))
    record = store.get(order.client_order_id)
    assert record is not None
    assert record.filled_quantity == order.quantity
    assert len(store.fills) == 1
