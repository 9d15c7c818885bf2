"""The portfolio stage's storage port: where settlement, costs and the ledger are kept.

`quantlab.storage.sql.portfolio_store.SqlPortfolioStore` implements it; the engine injects
it. Every method commits before it returns and is idempotent (a replayed entry or cost is
recorded once).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import msgspec

if TYPE_CHECKING:
    from quantlab.portfolio.costs import CostRecord
    from quantlab.portfolio.ledger import JournalEntry


class PositionSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    timestamp: dt.datetime
    symbol: str
    currency: str
    quantity: Decimal
    avg_price: Decimal
    mark: Decimal | None
    realized: Decimal
    unrealized: Decimal
    fees: Decimal


class PnlSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """PnL, cash and equity in one currency at a time (published on ``portfolio.pnl``)."""

    timestamp: dt.datetime
    currency: str
    realized: Decimal
    unrealized: Decimal
    fees: Decimal
    total: Decimal
    cash: Decimal
    equity: Decimal


@runtime_checkable
class PortfolioStore(Protocol):
    def record_entry(self, entry: JournalEntry) -> bool:
        """Insert a journal entry and its postings; False if its id exists."""
        ...

    def record_cost(self, record: CostRecord) -> bool: ...

    def record_snapshot(
        self, positions: list[PositionSnapshot], pnl: list[PnlSnapshot]
    ) -> None: ...
