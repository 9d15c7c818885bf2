"""The crash test's consumer process: applies each message's effect durably and idempotently.

Run as ``python _crash_consumer.py <redis url> <namespace> <sqlite path>``. It imports what it
needs, prints ``loaded`` and waits for ``go`` on stdin (so the test starts the next consumer's
interpreter while the current one runs, and a restart costs no import time), subscribes as
`GROUP`, prints ``ready`` and then, until it is killed, takes up to `BATCH` envelopes at a time
and applies them in one SQLite transaction (WAL, ``synchronous=FULL``) that also takes
`EFFECT_S` of work, so the consumer is busy and a kill usually lands in the middle of a batch:

- ``applied``: one row per message id (PRIMARY KEY): a redelivered message already applied
  is not applied again, only counted in ``counter.reapplied``;
- ``effects``: one row per application (no key), so a duplicate effect would show there;
- ``counter``: how many were applied, the sum of their payloads, the re-applications refused
  and the deliveries seen with ``deliveries > 1``.

Only once the transaction is committed are the envelopes acknowledged. Entries a killed
consumer held are taken over by the next one with XAUTOCLAIM after `ACK_TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys

from quantlab.adapters.redis import RedisStreamsBus
from quantlab.bus import Envelope

PATTERN = "crash.*"
GROUP = "appliers"
BATCH = 100
# What applying a batch takes besides SQLite (awaited, like a call to another service): keeps
# the consumer busy, so kills land mid-batch.
EFFECT_S = 0.01
ACK_TIMEOUT = 0.5
CLAIM_INTERVAL = 0.1
MAX_DELIVERIES = 1_000_000  # a crash test, not a poison test: nothing may be dead-lettered

SCHEMA = """
CREATE TABLE IF NOT EXISTS applied (msg_id TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS effects (msg_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counter (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    applied INTEGER NOT NULL,
    total INTEGER NOT NULL,
    reapplied INTEGER NOT NULL,
    redelivered INTEGER NOT NULL
);
INSERT OR IGNORE INTO counter VALUES (0, 0, 0, 0, 0);
"""


def connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)  # explicit BEGIN / COMMIT
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA busy_timeout=10000")
    return db


def create_schema(path: str) -> None:
    db = connect(path)
    try:
        db.executescript(SCHEMA)
    finally:
        db.close()


async def apply(db: sqlite3.Connection, batch: list[Envelope]) -> None:
    """Apply the envelopes' effects in one transaction; ids already applied are skipped."""
    applied = total = reapplied = redelivered = 0
    db.execute("BEGIN IMMEDIATE")
    try:
        for envelope in batch:
            redelivered += int(envelope.deliveries > 1)
            cur = db.execute(
                "INSERT OR IGNORE INTO applied VALUES (?, ?)", (envelope.id, envelope.payload)
            )
            if cur.rowcount == 1:
                db.execute("INSERT INTO effects VALUES (?)", (envelope.id,))
                applied += 1
                total += envelope.payload
            else:
                reapplied += 1
        await asyncio.sleep(EFFECT_S)  # the effect's own (awaited) work, inside the transaction
        db.execute(
            "UPDATE counter SET applied = applied + ?, total = total + ?, "
            "reapplied = reapplied + ?, redelivered = redelivered + ? WHERE id = 0",
            (applied, total, reapplied, redelivered),
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


async def consume(url: str, namespace: str, path: str) -> None:
    db = connect(path)
    bus = RedisStreamsBus(url, namespace=namespace, claim_interval=CLAIM_INTERVAL, block_ms=50)
    sub = bus.subscribe(PATTERN, name=GROUP, ack_timeout=ACK_TIMEOUT, max_deliveries=MAX_DELIVERIES)
    first = await sub.get(timeout=0.05)  # sets the subscription up
    print("ready", flush=True)
    batch = [first] if first is not None else []
    while True:
        if not batch:
            envelope = await sub.get(timeout=1.0)
            if envelope is None:
                continue
            batch.append(envelope)
        while len(batch) < BATCH and (envelope := await sub.get(timeout=0)) is not None:
            batch.append(envelope)
        await apply(db, batch)
        for envelope in batch:  # only after the effects are committed
            sub.ack(envelope)
        batch = []


def main() -> None:
    url, namespace, path = sys.argv[1:4]
    print("loaded", flush=True)
    if sys.stdin.readline().strip() == "go":
        asyncio.run(consume(url, namespace, path))


if __name__ == "__main__":
    main()
