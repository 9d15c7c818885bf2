"""The engine as three processes (ingest, strategy, execution) on Redis Streams, PostgreSQL and
a Chroma server, by configuration alone, trading on the paper venue end to end; the monitor
snapshot (what the dashboard reads) follows all three."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine, text

from quantlab.engine.monitor import read_snapshot
from quantlab.storage.vectors import make_client
from quantlab.testing.chroma_server import ChromaServer
from quantlab.testing.dashboard import DashboardStack
from quantlab.testing.postgres_server import PostgresServer
from quantlab.testing.redis_server import RedisServer

pytestmark = pytest.mark.slow

CONFIG = """\
[strategy]
name = "hedge"
id = "hedge"
experts = ["macd_cross", "ema_trend", "patterns"]
horizon = 4
[patterns]
search = "chroma"
window = 16
store_every = 2
url = "{chroma}"
collection = "{namespace}"
[[live.sources]]
type = "synthetic"
symbols = 8
rate = 400
bar_interval_s = 0.1
[live]
monitor_every_s = 0.25
[bus]
backend = "redis"
url = "{redis}"
namespace = "{namespace}"
ack_timeout_s = 5
[storage]
db_url = "{db_url}"
lake_root = "{tmp}/lake"
"""


def wait_for(what: str, check: Any, stack: DashboardStack, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            logs = "\n".join(
                f"--- {r}\n{stack.log(r)}" for r in ("ingest", "strategy", "execution")
            )
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.25)


def test_three_processes_trade_on_the_paper_venue_through_redis(
    stack: DashboardStack,
    redis_server: RedisServer,
    postgres: PostgresServer,
    chroma_server: ChromaServer,
) -> None:
    namespace = f"e2e-{uuid.uuid4().hex[:8]}"
    db_url = postgres.database()
    config = CONFIG.format(
        redis=redis_server.url,
        namespace=namespace,
        db_url=db_url,
        chroma=chroma_server.url,
        tmp=stack.tmp.as_posix(),
    )
    procs = stack.roles(config, ("execution", "strategy", "ingest"), duration=90)
    snapshot_path = stack.tmp / "state" / "paper" / "monitor.json"

    def trading() -> dict[str, Any] | None:
        snap = read_snapshot(snapshot_path)
        if not snap or snap.get("fills_total", 0) < 3:
            return None
        if not {"ingest", "strategy", "execution"} <= set(snap.get("processes", {})):
            return None
        return snap if snap.get("events", 0) > 0 and snap.get("signals_total", 0) > 0 else None

    snap = wait_for("fills and all three roles in the monitor snapshot", trading, stack)
    # The snapshot is written by the execution process, with the others' figures merged in.
    processes = snap["processes"]
    assert processes["execution"]["pid"] == procs["execution"].pid
    assert processes["ingest"]["pid"] == procs["ingest"].pid
    assert processes["strategy"]["pid"] == procs["strategy"].pid
    assert snap["orders_total"] > 0  # built in the strategy process
    assert snap["markets"], "market data reached the execution process's monitor"
    consumers = snap["latency"]["consumers"]
    assert {"features", "strategies", "risk", "execution"} <= set(consumers)
    assert snap["latency"]["data_to_order"]["count"] > 0

    # Stop in the order a deployment does: sources first, then strategies, then execution.
    for role in ("ingest", "strategy", "execution"):
        procs[role].terminate()
        assert procs[role].wait(timeout=60) == 0, stack.log(role)

    # The order book of record (PostgreSQL) holds the orders and fills the roles made.
    sql = create_engine(db_url)
    with sql.connect() as conn:
        orders = conn.execute(text("select count(*) from orders")).scalar_one()
        fills = conn.execute(text("select count(*) from fills")).scalar_one()
        orphan = conn.execute(
            text(
                "select count(*) from fills f left join orders o on f.order_id = o.id "
                "where o.id is null"
            )
        ).scalar_one()
        unpublished = conn.execute(
            text("select count(*) from outbox where published_at is null")
        ).scalar_one()
    sql.dispose()
    assert orders > 0
    assert fills > 0
    assert orphan == 0
    assert unpublished == 0, "events committed to the book and never published"

    # Each role wrote its own summary; the execution role's counts the fills of the book.
    found = [json.loads(p.read_text()) for p in (stack.tmp / "runs").rglob("summary.json")]
    summaries = {s["role"]: s for s in found}
    assert sorted(summaries) == ["execution", "ingest", "strategy"]
    assert summaries["execution"]["fills"] == fills
    assert summaries["ingest"]["events"] > 0
    assert summaries["strategy"]["signals"] > 0

    # The strategy process kept its pattern memory in the Chroma server, and asked it.
    assert not summaries["ingest"]["strategy"].get("hedge")  # built where it runs only
    patterns = summaries["strategy"]["strategy"]["hedge"]["experts"]["patterns"]
    assert patterns["search_path_rows"]["chroma"] > 0
    stored = make_client(url=chroma_server.url).get_collection(f"{namespace}-hedge").count()
    assert stored > 0

    # Nothing was dead-lettered on the way.
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.xlen(f"ql:{namespace}:t:system.deadletter") == 0
    finally:
        client.close()
