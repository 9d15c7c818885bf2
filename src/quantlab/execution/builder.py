"""`OrderBuilder`: signals in, order intents out on ``orders.new``.

Sizing targets a position: a BUY signal aims at ``+notional / mid`` of the base asset, a SELL
at the negative, where the notional comes from the `Sizer` (fractional Kelly by default,
`sizing.KellySizer`); the order is the difference from what is held and already on its way.
The limit price is the far touch (``mid + spread/2`` for buys, ``mid - spread/2`` for sells),
rounded to the tick away from the touch, so the order is marketable when sent.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

from quantlab.bus import topics
from quantlab.bus.base import Bus, Envelope
from quantlab.bus.idempotent import IdempotentConsumer
from quantlab.core import ids
from quantlab.core.enums import OrderType, Side, TimeInForce
from quantlab.core.errors import BusError
from quantlab.core.exposure import ExposureBook
from quantlab.core.instruments import InstrumentBook, to_decimal
from quantlab.core.messages import Fill, Order, OrderDenied, OrderEvent, Signal
from quantlab.execution.sizing import FixedNotional, Sizer

_CLOSING_EVENTS = ("denied", "rejected", "canceled", "expired")


def limit_price(side: Side, mid: float, spread: float) -> Decimal:
    """The far touch: mid + spread/2 for a buy, mid - spread/2 for a sell."""
    half = to_decimal(spread) / 2
    return to_decimal(mid) + half if side is Side.BUY else to_decimal(mid) - half


class OrderBuilder:
    name = "order_builder"

    def __init__(
        self,
        instruments: InstrumentBook,
        *,
        order_notional: Decimal | None = None,
        sizer: Sizer | None = None,
        time_in_force: TimeInForce = TimeInForce.IOC,
    ) -> None:
        if (order_notional is None) == (sizer is None):
            raise ValueError("give the order builder either order_notional or a sizer")
        self.instruments = instruments
        self.sizer: Sizer = sizer or FixedNotional(order_notional or Decimal(0))
        self.time_in_force = time_in_force
        self.book = ExposureBook()
        self._bus: Bus | None = None
        self.built = 0
        self.skipped: Counter[str] = Counter()

    async def start(self, bus: Bus) -> None:
        self._bus = bus
        bus.consume(topics.ALL_SIGNALS, IdempotentConsumer(self._on_signal), name=self.name)
        bus.consume(topics.orders("filled"), self._on_fill, name=f"{self.name}.fills")
        for event in _CLOSING_EVENTS:
            bus.consume(topics.orders(event), self._on_closed, name=f"{self.name}.{event}")

    async def stop(self) -> None:
        return None

    def build(self, signal: Signal) -> Order | None:
        """The order that moves exposure toward the signal's target, or None (reason counted)."""
        if not signal.mid > 0:
            self.skipped["no_price"] += 1
            return None
        inst = self.instruments.get(signal.symbol)
        if inst is None:
            self.skipped["unknown_symbol"] += 1
            return None
        notional = self.sizer.notional(signal)
        if notional <= 0:
            self.skipped["no_edge"] += 1
            return None
        mid = to_decimal(signal.mid)
        target = signal.side.sign * notional / mid
        delta = target - self.book.exposure(signal.symbol)
        if delta * signal.side.sign <= 0:
            self.skipped["at_target"] += 1
            return None
        quantity = inst.round_quantity(abs(delta))
        if quantity <= 0:
            self.skipped["below_lot"] += 1
            return None
        price = inst.round_price(limit_price(signal.side, signal.mid, signal.spread), signal.side)
        if price <= 0:
            self.skipped["no_price"] += 1
            return None
        coid = ids.client_order_id(signal.signal_id)
        return Order(
            order_id=ids.order_id(coid),
            client_order_id=coid,
            symbol=signal.symbol,
            side=signal.side,
            order_type=OrderType.LIMIT,
            quantity=quantity,
            price=price,
            time_in_force=self.time_in_force,
            strategy_id=signal.strategy_id,
            signal_id=signal.signal_id,
            timestamp=signal.timestamp,
            ts_recv=signal.ts_recv,
        )

    def seed(self, open_orders: list[Order], fills: list[Fill]) -> None:
        """Rebuild the exposure book (and the sizer's record) from the order book of record."""
        for order in open_orders:
            self.book.add_order(order)
        for fill in fills:
            if self.book.apply_fill(fill):
                self.sizer.on_fill(fill)

    async def _on_signal(self, envelope: Envelope) -> None:
        if self._bus is None:
            raise BusError("OrderBuilder received a signal before start()")
        order = self.build(envelope.payload)
        if order is None or self.book.is_open(order.client_order_id):
            return
        self.book.add_order(order)
        self.built += 1
        await self._bus.publish(topics.orders("new"), order, msg_id=order.client_order_id)

    async def _on_fill(self, envelope: Envelope) -> None:
        fill: Fill = envelope.payload
        if self.book.apply_fill(fill):
            self.sizer.on_fill(fill)

    async def _on_closed(self, envelope: Envelope) -> None:
        msg: OrderDenied | OrderEvent = envelope.payload
        coid = msg.order.client_order_id if isinstance(msg, OrderDenied) else msg.client_order_id
        self.book.close_order(coid)

    def stats(self) -> dict[str, Any]:
        return {"built": self.built, "skipped": dict(self.skipped)}
