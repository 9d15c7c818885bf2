"""The paper venue: fills against the bars that follow an order, never earlier ones.

Real ETH/BTC 5-minute bars (2018-01-10), first rows:

    i  time   open      high       low
    0  04:55  0.0984    0.0994766  0.09828605
    1  05:00  0.09947   0.0997238  0.099
    2  05:05  0.09969   0.10073    0.09900001
    3  05:10  0.09999   0.1003     0.0988
    4  05:15  0.099     0.0996     0.0987

(opens rounded here; the file holds e.g. 0.09946999000000001, which a taker fill gets exactly).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from decimal import Decimal

import polars as pl
import pytest

from quantlab.adapters.sim.data import bundled_dir
from quantlab.adapters.sim.paper import PaperVenue
from quantlab.bus import InProcessBus, topics
from quantlab.core import ids
from quantlab.core.enums import EventType, Liquidity, OrderStatus, OrderType, Side, TimeInForce
from quantlab.core.instruments import InstrumentBook, to_decimal
from quantlab.core.messages import Fill, MarketBatch, Order, OrderEvent
from quantlab.execution.ports import VenueReport

ALL = (
    pl.read_parquet(bundled_dir() / "binance_btc_pairs_5m_2018-01.parquet")
    .filter(pl.col("timestamp") < dt.datetime(2018, 1, 12, tzinfo=dt.UTC))
    .sort("timestamp", "symbol")
)
ETH = ALL.filter(pl.col("symbol") == "ETH/BTC")
TS = ETH["timestamp"].to_list()
OPEN = {t: to_decimal(o) for t, o in zip(TS, ETH["open"], strict=True)}
QTY = Decimal("2.5")
TAKER, MAKER = Decimal("7.5") / 10_000, Decimal("2") / 10_000


def at(hhmm: str, day: int = 10) -> dt.datetime:
    h, m = map(int, hhmm.split(":"))
    return dt.datetime(2018, 1, day, h, m, tzinfo=dt.UTC)


def make_order(
    side: Side,
    price: str | None,
    when: dt.datetime,
    tif: TimeInForce = TimeInForce.GTC,
    n: int = 0,
    symbol: str = "ETH/BTC",
) -> Order:
    signal = ids.signal_id("paper-test", symbol, n)
    coid = ids.client_order_id(signal)
    return Order(
        order_id=ids.order_id(coid),
        client_order_id=coid,
        symbol=symbol,
        side=side,
        order_type=OrderType.MARKET if price is None else OrderType.LIMIT,
        quantity=QTY,
        price=None if price is None else Decimal(price),
        time_in_force=tif,
        strategy_id="paper-test",
        signal_id=signal,
        timestamp=when,
    )


class Harness:
    def __init__(self, name: str = "paper") -> None:
        self.venue = PaperVenue(InstrumentBook(Decimal("0.000001"), Decimal("0.001")), name=name)
        self.reports: list[VenueReport] = []
        self.venue.set_listener(self.listen)

    async def listen(self, report: VenueReport) -> None:
        self.reports.append(report)

    @property
    def fills(self) -> list[Fill]:
        return [r for r in self.reports if isinstance(r, Fill)]

    @property
    def events(self) -> list[tuple[OrderStatus, dt.datetime, str]]:
        return [
            (r.status, r.timestamp, r.reason) for r in self.reports if isinstance(r, OrderEvent)
        ]

    async def bars(self, upto: dt.datetime, start: dt.datetime | None = None) -> None:
        """Feed ETH/BTC (and the other pairs) bars in [start, upto] as one batch."""
        frame = ALL.filter(pl.col("timestamp") <= upto)
        if start is not None:
            frame = frame.filter(pl.col("timestamp") >= start)
        await self.venue.on_bars(frame)


async def test_marketable_buy_fills_at_the_next_bars_open_as_taker() -> None:
    h = Harness()
    await h.bars(at("05:30"))  # bars before and after the order are already known
    order = make_order(Side.BUY, "0.2", at("04:55"))
    await h.venue.submit(order)
    (fill,) = h.fills
    assert isinstance(h.reports[0], OrderEvent)
    assert h.reports[0].status is OrderStatus.ACCEPTED
    assert h.reports[1] is fill
    assert fill.timestamp == at("05:00")  # the next bar, not the one at the order time
    assert fill.price == OPEN[at("05:00")] == Decimal("0.09946999000000001")  # its open
    assert fill.liquidity is Liquidity.TAKER
    assert fill.fee == fill.price * QTY * TAKER
    assert fill.fee_currency == "BTC"
    assert (fill.quantity, fill.side, fill.symbol) == (QTY, Side.BUY, "ETH/BTC")
    assert (fill.order_id, fill.client_order_id) == (order.order_id, order.client_order_id)
    assert fill.fill_id == ids.fill_id("paper", fill.trade_id)
    assert fill.strategy_id == "paper-test"
    assert h.venue.stats() == {"fills": 1, "resting": 0}


async def test_marketable_sell_and_market_orders_fill_at_the_next_open() -> None:
    h = Harness()
    await h.bars(at("05:30"))
    await h.venue.submit(make_order(Side.SELL, "0.01", at("04:55"), n=1))
    await h.venue.submit(make_order(Side.BUY, None, at("05:05"), n=2))
    await h.venue.submit(make_order(Side.SELL, None, at("05:10"), n=3))
    got = [(f.side, f.timestamp, f.price, f.liquidity) for f in h.fills]
    assert got == [
        (Side.SELL, at("05:00"), OPEN[at("05:00")], Liquidity.TAKER),
        (Side.BUY, at("05:10"), OPEN[at("05:10")], Liquidity.TAKER),
        (Side.SELL, at("05:15"), OPEN[at("05:15")], Liquidity.TAKER),
    ]


async def test_limit_touched_intrabar_fills_at_the_limit_as_maker() -> None:
    h = Harness()
    await h.bars(at("05:30"))
    # Bar 05:10 opens at 0.09999 (above) and trades down to 0.0988 (through the limit).
    await h.venue.submit(make_order(Side.BUY, "0.099", at("05:05"), n=1))
    # Bar 05:00 opens at 0.09947 (below) and trades up to 0.0997238 (through the limit).
    await h.venue.submit(make_order(Side.SELL, "0.0997", at("04:55"), n=2))
    buy, sell = h.fills
    assert (buy.timestamp, buy.price, buy.liquidity) == (
        at("05:10"),
        Decimal("0.099"),
        Liquidity.MAKER,
    )
    assert buy.fee == Decimal("0.099") * QTY * MAKER
    assert (sell.timestamp, sell.price, sell.liquidity) == (
        at("05:00"),
        Decimal("0.0997"),
        Liquidity.MAKER,
    )


async def test_never_fills_on_the_bar_at_or_before_the_order_time() -> None:
    # Find a real bar k whose low the next three bars stay above; a buy at that low, decided at
    # bar k's time, would fill on bar k (or before) only with look-ahead.
    lows = ETH["low"].to_list()
    k = next(i for i in range(1, 200) if lows[i] < min(lows[i + 1 : i + 4]))
    h = Harness()
    await h.bars(TS[k + 3])
    order = make_order(Side.BUY, repr(lows[k]), TS[k])
    await h.venue.submit(order)
    assert h.fills == []
    assert h.venue.stats()["resting"] == 1
    # The same order decided one bar earlier fills on bar k.
    earlier = make_order(Side.BUY, repr(lows[k]), TS[k - 1], n=1)
    await h.venue.submit(earlier)
    (fill,) = h.fills
    assert fill.timestamp == TS[k]


async def test_ioc_cancels_after_one_bar_without_a_fill() -> None:
    h = Harness()
    await h.bars(at("05:30"))
    # 05:00 (low 0.099) does not reach 0.0989; 05:10 would, but IOC gets one bar only.
    await h.venue.submit(make_order(Side.BUY, "0.0989", at("04:55"), TimeInForce.IOC))
    assert h.fills == []
    assert h.events == [
        (OrderStatus.ACCEPTED, at("04:55"), ""),
        (OrderStatus.CANCELED, at("05:00"), "ioc remainder"),  # was "ioc not filled"
    ]
    assert h.venue.stats()["resting"] == 0


async def test_ioc_that_can_fill_on_its_bar_fills() -> None:
    h = Harness()
    await h.bars(at("05:30"))
    await h.venue.submit(make_order(Side.BUY, "0.0989", at("05:05"), TimeInForce.IOC))
    (fill,) = h.fills
    assert (fill.timestamp, fill.price) == (at("05:10"), Decimal("0.0989"))


async def test_gtc_rests_until_it_fills() -> None:
    h = Harness()
    order = make_order(Side.BUY, "0.0989", at("04:55"))
    await h.venue.submit(order)  # no bars yet
    for bar_time in ("04:55", "05:00", "05:05"):
        await h.bars(at(bar_time), start=at(bar_time))
        assert h.fills == []
        assert h.venue.stats()["resting"] == 1
    await h.bars(at("05:10"), start=at("05:10"))
    (fill,) = h.fills
    assert (fill.timestamp, fill.price, fill.liquidity) == (
        at("05:10"),
        Decimal("0.0989"),
        Liquidity.MAKER,
    )
    assert h.events == [(OrderStatus.ACCEPTED, at("04:55"), "")]
    await h.bars(at("06:00"), start=at("05:15"))
    assert len(h.fills) == 1  # filled once, done


async def test_day_order_expires_at_utc_midnight() -> None:
    h = Harness()
    # Decided on the last bar of 2018-01-10; the 00:00 bar (low 0.083807) would fill 0.0839.
    await h.venue.submit(make_order(Side.BUY, "0.0839", at("23:55"), TimeInForce.DAY))
    await h.bars(at("00:30", day=11), start=at("23:00"))
    assert h.fills == []
    assert h.events[-1] == (OrderStatus.EXPIRED, at("00:00", day=11), "end of day")
    # The same order as GTC fills on that bar.
    await h.venue.submit(make_order(Side.BUY, "0.0839", at("23:55"), n=1))
    (fill,) = h.fills
    assert (fill.timestamp, fill.price) == (at("00:00", day=11), Decimal("0.0839"))


async def test_day_order_fills_within_its_day() -> None:
    h = Harness()
    await h.bars(at("00:30", day=11), start=at("23:00"))
    await h.venue.submit(make_order(Side.BUY, "0.0839", at("23:50"), TimeInForce.DAY))
    (fill,) = h.fills  # 23:55 opens at 0.08389, at or below the limit
    assert (fill.timestamp, fill.price, fill.liquidity) == (
        at("23:55"),
        OPEN[at("23:55")],
        Liquidity.TAKER,
    )


async def test_other_symbols_bars_do_not_fill() -> None:
    h = Harness()
    await h.venue.submit(make_order(Side.BUY, "1", at("04:55"), symbol="XRP/BTC"))
    await h.bars(at("06:00"))
    assert h.fills == []
    assert h.venue.stats()["resting"] == 1


async def test_cancel_a_resting_order() -> None:
    h = Harness()
    order = make_order(Side.BUY, "0.01", at("04:55"))
    await h.venue.submit(order)
    await h.venue.cancel(order.client_order_id)
    await h.venue.cancel(order.client_order_id)  # already gone: nothing more
    await h.venue.cancel("ql-unknown")
    assert h.events == [
        (OrderStatus.ACCEPTED, at("04:55"), ""),
        (OrderStatus.CANCELED, at("04:55"), "canceled"),
    ]
    await h.bars(at("06:00"))
    assert h.fills == []


async def test_a_resubmitted_resting_order_reports_its_state_again() -> None:
    h = Harness()
    order = make_order(Side.BUY, "0.01", at("04:55"))
    await h.venue.submit(order)
    await h.venue.submit(order)  # not a second order: the existing one's state, again
    assert h.events == [(OrderStatus.ACCEPTED, at("04:55"), "")] * 2
    assert h.venue.stats()["resting"] == 1


async def test_a_resubmitted_filled_order_does_not_fill_twice() -> None:
    h = Harness()
    await h.bars(at("05:30"))
    order = make_order(Side.BUY, "0.2", at("04:55"))
    await h.venue.submit(order)
    await h.venue.submit(order)  # e.g. a retry after a timeout
    assert len(h.fills) == 1


async def test_trade_ids_are_unique_across_venue_instances() -> None:
    first, second = Harness(), Harness()  # two runs writing to one configured database
    for h, n in ((first, 1), (second, 2)):
        await h.bars(at("05:30"))
        await h.venue.submit(make_order(Side.BUY, "0.2", at("04:55"), n=n))
    (a,), (b,) = first.fills, second.fills
    assert a.client_order_id != b.client_order_id
    assert (a.venue, a.trade_id) != (b.venue, b.trade_id)


# -- on the bus -----------------------------------------------------------------------------


@pytest.fixture
async def bus() -> AsyncIterator[InProcessBus]:
    bus = InProcessBus()
    yield bus
    await bus.close()


async def test_bars_from_the_bus_fill_resting_orders(bus: InProcessBus) -> None:
    h = Harness()
    await h.venue.start(bus)
    await h.venue.submit(make_order(Side.BUY, "0.0989", at("04:55")))
    for seq, offset in enumerate(range(0, 60, 20)):
        frame = ALL.slice(offset, 20)
        ts = frame["timestamp"].dt.epoch("ns").to_list()
        batch = MarketBatch(kind=EventType.BAR, frame=frame, seq=seq, ts_min=ts[0], ts_max=ts[-1])
        await bus.publish(topics.market_data(EventType.BAR), batch)
    await asyncio.wait_for(bus.drain(), 5)
    assert not bus.handler_errors
    (fill,) = h.fills
    assert fill.timestamp == at("05:10")
