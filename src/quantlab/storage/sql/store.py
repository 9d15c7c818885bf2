"""`SqlOrderStore`: the execution stage's `OrderStore` port on SQLAlchemy (SQLite or PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any, cast

import polars as pl
from sqlalchemy import Engine, Table, bindparam, select, update
from sqlalchemy.orm import sessionmaker

from quantlab.core.enums import OrderStatus, Side
from quantlab.core.errors import StorageError
from quantlab.core.messages import Fill, Order
from quantlab.execution.ports import OrderRecord, Outgoing
from quantlab.storage.sql.models import FillRow, OrderRow
from quantlab.storage.sql.outbox import write_outgoing

_ORDERS = cast(Table, OrderRow.__table__)
_FILLS = cast(Table, FillRow.__table__)

_OPEN = (
    OrderStatus.NEW,
    OrderStatus.PENDING_SUBMIT,
    OrderStatus.SUBMITTED,
    OrderStatus.ACCEPTED,
    OrderStatus.PARTIALLY_FILLED,
    OrderStatus.UNKNOWN,
)


def _record(row: OrderRow) -> OrderRecord:
    order = Order(
        order_id=row.id,
        client_order_id=row.client_order_id,
        symbol=row.symbol,
        side=row.side,
        order_type=row.order_type,
        quantity=row.quantity,
        price=row.price,
        time_in_force=row.time_in_force,
        strategy_id=row.strategy_id,
        signal_id=row.signal_id,
        timestamp=row.created_at,
    )
    return OrderRecord(
        order=order,
        status=row.status,
        venue=row.venue,
        filled_quantity=row.filled_quantity,
        reason=row.reason,
        updated_at=row.updated_at,
    )


class SqlOrderStore:
    """Orders and fills in SQL; each call is one committed transaction (strong consistency).

    Writes use SQLAlchemy Core with the dialect's ``INSERT ... ON CONFLICT DO NOTHING`` so that a
    replayed intent or fill is a no-op instead of an error (idempotent by construction).
    """

    def __init__(self, engine: Engine, *, status_engine: Engine | None = None) -> None:
        self.engine = engine
        # Intents and fills are what a crash must never lose: committed on `engine` (fsynced).
        # A status change is the venue's news, which reconciliation asks the venue again
        # after a restart: it may go through a lighter engine (SQLite synchronous=NORMAL).
        self.status_engine = status_engine or engine
        self._session = sessionmaker(engine, expire_on_commit=False)
        dialect = engine.dialect.name
        dialect_insert: Any
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        elif dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            raise StorageError(f"unsupported SQL dialect {dialect!r}")
        # Statements are built once; each call only binds its values.
        self._insert_order = (
            dialect_insert(_ORDERS)
            .values({c.name: bindparam(c.name) for c in _ORDERS.columns})
            .on_conflict_do_nothing()
            .returning(_ORDERS.c.id)
        )
        self._insert_fill = (
            dialect_insert(_FILLS)
            .values({c.name: bindparam(c.name) for c in _FILLS.columns})
            .on_conflict_do_nothing()
            .returning(_FILLS.c.id)
        )
        self._order_by_coid = (
            select(_ORDERS.c.id, _ORDERS.c.filled_quantity)
            .where(_ORDERS.c.client_order_id == bindparam("coid"))
            .with_for_update()  # row lock on PostgreSQL: concurrent fills cannot lose an update
        )
        by_coid = update(_ORDERS).where(_ORDERS.c.client_order_id == bindparam("coid"))
        new_status: dict[str, Any] = {"status": bindparam("status"), "updated_at": bindparam("at")}
        self._set_status = {  # by whether a reason comes with the change
            False: by_coid.values(new_status),
            True: by_coid.values(new_status | {"reason": bindparam("reason")}),
        }
        self._after_fill = (
            update(_ORDERS)
            .where(_ORDERS.c.id == bindparam("oid"))
            .values(
                filled_quantity=bindparam("filled"),
                status=bindparam("new_status"),
                updated_at=bindparam("at"),
            )
        )

    def record_intent(self, order: Order, venue: str, status: OrderStatus) -> bool:
        params = {
            "id": order.order_id,
            "client_order_id": order.client_order_id,
            "strategy_id": order.strategy_id,
            "signal_id": order.signal_id,
            "symbol": order.symbol,
            "side": order.side,
            "order_type": order.order_type,
            "time_in_force": order.time_in_force,
            "quantity": order.quantity,
            "price": order.price,
            "status": status,
            "filled_quantity": Decimal(0),
            "venue": venue,
            "reason": "",
            "created_at": order.timestamp,
            "updated_at": order.timestamp,
        }
        with self.engine.begin() as conn:
            return conn.execute(self._insert_order, params).scalar_one_or_none() is not None

    def set_status(
        self,
        client_order_id: str,
        status: OrderStatus,
        at: dt.datetime,
        reason: str = "",
        *,
        outgoing: Outgoing | None = None,
    ) -> None:
        params: dict[str, object] = {"coid": client_order_id, "status": status, "at": at}
        if reason:
            params["reason"] = reason[:512]
        with self.status_engine.begin() as conn:
            done = conn.execute(self._set_status[bool(reason)], params)
            if done.rowcount == 0:
                raise StorageError(f"no order with client_order_id {client_order_id!r}")
            if outgoing is not None:
                write_outgoing(conn, outgoing)

    def record_fill(
        self, fill: Fill, status: OrderStatus, *, outgoing: Outgoing | None = None
    ) -> bool:
        with self.engine.begin() as conn:
            found = conn.execute(self._order_by_coid, {"coid": fill.client_order_id}).one_or_none()
            if found is None:
                raise StorageError(
                    f"fill {fill.trade_id} for unknown order {fill.client_order_id!r}"
                )
            order_id, filled = found
            inserted = conn.execute(
                self._insert_fill,
                {
                    "id": fill.fill_id,
                    "order_id": order_id,
                    "price": fill.price,
                    "quantity": fill.quantity,
                    "fee": fill.fee,
                    "fee_currency": fill.fee_currency,
                    "liquidity": fill.liquidity,
                    "timestamp": fill.timestamp,
                    "venue": fill.venue,
                    "trade_id": fill.trade_id,
                },
            ).scalar_one_or_none()
            if inserted is None:
                return False
            conn.execute(
                self._after_fill,
                {
                    "oid": order_id,
                    "filled": filled + fill.quantity,
                    "new_status": status,
                    "at": fill.timestamp,
                },
            )
            if outgoing is not None:
                write_outgoing(conn, outgoing)
        return True

    def has_fill(self, venue: str, trade_id: str) -> bool:
        with self.engine.connect() as conn:
            found = conn.execute(
                select(_FILLS.c.id).where(_FILLS.c.venue == venue, _FILLS.c.trade_id == trade_id)
            ).first()
        return found is not None

    def net_positions(self, venue: str) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(_ORDERS.c.symbol, _ORDERS.c.side, _FILLS.c.quantity)
                .join(_ORDERS, _FILLS.c.order_id == _ORDERS.c.id)
                .where(_ORDERS.c.venue == venue)
            ).all()
        for symbol, side, quantity in rows:
            out[symbol] = out.get(symbol, Decimal(0)) + quantity * Side(side).sign
        return out

    def get(self, client_order_id: str) -> OrderRecord | None:
        with self._session() as session:
            row = session.scalars(
                select(OrderRow).where(OrderRow.client_order_id == client_order_id)
            ).one_or_none()
            return None if row is None else _record(row)

    def open_orders(self) -> list[OrderRecord]:
        with self._session() as session:
            rows = session.scalars(
                select(OrderRow).where(OrderRow.status.in_(_OPEN)).order_by(OrderRow.created_at)
            ).all()
            return [_record(r) for r in rows]

    def order_id_for(self, client_order_id: str) -> uuid.UUID | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(_ORDERS.c.id).where(_ORDERS.c.client_order_id == client_order_id)
            ).scalar_one_or_none()

    def fills(self) -> list[Fill]:
        """Every fill as a `Fill` message, in time order (to rebuild in-memory books after a
        restart)."""
        with self._session() as session:
            rows = session.execute(
                select(FillRow, OrderRow.client_order_id, OrderRow.symbol, OrderRow.side)
                .add_columns(OrderRow.strategy_id)
                .join(OrderRow, FillRow.order_id == OrderRow.id)
                .order_by(FillRow.timestamp, FillRow.trade_id)
            ).all()
            return [
                Fill(
                    fill_id=f.id,
                    order_id=f.order_id,
                    client_order_id=coid,
                    symbol=symbol,
                    side=side,
                    price=f.price,
                    quantity=f.quantity,
                    fee=f.fee,
                    fee_currency=f.fee_currency,
                    liquidity=f.liquidity,
                    timestamp=f.timestamp,
                    venue=f.venue,
                    trade_id=f.trade_id,
                    strategy_id=strategy,
                )
                for f, coid, symbol, side, strategy in rows
            ]

    # -- frames for research and reports -------------------------------------------------
    def orders_frame(self) -> pl.DataFrame:
        """Every order as a Polars frame, in creation order."""
        with self._session() as session:
            rows = session.scalars(select(OrderRow).order_by(OrderRow.created_at, OrderRow.id))
            records = [
                {
                    "order_id": str(r.id),
                    "client_order_id": r.client_order_id,
                    "strategy_id": r.strategy_id,
                    "signal_id": str(r.signal_id),
                    "symbol": r.symbol,
                    "side": r.side.value,
                    "order_type": r.order_type.value,
                    "time_in_force": r.time_in_force.value,
                    "quantity": r.quantity,
                    "price": r.price,
                    "status": r.status.value,
                    "filled_quantity": r.filled_quantity,
                    "venue": r.venue,
                    "reason": r.reason,
                    "created_at": r.created_at,
                    "updated_at": r.updated_at,
                }
                for r in rows
            ]
        return pl.DataFrame(records, schema=_ORDER_SCHEMA)

    def fills_frame(self) -> pl.DataFrame:
        """Every fill with its order's symbol and side, in time order."""
        with self._session() as session:
            rows = session.execute(
                select(FillRow, OrderRow.client_order_id, OrderRow.symbol, OrderRow.side)
                .join(OrderRow, FillRow.order_id == OrderRow.id)
                .order_by(FillRow.timestamp, FillRow.trade_id)
            ).all()
            records = [
                {
                    "fill_id": str(f.id),
                    "order_id": str(f.order_id),
                    "client_order_id": coid,
                    "symbol": symbol,
                    "side": side.value,
                    "price": f.price,
                    "quantity": f.quantity,
                    "fee": f.fee,
                    "fee_currency": f.fee_currency,
                    "liquidity": f.liquidity.value,
                    "timestamp": f.timestamp,
                    "venue": f.venue,
                    "trade_id": f.trade_id,
                }
                for f, coid, symbol, side in rows
            ]
        return pl.DataFrame(records, schema=_FILL_SCHEMA)


_DEC: pl.DataType = pl.Decimal(38, 18)
_TS: pl.DataType = pl.Datetime("us", "UTC")
_ORDER_SCHEMA: dict[str, Any] = {
    "order_id": pl.String,
    "client_order_id": pl.String,
    "strategy_id": pl.String,
    "signal_id": pl.String,
    "symbol": pl.String,
    "side": pl.String,
    "order_type": pl.String,
    "time_in_force": pl.String,
    "quantity": _DEC,
    "price": _DEC,
    "status": pl.String,
    "filled_quantity": _DEC,
    "venue": pl.String,
    "reason": pl.String,
    "created_at": _TS,
    "updated_at": _TS,
}
_FILL_SCHEMA: dict[str, Any] = {
    "fill_id": pl.String,
    "order_id": pl.String,
    "client_order_id": pl.String,
    "symbol": pl.String,
    "side": pl.String,
    "price": _DEC,
    "quantity": _DEC,
    "fee": _DEC,
    "fee_currency": pl.String,
    "liquidity": pl.String,
    "timestamp": _TS,
    "venue": pl.String,
    "trade_id": pl.String,
}
