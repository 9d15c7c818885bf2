"""Average-cost position accounting in `Decimal`: pure functions of fills and marks.

Conventions: realized PnL is booked when a fill reduces a position, against the average cost;
a fill that crosses zero closes the old position and opens the rest at the fill price; fees
are kept apart (total PnL = realized + unrealized - fees).

Cash is kept per currency: a buy pays ``price * quantity`` of the quote currency, a sell
receives it, a fee is paid in its own currency; cash is exact (120 digits, nothing rounds).
Per quote currency, with every fee in that currency, ``cash + sum(quantity * mark) ==
realized + unrealized - fees`` (starting from no cash), up to the rounding of the average
cost (a division, in Decimal's 28-digit context): the identity the property tests check.
`Converter` turns amounts into one base currency with the latest marks (``BTC/USD`` or
``USD/BTC`` traded, or a configured rate).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Context, Decimal, localcontext

from quantlab.core.enums import Side
from quantlab.core.errors import ValidationError
from quantlab.core.instruments import split_symbol

ZERO = Decimal(0)
_EXACT = Context(prec=120)


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
    """Positions by symbol, cash by currency, PnL per currency."""

    positions: dict[str, Position] = field(default_factory=dict)
    marks: dict[str, Decimal] = field(default_factory=dict)
    cash: dict[str, Decimal] = field(default_factory=dict)
    # fees paid in a currency other than their symbol's quote currency
    other_fees: dict[str, Decimal] = field(default_factory=dict)

    def position(self, symbol: str, currency: str) -> Position:
        found = self.positions.get(symbol)
        if found is None:
            found = self.positions[symbol] = Position(symbol, currency)
        return found

    def apply(
        self,
        symbol: str,
        currency: str,
        side: Side,
        quantity: Decimal,
        price: Decimal,
        fee: Decimal = ZERO,
        fee_currency: str | None = None,
    ) -> Decimal:
        """Book a fill into its position and the cash; returns the PnL it realized.

        A fee in another currency than the quote is paid in that currency and counted in
        the position's `fees` only when it is in the quote currency.
        """
        fee_ccy = fee_currency or currency
        position = self.position(symbol, currency)
        realized = position.apply(side, quantity, price, fee if fee_ccy == currency else ZERO)
        with localcontext(_EXACT):  # cash never rounds: it reconciles with the ledger exactly
            self.cash[currency] = self.cash.get(currency, ZERO) - side.sign * quantity * price
            if fee:
                self.cash[fee_ccy] = self.cash.get(fee_ccy, ZERO) - fee
            if fee_ccy != currency:
                self.other_fees[fee_ccy] = self.other_fees.get(fee_ccy, ZERO) + fee
        return realized

    def equity_by_currency(self) -> dict[str, Decimal]:
        """Cash plus positions at their marks (at average cost where no mark exists yet),
        per quote currency."""
        out = dict(self.cash)
        for p in self.positions.values():
            if p.quantity:
                mark = self.marks.get(p.symbol, p.avg_price)
                out[p.currency] = out.get(p.currency, ZERO) + p.quantity * mark
        return out

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


class Converter:
    """Amounts in a currency -> the base currency, at the latest marks.

    The rate of ``CCY`` is the mark of a symbol trading CCY in BASE (``CCY/BASE``,
    ``CCY-BASE``, ``CCY-PERP`` for a USD base), else 1 / the mark of one trading BASE in CCY,
    else a configured fixed rate; a currency with none of these is left out and named,
    never guessed.
    """

    def __init__(self, base: str, fixed: dict[str, Decimal] | None = None) -> None:
        self.base = base
        self.fixed = dict(fixed or {})

    def rate(self, currency: str, marks: dict[str, Decimal]) -> Decimal | None:
        if currency == self.base:
            return Decimal(1)
        inverse: Decimal | None = None
        for symbol, mark in marks.items():
            if not mark:
                continue
            try:
                base, quote = split_symbol(symbol)  # BTC-PERP counts as BTC/USD
            except ValidationError:
                continue
            if (base, quote) == (currency, self.base):
                return mark
            if (base, quote) == (self.base, currency):
                inverse = 1 / mark
        return inverse if inverse is not None else self.fixed.get(currency)

    def convert(
        self, amounts: dict[str, Decimal], marks: dict[str, Decimal]
    ) -> tuple[Decimal, list[str]]:
        """The sum of `amounts` in the base currency, and the currencies without a rate
        (left out of the sum)."""
        total, missing = ZERO, []
        for currency, amount in amounts.items():
            rate = self.rate(currency, marks)
            if rate is None:
                if amount:
                    missing.append(currency)
                continue
            total += amount * rate
        return total, sorted(missing)
