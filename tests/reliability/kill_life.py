"""The kill test's engine process: one life of the execution stage against a venue.

`life` is what the test runs in a child process (forked from a preloaded forkserver, so a
life starts in milliseconds): it opens the SQL order book, builds the real `AlpacaVenue`
(alpaca-py's `TradingClient`) against a `FakeAlpacaTrading` that outlives every child,
reconciles, publishes the batch of approved orders on the bus, and waits until every order
is in a terminal state. Armed with a crash point (`execution.faults`), it SIGKILLs itself
there; the test can also SIGKILL it from outside while an order request is in flight. The
next life starts from whatever the dead one left, exactly like a restarted production
process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import faulthandler
import sys
import time
from decimal import Decimal

from quantlab.adapters.alpaca.trading import AlpacaTradingConfig, AlpacaVenue
from quantlab.bus import Bus, InProcessBus, topics
from quantlab.core import ids
from quantlab.core.enums import OrderType, Side, TimeInForce
from quantlab.core.errors import BusError
from quantlab.core.messages import Order
from quantlab.execution import ExecutionEngine, OrderTracker, Router
from quantlab.execution.faults import arm
from quantlab.storage.sql.engine import make_engine, upgrade
from quantlab.storage.sql.outbox import SqlOutbox
from quantlab.storage.sql.store import SqlOrderStore

T0 = dt.datetime(2024, 1, 2, 15, 0, tzinfo=dt.UTC)
KEY, SECRET = "PK-kill-test", "kill-test-secret"
GRACE_S = 0.3
HANG_DUMP_S = 45.0  # past the life's own 30 s budget, before the test's 60 s


def make_orders(n: int, symbol: str = "AAPL") -> list[Order]:
    """`n` deterministic limit orders (the same ids in every life)."""
    out = []
    for i in range(n):
        signal = ids.signal_id("kill", symbol, i)
        coid = ids.client_order_id(signal)
        out.append(
            Order(
                order_id=ids.order_id(coid),
                client_order_id=coid,
                symbol=symbol,
                side=Side.BUY if i % 3 else Side.SELL,
                order_type=OrderType.LIMIT,
                quantity=Decimal(2 + i % 5),
                price=Decimal("187.25") + Decimal(i % 7) / 100,
                time_in_force=TimeInForce.GTC,
                strategy_id="kill",
                signal_id=signal,
                timestamp=T0 + dt.timedelta(seconds=i),
            )
        )
    return out


async def _life(
    db_url: str, venue_url: str, n_orders: int, timeout_s: float, redis: tuple[str, str] | None
) -> int:
    sql = make_engine(db_url, durable=True)
    upgrade(sql)
    venue = AlpacaVenue(
        AlpacaTradingConfig(
            url=venue_url,
            timeout_s=5.0,
            poll_interval_s=0.02,
            not_found_grace_s=GRACE_S,
            fills_wait_s=0.2,
        ),
        KEY,
        SECRET,
    )
    bus: Bus
    if redis is None:
        bus = InProcessBus()
    else:  # the events go to other processes: through the outbox, on Redis Streams
        from quantlab.adapters.redis import RedisStreamsBus

        url, namespace = redis
        bus = RedisStreamsBus(url, namespace=namespace, maxlen=None, ack_timeout=1.0)
    engine = ExecutionEngine(
        Router([venue], default=venue.name),
        OrderTracker(SqlOrderStore(sql)),
        reconcile=True,
        not_found_grace_s=GRACE_S,
        resolve_every_s=0.05,
        fills_lookback_s=10 * 365 * 86_400.0,
        outbox=None if redis is None else SqlOutbox(sql),
        outbox_every_s=0.05,
    )
    await engine.start(bus)
    for order in make_orders(n_orders):
        await bus.publish(topics.orders("approved"), order, msg_id=order.client_order_id)
    # One budget for the whole life, so that a slow life (a loaded machine) ends by itself,
    # well before the test gives up on it as hung.
    deadline = time.monotonic() + timeout_s
    await bus.drain(timeout=timeout_s)
    while engine.tracker.open_orders() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    left = len(engine.tracker.open_orders())
    await engine.stop()
    try:
        await bus.drain(timeout=max(1.0, deadline - time.monotonic()))
    except BusError as exc:  # acknowledgements are flushed by close(); report, don't hang
        print(f"kill life: final drain: {exc}", file=sys.stderr)
    await bus.close()
    venue.close()
    sql.dispose()
    return left


def life(
    db_url: str,
    venue_url: str,
    n_orders: int,
    crash: str | None,
    timeout_s: float = 30.0,
    redis: tuple[str, str] | None = None,
    hang_dump: str | None = None,
) -> None:
    """One life of the engine; exits 0 when every order is terminal, 3 if some are not.

    With `redis` (url, namespace) the bus is Redis Streams and events go through the outbox.
    A life still running after `HANG_DUMP_S` writes every thread's stack to `hang_dump`.
    """
    arm(crash)
    if hang_dump is not None:
        dump = open(hang_dump, "a")  # noqa: SIM115 - open until the process ends
        faulthandler.dump_traceback_later(HANG_DUMP_S, exit=False, file=dump)
    left = asyncio.run(_life(db_url, venue_url, n_orders, timeout_s, redis))
    raise SystemExit(0 if left == 0 else 3)
