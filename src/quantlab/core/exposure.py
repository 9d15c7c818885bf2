"""Position plus open-order exposure per symbol, from the order and fill stream.

Pure bookkeeping shared by every stage that must not over-commit (order builder, risk):
a decision counts what is filled *and* what is on its way.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from quantlab.core.messages import Fill, Order

_ZERO = Decimal(0)


class ExposureBook:
    def __init__(self) -> None:
        self._position: dict[str, Decimal] = {}
        self._open: dict[str, tuple[str, Decimal]] = {}  # client_order_id -> (symbol, signed qty)
        self._pending: dict[str, Decimal] = {}
        self._fills: set[uuid.UUID] = set()

    def position(self, symbol: str) -> Decimal:
        return self._position.get(symbol, _ZERO)

    def pending(self, symbol: str) -> Decimal:
        """Signed quantity of open orders not yet filled."""
        return self._pending.get(symbol, _ZERO)

    def exposure(self, symbol: str) -> Decimal:
        return self.position(symbol) + self.pending(symbol)

    def is_open(self, client_order_id: str) -> bool:
        return client_order_id in self._open

    def add_order(self, order: Order) -> None:
        if order.client_order_id in self._open:
            return
        signed = order.quantity * order.side.sign
        self._open[order.client_order_id] = (order.symbol, signed)
        self._pending[order.symbol] = self.pending(order.symbol) + signed

    def close_order(self, client_order_id: str) -> None:
        """The order will fill no more (canceled, rejected, denied, expired)."""
        held = self._open.pop(client_order_id, None)
        if held is not None:
            symbol, remaining = held
            self._pending[symbol] = self.pending(symbol) - remaining

    def apply_fill(self, fill: Fill) -> bool:
        """Book a fill once (dedup on fill_id); False if it was seen before."""
        if fill.fill_id in self._fills:
            return False
        self._fills.add(fill.fill_id)
        signed = fill.quantity * fill.side.sign
        self._position[fill.symbol] = self.position(fill.symbol) + signed
        held = self._open.get(fill.client_order_id)
        if held is not None:
            symbol, remaining = held
            take = signed if abs(signed) < abs(remaining) else remaining
            left = remaining - take
            self._pending[symbol] = self.pending(symbol) - take
            if left == 0:
                del self._open[fill.client_order_id]
            else:
                self._open[fill.client_order_id] = (symbol, left)
        return True
