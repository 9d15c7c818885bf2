"""Properties of the paper venue over random orders against real recorded market data.

Each example takes a window of real events (Binance BTC/USDT quotes or trades of
2021-01-08 00:00:00-00:00:46, both kinds interleaved, or ETH/BTC 5-minute bars around the
midnight of 2018-01-10/11), random orders (side, limit around the market or market orders,
quantity, time in force, decision time, some submitted late, some canceled) and a random
venue configuration (participation, latency, slippage, impact), feeds the events in random
batches and checks, for every order:

* its fills sum to at most its quantity, exactly its quantity iff it is FILLED; every fill but
  the last is a multiple of the lot; trade ids are ``<client_order_id>-1, -2, ...``;
* no fill is at or before the order's time + latency, none at or after its UTC midnight (DAY),
  none after its cancel took effect (the venue's time at the cancel + latency);
* a limit order never fills at a price worse than its limit, after slippage too: a maker fill
  is at the limit exactly; a taker fill is at the market's price at that event (an ask or bid,
  a trade's price, a bar's open), never better, at most ``slippage_bps +
  impact_bps_per_participation`` worse plus one tick of rounding, and exactly the market's
  price when both are 0;
* an IOC order trades on one event only and ends FILLED or CANCELED once an event reached it;
* reports come ACCEPTED first, then fills, then at most one terminal event, in time order;
  `query_order`, `open_orders` and `positions` agree with them;
* feeding the same events in one batch or in many gives the same fills (single kinds).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import Coroutine
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import numpy as np
import polars as pl
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from quantlab.adapters.sim import PaperVenue
from quantlab.adapters.sim.data import bundled_dir
from quantlab.core import ids
from quantlab.core.clock import datetime_to_ns, ns_to_datetime
from quantlab.core.enums import EventType, Liquidity, OrderStatus, OrderType, Side, TimeInForce
from quantlab.core.instruments import InstrumentBook
from quantlab.core.messages import Fill, Order, OrderEvent
from quantlab.execution.ports import VenueReport

NS = pl.Datetime("ns", "UTC")
DAY_NS = 86_400 * 10**9
QUOTES = pl.read_parquet(bundled_dir() / "binance_btcusdt_quotes_2021-01-08.parquet").with_columns(
    pl.col("timestamp").cast(NS)
)
TRADES = pl.read_parquet(bundled_dir() / "binance_btcusdt_trades_2021-01-08.parquet").select(
    "symbol",
    pl.col("timestamp").cast(NS),
    "price",
    pl.col("quantity").alias("size"),
)
BARS = (
    pl.read_parquet(bundled_dir() / "binance_btc_pairs_5m_2018-01.parquet")
    .filter(
        pl.col("symbol") == "ETH/BTC",
        pl.col("timestamp").is_between(
            dt.datetime(2018, 1, 10, 20, tzinfo=dt.UTC), dt.datetime(2018, 1, 11, 4, tzinfo=dt.UTC)
        ),
    )
    .sort("timestamp")
)


@dataclass(frozen=True)
class Market:
    """One kind of data (or quotes and trades together) with what the checks need."""

    kinds: tuple[EventType, ...]
    frames: dict[EventType, pl.DataFrame]
    symbol: str
    book: InstrumentBook
    lots: tuple[str, ...]  # order quantities to draw from
    latency_ms: tuple[float, ...]
    spread_bps: int  # limits are drawn within this many bps of the market


TICK_BOOK = InstrumentBook(Decimal("0.01"), Decimal("0.000001"))
BAR_BOOK = InstrumentBook(Decimal("0.000001"), Decimal("0.001"))
MARKETS = {
    "quote": Market(
        (EventType.QUOTE,),
        {EventType.QUOTE: QUOTES},
        "BTC/USDT",
        TICK_BOOK,
        ("0.000001", "0.001", "0.017", "0.05", "0.3", "2.5"),
        (0.0, 1.0, 40.0, 250.0),
        25,
    ),
    "trade": Market(
        (EventType.TRADE,),
        {EventType.TRADE: TRADES},
        "BTC/USDT",
        TICK_BOOK,
        ("0.000001", "0.001", "0.017", "0.05", "0.3", "2.5"),
        (0.0, 1.0, 40.0, 250.0),
        25,
    ),
    "both": Market(
        (EventType.QUOTE, EventType.TRADE),
        {EventType.QUOTE: QUOTES, EventType.TRADE: TRADES},
        "BTC/USDT",
        TICK_BOOK,
        ("0.000001", "0.001", "0.017", "0.05", "0.3", "2.5"),
        (0.0, 1.0, 40.0, 250.0),
        25,
    ),
    "bar": Market(
        (EventType.BAR,),
        {EventType.BAR: BARS},
        "ETH/BTC",
        BAR_BOOK,
        ("0.001", "0.5", "3", "12.345", "40"),
        (0.0, 60_000.0, 300_000.0, 420_000.0),
        150,
    ),
}


def _take_prices(frame: pl.DataFrame, kind: EventType, side: Side) -> pl.DataFrame:
    """(ts, price, size) of what a taker on `side` gets at each event of `frame`."""
    price, size = {
        EventType.QUOTE: ("ask", "ask_size") if side is Side.BUY else ("bid", "bid_size"),
        EventType.TRADE: ("price", "size"),
        EventType.BAR: ("open", "volume"),
    }[kind]
    return frame.select(
        pl.col("timestamp").dt.epoch("ns").alias("ts"),
        pl.col(price).alias("p"),
        pl.col(size).alias("q"),
    )


TAKES = {  # (market, side) -> {ts: the taker prices of the events at ts}
    (name, side): {
        ts: {Decimal(repr(p)) for p in prices}
        for ts, prices in pl.concat(
            [_take_prices(frame, kind, side) for kind, frame in m.frames.items()]
        )
        .group_by("ts")
        .agg("p")
        .iter_rows()
    }
    for name, m in MARKETS.items()
    for side in Side
}
DEPTHS = {  # (market, side) -> {ts: the largest size (bar: volume) at ts}
    (name, side): dict(
        pl.concat([_take_prices(frame, kind, side) for kind, frame in m.frames.items()])
        .group_by("ts")
        .agg(pl.col("q").max())
        .iter_rows()
    )
    for name, m in MARKETS.items()
    for side in Side
}


@dataclass
class Plan:
    side: Side
    offset_bps: int | None  # None: a market order
    quantity: str
    tif: TimeInForce
    at: int  # the decision time, ns
    late: bool  # submitted after the batch that holds its time
    cancel_after: int | None  # cancel after this batch (index), if any


@dataclass
class Scenario:
    market: str
    start: int
    end: int  # row window of the events (the first kind's rows; others by time)
    cuts: list[int]
    participation: float | None
    latency_ms: float
    slippage_bps: Decimal
    impact_bps: Decimal
    plans: list[Plan] = field(default_factory=list)


@st.composite
def scenarios(draw: st.DrawFn, names: tuple[str, ...] = tuple(sorted(MARKETS))) -> Scenario:
    name = draw(st.sampled_from(names))
    market = MARKETS[name]
    rows = market.frames[market.kinds[0]].height
    start = draw(st.integers(0, rows - 40))
    end = draw(st.integers(start + 20, min(start + 160, rows)))
    cuts = sorted(draw(st.sets(st.integers(start + 1, end - 1), max_size=5)))
    frame = market.frames[market.kinds[0]]
    times = frame["timestamp"].dt.epoch("ns")
    t0, t1 = int(times[start]), int(times[end - 1])
    n_plans = draw(st.integers(1, 6))
    plans = []
    for _ in range(n_plans):
        # Decision times from a bit before the window (for ticks: before midnight) to its end.
        lead = 2 * 10**9 if name != "bar" else 3_600 * 10**9
        at = draw(st.integers(t0 - lead, t1))
        plans.append(
            Plan(
                side=draw(st.sampled_from(Side)),
                offset_bps=draw(st.none() | st.integers(-market.spread_bps, market.spread_bps)),
                quantity=draw(st.sampled_from(market.lots)),
                tif=draw(st.sampled_from(TimeInForce)),
                at=at,
                late=draw(st.booleans()),
                cancel_after=draw(st.none() | st.integers(0, len(cuts))),
            )
        )
    return Scenario(
        market=name,
        start=start,
        end=end,
        cuts=cuts,
        participation=draw(st.none() | st.sampled_from([0.0005, 0.01, 0.2, 1.0])),
        latency_ms=draw(st.sampled_from(market.latency_ms)),
        slippage_bps=draw(st.sampled_from([Decimal(0), Decimal("0.5"), Decimal(3)])),
        impact_bps=draw(st.sampled_from([Decimal(0), Decimal(10), Decimal(200)])),
        plans=plans,
    )


def _batches(s: Scenario, cuts: list[int]) -> list[dict[EventType, pl.DataFrame]]:
    """The window's events in batches: rows cut at `cuts` (other kinds cut at those times)."""
    market = MARKETS[s.market]
    first = market.frames[market.kinds[0]]
    bounds = [s.start, *cuts, s.end]
    times = first["timestamp"]
    out = []
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        lo, hi = times[a], times[b - 1]
        batch = {market.kinds[0]: first.slice(a, b - a)}
        for kind in market.kinds[1:]:
            other = market.frames[kind]
            keep = pl.col("timestamp") <= hi
            if i > 0:
                keep &= pl.col("timestamp") > times[a - 1]
            if i == 0:
                keep &= pl.col("timestamp") >= lo
            batch[kind] = other.filter(keep)
        out.append(batch)
    return out


def _epoch(frame: pl.DataFrame) -> np.ndarray:
    return frame["timestamp"].dt.epoch("ns").to_numpy()


def _order(s: Scenario, k: int, plan: Plan) -> Order:
    market = MARKETS[s.market]
    instrument = market.book[market.symbol]
    price = None
    if plan.offset_bps is not None:
        # Around the market's last price at (or first after) the decision time.
        frame = market.frames[market.kinds[0]]
        col = {EventType.QUOTE: "bid", EventType.TRADE: "price", EventType.BAR: "close"}
        ref_col = col[market.kinds[0]]
        times = frame["timestamp"].dt.epoch("ns").to_numpy()
        i = min(max(int(np.searchsorted(times, plan.at, "right")) - 1, 0), len(times) - 1)
        ref = Decimal(repr(float(frame[ref_col][i])))
        raw = ref * (1 + Decimal(plan.offset_bps) / 10_000)
        price = (raw / instrument.tick_size).to_integral_value() * instrument.tick_size
    signal = ids.signal_id("paper-property", market.symbol, plan.at, k)
    coid = ids.client_order_id(signal)
    return Order(
        order_id=ids.order_id(coid),
        client_order_id=coid,
        symbol=market.symbol,
        side=plan.side,
        order_type=OrderType.MARKET if price is None else OrderType.LIMIT,
        quantity=Decimal(plan.quantity),
        price=price,
        time_in_force=plan.tif,
        strategy_id="paper-property",
        signal_id=signal,
        timestamp=ns_to_datetime(plan.at),
    )


@dataclass
class Run:
    venue: PaperVenue
    reports: list[VenueReport]
    orders: list[Order]
    cancel_ns: dict[str, int]  # when each cancel took effect (at the latest)
    emitted: list[list[VenueReport]]  # reports per venue call


async def _simulate(s: Scenario, cuts: list[int], *, all_first: bool = False) -> Run:
    market = MARKETS[s.market]
    venue = PaperVenue(
        market.book,
        match_on=[k.topic_name for k in market.kinds],
        participation=s.participation,
        latency_ms=s.latency_ms,
        slippage_bps=s.slippage_bps,
        impact_bps_per_participation=s.impact_bps,
    )
    reports: list[VenueReport] = []

    async def listen(report: VenueReport) -> None:
        reports.append(report)

    venue.set_listener(listen)
    orders = [_order(s, k, p) for k, p in enumerate(s.plans)]
    pending = sorted(range(len(orders)), key=lambda k: s.plans[k].at)
    done: set[int] = set()
    cancel_ns: dict[str, int] = {}
    emitted: list[list[VenueReport]] = []
    seen = -(2**63)
    latency = round(s.latency_ms * 1_000_000)

    async def call(coro: Coroutine[Any, Any, None]) -> None:
        before = len(reports)
        await coro
        emitted.append(reports[before:])

    batches = _batches(s, cuts)
    for b, batch in enumerate(batches):
        first = min(int(_epoch(f).min()) for f in batch.values() if f.height)
        for k in pending:
            plan = s.plans[k]
            if k not in done and (all_first or (not plan.late and plan.at < first)):
                await call(venue.submit(orders[k]))
                done.add(k)
        for kind, frame in batch.items():
            if frame.height:
                await call(venue.on_market(kind, frame))
                seen = max(seen, int(_epoch(frame).max()))
        for k in pending:
            if k not in done and s.plans[k].at <= seen:
                await call(venue.submit(orders[k]))
                done.add(k)
        if not all_first:
            for k, plan in enumerate(s.plans):
                if plan.cancel_after == b and k in done:
                    coid = orders[k].client_order_id
                    cancel_ns[coid] = max(seen, plan.at) + latency
                    await call(venue.cancel(coid))
    for k in pending:
        if k not in done:
            await call(venue.submit(orders[k]))
    return Run(venue, reports, orders, cancel_ns, emitted)


async def _check(s: Scenario, run: Run) -> None:
    market = MARKETS[s.market]
    instrument = market.book[market.symbol]
    tick = instrument.tick_size
    latency = round(s.latency_ms * 1_000_000)
    worst = s.slippage_bps + s.impact_bps
    positions: dict[str, Decimal] = {}
    for call in run.emitted:  # each call's reports are in time order
        stamps = [r.timestamp for r in call]
        assert stamps == sorted(stamps)
    states = {o.client_order_id: await run.venue.query_order(o.client_order_id) for o in run.orders}
    for order in run.orders:
        coid = order.client_order_id
        mine = [r for r in run.reports if r.client_order_id == coid]
        fills = [r for r in mine if isinstance(r, Fill)]
        events = [r for r in mine if isinstance(r, OrderEvent)]
        t = datetime_to_ns(order.timestamp)
        buy = order.side is Side.BUY
        # ACCEPTED first (when it reaches the venue), then fills, then at most one end.
        assert mine[0] is events[0]
        assert events[0].status is OrderStatus.ACCEPTED
        assert datetime_to_ns(events[0].timestamp) == t + latency
        terminal = [e for e in events[1:] if e.status.is_terminal]
        assert len(terminal) == len(events) - 1 <= 1
        if terminal:
            assert mine[-1] is terminal[0]
        filled = sum((f.quantity for f in fills), Decimal(0))
        assert filled <= order.quantity
        assert [f.trade_id for f in fills] == [f"{coid}-{n}" for n in range(1, len(fills) + 1)]
        assert all(f.quantity > 0 for f in fills)
        assert all(f.quantity % instrument.lot_size == 0 for f in fills[:-1])
        state = states[coid]
        assert state is not None
        assert (state.filled_quantity, list(state.fills)) == (filled, fills)
        if filled == order.quantity:
            assert state.status is OrderStatus.FILLED
            assert not terminal
        elif terminal:
            assert state.status is terminal[0].status
        else:
            assert state.status is (OrderStatus.PARTIALLY_FILLED if fills else OrderStatus.ACCEPTED)
        for f in fills:
            ts = datetime_to_ns(f.timestamp)
            assert ts > t + latency  # never at or before the order reached the venue
            if order.time_in_force is TimeInForce.DAY:
                assert ts < (t // DAY_NS + 1) * DAY_NS
            if coid in run.cancel_ns:
                assert ts <= run.cancel_ns[coid]
            # Never more than the event offers: its size, or its share of a bar's volume.
            depth = Decimal(repr(DEPTHS[(s.market, order.side)][ts]))
            if s.market == "bar" and s.participation is not None:
                depth *= Decimal(repr(s.participation))
            assert f.quantity <= depth * (1 + Decimal("1e-9"))
            if order.price is not None:  # never worse than the limit, slippage included
                assert f.price <= order.price if buy else f.price >= order.price
            if f.liquidity is Liquidity.MAKER:
                assert f.price == order.price
                assert f.fee == f.price * f.quantity * run.venue.maker_fee
                continue
            assert f.fee == f.price * f.quantity * run.venue.taker_fee
            prices = TAKES[(s.market, order.side)][ts]
            if worst == 0:
                assert f.price in prices  # the market's price, as is
            elif buy:  # never better than the market, at most `worst` bps (+ a tick) worse
                assert f.price >= min(prices)
                bound = max(prices) * (1 + worst / 10_000)
                assert f.price <= (bound / tick).to_integral_value(ROUND_CEILING) * tick
            else:
                assert f.price <= max(prices)
                bound = min(prices) * (1 - worst / 10_000)
                assert f.price >= (bound / tick).to_integral_value(ROUND_FLOOR) * tick
        canceled = [e for e in terminal if e.reason == "canceled"]
        if canceled:
            assert coid in run.cancel_ns
            assert datetime_to_ns(canceled[0].timestamp) <= run.cancel_ns[coid]
        if order.time_in_force is TimeInForce.IOC:
            assert len(fills) <= 1  # one event only
            if not canceled:
                assert state.status.is_terminal == _reached(s, order, latency)
            if terminal and not canceled:
                assert (terminal[0].status, terminal[0].reason) == (
                    OrderStatus.CANCELED,
                    "ioc remainder",
                )
        elif terminal and not canceled:
            assert order.time_in_force is TimeInForce.DAY
            assert (terminal[0].status, terminal[0].reason) == (OrderStatus.EXPIRED, "end of day")
            assert datetime_to_ns(terminal[0].timestamp) == max(
                (t // DAY_NS + 1) * DAY_NS, t + latency
            )
        event(f"{s.market} {order.time_in_force.value}: {state.status.value}")
        for f in fills:
            event(f"{s.market} fill: {f.liquidity.value}")
        if fills:
            signed = filled if buy else -filled
            positions[order.symbol] = positions.get(order.symbol, Decimal(0)) + signed
    assert run.venue.net_positions() == positions
    open_ids = {o.client_order_id for o in await run.venue.open_orders()}
    assert open_ids == {c for c, st in states.items() if st and not st.status.is_terminal}


def _reached(s: Scenario, order: Order, latency: int) -> bool:
    """Did an event of the window come after the order reached the venue (and before its
    midnight, if DAY)?"""
    t = datetime_to_ns(order.timestamp)
    end = (t // DAY_NS + 1) * DAY_NS if order.time_in_force is TimeInForce.DAY else 2**63
    return any(
        t + latency < x < end
        for batch in _batches(s, s.cuts)
        for frame in batch.values()
        for x in frame["timestamp"].dt.epoch("ns")
    )


PROPERTY = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
    derandomize=True,  # the same examples every run
)


@PROPERTY
@given(scenarios())
def test_fills_respect_quantity_limit_and_timing(s: Scenario) -> None:
    async def main() -> None:
        await _check(s, await _simulate(s, s.cuts))

    asyncio.run(main())


@settings(PROPERTY, max_examples=80)
@given(scenarios(("bar", "quote", "trade")))
def test_batching_does_not_change_the_fills(s: Scenario) -> None:
    async def main() -> None:
        one = await _simulate(s, [], all_first=True)
        many = await _simulate(s, s.cuts, all_first=True)
        assert many.orders == one.orders
        for order in one.orders:
            coid = order.client_order_id
            assert await one.venue.query_order(coid) == await many.venue.query_order(coid)

    asyncio.run(main())
