"""`SettlementEngine`: fills into positions and PnL, marked to the latest prices."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import polars as pl

from quantlab.bus import topics
from quantlab.bus.base import Bus, Envelope
from quantlab.bus.idempotent import IdempotentConsumer
from quantlab.core.enums import EventType
from quantlab.core.errors import BusError
from quantlab.core.instruments import InstrumentBook, to_decimal
from quantlab.core.messages import Fill, MarketBatch, PositionUpdate
from quantlab.core.schemas import PRICE_COLUMN
from quantlab.portfolio.accounting import Portfolio


class SettlementEngine:
    name = "settlement"

    def __init__(self, instruments: InstrumentBook, kind: EventType = EventType.BAR) -> None:
        self.instruments = instruments
        self.kind = kind
        self.portfolio = Portfolio()
        self._bus: Bus | None = None

    async def start(self, bus: Bus) -> None:
        self._bus = bus
        bus.consume(topics.orders("filled"), IdempotentConsumer(self._on_fill), name=self.name)
        bus.consume(topics.market_data(self.kind), self._on_marks, name=f"{self.name}.marks")

    async def stop(self) -> None:
        return None

    async def _on_fill(self, envelope: Envelope) -> None:
        if self._bus is None:
            raise BusError("SettlementEngine received a fill before start()")
        fill: Fill = envelope.payload
        position = self.portfolio.position(fill.symbol, self.instruments[fill.symbol].quote)
        position.apply(fill.side, fill.quantity, fill.price, fill.fee)
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
        last = batch.frame.group_by("symbol").agg(pl.col(PRICE_COLUMN[self.kind]).last())
        for symbol, price in last.iter_rows():
            self.portfolio.marks[symbol] = to_decimal(price)

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

    def stats(self) -> dict[str, Any]:
        return {"positions": len(self.portfolio.positions)}
