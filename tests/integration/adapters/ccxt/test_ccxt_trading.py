"""`CcxtVenue` through the real ccxt client against the local fake venues (binance spot and
coinbase Advanced Trade): fills, partial fills by poll, duplicate client ids, rate limits,
unknown outcomes and their resolution, cancels, IOC remainders, listings, and the config's
paper/live guards."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from pydantic import SecretStr

from quantlab.adapters.ccxt import CcxtTradingConfig, CcxtVenue
from quantlab.adapters.ccxt.trading import retry_after_s
from quantlab.core import ids
from quantlab.core.enums import Liquidity, OrderStatus, OrderType, Side, TimeInForce
from quantlab.core.errors import ConfigError
from quantlab.core.messages import Fill, Order, OrderEvent
from quantlab.execution.ports import (
    Venue,
    VenueRejectedError,
    VenueReport,
    VenueUnknownError,
)
from quantlab.testing.fakes.ccxt_trading import (
    FakeBinanceTrading,
    FakeCoinbaseTrading,
    ec_key_pem,
)

BINANCE_CREATE = "/api/v3/order"
COINBASE_CREATE = "/api/v3/brokerage/orders"


COINBASE_CREDENTIALS = {
    "apiKey": "organizations/11111111-2222/apiKeys/33333333-4444",
    "secret": ec_key_pem(),
}
BINANCE_CREDENTIALS = {"apiKey": "binance-test-key", "secret": "binance-test-secret"}


@dataclass
class Env:
    """One fake venue, the venues built against it, and what they reported."""

    exchange: str
    fake: Any
    reports: list[VenueReport] = field(default_factory=list)
    venues: list[CcxtVenue] = field(default_factory=list)

    @property
    def symbols(self) -> tuple[str, str]:
        return ("BTC/USDT", "ETH/USDT") if self.exchange == "binance" else ("BTC/USD", "ETH/USD")

    @property
    def symbol(self) -> str:
        return self.symbols[0]

    @property
    def create_path(self) -> str:
        return BINANCE_CREATE if self.exchange == "binance" else COINBASE_CREATE

    def creates(self) -> int:
        return len(self.fake.requests_to(self.create_path, "POST"))

    def venue(self, **overrides: Any) -> CcxtVenue:
        settings: dict[str, Any] = {
            "exchange": self.exchange,
            "symbols": self.symbols,
            "url": self.fake.url,
            "timeout_s": 2.0,
            "enable_rate_limit": False,
            "poll_interval_s": 0.05,
        }
        settings.update(overrides)
        credentials = BINANCE_CREDENTIALS if self.exchange == "binance" else COINBASE_CREDENTIALS
        venue = CcxtVenue(CcxtTradingConfig(**settings), credentials=credentials)
        venue.set_listener(self._collect)
        venue.exchange.timeout_on_exit = 0  # ccxt waits 250 ms on close (for TLS); plain HTTP here
        self.venues.append(venue)
        return venue

    async def _collect(self, report: VenueReport) -> None:
        self.reports.append(report)

    def fills(self, coid: str | None = None) -> list[Fill]:
        return [
            r
            for r in self.reports
            if isinstance(r, Fill) and (coid is None or r.client_order_id == coid)
        ]

    def events(self, coid: str | None = None) -> list[OrderStatus]:
        return [
            r.status
            for r in self.reports
            if isinstance(r, OrderEvent) and (coid is None or r.client_order_id == coid)
        ]

    def kinds(self, coid: str) -> list[str]:
        """The reports of `coid` in order: status values and ``fill``."""
        return [
            "fill" if isinstance(r, Fill) else r.status.value
            for r in self.reports
            if r.client_order_id == coid
        ]


@pytest.fixture(params=["binance", "coinbase"])
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    fake_cls = FakeBinanceTrading if request.param == "binance" else FakeCoinbaseTrading
    async with fake_cls() as fake:
        env = Env(request.param, fake)
        try:
            yield env
        finally:
            for venue in env.venues:
                await venue.close()


_SEQ = iter(range(1_000_000))


def make_order(
    symbol: str,
    *,
    side: Side = Side.BUY,
    quantity: str = "0.3",
    price: str | None = "100",
    order_type: OrderType = OrderType.LIMIT,
    tif: TimeInForce = TimeInForce.GTC,
    timestamp: dt.datetime | None = None,
) -> Order:
    signal = ids.signal_id("strat-a", symbol, time.time_ns(), next(_SEQ))
    coid = ids.client_order_id(signal)
    return Order(
        order_id=ids.order_id(coid),
        client_order_id=coid,
        symbol=symbol,
        side=side,
        order_type=order_type,
        quantity=Decimal(quantity),
        price=Decimal(price) if price is not None and order_type is OrderType.LIMIT else None,
        time_in_force=tif,
        strategy_id="strat-a",
        signal_id=signal,
        timestamp=timestamp or dt.datetime.now(dt.UTC),
    )


# --- the happy path ---------------------------------------------------------------------------


async def test_submit_is_accepted_and_filled_with_the_venues_trade(env: Env) -> None:
    venue = env.venue()
    assert isinstance(venue, Venue)
    assert (venue.name, venue.paper, venue.poll_interval_s) == (env.exchange, True, 0.05)
    order = make_order(env.symbol)
    await venue.submit(order)

    assert env.kinds(order.client_order_id) == ["accepted", "fill"]
    (fill,) = env.fills()
    trade = env.fake.fills[0]
    quote = env.symbol.split("/")[1]
    assert fill.trade_id == trade.trade_id
    assert fill.fill_id == ids.fill_id(env.exchange, trade.trade_id)
    assert fill.order_id == ids.order_id(order.client_order_id) == order.order_id
    assert (fill.symbol, fill.side, fill.price, fill.quantity) == (
        env.symbol,
        Side.BUY,
        Decimal("100"),
        Decimal("0.3"),
    )
    assert (fill.fee, fill.fee_currency, fill.liquidity) == (
        Decimal("0.03"),
        quote,
        Liquidity.TAKER,
    )
    assert (fill.venue, fill.strategy_id) == (env.exchange, "strat-a")
    assert env.fake.create_count[order.client_order_id] == 1

    # What was sent: the order's own decimal strings and the client order id.
    (sent,) = env.fake.requests_to(env.create_path, "POST")
    if env.exchange == "binance":
        assert (sent.param("newClientOrderId"), sent.param("quantity"), sent.param("price")) == (
            order.client_order_id,
            "0.3",
            "100",
        )
        assert (sent.param("timeInForce"), sent.param("type")) == ("GTC", "LIMIT")
    else:
        body = sent.json()
        assert body["client_order_id"] == order.client_order_id
        assert body["order_configuration"] == {
            "limit_limit_gtc": {"base_size": "0.3", "limit_price": "100", "post_only": False}
        }

    await venue.poll()  # nothing open any more: nothing asked, nothing new
    assert len(env.reports) == 2
    assert venue.stats()["open"] == 0


async def test_partial_fills_are_reported_by_poll_once_each(env: Env) -> None:
    env.fake.policy, env.fake.parts = "partial", 3
    venue = env.venue()
    order = make_order(env.symbol)
    await venue.submit(order)
    assert env.kinds(order.client_order_id) == ["accepted", "fill"]

    await venue.poll()
    await venue.poll()
    assert len(env.fills()) == 1  # nothing new at the venue: nothing reported

    env.fake.advance(order.client_order_id)
    await venue.poll()
    await venue.poll()
    env.fake.advance(order.client_order_id)
    await venue.poll()
    await venue.poll()

    fills = env.fills()
    assert [f.trade_id for f in fills] == [f.trade_id for f in env.fake.fills]
    assert len({f.trade_id for f in fills}) == 3
    assert sum(f.quantity for f in fills) == order.quantity
    assert [f.liquidity for f in fills] == [Liquidity.TAKER, Liquidity.MAKER, Liquidity.MAKER]
    assert env.events() == [OrderStatus.ACCEPTED]  # filled follows from the fills
    polls_before = len(env.fake.requests)
    await venue.poll()
    assert len(env.fake.requests) == polls_before  # done: not polled any more


async def test_poll_reports_a_cancel_made_at_the_venue(env: Env) -> None:
    env.fake.policy = "rest"
    venue = env.venue()
    order = make_order(env.symbol)
    await venue.submit(order)
    env.fake.cancel(env.fake.order(order.client_order_id))
    await venue.poll()
    await venue.poll()
    assert env.kinds(order.client_order_id) == ["accepted", "canceled"]


async def test_market_order_fills_at_the_venues_price(env: Env) -> None:
    env.fake.prices[env.fake.venue_symbol(env.symbol)] = Decimal("101.5")
    venue = env.venue()
    order = make_order(env.symbol, order_type=OrderType.MARKET, quantity="0.25")
    await venue.submit(order)
    (fill,) = env.fills()
    assert (fill.price, fill.quantity) == (Decimal("101.5"), Decimal("0.25"))
    (sent,) = env.fake.requests_to(env.create_path, "POST")
    if env.exchange == "binance":
        assert (sent.param("type"), sent.param("quantity"), sent.param("price")) == (
            "MARKET",
            "0.25",
            None,
        )
    else:  # a base-sized market buy, not ccxt's quote-sized one
        assert sent.json()["order_configuration"] == {"market_market_ioc": {"base_size": "0.25"}}


async def test_ioc_remainder_is_canceled_after_its_fill(env: Env) -> None:
    env.fake.policy, env.fake.parts = "partial", 2
    venue = env.venue()
    order = make_order(env.symbol, quantity="0.4", tif=TimeInForce.IOC)
    await venue.submit(order)
    # Binance ends an IOC remainder EXPIRED, Coinbase CANCELLED; either after the fill.
    end = "expired" if env.exchange == "binance" else "canceled"
    assert env.kinds(order.client_order_id) == ["accepted", "fill", end]
    assert env.fills()[0].quantity == Decimal("0.2")
    await venue.poll()
    assert len(env.reports) == 3


async def test_day_orders(env: Env) -> None:
    env.fake.policy = "rest"
    venue = env.venue()
    at = dt.datetime(2030, 5, 17, 13, 30, tzinfo=dt.UTC)
    order = make_order(env.symbol, tif=TimeInForce.DAY, timestamp=at)
    if env.exchange == "binance":  # binance spot has no DAY: refused before anything is sent
        with pytest.raises(VenueRejectedError, match="no DAY time in force"):
            await venue.submit(order)
        assert env.fake.requests == []
        return
    await venue.submit(order)  # coinbase: good till the next UTC midnight
    (sent,) = env.fake.requests_to(env.create_path, "POST")
    assert sent.json()["order_configuration"] == {
        "limit_limit_gtd": {
            "base_size": "0.3",
            "limit_price": "100",
            "end_time": "2030-05-18T00:00:00.000Z",
            "post_only": False,
        }
    }
    assert env.events() == [OrderStatus.ACCEPTED]


# --- idempotency ------------------------------------------------------------------------------


async def test_a_used_client_order_id_is_adopted_not_placed_twice(env: Env) -> None:
    env.fake.policy, env.fake.parts = "partial", 2
    first = env.venue()
    order = make_order(env.symbol)
    await first.submit(order)
    assert len(env.fills()) == 1
    env.reports.clear()

    second = env.venue()  # a restarted engine: this object has never seen the order
    await second.submit(order)
    assert env.fake.create_count[order.client_order_id] == 1
    assert env.creates() == 2  # the venue was asked, and answered "already placed"
    if env.exchange == "binance":
        assert second.duplicates_adopted == 1  # -2010 Duplicate order sent.
    # What was found is reported: accepted, and the fill it already had.
    assert env.kinds(order.client_order_id) == ["accepted", "fill"]
    assert env.fills()[0].trade_id == env.fake.fills[0].trade_id

    await second.submit(order)  # this object has seen it placed: nothing is sent
    assert env.creates() == 2


async def test_binance_duplicate_that_cannot_be_found_is_unknown() -> None:
    async with FakeBinanceTrading() as fake:
        env = Env("binance", fake)
        venue = env.venue()
        try:
            order = make_order(env.symbol)
            fake.fail_next(
                BINANCE_CREATE,
                400,
                {"code": -2010, "msg": "Duplicate order sent."},
                method="POST",
            )
            with pytest.raises(VenueUnknownError, match="not found yet"):
                await venue.submit(order)
            assert fake.create_count[order.client_order_id] == 0
        finally:
            await venue.close()


async def test_coinbase_duplicate_failure_reason_is_adopted() -> None:
    async with FakeCoinbaseTrading(policy="rest") as fake:
        env = Env("coinbase", fake)
        first, second = env.venue(), env.venue()
        order = make_order(env.symbol)
        await first.submit(order)
        fake.fail_next(
            COINBASE_CREATE,
            200,
            FakeCoinbaseTrading._failure("DUPLICATE_CLIENT_ORDER_ID", "duplicate client order id"),
            method="POST",
        )
        await second.submit(order)  # found by listing the product's orders
        assert second.duplicates_adopted == 1
        assert fake.create_count[order.client_order_id] == 1
        assert env.events() == [OrderStatus.ACCEPTED, OrderStatus.ACCEPTED]
        for venue in env.venues:
            await venue.close()


# --- rate limits ------------------------------------------------------------------------------


async def test_429_is_retried_after_retry_after_then_succeeds(env: Env) -> None:
    venue = env.venue(enable_rate_limit=True)  # ccxt's throttle on: it must not mask the 429
    env.fake.rate_limit_next(env.create_path, count=2, retry_after=0.4, method="POST")
    order = make_order(env.symbol)
    started = time.monotonic()
    await venue.submit(order)
    assert time.monotonic() - started >= 0.8
    assert env.creates() == 3
    assert venue.rate_limit_retries == 2
    assert env.fake.create_count[order.client_order_id] == 1
    assert env.kinds(order.client_order_id) == ["accepted", "fill"]


async def test_429_exhausted_is_rejected(env: Env) -> None:
    venue = env.venue(max_retries_429=2)
    env.fake.rate_limit_next(env.create_path, count=3, retry_after=0, method="POST")
    order = make_order(env.symbol)
    with pytest.raises(VenueRejectedError, match="rate limit"):
        await venue.submit(order)
    assert env.creates() == 3
    assert env.fake.create_count[order.client_order_id] == 0

    # A Retry-After beyond max_retry_wait_s is not waited for.
    patient = env.venue(max_retry_wait_s=1.0)
    env.fake.rate_limit_next(env.create_path, count=1, retry_after=60, method="POST")
    started = time.monotonic()
    with pytest.raises(VenueRejectedError):
        await patient.submit(make_order(env.symbol))
    assert time.monotonic() - started < 0.5
    assert env.creates() == 4

    # Binance's 418 (IP ban) is a rate limit too: honoured, retried, then placed.
    env.fake.fail_next(
        env.create_path, 418, {"code": -1003, "msg": "banned"}, headers={"Retry-After": "0"}
    )
    third = make_order(env.symbol)
    await patient.submit(third)
    assert env.fake.create_count[third.client_order_id] == 1


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert retry_after_s({"Retry-After": "3"}) == 3.0
    assert retry_after_s({"retry-after": "0.5"}) == 0.5
    assert retry_after_s({"Retry-After": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0) == 10
    assert retry_after_s({"Retry-After": "soon"}) is None
    assert retry_after_s({}) is None


# --- unknown outcomes -------------------------------------------------------------------------


async def test_timeout_is_unknown_then_the_query_finds_the_order(env: Env) -> None:
    venue = env.venue(timeout_s=0.3)
    env.fake.delay_next(env.create_path, 1.0, method="POST")
    order = make_order(env.symbol)
    with pytest.raises(VenueUnknownError, match="never resubmit"):
        await venue.submit(order)
    assert env.fake.create_count[order.client_order_id] == 1  # it did reach the venue

    state = await venue.query_order(order.client_order_id)
    assert state is not None
    assert (state.client_order_id, state.status, state.filled_quantity) == (
        order.client_order_id,
        OrderStatus.FILLED,
        Decimal("0.3"),
    )
    assert [f.trade_id for f in state.fills] == [env.fake.fills[0].trade_id]
    assert state.venue_order_id == env.fake.order(order.client_order_id).venue_id
    await venue.poll()
    assert env.reports == []  # the query's state carried it all


async def test_5xx_or_a_dropped_connection_after_commit_is_unknown_then_found(env: Env) -> None:
    env.fake.policy = "rest"
    venue = env.venue()
    failed, dropped = make_order(env.symbol), make_order(env.symbols[1])
    env.fake.fail_after_commit(env.create_path, 503, method="POST")
    with pytest.raises(VenueUnknownError):
        await venue.submit(failed)
    env.fake.drop_after_commit(env.create_path, method="POST")
    with pytest.raises(VenueUnknownError):
        await venue.submit(dropped)
    assert venue.unknown == 2

    for order in (failed, dropped):
        state = await venue.query_order(order.client_order_id)
        assert state is not None
        assert state.status is OrderStatus.ACCEPTED
    # Once found, the orders are followed: a fill at the venue comes by poll.
    env.fake.advance(dropped.client_order_id)
    await venue.poll()
    assert [f.client_order_id for f in env.fills()] == [dropped.client_order_id]
    assert env.fake.create_count[failed.client_order_id] == 1


async def test_not_found_shortly_after_submit_is_none_then_found(env: Env) -> None:
    env.fake.invisible_for_s = 0.6
    venue = env.venue()
    order = make_order(env.symbol)
    env.fake.drop_after_commit(env.create_path, method="POST")
    with pytest.raises(VenueUnknownError):
        await venue.submit(order)
    assert await venue.query_order(order.client_order_id) is None
    stranger = env.venue()  # an object that never saw the order looks on every symbol
    assert await stranger.query_order(order.client_order_id) is None
    await venue.poll()  # outcome unknown and not listed: nothing to say yet
    assert env.reports == []

    await asyncio.sleep(0.65)
    state = await stranger.query_order(order.client_order_id)
    assert state is not None
    assert state.status is OrderStatus.FILLED
    state = await venue.query_order(order.client_order_id)
    assert state is not None
    assert len(state.fills) == 1


async def test_5xx_on_a_query_is_unknown_not_none(env: Env) -> None:
    venue = env.venue()
    order = make_order(env.symbol)
    await venue.submit(order)
    path = (
        "/api/v3/order"
        if env.exchange == "binance"
        else f"/api/v3/brokerage/orders/historical/{env.fake.order(order.client_order_id).venue_id}"
    )
    env.fake.fail_after_commit(path, 502, method="GET")
    with pytest.raises(VenueUnknownError):
        await venue.query_order(order.client_order_id)


async def test_insufficient_funds_is_rejected_with_the_venues_message(env: Env) -> None:
    venue = env.venue()
    env.fake.insufficient_funds_next()
    order = make_order(env.symbol)
    with pytest.raises(VenueRejectedError, match=r"(?i)insufficient"):
        await venue.submit(order)
    assert env.fake.create_count[order.client_order_id] == 0
    assert venue.rejected == 1


async def test_an_unknown_symbol_is_rejected_before_sending(env: Env) -> None:
    venue = env.venue()
    with pytest.raises(VenueRejectedError, match="does not trade"):
        await venue.submit(make_order("DOGE/EUR"))
    assert env.fake.requests == []


# --- cancel, listings, fills ------------------------------------------------------------------


async def test_cancel(env: Env) -> None:
    env.fake.policy, env.fake.parts = "partial", 2
    venue = env.venue()
    order = make_order(env.symbol)
    await venue.submit(order)
    await venue.cancel(order.client_order_id)
    assert env.fake.order(order.client_order_id).status == "canceled"
    assert env.kinds(order.client_order_id) == ["accepted", "fill", "canceled"]
    await venue.poll()
    assert len(env.reports) == 3

    # A filled order is left as it is; an unknown one is refused.
    env.fake.policy = "fill"
    filled = make_order(env.symbol)
    await venue.submit(filled)
    await venue.cancel(filled.client_order_id)
    assert env.kinds(filled.client_order_id) == ["accepted", "fill"]
    with pytest.raises(VenueRejectedError, match="no order"):
        await venue.cancel("ql-nosuchorder")

    # An object that never saw an order finds it, cancels it, and reports its fill (which
    # it had not reported) before the cancellation.
    env.fake.policy = "partial"
    resting = make_order(env.symbols[1])
    await venue.submit(resting)
    env.reports.clear()
    await env.venue().cancel(resting.client_order_id)
    assert env.fake.order(resting.client_order_id).status == "canceled"
    assert env.kinds(resting.client_order_id) == ["fill", "canceled"]


async def test_open_orders_lists_every_open_order_with_its_fill(env: Env) -> None:
    env.fake.policy, env.fake.parts = "partial", 2
    venue = env.venue()
    partly = make_order(env.symbol)
    await venue.submit(partly)
    env.fake.policy = "rest"
    resting = make_order(env.symbols[1], side=Side.SELL, quantity="1.5", price="2000")
    await venue.submit(resting)
    env.fake.policy = "fill"
    await venue.submit(make_order(env.symbol))  # filled: not open

    fresh = env.venue()
    states = {s.client_order_id: s for s in await fresh.open_orders()}
    assert set(states) == {partly.client_order_id, resting.client_order_id}
    assert (
        states[partly.client_order_id].status,
        states[partly.client_order_id].filled_quantity,
    ) == (
        OrderStatus.PARTIALLY_FILLED,
        Decimal("0.15"),
    )
    state = states[resting.client_order_id]
    assert (state.symbol, state.side, state.quantity, state.price, state.status) == (
        env.symbols[1],
        Side.SELL,
        Decimal("1.5"),
        Decimal("2000"),
        OrderStatus.ACCEPTED,
    )
    # The listed orders are followed from now on: their fills come by poll (the one this
    # object has not reported yet too), each once.
    env.reports.clear()
    env.fake.advance()
    await fresh.poll()
    await fresh.poll()
    assert sorted(f.client_order_id for f in env.fills()) == sorted(
        [partly.client_order_id, partly.client_order_id, resting.client_order_id]
    )
    assert len({f.trade_id for f in env.fills()}) == 3
    assert env.events() == []  # their state went out with the listing


async def test_fills_since_names_each_fills_order(env: Env) -> None:
    venue = env.venue()
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    orders = [make_order(env.symbol), make_order(env.symbols[1], side=Side.SELL, quantity="2")]
    for order in orders:
        await venue.submit(order)

    fresh = env.venue()
    fills = await fresh.fills_since(start)
    assert [(f.client_order_id, f.order_id, f.side, f.quantity) for f in fills] == [
        (o.client_order_id, o.order_id, o.side, o.quantity) for o in orders
    ]
    assert [f.trade_id for f in fills] == [f.trade_id for f in env.fake.fills]
    assert all(f.venue == env.exchange and f.fee > 0 for f in fills)
    assert await fresh.fills_since(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)) == []
    assert await fresh.positions() is None


async def test_fills_since_pages_through_many_fills_and_days(env: Env) -> None:
    venue = env.venue()
    orders = [make_order(env.symbol, quantity=f"0.{i}") for i in range(1, 6)]
    for order in orders:
        await venue.submit(order)
    fresh = env.venue()
    if env.exchange == "binance":
        fresh.binance_page_size = 2  # walk the trade ids two at a time
    else:
        env.fake.max_page = 2  # coinbase: follow the cursor
    before = len(env.fake.requests)
    fills = await fresh.fills_since(dt.datetime.now(dt.UTC) - dt.timedelta(days=2, hours=1))
    assert [f.client_order_id for f in fills] == [o.client_order_id for o in orders]
    asked = env.fake.requests[before:]
    venue_symbol = env.fake.venue_symbol(env.symbol)
    if env.exchange == "binance":  # two empty days, the day with the trades, then by id
        trades = [r for r in asked if r.path == "/api/v3/myTrades"]
        btc = [(r.param("startTime") is not None, r.param("fromId")) for r in trades
               if r.param("symbol") == venue_symbol]  # fmt: skip
        first = env.fake.fills[0].trade_id
        assert btc == [(True, None)] * 3 + [(False, first), (False, str(int(first) + 2)),
                                            (False, str(int(first) + 4))]  # fmt: skip
    else:
        pages = [r for r in asked if r.path.endswith("/fills")]
        btc = [r.param("cursor") for r in pages if r.params("product_ids") == [venue_symbol]]
        assert btc == [None, "2", "4"]


# --- authentication and configuration ---------------------------------------------------------


async def test_requests_are_authenticated(env: Env) -> None:
    venue = env.venue()
    await venue.submit(make_order(env.symbol))
    (sent,) = env.fake.requests_to(env.create_path, "POST")
    if env.exchange == "binance":
        assert sent.headers["x-mbx-apikey"] == "binance-test-key"
        assert sent.param("signature")
    else:
        token = sent.headers["authorization"].removeprefix("Bearer ")
        header = json.loads(_b64(token.split(".")[0]))
        assert (header["alg"], header["kid"]) == ("ES256", COINBASE_CREDENTIALS["apiKey"])


def _b64(part: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


async def test_binance_paper_is_the_testnet_and_live_is_the_real_api() -> None:
    paper = CcxtVenue(
        CcxtTradingConfig(exchange="binance", symbols=("BTC/USDT",)),
        credentials=BINANCE_CREDENTIALS,
    )
    live = CcxtVenue(
        CcxtTradingConfig(exchange="binance", symbols=("BTC/USDT",), paper=False, live=True),
        credentials=BINANCE_CREDENTIALS,
    )
    try:
        assert paper.paper
        assert not live.paper
        assert paper.exchange.urls["api"]["private"] == "https://testnet.binance.vision/api/v3"
        assert live.exchange.urls["api"]["private"] == "https://api.binance.com/api/v3"
        assert paper.exchange.markets["BTC/USDT"]["id"] == "BTCUSDT"  # seeded, not loaded
    finally:
        await paper.close()
        await live.close()


async def test_coinbase_live_uses_the_real_api() -> None:
    venue = CcxtVenue(
        CcxtTradingConfig(exchange="coinbase", symbols=("BTC/USD",), paper=False, live=True),
        credentials=COINBASE_CREDENTIALS,
    )
    try:
        assert venue.exchange.urls["api"] == {"rest": "https://api.coinbase.com"}
        assert venue.exchange.markets["BTC/USD"]["id"] == "BTC-USD"
    finally:
        await venue.close()


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"exchange": "binance", "paper": False}, "ccxt_trading.live"),
        ({"exchange": "binance", "live": True}, "ccxt_trading.live"),
        ({"exchange": "coinbase"}, "ccxt_trading.paper"),
        ({"exchange": "kraken"}, "ccxt_trading.exchange"),
        ({"exchange": "binance", "symbols": ()}, "ccxt_trading.symbols"),
        ({"exchange": "binance", "symbols": ("BTC/USDT:USDT",)}, "ccxt_trading.symbols"),
        ({"exchange": "binance", "url": "ftp://x"}, "ccxt_trading.url"),
        ({"exchange": "binance", "timeout_s": 0}, "ccxt_trading.timeout_s"),
        ({"exchange": "binance", "max_retries_429": -1}, "ccxt_trading.max_retries_429"),
    ],
)
def test_config_refusals_name_the_key(settings: dict[str, Any], key: str) -> None:
    merged = {"symbols": ("BTC/USDT",), **settings}
    with pytest.raises(ConfigError) as info:
        CcxtTradingConfig(**merged)
    assert info.value.key == key


def test_config_from_toml_like_options() -> None:
    config = msgspec.convert(
        {"exchange": "coinbase", "symbols": ["BTC/USD"], "url": "http://127.0.0.1:1", "name": "cb"},
        CcxtTradingConfig,
    )
    assert (config.venue_name, config.paper, config.poll_interval_s) == ("cb", True, 1.0)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"exchange": "binance", "symbols": ["BTC/USDT"], "sandbox": True},
                        CcxtTradingConfig)  # fmt: skip


async def test_credentials_are_required() -> None:
    config = CcxtTradingConfig(exchange="binance", symbols=("BTC/USDT",))
    with pytest.raises(ConfigError) as info:
        CcxtVenue(config)
    assert info.value.key == "ccxt_trading.credentials"
    with pytest.raises(ConfigError):
        CcxtVenue(config, api_key="k")
    venue = CcxtVenue(config, api_key="key-1", secret=SecretStr("secret-1"))
    try:
        assert (venue.exchange.apiKey, venue.exchange.secret) == ("key-1", "secret-1")
        assert "secret-1" not in repr(venue.config)  # secrets never enter the config
    finally:
        await venue.close()


def test_ids_of_the_fakes_are_deterministic() -> None:
    assert FakeCoinbaseTrading().new_order_id(1) == FakeCoinbaseTrading().new_order_id(1)
    assert uuid.UUID(FakeCoinbaseTrading().new_trade_id(7))
    assert FakeBinanceTrading().new_order_id(1) == "1001"
