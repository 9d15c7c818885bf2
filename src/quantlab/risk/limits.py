"""Pre-trade limits: pure checks of an order against its symbol's exposure and mid.

Each check returns the first `Denial` it finds, with a short reason code and a detail that
names the values, or None. The stateful checks (breaker, unknown symbol, stale data,
throttle, VaR) live in `RiskEngine.check`, which runs everything in the order of
`REASONS`: the breaker first, then the cheap checks, VaR last.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Final

import msgspec

from quantlab.core.enums import OrderType, Side
from quantlab.core.errors import ConfigError
from quantlab.core.instruments import to_decimal
from quantlab.core.messages import Order

# Every reason a `RiskEngine` denies an order for, in the order it checks them.
REASONS: Final = (
    "halted",
    "bad_quantity",
    "bad_price",
    "unknown_symbol",
    "stale_data",
    "reduce_only",
    "order_quantity",
    "order_notional",
    "price_collar",
    "position_limit",
    "rate_limit",
    "var_limit",
)

_ZERO = Decimal(0)


class RiskLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-order and per-symbol limits. Notionals are in the symbol's quote currency.

    Parameters
    ----------
    max_position_notional
        Net limit per symbol: ``|position + open orders + order| x price``.
    max_order_notional
        ``quantity x price`` of one order (a fat-finger check; applies to reducing orders too).
    max_gross_notional
        Gross limit per symbol: ``(long + short open exposure + order) x price``, where long
        is ``max(position, 0) + open buys`` and short ``max(-position, 0) + open sells``.
        None: no gross limit.
    max_order_quantity
        Quantity of one order, in the base asset. None: no limit.
    collar_bps
        A limit price may be at most this far from the mid (``|limit - mid| / mid``).
        None: no collar.
    stale_after_s
        Deny when the symbol's last market data is older than this by the engine's clock.
        None: never stale.
    rate_per_s, burst
        Throttle per strategy: a token bucket refilled at `rate_per_s` orders per second,
        holding at most `burst`. None: no throttle (backtests: every order of a batch is
        checked at the same simulated instant).

    The position limits (net and gross) apply only to orders that increase the symbol's
    ``|position + open orders|``: an order that reduces it is never refused for the position.
    """

    max_position_notional: Decimal
    max_order_notional: Decimal
    max_gross_notional: Decimal | None = None
    max_order_quantity: Decimal | None = None
    collar_bps: float | None = 500.0
    stale_after_s: float | None = 900.0
    rate_per_s: float | None = None
    burst: int = 10

    def __post_init__(self) -> None:
        for key in (
            "max_position_notional",
            "max_order_notional",
            "max_gross_notional",
            "max_order_quantity",
        ):
            value = getattr(self, key)
            if value is not None and not (value.is_finite() and value > 0):
                raise ConfigError(f"risk.{key}", f"must be a finite number > 0, got {value}")
        for key in ("collar_bps", "stale_after_s", "rate_per_s"):
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"risk.{key}", f"must be a finite number > 0, got {value!r}")
        if self.burst < 1:
            raise ConfigError("risk.burst", f"must be >= 1, got {self.burst}")


class Denial(msgspec.Struct, frozen=True):
    """Why an order was refused: `reason` is a code from `REASONS`, `detail` names the values."""

    reason: str
    detail: str


def _finite_positive(value: Decimal) -> bool:
    return value.is_finite() and value > 0


def check_values(order: Order) -> Denial | None:
    """``bad_quantity`` or ``bad_price`` for a NaN, infinite, zero or negative value."""
    if not _finite_positive(order.quantity):
        return Denial(
            "bad_quantity",
            f"{order.symbol}: quantity {order.quantity} must be a finite number > 0 "
            f"(order {order.client_order_id})",
        )
    price = order.price
    if price is not None and not _finite_positive(price):
        return Denial(
            "bad_price",
            f"{order.symbol}: price {price} must be a finite number > 0 "
            f"(order {order.client_order_id})",
        )
    return None


def check_limits(
    order: Order,
    exposure: Decimal,
    limits: RiskLimits,
    currency: str,
    *,
    mid: float | None = None,
    mid_price: Decimal | None = None,
    gross: Decimal | None = None,
) -> Denial | None:
    """``order_quantity``, ``order_notional``, ``price_collar``, ``position_limit``.

    `exposure` is the symbol's signed position plus open orders; `gross` its long plus short
    open exposure (quantities; default ``|exposure|``). A market order is valued at the mid
    (`mid_price`, else `mid`); without either it is ``bad_price``. The values are assumed
    finite and positive (`check_values`).
    """
    price = order.price
    if price is None:
        if mid_price is None and mid is not None and math.isfinite(mid) and mid > 0:
            mid_price = to_decimal(mid)
        if mid_price is None:
            return Denial(
                "bad_price",
                f"{order.symbol}: market order {order.client_order_id} has no price "
                "and there is no mid to value it at",
            )
        price = mid_price
    quantity = order.quantity
    if limits.max_order_quantity is not None and quantity > limits.max_order_quantity:
        return Denial(
            "order_quantity",
            f"{order.symbol}: order quantity {quantity:f} > limit {limits.max_order_quantity:f}",
        )
    notional = quantity * price
    if notional > limits.max_order_notional:
        return Denial(
            "order_notional",
            f"{order.symbol}: order notional {notional:f} {currency} "
            f"> limit {limits.max_order_notional} {currency}",
        )
    if (
        limits.collar_bps is not None
        and order.order_type is OrderType.LIMIT
        and mid is not None
        and mid > 0
    ):
        away_bps = abs(float(price) - mid) / mid * 10_000.0
        if away_bps > limits.collar_bps:
            return Denial(
                "price_collar",
                f"{order.symbol}: limit price {price:f} is {away_bps:.1f} bps from mid "
                f"{mid!r} > collar {limits.collar_bps:g} bps",
            )
    projected = exposure + quantity if order.side is Side.BUY else exposure - quantity
    if abs(projected) <= abs(exposure):
        return None  # reduces the position: never refused for it
    net = abs(projected) * price
    if net > limits.max_position_notional:
        return Denial(
            "position_limit",
            f"{order.symbol}: projected position {projected:f} x {price:f} = "
            f"{net:f} {currency} > limit {limits.max_position_notional} {currency}",
        )
    if limits.max_gross_notional is not None:
        post_gross = (abs(exposure) if gross is None else gross) + quantity
        gross_notional = post_gross * price
        if gross_notional > limits.max_gross_notional:
            return Denial(
                "position_limit",
                f"{order.symbol}: projected gross open exposure {post_gross:f} x {price:f} = "
                f"{gross_notional:f} {currency} > gross limit "
                f"{limits.max_gross_notional} {currency}",
            )
    return None


def check_order(
    order: Order,
    exposure: Decimal,
    limits: RiskLimits,
    currency: str,
    *,
    mid: float | None = None,
    gross: Decimal | None = None,
) -> Denial | None:
    """The first pure limit `order` breaks given the symbol's `exposure` and `mid`, or None.

    Checks, in order: ``bad_quantity``, ``bad_price``, ``order_quantity``, ``order_notional``,
    ``price_collar`` (limit orders, when `mid` is given), ``position_limit`` (net, then gross).

    Examples
    --------
    >>> check_order(order, Decimal(0), limits, "USD", mid=100.0)  # doctest: +SKIP
    Denial(reason='order_notional', detail='BTC/USD: order notional 5000 USD > limit 1000 USD')
    """
    return check_values(order) or check_limits(
        order, exposure, limits, currency, mid=mid, gross=gross
    )
