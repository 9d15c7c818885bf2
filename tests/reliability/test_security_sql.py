"""Security: SQL injection. Classic payloads as every user-supplied name (symbol, strategy id,
client order id, venue, trade id, ledger agent and account, currency, run id, sweep id,
outbox topic and message id) through every query path of the SQL stores (`SqlOrderStore`,
`SqlPortfolioStore` with its cost table, `SqlOutbox`, `RunRegistry`) and through the CLI
commands that take a name (`quantlab runs show ID`, `quantlab runs ls --sweep/--status`),
on SQLite and on PostgreSQL.

Rows altered: the whole database is read before and after each call (every table, every row),
and a row that appeared, disappeared or changed counts unless it holds the call's own name
(the row the call legitimately writes or updates, its name stored as data). The same calls
with a benign name are the control: they must write (so each path really runs) and alter no
other row. Rows returned for another name (a lookup of ``' OR '1'='1`` answering someone
else's order) count as leaked.

Plus: ``ruff check --select S src`` (bandit's rules, S608 "SQL built from strings" among them)
is clean.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, inspect, select, table, text
from typer.testing import CliRunner

from quantlab.cli import app
from quantlab.core.enums import Liquidity, OrderStatus, OrderType, Side, TimeInForce
from quantlab.core.errors import QuantlabError
from quantlab.core.messages import Fill, Order, OrderEvent
from quantlab.execution.ports import Outgoing
from quantlab.portfolio.costs import CostRecord
from quantlab.portfolio.ledger import JournalEntry, Posting
from quantlab.portfolio.ports import PnlSnapshot, PositionSnapshot
from quantlab.runs.registry import RunRegistry
from quantlab.storage.sql.engine import make_engine, upgrade
from quantlab.storage.sql.outbox import SqlOutbox
from quantlab.storage.sql.portfolio_store import SqlPortfolioStore
from quantlab.storage.sql.store import SqlOrderStore
from quantlab.testing.reliability import record

ROOT = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC)

PAYLOADS = [
    "'; DROP TABLE orders; --",
    "' OR '1'='1",
    "' OR 1=1 --",
    '" OR 1=1 --',
    "x'); DELETE FROM fills; --",
    "1; UPDATE orders SET status='filled' --",
    "' UNION SELECT client_order_id FROM orders --",
    "%' OR '%'='",
    "\\'; DROP TABLE runs; --",
    "$$; DROP TABLE ledger_entries; $$",
    "'); PRAGMA writable_schema=1; --",
    "? :name %s %(name)s {0}",
    "ʼ OR ʼ1ʼ=ʼ1",  # U+02BC, which some collations fold to '
    "＇; DELETE FROM costs; --",  # fullwidth apostrophe U+FF07
    "’; DELETE FROM runs; --",  # right single quotation mark U+2019
    "a\x00'; DROP TABLE outbox; --",
    "x" * 10_000 + "'; DROP TABLE orders; --",
]

Path_ = Callable[[str], int]  # a query path: runs the call with a name; returns wrong rows


# -- the database's whole content -----------------------------------------------------------
def _content(engine: Engine) -> dict[str, Counter[str]]:
    """Every row of every table, as text, per table (a dropped table is simply absent)."""
    out: dict[str, Counter[str]] = {}
    with engine.connect() as conn:
        for name in inspect(conn).get_table_names():
            rows = conn.execute(select(text("*")).select_from(table(name))).all()
            out[name] = Counter(json.dumps(list(r), default=_text) for r in rows)
    return out


def _text(value: Any) -> str:
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _holds(row: str, name: str) -> bool:
    """Whether `row` (JSON text of its values) holds `name` as data: verbatim, JSON-escaped
    (a JSON column, or the row's own JSON), or truncated to a column's width."""
    values = [v if isinstance(v, str) else json.dumps(v) for v in json.loads(row)]
    forms = {name, json.dumps(name)[1:-1], json.dumps(name, ensure_ascii=False)[1:-1]}
    return any(any(f in v for f in forms) or (len(v) >= 16 and v in name) for v in values if v)


def _altered(before: dict[str, Counter[str]], after: dict[str, Counter[str]], name: str) -> int:
    """Rows added, removed or changed that do not hold `name`; a dropped or new table counts
    as one more."""
    altered = len(set(before) ^ set(after))
    for tbl in set(before) | set(after):
        old, new = before.get(tbl, Counter()), after.get(tbl, Counter())
        changed = (old - new) + (new - old)
        altered += sum(n for row, n in changed.items() if not _holds(row, name))
    return altered


def _changed(before: dict[str, Counter[str]], after: dict[str, Counter[str]]) -> int:
    """Rows added, removed or changed, whatever they hold."""
    total = 0
    for tbl in set(before) | set(after):
        old, new = before.get(tbl, Counter()), after.get(tbl, Counter())
        total += sum(((old - new) + (new - old)).values())
    return total


# -- the stores and the paths -----------------------------------------------------------------
class Book:
    """The stores on one migrated database, seeded with rows every payload could reach."""

    def __init__(self, engine: Engine, url: str) -> None:
        self.engine, self.url = engine, url
        self.orders = SqlOrderStore(engine)
        self.portfolio = SqlPortfolioStore(engine)
        self.outbox = SqlOutbox(engine)
        self.runs = RunRegistry(engine)
        self.cli = CliRunner()
        self.n = 0
        for i in range(3):  # rows for a payload to reach: orders, fills, runs... of others
            for _what, path, writes in self.paths():
                if writes:
                    path(f"seed-{i}")

    def _at(self) -> dt.datetime:
        self.n += 1
        return T0 + dt.timedelta(seconds=self.n)

    def paths(self) -> list[tuple[str, Path_, bool]]:
        """(what, path, whether it writes) for every query path, writes first (so the
        reads find the rows)."""
        return [
            ("orders: record_intent (symbol, strategy, client order id, venue)", self._intent,
             True),
            ("orders: set_status + outbox row (client order id, reason, topic, msg id)",
             self._status, True),
            ("outbox: mark_published (msg id)", self._mark, True),
            ("orders: record_fill + outbox row (client order id, venue, trade id)", self._fill,
             True),
            ("ledger: record_entry (entry id, agent, strategy, account, currency)", self._entry,
             True),
            ("costs: record_cost (fill, order, signal, strategy, symbol, currency)", self._cost,
             True),
            ("snapshots: record_snapshot (symbol, currency)", self._snapshot, True),
            ("runs: claim (run id, notebook, parameters, sweep id, key)", self._claim, True),
            ("runs: finish (run id, error, metrics, report)", self._finish, True),
            ("orders: get / order_id_for (client order id)", self._get, False),
            ("orders: has_fill / net_positions (venue, trade id)", self._fills, False),
            ("runs: get / by_key / list(sweep_id, status)", self._run_reads, False),
            ("cli: quantlab runs show ID", self._cli_show, False),
            ("cli: quantlab runs ls --sweep ID / --status ID", self._cli_ls, False),
        ]  # fmt: skip

    # writes (return 0: what they change is measured on the database)
    def _intent(self, name: str) -> int:
        order = Order(
            order_id=uuid.uuid4(), client_order_id=name, symbol=name, side=Side.BUY,
            order_type=OrderType.LIMIT, quantity=Decimal(1), price=Decimal(2),
            time_in_force=TimeInForce.GTC, strategy_id=name, signal_id=uuid.uuid4(),
            timestamp=self._at(),
        )  # fmt: skip
        self.orders.record_intent(order, name, OrderStatus.PENDING_SUBMIT)
        return 0

    def _event(self, name: str) -> OrderEvent:
        found = self.orders.order_id_for(name)
        return OrderEvent(
            order_id=found or uuid.uuid4(), client_order_id=name, symbol=name,
            status=OrderStatus.ACCEPTED, venue=name, timestamp=self._at(), reason=name,
        )  # fmt: skip

    def _status(self, name: str) -> int:
        out = Outgoing(topic=name, msg_id=name, message=self._event(name))
        self.orders.set_status(name, OrderStatus.ACCEPTED, self._at(), name, outgoing=out)
        return 0

    def _mark(self, name: str) -> int:
        self.outbox.mark_published([name])
        return 0

    def _fill(self, name: str) -> int:
        fill = Fill(
            fill_id=uuid.uuid4(), order_id=self.orders.order_id_for(name) or uuid.uuid4(),
            client_order_id=name, symbol=name, side=Side.BUY, price=Decimal(2),
            quantity=Decimal(1), fee=Decimal("0.01"), fee_currency="USD",
            liquidity=Liquidity.TAKER, timestamp=self._at(), venue=name, trade_id=name,
            strategy_id=name,
        )  # fmt: skip
        out = Outgoing(topic=name, msg_id=f"{name}#fill", message=fill)
        self.orders.record_fill(fill, OrderStatus.FILLED, outgoing=out)
        return 0

    def _entry(self, name: str) -> int:
        legs = (
            Posting(f"assets:{name}", Decimal(1), name),
            Posting(f"equity:{name}", Decimal(-1), name),
        )
        entry = JournalEntry(
            id=name, timestamp=self._at(), memo=name, agent=name, postings=legs, strategy=name
        )
        self.portfolio.record_entry(entry)
        return 0

    def _cost(self, name: str) -> int:
        z = Decimal(0)
        self.portfolio.record_cost(
            CostRecord(
                fill_id=name, client_order_id=name, signal_id=name, strategy_id=name,
                symbol=name, currency=name, side=Side.SELL, quantity=Decimal(1),
                price=Decimal(2), decision_mid=z, arrival_mid=z, delay=z, spread=z,
                slippage=z, fee=z, fee_other=z, fee_other_currency=name, funding=z, total=z,
                impact=None,
            )
        )  # fmt: skip
        return 0

    def _snapshot(self, name: str) -> int:
        at, z = self._at(), Decimal(0)
        self.portfolio.record_snapshot(
            [PositionSnapshot(timestamp=at, symbol=name, currency=name, quantity=z,
                              avg_price=z, mark=None, realized=z, unrealized=z, fees=z)],
            [PnlSnapshot(timestamp=at, currency=name, realized=z, unrealized=z, fees=z,
                         total=z, cash=z, equity=z)],
        )  # fmt: skip
        return 0

    def _claim(self, name: str) -> int:
        self.runs.claim(
            run_id=name, notebook=name, parameters={"symbols": name, "strategy": name},
            output_dir=name, idempotency_key=name, sweep_id=name, started_at=self._at(),
        )  # fmt: skip
        return 0

    def _finish(self, name: str) -> int:
        self.runs.finish(name, status="failed", error=name, metrics={name: name}, report=name)
        return 0

    # reads (return how many rows they answered that are not `name`'s)
    def _get(self, name: str) -> int:
        wrong = 0
        found = self.orders.get(name)
        if found is not None and found.order.client_order_id != name:
            wrong += 1
        oid = self.orders.order_id_for(name)
        if oid is not None and (found is None or found.order.order_id != oid):
            wrong += 1
        return wrong

    def _fills(self, name: str) -> int:
        fills = self.orders.fills_frame()
        mine = fills.filter((fills["venue"] == name) & (fills["trade_id"] == name)).height
        wrong = int(self.orders.has_fill(name, name) != (mine > 0))
        orders = self.orders.orders_frame()
        symbols = set(orders.filter(orders["venue"] == name)["symbol"])
        return wrong + len(set(self.orders.net_positions(name)) - symbols)

    def _run_reads(self, name: str) -> int:
        wrong = 0
        with contextlib.suppress(QuantlabError):  # not found
            wrong += int(self.runs.get(name).run_id != name)
        key = self.runs.by_key(name)
        wrong += int(key is not None and key.idempotency_key != name)
        wrong += sum(r.sweep_id != name for r in self.runs.list(limit=None, sweep_id=name))
        with contextlib.suppress(QuantlabError):  # not a status: refused
            wrong += sum(r.status != name for r in self.runs.list(limit=None, status=name))
        return wrong

    def _invoke(self, *args: str) -> Any:
        return self.cli.invoke(app, list(args), env={"QUANTLAB_STORAGE__DB_URL": self.url})

    def _cli_show(self, name: str) -> int:
        done = self._invoke("runs", "show", name, "--json")
        if done.exit_code != 0:
            return 0  # not found (RunNotFoundError): nothing answered
        return int(json.loads(done.output)["run_id"] != name)

    def _cli_ls(self, name: str) -> int:
        wrong = 0
        done = self._invoke("runs", "ls", "--sweep", name, "--limit", "1000", "--json")
        if done.exit_code == 0:
            wrong += sum(r["sweep_id"] != name for r in json.loads(done.output))
        done = self._invoke("runs", "ls", "--status", name, "--json")
        if done.exit_code == 0:
            wrong += sum(r["status"] != name for r in json.loads(done.output))
        return wrong


@pytest.fixture(params=["sqlite", "postgresql"])
def book(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Book]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'quantlab.db'}"
        engine = make_engine(url, durable=False)
    else:
        url = request.getfixturevalue("postgres").database()
        engine = make_engine(url)
    upgrade(engine)
    yield Book(engine, url)
    engine.dispose()


def test_injection_payloads_in_every_name_alter_no_row(book: Book) -> None:
    """Counts rows altered beyond the call's own and rows answered for another name.

    The check can fail: a store that formatted a name into its SQL would, on PostgreSQL,
    run the ``DROP``/``DELETE`` that follows a closing quote (psycopg sends a statement
    without parameters as a script) and drop or empty tables the next read sees; on both
    databases ``' OR '1'='1`` as a client order id would answer another order (leaked)."""
    dialect = book.engine.dialect.name
    trials = altered = leaked = refused = 0
    problems: list[str] = []
    unclear: list[str] = []
    benign_writes: Counter[str] = Counter()
    for name in [f"benign-{i}" for i in range(2)] + PAYLOADS:
        benign = name.startswith("benign-")
        for what, path, _writes in book.paths():
            trials += 1
            before = _content(book.engine)
            try:
                wrong = path(name)
            except Exception as exc:
                wrong = 0
                refused += 1  # refused (too long for a column, NUL on PostgreSQL...)
                if benign:
                    raise
                if not isinstance(exc, QuantlabError):  # a driver's error is not a clear one
                    unclear.append(f"{what} with {name[:30]!r}: {type(exc).__name__}: {exc}")
            after = _content(book.engine)
            n = _altered(before, after, name)
            if benign:
                benign_writes[what] += _changed(before, after)
            if n or wrong:
                problems.append(f"{what} with {name[:40]!r}: {n} rows altered, {wrong} leaked")
            altered += n
            leaked += wrong

    record(
        "security",
        f"SQL injection payloads in every name through every store and CLI path, {dialect}",
        trials=trials,
        unit="calls",
        leaked=leaked,
        failed=altered + len(unclear),
        failed_what="rows altered beyond the call's own, or refusals without a clear error",
        detail=(
            f"{len(PAYLOADS)} payloads + 2 benign names x {len(book.paths())} paths; "
            f"{refused} calls refused with a clear error (names too long or with NUL for "
            "the column)"
        ),
    )
    assert not unclear, unclear[:5]
    assert altered == 0, problems
    assert leaked == 0, problems
    # Control: every write path wrote with a benign name (it ran), read paths did not.
    for what, _path, writes in book.paths():
        assert (benign_writes[what] > 0) == writes, (what, benign_writes[what])


def test_ruff_security_rules_are_clean() -> None:
    """``ruff check --select S src``: bandit's rules over the package (S608: SQL built from
    strings; S301: pickle; S104: binding all interfaces; S105-S107: hard-coded secrets...)."""
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff is not None, "ruff is not installed (it comes with the dev extra)"
    done = subprocess.run(
        [ruff, "check", "--select", "S", "--output-format", "json", "src"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    found = json.loads(done.stdout or "[]")
    files = sum(1 for _ in (ROOT / "src").rglob("*.py"))
    suppressed = sum(
        p.read_text(encoding="utf-8").count("# noqa: S") for p in (ROOT / "src").rglob("*.py")
    )
    record(
        "security",
        "ruff security rules (S, bandit) over src",
        trials=files,
        unit="files",
        failed=len(found),
        failed_what="findings",
        detail=f"{suppressed} reviewed suppressions (# noqa: S...) in src",
    )
    assert done.returncode in (0, 1), done.stderr
    assert found == [], [f"{f['filename']}:{f['location']['row']} {f['code']}" for f in found]
