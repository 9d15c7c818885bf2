"""Portfolio: settlement of fills into positions, cash and PnL; cost attribution; the payments
ledger; performance analytics."""

from quantlab.portfolio import analytics
from quantlab.portfolio.accounting import Converter, Portfolio, Position
from quantlab.portfolio.analytics import Drawdown, Exposure
from quantlab.portfolio.costs import CostEngine, CostRecord
from quantlab.portfolio.engine import SettlementEngine
from quantlab.portfolio.ledger import (
    Budget,
    BudgetAlert,
    JournalEntry,
    Ledger,
    LedgerError,
    Posting,
    cost_entry,
    fill_entry,
)

__all__ = [
    "Budget",
    "BudgetAlert",
    "Converter",
    "CostEngine",
    "CostRecord",
    "Drawdown",
    "Exposure",
    "JournalEntry",
    "Ledger",
    "LedgerError",
    "Portfolio",
    "Position",
    "Posting",
    "SettlementEngine",
    "analytics",
    "cost_entry",
    "fill_entry",
]
