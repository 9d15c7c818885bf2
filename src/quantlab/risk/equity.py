"""Equity for the circuit breaker: cash flows from fills plus positions marked to market.

Kept deliberately simple: every amount is in its symbol's quote currency and amounts of
different quote currencies are summed as they are (no conversion). A portfolio trading in
one quote currency (all ``*/BTC`` or all ``*/USD``) gets its exact equity; a mixed one gets
a sum of quote units, good enough to see a loss happening but not a valuation.
"""

from __future__ import annotations

from decimal import Decimal

from quantlab.core.messages import Fill

_ZERO = Decimal(0)


class EquityTracker:
    """``equity = cash + sum(position x mark)``, starting at 0 (profit and loss since start)."""

    def __init__(self) -> None:
        self.cash = _ZERO
        self.fees = _ZERO
        self._positions: dict[str, Decimal] = {}
        self._last_fill_price: dict[str, float] = {}

    def apply(self, fill: Fill, base: str | None = None) -> None:
        """Book a fill (the caller dedups fills). A fee in the base asset is valued at the
        fill price; any other fee currency is taken as quote units."""
        signed = fill.quantity if fill.side.sign > 0 else -fill.quantity
        fee = fill.fee * fill.price if base is not None and fill.fee_currency == base else fill.fee
        self.cash -= signed * fill.price + fee
        self.fees += fee
        held = self._positions.get(fill.symbol, _ZERO) + signed
        if held:
            self._positions[fill.symbol] = held
        else:
            self._positions.pop(fill.symbol, None)
        self._last_fill_price[fill.symbol] = float(fill.price)

    def position(self, symbol: str) -> Decimal:
        return self._positions.get(symbol, _ZERO)

    @property
    def holds(self) -> bool:
        return bool(self._positions)

    def equity(self, marks: dict[str, float]) -> float:
        """Cash plus positions at `marks` (the last fill price where no mark is known)."""
        total = float(self.cash)
        for symbol, quantity in self._positions.items():
            mark = marks.get(symbol)
            if mark is None:
                mark = self._last_fill_price[symbol]
            total += float(quantity) * mark
        return total
