"""SQLAlchemy 2 typed models of the order book of record (DESIGN §5)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy import (
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from quantlab.core.enums import Liquidity, OrderStatus, OrderType, Side, TimeInForce
from quantlab.storage.sql.types import ExactDecimal, Money, UtcDateTime

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _enum(cls: type, length: int = 16) -> Enum:
    # VARCHAR + CHECK instead of a PostgreSQL ENUM type: migrations stay reversible.
    return Enum(
        cls,
        native_enum=False,
        length=length,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class OrderRow(Base):
    __tablename__ = "orders"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    client_order_id: Mapped[str] = mapped_column(String(64), unique=True)
    strategy_id: Mapped[str] = mapped_column(String(64), index=True)
    signal_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    symbol: Mapped[str] = mapped_column(String(64), index=True)
    side: Mapped[Side] = mapped_column(_enum(Side, 8))
    order_type: Mapped[OrderType] = mapped_column(_enum(OrderType, 8))
    time_in_force: Mapped[TimeInForce] = mapped_column(_enum(TimeInForce, 8))
    quantity: Mapped[Decimal] = mapped_column(Money)
    price: Mapped[Decimal | None] = mapped_column(Money)
    status: Mapped[OrderStatus] = mapped_column(_enum(OrderStatus, 20), index=True)
    filled_quantity: Mapped[Decimal] = mapped_column(Money)
    venue: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(512), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)

    fills: Mapped[list[FillRow]] = relationship(back_populates="order")


class FillRow(Base):
    __tablename__ = "fills"
    __table_args__ = (
        UniqueConstraint("venue", "trade_id", name="uq_fills_venue_trade_id"),
        Index("ix_fills_timestamp", "timestamp"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id"), index=True)
    price: Mapped[Decimal] = mapped_column(Money)
    quantity: Mapped[Decimal] = mapped_column(Money)
    fee: Mapped[Decimal] = mapped_column(Money)
    fee_currency: Mapped[str] = mapped_column(String(16))
    liquidity: Mapped[Liquidity] = mapped_column(_enum(Liquidity, 8))
    timestamp: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    venue: Mapped[str] = mapped_column(String(32))
    trade_id: Mapped[str] = mapped_column(String(64))

    order: Mapped[OrderRow] = relationship(back_populates="fills")


class MetaRow(Base):
    """Facts about the database itself, e.g. ``trading_mode`` = paper | live."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class LedgerEntryRow(Base):
    """A journal entry of the payments ledger (its postings in `ledger_postings`)."""

    __tablename__ = "ledger_entries"

    id: Mapped[str] = mapped_column(String(160), primary_key=True)
    timestamp: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    memo: Mapped[str] = mapped_column(String(256))
    agent: Mapped[str] = mapped_column(String(64), index=True)
    strategy: Mapped[str | None] = mapped_column(String(64), index=True)

    postings: Mapped[list[LedgerPostingRow]] = relationship(back_populates="entry")


class LedgerPostingRow(Base):
    __tablename__ = "ledger_postings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entry_id: Mapped[str] = mapped_column(ForeignKey("ledger_entries.id"), index=True)
    account: Mapped[str] = mapped_column(String(160), index=True)
    amount: Mapped[Decimal] = mapped_column(ExactDecimal)
    currency: Mapped[str] = mapped_column(String(16))

    entry: Mapped[LedgerEntryRow] = relationship(back_populates="postings")


class CostRow(Base):
    """The attributed cost of one fill (`portfolio.costs.CostRecord`)."""

    __tablename__ = "costs"

    fill_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_order_id: Mapped[str] = mapped_column(String(64), index=True)
    signal_id: Mapped[str] = mapped_column(String(64), index=True)
    strategy_id: Mapped[str] = mapped_column(String(64), index=True)
    symbol: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(16))
    side: Mapped[str] = mapped_column(String(8))
    quantity: Mapped[Decimal] = mapped_column(ExactDecimal)
    price: Mapped[Decimal] = mapped_column(ExactDecimal)
    decision_mid: Mapped[Decimal] = mapped_column(ExactDecimal)
    arrival_mid: Mapped[Decimal] = mapped_column(ExactDecimal)
    delay: Mapped[Decimal] = mapped_column(ExactDecimal)
    spread: Mapped[Decimal] = mapped_column(ExactDecimal)
    slippage: Mapped[Decimal] = mapped_column(ExactDecimal)
    fee: Mapped[Decimal] = mapped_column(ExactDecimal)
    fee_other: Mapped[Decimal] = mapped_column(ExactDecimal)
    fee_other_currency: Mapped[str] = mapped_column(String(16))
    funding: Mapped[Decimal] = mapped_column(ExactDecimal)
    total: Mapped[Decimal] = mapped_column(ExactDecimal)
    impact: Mapped[Decimal | None] = mapped_column(ExactDecimal)


class PositionSnapshotRow(Base):
    """A symbol's position and PnL at a time (settlement snapshots them as it goes)."""

    __tablename__ = "position_snapshots"
    __table_args__ = (UniqueConstraint("timestamp", "symbol", name="uq_position_snapshots"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    timestamp: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    symbol: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(16))
    quantity: Mapped[Decimal] = mapped_column(ExactDecimal)
    avg_price: Mapped[Decimal] = mapped_column(ExactDecimal)
    mark: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    realized: Mapped[Decimal] = mapped_column(ExactDecimal)
    unrealized: Mapped[Decimal] = mapped_column(ExactDecimal)
    fees: Mapped[Decimal] = mapped_column(ExactDecimal)


class PnlSnapshotRow(Base):
    """PnL, cash and equity per currency at a time."""

    __tablename__ = "pnl_snapshots"
    __table_args__ = (UniqueConstraint("timestamp", "currency", name="uq_pnl_snapshots"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    timestamp: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    currency: Mapped[str] = mapped_column(String(16))
    realized: Mapped[Decimal] = mapped_column(ExactDecimal)
    unrealized: Mapped[Decimal] = mapped_column(ExactDecimal)
    fees: Mapped[Decimal] = mapped_column(ExactDecimal)
    total: Mapped[Decimal] = mapped_column(ExactDecimal)
    cash: Mapped[Decimal] = mapped_column(ExactDecimal)
    equity: Mapped[Decimal] = mapped_column(ExactDecimal)


class RunRow(Base):
    """A production run in the run registry (`quantlab.runs`): one executed notebook."""

    __tablename__ = "runs"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    notebook: Mapped[str] = mapped_column(String(1024))
    parameters: Mapped[str] = mapped_column(Text)  # JSON
    status: Mapped[str] = mapped_column(String(16), index=True)
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    error: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[str | None] = mapped_column(Text)  # JSON: the headline figures
    output_dir: Mapped[str] = mapped_column(String(1024))
    output_notebook: Mapped[str | None] = mapped_column(String(1024))
    report: Mapped[str | None] = mapped_column(String(1024))
    # One run per (notebook, parameters, scheduled time): schedules set it, a repeat is refused.
    idempotency_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    scheduled_for: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    sweep_id: Mapped[str | None] = mapped_column(String(64), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=1)


class OutboxRow(Base):
    """An event committed with the change it reports, published after the commit (the
    transactional outbox): a process that dies between the commit and the publish leaves
    the row unpublished, and the relay publishes it when the process starts again."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    msg_id: Mapped[str] = mapped_column(String(128), unique=True)
    topic: Mapped[str] = mapped_column(String(128))
    payload: Mapped[bytes] = mapped_column(LargeBinary)  # the message as wire JSON
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    published_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, index=True)
