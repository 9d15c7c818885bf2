"""`CostMeter`: what the system's agents cost, posted to the payments ledger as it happens,
and budgets watched.

Prices come from configuration (`Price`): a data source's per-event price (charged on each
market batch it delivered, by `MarketBatch.source`), a venue API's price per call (one per
order sent to it), a flat subscription accrued pro rata with the clock, and an inference
price per feature row scored (each feature row is one
evaluation of the strategy's model). Trading fees come from the fills, which settlement posts
to the same ledger (and then calls `check_alerts`). After every posting the ledger's budget
alerts are published on ``risk.alert``; an exhausted budget calls `on_exhausted` (the node
stops that strategy, or halts trading for any other agent).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from quantlab.bus import topics
from quantlab.bus.base import Bus, Envelope
from quantlab.core.clock import Clock, ns_to_datetime
from quantlab.core.enums import EventType
from quantlab.core.messages import FeatureBatch, MarketBatch, OrderEvent
from quantlab.portfolio.ledger import BudgetAlert, Ledger, cost_entry
from quantlab.portfolio.ports import PortfolioStore

Exhausted = Callable[[BudgetAlert], Awaitable[None]]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Price:
    """What `agent` costs (see the module doc); zero prices are not charged."""

    agent: str
    kind: str = "data"
    currency: str = "USD"
    per_event: Decimal = Decimal(0)
    per_row: Decimal = Decimal(0)
    per_call: Decimal = Decimal(0)
    subscription: Decimal = Decimal(0)
    period: dt.timedelta = dt.timedelta(days=30)


class CostMeter:
    name = "metering"

    def __init__(
        self,
        ledger: Ledger,
        prices: list[Price],
        clock: Clock,
        on_exhausted: Exhausted | None = None,
        store: PortfolioStore | None = None,
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.prices = list(prices)
        self.clock = clock
        self.on_exhausted = on_exhausted
        self.alerts: list[BudgetAlert] = []
        self.charged: dict[str, Decimal] = {}
        self._accrued_to: dict[str, int] = {}
        self._called: OrderedDict[str, None] = (
            OrderedDict()
        )  # orders already charged  # agent -> ns up to which a subscription is paid
        self._bus: Bus | None = None

    async def start(self, bus: Bus) -> None:
        self._bus = bus
        for kind in EventType:
            bus.consume(
                topics.market_data(kind), self._on_market, name=f"{self.name}.{kind.topic_name}"
            )
        bus.consume(topics.features(), self._on_features, name=f"{self.name}.features")
        if any(p.per_call for p in self.prices):
            for event in ("submitted", "accepted", "rejected", "unknown"):
                bus.consume(topics.orders(event), self._on_order_event, name=f"{self.name}.{event}")

    async def stop(self) -> None:
        await self._accrue(self.clock.now_ns())

    async def _on_market(self, envelope: Envelope) -> None:
        batch: MarketBatch = envelope.payload
        at = ns_to_datetime(batch.ts_max) if batch.ts_max else self.clock.now()
        for price in self.prices:
            if price.per_event and price.agent == batch.source and batch.frame.height:
                await self._charge(
                    price,
                    price.per_event * batch.frame.height,
                    at,
                    f"{batch.frame.height} events",
                    f"data:{price.agent}:{batch.kind.topic_name}:{batch.seq}",
                )
        await self._accrue(batch.ts_max or self.clock.now_ns(), since=batch.ts_min or None)

    async def _on_features(self, envelope: Envelope) -> None:
        batch: FeatureBatch = envelope.payload
        rows = batch.frame.height
        for price in self.prices:
            if price.per_row and rows:
                await self._charge(
                    price,
                    price.per_row * rows,
                    ns_to_datetime(batch.ts_max),
                    f"{rows} rows scored",
                    f"inference:{price.agent}:{batch.seq}",
                )

    async def _on_order_event(self, envelope: Envelope) -> None:
        event: OrderEvent = envelope.payload
        if event.client_order_id in self._called:
            return  # one request per order, whatever the venue answered
        self._called[event.client_order_id] = None
        if len(self._called) > 100_000:
            self._called.popitem(last=False)
        for price in self.prices:
            if price.per_call and price.agent == event.venue:
                await self._charge(
                    price,
                    price.per_call,
                    event.timestamp,
                    f"order {event.client_order_id}",
                    f"api:{price.agent}:{event.client_order_id}",
                )

    async def _accrue(self, now_ns: int, since: int | None = None) -> None:
        """Charge subscriptions up to `now_ns` (from `since`, the first data, the first time)."""
        for price in self.prices:
            if not price.subscription:
                continue
            key = f"{price.agent}:{price.kind}:{price.currency}"
            start = self._accrued_to.setdefault(key, since or now_ns)
            if now_ns <= start:
                continue
            share = Decimal(now_ns - start) / Decimal(int(price.period.total_seconds() * 1e9))
            self._accrued_to[key] = now_ns
            amount = (price.subscription * share).quantize(Decimal("1e-12"))
            if amount > 0:
                await self._charge(
                    price,
                    amount,
                    ns_to_datetime(now_ns),
                    "subscription",
                    f"subscription:{key}:{now_ns}",
                )

    async def _charge(
        self, price: Price, amount: Decimal, at: dt.datetime, memo: str, entry_id: str
    ) -> None:
        entry = cost_entry(
            price.agent, price.kind, amount, price.currency, at, memo, entry_id=entry_id
        )
        if entry.id not in self.ledger:
            if self.store is not None:
                self.store.record_entry(entry)  # kept before it counts
            self.ledger.post(entry)
            key = f"{price.kind}:{price.agent}:{price.currency}"
            self.charged[key] = self.charged.get(key, Decimal(0)) + amount
        await self._alerts()

    async def check_alerts(self) -> None:
        """Publish the ledger's budget alerts (settlement calls it after posting a fill,
        whose fee may cross a strategy's budget)."""
        await self._alerts()

    async def _alerts(self) -> None:
        for alert in self.ledger.pop_alerts():
            self.alerts.append(alert)
            if self._bus is not None:
                await self._bus.publish(topics.risk("alert"), alert)
            if alert.exhausted and self.on_exhausted is not None:
                try:
                    await self.on_exhausted(alert)
                except Exception:  # the other alerts still go out; this one is logged
                    log.exception("stopping %s after its budget ran out failed", alert.agent)

    def stats(self) -> dict[str, Any]:
        return {
            "charged": {k: str(v) for k, v in sorted(self.charged.items())},
            "alerts": [
                {
                    "agent": a.agent,
                    "fraction": str(a.fraction),
                    "spent": str(a.spent),
                    "limit": str(a.limit),
                    "currency": a.currency,
                    "exhausted": a.exhausted,
                }
                for a in self.alerts
            ],
        }
