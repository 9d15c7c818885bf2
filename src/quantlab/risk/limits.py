"""Pre-trade limits: pure checks of an order against exposure."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from quantlab.core.messages import Order


class RiskLimits(msgspec.Struct, frozen=True, kw_only=True):
    max_position_notional: Decimal
    max_order_notional: Decimal


class Denial(msgspec.Struct, frozen=True):
    reason: str
    detail: str


def check_order(
    order: Order, exposure: Decimal, limits: RiskLimits, currency: str
) -> Denial | None:
    """The first limit `order` breaks given the symbol's current `exposure`, or None."""
    if order.price is None:
        return Denial("no_price", f"{order.symbol}: order {order.client_order_id} has no price")
    notional = order.quantity * order.price
    if notional > limits.max_order_notional:
        return Denial(
            "order_notional",
            f"{order.symbol}: order notional {notional:f} {currency} "
            f"> limit {limits.max_order_notional} {currency}",
        )
    projected = exposure + order.quantity * order.side.sign
    if (
        abs(projected) > abs(exposure)
        and abs(projected) * order.price > limits.max_position_notional
    ):
        return Denial(
            "position_limit",
            f"{order.symbol}: projected position {projected:f} x {order.price:f} = "
            f"{abs(projected) * order.price:f} {currency} > limit "
            f"{limits.max_position_notional} {currency}",
        )
    return None
