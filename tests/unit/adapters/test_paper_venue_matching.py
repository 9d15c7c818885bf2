"""The paper venue's matching simulator on real recorded data: quotes, trades, bars.

Data (bundled with the package, see ``_data/market/PROVENANCE.md``):

* Binance BTC/USDT top-of-book quotes and trade ticks, 2021-01-08 00:00:00-00:00:46;
* Binance 5-minute bars of ten BTC pairs, 2018-01 (ETH/BTC used here);
* FXCM GBP/USD 1-minute bid/ask quotes without sizes, 2012-02.

BTC/USDT quotes, first rows::

    time          bid       bid_size  ask       ask_size
    00:00:01.076  39432.99  0.0031    39433.62  0.066851
    00:00:01.157  39432.33  2.0       39433.6   0.018027
    00:00:01.257  39430.29  0.33      39433.6   0.018027
    00:00:01.363  39430.71  0.031035  39444.95  0.093829

BTC/USDT trades around 00:00:00.3-00:00:00.9: 00.310 39439.44 x 0.004376, 00.368 39439.22,
00.385 39439.06, 00.471 39432.48 / 39437.62 / 39438.83, 00.610 39432.37 x 0.000563,
00.673 39437.6 / 39432.37 x 0.006029 / 39432.36 x 0.000777 / 39430.63 x 0.021707 /
39430.31 x 0.268133 / 39437.61, 00.702 39437.6, 00.815 39430.32 x 0.006592 / 39430.3 x 0.562081.

ETH/BTC 5-minute bars, 2018-01-10::

    time   open      high       low       volume
    05:00  0.09947   0.0997238  0.099     2527.921003
    05:05  0.09969   0.10073    0.099     3653.02613
    05:10  0.09999   0.1003     0.0988    1627.593505
    05:15  0.099     0.0996     0.0987    1354.520069
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from decimal import Decimal

import msgspec
import polars as pl
import pytest

from quantlab.adapters.sim import PaperVenue, PaperVenueConfig
from quantlab.adapters.sim.data import bundled_dir
from quantlab.bus import InProcessBus, topics
from quantlab.core import ids
from quantlab.core.clock import SimulatedClock, datetime_to_ns
from quantlab.core.enums import EventType, Liquidity, OrderStatus, OrderType, Side, TimeInForce
from quantlab.core.errors import ConfigError
from quantlab.core.instruments import InstrumentBook, to_decimal
from quantlab.core.messages import Fill, MarketBatch, Order, OrderEvent
from quantlab.execution.ports import Venue, VenueRejectedError, VenueReport

NS = pl.Datetime("ns", "UTC")
QUOTES = pl.read_parquet(bundled_dir() / "binance_btcusdt_quotes_2021-01-08.parquet").with_columns(
    pl.col("timestamp").cast(NS)
)
TRADES = pl.read_parquet(bundled_dir() / "binance_btcusdt_trades_2021-01-08.parquet").select(
    "symbol",
    pl.col("timestamp").cast(NS),
    "price",
    pl.col("quantity").alias("size"),
    pl.when(pl.col("buyer_maker")).then(2).otherwise(1).cast(pl.UInt8).alias("aggressor"),
    pl.col("trade_id").cast(pl.String),
)
BARS = (
    pl.read_parquet(bundled_dir() / "binance_btc_pairs_5m_2018-01.parquet")
    .filter(pl.col("timestamp") < dt.datetime(2018, 1, 14, tzinfo=dt.UTC))
    .sort("timestamp", "symbol")
)
ETH = BARS.filter(pl.col("symbol") == "ETH/BTC")
BAR = {r["timestamp"]: r for r in ETH.iter_rows(named=True)}

TAKER, MAKER = Decimal("7.5") / 10_000, Decimal("2") / 10_000


def ms(text: str) -> dt.datetime:
    """``"01.076"`` -> 2021-01-08 00:00:01.076 UTC (the quote and trade files' second)."""
    return dt.datetime(2021, 1, 8, tzinfo=dt.UTC) + dt.timedelta(seconds=float(text))


def at(hhmm: str, day: int = 10) -> dt.datetime:
    h, m = map(int, hhmm.split(":"))
    return dt.datetime(2018, 1, day, h, m, tzinfo=dt.UTC)


def btc_usdt() -> InstrumentBook:
    return InstrumentBook(Decimal("0.01"), Decimal("0.000001"))


def eth_btc() -> InstrumentBook:
    return InstrumentBook(Decimal("0.000001"), Decimal("0.001"))


def make_order(
    side: Side,
    price: str | None,
    when: dt.datetime,
    quantity: str,
    tif: TimeInForce = TimeInForce.GTC,
    *,
    symbol: str = "BTC/USDT",
    n: int = 0,
) -> Order:
    signal = ids.signal_id("paper-sim-test", symbol, datetime_to_ns(when), n)
    coid = ids.client_order_id(signal)
    return Order(
        order_id=ids.order_id(coid),
        client_order_id=coid,
        symbol=symbol,
        side=side,
        order_type=OrderType.MARKET if price is None else OrderType.LIMIT,
        quantity=Decimal(quantity),
        price=None if price is None else Decimal(price),
        time_in_force=tif,
        strategy_id="paper-sim-test",
        signal_id=signal,
        timestamp=when,
    )


class Harness:
    def __init__(self, venue: PaperVenue) -> None:
        self.venue = venue
        self.reports: list[VenueReport] = []
        venue.set_listener(self.listen)

    async def listen(self, report: VenueReport) -> None:
        self.reports.append(report)

    @property
    def fills(self) -> list[Fill]:
        return [r for r in self.reports if isinstance(r, Fill)]

    def got(self) -> list[tuple[dt.datetime, Decimal, Decimal, Liquidity]]:
        return [(f.timestamp, f.price, f.quantity, f.liquidity) for f in self.fills]

    @property
    def events(self) -> list[tuple[OrderStatus, dt.datetime, str]]:
        return [
            (r.status, r.timestamp, r.reason) for r in self.reports if isinstance(r, OrderEvent)
        ]


def venue(book: InstrumentBook | None = None, **kwargs: object) -> PaperVenue:
    return PaperVenue(book or btc_usdt(), **kwargs)  # type: ignore[arg-type]


def d(text: str) -> Decimal:
    return Decimal(text)


# -- quotes -----------------------------------------------------------------------------------


async def test_a_marketable_buy_takes_the_ask_up_to_its_size_then_ioc_cancels_the_rest() -> None:
    h = Harness(venue())
    await h.venue.on_quotes(QUOTES)
    order = make_order(Side.BUY, "39434", ms("01.000"), "0.1", TimeInForce.IOC)
    await h.venue.submit(order)
    # The ask 39433.62 shows 0.066851: that much fills, at the ask, as a taker.
    assert h.got() == [(ms("01.076"), d("39433.62"), d("0.066851"), Liquidity.TAKER)]
    assert h.fills[0].fee == d("39433.62") * d("0.066851") * TAKER
    assert h.events == [
        (OrderStatus.ACCEPTED, ms("01.000"), ""),
        (OrderStatus.CANCELED, ms("01.076"), "ioc remainder"),
    ]
    state = await h.venue.query_order(order.client_order_id)
    assert state is not None
    assert (state.status, state.filled_quantity, state.reason) == (
        OrderStatus.CANCELED,
        d("0.066851"),
        "ioc remainder",
    )


async def test_a_marketable_sell_takes_each_bid_while_it_stays_at_or_above_the_limit() -> None:
    h = Harness(venue())
    order = make_order(Side.SELL, "39430", ms("01.000"), "2.5")
    await h.venue.submit(order)  # before the quotes: it waits for them
    await h.venue.on_quotes(QUOTES.head(10))
    assert h.got() == [
        (ms("01.076"), d("39432.99"), d("0.0031"), Liquidity.TAKER),
        (ms("01.157"), d("39432.33"), d("2.0"), Liquidity.TAKER),
        (ms("01.257"), d("39430.29"), d("0.33"), Liquidity.TAKER),
        (ms("01.363"), d("39430.71"), d("0.031035"), Liquidity.TAKER),
        (ms("01.462"), d("39433.59"), d("0.006191"), Liquidity.TAKER),
        (ms("01.559"), d("39434.87"), d("0.048632"), Liquidity.TAKER),
        (ms("01.657"), d("39434.87"), d("0.081042"), Liquidity.TAKER),  # the remainder
    ]
    assert sum(f.quantity for f in h.fills) == order.quantity
    assert [f.trade_id for f in h.fills] == [f"{order.client_order_id}-{n}" for n in range(1, 8)]
    assert h.venue.stats() == {"fills": 7, "resting": 0}


async def test_a_resting_sell_fills_at_its_limit_as_maker_when_the_bid_reaches_it() -> None:
    h = Harness(venue())
    await h.venue.submit(make_order(Side.SELL, "39470", ms("01.000"), "0.5"))
    await h.venue.on_quotes(QUOTES)
    # Bids first reach 39470 at 04.872 (39470.47 x 0.475735), then 05.120 (39475.86 x 0.39151).
    assert h.got() == [
        (ms("04.872"), d("39470"), d("0.475735"), Liquidity.MAKER),
        (ms("05.120"), d("39470"), d("0.024265"), Liquidity.MAKER),
    ]
    assert h.fills[0].fee == d("39470") * d("0.475735") * MAKER


async def test_quotes_without_sizes_have_unlimited_depth() -> None:
    fx = pl.read_parquet(bundled_dir() / "fxcm_gbpusd_1m_quotes_2012-02.parquet").head(5)
    assert "ask_size" not in fx.columns
    h = Harness(PaperVenue(InstrumentBook(Decimal("0.00001"), Decimal("1"))))
    when = dt.datetime(2012, 2, 1, tzinfo=dt.UTC)
    await h.venue.submit(make_order(Side.BUY, None, when, "5000000", symbol="GBP/USD"))
    await h.venue.on_quotes(fx)
    # The 00:00 quote is at the order's time; the 00:01 one (ask 1.57552) takes it all.
    assert h.got() == [
        (when + dt.timedelta(minutes=1), d("1.57552"), d("5000000"), Liquidity.TAKER)
    ]
    assert h.fills[0].fee_currency == "USD"


# -- trades -----------------------------------------------------------------------------------


async def test_a_resting_buy_fills_as_maker_on_trades_at_or_below_its_limit() -> None:
    h = Harness(venue())
    order = make_order(Side.BUY, "39432.40", ms("00.200"), "0.01")
    await h.venue.submit(order)
    await h.venue.on_trades(TRADES)
    assert h.got() == [
        (ms("00.610"), d("39432.40"), d("0.000563"), Liquidity.MAKER),
        (ms("00.673"), d("39432.40"), d("0.006029"), Liquidity.MAKER),
        (ms("00.673"), d("39432.40"), d("0.000777"), Liquidity.MAKER),
        (ms("00.673"), d("39432.40"), d("0.002631"), Liquidity.MAKER),  # of 0.021707 at 39430.63
    ]
    assert [f.fee for f in h.fills] == [f.price * f.quantity * MAKER for f in h.fills]
    assert sum(f.quantity for f in h.fills) == order.quantity


async def test_a_buy_above_the_trades_takes_them_until_a_trade_prints_above_its_limit() -> None:
    h = Harness(venue())
    await h.venue.on_trades(TRADES.head(40))
    await h.venue.submit(make_order(Side.BUY, "39439.30", ms("00.300"), "0.05"))
    # 00.310 prints 39439.44, above 39439.30: the order never took, it rests at 39439.30 and
    # is filled by the prints at or below it, as a maker at its limit.
    got = h.got()
    assert got[0] == (ms("00.368"), d("39439.30"), d("0.000311"), Liquidity.MAKER)
    assert {g[3] for g in got} == {Liquidity.MAKER}
    assert {g[1] for g in got} == {d("39439.30")}
    assert sum(g[2] for g in got) == d("0.05")

    h = Harness(venue())
    await h.venue.on_trades(TRADES.head(40))
    await h.venue.submit(make_order(Side.BUY, "39440", ms("00.300"), "0.01"))
    assert h.got() == [
        (ms("00.310"), d("39439.44"), d("0.004376"), Liquidity.TAKER),
        (ms("00.368"), d("39439.22"), d("0.000311"), Liquidity.TAKER),
        (ms("00.385"), d("39439.06"), d("0.004376"), Liquidity.TAKER),
        (ms("00.471"), d("39432.48"), d("0.000937"), Liquidity.TAKER),
    ]


# -- bars -------------------------------------------------------------------------------------


async def test_bar_participation_splits_an_order_across_bars() -> None:
    # 0.1% of each bar's volume: 05:00 2.527 (of 2527.92), 05:05 3.653, 05:10 1.627, ...
    h = Harness(venue(eth_btc(), participation=0.001))
    await h.venue.on_bars(BARS.filter(pl.col("timestamp") <= at("06:00")))
    order = make_order(Side.BUY, "0.0998", at("04:55"), "8", symbol="ETH/BTC")
    await h.venue.submit(order)
    assert h.got() == [
        # opens at or below 0.0998: the order takes at the open
        (at("05:00"), to_decimal(BAR[at("05:00")]["open"]), d("2.527"), Liquidity.TAKER),
        (at("05:05"), to_decimal(BAR[at("05:05")]["open"]), d("3.653"), Liquidity.TAKER),
        # 05:10 opens at 0.09999, above: from there it rests at 0.0998 (lows reach it)
        (at("05:10"), d("0.0998"), d("1.627"), Liquidity.MAKER),
        (at("05:15"), d("0.0998"), d("0.193"), Liquidity.MAKER),  # the exact remainder
    ]
    assert sum(f.quantity for f in h.fills) == order.quantity
    state = await h.venue.query_order(order.client_order_id)
    assert state is not None
    assert state.status is OrderStatus.FILLED


async def test_bar_participation_with_ioc_cancels_the_remainder() -> None:
    h = Harness(venue(eth_btc(), participation=0.001))
    await h.venue.on_bars(BARS.filter(pl.col("timestamp") <= at("06:00")))
    await h.venue.submit(
        make_order(Side.BUY, "0.2", at("04:55"), "8", TimeInForce.IOC, symbol="ETH/BTC")
    )
    assert [(f.timestamp, f.quantity) for f in h.fills] == [(at("05:00"), d("2.527"))]
    assert h.events[-1] == (OrderStatus.CANCELED, at("05:00"), "ioc remainder")


async def test_a_bar_without_volume_has_unlimited_depth() -> None:
    h = Harness(venue(eth_btc(), participation=0.001))
    bars = BARS.filter(pl.col("timestamp") <= at("05:30"))
    await h.venue.on_bars(bars.with_columns(pl.lit(0.0).alias("volume")))
    await h.venue.submit(make_order(Side.BUY, "0.2", at("04:55"), "8", symbol="ETH/BTC", n=1))
    await h.venue.on_bars(bars.drop("volume").filter(pl.col("timestamp") > at("05:30")))
    assert [(f.timestamp, f.quantity) for f in h.fills] == [(at("05:00"), d("8"))]


# -- latency ----------------------------------------------------------------------------------


async def test_latency_an_order_never_fills_on_an_event_at_or_before_its_arrival() -> None:
    # Decided at 00.600; without latency the 00.610 print at 39432.37 fills it.
    h = Harness(venue())
    await h.venue.on_trades(TRADES)
    await h.venue.submit(make_order(Side.BUY, "39432.40", ms("00.600"), "0.01"))
    assert h.fills[0].timestamp == ms("00.610")
    # With 73 ms it reaches the venue at 00.673: the prints at 00.673 are not after it.
    h = Harness(venue(latency_ms=73))
    await h.venue.on_trades(TRADES)
    await h.venue.submit(make_order(Side.BUY, "39432.40", ms("00.600"), "0.01"))
    assert h.events[0] == (OrderStatus.ACCEPTED, ms("00.673"), "")
    assert h.got() == [
        (ms("00.815"), d("39432.40"), d("0.006592"), Liquidity.MAKER),
        (ms("00.815"), d("39432.40"), d("0.003408"), Liquidity.MAKER),
    ]


async def test_latency_of_a_whole_bar_skips_that_bar() -> None:
    h = Harness(venue(eth_btc(), latency_ms=5 * 60_000))
    await h.venue.on_bars(BARS.filter(pl.col("timestamp") <= at("05:30")))
    await h.venue.submit(make_order(Side.BUY, "0.2", at("04:55"), "1", symbol="ETH/BTC"))
    assert [(f.timestamp, f.price) for f in h.fills] == [
        (at("05:05"), to_decimal(BAR[at("05:05")]["open"]))
    ]


async def test_a_cancel_takes_effect_after_the_latency() -> None:
    h = Harness(venue(latency_ms=100))
    order = make_order(Side.BUY, "39432.40", ms("00.200"), "1")
    await h.venue.submit(order)
    await h.venue.on_trades(TRADES.filter(pl.col("timestamp") <= ms("00.610")))
    await h.venue.cancel(order.client_order_id)  # asked at 00.610: effective at 00.710
    assert h.events == [(OrderStatus.ACCEPTED, ms("00.300"), "")]
    state = await h.venue.query_order(order.client_order_id)
    assert state is not None
    assert state.status is OrderStatus.PARTIALLY_FILLED
    await h.venue.on_trades(TRADES.filter(pl.col("timestamp") > ms("00.610")))
    assert [f.timestamp for f in h.fills] == [ms("00.610")] + [ms("00.673")] * 4
    assert h.events[-1] == (OrderStatus.CANCELED, ms("00.710"), "canceled")
    assert all(f.timestamp <= ms("00.710") for f in h.fills)
    state = await h.venue.query_order(order.client_order_id)
    assert state is not None
    assert (state.status, state.filled_quantity) == (
        OrderStatus.CANCELED,
        d("0.000563") + d("0.006029") + d("0.000777") + d("0.021707") + d("0.268133"),
    )


# -- slippage and fees ------------------------------------------------------------------------


async def test_slippage_worsens_taker_fills_rounded_to_the_tick_away_from_the_trader() -> None:
    h = Harness(venue(eth_btc(), slippage_bps=d("10")))
    await h.venue.on_bars(BARS.filter(pl.col("timestamp") <= at("05:30")))
    await h.venue.submit(make_order(Side.BUY, "0.2", at("04:55"), "2.5", symbol="ETH/BTC", n=1))
    await h.venue.submit(make_order(Side.SELL, "0.01", at("04:55"), "2.5", symbol="ETH/BTC", n=2))
    # Capped at the limit: the slipped price 0.09957 is above the buy limit 0.0995.
    await h.venue.submit(make_order(Side.BUY, "0.0995", at("04:55"), "2.5", symbol="ETH/BTC", n=3))
    # A maker fill is at its limit, never slipped (05:10 trades down to 0.0988).
    await h.venue.submit(make_order(Side.BUY, "0.099", at("05:05"), "2.5", symbol="ETH/BTC", n=4))
    open_ = to_decimal(BAR[at("05:00")]["open"])  # 0.09946999000000001
    assert open_ * d("1.001") == d("0.09956945999000001001")
    assert h.got() == [
        (at("05:00"), d("0.099570"), d("2.5"), Liquidity.TAKER),  # up to the tick
        (at("05:00"), d("0.099370"), d("2.5"), Liquidity.TAKER),  # 0.0993705... down
        (at("05:00"), d("0.0995"), d("2.5"), Liquidity.TAKER),
        (at("05:10"), d("0.099"), d("2.5"), Liquidity.MAKER),
    ]
    assert [f.fee for f in h.fills] == [
        f.price * f.quantity * (TAKER if f.liquidity is Liquidity.TAKER else MAKER) for f in h.fills
    ]


async def test_impact_grows_with_the_share_of_the_quote_size_taken() -> None:
    h = Harness(venue(slippage_bps=d("1"), impact_bps_per_participation=d("100")))
    await h.venue.on_quotes(QUOTES.head(3))
    await h.venue.submit(make_order(Side.BUY, "40000", ms("01.000"), "0.05", TimeInForce.IOC))
    # 1 bps + 100 bps x 0.05 / 0.066851 = 75.79 bps over the ask 39433.62
    bps = d("1") + d("100") * d("0.05") / d("0.066851")
    raw = d("39433.62") * (1 + bps / 10_000)
    assert d("39732.50") < raw < d("39732.51")
    (fill,) = h.fills
    assert fill.price == d("39732.51")  # a buy: up to the tick
    assert fill.fee == fill.price * d("0.05") * TAKER


async def test_zero_slippage_leaves_the_market_price_unrounded() -> None:
    h = Harness(venue(eth_btc()))
    await h.venue.on_bars(BARS.filter(pl.col("timestamp") <= at("05:30")))
    await h.venue.submit(make_order(Side.BUY, "0.2", at("04:55"), "1", symbol="ETH/BTC"))
    assert h.fills[0].price == d("0.09946999000000001")  # as the file holds it


async def test_configured_fees() -> None:
    config = PaperVenueConfig(maker_fee_bps=d("1"), taker_fee_bps=d("5"))
    h = Harness(PaperVenue(btc_usdt(), config=config))
    await h.venue.on_trades(TRADES)
    await h.venue.submit(make_order(Side.BUY, "39440", ms("00.300"), "0.004", n=1))
    await h.venue.submit(make_order(Side.BUY, "39432.40", ms("00.200"), "0.0005", n=2))
    taker, maker = h.fills
    assert (taker.liquidity, taker.fee) == (
        Liquidity.TAKER,
        d("39439.44") * d("0.004") * d("0.0005"),
    )
    assert (maker.liquidity, maker.fee) == (
        Liquidity.MAKER,
        d("39432.40") * d("0.0005") * d("0.0001"),
    )
    assert taker.fee == d("0.07887888")
    assert maker.fee == d("0.0019716200")


# -- time in force ----------------------------------------------------------------------------


async def test_day_order_partly_filled_expires_at_utc_midnight() -> None:
    h = Harness(venue(eth_btc(), participation=0.001))
    order = make_order(Side.BUY, "0.084", at("23:40"), "5", TimeInForce.DAY, symbol="ETH/BTC")
    await h.venue.submit(order)
    await h.venue.on_bars(ETH.filter(pl.col("timestamp").is_between(at("23:00"), at("01:00", 11))))
    assert h.got() == [
        (at("23:45"), to_decimal(BAR[at("23:45")]["open"]), d("0.869"), Liquidity.TAKER),
        (at("23:50"), d("0.084"), d("1.395"), Liquidity.MAKER),
        (at("23:55"), d("0.084"), d("0.642"), Liquidity.MAKER),
    ]
    assert h.events[-1] == (OrderStatus.EXPIRED, at("00:00", 11), "end of day")
    state = await h.venue.query_order(order.client_order_id)
    assert state is not None
    assert (state.status, state.filled_quantity) == (OrderStatus.EXPIRED, d("2.906"))
    assert await h.venue.open_orders() == []


async def test_day_order_expires_with_the_venue_clock_without_data_of_its_own() -> None:
    h = Harness(venue(eth_btc()))
    await h.venue.submit(
        make_order(Side.BUY, "1", at("12:00"), "1", TimeInForce.DAY, symbol="XRP/BTC")
    )
    await h.venue.on_bars(ETH.filter(pl.col("timestamp").is_between(at("23:00"), at("23:55"))))
    assert h.events[-1][0] is OrderStatus.ACCEPTED
    await h.venue.on_bars(ETH.filter(pl.col("timestamp") == at("00:05", 11)))
    assert h.events[-1] == (OrderStatus.EXPIRED, at("00:00", 11), "end of day")


async def test_a_day_order_that_arrives_after_its_day_expires_on_arrival() -> None:
    h = Harness(venue(eth_btc(), latency_ms=60_000))
    await h.venue.on_bars(ETH.filter(pl.col("timestamp").is_between(at("23:00"), at("00:30", 11))))
    when = at("23:59") + dt.timedelta(seconds=30)  # reaches the venue at 00:00:30
    await h.venue.submit(make_order(Side.BUY, "0.2", when, "1", TimeInForce.DAY, symbol="ETH/BTC"))
    arrival = at("00:00", 11) + dt.timedelta(seconds=30)
    assert h.fills == []
    assert h.events == [
        (OrderStatus.ACCEPTED, arrival, ""),
        (OrderStatus.EXPIRED, arrival, "end of day"),
    ]


async def test_gtc_rests_across_days_then_fills() -> None:
    # ETH/BTC fell on the 10th; after noon it never traded above 0.09729999 that day. A sell
    # at 0.0974 rests until the 13th, 17:20 (high 0.098), where it fills at its limit.
    day10 = ETH.filter(pl.col("timestamp").is_between(at("12:05"), at("23:55")))
    assert day10["high"].max() == 0.09729999
    h = Harness(venue(eth_btc()))
    order = make_order(Side.SELL, "0.0974", at("12:00"), "3", symbol="ETH/BTC")
    await h.venue.submit(order)
    for day in (10, 11, 12, 13):  # a day per batch
        await h.venue.on_bars(ETH.filter(pl.col("timestamp").dt.day() == day))
    (fill,) = h.fills
    when = dt.datetime(2018, 1, 13, 17, 20, tzinfo=dt.UTC)
    assert (fill.timestamp, fill.price, fill.quantity) == (when, d("0.0974"), d("3"))
    assert fill.liquidity is Liquidity.MAKER  # it opened at 0.09676, below the limit
    assert h.events == [(OrderStatus.ACCEPTED, at("12:00"), "")]
    assert await h.venue.open_orders() == []


# -- the rest of the port ---------------------------------------------------------------------


async def test_cancel_a_partly_filled_order_and_unknown_ids() -> None:
    h = Harness(venue(eth_btc(), participation=0.001))
    await h.venue.on_bars(BARS.filter(pl.col("timestamp") <= at("05:00")))
    order = make_order(Side.BUY, "0.2", at("04:55"), "8", symbol="ETH/BTC")
    await h.venue.submit(order)
    await h.venue.cancel(order.client_order_id)
    await h.venue.cancel(order.client_order_id)
    await h.venue.cancel("ql-unknown")
    assert h.events == [
        (OrderStatus.ACCEPTED, at("04:55"), ""),
        (OrderStatus.CANCELED, at("05:00"), "canceled"),  # the venue's time: its last bar
    ]
    await h.venue.on_bars(BARS.filter(pl.col("timestamp") > at("05:00")).head(100))
    assert [f.quantity for f in h.fills] == [d("2.527")]
    assert h.venue.net_positions() == {"ETH/BTC": d("2.527")}


async def test_submit_is_idempotent_on_the_client_order_id() -> None:
    h = Harness(venue(eth_btc(), participation=0.001))
    await h.venue.on_bars(BARS.filter(pl.col("timestamp") <= at("05:00")))
    order = make_order(Side.BUY, "0.2", at("04:55"), "8", symbol="ETH/BTC")
    await h.venue.submit(order)
    await h.venue.submit(order)  # a retry: no second order, its state again
    assert len(h.fills) == 1
    assert h.events == [
        (OrderStatus.ACCEPTED, at("04:55"), ""),
        (OrderStatus.PARTIALLY_FILLED, at("05:00"), ""),
    ]
    await h.venue.on_bars(BARS.filter(pl.col("timestamp").is_between(at("05:05"), at("06:00"))))
    assert sum(f.quantity for f in h.fills) == d("8")
    n = len(h.fills)
    await h.venue.submit(order)
    assert len(h.fills) == n
    assert h.events[-1] == (OrderStatus.FILLED, h.fills[-1].timestamp, "")


async def test_orders_the_venue_cannot_take_are_rejected() -> None:
    h = Harness(venue())
    bad = make_order(Side.BUY, "39000", ms("01.000"), "0")
    with pytest.raises(VenueRejectedError, match="quantity"):
        await h.venue.submit(bad)
    with pytest.raises(VenueRejectedError, match="quantity"):
        await h.venue.submit(bad)  # again: still refused, never traded
    with pytest.raises(VenueRejectedError, match="instrument"):
        await h.venue.submit(make_order(Side.BUY, "1", ms("01.000"), "1", symbol="NOSLASH"))
    with pytest.raises(VenueRejectedError, match="limit price"):
        await h.venue.submit(make_order(Side.BUY, "-1", ms("01.000"), "1", n=3))
    state = await h.venue.query_order(bad.client_order_id)
    assert state is not None
    assert state.status is OrderStatus.REJECTED
    assert h.reports == []
    assert await h.venue.open_orders() == []


async def test_query_open_orders_fills_since_and_positions() -> None:
    h = Harness(venue())
    assert isinstance(h.venue, Venue)
    assert (h.venue.paper, h.venue.poll_interval_s) == (True, 0.0)
    buy = make_order(Side.BUY, "39440", ms("00.300"), "0.01", n=1)  # fills on 4 prints
    sell = make_order(Side.SELL, "39437.6", ms("00.600"), "0.005", n=2)  # rests: 2 prints
    rest = make_order(Side.SELL, "50000", ms("00.600"), "1", n=3)  # never
    for order in (buy, sell, rest):
        await h.venue.submit(order)
    await h.venue.on_trades(TRADES.filter(pl.col("timestamp") <= ms("00.700")))
    assert await h.venue.query_order("ql-nope") is None
    b = await h.venue.query_order(buy.client_order_id)
    s = await h.venue.query_order(sell.client_order_id)
    assert b is not None
    assert s is not None
    assert (b.status, b.filled_quantity, len(b.fills), b.side, b.price) == (
        OrderStatus.FILLED,
        d("0.01"),
        4,
        Side.BUY,
        d("39440"),
    )
    assert b.venue_order_id == "paper-00000001"
    assert b.updated_at == ms("00.471")
    # 00.610 prints 39432.37, below the sell limit: it rests, and the 00.673 prints at
    # 39437.6 (0.0031) and 39437.61 (0.000501) fill it at its limit.
    assert (s.status, s.filled_quantity) == (OrderStatus.PARTIALLY_FILLED, d("0.003601"))
    assert [(f.price, f.liquidity) for f in s.fills] == [(d("39437.6"), Liquidity.MAKER)] * 2
    assert [o.client_order_id for o in await h.venue.open_orders()] == [
        sell.client_order_id,
        rest.client_order_id,
    ]
    assert await h.venue.fills_since(ms("00.000")) == h.fills
    assert await h.venue.fills_since(ms("00.400")) == h.fills[3:]
    assert await h.venue.fills_since(ms("00.700")) == []
    assert h.venue.net_positions() == {"BTC/USDT": d("0.01") - d("0.003601")}
    assert await h.venue.positions() is None  # no account beyond this process
    await h.venue.poll()  # a push venue: nothing to fetch
    assert len(h.reports) == 3 + 6


async def test_trade_ids_and_results_are_deterministic() -> None:
    async def run() -> list[Fill]:
        h = Harness(venue(eth_btc(), participation=0.001, slippage_bps=d("2")))
        await h.venue.submit(make_order(Side.BUY, "0.0998", at("04:55"), "8", symbol="ETH/BTC"))
        await h.venue.submit(make_order(Side.SELL, None, at("05:02"), "5", symbol="ETH/BTC"))
        for hour in range(5, 8):
            hours = pl.col("timestamp").is_between(at(f"{hour}:00"), at(f"{hour}:55"))
            await h.venue.on_bars(BARS.filter(hours))
        return h.fills

    first, second = await run(), await run()
    assert first == second
    assert len({f.trade_id for f in first}) == len(first) == 6
    coid = first[0].client_order_id
    assert [f.trade_id for f in first if f.client_order_id == coid] == [
        f"{coid}-{n}" for n in range(1, 5)
    ]
    assert all(f.fill_id == ids.fill_id("paper", f.trade_id) for f in first)


async def test_reports_of_one_batch_come_in_event_order() -> None:
    h = Harness(venue())
    late = make_order(Side.BUY, "39432.40", ms("00.200"), "0.0001", n=1)  # fills at 00.610
    early = make_order(Side.BUY, "39440", ms("00.200"), "0.001", n=2)  # fills at 00.278
    await h.venue.submit(late)
    await h.venue.submit(early)
    await h.venue.on_trades(TRADES)
    fills = h.fills
    # early: 0.000263 at 00.278, the rest at 00.310; late: at 00.610, matched first
    assert [f.client_order_id for f in fills] == [early.client_order_id] * 2 + [
        late.client_order_id
    ]
    stamps = [r.timestamp for r in h.reports]
    assert stamps == sorted(stamps)


# -- configuration ----------------------------------------------------------------------------


def test_config_defaults() -> None:
    config = PaperVenueConfig()
    assert config.kinds == (EventType.QUOTE, EventType.TRADE, EventType.BAR)
    assert (config.maker_fee_bps, config.taker_fee_bps) == (d("2"), d("7.5"))
    assert (config.participation, config.latency_ms) == (None, 0.0)
    assert (config.slippage_bps, config.impact_bps_per_participation) == (d("0"), d("0"))


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"participation": 0.0}, "participation"),
        ({"participation": 1.5}, "participation"),
        ({"participation": float("nan")}, "participation"),
        ({"latency_ms": -1.0}, "latency_ms"),
        ({"latency_ms": float("inf")}, "latency_ms"),
        ({"maker_fee_bps": Decimal("-1")}, "maker_fee_bps"),
        ({"taker_fee_bps": Decimal("NaN")}, "taker_fee_bps"),
        ({"slippage_bps": Decimal("-0.5")}, "slippage_bps"),
        ({"impact_bps_per_participation": Decimal("-1")}, "impact_bps_per_participation"),
        (
            {"slippage_bps": Decimal("5000"), "impact_bps_per_participation": Decimal("5000")},
            "impact_bps_per_participation",
        ),
        ({"match_on": ()}, "match_on"),
        ({"match_on": ("bar", "book")}, "match_on"),
        ({"match_on": ("bar", "BAR")}, "match_on"),
    ],
)
def test_config_errors_name_the_key(changes: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        PaperVenueConfig(**changes)  # type: ignore[arg-type]
    assert info.value.key == key
    with pytest.raises(ConfigError):
        msgspec.structs.replace(PaperVenueConfig(), **changes)


def test_config_from_a_mapping_and_constructor_overrides() -> None:
    config = msgspec.convert(
        {"taker_fee_bps": "4", "participation": 0.25, "latency_ms": 50, "match_on": ["Bar"]},
        PaperVenueConfig,
    )
    assert config.kinds == (EventType.BAR,)
    assert (config.taker_fee_bps, config.participation, config.latency_ms) == (d("4"), 0.25, 50)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"participaton": 0.1}, PaperVenueConfig)
    v = PaperVenue(btc_usdt(), config=config, taker_fee_bps=d("6"), name="sim")
    assert (v.name, v.config.taker_fee_bps, v.config.participation) == ("sim", d("6"), 0.25)
    assert v.taker_fee == d("0.0006")
    with pytest.raises(ConfigError):
        PaperVenue(btc_usdt(), participation=2.0)


async def test_kinds_not_configured_are_ignored() -> None:
    h = Harness(venue(eth_btc(), match_on=["trade"]))
    await h.venue.submit(make_order(Side.BUY, "0.2", at("04:55"), "1", symbol="ETH/BTC"))
    await h.venue.on_bars(BARS.filter(pl.col("timestamp") <= at("05:30")))
    assert h.fills == []


# -- on the bus -------------------------------------------------------------------------------


@pytest.fixture
async def bus() -> AsyncIterator[InProcessBus]:
    bus = InProcessBus()
    yield bus
    await bus.close()


def batch(kind: EventType, frame: pl.DataFrame, seq: int) -> MarketBatch:
    ts = frame["timestamp"].dt.epoch("ns")
    return MarketBatch(kind=kind, frame=frame, seq=seq, ts_min=ts.min(), ts_max=ts.max())  # type: ignore[arg-type]


async def test_the_venue_consumes_only_the_configured_kinds(bus: InProcessBus) -> None:
    h = Harness(venue(match_on=("quote",), clock=SimulatedClock()))
    await h.venue.start(bus)
    await h.venue.submit(make_order(Side.BUY, "39440", ms("00.300"), "0.01"))
    await bus.publish(topics.market_data(EventType.TRADE), batch(EventType.TRADE, TRADES, 0))
    await bus.publish(topics.market_data(EventType.QUOTE), batch(EventType.QUOTE, QUOTES, 1))
    await asyncio.wait_for(bus.drain(), 5)
    assert not bus.handler_errors
    (fill,) = h.fills
    assert (fill.timestamp, fill.price) == (ms("01.076"), d("39433.62"))  # the quote, not a trade
