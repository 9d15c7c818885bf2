"""Reconciliation at start: the order store of record against what each venue says.

Run before the engine takes a new order. For every venue:

1. Each order SQL holds open (PENDING_SUBMIT, SUBMITTED, ACCEPTED, PARTIALLY_FILLED, UNKNOWN)
   is looked up by ``client_order_id``, in the venue's open orders or by a query.

   * found: **adopted**, the tracker moves to the venue's state (a canceled or expired order
     is **closed**);
   * not found: its outcome is unknown (the engine may have died with the request in
     flight, and "not found" shortly after a submission does not mean lost). It becomes
     UNKNOWN and is **never resubmitted**; the engine's resolver keeps asking and only calls it
     absent after the grace period.

2. Open orders at the venue that SQL does not hold are **flagged** (orphans), never touched:
   they are someone else's, or ours from another database.
3. The venue's recent fills are fed through the tracker: those SQL lacks are committed and
   published (no lost fill); those it has are dropped on (venue, trade_id) (no double fill).
4. Where the venue keeps positions, they are compared with the net of SQL's fills; any
   difference **halts trading** (the risk breaker) until a person resolves it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgspec

from quantlab.core.enums import OrderStatus

if TYPE_CHECKING:
    from quantlab.execution.engine import ExecutionEngine

log = logging.getLogger(__name__)


class ReconcileReport(msgspec.Struct, kw_only=True):
    adopted: list[str] = msgspec.field(default_factory=list)
    closed: list[str] = msgspec.field(default_factory=list)
    unknown: list[str] = msgspec.field(default_factory=list)
    orphans: list[str] = msgspec.field(default_factory=list)
    conflicts: list[str] = msgspec.field(default_factory=list)
    fills_recovered: int = 0
    fills_known: int = 0
    fills_unmatched: list[str] = msgspec.field(default_factory=list)
    position_mismatches: dict[str, dict[str, str]] = msgspec.field(default_factory=dict)
    errors: list[str] = msgspec.field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Nothing flagged: no orphan, no unmatched fill, no mismatch, no venue error."""
        return not (self.orphans or self.fills_unmatched or self.position_mismatches or self.errors)

    def summary(self) -> dict[str, Any]:
        return {
            "adopted": len(self.adopted),
            "closed": len(self.closed),
            "unknown": len(self.unknown),
            "orphans": len(self.orphans),
            "conflicts": self.conflicts,
            "fills_recovered": self.fills_recovered,
            "fills_known": self.fills_known,
            "fills_unmatched": len(self.fills_unmatched),
            "position_mismatches": self.position_mismatches,
            "errors": self.errors,
        }


class Reconciler:
    def __init__(self, engine: ExecutionEngine) -> None:
        self.engine = engine
        self.tracker = engine.tracker

    async def run(self, attempts: int = 3, backoff_s: float = 1.0) -> ReconcileReport:
        report = ReconcileReport()
        for venue in self.engine.router.venues.values():
            for attempt in range(1, attempts + 1):
                try:
                    await self._venue(venue, report)
                    break
                except Exception as exc:
                    log.error(
                        "reconciliation with %s failed (attempt %d/%d): %s",
                        venue.name,
                        attempt,
                        attempts,
                        exc,
                    )
                    if attempt == attempts:
                        report.errors.append(f"{venue.name}: {type(exc).__name__}: {exc}")
                        await self._unchecked(venue)
                    else:
                        await asyncio.sleep(backoff_s * attempt)
        problems = []
        if report.position_mismatches:
            problems.append(
                "position mismatch: "
                + "; ".join(
                    f"{s}: ours {v['ours']} vs venue {v['venue']}"
                    for s, v in sorted(report.position_mismatches.items())
                )
            )
        if report.conflicts:
            problems.append(f"orders open at the venue but closed in our book: {report.conflicts}")
        if report.errors:
            problems.append(f"venues that could not be reconciled: {report.errors}")
        if problems and self.engine.halt is not None:
            await self.engine.halt("reconciliation", "at start: " + " | ".join(problems))
        if not report.clean:
            log.warning("reconciliation flagged: %s", report.summary())
        return report

    async def _unchecked(self, venue: Any) -> None:
        """A venue that could not be asked: its open orders are UNKNOWN, so that the
        resolver keeps querying them (and a poll follows them once found)."""
        for live in self.tracker.open_orders(venue.name):
            await self.engine.mark_unknown(
                live.order, venue, "reconciliation: the venue could not be asked"
            )

    async def _venue(self, venue: Any, report: ReconcileReport) -> None:
        store = self.tracker.store
        at_venue = {s.client_order_id: s for s in await venue.open_orders()}
        for live in self.tracker.open_orders(venue.name):
            coid = live.order.client_order_id
            state = at_venue.pop(coid, None)
            if state is None:
                state = await venue.query_order(coid)
            if state is not None:
                await self.engine.apply_state(state, venue)
                after = self.tracker.live(coid)
                (report.adopted if after is not None else report.closed).append(coid)
                continue
            # Not at the venue (yet): the outcome is unknown. Never resubmit.
            report.unknown.append(coid)
            await self.engine.mark_unknown(
                live.order, venue, "reconciliation: not found at the venue; outcome unknown"
            )
        for coid, state in at_venue.items():
            record = store.get(coid)
            if record is None:
                report.orphans.append(coid)
            elif _closed_as_absent(record):  # our belief, not the venue's refusal: reopen
                await self.engine.reopen(coid, venue, "reconciliation: open at the venue")
                await self.engine.apply_state(state, venue)
                report.adopted.append(coid)
            elif record.status.is_terminal:  # we closed it; the venue still has it open
                report.conflicts.append(coid)
        since = _now(self.engine) - dt.timedelta(seconds=self.engine.fills_lookback_s)
        for fill in await venue.fills_since(since):
            record = store.get(fill.client_order_id)
            if record is None:
                report.fills_unmatched.append(fill.trade_id)
                continue
            if _closed_as_absent(record):  # it traded after all (before our restart)
                await self.engine.reopen(
                    fill.client_order_id, venue, f"reconciliation: fill {fill.trade_id}"
                )
                report.adopted.append(fill.client_order_id)
            before = self.engine.fills + self.tracker.late_fills
            await self.engine.on_report(fill)
            if self.engine.fills + self.tracker.late_fills > before:
                report.fills_recovered += 1
            else:
                report.fills_known += 1
        held = await venue.positions()
        if held is not None:
            ours = store.net_positions(venue.name)
            for symbol in sorted(set(ours) | set(held)):
                a, b = ours.get(symbol, Decimal(0)), held.get(symbol, Decimal(0))
                if a != b:
                    report.position_mismatches[symbol] = {"ours": str(a), "venue": str(b)}


# The end of the reason of an order the engine closed because the venue could not find it.
CLOSED_AS_ABSENT = "never resubmitted"


def _closed_as_absent(record: Any) -> bool:
    """Whether the engine closed this order because the venue could not find it (REJECTED
    "never resubmitted"), which the venue showing it disproves."""
    return record.status is OrderStatus.REJECTED and CLOSED_AS_ABSENT in (record.reason or "")


def _now(engine: ExecutionEngine) -> dt.datetime:
    if engine.clock is not None:
        return engine.clock.now()
    return dt.datetime.now(dt.UTC)
