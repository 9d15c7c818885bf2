"""Portfolio: settlement of fills into positions and PnL."""

from quantlab.portfolio.accounting import Portfolio, Position
from quantlab.portfolio.engine import SettlementEngine

__all__ = ["Portfolio", "Position", "SettlementEngine"]
