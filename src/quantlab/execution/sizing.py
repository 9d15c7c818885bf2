"""Position sizing: how much quote currency a signal may put at risk.

`KellySizer` is fractional Kelly with a cap. For a bet won with probability p that pays b
per unit lost, the growth-optimal fraction of capital is ``f* = p - (1 - p) / b`` (Kelly
1956). quantlab reads

* p from the signal: ``p = 1/2 + 1/2 * strength * confidence`` (a certain, full-strength
  signal is always right; a signal of no strength or no confidence is a coin flip);
* b from the strategy's own record: the mean winning over the mean losing return of its
  closed trades on that symbol, shrunk toward a prior (1: symmetric payoffs) until enough
  trades exist (``b = (n * b_hat + k * b0) / (n + k)``, n trades, k = `prior_trades`).

Full Kelly is famously aggressive when p and b are estimates, so the fraction taken is
``min(kelly_fraction * f*, cap)`` of `capital`; no edge (``f* <= 0``) means no order.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from quantlab.core.errors import ConfigError
from quantlab.core.instruments import to_decimal
from quantlab.core.messages import Fill, Signal

_ZERO = Decimal(0)


class Sizer(Protocol):
    def notional(self, signal: Signal) -> Decimal:
        """Target position size in quote currency (>= 0); 0 means do not trade."""
        ...

    def on_fill(self, fill: Fill) -> None: ...


@dataclass
class FixedNotional:
    """Every signal targets the same notional."""

    amount: Decimal

    def notional(self, signal: Signal) -> Decimal:
        return self.amount

    def on_fill(self, fill: Fill) -> None:
        return None


@dataclass
class _Book:
    """Average-cost position of one (strategy, symbol), and its closed-trade returns."""

    quantity: Decimal = _ZERO
    avg: Decimal = _ZERO
    wins: int = 0
    losses: int = 0
    win_sum: float = 0.0
    loss_sum: float = 0.0

    def apply(self, signed: Decimal, price: Decimal) -> None:
        q = self.quantity
        if q == 0 or (q > 0) == (signed > 0):
            new_q = q + signed
            self.avg = (abs(q) * self.avg + abs(signed) * price) / abs(new_q)
            self.quantity = new_q
            return
        ret = float((price - self.avg) / self.avg) * (1 if q > 0 else -1)
        if ret > 0:
            self.wins += 1
            self.win_sum += ret
        elif ret < 0:
            self.losses += 1
            self.loss_sum -= ret
        self.quantity = q + signed
        if self.quantity == 0:
            self.avg = _ZERO
        elif (self.quantity > 0) != (q > 0):
            self.avg = price


@dataclass
class KellySizer:
    """Fractional Kelly with a cap (see the module doc).

    Parameters
    ----------
    capital
        Quote-currency capital per symbol the fractions apply to.
    kelly_fraction
        The share of the Kelly fraction taken (0.5: "half Kelly").
    cap
        The largest fraction of `capital` one position may take.
    prior_win_loss, prior_trades
        The payoff ratio b assumed before the strategy has a record, and how many trades'
        worth of weight that prior carries.
    """

    capital: Decimal
    kelly_fraction: float = 0.5
    cap: float = 0.25
    prior_win_loss: float = 1.0
    prior_trades: int = 20
    _books: dict[tuple[str, str], _Book] = field(default_factory=lambda: defaultdict(_Book))

    def __post_init__(self) -> None:
        if not (self.capital.is_finite() and self.capital > 0):
            raise ConfigError("execution.capital", f"must be > 0, got {self.capital}")
        if not 0 < self.kelly_fraction <= 1:
            raise ConfigError(
                "execution.kelly_fraction", f"must be in (0, 1], got {self.kelly_fraction}"
            )
        if not 0 < self.cap <= 1:
            raise ConfigError("execution.kelly_cap", f"must be in (0, 1], got {self.cap}")
        if not self.prior_win_loss > 0:
            raise ConfigError("execution.prior_win_loss", f"must be > 0, got {self.prior_win_loss}")
        if self.prior_trades < 0:
            raise ConfigError("execution.prior_trades", f"must be >= 0, got {self.prior_trades}")

    def win_probability(self, signal: Signal) -> float:
        s = min(max(signal.strength, 0.0), 1.0)
        c = min(max(signal.confidence, 0.0), 1.0)
        return 0.5 + 0.5 * s * c

    def win_loss_ratio(self, strategy_id: str, symbol: str) -> float:
        book = self._books.get((strategy_id, symbol))
        b0, k = self.prior_win_loss, self.prior_trades
        if book is None or book.wins == 0 or book.losses == 0:
            return b0
        b_hat = (book.win_sum / book.wins) / (book.loss_sum / book.losses)
        n = book.wins + book.losses
        return (n * b_hat + k * b0) / (n + k)

    def fraction(self, signal: Signal) -> float:
        """The fraction of capital for `signal`: ``min(kelly_fraction * f*, cap)``, >= 0."""
        p = self.win_probability(signal)
        b = self.win_loss_ratio(signal.strategy_id, signal.symbol)
        full = p - (1.0 - p) / b
        if not full > 0:  # also NaN
            return 0.0
        return min(self.kelly_fraction * full, self.cap)

    def notional(self, signal: Signal) -> Decimal:
        f = self.fraction(signal)
        return self.capital * to_decimal(f) if f > 0 else _ZERO

    def on_fill(self, fill: Fill) -> None:
        self._books[(fill.strategy_id, fill.symbol)].apply(
            fill.quantity * fill.side.sign, fill.price
        )
