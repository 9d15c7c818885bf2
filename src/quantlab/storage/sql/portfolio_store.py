"""`SqlPortfolioStore`: the portfolio stage's `PortfolioStore` port on SQLAlchemy."""

from __future__ import annotations

from typing import Any, cast

import msgspec
from sqlalchemy import Engine, Table, bindparam, select

from quantlab.portfolio.costs import CostRecord
from quantlab.portfolio.ledger import JournalEntry, Posting
from quantlab.portfolio.ports import PnlSnapshot, PositionSnapshot
from quantlab.storage.sql.models import (
    CostRow,
    LedgerEntryRow,
    LedgerPostingRow,
    PnlSnapshotRow,
    PositionSnapshotRow,
)

_ENTRIES = cast(Table, LedgerEntryRow.__table__)
_POSTINGS = cast(Table, LedgerPostingRow.__table__)
_COSTS = cast(Table, CostRow.__table__)
_POSITIONS = cast(Table, PositionSnapshotRow.__table__)
_PNL = cast(Table, PnlSnapshotRow.__table__)


class SqlPortfolioStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        from sqlalchemy.dialects import postgresql, sqlite

        self._insert: Any = (
            postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        )
        # Statements are built once; each call only binds its values (building and caching
        # a statement per call cost more than running it).
        self._insert_entry = (
            self._insert(_ENTRIES)
            .values({c: bindparam(c) for c in ("id", "timestamp", "memo", "agent", "strategy")})
            .on_conflict_do_nothing()
            .returning(_ENTRIES.c.id)
        )
        self._insert_posting = _POSTINGS.insert()
        self._upsert_snapshot: dict[str, Any] = {}
        for table, keys in (
            (_POSITIONS, ("timestamp", "symbol")),
            (_PNL, ("timestamp", "currency")),
        ):
            stmt = self._insert(table)
            fresh = {c.name: stmt.excluded[c.name] for c in table.columns if c.name != "id"}
            self._upsert_snapshot[table.name] = stmt.on_conflict_do_update(
                index_elements=list(keys), set_=fresh
            )
        self._insert_cost = (
            self._insert(_COSTS)
            .values({c.name: bindparam(c.name) for c in _COSTS.columns if c.name != "id"})
            .on_conflict_do_nothing()
        )

    def record_entry(self, entry: JournalEntry) -> bool:
        with self.engine.begin() as conn:
            done = conn.execute(
                self._insert_entry,
                {
                    "id": entry.id,
                    "timestamp": entry.timestamp,
                    "memo": entry.memo[:256],
                    "agent": entry.agent,
                    "strategy": entry.strategy,
                },
            ).scalar_one_or_none()
            if done is None:
                return False
            conn.execute(
                self._insert_posting,
                [
                    {
                        "entry_id": entry.id,
                        "account": p.account,
                        "amount": p.amount,
                        "currency": p.currency,
                    }
                    for p in entry.postings
                ],
            )
        return True

    def record_cost(self, record: CostRecord) -> bool:
        row = msgspec.structs.asdict(record)
        row["side"] = record.side.value
        with self.engine.begin() as conn:
            done = conn.execute(self._insert_cost, row).rowcount
        return bool(done)

    def record_snapshot(self, positions: list[PositionSnapshot], pnl: list[PnlSnapshot]) -> None:
        # A second snapshot at the same time (the final one at stop) replaces the first.
        with self.engine.begin() as conn:
            for table, rows in ((_POSITIONS, positions), (_PNL, pnl)):
                if rows:
                    conn.execute(
                        self._upsert_snapshot[table.name],
                        [msgspec.structs.asdict(r) for r in rows],
                    )

    # -- reading back ------------------------------------------------------------------------
    def entries(self) -> list[JournalEntry]:
        """Every journal entry, in time order, rebuilt (and checked balanced) from SQL."""
        with self.engine.connect() as conn:
            heads = conn.execute(select(_ENTRIES).order_by(_ENTRIES.c.timestamp)).all()
            legs: dict[str, list[Posting]] = {}
            for p in conn.execute(select(_POSTINGS).order_by(_POSTINGS.c.id)).all():
                legs.setdefault(p.entry_id, []).append(Posting(p.account, p.amount, p.currency))
        return [
            JournalEntry(
                id=h.id,
                timestamp=h.timestamp,
                memo=h.memo,
                agent=h.agent,
                strategy=h.strategy,
                postings=tuple(legs.get(h.id, ())),
            )
            for h in heads
        ]

    def costs(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(_COSTS)).all()]

    def pnl_snapshots(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [
                dict(r._mapping)
                for r in conn.execute(select(_PNL).order_by(_PNL.c.timestamp, _PNL.c.currency))
            ]

    def position_snapshots(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [
                dict(r._mapping)
                for r in conn.execute(
                    select(_POSITIONS).order_by(_POSITIONS.c.timestamp, _POSITIONS.c.symbol)
                )
            ]
