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
* the venue's fills and SQL's fills are the same set of trade ids (lost 0, duplicated 0);
* the database is sound: SQLite's ``PRAGMA integrity_check`` is ``ok``; on PostgreSQL,
  ``amcheck`` verifies every B-tree index of the book against its table.

Both books of record are tested: SQLite (WAL, ``synchronous=FULL``) and PostgreSQL (a
throwaway cluster; the engine is what dies, the server stays up). Kills: 6 points x 20 on
SQLite, 6 x 15 on PostgreSQL, and 2 x 20 of the outbox test: 250 in all. Each case records
its figures for the reliability report before it asserts.
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
from quantlab.testing.postgres_server import PostgresServer
from quantlab.testing.redis_server import RedisServer
from quantlab.testing.reliability import record

pytestmark = pytest.mark.slow

KILLS_PER_POINT = {"sqlite": 20, "postgresql": 15}
ORDERS = 60
BACKEND_NAMES = {
    "sqlite": "SQLite (WAL, synchronous=FULL)",
    "postgresql": "PostgreSQL",
}


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
    dump: Path,
    crash: str | None = None,
    kill_when: Callable[[], bool] | None = None,
    redis: tuple[str, str] | None = None,
) -> int | None:
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


def integrity_problems(db_url: str) -> list[str]:
    """What the database's own checker finds wrong (empty: sound).

    SQLite: ``PRAGMA integrity_check``. PostgreSQL: ``amcheck``'s ``bt_index_check`` of every
    B-tree index of the public schema against its table (``heapallindexed``)."""
    sql = make_engine(db_url)
    try:
        with sql.connect() as conn:
            if db_url.startswith("sqlite"):
                rows = [r[0] for r in conn.exec_driver_sql("PRAGMA integrity_check").all()]
                return [] if rows == ["ok"] else rows
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS amcheck")
            indexes = conn.exec_driver_sql(
                "SELECT c.oid, c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am a ON a.oid = c.relam"
                " WHERE n.nspname = 'public' AND a.amname = 'btree'"
            ).all()
            for oid, _ in indexes:  # raises on a corrupt index
                conn.exec_driver_sql("SELECT bt_index_check(%s, true)", (oid,))
            conn.commit()
            return [] if indexes else ["no index found to check"]
    finally:
        sql.dispose()


def verify(db_url: str, fake: FakeAlpacaTrading) -> dict[str, Any]:
    """Compare the venue with the book of record; count every disagreement."""
    sql = make_engine(db_url)
    with sql.connect() as conn:
        orders = {r.client_order_id: r for r in conn.execute(select(OrderRow.__table__)).all()}
        fills = conn.execute(select(FillRow.__table__.c.trade_id, FillRow.__table__.c.venue)).all()
    sql.dispose()
    problems: list[str] = []
    duplicate_orders = sum(n - 1 for n in fake.create_count.values() if n > 1)
    at_venue = fake.orders
    unrecorded = set(at_venue) - set(orders)
    problems += [f"{coid}: at the venue, not in SQL" for coid in sorted(unrecorded)]
    for coid, venue_order in at_venue.items():
        row = orders.get(coid)
        if row is None:
            continue
        if row.filled_quantity != Decimal(venue_order["filled_qty"]):
            problems.append(f"{coid}: filled {row.filled_quantity} != {venue_order['filled_qty']}")
        if not OrderStatus(row.status).is_terminal:
            problems.append(f"{coid}: left {row.status}")
        elif venue_order["status"] == "filled" and row.status != OrderStatus.FILLED:
            problems.append(f"{coid}: filled at the venue, {row.status} in SQL")
    never_sent = set(orders) - set(at_venue)
    for coid in never_sent:
        if orders[coid].status != OrderStatus.REJECTED or "never resubmitted" not in (
            orders[coid].reason or ""
        ):
            problems.append(f"{coid}: never sent, but {orders[coid].status}")
    venue_trades = {f["id"] for f in fake.fills}
    sql_trades = [t for t, _ in fills]
    return {
        "orders_at_venue": len(at_venue),
        "never_sent": len(never_sent),
        "fills": len(venue_trades),
        "duplicate_orders": duplicate_orders,
        "duplicate_fills": len(sql_trades) - len(set(sql_trades)),
        "lost_fills": len(venue_trades - set(sql_trades)),
        "invented_fills": len(set(sql_trades) - venue_trades),
        "problems": problems,
        "integrity": integrity_problems(db_url),
    }


def record_and_check(check: str, kills: int, lives: int, figures: dict[str, Any]) -> None:
    """One row of the reliability report, then the assertions it summarises."""
    integrity = figures["integrity"]
    record(
        "faults",
        check,
        trials=kills,
        unit="kills",
        lost=figures["lost_fills"],
        duplicated=figures["duplicate_orders"] + figures["duplicate_fills"],
        failed=len(figures["problems"]) + figures["invented_fills"] + (1 if integrity else 0),
        failed_what="book disagrees with the venue, or the database check fails",
        detail=(
            f"{lives} lives, {figures['orders_at_venue']} orders at the venue, "
            f"{figures['fills']} fills, {figures['never_sent']} never sent; "
            f"integrity {'ok' if not integrity else integrity[:3]}"
        ),
    )
    record_and_check_book(figures)


def record_and_check_book(figures: dict[str, Any]) -> None:
    integrity = figures["integrity"]
    assert figures["duplicate_orders"] == 0, "an order created twice at the venue"
    assert figures["duplicate_fills"] == 0, "a fill recorded twice"
    assert figures["lost_fills"] == 0, "fills lost"
    assert figures["invented_fills"] == 0, "a fill SQL has that the venue never made"
    assert not figures["problems"], figures["problems"][:10]
    assert not integrity, f"the database check failed: {integrity[:10]}"
    assert figures["orders_at_venue"] > 0
    assert figures["fills"] > 0


@pytest.fixture(params=["sqlite", "postgresql"])
def book(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(backend, URL) of a fresh book of record."""
    if request.param == "sqlite":
        return "sqlite", f"sqlite:///{tmp_path / 'book.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return "postgresql", server.database()


@pytest.mark.parametrize("point", [*POINTS, "in_flight"])
def test_kill_nine_at_every_point_loses_and_duplicates_nothing(
    point: str, ctx: Any, fake: FakeAlpacaTrading, book: tuple[str, str], tmp_path: Path
) -> None:
    backend, db_url = book
    dump = tmp_path / "hang.txt"
    target = KILLS_PER_POINT[backend]
    kills = lives = 0
    while kills < target:
        lives += 1
        assert lives < 4 * target, f"only {kills} kills at {point} in {lives} lives"
        nth = 1 + lives % 2
        if point == "in_flight":
            created = sum(fake.create_count.values())
            fake.hold_responses()

            def landed(before: int = created) -> bool:
                return sum(fake.create_count.values()) > before

            code = run_life(ctx, db_url, fake, dump, kill_when=landed)
            fake.release()
        else:
            code = run_life(ctx, db_url, fake, dump, crash=f"{point}:{nth}")
        if code == -signal.SIGKILL:
            kills += 1
        else:
            assert code in (0, 3), f"life {lives} at {point} exited {code}"
    assert run_life(ctx, db_url, fake, dump) == 0, "the final life left orders open"
    figures = verify(db_url, fake)
    print(f"{backend} {point}: {kills} kills in {lives} lives, {figures}")
    record_and_check(
        f"kill -9 during fills, {BACKEND_NAMES[backend]}: at {point}", kills, lives, figures
    )


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
    dump = tmp_path / "hang.txt"
    bus = (redis_server.url, f"outbox-{uuid.uuid4().hex[:8]}")
    target = KILLS_PER_POINT["sqlite"]
    kills = lives = 0
    while kills < target:
        lives += 1
        assert lives < 4 * target, f"only {kills} kills at {point} in {lives} lives"
        code = run_life(ctx, db_url, fake, dump, crash=f"{point}:{1 + lives % 2}", redis=bus)
        if code == -signal.SIGKILL:
            kills += 1
        else:
            assert code in (0, 3), f"life {lives} at {point} exited {code}"
    assert run_life(ctx, db_url, fake, dump, redis=bus) == 0, "the final life left orders open"
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
    unpublished = sum(at is None for _, at in outbox)
    without_event = fill_ids - committed
    n_published = sum(len(v) for v in published.values())
    print(
        f"{point}: {kills} kills in {lives} lives, {figures}, outbox rows {len(committed)}, "
        f"published {n_published} (distinct {len(on_bus)}), lost {len(lost)}"
    )
    record(
        "faults",
        f"kill -9 between the SQL commit and the publish (outbox relay to Redis): at {point}",
        trials=kills,
        unit="kills",
        lost=len(lost) + len(without_event) + figures["lost_fills"],
        duplicated=figures["duplicate_orders"] + figures["duplicate_fills"],
        failed=unpublished + len(figures["problems"]) + (1 if figures["integrity"] else 0),
        failed_what="outbox rows left unpublished, or the book disagrees with the venue",
        detail=(
            f"{lives} lives, {len(committed)} events committed, {n_published} published "
            f"({len(on_bus)} distinct: a redelivered id is applied once by its consumers)"
        ),
    )
    assert not without_event, "a committed fill without its outbox event"
    assert not lost, f"committed events never published: {sorted(lost)[:5]}"
    assert unpublished == 0, "outbox rows left unpublished"
    assert set(published["orders.filled"]) == fill_ids
    record_and_check_book(figures)
