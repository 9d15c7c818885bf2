"""Average-cost position accounting in `Decimal`: pure functions of fills and marks.

Conventions: realized PnL is booked when a fill reduces a position, against the average cost;
a fill that crosses zero closes the old position and opens the rest at the fill price; fees
are kept apart (total PnL = realized + unrealized - fees).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from quantlab.core.enums import Side

ZERO = Decimal(0)


@dataclass
class Position:
    symbol: str
    currency: str
    quantity: Decimal = ZERO
    avg_price: Decimal = ZERO
    realized: Decimal = ZERO
    fees: Decimal = ZERO
    traded_notional: Decimal = ZERO
    fills: int = 0

    def apply(self, side: Side, quantity: Decimal, price: Decimal, fee: Decimal = ZERO) -> Decimal:
        """Book a fill; returns the PnL it realized."""
        signed = quantity * side.sign
        realized = ZERO
        q = self.quantity
        if q == 0 or (q > 0) == (signed > 0):
            new_q = q + signed
            self.avg_price = (abs(q) * self.avg_price + quantity * price) / abs(new_q)
            self.quantity = new_q
        else:
            closed = min(quantity, abs(q))
            realized = closed * (price - self.avg_price) * (1 if q > 0 else -1)
            self.quantity = q + signed
            if self.quantity == 0:
                self.avg_price = ZERO
            elif (self.quantity > 0) != (q > 0):
                self.avg_price = price  # flipped through zero: the rest opens at this price
        self.realized += realized
        self.fees += fee
        self.traded_notional += quantity * price
        self.fills += 1
        return realized

    def unrealized(self, mark: Decimal | None) -> Decimal:
        if mark is None or self.quantity == 0:
            return ZERO
        return self.quantity * (mark - self.avg_price)


@dataclass
class Portfolio:
    """Positions by symbol with PnL per currency."""

    positions: dict[str, Position] = field(default_factory=dict)
    marks: dict[str, Decimal] = field(default_factory=dict)

    def position(self, symbol: str, currency: str) -> Position:
        found = self.positions.get(symbol)
        if found is None:
            found = self.positions[symbol] = Position(symbol, currency)
        return found

    def pnl_by_currency(self) -> dict[str, dict[str, Decimal]]:
        out: dict[str, dict[str, Decimal]] = {}
        for p in self.positions.values():
            row = out.setdefault(
                p.currency, {"realized": ZERO, "unrealized": ZERO, "fees": ZERO, "total": ZERO}
            )
            unrealized = p.unrealized(self.marks.get(p.symbol))
            row["realized"] += p.realized
            row["unrealized"] += unrealized
            row["fees"] += p.fees
            row["total"] += p.realized + unrealized - p.fees
        return out
