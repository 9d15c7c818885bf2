"""Portfolio: settlement of fills into positions, cash and PnL; cost attribution; the payments
ledger; performance analytics."""

from quantlab.portfolio import analytics, equity, tearsheet
from quantlab.portfolio.accounting import Converter, Portfolio, Position
from quantlab.portfolio.analytics import Drawdown, Exposure
from quantlab.portfolio.costs import CostEngine, CostRecord
from quantlab.portfolio.engine import SettlementEngine
from quantlab.portfolio.equity import positions_over_time, round_trips
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
from quantlab.portfolio.tearsheet import TearSheet, tear_sheet, tear_sheet_for_run

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
    "TearSheet",
    "analytics",
    "cost_entry",
    "equity",
    "fill_entry",
    "positions_over_time",
    "round_trips",
    "tear_sheet",
    "tear_sheet_for_run",
    "tearsheet",
]
