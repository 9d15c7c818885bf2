"""SIGKILL the engine between an order's intent and its acknowledgement, restart it, and check
that the venue and the order book agree: duplicates 0, lost fills 0.

Five kill points, each at least 20 times, each against its own database and its own fake
Alpaca (which outlives every engine life, as a real venue does):

* ``intent_committed``: the intent is in SQL, the venue was never called;
* ``in_flight``: the venue has created the order but its answer is held back; the test kills
  the engine from outside while it waits;
* ``venue_acked``: the venue answered; nothing of the answer is committed;
* ``fill_received``: a fill arrived from the venue, not yet committed;
* ``fill_committed``: the fill is committed, not yet published.

Each life is killed at its 1st or 2nd pass through the point, so lives die at
different places in the batch (and during the previous death's reconciliation). A final
life runs undisturbed until every order is terminal. Then:

* every order at the venue was created exactly once (`create_count` is 1 everywhere);
* every order at the venue is in SQL with the same filled quantity, and a filled one is
  FILLED; every intent the venue never saw is closed as REJECTED, never resubmitted;
* the venue's fills and SQL's fills are the same set of trade ids (lost 0, duplicated 0).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import kill_life as killtest
import pytest
import redis
from sqlalchemy import select

from quantlab.adapters.redis.codec import decode_events
from quantlab.core.enums import OrderStatus
from quantlab.execution.faults import POINTS
from quantlab.storage.sql.engine import make_engine
from quantlab.storage.sql.models import FillRow, OrderRow, OutboxRow
from quantlab.testing.fakes.alpaca_trading import FakeAlpacaTrading
from quantlab.testing.redis_server import RedisServer

pytestmark = pytest.mark.slow

KILLS_PER_POINT = 20
ORDERS = 60


@pytest.fixture(scope="module")
def ctx() -> Any:
    context = multiprocessing.get_context("forkserver")
    # The forkserver imports these once; every life forks from it in milliseconds. (Python
    # 3.11's forkserver does not see the tests folder on sys.path, so `kill_life` itself,
    # which is light, is imported by each child.)
    context.set_forkserver_preload(
        [
            "quantlab.adapters.alpaca.trading",
            "quantlab.bus",
            "quantlab.execution",
            "quantlab.storage.sql.engine",
            "quantlab.storage.sql.store",
        ]
    )
    return context


@pytest.fixture
def fake() -> Iterator[FakeAlpacaTrading]:
    with FakeAlpacaTrading(key=killtest.KEY, secret=killtest.SECRET, fill_mode="partial") as f:
        f.parts = 2
        f.advance_on_poll = True
        yield f


def run_life(
    ctx: Any,
    db_url: str,
    fake: FakeAlpacaTrading,
    crash: str | None = None,
    kill_when: Callable[[], bool] | None = None,
    redis: tuple[str, str] | None = None,
) -> int | None:
    dump = Path(db_url.removeprefix("sqlite:///")).parent / "hang.txt"
    dump.unlink(missing_ok=True)
    proc = ctx.Process(
        target=killtest.life,
        args=(db_url, fake.url, ORDERS, crash),
        kwargs={"redis": redis, "hang_dump": str(dump)},
    )
    proc.start()
    if kill_when is not None:
        deadline = time.monotonic() + 30
        while not kill_when() and proc.is_alive() and time.monotonic() < deadline:
            time.sleep(0.002)
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
    proc.join(timeout=60)
    if proc.is_alive():
        proc.kill()
        proc.join()
        stacks = dump.read_text() if dump.exists() else "(no stack dump)"
        pytest.fail(f"an engine life (crash={crash}) hung; its threads:\n{stacks}")
    return proc.exitcode


def verify(db_url: str, fake: FakeAlpacaTrading) -> dict[str, int]:
    sql = make_engine(db_url)
    with sql.connect() as conn:
        orders = {r.client_order_id: r for r in conn.execute(select(OrderRow.__table__)).all()}
        fills = conn.execute(select(FillRow.__table__.c.trade_id, FillRow.__table__.c.venue)).all()
    sql.dispose()
    duplicates = sum(n - 1 for n in fake.create_count.values() if n > 1)
    assert duplicates == 0, f"orders created twice at the venue: {fake.create_count}"
    at_venue = fake.orders
    assert set(at_venue) <= set(orders), "an order at the venue that SQL never recorded"
    for coid, venue_order in at_venue.items():
        row = orders[coid]
        assert row.filled_quantity == Decimal(venue_order["filled_qty"]), coid
        assert OrderStatus(row.status).is_terminal, (coid, row.status)
        if venue_order["status"] == "filled":
            assert row.status == OrderStatus.FILLED, (coid, row.status)
    never_sent = set(orders) - set(at_venue)
    for coid in never_sent:
        assert orders[coid].status == OrderStatus.REJECTED, (coid, orders[coid].status)
        assert "never resubmitted" in orders[coid].reason
    venue_trades = {f["id"] for f in fake.fills}
    sql_trades = [t for t, _ in fills]
    assert len(sql_trades) == len(set(sql_trades)), "a fill recorded twice"
    lost = venue_trades - set(sql_trades)
    assert not lost, f"fills lost: {sorted(lost)}"
    assert set(sql_trades) <= venue_trades, "a fill SQL has that the venue never made"
    return {
        "orders_at_venue": len(at_venue),
        "never_sent": len(never_sent),
        "fills": len(venue_trades),
    }


@pytest.mark.parametrize("point", [*POINTS, "in_flight"])
def test_kill_nine_at_every_point_loses_and_duplicates_nothing(
    point: str, ctx: Any, fake: FakeAlpacaTrading, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'book.db'}"
    kills = lives = 0
    while kills < KILLS_PER_POINT:
        lives += 1
        assert lives < 4 * KILLS_PER_POINT, f"only {kills} kills at {point} in {lives} lives"
        nth = 1 + lives % 2
        if point == "in_flight":
            created = sum(fake.create_count.values())
            fake.hold_responses()

            def landed(before: int = created) -> bool:
                return sum(fake.create_count.values()) > before

            code = run_life(ctx, db_url, fake, kill_when=landed)
            fake.release()
        else:
            code = run_life(ctx, db_url, fake, crash=f"{point}:{nth}")
        if code == -signal.SIGKILL:
            kills += 1
        else:
            assert code in (0, 3), f"life {lives} at {point} exited {code}"
    assert run_life(ctx, db_url, fake) == 0, "the final life left orders open"
    figures = verify(db_url, fake)
    print(f"{point}: {kills} kills in {lives} lives, {figures}")
    assert figures["orders_at_venue"] > 0
    assert figures["fills"] > 0


def published_ids(url: str, namespace: str) -> dict[str, list[str]]:
    """Every message id on the order topics' streams of `namespace`, by topic."""
    client = redis.Redis.from_url(url)
    out: dict[str, list[str]] = {}
    try:
        for key in client.scan_iter(f"ql:{namespace}:t:orders.*"):
            topic = key.decode().rsplit(":t:", 1)[1]
            for _, fields in client.xrange(key):
                out.setdefault(topic, []).extend(m for m, _, _ in decode_events(fields[b"e"]))
    finally:
        client.close()
    return out


@pytest.mark.parametrize("point", ["status_committed", "fill_committed"])
def test_events_committed_before_a_kill_are_published_by_the_outbox_relay(
    point: str, ctx: Any, fake: FakeAlpacaTrading, tmp_path: Path, redis_server: RedisServer
) -> None:
    """The producer dies between the SQL commit and the publish: the relay of the next life
    publishes what the dead one committed (lost 0), on Redis Streams, to other processes."""
    db_url = f"sqlite:///{tmp_path / 'book.db'}"
    bus = (redis_server.url, f"outbox-{uuid.uuid4().hex[:8]}")
    kills = lives = 0
    while kills < KILLS_PER_POINT:
        lives += 1
        assert lives < 4 * KILLS_PER_POINT, f"only {kills} kills at {point} in {lives} lives"
        code = run_life(ctx, db_url, fake, crash=f"{point}:{1 + lives % 2}", redis=bus)
        if code == -signal.SIGKILL:
            kills += 1
        else:
            assert code in (0, 3), f"life {lives} at {point} exited {code}"
    assert run_life(ctx, db_url, fake, redis=bus) == 0, "the final life left orders open"
    figures = verify(db_url, fake)
    sql = make_engine(db_url)
    with sql.connect() as conn:
        outbox = conn.execute(select(OutboxRow.msg_id, OutboxRow.published_at)).all()
        fill_ids = {str(f) for f in conn.execute(select(FillRow.id)).scalars()}
    sql.dispose()
    published = published_ids(*bus)
    on_bus = {m for ids in published.values() for m in ids}
    committed = {m for m, _ in outbox}
    lost = committed - on_bus
    print(
        f"{point}: {kills} kills in {lives} lives, {figures}, outbox rows {len(committed)}, "
        f"published {sum(len(v) for v in published.values())} "
        f"(distinct {len(on_bus)}), lost {len(lost)}"
    )
    assert fill_ids <= committed, "a committed fill without its outbox event"
    assert not lost, f"committed events never published: {sorted(lost)[:5]}"
    assert all(at is not None for _, at in outbox), "outbox rows left unpublished"
    assert set(published["orders.filled"]) == fill_ids
