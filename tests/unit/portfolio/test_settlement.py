"""The settlement engine: fills into positions and cash, marks from quotes, trades and bars,
PnL converted into a base currency."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import polars as pl

from quantlab.bus import InProcessBus, topics
from quantlab.core import ids
from quantlab.core.enums import EventType, Liquidity, Side
from quantlab.core.instruments import InstrumentBook
from quantlab.core.messages import Fill, MarketBatch
from quantlab.portfolio import SettlementEngine

T0 = dt.datetime(2021, 1, 8, tzinfo=dt.UTC)


def fill(symbol: str, side: Side, qty: str, price: str, fee: str, n: int) -> Fill:
    coid = f"ql-{n}"
    return Fill(
        fill_id=ids.fill_id("paper", str(n)),
        order_id=ids.order_id(coid),
        client_order_id=coid,
        symbol=symbol,
        side=side,
        price=Decimal(price),
        quantity=Decimal(qty),
        fee=Decimal(fee),
        fee_currency=symbol.split("/")[1],
        liquidity=Liquidity.TAKER,
        timestamp=T0,
        venue="paper",
        trade_id=str(n),
    )


def batch(kind: EventType, rows: dict[str, list[object]]) -> MarketBatch:
    frame = pl.DataFrame({"timestamp": [T0] * len(rows["symbol"]), **rows})
    return MarketBatch(kind=kind, frame=frame, seq=0, ts_min=0, ts_max=0)


async def test_marks_from_every_kind_and_pnl_in_the_base_currency() -> None:
    bus = InProcessBus()
    engine = SettlementEngine(InstrumentBook(Decimal("1e-8"), Decimal("1e-8")), base_currency="USD")
    await engine.start(bus)
    await bus.publish(topics.orders("filled"), fill("ETH/BTC", Side.BUY, "2", "0.03", "0.0001", 1))
    await bus.publish(topics.orders("filled"), fill("BTC/USD", Side.SELL, "1", "40000", "4", 2))
    await bus.publish(
        topics.market_data(EventType.QUOTE),
        batch(EventType.QUOTE, {"symbol": ["BTC/USD"], "bid": [40990.0], "ask": [41010.0]}),
    )
    await bus.publish(
        topics.market_data(EventType.TRADE),
        batch(EventType.TRADE, {"symbol": ["ETH/BTC"], "price": [0.031], "size": [1.0]}),
    )
    await bus.drain(timeout=5)
    assert engine.portfolio.marks == {"BTC/USD": Decimal("41000.0"), "ETH/BTC": Decimal("0.031")}
    assert engine.portfolio.cash == {"BTC": Decimal("-0.0601"), "USD": Decimal("39996")}
    base = engine.in_base()
    assert base is not None
    # ETH/BTC: +2 x (0.031 - 0.03) - 0.0001 = 0.0019 BTC; BTC/USD: -1 x (41000 - 40000) - 4
    expected = Decimal("0.0019") * Decimal("41000.0") + Decimal("-1004")
    assert base["pnl"] == expected
    assert base["unconverted"] == []
    # equity: cash + positions at their marks, each currency converted
    btc_equity = Decimal("-0.0601") + 2 * Decimal("0.031")
    usd_equity = Decimal("39996") - Decimal("41000.0")
    assert base["equity"] == btc_equity * Decimal("41000.0") + usd_equity
    await bus.close()


async def test_without_a_rate_the_currency_is_named_not_guessed() -> None:
    bus = InProcessBus()
    engine = SettlementEngine(InstrumentBook(Decimal("1e-8"), Decimal("1e-8")), base_currency="USD")
    await engine.start(bus)
    await bus.publish(topics.orders("filled"), fill("ETH/BTC", Side.BUY, "1", "0.03", "0", 3))
    await bus.drain(timeout=5)
    base = engine.in_base()
    assert base is not None
    assert base["unconverted"] == ["BTC"]
    await bus.close()


class FlakyStore:
    """A `PortfolioStore` whose first entry write fails (a locked database)."""

    def __init__(self) -> None:
        self.entries: list[str] = []
        self.failed = False

    def record_entry(self, entry: object) -> bool:
        if not self.failed:
            self.failed = True
            raise RuntimeError("database is locked")
        self.entries.append(entry.id)  # type: ignore[attr-defined]
        return True

    def record_cost(self, record: object) -> bool:
        return True

    def record_snapshot(self, positions: object, pnl: object) -> None:
        return None


async def test_a_fill_redelivered_after_a_failure_is_booked_once() -> None:
    bus = InProcessBus()
    store = FlakyStore()
    engine = SettlementEngine(InstrumentBook(Decimal("1e-8"), Decimal("1e-8")), store=store)
    await engine.start(bus)
    f = fill("ETH/BTC", Side.BUY, "1", "0.05", "0.0001", 7)
    await bus.publish(topics.orders("filled"), f, msg_id=str(f.fill_id))
    await bus.drain(timeout=10)
    assert store.failed  # the first delivery failed, the bus delivered it again
    assert store.entries == [f"fill:{f.fill_id}"]
    assert engine.portfolio.positions["ETH/BTC"].quantity == 1  # booked once
    assert engine.portfolio.cash == {"BTC": Decimal("-0.0501")}
    assert engine.ledger.position("ETH") == 1
    await bus.close()
