"""The Redis bus crash test: a consumer SIGKILLed 50 times while 100,000 messages flow.

The producer (this process) publishes with `publish_many`; the consumer is a subprocess
(``_crash_consumer.py``) that applies each message's effect to SQLite in one transaction per
batch, then acknowledges. It is killed with SIGKILL at random moments (inside a transaction,
between a commit and its acknowledgement, while reading...); each time a new consumer process
of the same subscription name starts and takes over, with XAUTOCLAIM, the entries the dead one
left pending. Publishing is paced on the kills, so every kill happens while messages are still
flowing. At the end every message's effect is applied exactly once: none lost, none twice;
redeliveries are expected and counted (their re-application is refused by the message id).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

import pytest
from _crash_consumer import GROUP, create_schema

from quantlab.adapters.redis import RedisStreamsBus
from quantlab.testing.redis_server import RedisServer
from quantlab.testing.reliability import record

pytestmark = [pytest.mark.integration, pytest.mark.redis, pytest.mark.slow]

CONSUMER = Path(__file__).with_name("_crash_consumer.py")
N = 100_000
KILLS = 50
RATE = 2_800  # messages per second the producer publishes (about as long as the kills take)
CHUNK = 140  # messages per publish_many call
BATCH_SIZE = 50  # events per stream entry
LIFE_S = (0.1, 0.9)  # how long a consumer lives after it is ready, before its SIGKILL
KILL_DELAY_S = 0.02  # ... and at most this long after a chunk went out (while it is applied)


class Consumer:
    """One consumer process: started ahead (`loaded`), released with `go`."""

    def __init__(self, args: list[str], log: IO[bytes]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(CONSUMER), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        )

    async def line(self, timeout: float = 20.0) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
        return raw.decode().strip()

    async def go(self) -> None:
        assert self.proc.stdin is not None
        assert await self.line() == "loaded"
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()
        assert await self.line() == "ready"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def counts(path: Path) -> dict[str, Any]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        applied, total, reapplied, redelivered = db.execute(
            "SELECT applied, total, reapplied, redelivered FROM counter"
        ).fetchone()
        return {
            "applied": applied,
            "total": total,
            "reapplied": reapplied,
            "redelivered": redelivered,
        }


def applied_now(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute("SELECT applied FROM counter").fetchone()[0])


@pytest.fixture
def namespace() -> str:
    return f"crash-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def producer(redis_server: RedisServer, namespace: str) -> AsyncIterator[RedisStreamsBus]:
    """The producing bus, on a fresh namespace."""
    bus = RedisStreamsBus(redis_server.url, namespace=namespace, batch_size=BATCH_SIZE)
    yield bus
    await bus.close()


async def test_a_consumer_killed_50_times_applies_every_message_exactly_once(
    producer: RedisStreamsBus, redis_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    db_path = tmp_path / "effects.sqlite"
    create_schema(str(db_path))
    args = [redis_server.url, namespace, str(db_path)]
    rng = random.Random(20260124)
    ids = [f"c{i}" for i in range(N)]
    kills = 0
    published = 0
    published_at_kill: list[int] = []  # how many were published when the consumer died
    backlog_at_kill: list[int] = []  # published and not applied when the consumer died

    chunk_out = asyncio.Event()  # set after each publish_many

    async def produce() -> None:
        nonlocal published
        next_at = time.monotonic()
        while published < N:
            # The last chunk goes out after the last kill: every kill happens while messages
            # are still being published.
            target = N if kills >= KILLS else N - CHUNK
            if published >= target:
                await asyncio.sleep(0.01)
                next_at = time.monotonic()
                continue
            end = min(published + CHUNK, target)
            await producer.publish_many(
                "crash.x", list(range(published, end)), msg_ids=ids[published:end]
            )
            next_at += (end - published) / RATE
            published = end
            chunk_out.set()
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    log_path = tmp_path / "consumers.log"
    with log_path.open("wb") as log:
        live = Consumer(args, log)
        standby = Consumer(args, log)
        producing: asyncio.Task[None] | None = None
        try:
            await live.go()  # the group exists before the first entry
            producing = asyncio.create_task(produce())
            while kills < KILLS:
                await asyncio.sleep(rng.uniform(*LIFE_S))
                assert producing is not None
                if producing.done():
                    producing.result()  # a producer error surfaces here
                chunk_out.clear()
                with contextlib.suppress(TimeoutError):  # the next chunk goes out ...
                    await asyncio.wait_for(chunk_out.wait(), 0.5)
                await asyncio.sleep(rng.uniform(0, KILL_DELAY_S))  # ... and is being applied
                at_kill = published
                published_at_kill.append(at_kill)
                assert live.proc.poll() is None, f"a consumer died on its own:\n{tail(log_path)}"
                live.kill()
                kills += 1
                backlog_at_kill.append(at_kill - applied_now(db_path))
                live, standby = standby, Consumer(args, log)
                await live.go()
            await asyncio.wait_for(producing, 30)
            # The last consumer lives: it takes over what the dead ones left and finishes.
            deadline = time.monotonic() + 60
            while applied_now(db_path) < N and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            await producer.drain(timeout=30)  # every entry acknowledged in the group
        finally:
            if producing is not None:
                producing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await producing
            live.kill()
            standby.kill()
    elapsed = time.monotonic() - started

    result = counts(db_path)
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        applied_ids = {row[0] for row in db.execute("SELECT msg_id FROM applied")}
        effects, distinct = db.execute(
            "SELECT count(*), count(DISTINCT msg_id) FROM effects"
        ).fetchone()
    lost = len(set(ids) - applied_ids)
    duplicates_applied = effects - distinct
    print(
        f"\nredis crash test: {N} messages, {kills} SIGKILLs, "
        f"{result['redelivered']} redeliveries seen, {result['reapplied']} re-applications "
        f"refused, {result['applied']} applied, {duplicates_applied} duplicates applied, "
        f"{lost} lost, {elapsed:.1f}s; backlog at kill: min {min(backlog_at_kill)}, "
        f"median {sorted(backlog_at_kill)[len(backlog_at_kill) // 2]}, "
        f"killed with work in hand {sum(n > 0 for n in backlog_at_kill)}/{kills}"
    )
    redis = producer._redis
    dead_lettered = await redis.xlen(producer.stream_key("system.deadletter"))
    pending = await redis.xpending(producer.stream_key("crash.x"), GROUP)
    record(
        "faults",
        "kill -9 of a Redis Streams consumer while 100,000 messages flow",
        trials=kills,
        unit="kills",
        lost=lost,
        duplicated=duplicates_applied,
        failed=dead_lettered + int(pending["pending"]),
        failed_what="messages dead-lettered or left pending",
        detail=(
            f"{N:,} messages, {result['redelivered']:,} redeliveries, "
            f"{result['reapplied']:,} re-applications refused by message id"
        ),
    )
    assert kills >= KILLS
    assert all(n < N for n in published_at_kill)  # every kill while messages flowed
    assert sum(n > 0 for n in backlog_at_kill) >= KILLS * 0.7  # most with work in hand
    assert published == N
    assert lost == 0, tail(log_path)
    assert duplicates_applied == 0
    assert result["applied"] == effects == len(applied_ids) == N
    assert result["total"] == sum(range(N))  # each payload's effect once
    assert result["redelivered"] > 0  # the kills did force redeliveries
    assert applied_ids == set(ids)
    # Nothing was dead-lettered, and nothing is left pending in the group.
    assert dead_lettered == 0
    assert pending["pending"] == 0
