"""`SettlementEngine`: fills into positions and PnL, marked to the latest prices."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import msgspec
import polars as pl

from quantlab.bus import topics
from quantlab.bus.base import Bus, Envelope
from quantlab.bus.idempotent import IdempotentConsumer
from quantlab.core.clock import ns_to_datetime
from quantlab.core.enums import EventType
from quantlab.core.errors import BusError
from quantlab.core.instruments import InstrumentBook, to_decimal
from quantlab.core.messages import Fill, MarketBatch, PositionUpdate
from quantlab.core.schemas import PRICE_COLUMN
from quantlab.portfolio.accounting import Converter, Portfolio
from quantlab.portfolio.ledger import Ledger, expense_summary, fill_entry
from quantlab.portfolio.ports import PnlSnapshot, PortfolioStore, PositionSnapshot


class SettlementEngine:
    name = "settlement"

    def __init__(
        self,
        instruments: InstrumentBook,
        *,
        base_currency: str | None = None,
        fx: dict[str, Decimal] | None = None,
        store: PortfolioStore | None = None,
        snapshot_every_s: float = 60.0,
    ) -> None:
        self.instruments = instruments
        self.store = store
        self.snapshot_every_ns = int(snapshot_every_s * 1e9)
        self._last_snapshot_ns: int | None = None
        self.snapshots = 0
        self._latest_ns = 0
        self.portfolio = Portfolio()
        # every fill also posts a balanced double-entry journal entry (the payments ledger)
        self.ledger = Ledger()
        self._booked: set[uuid.UUID] = set()  # fills in the portfolio (seeded or received)
        self.after_post: Callable[[], Awaitable[None]] | None = None
        self.base_currency = base_currency
        self.converter = Converter(base_currency, fx) if base_currency else None
        self._bus: Bus | None = None

    async def start(self, bus: Bus) -> None:
        self._bus = bus
        bus.consume(topics.orders("filled"), IdempotentConsumer(self._on_fill), name=self.name)
        for kind in EventType:  # marks from the latest quote mid, trade price or bar close
            bus.consume(
                topics.market_data(kind),
                self._on_marks,
                name=f"{self.name}.marks.{kind.topic_name}",
            )

    async def stop(self) -> None:
        if self._last_snapshot_ns is not None:  # the final state, whatever the cadence
            await self.snapshot(ns_to_datetime(max(self._last_snapshot_ns, self._latest_ns)))

    def seed(self, fills: list[Fill]) -> None:
        """A restart: rebuild positions and cash from the book of record's fills (their
        entries are in the reloaded ledger already; a fill without one is posted)."""
        for fill in fills:
            self._book(fill)

    def _book(self, fill: Fill) -> bool:
        """Book a fill once: its ledger entry (checked, kept in SQL, then posted, unless the
        ledger holds it already), then positions and cash. False if it was booked before
        (a redelivery, or a fill both seeded and received): nothing changes."""
        if fill.fill_id in self._booked:
            return False
        inst = self.instruments[fill.symbol]
        if not fill.fee_currency:
            fill = msgspec.structs.replace(fill, fee_currency=inst.quote)
        entry = fill_entry(fill, inst.base, inst.quote)
        if entry.id not in self.ledger:
            if self.store is not None:
                self.store.record_entry(entry)  # first: a failure here leaves nothing booked
            self.ledger.post(entry)
        self._booked.add(fill.fill_id)
        self.portfolio.apply(
            fill.symbol,
            inst.quote,
            fill.side,
            fill.quantity,
            fill.price,
            fill.fee,
            fill.fee_currency,
        )
        return True

    async def _on_fill(self, envelope: Envelope) -> None:
        if self._bus is None:
            raise BusError("SettlementEngine received a fill before start()")
        fill: Fill = envelope.payload
        if not self._book(fill):
            return
        position = self.portfolio.positions[fill.symbol]
        if self.after_post is not None:
            await self.after_post()  # budget alerts (a fee may cross a strategy's budget)
        await self._bus.publish(
            topics.portfolio("positions"),
            PositionUpdate(
                symbol=fill.symbol,
                quantity=position.quantity,
                avg_price=position.avg_price,
                realized_pnl=position.realized,
                fees=position.fees,
                currency=position.currency,
                timestamp=fill.timestamp,
            ),
            msg_id=f"position:{fill.fill_id}",
        )

    async def _on_marks(self, envelope: Envelope) -> None:
        batch: MarketBatch = envelope.payload
        frame = batch.frame
        if frame.height == 0:
            return
        # Series calls and numpy only: a DataFrame query runs the lazy engine, a fixed cost
        # far above the work for the few rows a live batch holds.
        if batch.kind is EventType.QUOTE:
            prices = (frame["bid"].to_numpy() + frame["ask"].to_numpy()) / 2
        else:
            prices = frame[PRICE_COLUMN[batch.kind]].to_numpy()
        last = dict(zip(frame["symbol"].to_list(), range(frame.height), strict=True))
        marks = self.portfolio.marks
        for symbol, row in last.items():  # each symbol's last row
            value = prices[row]
            if value > 0:  # neither null (NaN in numpy) nor NaN nor <= 0
                marks[symbol] = to_decimal(value)
        at = batch.ts_max
        self._latest_ns = max(self._latest_ns, at)
        if at and (
            self._last_snapshot_ns is None or at - self._last_snapshot_ns >= self.snapshot_every_ns
        ):
            self._last_snapshot_ns = at
            await self.snapshot(ns_to_datetime(at))

    async def snapshot(self, at: dt.datetime) -> list[PnlSnapshot]:
        """Positions and PnL now: kept in the store, PnL published on ``portfolio.pnl``."""
        marks = self.portfolio.marks
        positions = [
            PositionSnapshot(
                timestamp=at,
                symbol=p.symbol,
                currency=p.currency,
                quantity=p.quantity,
                avg_price=p.avg_price,
                mark=marks.get(p.symbol),
                realized=p.realized,
                unrealized=p.unrealized(marks.get(p.symbol)),
                fees=p.fees,
            )
            for p in sorted(self.portfolio.positions.values(), key=lambda p: p.symbol)
        ]
        equity = self.portfolio.equity_by_currency()
        pnl = [
            PnlSnapshot(
                timestamp=at,
                currency=ccy,
                realized=row["realized"],
                unrealized=row["unrealized"],
                fees=row["fees"],
                total=row["total"],
                cash=self.portfolio.cash.get(ccy, Decimal(0)),
                equity=equity.get(ccy, Decimal(0)),
            )
            for ccy, row in sorted(self.pnl().items())
        ]
        if self.store is not None and (positions or pnl):
            self.store.record_snapshot(positions, pnl)
        if self._bus is not None:
            for row in pnl:
                await self._bus.publish(
                    topics.portfolio("pnl"), row, msg_id=f"pnl:{row.currency}:{at.isoformat()}"
                )
        self.snapshots += 1
        return pnl

    def positions_frame(self) -> pl.DataFrame:
        rows = [
            {
                "symbol": p.symbol,
                "currency": p.currency,
                "quantity": p.quantity,
                "avg_price": p.avg_price,
                "mark": self.portfolio.marks.get(p.symbol),
                "realized_pnl": p.realized,
                "unrealized_pnl": p.unrealized(self.portfolio.marks.get(p.symbol)),
                "fees": p.fees,
                "fills": p.fills,
            }
            for p in sorted(self.portfolio.positions.values(), key=lambda p: p.symbol)
        ]
        dec = pl.Decimal(38, 18)
        schema: dict[str, Any] = {
            "symbol": pl.String,
            "currency": pl.String,
            "quantity": dec,
            "avg_price": dec,
            "mark": dec,
            "realized_pnl": dec,
            "unrealized_pnl": dec,
            "fees": dec,
            "fills": pl.Int64,
        }
        return pl.DataFrame(rows, schema=schema)

    def pnl(self) -> dict[str, dict[str, Decimal]]:
        return self.portfolio.pnl_by_currency()

    def in_base(self) -> dict[str, Any] | None:
        """PnL, cash and equity converted to `base_currency` (None without one)."""
        if self.converter is None:
            return None
        marks = self.portfolio.marks
        pnl = {ccy: row["total"] for ccy, row in self.pnl().items()}
        for ccy, fee in self.portfolio.other_fees.items():
            pnl[ccy] = pnl.get(ccy, Decimal(0)) - fee
        total, missing = self.converter.convert(pnl, marks)
        cash, missing_cash = self.converter.convert(self.portfolio.cash, marks)
        equity, missing_eq = self.converter.convert(self.portfolio.equity_by_currency(), marks)
        return {
            "currency": self.converter.base,
            "pnl": total,
            "cash": cash,
            "equity": equity,
            "unconverted": sorted(set(missing) | set(missing_cash) | set(missing_eq)),
        }

    def ledger_summary(self) -> dict[str, Any]:
        """Entries, the trial balance per currency (all zero when it balances), expenses."""
        trial = self.ledger.trial_balance()
        return {
            "entries": len(self.ledger),
            "balanced": all(v == 0 for v in trial.values()),
            "trial_balance": trial,
            "expenses": expense_summary(self.ledger),
        }

    def stats(self) -> dict[str, Any]:
        return {
            "positions": len(self.portfolio.positions),
            "cash": {k: str(v) for k, v in sorted(self.portfolio.cash.items())},
        }
