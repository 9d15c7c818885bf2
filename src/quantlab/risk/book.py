"""Open buy and sell quantities per symbol, for the gross position limit.

`ExposureBook` nets open orders into one signed quantity; a gross limit needs the two sides
apart: ``gross = (max(position, 0) + open buys) + (max(-position, 0) + open sells)``.
"""

from __future__ import annotations

from decimal import Decimal

from quantlab.core.enums import Side
from quantlab.core.messages import Fill, Order

_ZERO = Decimal(0)


class OpenSides:
    def __init__(self) -> None:
        self._open: dict[str, tuple[str, Side, Decimal]] = {}  # coid -> (symbol, side, left)
        self._buy: dict[str, Decimal] = {}
        self._sell: dict[str, Decimal] = {}

    def _side(self, side: Side) -> dict[str, Decimal]:
        return self._buy if side is Side.BUY else self._sell

    def open_buy(self, symbol: str) -> Decimal:
        return self._buy.get(symbol, _ZERO)

    def open_sell(self, symbol: str) -> Decimal:
        return self._sell.get(symbol, _ZERO)

    def add(self, order: Order) -> None:
        if order.client_order_id in self._open:
            return
        self._open[order.client_order_id] = (order.symbol, order.side, order.quantity)
        book = self._side(order.side)
        book[order.symbol] = book.get(order.symbol, _ZERO) + order.quantity

    def close(self, client_order_id: str) -> None:
        held = self._open.pop(client_order_id, None)
        if held is not None:
            symbol, side, left = held
            book = self._side(side)
            book[symbol] = book.get(symbol, _ZERO) - left

    def fill(self, fill: Fill) -> None:
        """Take a (new) fill off its order's open quantity."""
        held = self._open.get(fill.client_order_id)
        if held is None:
            return
        symbol, side, left = held
        take = fill.quantity if fill.quantity < left else left
        book = self._side(side)
        book[symbol] = book.get(symbol, _ZERO) - take
        if left - take > 0:
            self._open[fill.client_order_id] = (symbol, side, left - take)
        else:
            del self._open[fill.client_order_id]

    def gross(self, symbol: str, position: Decimal) -> Decimal:
        """Long plus short open exposure of `symbol` (a quantity) given its `position`."""
        long = (position if position > 0 else _ZERO) + self.open_buy(symbol)
        short = (-position if position < 0 else _ZERO) + self.open_sell(symbol)
        return long + short
