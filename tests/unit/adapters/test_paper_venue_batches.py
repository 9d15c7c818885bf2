"""The paper venue on the batches a live feed sends: several symbols interleaved in one batch,
a row without a symbol, a missing size column. However the rows are cut into batches, each
symbol's orders see that symbol's events, in order, and fill the same."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import polars as pl
import pytest

from quantlab.adapters.sim.paper import PaperVenue
from quantlab.core import ids
from quantlab.core.clock import ns_to_datetime
from quantlab.core.enums import Liquidity, OrderType, Side, TimeInForce
from quantlab.core.instruments import InstrumentBook
from quantlab.core.messages import Fill, Order
from quantlab.core.schemas import QUOTE_SCHEMA
from quantlab.execution.ports import VenueReport

T0 = 1_600_000_000_000_000_000
MS = 1_000_000
QUOTE_ROWS: list[tuple[str | None, int, float, float, float, float]] = [
    # symbol, time, bid, ask, bid size, ask size
    ("ETH/BTC", 1, 0.0500, 0.0502, 1.0, 0.4),
    ("LTC/BTC", 1, 0.0100, 0.0102, 3.0, 5.0),
    (None, 2, 0.0001, 0.0001, 9.0, 9.0),  # no symbol: ignored
    ("ETH/BTC", 3, 0.0499, 0.0501, 1.0, 0.5),
    ("LTC/BTC", 4, 0.0099, 0.0101, 2.0, 0.0),  # 0: unknown depth
    ("ETH/BTC", 5, 0.0498, 0.0500, 1.0, 2.0),
    ("LTC/BTC", 6, 0.0100, 0.0103, 1.0, 1.0),
]


def quotes(rows: list[tuple[str | None, int, float, float, float, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "symbol": [r[0] for r in rows],
            "timestamp": [T0 + r[1] * MS for r in rows],
            "bid": [r[2] for r in rows],
            "ask": [r[3] for r in rows],
            "bid_size": [r[4] for r in rows],
            "ask_size": [r[5] for r in rows],
        },
        schema_overrides={"timestamp": pl.Int64, "symbol": pl.String},
    ).with_columns(pl.col("timestamp").cast(QUOTE_SCHEMA["timestamp"]))


def order(symbol: str, quantity: str, price: str, n: int) -> Order:
    signal = ids.signal_id("batches", symbol, n)
    coid = ids.client_order_id(signal)
    return Order(
        order_id=ids.order_id(coid),
        client_order_id=coid,
        symbol=symbol,
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        quantity=Decimal(quantity),
        price=Decimal(price),
        time_in_force=TimeInForce.GTC,
        strategy_id="batches",
        signal_id=signal,
        timestamp=ns_to_datetime(T0),
    )


async def run(cuts: list[int], drop_ask_size: bool = False) -> list[tuple[object, ...]]:
    venue = PaperVenue(InstrumentBook(Decimal("0.000001"), Decimal("0.001")))
    reports: list[VenueReport] = []

    async def listen(report: VenueReport) -> None:
        reports.append(report)

    venue.set_listener(listen)
    await venue.submit(order("ETH/BTC", "1.5", "0.0501", 0))
    await venue.submit(order("LTC/BTC", "4", "0.0102", 1))
    for lo, hi in zip([0, *cuts], [*cuts, len(QUOTE_ROWS)], strict=True):
        frame = quotes(QUOTE_ROWS[lo:hi])
        await venue.on_quotes(frame.drop("ask_size") if drop_ask_size else frame)
    return [
        (f.symbol, f.timestamp, f.price, f.quantity, f.liquidity)
        for f in reports
        if isinstance(f, Fill)
    ]


def at(step: int) -> dt.datetime:
    return ns_to_datetime(T0 + step * MS)


@pytest.mark.parametrize("cuts", [[], [1], [2, 3], [1, 2, 3, 4, 5, 6], [3, 5]])
async def test_interleaved_symbols_fill_the_same_however_the_batches_are_cut(
    cuts: list[int],
) -> None:
    assert await run(cuts) == [
        # LTC (limit 0.0102): takes 4 of the 5 offered at its arrival quote.
        ("LTC/BTC", at(1), Decimal("0.0102"), Decimal("4"), Liquidity.TAKER),
        # ETH (limit 0.0501): its arrival ask 0.0502 is above the limit, so it rests; then
        # maker fills at the limit, up to each ask's size (the null-symbol row is ignored).
        ("ETH/BTC", at(3), Decimal("0.0501"), Decimal("0.5"), Liquidity.MAKER),
        ("ETH/BTC", at(5), Decimal("0.0501"), Decimal("1.0"), Liquidity.MAKER),
    ]


@pytest.mark.parametrize("cuts", [[], [2, 3]])
async def test_a_missing_size_column_is_unlimited_depth(cuts: list[int]) -> None:
    assert await run(cuts, drop_ask_size=True) == [
        ("LTC/BTC", at(1), Decimal("0.0102"), Decimal("4"), Liquidity.TAKER),
        ("ETH/BTC", at(3), Decimal("0.0501"), Decimal("1.5"), Liquidity.MAKER),
    ]
