"""SQL storage: engine pragmas, Alembic migrations (DESIGN §5 schema) and `SqlOrderStore`."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import msgspec
import polars as pl
import pytest
from alembic import command
from sqlalchemy import Engine, inspect, text

from quantlab.core import ids
from quantlab.core.enums import Liquidity, OrderStatus, OrderType, Side, TimeInForce
from quantlab.core.errors import StorageError
from quantlab.core.messages import Fill, Order
from quantlab.execution.ports import OrderStore
from quantlab.storage.sql.engine import alembic_config, claim_trading_mode, make_engine, upgrade
from quantlab.storage.sql.store import SqlOrderStore

T0 = dt.datetime(2018, 1, 10, 4, 55, 0, 123456, tzinfo=dt.UTC)
S_PART, S_FILLED = OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED

MakeEngine = Callable[..., Engine]


@pytest.fixture
def make_db(tmp_path: Path) -> Iterator[MakeEngine]:
    """Engines on SQLite files in tmp_path, disposed when the test ends."""
    made: list[Engine] = []

    def make(name: str = "quantlab.db", *, durable: bool = True) -> Engine:
        engine = make_engine(f"sqlite:///{tmp_path / name}", durable=durable)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, make_db: MakeEngine) -> Iterator[Engine]:
    """A migrated order book on SQLite and on a real PostgreSQL server (psycopg 3)."""
    if request.param == "sqlite":
        engine = make_db()
    else:
        engine = make_engine(request.getfixturevalue("postgres").database())
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> SqlOrderStore:
    return SqlOrderStore(engine)


def make_order(
    n: int = 0,
    *,
    quantity: Decimal = Decimal("1.5"),
    price: Decimal | None = Decimal("0.0521"),
    side: Side = Side.BUY,
    at: dt.datetime = T0,
    symbol: str = "ETH/BTC",
) -> Order:
    signal = ids.signal_id("ema_cross", symbol, n)
    coid = ids.client_order_id(signal)
    return Order(
        order_id=ids.order_id(coid),
        client_order_id=coid,
        symbol=symbol,
        side=side,
        order_type=OrderType.LIMIT if price is not None else OrderType.MARKET,
        quantity=quantity,
        price=price,
        time_in_force=TimeInForce.GTC,
        strategy_id="ema_cross",
        signal_id=signal,
        timestamp=at,
    )


def make_fill(
    order: Order,
    trade_id: str,
    quantity: Decimal,
    *,
    price: Decimal = Decimal("0.0521"),
    fee: Decimal = Decimal("0.00001"),
    at: dt.datetime = T0 + dt.timedelta(minutes=5),
    venue: str = "paper",
) -> Fill:
    return Fill(
        fill_id=ids.fill_id(venue, trade_id),
        order_id=order.order_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side,
        price=price,
        quantity=quantity,
        fee=fee,
        fee_currency="BTC",
        liquidity=Liquidity.TAKER,
        timestamp=at,
        venue=venue,
        trade_id=trade_id,
        strategy_id=order.strategy_id,
    )


# -- engine ---------------------------------------------------------------------------------


def _pragma(engine: Engine, name: str) -> object:
    with engine.connect() as conn:
        return conn.execute(text(f"PRAGMA {name}")).scalar()


def test_make_engine_is_wal_and_synchronous_full_by_default(make_db: MakeEngine) -> None:
    engine = make_db()
    assert _pragma(engine, "journal_mode") == "wal"
    assert _pragma(engine, "synchronous") == 2  # FULL
    assert _pragma(engine, "foreign_keys") == 1


def test_make_engine_not_durable_turns_synchronous_off(make_db: MakeEngine) -> None:
    engine = make_db("scratch.db", durable=False)
    assert _pragma(engine, "journal_mode") == "wal"
    assert _pragma(engine, "synchronous") == 0  # OFF


def test_make_engine_creates_the_parent_folder(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "q.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    assert path.is_file()


def test_make_engine_refuses_an_unknown_url() -> None:
    with pytest.raises(StorageError, match="mysql"):
        make_engine("mysql://localhost/db")


# -- migrations -----------------------------------------------------------------------------


def _check_schema(engine: Engine) -> None:
    insp = inspect(engine)
    assert {"orders", "fills"} <= set(insp.get_table_names())

    orders = {c["name"]: c for c in insp.get_columns("orders")}
    assert {"id", "strategy_id", "symbol", "status", "created_at"} <= set(orders)
    assert insp.get_pk_constraint("orders")["constrained_columns"] == ["id"]
    indexed = {tuple(ix["column_names"]) for ix in insp.get_indexes("orders")}
    assert ("created_at",) in indexed
    assert ("client_order_id",) in {
        tuple(u["column_names"]) for u in insp.get_unique_constraints("orders")
    }

    fills = {c["name"]: c for c in insp.get_columns("fills")}
    assert {"id", "order_id", "price", "quantity", "timestamp"} <= set(fills)
    assert insp.get_pk_constraint("fills")["constrained_columns"] == ["id"]
    (fk,) = insp.get_foreign_keys("fills")
    assert fk["constrained_columns"] == ["order_id"]
    assert fk["referred_table"] == "orders"
    assert fk["referred_columns"] == ["id"]
    for name in ("id", "order_id", "price", "quantity", "timestamp"):
        assert fills[name]["nullable"] is False, name


def test_upgrade_creates_the_design_schema(engine: Engine) -> None:
    _check_schema(engine)


def test_upgrade_is_idempotent(engine: Engine, store: SqlOrderStore) -> None:
    store.record_intent(make_order(), "paper", OrderStatus.PENDING_SUBMIT)
    upgrade(engine)
    upgrade(engine)
    _check_schema(engine)
    assert len(store.open_orders()) == 1  # data untouched


def test_alembic_check_reports_no_drift_between_models_and_migrations(engine: Engine) -> None:
    # Raises `alembic.util.exc.AutogenerateDiffsDetected` if the models and migrations differ.
    command.check(alembic_config(engine.url.render_as_string(hide_password=False)))


def test_downgrade_to_base_and_upgrade_head_round_trips(engine: Engine) -> None:
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    command.downgrade(cfg, "base")
    assert not {"orders", "fills"} & set(inspect(engine).get_table_names())
    upgrade(engine)
    _check_schema(engine)
    command.check(cfg)
    store = SqlOrderStore(engine)
    assert store.record_intent(make_order(), "paper", OrderStatus.PENDING_SUBMIT)


def test_enums_are_stored_as_plain_strings(engine: Engine, store: SqlOrderStore) -> None:
    order = make_order(side=Side.BUY)
    store.record_intent(order, "paper", OrderStatus.PENDING_SUBMIT)
    store.record_fill(make_fill(order, "t1", order.quantity), OrderStatus.FILLED)
    pg = engine.dialect.name == "postgresql"
    query = (
        "SELECT side, order_type, time_in_force, status, pg_typeof(side)::text FROM orders"
        if pg
        else "SELECT side, order_type, time_in_force, status, typeof(side) FROM orders"
    )
    with engine.connect() as conn:
        row = conn.execute(text(query)).one()
        liquidity = conn.execute(text("SELECT liquidity FROM fills")).scalar_one()
    plain = "character varying" if pg else "text"
    assert tuple(row) == ("buy", "limit", "gtc", "filled", plain)
    assert liquidity == "taker"


# -- SqlOrderStore --------------------------------------------------------------------------


def test_store_implements_the_order_store_port(store: SqlOrderStore) -> None:
    assert isinstance(store, OrderStore)


def test_record_intent_is_idempotent(engine: Engine, store: SqlOrderStore) -> None:
    order = make_order()
    assert store.record_intent(order, "paper", OrderStatus.PENDING_SUBMIT) is True
    assert store.record_intent(order, "paper", OrderStatus.SUBMITTED) is False
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM orders")).scalar_one() == 1
    record = store.get(order.client_order_id)
    assert record is not None
    assert record.status is OrderStatus.PENDING_SUBMIT  # the replay changed nothing
    assert record.order == order
    assert store.order_id_for(order.client_order_id) == order.order_id
    assert store.get("ql-nope") is None
    assert store.order_id_for("ql-nope") is None


@pytest.mark.parametrize(
    ("quantity", "price"),
    [
        (Decimal("0.000000012345678901"), Decimal("123456789.123456789")),
        (Decimal("123456789.123456789"), Decimal("0.000000012345678901")),
        (Decimal("1E-18"), Decimal("99999999999999999999.999999999999999999")),
        (Decimal("3"), None),
    ],
)
def test_decimals_round_trip_exactly(
    engine: Engine, store: SqlOrderStore, quantity: Decimal, price: Decimal | None
) -> None:
    order = make_order(quantity=quantity, price=price)
    store.record_intent(order, "paper", OrderStatus.PENDING_SUBMIT)
    record = store.get(order.client_order_id)
    assert record is not None
    assert record.order.quantity == quantity
    assert str(record.order.quantity.normalize()) == str(quantity.normalize())
    assert record.order.price == price
    with engine.connect() as conn:
        raw = conn.execute(text("SELECT quantity FROM orders")).scalar_one()
    assert Decimal(raw) == quantity  # stored as exact text, not a float


def test_fill_decimals_round_trip_exactly(store: SqlOrderStore) -> None:
    order = make_order(quantity=Decimal("0.3"))
    store.record_intent(order, "paper", OrderStatus.ACCEPTED)
    price, fee = Decimal("123456789.123456789"), Decimal("0.000000012345678901")
    store.record_fill(make_fill(order, "t1", Decimal("0.1"), price=price, fee=fee), S_PART)
    store.record_fill(make_fill(order, "t2", Decimal("0.2"), price=price, fee=fee), S_FILLED)
    record = store.get(order.client_order_id)
    assert record is not None
    assert record.filled_quantity == Decimal("0.3")  # 0.1 + 0.2, exactly
    assert record.status is OrderStatus.FILLED
    fills = store.fills_frame()
    assert fills["price"].to_list() == [price, price]
    assert fills["fee"].to_list() == [fee, fee]
    assert fills["quantity"].to_list() == [Decimal("0.1"), Decimal("0.2")]


def test_record_fill_dedups_on_venue_and_trade_id(engine: Engine, store: SqlOrderStore) -> None:
    order = make_order(quantity=Decimal("2"))
    store.record_intent(order, "paper", OrderStatus.ACCEPTED)
    first = make_fill(order, "t1", Decimal("1"))
    assert store.record_fill(first, S_PART) is True
    # The same trade reported again (even under another fill id) is a no-op.
    again = msgspec.structs.replace(first, fill_id=uuid.uuid4())
    assert store.record_fill(again, S_FILLED) is False
    assert store.record_fill(first, S_FILLED) is False
    record = store.get(order.client_order_id)
    assert record is not None
    assert record.filled_quantity == Decimal("1")
    assert record.status is S_PART
    # The same trade id at another venue is another trade.
    other = make_fill(order, "t1", Decimal("1"), venue="other")
    assert store.record_fill(other, S_FILLED) is True
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM fills")).scalar_one() == 2
    record = store.get(order.client_order_id)
    assert record is not None
    assert (record.filled_quantity, record.status) == (Decimal("2"), S_FILLED)
    assert record.updated_at == other.timestamp


def test_record_fill_updates_the_order_in_the_same_transaction(
    engine: Engine, store: SqlOrderStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    order = make_order(quantity=Decimal("2"))
    store.record_intent(order, "paper", OrderStatus.ACCEPTED)
    # Make the order update fail after the fill insert: the insert must roll back with it.
    broken = text("UPDATE orders SET no_such_column = :filled WHERE id = :oid")
    monkeypatch.setattr(store, "_after_fill", broken)
    with pytest.raises(Exception, match="no_such_column"):
        store.record_fill(make_fill(order, "t1", Decimal("1")), S_PART)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM fills")).scalar_one() == 0
    monkeypatch.undo()
    # Not recorded, so not a duplicate either: the retry books it.
    assert store.record_fill(make_fill(order, "t1", Decimal("1")), S_PART) is True
    record = store.get(order.client_order_id)
    assert record is not None
    assert (record.filled_quantity, record.status) == (Decimal("1"), S_PART)


def test_record_fill_for_an_unknown_order_raises(store: SqlOrderStore) -> None:
    with pytest.raises(StorageError, match="unknown order"):
        store.record_fill(make_fill(make_order(), "t1", Decimal("1")), S_FILLED)


def test_set_status(store: SqlOrderStore) -> None:
    order = make_order()
    store.record_intent(order, "paper", OrderStatus.PENDING_SUBMIT)
    later = T0 + dt.timedelta(seconds=1)
    store.set_status(order.client_order_id, OrderStatus.CANCELED, later, "x" * 600)
    record = store.get(order.client_order_id)
    assert record is not None
    assert record.status is OrderStatus.CANCELED
    assert record.updated_at == later
    assert record.reason == "x" * 512  # truncated to the column


def test_set_status_on_an_unknown_order_raises(store: SqlOrderStore) -> None:
    with pytest.raises(StorageError, match="ql-missing"):
        store.set_status("ql-missing", OrderStatus.CANCELED, T0)


def test_open_orders_lists_only_non_terminal_orders(store: SqlOrderStore) -> None:
    for n, status in enumerate(OrderStatus):
        order = make_order(n, at=T0 + dt.timedelta(minutes=n))
        store.record_intent(order, "paper", status)
    open_statuses = [r.status for r in store.open_orders()]
    assert set(open_statuses) == {s for s in OrderStatus if not s.is_terminal}
    assert len(open_statuses) == len(set(open_statuses))
    # In creation order.
    assert open_statuses == [s for s in OrderStatus if not s.is_terminal]


def test_timestamps_come_back_aware_utc(store: SqlOrderStore) -> None:
    plus5 = dt.timezone(dt.timedelta(hours=5))
    at = dt.datetime(2018, 1, 10, 9, 55, 0, 123456, tzinfo=plus5)  # 04:55 UTC
    order = make_order(at=at)
    store.record_intent(order, "paper", OrderStatus.PENDING_SUBMIT)
    record = store.get(order.client_order_id)
    assert record is not None
    assert record.order.timestamp == at
    assert record.order.timestamp.utcoffset() == dt.timedelta(0)


def test_naive_timestamps_are_refused(store: SqlOrderStore) -> None:
    with pytest.raises(Exception, match="naive"):
        store.set_status("ql-x", OrderStatus.CANCELED, dt.datetime(2018, 1, 10))


def test_orders_frame_and_fills_frame(store: SqlOrderStore) -> None:
    a = make_order(1, quantity=Decimal("2"), at=T0)
    b = make_order(2, side=Side.SELL, at=T0 + dt.timedelta(minutes=5), symbol="ADA/BTC")
    c = make_order(3, at=T0 + dt.timedelta(minutes=6))
    store.record_intent(b, "paper", OrderStatus.ACCEPTED)
    store.record_intent(c, "paper", OrderStatus.ACCEPTED)
    store.record_intent(a, "paper", OrderStatus.ACCEPTED)
    late = T0 + dt.timedelta(minutes=20)
    early = T0 + dt.timedelta(minutes=10)
    # Recorded out of time order: the frame is in time order.
    store.record_fill(make_fill(a, "t2", Decimal("2"), at=late), S_FILLED)
    store.record_fill(make_fill(b, "t1", Decimal("1.5"), at=early), S_FILLED)

    orders = store.orders_frame()
    assert orders["client_order_id"].to_list() == [
        a.client_order_id,
        b.client_order_id,
        c.client_order_id,
    ]
    assert orders.schema["created_at"] == pl.Datetime("us", "UTC")
    assert orders["created_at"].to_list() == [a.timestamp, b.timestamp, c.timestamp]
    assert orders["side"].to_list() == ["buy", "sell", "buy"]
    assert orders["symbol"].to_list() == ["ETH/BTC", "ADA/BTC", "ETH/BTC"]
    assert orders["status"].to_list() == ["filled", "filled", "accepted"]
    assert orders["filled_quantity"].to_list() == [Decimal("2"), Decimal("1.5"), Decimal("0")]
    assert orders["updated_at"].to_list() == [late, early, c.timestamp]
    assert all(t.tzinfo is not None for t in orders["updated_at"].to_list())

    fills = store.fills_frame()
    assert fills.schema["timestamp"] == pl.Datetime("us", "UTC")
    assert fills["trade_id"].to_list() == ["t1", "t2"]
    assert fills["timestamp"].to_list() == [early, late]
    assert fills["symbol"].to_list() == ["ADA/BTC", "ETH/BTC"]
    assert fills["side"].to_list() == ["sell", "buy"]
    assert fills["client_order_id"].to_list() == [b.client_order_id, a.client_order_id]
    assert fills["order_id"].to_list() == [str(b.order_id), str(a.order_id)]
    assert fills["liquidity"].to_list() == ["taker", "taker"]


def test_frames_of_an_empty_store_have_the_schema(store: SqlOrderStore) -> None:
    assert store.orders_frame().is_empty()
    assert store.fills_frame().is_empty()
    assert store.fills_frame().schema["timestamp"] == pl.Datetime("us", "UTC")


def test_a_database_serves_paper_or_live_trading_never_both(engine: Engine) -> None:
    claim_trading_mode(engine, "paper")
    claim_trading_mode(engine, "paper")  # the same mode again: fine
    with pytest.raises(StorageError, match=r"holds the orders of paper trading; a live run"):
        claim_trading_mode(engine, "live")


def test_a_value_the_database_refuses_is_a_clear_error_naming_it(
    engine: Engine, store: SqlOrderStore
) -> None:
    """A NUL byte in text (PostgreSQL refuses it) or a name past its column's length
    (PostgreSQL's VARCHAR) is a `StorageError` naming the value, not a driver's traceback."""
    from quantlab.core.errors import StorageError

    bad = make_order(1, symbol="ETH/BTC\x00" + "x" * 100)
    if engine.dialect.name == "sqlite":  # SQLite stores both as given
        assert store.record_intent(bad, "paper", OrderStatus.PENDING_SUBMIT)
        return
    with pytest.raises(StorageError, match=r"the database refused a value .*symbol='ETH/BTC"):
        store.record_intent(bad, "paper", OrderStatus.PENDING_SUBMIT)
    assert store.get(bad.client_order_id) is None
