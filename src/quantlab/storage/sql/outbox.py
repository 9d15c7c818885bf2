"""The transactional outbox of the order book (`outbox` table).

An event that reports a change to the book (a fill, an order's new status) is written to the
``outbox`` table in the same transaction as the change (`write_outgoing`, called by
`SqlOrderStore`). The execution engine publishes it right after the commit and marks it
published; a process that dies between the commit and the publish leaves it unpublished, and
`SqlOutbox.pending` hands it to the relay when the process starts again. Publishing is
at-least-once (a crash after the publish and before the mark publishes it twice, under the
same message id), so consumers are idempotent on the message id, as with every bus delivery.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from quantlab.core.errors import StorageError
from quantlab.core.messages import Fill, OrderEvent, from_json, to_json
from quantlab.execution.ports import Outgoing
from quantlab.storage.sql.models import OutboxRow

_OUTBOX = cast(Table, OutboxRow.__table__)
# A message id already in the outbox (an order that becomes UNKNOWN twice) is the same event
# under the same id, which consumers drop anyway: the second row is not written.
_INSERTS: dict[str, Any] = {
    "sqlite": sqlite_insert(_OUTBOX).on_conflict_do_nothing(),
    "postgresql": postgresql_insert(_OUTBOX).on_conflict_do_nothing(),
}


def write_outgoing(conn: Connection, outgoing: Outgoing) -> None:
    """Add `outgoing` to the outbox inside the caller's transaction."""
    insert = _INSERTS.get(conn.dialect.name)
    if insert is None:
        raise StorageError(f"unsupported SQL dialect {conn.dialect.name!r}")
    conn.execute(
        insert,
        {
            "msg_id": outgoing.msg_id,
            "topic": outgoing.topic,
            "payload": to_json(outgoing.message),
            "created_at": dt.datetime.now(dt.UTC),
            "published_at": None,
        },
    )


class SqlOutbox:
    """The relay's view of the outbox: what is pending, and marking it published.

    Marks go through `mark_engine` (a lighter SQLite engine, synchronous=NORMAL): a mark lost
    in a crash only means one more, harmless, publish of the same message id.
    """

    def __init__(self, engine: Engine, *, mark_engine: Engine | None = None) -> None:
        self.engine = engine
        self.mark_engine = mark_engine or engine
        self._mark = (
            update(_OUTBOX)
            .where(_OUTBOX.c.msg_id == bindparam("mid"))
            .values(published_at=bindparam("at"))
        )

    def pending(self, limit: int = 1000) -> list[Outgoing]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(_OUTBOX.c.msg_id, _OUTBOX.c.topic, _OUTBOX.c.payload)
                .where(_OUTBOX.c.published_at.is_(None))
                .order_by(_OUTBOX.c.id)
                .limit(limit)
            ).all()
        out = []
        for msg_id, topic, payload in rows:
            message = from_json(payload)
            if not isinstance(message, Fill | OrderEvent):
                raise StorageError(
                    f"outbox row {msg_id!r} holds a {type(message).__name__}, "
                    "expected a Fill or an OrderEvent"
                )
            out.append(Outgoing(topic=topic, msg_id=msg_id, message=message))
        return out

    def mark_published(self, msg_ids: list[str]) -> None:
        if not msg_ids:
            return
        at = dt.datetime.now(dt.UTC)
        with self.mark_engine.begin() as conn:
            conn.execute(self._mark, [{"mid": m, "at": at} for m in msg_ids])

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(_OUTBOX.c.published_at.is_(None), func.count()).group_by(
                    _OUTBOX.c.published_at.is_(None)
                )
            ).all()
        counts = {"pending": 0, "published": 0}
        for unpublished, n in rows:
            counts["pending" if unpublished else "published"] += int(n)
        return counts
