"""`AlpacaVenue`: the `Venue` port over Alpaca's trading API (alpaca-py's `TradingClient`).

Orders go out as limit or market orders with our ``client_order_id``; reports come back by
polling (Alpaca's REST API has no push here): `poll` lists the open orders, looks up the ones
that left the list, and reads the account's FILL activities for the executions. Every REST call
runs alpaca-py's synchronous client in a worker thread (`asyncio.to_thread`).

How each outcome of a submission is read (the `Venue` contract):

* **200**: the order is at Alpaca; its status (``accepted``, ``pending_new``...) is reported.
* **422 "client_order_id must be unique"** (an `APIError` with status 422 whose message names
  the client order id): the order is already there (an earlier attempt landed). It is looked up
  with `get_order_by_client_id` and adopted (its status and fills are reported), never sent
  again. If the lookup does not find it yet, the outcome is unknown (`VenueUnknownError`).
* **429**: not processed. Retried after the ``Retry-After`` header (seconds or an HTTP date; else
  Alpaca's documented ``X-RateLimit-Reset`` epoch; else an exponential backoff from 1 s), at
  most `max_retries_429` times, and only while the wait is within `max_retry_wait_s` (an order
  held longer is stale); then `VenueRejectedError`, since the order was never taken.
* **timeout, 5xx, 408, a dropped or refused connection, an unreadable answer**:
  `VenueUnknownError`; the engine resolves the order with `query_order` and never resubmits.
* **any other 4xx** (403 insufficient buying power, 422 invalid field, 401 bad keys):
  `VenueRejectedError` with Alpaca's message.

alpaca-py's own retry is switched off. Its `RESTClient` retries every status in
``retry_exception_codes`` (default ``[429, 504]``) up to 3 times after a fixed 3 s
(``retry_wait_seconds``), ignoring ``Retry-After``, on every method, ``POST /v2/orders``
included: a 504 after the order landed would be resent blindly and come back as the 422 above,
and the 429 waits would ignore the venue. The constructor cannot turn this off (a
``retry_attempts`` of 0 means "use the default"), so the venue sets the client's ``_retry`` to 0
and ``_retry_codes`` to ``[]`` after construction (alpaca-py 0.44; the tests check that a 504
reaches the server once and that a 429 waits for ``Retry-After``). alpaca-py also sets no
timeout on its `requests.Session`: the venue replaces the session with one whose every request
gets ``timeout=timeout_s`` and whose adapters never retry (urllib3 ``max_retries=0``).

Order quantities and prices are sent as exact decimal strings (Alpaca's API accepts string
numbers) in the body alpaca-py's `LimitOrderRequest` / `MarketOrderRequest` validate; those
models hold floats, which would round a `Decimal` with more than 15 significant digits.

Fills are Alpaca's FILL account activities (``GET /v2/account/activities/FILL``, ``after``,
``direction=asc``, ``page_size``, ``page_token`` = the last id of the previous page), one `Fill`
each: ``trade_id`` = the activity id, fee 0 in USD (Alpaca charges no commission on equities;
crypto fees are separate CFEE activities and are not attached to fills), liquidity TAKER
(Alpaca does not say), ``order_id = ids.order_id(client_order_id)``. An activity names Alpaca's
order id; the venue maps it to our client order id from the orders it has seen and fetches
unknown ones by id. Activities can lag the order's ``filled_qty``: a terminal status
(canceled, expired) is held back until the listed fills add up to ``filled_qty``, for at most
`fills_wait_s`, so that a partial fill is never reported after its order was closed.

Which orders `poll` follows: those this object submitted, looked up (`query_order`, `cancel`)
or listed (`open_orders`, so orders adopted at reconciliation keep reporting), until they are
closed and all their fills are reported. An order it has never found (an unknown submission
outcome) is looked up by client order id on each poll and dropped after `not_found_grace_s`
(the engine's resolver asks about it from then on). An order Alpaca has acknowledged (its
answer or a lookup named it) is never dropped for being "not found": Alpaca's reads can lag
its writes, and an order that reappears after any grace still trades; it is looked up by id
on every poll until it is found and closed.
Fills returned inside a `VenueOrderState` count as delivered: `poll` does not report them
again. Each fill is reported at most once per venue object.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Final, TypeVar

import msgspec
import requests
from requests.adapters import HTTPAdapter

from quantlab.core import ids
from quantlab.core.enums import Liquidity, OrderStatus, OrderType, Side
from quantlab.core.errors import ConfigError
from quantlab.core.messages import Fill, Order, OrderEvent
from quantlab.execution.ports import (
    VenueError,
    VenueListener,
    VenueOrderState,
    VenueRejectedError,
    VenueReport,
    VenueUnknownError,
)
from quantlab.ingest.ratelimit import retry_after_s

with warnings.catch_warnings():
    # alpaca-py 0.44 imports websockets.legacy, deprecated since websockets 14: not ours to fix.
    warnings.filterwarnings(
        "ignore", message=r"websockets\.legacy is deprecated", category=DeprecationWarning
    )
    from alpaca.common.enums import BaseURL, Sort
    from alpaca.common.exceptions import APIError
    from alpaca.trading.client import TradingClient
    from alpaca.trading.enums import OrderSide, QueryOrderStatus
    from alpaca.trading.enums import TimeInForce as AlpacaTimeInForce
    from alpaca.trading.models import Order as AlpacaOrder
    from alpaca.trading.requests import GetOrdersRequest, LimitOrderRequest, MarketOrderRequest

log = logging.getLogger(__name__)

T = TypeVar("T")

PAPER_URL: Final = BaseURL.TRADING_PAPER.value
LIVE_URL: Final = BaseURL.TRADING_LIVE.value
ORDERS_PAGE: Final = 500  # Alpaca's maximum `limit` on GET /v2/orders
_CRYPTO_QUOTES: Final = ("USDT", "USDC", "USD", "BTC")  # longest first: BTCUSDT is BTC/USDT

# Alpaca order status -> the status an `OrderEvent` reports (None: fills only).
_OPEN_STATUSES: Final = frozenset(
    {
        "new",
        "accepted",
        "pending_new",
        "accepted_for_bidding",
        "pending_review",
        "held",
        "calculated",
        "stopped",
        "suspended",
        "done_for_day",
        "pending_cancel",
        "pending_replace",
        "partially_filled",
    }
)
_CLOSED_STATUSES: Final = {
    "canceled": OrderStatus.CANCELED,
    "replaced": OrderStatus.CANCELED,  # replaced by another order: this one no longer trades
    "expired": OrderStatus.EXPIRED,
    "rejected": OrderStatus.REJECTED,
}


# -- configuration ---------------------------------------------------------------------------


class AlpacaTradingConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Settings of one Alpaca trading venue (an account: paper or live).

    Parameters
    ----------
    paper, live
        ``paper=True`` (the default) trades on ``paper-api.alpaca.markets``. Real money needs
        both ``paper=False`` and ``live=True``; any other combination is refused.
    url
        Overrides the API host (``None``: Alpaca's paper or live host); tests point it at
        `testing.fakes.alpaca_trading.FakeAlpacaTrading`. No ``/v2`` suffix.
    timeout_s
        Connect and read timeout of every request; a submission that times out is UNKNOWN.
    max_retries_429, max_retry_wait_s
        Retries after a 429 (each after the venue's Retry-After); a wait longer than
        `max_retry_wait_s` is not waited for (the call fails at once).
    poll_interval_s
        How often the engine calls `poll` (Alpaca pushes nothing over REST).
    not_found_grace_s
        How long an order may be "not found" shortly after its submission before it is
        believed absent. The engine applies it (`ExecutionEngine(not_found_grace_s=...)`): give
        it this value; `poll` also stops looking for a never-found order after it.
    fills_wait_s
        How long `poll` holds back a closed order's terminal status while Alpaca's FILL
        activities lag the order's ``filled_qty``.
    page_size
        FILL activities per page (1..100; Alpaca's maximum and default is 100).
    name
        The venue name (in `Fill.venue`, the order store, fill ids).
    """

    paper: bool = True
    live: bool = False
    url: str | None = None
    timeout_s: float = 10.0
    max_retries_429: int = 3
    max_retry_wait_s: float = 10.0
    poll_interval_s: float = 1.0
    not_found_grace_s: float = 10.0
    fills_wait_s: float = 30.0
    page_size: int = 100
    name: str = "alpaca"

    def __post_init__(self) -> None:
        if not self.paper and not self.live:
            raise ConfigError(
                "alpaca_trading.live",
                "paper=false trades real money: it needs live=true as well",
            )
        if self.paper and self.live:
            raise ConfigError(
                "alpaca_trading.live", "live=true needs paper=false (it trades real money)"
            )
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ConfigError("alpaca_trading.url", f"must be an http(s) URL, got {self.url!r}")
        for key in ("timeout_s", "poll_interval_s", "max_retry_wait_s"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"alpaca_trading.{key}", f"must be > 0, got {value!r}")
        for key in ("not_found_grace_s", "fills_wait_s"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"alpaca_trading.{key}", f"must be >= 0, got {value!r}")
        if not 0 <= self.max_retries_429 <= 20:
            raise ConfigError(
                "alpaca_trading.max_retries_429", f"must be in [0, 20], got {self.max_retries_429}"
            )
        if not 1 <= self.page_size <= 100:
            raise ConfigError(
                "alpaca_trading.page_size", f"must be in [1, 100], got {self.page_size}"
            )
        if not self.name or self.name != self.name.strip():
            raise ConfigError("alpaca_trading.name", f"must be a non-blank name, got {self.name!r}")

    @property
    def resolved_url(self) -> str:
        if self.url is not None:
            return self.url.rstrip("/")
        return PAPER_URL if self.paper else LIVE_URL


def check_credentials(key_id: str, paper: bool) -> None:
    """Refuse a paper configuration with live credentials, or the reverse (`ConfigError`).

    What this relies on: Alpaca paper-trading key ids start with ``PK`` and live ones with
    ``AK``. Alpaca's API reference does not state it; it is the convention visible in every
    key the dashboard issues and relied on by public client code (e.g. bots that refuse to
    start unless the key id "begins with PK"). A key id with another prefix (a test key, an
    OAuth or broker key) is not judged here: Alpaca itself answers 401 to a key used on the
    wrong host. The key id is never echoed in the error.
    """
    if not key_id or key_id != key_id.strip():
        raise ConfigError("QUANTLAB_ALPACA_API_KEY", "missing or blank Alpaca API key id")
    prefix = key_id[:2].upper()
    if paper and prefix == "AK":
        raise ConfigError(
            "QUANTLAB_ALPACA_API_KEY",
            "a live key id (AK...) with a paper configuration (paper=true): refused",
        )
    if not paper and prefix == "PK":
        raise ConfigError(
            "QUANTLAB_ALPACA_API_KEY",
            "a paper key id (PK...) with a live configuration (paper=false): refused",
        )


# -- HTTP session ----------------------------------------------------------------------------


class _TimeoutSession(requests.Session):
    """A `requests.Session` that gives every request a timeout and never retries by itself."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self.timeout_s = timeout_s
        self.mount("http://", HTTPAdapter(max_retries=0))
        self.mount("https://", HTTPAdapter(max_retries=0))

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout_s
        return super().request(method, url, *args, **kwargs)


class _RateLimitedError(Exception):
    def __init__(self, exc: APIError, attempts: int, wait_s: float) -> None:
        super().__init__(str(exc))
        self.exc, self.attempts, self.wait_s = exc, attempts, wait_s


# -- wire shapes -----------------------------------------------------------------------------


class _Activity(msgspec.Struct, kw_only=True):
    """A FILL account activity as Alpaca documents it (numbers as strings)."""

    id: str
    transaction_time: dt.datetime
    price: Decimal
    qty: Decimal
    side: str
    symbol: str
    order_id: str
    activity_type: str = "FILL"
    type: str = "fill"
    leaves_qty: Decimal | None = None
    cum_qty: Decimal | None = None
    order_status: str | None = None


@dataclass
class _Tracked:
    """What the venue knows and has said about one order."""

    client_order_id: str
    order: Order | None = None  # our intent, when this object submitted it
    symbol: str = ""
    side: Side | None = None
    venue_order_id: str | None = None
    created_at: dt.datetime | None = None
    reported: OrderStatus | None = None  # the last status told (listener or a returned state)
    delivered_qty: Decimal = Decimal(0)
    last_fill_at: dt.datetime | None = None
    open: bool = True  # poll follows it
    missing_since: float | None = None  # monotonic: not found by lookups since
    fills_late_since: float | None = None  # monotonic: closed but fills not all listed yet
    fills: dict[str, Fill] = field(default_factory=dict)  # trade_id -> Fill, every one seen


# -- the venue -------------------------------------------------------------------------------


class AlpacaVenue:
    """An Alpaca account as a quantlab `Venue` (see the module doc for the semantics).

    Parameters
    ----------
    config
        Paper/live, host, timeouts, retries, polling.
    api_key, secret_key
        The account's key id and secret (`config.Secrets.alpaca_api_key` /
        ``alpaca_api_secret``). `check_credentials` refuses a key of the other environment.
    client
        A ready `TradingClient` (tests); by default one is built from the config. Its retry
        and session are replaced either way.

    Examples
    --------
    >>> venue = AlpacaVenue(AlpacaTradingConfig(), key, secret)                    # doctest: +SKIP
    >>> venue.set_listener(engine.on_report)                                       # doctest: +SKIP
    >>> await venue.submit(order)                                                  # doctest: +SKIP
    """

    def __init__(
        self,
        config: AlpacaTradingConfig,
        api_key: str,
        secret_key: str,
        *,
        client: TradingClient | None = None,
    ) -> None:
        check_credentials(api_key, config.paper)
        if not secret_key:
            raise ConfigError("QUANTLAB_ALPACA_API_SECRET", "missing Alpaca API secret")
        self.config = config
        self.name = config.name
        self.paper = config.paper
        self.poll_interval_s = config.poll_interval_s
        self._client = client or TradingClient(
            api_key, secret_key, paper=config.paper, url_override=config.resolved_url
        )
        # See the module doc: alpaca-py's blind 429/504 retry off, a real timeout on.
        self._client._retry = 0
        self._client._retry_codes = []
        self._session = _TimeoutSession(config.timeout_s)
        self._client._session = self._session
        self._listener: VenueListener | None = None
        self._orders: dict[str, _Tracked] = {}  # client_order_id -> state
        self._coid_by_venue_id: dict[str, str] = {}
        self._delivered: set[str] = set()  # trade ids reported or returned
        self._report_lock = asyncio.Lock()
        self.requests = 0
        self.retries_429 = 0
        self.bad_activities = 0
        self.unmapped_fills = 0

    def __repr__(self) -> str:
        kind = "paper" if self.paper else "LIVE"
        return f"AlpacaVenue({self.name!r}, {kind}, {self.config.resolved_url!r})"

    def close(self) -> None:
        """Close the HTTP connections (the venue can still be used: they reopen)."""
        self._session.close()

    # -- Venue port ------------------------------------------------------------------------
    def set_listener(self, listener: VenueListener) -> None:
        self._listener = listener

    async def submit(self, order: Order) -> None:
        coid = order.client_order_id
        tracked = self._orders.get(coid)
        if tracked is None:
            tracked = self._orders[coid] = _Tracked(coid, order, order.symbol, order.side)
        else:
            tracked.order = order
        tracked.open = True
        what = f"submit of {coid} ({order.side.value} {order.quantity} {order.symbol})"
        try:
            body = _order_body(order)
        except (ValueError, TypeError, ArithmeticError) as exc:
            tracked.open = False
            raise VenueRejectedError(f"{what}: not a valid Alpaca order: {exc}") from exc
        try:
            raw = await self._call(self._client.post, "/orders", body)
            placed = _parse_order(raw)
        except _RateLimitedError as exc:
            tracked.open = False
            raise VenueRejectedError(
                f"{what}: rate limited by Alpaca (HTTP 429) after {exc.attempts} retries; "
                "the order was not taken"
            ) from exc.exc
        except APIError as exc:
            if exc.status_code == 422 and "client_order_id" in _api_message(exc).lower():
                await self._adopt_duplicate(tracked, what)
                return
            error = _venue_error(exc, what, submit=True)
            if isinstance(error, VenueRejectedError):
                tracked.open = False
            raise error from exc
        except Exception as exc:
            raise _venue_error(exc, what, submit=True) from exc
        await self._report_states([(tracked, placed)])

    async def cancel(self, client_order_id: str) -> None:
        """Ask Alpaca to cancel; the CANCELED status (or a last fill) comes through `poll`.

        An order Alpaca already closed (404 or 422 "not cancelable") is no error. An order it
        does not know (yet) raises `VenueUnknownError`: nothing was canceled.
        """
        what = f"cancel of {client_order_id}"
        tracked = self._orders.get(client_order_id)
        if tracked is None or tracked.venue_order_id is None:
            found = await self._get_by_client_id(client_order_id, what)
            if found is None:
                raise VenueUnknownError(f"{what}: Alpaca has no such order (yet); not canceled")
            tracked = self._track(found)
        assert tracked.venue_order_id is not None  # noqa: S101
        tracked.open = True
        try:
            await self._call(self._client.cancel_order_by_id, tracked.venue_order_id)
        except APIError as exc:
            if exc.status_code in (404, 422):
                log.info("%s: already closed at Alpaca (%s)", what, _api_message(exc))
                return
            raise _venue_error(exc, what) from exc
        except Exception as exc:
            raise _venue_error(exc, what) from exc

    async def query_order(self, client_order_id: str) -> VenueOrderState | None:
        """The order as Alpaca has it (with the fills its activities list), None on a 404."""
        what = f"query of {client_order_id}"
        found = await self._get_by_client_id(client_order_id, what)
        if found is None:
            return None
        tracked = self._track(found)
        fills = await self._fills_of([tracked], [found], what)
        return self._state(tracked, found, fills.get(client_order_id, []))

    async def open_orders(self) -> list[VenueOrderState]:
        """Every open order of the account (ours or not), with the fills listed so far."""
        what = "open orders"
        listed = await self._list_open(what)
        tracked = [self._track(o) for o in listed]
        fills = await self._fills_of(tracked, listed, what)
        return [
            self._state(t, o, fills.get(t.client_order_id, []))
            for t, o in zip(tracked, listed, strict=True)
        ]

    async def fills_since(self, since: dt.datetime) -> list[Fill]:
        """The account's fills at or after `since`, oldest first (FILL activities, paged)."""
        if since.tzinfo is None:
            raise ValueError(f"since must be timezone-aware, got {since.isoformat()}")
        what = "fills since " + since.isoformat()
        out: list[Fill] = []
        for activity in await self._activities(since, what):
            if activity.transaction_time < since:
                continue
            coid = await self._coid_for(activity.order_id, what)
            if coid is None:
                self.unmapped_fills += 1
                log.warning("alpaca fill %s: order %s not found", activity.id, activity.order_id)
                continue
            fill = self._fill(activity, self._orders.get(coid), coid)
            if fill is not None:
                out.append(fill)
        return out

    async def positions(self) -> dict[str, Decimal] | None:
        """Signed quantity per symbol (``GET /v2/positions``); crypto as ``BASE/QUOTE``."""
        what = "positions"
        try:
            raw = await self._call(self._client.get, "/positions")
        except Exception as exc:
            raise _venue_error(exc, what) from exc
        held: dict[str, Decimal] = {}
        for row in raw or []:
            try:
                qty = Decimal(str(row["qty"]))
                symbol = _symbol(str(row["symbol"]), str(row.get("asset_class", "")))
            except (KeyError, TypeError, InvalidOperation) as exc:
                raise VenueError(f"alpaca {what}: unreadable position {row!r}: {exc}") from exc
            side = row.get("side")
            signed = -abs(qty) if side == "short" else abs(qty) if side == "long" else qty
            if signed:
                held[symbol] = held.get(symbol, Decimal(0)) + signed
        return held

    async def poll(self) -> None:
        """Report status changes and new fills of the orders this object follows."""
        followed = [t for t in self._orders.values() if t.open]
        if not followed:
            return
        what = "poll"
        listed = {o.client_order_id: o for o in await self._list_open(what)}
        pairs: list[tuple[_Tracked, AlpacaOrder]] = []
        for tracked in followed:
            found = listed.get(tracked.client_order_id)
            if found is None:
                found = await self._lookup(tracked, what)
            if found is None:
                self._not_found(tracked)
                continue
            tracked.missing_since = None
            pairs.append((tracked, found))
        await self._report_states(pairs)

    async def check_account(self) -> dict[str, Any]:
        """``GET /v2/account``: proves the keys work (a clear `VenueError` on 401/403)."""
        try:
            raw = await self._call(self._client.get, "/account")
        except Exception as exc:
            raise _venue_error(exc, "account check") from exc
        if not isinstance(raw, dict):
            raise VenueError(f"alpaca account check: unexpected answer {raw!r}")
        return raw

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "retries_429": self.retries_429,
            "followed": sum(t.open for t in self._orders.values()),
            "fills_delivered": len(self._delivered),
            "bad_activities": self.bad_activities,
            "unmapped_fills": self.unmapped_fills,
        }

    # -- calls -----------------------------------------------------------------------------
    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one alpaca-py call in a thread; retry a 429 after the venue's Retry-After."""
        attempt = 0
        while True:
            self.requests += 1
            try:
                return await asyncio.to_thread(fn, *args)
            except APIError as exc:
                if exc.status_code != 429:
                    raise
                wait = self._retry_wait(exc, attempt)
                if attempt >= self.config.max_retries_429 or wait > self.config.max_retry_wait_s:
                    raise _RateLimitedError(exc, attempt, wait) from exc
                attempt += 1
                self.retries_429 += 1
                log.warning("alpaca 429: retry %d in %.2fs", attempt, wait)
                await asyncio.sleep(wait)

    def _retry_wait(self, exc: APIError, attempt: int) -> float:
        backoff = min(2.0**attempt, self.config.max_retry_wait_s)
        response = exc.response
        headers = response.headers if response is not None else {}
        retry_after = headers.get("Retry-After")
        if retry_after is not None:
            return retry_after_s(retry_after, backoff, math.inf)
        reset = headers.get("X-RateLimit-Reset")
        if reset is not None:
            try:
                return max(0.0, float(reset) - time.time())
            except ValueError:
                pass
        return backoff

    async def _get_by_client_id(self, coid: str, what: str) -> AlpacaOrder | None:
        return await self._get(self._client.get_order_by_client_id, coid, what)

    async def _get_by_id(self, venue_order_id: str, what: str) -> AlpacaOrder | None:
        return await self._get(self._client.get_order_by_id, venue_order_id, what)

    async def _get(self, fetch: Any, key: str, what: str) -> AlpacaOrder | None:
        """One order by `fetch(key)`; None when Alpaca answers 404 (not found)."""
        try:
            return _parse_order(await self._call(fetch, key))
        except APIError as exc:
            if exc.status_code == 404:
                return None
            raise _venue_error(exc, what) from exc
        except Exception as exc:
            raise _venue_error(exc, what) from exc

    async def _lookup(self, tracked: _Tracked, what: str) -> AlpacaOrder | None:
        if tracked.venue_order_id is not None:
            return await self._get_by_id(tracked.venue_order_id, what)
        return await self._get_by_client_id(tracked.client_order_id, what)

    async def _list_open(self, what: str) -> list[AlpacaOrder]:
        """Every open order (``GET /v2/orders?status=open``), paged by submission time."""
        out: dict[str, AlpacaOrder] = {}
        after: dt.datetime | None = None
        while True:
            request = GetOrdersRequest(
                status=QueryOrderStatus.OPEN, limit=ORDERS_PAGE, direction=Sort.ASC, after=after
            )
            try:
                page = await self._call(self._client.get_orders, request)
            except Exception as exc:
                raise _venue_error(exc, what) from exc
            orders = [_parse_order(o) for o in page]
            new = [o for o in orders if str(o.id) not in out]
            for o in new:
                out[str(o.id)] = o
            if len(orders) < ORDERS_PAGE or not new:
                return list(out.values())
            after = max(o.submitted_at for o in orders) - dt.timedelta(microseconds=1)

    async def _activities(self, after: dt.datetime, what: str) -> list[_Activity]:
        """FILL activities after `after` (to the second, less one: a window that only
        over-fetches), oldest first, every page."""
        start = (after - dt.timedelta(seconds=1)).astimezone(dt.UTC)
        params: dict[str, Any] = {
            "after": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "direction": "asc",
            "page_size": self.config.page_size,
        }
        out: list[_Activity] = []
        seen: set[str] = set()
        tokens: set[str] = set()
        while True:
            try:
                page = await self._call(self._client.get, "/account/activities/FILL", params)
            except Exception as exc:
                raise _venue_error(exc, what) from exc
            if not isinstance(page, list):
                raise VenueError(f"alpaca {what}: activities answer is not a list: {page!r:.200}")
            token = ""
            for row in page:
                token = str(row.get("id", "")) if isinstance(row, dict) else ""
                activity = self._activity(row)
                if activity is not None and activity.id not in seen:
                    seen.add(activity.id)
                    out.append(activity)
            if len(page) < self.config.page_size or not token or token in tokens:
                return out
            tokens.add(token)
            params["page_token"] = token

    def _activity(self, row: Any) -> _Activity | None:
        try:
            activity = msgspec.convert(row, _Activity, strict=False)
        except msgspec.ValidationError as exc:
            self.bad_activities += 1
            log.warning("alpaca: unreadable FILL activity %r: %s", row, exc)
            return None
        if activity.activity_type != "FILL":
            return None
        return activity

    async def _coid_for(self, venue_order_id: str, what: str) -> str | None:
        coid = self._coid_by_venue_id.get(venue_order_id)
        if coid is None:
            found = await self._get_by_id(venue_order_id, what)
            if found is None:
                return None
            coid = found.client_order_id
            self._coid_by_venue_id[venue_order_id] = coid
            if coid not in self._orders:
                self._orders[coid] = _Tracked(coid, open=False)
                self._update(self._orders[coid], found)
        return coid

    async def _fills_of(
        self,
        tracked: list[_Tracked],
        orders: list[AlpacaOrder],
        what: str,
        *,
        new_only: bool = False,
    ) -> dict[str, list[Fill]]:
        """The fills of these orders (those with a filled quantity) in the activities: all of
        them, or (`new_only`) those from the last one delivered on."""
        wanted = {
            t.venue_order_id: t
            for t, o in zip(tracked, orders, strict=True)
            if _dec(o.filled_qty) > 0 and t.venue_order_id is not None
        }
        if not wanted:
            return {}
        starts: list[dt.datetime] = []
        for t in wanted.values():
            start = t.last_fill_at if new_only and t.last_fill_at else t.created_at
            if start is not None:
                starts.append(start)
        after = min(starts) if starts else dt.datetime.now(dt.UTC) - dt.timedelta(days=7)
        out: dict[str, list[Fill]] = {}
        for activity in await self._activities(after, what):
            owner = wanted.get(activity.order_id)
            if owner is None:
                continue
            fill = self._fill(activity, owner, owner.client_order_id)
            if fill is not None:
                out.setdefault(owner.client_order_id, []).append(fill)
        return out

    # -- state -----------------------------------------------------------------------------
    def _track(self, found: AlpacaOrder) -> _Tracked:
        """Follow an order found by a lookup or a listing (poll reports its changes)."""
        coid = found.client_order_id
        tracked = self._orders.get(coid)
        if tracked is None:
            tracked = self._orders[coid] = _Tracked(coid)
        self._update(tracked, found)
        tracked.open = True
        tracked.missing_since = None
        return tracked

    def _update(self, tracked: _Tracked, found: AlpacaOrder) -> None:
        tracked.venue_order_id = str(found.id)
        tracked.created_at = found.created_at
        if not tracked.symbol:
            tracked.symbol = found.symbol or ""
        if tracked.side is None and found.side is not None:
            tracked.side = Side(found.side.value)
        self._coid_by_venue_id[str(found.id)] = tracked.client_order_id

    def _not_found(self, tracked: _Tracked) -> None:
        now = time.monotonic()
        if tracked.missing_since is None:
            tracked.missing_since = now
        elif now - tracked.missing_since > self.config.not_found_grace_s:
            missing = now - tracked.missing_since
            if tracked.venue_order_id is not None:
                # Acknowledged: Alpaca has it, its reads lag. Keep following (see the module
                # doc); say so once per grace period.
                log.warning(
                    "alpaca: acknowledged order %s not found for %.1fs; still following it",
                    tracked.client_order_id,
                    missing,
                )
                tracked.missing_since = now
                return
            tracked.open = False
            log.warning(
                "alpaca: order %s not found for %.1fs; poll stops following it",
                tracked.client_order_id,
                missing,
            )

    def _state(self, tracked: _Tracked, found: AlpacaOrder, fills: list[Fill]) -> VenueOrderState:
        """`found` as a `VenueOrderState`; its fills count as delivered (see the module doc)."""
        for fill in sorted(fills, key=lambda f: f.timestamp):
            self._mark_delivered(tracked, fill)
        filled = _dec(found.filled_qty)
        listed = sum((f.quantity for f in fills), Decimal(0))
        raw = found.status.value
        reason = ""
        if raw in _CLOSED_STATUSES:
            status = _CLOSED_STATUSES[raw]
            reason = raw
            if listed < filled:  # fills not listed yet: keep it open until poll has them
                status = OrderStatus.PARTIALLY_FILLED if listed > 0 else OrderStatus.ACCEPTED
                reason = f"{raw} at Alpaca; fills pending"
        elif raw == "filled":
            status = OrderStatus.FILLED
        else:
            status = OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.ACCEPTED
        closed = status in _CLOSED_STATUSES.values()
        tracked.reported = status if closed else OrderStatus.ACCEPTED
        if closed or (status is OrderStatus.FILLED and tracked.delivered_qty >= filled):
            tracked.open = False
        return VenueOrderState(
            client_order_id=found.client_order_id,
            venue_order_id=str(found.id),
            symbol=tracked.symbol,
            side=tracked.side or Side.BUY,
            quantity=_dec(found.qty),
            filled_quantity=filled,
            status=status,
            price=None if found.limit_price is None else _dec(found.limit_price),
            fills=tuple(sorted(fills, key=lambda f: f.timestamp)),
            reason=reason,
            updated_at=found.updated_at,
        )

    async def _report_states(self, pairs: list[tuple[_Tracked, AlpacaOrder]]) -> None:
        """Report, per order: ACCEPTED when first seen, new fills, then a closing status."""
        for tracked, found in pairs:
            self._update(tracked, found)
        need = [(t, o) for t, o in pairs if _dec(o.filled_qty) > t.delivered_qty]
        fills = (
            await self._fills_of([t for t, _ in need], [o for _, o in need], "fills", new_only=True)
            if need
            else {}
        )
        async with self._report_lock:
            for tracked, found in pairs:
                before = (tracked.reported, tracked.open)
                reports = self._changes(tracked, found, fills.get(tracked.client_order_id, []))
                for i, report in enumerate(reports):
                    if self._listener is None:
                        continue
                    try:
                        await self._listener(report)
                    except BaseException:
                        # Not delivered (the listener failed, or the poll was canceled): the
                        # rest is reported again by the next poll, never lost.
                        self._undeliver(tracked, reports[i:], before)
                        raise

    def _changes(
        self, tracked: _Tracked, found: AlpacaOrder, fills: Iterable[Fill]
    ) -> list[VenueReport]:
        out: list[VenueReport] = []
        raw = found.status.value
        at = found.updated_at
        if tracked.reported is None and raw != "rejected":
            out.append(self._event(tracked, OrderStatus.ACCEPTED, found.submitted_at or at))
            tracked.reported = OrderStatus.ACCEPTED
        for fill in sorted(fills, key=lambda f: f.timestamp):
            if self._mark_delivered(tracked, fill):
                out.append(fill)
        filled = _dec(found.filled_qty)
        closed = _CLOSED_STATUSES.get(raw)
        if closed is not None and tracked.reported is not closed:
            now = time.monotonic()
            if tracked.delivered_qty < filled:
                tracked.fills_late_since = tracked.fills_late_since or now
                if now - tracked.fills_late_since < self.config.fills_wait_s:
                    return out  # wait for the fills before closing the order
                log.error(
                    "alpaca: %s is %s with %s filled but only %s in its FILL activities",
                    tracked.client_order_id,
                    raw,
                    filled,
                    tracked.delivered_qty,
                )
            out.append(self._event(tracked, closed, _closed_at(found), raw))
            tracked.reported = closed
            tracked.open = False
        elif closed is not None or raw == "filled":
            if tracked.delivered_qty >= filled:
                tracked.open = False
            else:
                now = time.monotonic()
                tracked.fills_late_since = tracked.fills_late_since or now
                if now - tracked.fills_late_since >= self.config.fills_wait_s:
                    log.error(
                        "alpaca: %s filled %s but its FILL activities list %s; giving up",
                        tracked.client_order_id,
                        filled,
                        tracked.delivered_qty,
                    )
                    tracked.open = False
        return out

    def _undeliver(
        self,
        tracked: _Tracked,
        reports: list[VenueReport],
        before: tuple[OrderStatus | None, bool],
    ) -> None:
        for report in reports:
            if isinstance(report, Fill) and report.trade_id in self._delivered:
                self._delivered.discard(report.trade_id)
                tracked.delivered_qty -= report.quantity
        # Follow the order again from where the last delivered report left it.
        tracked.reported, tracked.open = before[0], True
        # The next poll reads activities from the last delivered fill on.
        delivered = [f.timestamp for f in tracked.fills.values() if f.trade_id in self._delivered]
        tracked.last_fill_at = max(delivered, default=None)

    def _mark_delivered(self, tracked: _Tracked, fill: Fill) -> bool:
        tracked.fills[fill.trade_id] = fill
        if fill.trade_id in self._delivered:
            return False
        self._delivered.add(fill.trade_id)
        tracked.delivered_qty += fill.quantity
        if tracked.last_fill_at is None or fill.timestamp > tracked.last_fill_at:
            tracked.last_fill_at = fill.timestamp
        return True

    def _event(
        self, tracked: _Tracked, status: OrderStatus, at: dt.datetime, reason: str = ""
    ) -> OrderEvent:
        order = tracked.order
        if order is not None and at < order.timestamp:
            at = order.timestamp  # venue clock behind ours: never before the order itself
        return OrderEvent(
            order_id=order.order_id if order else ids.order_id(tracked.client_order_id),
            client_order_id=tracked.client_order_id,
            symbol=tracked.symbol,
            status=status,
            venue=self.name,
            timestamp=at,
            reason=reason,
        )

    def _fill(self, activity: _Activity, tracked: _Tracked | None, coid: str) -> Fill | None:
        order = tracked.order if tracked is not None else None
        symbol = tracked.symbol if tracked is not None and tracked.symbol else activity.symbol
        try:
            return Fill(
                fill_id=ids.fill_id(self.name, activity.id),
                order_id=order.order_id if order is not None else ids.order_id(coid),
                client_order_id=coid,
                symbol=symbol,
                side=Side.BUY if activity.side == "buy" else Side.SELL,  # sell, sell_short
                price=activity.price,
                quantity=activity.qty,
                fee=Decimal(0),
                fee_currency="USD",
                liquidity=Liquidity.TAKER,
                timestamp=activity.transaction_time,
                venue=self.name,
                trade_id=activity.id,
                strategy_id=order.strategy_id if order is not None else "",
            )
        except ValueError as exc:
            self.bad_activities += 1
            log.warning("alpaca: FILL activity %s refused: %s", activity.id, exc)
            return None

    async def _adopt_duplicate(self, tracked: _Tracked, what: str) -> None:
        """A 422 "client_order_id must be unique": the order is there; report what it is."""
        found = await self._get_by_client_id(tracked.client_order_id, what)
        if found is None:
            raise VenueUnknownError(
                f"{what}: Alpaca says the client order id is taken but cannot find the order "
                "yet; not resubmitted"
            )
        order = tracked.order
        if order is not None and (
            found.symbol != order.symbol or _dec(found.qty) != order.quantity
        ):
            log.error(
                "alpaca: %s already used by %s %s %s (ours: %s %s %s)",
                tracked.client_order_id,
                found.side,
                found.qty,
                found.symbol,
                order.side.value,
                order.quantity,
                order.symbol,
            )
        log.info("%s: already at Alpaca (%s), adopted", what, found.status.value)
        await self._report_states([(tracked, found)])


# -- helpers ---------------------------------------------------------------------------------


def _order_body(order: Order) -> dict[str, Any]:
    """The JSON body of ``POST /v2/orders`` for `order`, with exact decimal strings."""
    common: dict[str, Any] = {
        "symbol": order.symbol,
        "qty": float(order.quantity),
        "side": OrderSide(order.side.value),
        "time_in_force": AlpacaTimeInForce(order.time_in_force.value),
        "client_order_id": order.client_order_id,
    }
    request: LimitOrderRequest | MarketOrderRequest
    if order.order_type is OrderType.LIMIT:
        if order.price is None:
            raise ValueError("a limit order needs a price")
        request = LimitOrderRequest(**common, limit_price=float(order.price))
    else:
        request = MarketOrderRequest(**common)
    body = request.to_request_fields()
    body["qty"] = _text(order.quantity)
    if order.order_type is OrderType.LIMIT and order.price is not None:
        body["limit_price"] = _text(order.price)
    return {k: v.value if hasattr(v, "value") else v for k, v in body.items()}


def _parse_order(raw: Any) -> AlpacaOrder:
    if isinstance(raw, AlpacaOrder):
        return raw
    if not isinstance(raw, dict):
        raise ValueError(f"not an Alpaca order: {raw!r:.200}")
    return AlpacaOrder(**raw)


def _text(value: Decimal) -> str:
    return format(value, "f")


def _dec(value: str | float | None) -> Decimal:
    if value is None or value == "":
        return Decimal(0)
    return Decimal(str(value))


def _closed_at(found: AlpacaOrder) -> dt.datetime:
    return found.canceled_at or found.expired_at or found.failed_at or found.updated_at


def _symbol(symbol: str, asset_class: str) -> str:
    """Alpaca lists crypto positions without the slash (``BTCUSD``): quantlab's ``BTC/USD``."""
    if asset_class == "crypto" and "/" not in symbol:
        for quote in _CRYPTO_QUOTES:
            if symbol.endswith(quote) and len(symbol) > len(quote):
                return f"{symbol[: -len(quote)]}/{quote}"
    return symbol


def _api_message(exc: APIError) -> str:
    try:
        return str(exc.message)
    except (ValueError, TypeError, KeyError):
        text = str(exc).strip()
        return text[:200] if text else "(empty body)"


def _venue_error(exc: BaseException, what: str, *, submit: bool = False) -> VenueError:
    """The `VenueError` an exception of a call means (see the module doc)."""
    if isinstance(exc, VenueError):
        return exc
    if isinstance(exc, _RateLimitedError):
        return VenueError(f"alpaca {what}: rate limited (HTTP 429) after {exc.attempts} retries")
    if isinstance(exc, APIError):
        status = exc.status_code
        message = _api_message(exc)
        if status is None or status >= 500 or status == 408:
            return VenueUnknownError(f"alpaca {what}: HTTP {status}: {message}; outcome unknown")
        if status == 401:
            message = (
                f"{message} (Alpaca refused the credentials: check QUANTLAB_ALPACA_API_KEY / "
                "QUANTLAB_ALPACA_API_SECRET and that they belong to the paper or live "
                "environment configured)"
            )
        cls = VenueRejectedError if submit else VenueError
        return cls(f"alpaca {what}: HTTP {status}: {message}")
    if isinstance(exc, requests.Timeout):
        return VenueUnknownError(f"alpaca {what}: no answer in time ({exc}); outcome unknown")
    if isinstance(exc, requests.RequestException):
        return VenueUnknownError(
            f"alpaca {what}: connection failed ({type(exc).__name__}: {exc}); outcome unknown"
        )
    return VenueUnknownError(
        f"alpaca {what}: unreadable answer ({type(exc).__name__}: {exc}); outcome unknown"
    )
