"""AlpacaVenue (alpaca-py's TradingClient) against the local fake of Alpaca's trading API."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from quantlab.adapters.alpaca import AlpacaTradingConfig, AlpacaVenue, check_credentials
from quantlab.core import ids
from quantlab.core.enums import Liquidity, OrderStatus, OrderType, Side, TimeInForce
from quantlab.core.errors import ConfigError
from quantlab.core.messages import Fill, Order, OrderEvent
from quantlab.execution.ports import (
    Venue,
    VenueError,
    VenueRejectedError,
    VenueReport,
    VenueUnknownError,
)
from quantlab.testing.fakes.alpaca_trading import START, FakeAlpacaTrading, order_uuid

pytestmark = pytest.mark.filterwarnings(
    "ignore:websockets.legacy is deprecated:DeprecationWarning"  # alpaca-py 0.44 imports it
)

T0 = dt.datetime(2024, 1, 2, 14, 0, tzinfo=dt.UTC)  # our clock: before the fake venue's
SECRET = "test-secret"  # the fake's  # noqa: S105


def order(
    n: int = 1,
    *,
    symbol: str = "AAPL",
    side: Side = Side.BUY,
    qty: str = "2",
    price: str | None = "10.5",
    tif: TimeInForce = TimeInForce.DAY,
) -> Order:
    coid = ids.client_order_id(uuid.UUID(int=n))
    return Order(
        order_id=ids.order_id(coid),
        client_order_id=coid,
        symbol=symbol,
        side=side,
        order_type=OrderType.MARKET if price is None else OrderType.LIMIT,
        quantity=Decimal(qty),
        price=None if price is None else Decimal(price),
        time_in_force=tif,
        strategy_id="strat-1",
        signal_id=uuid.UUID(int=n),
        timestamp=T0,
    )


class Recorder:
    def __init__(self) -> None:
        self.reports: list[VenueReport] = []

    async def __call__(self, report: VenueReport) -> None:
        self.reports.append(report)

    @property
    def fills(self) -> list[Fill]:
        return [r for r in self.reports if isinstance(r, Fill)]

    def statuses(self, coid: str | None = None) -> list[OrderStatus]:
        return [
            r.status
            for r in self.reports
            if isinstance(r, OrderEvent) and coid in (None, r.client_order_id)
        ]

    def kinds(self) -> list[str]:
        return ["fill" if isinstance(r, Fill) else r.status.value for r in self.reports]


@pytest.fixture
def fake() -> Iterator[FakeAlpacaTrading]:
    with FakeAlpacaTrading() as server:
        yield server


def make_venue(
    fake: FakeAlpacaTrading, *, secret: str = SECRET, **config: Any
) -> tuple[AlpacaVenue, Recorder]:
    config.setdefault("timeout_s", 2.0)
    venue = AlpacaVenue(AlpacaTradingConfig(url=fake.url, **config), "test-key", secret)
    recorder = Recorder()
    venue.set_listener(recorder)
    return venue, recorder


# -- config -----------------------------------------------------------------------------------


def test_config_paper_by_default_and_live_only_with_both_flags() -> None:
    cfg = AlpacaTradingConfig()
    assert (cfg.paper, cfg.live, cfg.name, cfg.poll_interval_s) == (True, False, "alpaca", 1.0)
    assert cfg.resolved_url == "https://paper-api.alpaca.markets"
    live = AlpacaTradingConfig(paper=False, live=True)
    assert live.resolved_url == "https://api.alpaca.markets"
    with pytest.raises(ConfigError, match="needs live=true") as err:
        AlpacaTradingConfig(paper=False)
    assert err.value.key == "alpaca_trading.live"
    with pytest.raises(ConfigError, match="needs paper=false"):
        AlpacaTradingConfig(live=True)
    with pytest.raises(ConfigError) as err:
        AlpacaTradingConfig(timeout_s=0)
    assert err.value.key == "alpaca_trading.timeout_s"
    with pytest.raises(ConfigError, match="http"):
        AlpacaTradingConfig(url="127.0.0.1:8080")
    with pytest.raises(ConfigError, match=r"\[1, 100\]"):
        AlpacaTradingConfig(page_size=500)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"paper": True, "sandbox": True}, AlpacaTradingConfig)


def test_credentials_of_the_other_environment_are_refused() -> None:
    check_credentials("PKTEST1234567890ABCD", paper=True)
    check_credentials("AKTEST1234567890ABCD", paper=False)
    check_credentials("test-key", paper=True)  # an unknown prefix is not judged
    with pytest.raises(ConfigError, match="live key id") as err:
        check_credentials("AKTEST1234567890ABCD", paper=True)
    assert err.value.key == "QUANTLAB_ALPACA_API_KEY"
    assert "AKTEST1234567890ABCD" not in str(err.value)  # never echoed
    with pytest.raises(ConfigError, match="paper key id"):
        check_credentials("PKTEST1234567890ABCD", paper=False)
    with pytest.raises(ConfigError, match="missing"):
        check_credentials("", paper=True)
    with pytest.raises(ConfigError, match="live key id"):
        AlpacaVenue(AlpacaTradingConfig(), "AKTEST1234567890ABCD", "secret")
    with pytest.raises(ConfigError, match="paper key id"):
        AlpacaVenue(AlpacaTradingConfig(paper=False, live=True), "PKTEST1234567890ABCD", "s")


# -- submit and fills -------------------------------------------------------------------------


async def test_submit_then_poll_reports_the_fill_once(fake: FakeAlpacaTrading) -> None:
    venue, rec = make_venue(fake)
    assert isinstance(venue, Venue)
    assert (venue.name, venue.paper, venue.poll_interval_s) == ("alpaca", True, 1.0)
    o = order()
    await venue.submit(o)
    assert rec.kinds() == ["accepted"]
    (post,) = fake.requests_to("/v2/orders", "POST")
    assert post.body == {
        "symbol": "AAPL",
        "qty": "2",
        "side": "buy",
        "type": "limit",
        "time_in_force": "day",
        "client_order_id": o.client_order_id,
        "limit_price": "10.5",
    }
    await venue.poll()
    assert rec.kinds() == ["accepted", "fill"]
    (fill,) = rec.fills
    activity = fake.fills[0]
    assert fill.trade_id == activity["id"]
    assert "::" in fill.trade_id
    assert fill.fill_id == ids.fill_id("alpaca", activity["id"])
    assert fill.order_id == ids.order_id(o.client_order_id) == o.order_id
    assert (fill.client_order_id, fill.symbol, fill.side) == (o.client_order_id, "AAPL", Side.BUY)
    assert (fill.price, fill.quantity) == (Decimal("10.5"), Decimal(2))
    assert (fill.fee, fill.fee_currency, fill.liquidity) == (Decimal(0), "USD", Liquidity.TAKER)
    assert (fill.venue, fill.strategy_id) == ("alpaca", "strat-1")
    assert fill.timestamp > START
    # filled and reported: the order is no longer followed, a poll asks nothing
    before = len(fake.requests)
    await venue.poll()
    assert len(fake.requests) == before
    assert rec.kinds() == ["accepted", "fill"]
    assert venue.stats()["fills_delivered"] == 1


async def test_partial_fills_arrive_through_polls_each_once(fake: FakeAlpacaTrading) -> None:
    fake.fill_mode, fake.parts = "partial", 3
    venue, rec = make_venue(fake)
    o = order(qty="3")
    await venue.submit(o)
    await venue.poll()
    await venue.poll()  # nothing new: nothing reported twice
    assert rec.kinds() == ["accepted", "fill"]
    fake.advance()
    await asyncio.gather(venue.poll(), venue.poll())  # concurrent polls still report once
    fake.advance()
    await venue.poll()
    await venue.poll()
    assert rec.kinds() == ["accepted", "fill", "fill", "fill"]
    assert [f.quantity for f in rec.fills] == [Decimal(1)] * 3
    assert len({f.trade_id for f in rec.fills}) == 3
    assert fake.orders[o.client_order_id]["status"] == "filled"
    # activities were read from the last fill on, not from the order's creation each time
    afters = [r.params["after"] for r in fake.requests_to("/v2/account/activities")]
    assert afters == sorted(afters)
    assert afters[0] < afters[-1]


async def test_a_report_the_listener_failed_on_is_reported_again(
    fake: FakeAlpacaTrading,
) -> None:
    fake.fill_mode, fake.parts = "partial", 2
    venue, rec = make_venue(fake)
    o = order(qty="2")
    await venue.submit(o)
    await venue.poll()
    assert rec.kinds() == ["accepted", "fill"]
    fake.advance()  # the second half fills: a fill, then the order is closed
    failed: list[object] = []

    async def failing_once(report: Any) -> None:
        if not failed:
            failed.append(report)
            raise RuntimeError("database is locked")
        await rec(report)

    venue.set_listener(failing_once)
    with pytest.raises(RuntimeError, match="database is locked"):
        await venue.poll()
    await venue.poll()  # the fill the listener failed on comes again, once
    assert rec.kinds() == ["accepted", "fill", "fill"]
    assert len({f.trade_id for f in rec.fills}) == 2


async def test_market_order_and_auto_advance_per_poll(fake: FakeAlpacaTrading) -> None:
    fake.fill_mode, fake.parts, fake.advance_on_poll = "partial", 2, True
    fake.prices["MSFT"] = Decimal("401.25")
    venue, rec = make_venue(fake)
    o = order(2, symbol="MSFT", price=None, tif=TimeInForce.GTC, qty="4")
    await venue.submit(o)
    post = fake.requests_to("/v2/orders", "POST")[0].body
    assert post["type"] == "market"
    assert "limit_price" not in post
    await venue.poll()  # the listing advances the second half first
    assert rec.kinds() == ["accepted", "fill", "fill"]
    assert {f.price for f in rec.fills} == {Decimal("401.25")}


# -- idempotency and error outcomes -----------------------------------------------------------


async def test_duplicate_client_order_id_is_adopted_never_resent(fake: FakeAlpacaTrading) -> None:
    o = order()
    first, _ = make_venue(fake)
    await first.submit(o)  # a previous run placed it (and it filled)
    venue, rec = make_venue(fake)  # after a restart
    await venue.submit(o)
    assert fake.create_count[o.client_order_id] == 1
    assert len(fake.requests_to("/v2/orders", "POST")) == 2  # the second got the 422
    assert fake.requests_to("/v2/orders:by_client_order_id")[-1].params == {
        "client_order_id": o.client_order_id
    }
    assert rec.kinds() == ["accepted", "fill"]  # what was found, reported
    assert rec.fills[0].trade_id == fake.fills[0]["id"]


async def test_429_waits_for_retry_after_then_succeeds(fake: FakeAlpacaTrading) -> None:
    venue, rec = make_venue(fake, max_retries_429=3)
    fake.fail_next("/v2/orders", 429, headers={"Retry-After": "0.2"}, times=2, method="POST")
    started = time.monotonic()
    await venue.submit(order())
    waited = time.monotonic() - started
    assert waited >= 0.4  # two waits of Retry-After, not alpaca-py's fixed 3 s
    assert waited < 2.5
    assert len(fake.requests_to("/v2/orders", "POST")) == 3
    assert fake.create_count[order().client_order_id] == 1
    assert venue.retries_429 == 2
    assert rec.kinds() == ["accepted"]


async def test_429_exhausted_or_too_long_is_a_rejection(fake: FakeAlpacaTrading) -> None:
    venue, rec = make_venue(fake, max_retries_429=1, max_retry_wait_s=5.0)
    fake.fail_next("/v2/orders", 429, headers={"Retry-After": "0.1"}, times=5, method="POST")
    with pytest.raises(VenueRejectedError, match="429"):
        await venue.submit(order(1))
    assert len(fake.requests_to("/v2/orders", "POST")) == 2
    assert not fake.create_count
    # a Retry-After beyond max_retry_wait_s is not waited for
    fake.fail_next("/v2/orders", 429, headers={"Retry-After": "120"}, method="POST")
    started = time.monotonic()
    with pytest.raises(VenueRejectedError, match="not taken"):
        await venue.submit(order(2))
    assert time.monotonic() - started < 1.0
    assert rec.reports == []
    before = len(fake.requests)
    await venue.poll()  # rejected orders are not followed
    assert len(fake.requests) == before


async def test_timeout_is_unknown_and_query_resolves_it(fake: FakeAlpacaTrading) -> None:
    venue, rec = make_venue(fake, timeout_s=0.2)
    o = order()
    fake.delay_next(0.8)  # processed at once, answered too late
    started = time.monotonic()
    with pytest.raises(VenueUnknownError, match="outcome unknown"):
        await venue.submit(o)
    assert time.monotonic() - started < 0.7
    assert len(fake.requests_to("/v2/orders", "POST")) == 1  # never resent
    state = await venue.query_order(o.client_order_id)
    assert state is not None
    assert state.venue_order_id == order_uuid(o.client_order_id)
    assert (state.status, state.filled_quantity) == (OrderStatus.FILLED, Decimal(2))
    assert [f.trade_id for f in state.fills] == [fake.fills[0]["id"]]
    assert fake.create_count[o.client_order_id] == 1
    await venue.poll()  # the fills returned in the state count as delivered
    assert rec.fills == []


@pytest.mark.parametrize("failure", [504, 500, "drop"])
async def test_failure_after_commit_is_unknown_then_found(
    fake: FakeAlpacaTrading, failure: int | str
) -> None:
    fake.fill_mode = "rest"
    venue, rec = make_venue(fake)
    o = order()
    fake.commit_then_fail(failure)  # type: ignore[arg-type]
    with pytest.raises(VenueUnknownError):
        await venue.submit(o)
    # alpaca-py's own retry of 504 is off: one POST, the order exists once
    assert len(fake.requests_to("/v2/orders", "POST")) == 1
    assert fake.create_count[o.client_order_id] == 1
    state = await venue.query_order(o.client_order_id)
    assert state is not None
    assert state.status is OrderStatus.ACCEPTED
    fake.fill(o.client_order_id)
    await venue.poll()  # an unknown submission is followed: its fill arrives
    assert rec.kinds() == ["fill"]  # ACCEPTED went out in the state, not again


async def test_5xx_before_processing_is_unknown_not_rejected(fake: FakeAlpacaTrading) -> None:
    venue, _rec = make_venue(fake)
    o = order()
    fake.fail_next("/v2/orders", 503, method="POST")
    with pytest.raises(VenueUnknownError, match="503"):
        await venue.submit(o)
    assert await venue.query_order(o.client_order_id) is None
    assert not fake.create_count


async def test_not_found_shortly_after_submission_then_found(fake: FakeAlpacaTrading) -> None:
    venue, rec = make_venue(fake)
    o = order()
    fake.invisible_for(0.3)
    fake.commit_then_fail(504)
    with pytest.raises(VenueUnknownError):
        await venue.submit(o)
    assert await venue.query_order(o.client_order_id) is None  # not proof of loss
    await venue.poll()  # still followed, not given up
    assert rec.reports == []
    await asyncio.sleep(0.35)
    state = await venue.query_order(o.client_order_id)
    assert state is not None
    assert state.status is OrderStatus.FILLED
    assert fake.create_count[o.client_order_id] == 1


async def test_never_found_order_is_dropped_after_the_grace(fake: FakeAlpacaTrading) -> None:
    venue, _rec = make_venue(fake, not_found_grace_s=0.1)
    o = order()
    fake.fail_next("/v2/orders", 504, method="POST")  # not processed at all
    with pytest.raises(VenueUnknownError):
        await venue.submit(o)
    await venue.poll()
    await asyncio.sleep(0.15)
    await venue.poll()
    assert venue.stats()["followed"] == 0
    before = len(fake.requests)
    await venue.poll()
    assert len(fake.requests) == before


async def test_4xx_refusals_are_rejections_with_the_venue_message(
    fake: FakeAlpacaTrading,
) -> None:
    venue, rec = make_venue(fake)
    fake.buying_power = Decimal(100)
    with pytest.raises(VenueRejectedError, match="insufficient buying power"):
        await venue.submit(order(1, qty="20", price="10"))
    with pytest.raises(VenueRejectedError, match="invalid time_in_force"):
        await venue.submit(order(2, symbol="BTC/USD", qty="0.001", price="40000"))
    fake.fail_next("/v2/orders", 422, {"code": 40010001, "message": "qty too precise"})
    with pytest.raises(VenueRejectedError, match="qty too precise"):
        await venue.submit(order(3, qty="1", price="10"))
    assert not fake.create_count
    assert rec.reports == []


async def test_bad_credentials_give_a_clear_error(fake: FakeAlpacaTrading) -> None:
    venue, _rec = make_venue(fake, secret=SECRET[::-1])
    with pytest.raises(VenueRejectedError, match=r"401.*credentials"):
        await venue.submit(order())
    with pytest.raises(VenueError, match=r"401.*QUANTLAB_ALPACA_API_KEY"):
        await venue.check_account()
    with pytest.raises(VenueError, match="401"):
        await venue.query_order(order().client_order_id)
    good, _ = make_venue(fake)
    account = await good.check_account()
    assert account["status"] == "ACTIVE"


async def test_client_killed_mid_flight_then_adopted(fake: FakeAlpacaTrading) -> None:
    venue, _ = make_venue(fake)
    o = order()
    fake.hold_responses()
    task = asyncio.create_task(venue.submit(o))
    deadline = time.monotonic() + 5
    while fake.held < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert fake.held == 1
    assert fake.create_count[o.client_order_id] == 1
    task.cancel()  # the engine dies with the request in flight
    with pytest.raises(asyncio.CancelledError):
        await task
    fake.release()
    restarted, rec = make_venue(fake)
    state = await restarted.query_order(o.client_order_id)
    assert state is not None
    assert state.status is OrderStatus.FILLED
    await restarted.submit(o)  # even a resubmission cannot place it twice
    assert fake.create_count[o.client_order_id] == 1
    assert rec.fills == []  # its fill went out in the state already


# -- cancel, IOC, expiry ----------------------------------------------------------------------


async def test_cancel_then_poll_reports_canceled(fake: FakeAlpacaTrading) -> None:
    fake.fill_mode = "rest"
    venue, rec = make_venue(fake)
    o = order(tif=TimeInForce.GTC)
    await venue.submit(o)
    await venue.cancel(o.client_order_id)
    (delete,) = fake.requests_to("/v2/orders/", "DELETE")
    assert delete.path == f"/v2/orders/{order_uuid(o.client_order_id)}"
    await venue.poll()
    assert rec.statuses() == [OrderStatus.ACCEPTED, OrderStatus.CANCELED]
    await venue.cancel(o.client_order_id)  # already closed (422): no error
    with pytest.raises(VenueUnknownError, match="no such order"):
        await venue.cancel("ql-never-sent")
    # an order only known to Alpaca (another run) is looked up by client order id first
    other = order(2, tif=TimeInForce.GTC)
    placer, _ = make_venue(fake)
    await placer.submit(other)
    await venue.cancel(other.client_order_id)
    await venue.poll()
    assert rec.statuses(other.client_order_id) == [OrderStatus.ACCEPTED, OrderStatus.CANCELED]


async def test_ioc_remainder_is_canceled_after_its_fill(fake: FakeAlpacaTrading) -> None:
    fake.fill_mode, fake.parts = "partial", 2
    venue, rec = make_venue(fake)
    o = order(qty="4", tif=TimeInForce.IOC)
    await venue.submit(o)
    assert fake.orders[o.client_order_id]["status"] == "canceled"
    await venue.poll()
    assert rec.kinds() == ["accepted", "fill", "canceled"]  # the fill before the close
    assert rec.fills[0].quantity == Decimal(2)


async def test_closing_status_waits_for_lagging_fill_activities(fake: FakeAlpacaTrading) -> None:
    fake.fill_mode = "rest"
    venue, rec = make_venue(fake)
    o = order(qty="4", tif=TimeInForce.GTC)
    await venue.submit(o)
    fake.fill(o.client_order_id, Decimal(1))
    activity = fake.fills.pop()  # the activity is not listed yet
    fake.expire(o.client_order_id)
    await venue.poll()
    assert rec.kinds() == ["accepted"]  # EXPIRED held back: a fill is missing
    fake.fills.append(activity)
    await venue.poll()
    assert rec.kinds() == ["accepted", "fill", "expired"]


async def test_rejected_by_the_venue_later(fake: FakeAlpacaTrading) -> None:
    fake.fill_mode = "rest"
    venue, rec = make_venue(fake)
    o = order(tif=TimeInForce.GTC)
    await venue.submit(o)
    fake.reject(o.client_order_id)
    await venue.poll()
    assert rec.statuses() == [OrderStatus.ACCEPTED, OrderStatus.REJECTED]


# -- reconciliation reads ---------------------------------------------------------------------


async def test_open_orders_and_their_later_fills(fake: FakeAlpacaTrading) -> None:
    fake.fill_mode = "rest"
    placer, _ = make_venue(fake)
    a, b, c = order(1, qty="4", tif=TimeInForce.GTC), order(2), order(3, symbol="MSFT")
    for o in (a, b, c):
        await placer.submit(o)
    fake.fill(a.client_order_id, Decimal(1), Decimal("10.25"))
    fake.fill(b.client_order_id)  # closed: not listed
    venue, rec = make_venue(fake)  # after a restart
    states = {s.client_order_id: s for s in await venue.open_orders()}
    assert set(states) == {a.client_order_id, c.client_order_id}
    sa = states[a.client_order_id]
    assert (sa.status, sa.quantity, sa.filled_quantity) == (
        OrderStatus.PARTIALLY_FILLED,
        Decimal(4),
        Decimal(1),
    )
    assert sa.price == Decimal("10.5")
    assert sa.side is Side.BUY
    assert sa.symbol == "AAPL"
    assert [(f.quantity, f.price) for f in sa.fills] == [(Decimal(1), Decimal("10.25"))]
    assert sa.fills[0].order_id == ids.order_id(a.client_order_id)
    assert states[c.client_order_id].status is OrderStatus.ACCEPTED
    assert states[c.client_order_id].fills == ()
    fake.fill(a.client_order_id)
    await venue.poll()  # listed orders are followed; the listed fill is not repeated
    assert rec.kinds() == ["fill"]
    assert rec.fills[0].quantity == Decimal(3)


async def test_fills_since_pages_through_activities(fake: FakeAlpacaTrading) -> None:
    fake.fill_mode = "rest"
    placer, _ = make_venue(fake)
    orders = [order(n, qty="5", tif=TimeInForce.GTC) for n in range(1, 3)]
    for o in orders:
        await placer.submit(o)
    for _ in range(3):
        for o in orders:
            fake.fill(o.client_order_id, Decimal(1))
    since = dt.datetime.fromisoformat(fake.fills[1]["transaction_time"])
    venue, rec = make_venue(fake, page_size=2)  # knows none of the orders
    fills = await venue.fills_since(since)
    assert [f.trade_id for f in fills] == [a["id"] for a in fake.fills[1:]]
    assert all(f.timestamp >= since for f in fills)
    by_activity = {a["id"]: a for a in fake.fills}
    for f in fills:
        coid = next(o.client_order_id for o in orders if order_uuid(o.client_order_id)
                    == by_activity[f.trade_id]["order_id"])  # fmt: skip
        assert f.client_order_id == coid
        assert f.order_id == ids.order_id(coid)
        assert f.strategy_id == ""  # not submitted by this object
    pages = fake.requests_to("/v2/account/activities/FILL")
    # the window starts a second early (Alpaca's `after` has second precision), pages of 2
    assert pages[0].params["after"] == "2024-01-02T15:00:03Z" < fake.fills[1]["transaction_time"]
    assert [p.params.get("page_token") for p in pages] == [
        None,
        fake.fills[2]["id"],
        fake.fills[4]["id"],
    ]
    assert pages[0].params["direction"] == "asc"
    assert pages[0].params["page_size"] == "2"
    # the unknown orders were fetched by id once each, to learn their client order ids
    assert len(fake.requests_to("/v2/orders/", "GET")) == 2
    assert rec.reports == []  # fills_since returns, it does not report


async def test_positions_are_signed_and_crypto_symbols_have_a_slash(
    fake: FakeAlpacaTrading,
) -> None:
    venue, _ = make_venue(fake)
    await venue.submit(order(1, qty="3"))
    await venue.submit(order(2, side=Side.SELL, qty="1"))
    await venue.submit(order(3, symbol="MSFT", side=Side.SELL, qty="2", price="300"))
    await venue.submit(order(4, symbol="BTC/USD", qty="0.5", price="40000", tif=TimeInForce.GTC))
    held = await venue.positions()
    assert held == {"AAPL": Decimal(2), "MSFT": Decimal(-2), "BTC/USD": Decimal("0.5")}
    raw = {p["symbol"] for p in fake._positions()}
    assert raw == {"AAPL", "MSFT", "BTCUSD"}  # as Alpaca lists them
