"""Engine factory: SQLite (WAL, synchronous=FULL) by default, PostgreSQL by URL; migrations."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DataError, IntegrityError, OperationalError, ProgrammingError

from quantlab.core.errors import StorageError

MIGRATIONS = Path(__file__).with_name("migrations")


def _sqlite_pragmas(synchronous: str) -> Any:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.close()

    return on_connect


def _suspects(parameters: Any) -> list[str]:
    """The bound values a database may refuse as data: long strings, strings with NUL."""
    rows = parameters if isinstance(parameters, list | tuple) else [parameters]
    out: list[str] = []
    for row in rows:
        items = row.items() if isinstance(row, dict) else enumerate(row or ())
        for key, value in items:
            if isinstance(value, str) and (len(value) > 64 or "\x00" in value):
                out.append(
                    f"{key}={value[:40]!r}{'...' if len(value) > 40 else ''} "
                    f"({len(value):,} characters{', NUL' if chr(0) in value else ''})"
                )
    return out


def _clear_data_error(context: ExceptionContext) -> None:
    """A value the database refuses as data (too long for its column, a NUL byte in text on
    PostgreSQL) becomes a `StorageError` naming the values, not a driver's traceback."""
    if not isinstance(context.sqlalchemy_exception, DataError):
        return
    why = str(context.original_exception).strip().splitlines()[0][:200]
    suspects = _suspects(context.parameters)
    named = f": {', '.join(suspects[:5])}" if suspects else ""
    raise StorageError(f"the database refused a value ({why}){named}") from (
        context.original_exception
    )


def make_engine(url: str, *, durable: bool = True, synchronous: str | None = None) -> Engine:
    """An engine for `url` (``sqlite:///path.db`` or ``postgresql+psycopg://...``).

    SQLite runs in WAL mode with ``synchronous=FULL``: a committed fill survives a crash or a
    power cut. ``durable=False`` (``synchronous=OFF``) is for scratch databases that can be
    recomputed, such as a backtest's own; it survives a process crash but not a power cut.
    ``synchronous="NORMAL"`` (WAL: survives a process crash, a power cut may drop the last
    commits but never corrupts) is what `SqlOrderStore` uses for order *status* changes,
    which reconciliation recovers from the venue (see `SqlOrderStore`).
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        level = synchronous or ("FULL" if durable else "OFF")
        if level not in ("FULL", "NORMAL", "OFF"):
            raise StorageError(f"synchronous must be FULL, NORMAL or OFF, got {level!r}")
        event.listen(engine, "connect", _sqlite_pragmas(level))
        event.listen(engine, "handle_error", _clear_data_error)
        return engine
    if url.startswith("postgresql"):
        engine = create_engine(url, pool_pre_ping=True)
        event.listen(engine, "handle_error", _clear_data_error)
        return engine
    raise StorageError(f"unsupported database URL {url!r}: expected sqlite:/// or postgresql://")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


_UPGRADE_LOCK = threading.Lock()  # Alembic's command API is not thread-safe


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` with Alembic (idempotent).

    Safe to call from several threads (serialised) and processes at once: a process that
    loses the race to create the schema (``table ... already exists``) tries again and
    finds it done.
    """
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    for attempt in range(5):
        try:
            with _UPGRADE_LOCK, engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
            return
        except (OperationalError, ProgrammingError, IntegrityError):
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))


def claim_trading_mode(engine: Engine, mode: str) -> None:
    """Mark the database as the order book of a `mode` ("paper" or "live") run, or refuse.

    A paper run and a live run never share a database: the first run to use one marks it,
    and a run of the other mode fails here, before any order, naming both.
    """
    from sqlalchemy import select
    from sqlalchemy.dialects import postgresql, sqlite

    from quantlab.storage.sql.models import MetaRow

    table = cast(Table, MetaRow.__table__)
    insert = (sqlite.insert if engine.dialect.name == "sqlite" else postgresql.insert)(table)
    with engine.begin() as conn:
        conn.execute(insert.values(key="trading_mode", value=mode).on_conflict_do_nothing())
        found = conn.execute(
            select(table.c.value).where(table.c.key == "trading_mode")
        ).scalar_one()
    if found != mode:
        raise StorageError(
            f"database {engine.url.render_as_string(hide_password=True)} holds the orders of "
            f"{found} trading; a {mode} run must use its own database"
        )
