"""An exchange that answers 429, 5xx, timeouts, dropped connections and a late "order not
found": no order is placed twice, none that trades is marked REJECTED, no fill is lost.

One run per venue, each through its real client library against its fake: Alpaca (alpaca-py
against `FakeAlpacaTrading`), Binance spot and Coinbase Advanced Trade (ccxt against
`FakeBinanceTrading` / `FakeCoinbaseTrading`). The real `ExecutionEngine`, its `OrderTracker`
on a SQLite `SqlOrderStore`, takes `ORDERS` approved orders from the bus while the fake
follows a seeded random `FaultSchedule` (`quantlab.testing.fakes.faults`):

* order entries: 429 with and without Retry-After, 500/502/503 before anything happens, a
  5xx after the order was created, a timeout with the order created or not, a dropped
  connection with the order created or not;
* reads (lookups, listings, fills): the same, bar the "after commit" kinds;
* visibility: an order created may stay "not found" for a while, shorter than the engine's
  `not_found_grace_s` or 2-4 times longer (more often after a fault that committed: the case
  where "not found" decides whether an order whose submission outcome is unknown is lost).

Then the faults stop, the engine runs until every order is terminal (and no order closed as
absent is still watched), and the venue is compared with SQL:

* duplicated: orders created more than once for one client order id (`create_count`);
* failed: orders wrongly marked rejected, REJECTED in SQL but existing at the venue;
* lost: venue trades missing from SQL's fills;
* and (asserted, in the detail): orders not terminal, filled quantities that differ, a fill
  booked twice or one the venue never made, a venue order SQL does not hold.

What each figure would catch (checked by breaking the code): with the engine's reopening of
orders closed as absent switched off (`_closed_absent` never filled), every order invisible
past the grace after a fault that committed stays REJECTED while it trades (failed > 0, lost
> 0); with `AlpacaVenue` dropping acknowledged orders it cannot find (the old `_not_found`),
an Alpaca order invisible past the grace after a normal answer is never filled in SQL (not
terminal, lost > 0); an engine that resent an order after a 5xx or a timeout shows in
duplicated at Binance, which refuses a client order id only while its order is open (Alpaca
answers 422 and Coinbase returns the existing order, so there a resend is caught by the venue).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from quantlab.adapters.alpaca.trading import AlpacaTradingConfig, AlpacaVenue
from quantlab.adapters.ccxt import CcxtTradingConfig, CcxtVenue
from quantlab.bus import InProcessBus, topics
from quantlab.core import ids
from quantlab.core.enums import OrderStatus, OrderType, Side, TimeInForce
from quantlab.core.messages import Order
from quantlab.execution import ExecutionEngine, OrderTracker, Router
from quantlab.execution.ports import Venue
from quantlab.storage.sql.engine import make_engine, upgrade
from quantlab.storage.sql.models import FillRow, OrderRow
from quantlab.storage.sql.store import SqlOrderStore
from quantlab.testing.fakes.alpaca_trading import FakeAlpacaTrading
from quantlab.testing.fakes.ccxt_trading import (
    FakeBinanceTrading,
    FakeCoinbaseTrading,
    ec_key_pem,
)
from quantlab.testing.fakes.faults import FaultSchedule
from quantlab.testing.reliability import record

ORDERS = 200  # per venue
SEED = 12
GRACE_S = 0.3  # the engine's not_found_grace_s (and Alpaca's)
CLIENT_TIMEOUT_S = 0.25  # every venue request's timeout
WATCH_S = 2.0  # absent_watch_s: past the longest invisibility (4 x grace)
RUN_BUDGET_S = 40.0  # one venue's run, faults and settling included
ALPACA_KEY, ALPACA_SECRET = "PK-faults-test", "faults-test-secret"
BINANCE_CREDENTIALS = {"apiKey": "binance-faults-key", "secret": "binance-faults-secret"}
LABEL = {"alpaca": "Alpaca", "binance": "Binance (ccxt)", "coinbase": "Coinbase (ccxt)"}


def schedule_seed(name: str) -> int:
    """The fault schedule's seed for one venue's run."""
    return SEED + sum(map(ord, name))


@dataclass
class VenueBook:
    """What the venue holds, in one shape for every fake."""

    orders: dict[str, tuple[str, Decimal]]  # client_order_id -> (venue status, filled)
    creations: Counter[str]  # client_order_id -> orders created with it
    trades: set[str]  # the venue's trade ids
    invisible: list[float]  # seconds each order created invisible stayed "not found"


@dataclass
class Run:
    """One venue's run: its fake, its venue object and how to read the fake afterwards."""

    name: str
    fake: Any
    venue: Venue
    symbols: tuple[str, ...]
    book: Callable[[], VenueBook]


def make_orders(name: str, symbols: tuple[str, ...], n: int) -> list[Order]:
    """`n` limit orders over `symbols`: GTC mostly (they fill over a few polls), every fifth
    IOC (part filled on arrival, the rest canceled or expired)."""
    now = dt.datetime.now(dt.UTC)
    crypto = "/" in symbols[0]
    out = []
    for i in range(n):
        symbol = symbols[i % len(symbols)]
        signal = ids.signal_id(f"faults-{name}", symbol, i)
        coid = ids.client_order_id(signal)
        quantity = Decimal("0.01") * (1 + i % 5) if crypto else Decimal(2 + i % 5)
        price = (Decimal(30_000) if crypto else Decimal("187.25")) + Decimal(i % 7) / 100
        out.append(
            Order(
                order_id=ids.order_id(coid),
                client_order_id=coid,
                symbol=symbol,
                side=Side.BUY if i % 3 else Side.SELL,
                order_type=OrderType.LIMIT,
                quantity=quantity,
                price=price,
                time_in_force=TimeInForce.IOC if i % 5 == 4 else TimeInForce.GTC,
                strategy_id="faults",
                signal_id=signal,
                timestamp=now,
            )
        )
    return out


def _alpaca_book(fake: FakeAlpacaTrading) -> VenueBook:
    return VenueBook(
        orders={c: (o["status"], Decimal(o["filled_qty"])) for c, o in fake.orders.items()},
        creations=Counter(fake.create_count),
        trades={a["id"] for a in fake.fills},
        invisible=list(fake.invisible.values()),
    )


def _ccxt_book(fake: FakeBinanceTrading | FakeCoinbaseTrading) -> VenueBook:
    orders: dict[str, tuple[str, Decimal]] = {}
    per_coid: Counter[str] = Counter()
    for order in fake.orders.values():
        orders[order.client_order_id] = (order.status, order.filled)
        per_coid[order.client_order_id] += 1
    # Two venue orders for one client order id count even if the fake's own tally missed one.
    creations = Counter({c: max(n, fake.create_count[c]) for c, n in per_coid.items()})
    return VenueBook(
        orders=orders,
        creations=creations,
        trades={f.trade_id for f in fake.fills},
        invisible=list(fake.invisible.values()),
    )


@pytest.fixture(params=["alpaca", "binance", "coinbase"])
async def run(request: pytest.FixtureRequest) -> AsyncIterator[Run]:
    name = request.param
    if name == "alpaca":
        with FakeAlpacaTrading(key=ALPACA_KEY, secret=ALPACA_SECRET, fill_mode="partial") as fake:
            fake.parts = 2
            fake.advance_on_poll = True  # a part fills on each poll's listing
            config = AlpacaTradingConfig(
                url=fake.url,
                timeout_s=CLIENT_TIMEOUT_S,
                max_retry_wait_s=0.05,
                poll_interval_s=0.03,
                not_found_grace_s=GRACE_S,
                fills_wait_s=0.5,
            )
            venue = AlpacaVenue(config, ALPACA_KEY, ALPACA_SECRET)
            try:
                yield Run(name, fake, venue, ("AAPL", "MSFT"), lambda: _alpaca_book(fake))
            finally:
                venue.close()
        return
    fake_cls = FakeBinanceTrading if name == "binance" else FakeCoinbaseTrading
    async with fake_cls(policy="partial", parts=2) as ccxt_fake:
        symbols = ("BTC/USDT", "ETH/USDT") if name == "binance" else ("BTC/USD", "ETH/USD")
        credentials = (
            BINANCE_CREDENTIALS
            if name == "binance"
            else {"apiKey": "organizations/1111/apiKeys/2222", "secret": ec_key_pem()}
        )
        ccxt_venue = CcxtVenue(
            CcxtTradingConfig(
                exchange=name,
                symbols=symbols,
                url=ccxt_fake.url,
                timeout_s=CLIENT_TIMEOUT_S,
                max_retry_wait_s=0.05,
                poll_interval_s=0.03,
                enable_rate_limit=False,
                lookup_window_s=600.0,
            ),
            credentials=credentials,
        )
        ccxt_venue.exchange.timeout_on_exit = 0  # ccxt waits 250 ms on close (for TLS)

        async def fill_resting() -> None:  # the market trades the resting orders, a part a tick
            while True:
                await asyncio.sleep(0.03)
                ccxt_fake.advance()

        filler = asyncio.create_task(fill_resting())
        try:
            yield Run(name, ccxt_fake, ccxt_venue, symbols, lambda: _ccxt_book(ccxt_fake))
        finally:
            filler.cancel()
            await asyncio.gather(filler, return_exceptions=True)
            await ccxt_venue.close()


async def _settled(engine: ExecutionEngine, deadline: float) -> None:
    while time.monotonic() < deadline:
        if not engine.tracker.open_orders() and not engine.watching_absent:
            return
        await asyncio.sleep(0.02)


async def test_exchange_faults_duplicate_nothing_reject_nothing_that_trades_lose_no_fill(
    run: Run, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'book.db'}"
    sql = make_engine(db_url)
    upgrade(sql)
    engine = ExecutionEngine(
        Router([run.venue], default=run.venue.name),
        OrderTracker(SqlOrderStore(sql)),
        reconcile=True,
        not_found_grace_s=GRACE_S,
        absent_watch_s=WATCH_S,
        resolve_every_s=0.05,
        fills_lookback_s=86_400.0,
    )
    bus = InProcessBus()
    await engine.start(bus)
    schedule = FaultSchedule(
        schedule_seed(run.name), client_timeout_s=CLIENT_TIMEOUT_S, grace_s=GRACE_S
    )
    run.fake.schedule = schedule
    orders = make_orders(run.name, run.symbols, ORDERS)
    started = time.monotonic()
    deadline = started + RUN_BUDGET_S
    for order in orders:
        await bus.publish(topics.orders("approved"), order, msg_id=order.client_order_id)
    await bus.drain(timeout=RUN_BUDGET_S)
    schedule.stop()  # the faults stop; what is unresolved must now resolve
    faulted_s = time.monotonic() - started
    await _settled(engine, deadline)
    await engine.stop()
    await bus.drain(timeout=5.0)
    await bus.close()

    with sql.connect() as conn:
        rows = {r.client_order_id: r for r in conn.execute(select(OrderRow.__table__)).all()}
        sql_trades = list(conn.execute(select(FillRow.__table__.c.trade_id)).scalars())
    sql.dispose()
    venue = run.book()

    duplicated = sum(n - 1 for n in venue.creations.values() if n > 1)
    wrongly_rejected = sorted(
        c for c, (status, _) in venue.orders.items()
        if c in rows and rows[c].status is OrderStatus.REJECTED and status != "rejected"
    )  # fmt: skip
    lost = venue.trades - set(sql_trades)
    phantom = set(sql_trades) - venue.trades
    repeated = len(sql_trades) - len(set(sql_trades))
    not_terminal = sorted(c for c, r in rows.items() if not OrderStatus(r.status).is_terminal)
    unrecorded = sorted(set(venue.orders) - set(rows))
    mismatched = sorted(
        c for c, (status, filled) in venue.orders.items()
        if c in rows and (
            rows[c].filled_quantity != filled
            or (status == "filled" and rows[c].status is not OrderStatus.FILLED)
        )
    )  # fmt: skip
    never_at_venue = [c for c in rows if c not in venue.orders]
    rejected_right = sum(rows[c].status is OrderStatus.REJECTED for c in never_at_venue)
    short = sum(s < GRACE_S for s in venue.invisible)
    injected = ", ".join(f"{k} {n}" for k, n in sorted(schedule.injected.items()))
    resolved = ", ".join(f"{k} {n}" for k, n in sorted(engine.resolved.items()))
    detail = (
        f"{ORDERS} orders in {faulted_s:.1f}s of faults, seed {schedule_seed(run.name)}; "
        f"injected: {injected}; not found for a while: {short} under the "
        f"{GRACE_S}s grace, {len(venue.invisible) - short} beyond it; "
        f"at the venue {len(venue.orders)}, never reached it {len(never_at_venue)} "
        f"(REJECTED {rejected_right}); resolved: {resolved}; venue trades {len(venue.trades)}; "
        f"not terminal {len(not_terminal)}, filled mismatches {len(mismatched)}, "
        f"phantom fills {len(phantom)}, fills booked twice {repeated}, "
        f"venue orders missing from SQL {len(unrecorded)}"
    )
    record(
        "faults",
        f"exchange faults, {LABEL[run.name]}: 429, 5xx, timeouts, drops, delayed not-found",
        trials=len(orders),
        unit="orders",
        duplicated=duplicated,
        lost=len(lost),
        failed=len(wrongly_rejected),
        failed_what="orders wrongly marked rejected",
        detail=detail,
    )
    print(f"{run.name}: {detail}")

    assert duplicated == 0, (
        f"orders created twice: {[c for c, n in venue.creations.items() if n > 1]}"
    )
    assert not wrongly_rejected, f"REJECTED in SQL, at the venue: {wrongly_rejected[:5]}"
    assert not lost, f"venue fills missing from SQL: {sorted(lost)[:5]}"
    assert not not_terminal, f"orders left open: {not_terminal[:5]}"
    assert not mismatched, f"filled quantities differ: {mismatched[:5]}"
    assert not phantom, f"SQL fills the venue never made: {sorted(phantom)[:5]}"
    assert not repeated, "a venue fill booked twice in SQL"
    assert not unrecorded, f"venue orders SQL does not hold: {unrecorded[:5]}"
    assert rejected_right == len(never_at_venue), "an order the venue never saw is not REJECTED"
    assert len(rows) == len(orders)
    # The run exercised what it claims: faults of every kind on order entry, orders found only
    # after the grace closed them, and fills.
    kinds = {k.split(": ", 1)[1] for k in schedule.injected if k.startswith("order entry")}
    assert len(kinds) >= 8, f"too few fault kinds drawn on order entry: {sorted(kinds)}"
    assert engine.resolved["reopened"] > 0, f"no order reappeared after the grace: {resolved}"
    assert venue.trades
