"""The run registry: one row per production run in the ``runs`` SQL table.

A run is *claimed* (row inserted, status ``running``) before its notebook starts and *finished*
(status ``succeeded`` or ``failed``, end time, headline metrics or the error, output paths)
after. A scheduled run carries an idempotency key, a hash of (notebook, parameters,
scheduled time); the table's unique constraint on it makes a second claim of the same
scheduled run fail, so it runs once however many schedulers or retries fire it.

The registry lives in ``storage.db_url`` when one is set (shared by every machine), else in
``<storage.runs_dir>/registry.db`` (SQLite, WAL).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from quantlab.config import Settings
from quantlab.core.errors import QuantlabError
from quantlab.storage.sql.engine import make_engine, upgrade
from quantlab.storage.sql.models import RunRow

Status = Literal["running", "succeeded", "failed"]
STATUSES: tuple[Status, ...] = ("running", "succeeded", "failed")


class RunNotFoundError(QuantlabError):
    """No run with that id in the registry."""


@dataclass(frozen=True)
class RunRecord:
    """A run as the registry holds it."""

    run_id: str
    notebook: str
    parameters: dict[str, Any]
    status: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    error: str | None
    metrics: dict[str, Any]
    output_dir: str
    output_notebook: str | None
    report: str | None
    idempotency_key: str | None
    scheduled_for: dt.datetime | None
    sweep_id: str | None
    attempts: int

    @property
    def duration_s(self) -> float | None:
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for key in ("started_at", "ended_at", "scheduled_for"):
            if out[key] is not None:
                out[key] = out[key].isoformat()
        out["duration_s"] = self.duration_s
        return out


def idempotency_key(
    notebook: str | Path, parameters: dict[str, Any], scheduled_for: dt.datetime
) -> str:
    """The key of one scheduled run: sha256 of the notebook, its parameters and the time."""
    if scheduled_for.tzinfo is None:
        raise QuantlabError(
            f"scheduled time must be timezone-aware, got naive {scheduled_for.isoformat()}"
        )
    text = json.dumps(
        {
            "notebook": str(Path(notebook).as_posix()),
            "parameters": parameters,
            "at": scheduled_for.astimezone(dt.UTC).isoformat(),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def registry_url(settings: Settings) -> str:
    return settings.storage.db_url or f"sqlite:///{Path(settings.storage.runs_dir) / 'registry.db'}"


def _record(row: RunRow) -> RunRecord:
    return RunRecord(
        run_id=row.run_id,
        notebook=row.notebook,
        parameters=json.loads(row.parameters),
        status=row.status,
        started_at=row.started_at,
        ended_at=row.ended_at,
        error=row.error,
        metrics=json.loads(row.metrics) if row.metrics else {},
        output_dir=row.output_dir,
        output_notebook=row.output_notebook,
        report=row.report,
        idempotency_key=row.idempotency_key,
        scheduled_for=row.scheduled_for,
        sweep_id=row.sweep_id,
        attempts=row.attempts,
    )


class RunRegistry:
    """The ``runs`` table: claim, finish, look up and list runs.

    Examples
    --------
    >>> registry = RunRegistry.from_settings(load_settings())  # doctest: +SKIP
    >>> [r.run_id for r in registry.list(limit=5)]  # doctest: +SKIP
    """

    def __init__(self, url_or_engine: str | Engine) -> None:
        self.engine = (
            make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
        )
        upgrade(self.engine)

    @classmethod
    def from_settings(cls, settings: Settings) -> RunRegistry:
        return cls(registry_url(settings))

    def close(self) -> None:
        self.engine.dispose()

    def claim(
        self,
        *,
        run_id: str,
        notebook: str,
        parameters: dict[str, Any],
        output_dir: str,
        idempotency_key: str | None = None,
        scheduled_for: dt.datetime | None = None,
        sweep_id: str | None = None,
        started_at: dt.datetime | None = None,
    ) -> RunRecord | None:
        """Insert the run as ``running``; None if its idempotency key (or id) is taken.

        Raises `QuantlabError` if the run id exists without an idempotency key clash.
        """
        row = RunRow(
            run_id=run_id,
            notebook=notebook,
            parameters=json.dumps(parameters, sort_keys=True, default=str),
            status="running",
            started_at=started_at or dt.datetime.now(dt.UTC),
            output_dir=output_dir,
            idempotency_key=idempotency_key,
            scheduled_for=scheduled_for,
            sweep_id=sweep_id,
            attempts=1,
        )
        try:
            with Session(self.engine) as session, session.begin():
                session.add(row)
        except IntegrityError:
            if idempotency_key is not None and self.by_key(idempotency_key) is not None:
                return None
            raise QuantlabError(f"run id {run_id!r} is already in the registry") from None
        return self.get(run_id)

    def finish(
        self,
        run_id: str,
        *,
        status: Status,
        metrics: dict[str, Any] | None = None,
        error: str | None = None,
        output_notebook: str | None = None,
        report: str | None = None,
        attempts: int | None = None,
    ) -> RunRecord:
        if status not in STATUSES:
            raise QuantlabError(f"run status must be one of {STATUSES}, got {status!r}")
        with Session(self.engine) as session, session.begin():
            row = session.get(RunRow, run_id)
            if row is None:
                raise RunNotFoundError(f"no run {run_id!r} in the registry")
            row.status = status
            row.ended_at = dt.datetime.now(dt.UTC)
            row.metrics = json.dumps(metrics or {}, sort_keys=True, default=str)
            row.error = error
            row.output_notebook = output_notebook
            row.report = report
            if attempts is not None:
                row.attempts = attempts
        return self.get(run_id)

    def get(self, run_id: str) -> RunRecord:
        with Session(self.engine) as session:
            row = session.get(RunRow, run_id)
            if row is None:
                raise RunNotFoundError(f"no run {run_id!r} in the registry")
            return _record(row)

    def by_key(self, key: str) -> RunRecord | None:
        with Session(self.engine) as session:
            row = session.scalars(select(RunRow).where(RunRow.idempotency_key == key)).first()
            return _record(row) if row is not None else None

    def list(
        self,
        *,
        limit: int | None = 20,
        status: str | None = None,
        sweep_id: str | None = None,
    ) -> list[RunRecord]:
        """Newest first; filtered by status and sweep when given."""
        if status is not None and status not in STATUSES:
            raise QuantlabError(f"status must be one of {', '.join(STATUSES)}; got {status!r}")
        query = select(RunRow).order_by(RunRow.started_at.desc(), RunRow.run_id.desc())
        if status is not None:
            query = query.where(RunRow.status == status)
        if sweep_id is not None:
            query = query.where(RunRow.sweep_id == sweep_id)
        if limit is not None:
            query = query.limit(limit)
        with Session(self.engine) as session:
            return [_record(row) for row in session.scalars(query)]
