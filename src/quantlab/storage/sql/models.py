"""SQLAlchemy 2 typed models of the order book of record (DESIGN §5)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy import Enum, ForeignKey, Index, MetaData, String, UniqueConstraint, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from quantlab.core.enums import Liquidity, OrderStatus, OrderType, Side, TimeInForce
from quantlab.storage.sql.types import Money, UtcDateTime

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
