"""Instruments: base and quote currency, tick and lot size, and the rounding that goes with them."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import msgspec

from quantlab.core.enums import Side
from quantlab.core.errors import ValidationError

_PERPETUAL_QUOTE = "USD"


def to_decimal(value: float) -> Decimal:
    """A float as the shortest decimal that round-trips (``Decimal(repr(x))``), no binary noise."""
    return Decimal(repr(float(value)))


def split_symbol(symbol: str) -> tuple[str, str]:
    """Base and quote currency of ``BASE/QUOTE``, ``BASE-QUOTE`` or ``BASE-PERP`` (USD-quoted)."""
    pair = symbol.split(":", 1)[0]  # ccxt derivatives: BASE/QUOTE:SETTLE
    for sep in ("/", "-"):
        if sep in pair:
            base, quote = pair.split(sep, 1)
            if quote.upper() == "PERP":
                quote = _PERPETUAL_QUOTE
            if base and quote:
                return base, quote
    raise ValidationError(
        f"cannot tell base and quote currency of symbol {symbol!r}; "
        "use BASE/QUOTE or BASE-QUOTE, or configure the instrument"
    )


class Instrument(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    base: str
    quote: str
    tick_size: Decimal
    lot_size: Decimal

    @classmethod
    def from_symbol(cls, symbol: str, tick_size: Decimal, lot_size: Decimal) -> Instrument:
        base, quote = split_symbol(symbol)
        if not (tick_size.is_finite() and lot_size.is_finite() and tick_size > 0 and lot_size > 0):
            raise ValidationError(
                f"tick and lot size must be > 0, got tick {tick_size}, lot {lot_size} for {symbol}"
            )
        return cls(symbol=symbol, base=base, quote=quote, tick_size=tick_size, lot_size=lot_size)

    def round_price(self, price: Decimal, side: Side) -> Decimal:
        """To the tick, away from the touch: buys round up, sells down (stays marketable)."""
        rounding = ROUND_CEILING if side is Side.BUY else ROUND_FLOOR
        return (price / self.tick_size).to_integral_value(rounding) * self.tick_size

    def round_quantity(self, quantity: Decimal) -> Decimal:
        """Down to the lot (never more than asked)."""
        return (quantity / self.lot_size).to_integral_value(ROUND_FLOOR) * self.lot_size


class InstrumentBook:
    """Instruments by symbol: configured ones, else derived from the symbol with defaults."""

    def __init__(
        self,
        default_tick: Decimal,
        default_lot: Decimal,
        instruments: dict[str, Instrument] | None = None,
    ) -> None:
        self.default_tick = default_tick
        self.default_lot = default_lot
        self._known = dict(instruments or {})

    def __getitem__(self, symbol: str) -> Instrument:
        found = self._known.get(symbol)
        if found is None:
            found = Instrument.from_symbol(symbol, self.default_tick, self.default_lot)
            self._known[symbol] = found
        return found

    def get(self, symbol: str) -> Instrument | None:
        """The instrument, or None when none is configured and the symbol's shape tells none."""
        try:
            return self[symbol]
        except ValidationError:
            return None

    def __contains__(self, symbol: object) -> bool:
        return isinstance(symbol, str) and self.get(symbol) is not None
