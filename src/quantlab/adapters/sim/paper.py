"""`PaperVenue`: a simulated venue that fills limit orders against the bars that follow them.

Matching rule (no look-ahead): an order decided at time t is matched against the first bar of
its symbol with a timestamp after t, then the following ones while it rests. A buy limit L
fills at the bar's open if the open is at or below L (taker: it crossed on arrival), else at L
if the bar's low reaches L (maker). Sells mirror this. IOC orders get one bar and are then
canceled; DAY orders expire at the end of their UTC day; GTC orders rest. Fees are charged in
the quote currency at the maker or taker rate.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from quantlab.bus import topics
from quantlab.bus.base import Bus, Envelope
from quantlab.core import ids
from quantlab.core.clock import datetime_to_ns, ns_to_datetime
from quantlab.core.enums import EventType, Liquidity, OrderStatus, Side, TimeInForce
from quantlab.core.instruments import InstrumentBook, to_decimal
from quantlab.core.messages import Fill, MarketBatch, Order, OrderEvent
from quantlab.execution.ports import VenueListener, VenueReport

_DAY_NS = 86_400 * 1_000_000_000
_BPS = Decimal(10_000)


@dataclass
class _Bars:
    ts: npt.NDArray[np.int64]
    open: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]


@dataclass
class _Resting:
    order: Order
    after_ns: int  # match bars strictly after this time
    expires_ns: int | None


class PaperVenue:
    """A `Venue` that matches against bars it receives from ``market.data.bar``."""

    def __init__(
        self,
        instruments: InstrumentBook,
        *,
        maker_fee_bps: Decimal = Decimal("2"),
        taker_fee_bps: Decimal = Decimal("7.5"),
        name: str = "paper",
    ) -> None:
        self.name = name
        self.instruments = instruments
        self.maker_fee = maker_fee_bps / _BPS
        self.taker_fee = taker_fee_bps / _BPS
        self._listener: VenueListener | None = None
        self._bars: dict[str, _Bars] = {}
        self._resting: dict[str, _Resting] = {}
        self._seen: set[str] = set()
        self._trade_seq = 0
        self.fills = 0

    # -- Component: market data ------------------------------------------------------------
    async def start(self, bus: Bus) -> None:
        bus.consume(topics.market_data(EventType.BAR), self._on_batch, name=f"venue.{self.name}")

    async def stop(self) -> None:
        return None

    async def _on_batch(self, envelope: Envelope) -> None:
        batch: MarketBatch = envelope.payload
        await self.on_bars(batch.frame)

    async def on_bars(self, frame: pl.DataFrame) -> None:
        """Take a bar batch: keep the latest bars per symbol and match resting orders."""
        parts = frame.select(
            "symbol",
            pl.col("timestamp").cast(pl.Datetime("ns", "UTC")).cast(pl.Int64).alias("ts"),
            "open",
            "high",
            "low",
        ).partition_by("symbol", as_dict=True, maintain_order=True)
        for (symbol,), part in parts.items():
            new = _Bars(
                part["ts"].to_numpy(),
                part["open"].to_numpy(),
                part["high"].to_numpy(),
                part["low"].to_numpy(),
            )
            old = self._bars.get(str(symbol))
            if old is not None:  # keep the previous batch too, for orders that arrive late
                new = _Bars(
                    *(
                        np.concatenate([a, b])
                        for a, b in zip(
                            (old.ts[-2048:], old.open[-2048:], old.high[-2048:], old.low[-2048:]),
                            (new.ts, new.open, new.high, new.low),
                            strict=True,
                        )
                    )
                )
            self._bars[str(symbol)] = new
        for coid in [c for c, r in self._resting.items() if r.order.symbol in self._bars]:
            await self._match(self._resting[coid])

    # -- Venue port ------------------------------------------------------------------------
    def set_listener(self, listener: VenueListener) -> None:
        self._listener = listener

    async def submit(self, order: Order) -> None:
        if order.client_order_id in self._seen:
            return  # idempotent on client_order_id: a retried submit never trades twice
        self._seen.add(order.client_order_id)
        await self._report(self._event(order, OrderStatus.ACCEPTED, order.timestamp))
        t = datetime_to_ns(order.timestamp)
        expires = (t // _DAY_NS + 1) * _DAY_NS if order.time_in_force is TimeInForce.DAY else None
        resting = _Resting(order, t, expires)
        self._resting[order.client_order_id] = resting
        await self._match(resting)

    async def cancel(self, client_order_id: str) -> None:
        resting = self._resting.pop(client_order_id, None)
        if resting is not None:
            at = ns_to_datetime(resting.after_ns)
            await self._report(self._event(resting.order, OrderStatus.CANCELED, at, "canceled"))

    # -- matching --------------------------------------------------------------------------
    async def _match(self, resting: _Resting) -> None:
        order = resting.order
        bars = self._bars.get(order.symbol)
        if bars is None:
            return
        i = int(np.searchsorted(bars.ts, resting.after_ns, side="right"))
        limit = float(order.price) if order.price is not None else None
        while i < len(bars.ts):
            ts = int(bars.ts[i])
            if resting.expires_ns is not None and ts >= resting.expires_ns:
                del self._resting[order.client_order_id]
                await self._report(
                    self._event(order, OrderStatus.EXPIRED, ns_to_datetime(ts), "end of day")
                )
                return
            fill = self._try_fill(order, limit, bars, i)
            if fill is not None:
                del self._resting[order.client_order_id]
                await self._report(fill)
                return
            resting.after_ns = ts
            if order.time_in_force is TimeInForce.IOC:
                del self._resting[order.client_order_id]
                await self._report(
                    self._event(order, OrderStatus.CANCELED, ns_to_datetime(ts), "ioc not filled")
                )
                return
            i += 1

    def _try_fill(self, order: Order, limit: float | None, bars: _Bars, i: int) -> Fill | None:
        o, lo, hi = float(bars.open[i]), float(bars.low[i]), float(bars.high[i])
        price: Decimal | None
        if order.side is Side.BUY:
            if limit is None or o <= limit:
                price, liquidity = to_decimal(o), Liquidity.TAKER
            elif lo <= limit:
                price, liquidity = order.price, Liquidity.MAKER
            else:
                return None
        else:
            if limit is None or o >= limit:
                price, liquidity = to_decimal(o), Liquidity.TAKER
            elif hi >= limit:
                price, liquidity = order.price, Liquidity.MAKER
            else:
                return None
        assert price is not None  # noqa: S101
        rate = self.taker_fee if liquidity is Liquidity.TAKER else self.maker_fee
        self._trade_seq += 1
        self.fills += 1
        # Derived from the order (one fill per order here), so ids never collide across runs
        # that share a database, and a replayed run reproduces them.
        trade_id = f"{order.client_order_id}-1"
        return Fill(
            fill_id=ids.fill_id(self.name, trade_id),
            order_id=order.order_id,
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            price=price,
            quantity=order.quantity,
            fee=price * order.quantity * rate,
            fee_currency=self.instruments[order.symbol].quote,
            liquidity=liquidity,
            timestamp=ns_to_datetime(int(bars.ts[i])),
            venue=self.name,
            trade_id=trade_id,
            strategy_id=order.strategy_id,
        )

    def _event(
        self, order: Order, status: OrderStatus, at: dt.datetime, reason: str = ""
    ) -> OrderEvent:
        return OrderEvent(
            order_id=order.order_id,
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            status=status,
            venue=self.name,
            timestamp=at,
            reason=reason,
        )

    async def _report(self, report: VenueReport) -> None:
        if self._listener is not None:
            await self._listener(report)

    def stats(self) -> dict[str, Any]:
        return {"fills": self.fills, "resting": len(self._resting)}
