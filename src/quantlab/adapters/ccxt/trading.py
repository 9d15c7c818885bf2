"""`CcxtVenue`: order entry on Binance spot and Coinbase Advanced Trade through ccxt (REST).

The venue implements the `quantlab.execution.ports.Venue` contract with ``ccxt.async_support``
4.5 and polls for reports (``poll_interval_s`` > 0). Decisions, each tested against the local
fakes (`quantlab.testing.fakes.ccxt_trading`):

Endpoints and money
    ``paper=True`` (the default) is Binance's spot testnet (``set_sandbox_mode(True)``).
    Coinbase has no sandbox in ccxt (its ``set_sandbox_mode`` raises ``TypeError``), so
    ``paper=True`` on coinbase needs a `url` override (a local fake) and is refused
    otherwise. Real money needs both ``paper=False`` and ``live=True``; either one alone is
    refused. `url` replaces the scheme and host of every REST URL, keeping the paths.
Markets
    Seeded with ``set_markets`` from `symbols` (ids ``BTCUSDT`` / ``BTC-USD``, or `markets`),
    so building the venue never touches the network. Quantities and prices are sent as the
    order's own decimal strings (not ccxt's float rounding): lot and tick sizes are the
    order builder's job, and the venue refuses what breaks them (`VenueRejectedError`).
Client order id
    Sent as Binance ``newClientOrderId`` / Coinbase ``client_order_id``. A duplicate answer
    means the order is already placed: Binance answers ``-2010 "Duplicate order sent."`` (it
    checks open orders only, so a closed order's id could be reused: the engine never
    resubmits, and this venue object never sends an id it has seen placed); Coinbase
    documents that a reused id "will not be created and the order corresponding with that ID
    will be returned instead", so its success answer is followed by a fetch of that order, and
    its ``DUPLICATE_CLIENT_ORDER_ID`` failure reason (listed in its enum) is treated like
    Binance's duplicate. Either way the order is looked up (never resent) and reported as found.
Time in force
    GTC and IOC map directly. DAY: Binance spot has none (GTC, IOC, FOK), so a DAY limit
    order is refused at `submit` with `VenueRejectedError` before anything is sent; Coinbase
    gets ``limit_limit_gtd`` ending at the next UTC midnight after the order's timestamp (the
    paper venue's DAY). Market orders ignore the time in force (they never rest). A Coinbase
    market buy is sent with ``base_size`` (the order's quantity), not ccxt's quote-sized buy:
    if Coinbase refuses that configuration the order is rejected with its message.
Errors
    HTTP 429 and Binance's 418 are retried after their ``Retry-After`` (seconds or a date;
    without one 1 s, doubling, at most `max_retry_wait_s`) up to `max_retries_429` times; a
    ``Retry-After`` longer than `max_retry_wait_s` is not waited for. Then a submission is
    `VenueRejectedError` (nothing was placed). ccxt's
    own throttle (``enableRateLimit``) only paces requests and never retries. A timeout, a
    dropped connection, a 5xx, an unparseable answer, or any ccxt ``OperationFailed``
    (``NetworkError``, ``RequestTimeout``, ``ExchangeNotAvailable``, ``BadResponse``) is
    `VenueUnknownError`; a definite 4xx refusal (``InsufficientFunds``, ``InvalidOrder``,
    ``BadRequest``, ``AuthenticationError``, Coinbase's ``success: false``) is
    `VenueRejectedError` carrying the venue's message.
Reports
    After a submission, a query, or at `poll`, an order's new fills are reported before its
    status, each fill once per venue object (trade id = the venue's; ``fill_id`` from it;
    fee, fee currency and maker/taker from the trade). A terminal status (canceled, expired,
    rejected) is reported only once the fills the venue counts for the order have been
    reported; filled is left to the fills. ``ACCEPTED`` is reported once for orders this
    object submits; an order it learns of by `query_order`, `open_orders`, `fills_since` or
    `cancel` is followed from then on, its state having gone out with the answer: the fills
    a `query_order` state or `fills_since` returns count as reported, an `open_orders` state
    carries none (`poll` reports them). Binance ends an IOC or market remainder ``EXPIRED``
    (its documented rule); Coinbase's end state of an IOC remainder is not documented: the
    fake says ``CANCELLED``, and ``EXPIRED`` would map to EXPIRED.
Lookups
    Binance: ``GET /api/v3/order?origClientOrderId=`` on the order's symbol (every configured
    symbol for an order this object has not seen). Coinbase's order lookup by client id is
    deprecated and its order list cannot filter on it, so an order whose venue id is unknown
    is found by listing the configured products' orders of the last `lookup_window_s` and
    matching the id locally. "Order does not exist" (Binance ``-2013``, Coinbase 404) is
    None; shortly after a submission that does not prove the order lost.
Positions
    `positions` is None: a spot account's balances are not one strategy's positions.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import aiohttp
import msgspec
from ccxt.base.errors import (
    BaseError,
    DDoSProtection,
    ExchangeError,
    OperationFailed,
    OrderNotFound,
    RateLimitExceeded,
)
from pydantic import SecretStr

from quantlab.adapters.ccxt.config import CcxtMarket
from quantlab.adapters.ccxt.exchange import check_credentials, rest_class, rewrite_urls
from quantlab.core import ids
from quantlab.core.clock import Clock, WallClock
from quantlab.core.enums import Liquidity, OrderStatus, OrderType, Side, TimeInForce
from quantlab.core.errors import ConfigError, ValidationError
from quantlab.core.instruments import to_decimal
from quantlab.core.messages import Fill, Order, OrderEvent
from quantlab.execution.ports import (
    VenueError,
    VenueListener,
    VenueOrderState,
    VenueRejectedError,
    VenueReport,
    VenueUnknownError,
)
from quantlab.ingest.ratelimit import parse_retry_after

log = logging.getLogger(__name__)

EXCHANGES: Final = frozenset({"binance", "coinbase"})
_SPOT_SYMBOL: Final = re.compile(r"^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$")
_KEY: Final = "ccxt_trading"
_DAY: Final = dt.timedelta(days=1)
_DAY_MS: Final = 86_400_000
_COINBASE_PAGES: Final = 50  # at most this many pages per listing (1000 orders / 100 fills each)
# ccxt options set before the user's own, each for a reason.
_OPTIONS: Final[Mapping[str, Mapping[str, Any]]] = {
    "binance": {
        "defaultType": "spot",
        "fetchMarkets": {"types": ["spot"]},
        "fetchCurrencies": False,
        "warnOnFetchOpenOrdersWithoutSymbol": False,
    },
    "coinbase": {"fetchCurrencies": False, "brokerId": "ql"},
}
_BINANCE_ORDER_TYPES: Final = ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT",
                               "TAKE_PROFIT_LIMIT"]  # fmt: skip
_OPEN: Final = OrderStatus.ACCEPTED  # "open": ACCEPTED, or PARTIALLY_FILLED once it has fills
# The venues' own status words (more precise than ccxt's unified ones: ccxt folds Coinbase's
# EXPIRED and FAILED into "canceled").
_RAW_STATUS: Final[Mapping[str, Mapping[str, OrderStatus]]] = {
    "binance": {
        "NEW": _OPEN, "PENDING_NEW": _OPEN, "PARTIALLY_FILLED": _OPEN, "PENDING_CANCEL": _OPEN,
        "FILLED": OrderStatus.FILLED, "CANCELED": OrderStatus.CANCELED,
        "REJECTED": OrderStatus.REJECTED, "EXPIRED": OrderStatus.EXPIRED,
        "EXPIRED_IN_MATCH": OrderStatus.EXPIRED,
    },
    "coinbase": {
        "OPEN": _OPEN, "PENDING": _OPEN, "QUEUED": _OPEN, "CANCEL_QUEUED": _OPEN,
        "UNKNOWN_ORDER_STATUS": _OPEN, "FILLED": OrderStatus.FILLED,
        "CANCELLED": OrderStatus.CANCELED, "EXPIRED": OrderStatus.EXPIRED,
        "FAILED": OrderStatus.REJECTED,
    },
}  # fmt: skip
_UNIFIED_STATUS: Final[Mapping[str, OrderStatus]] = {
    "open": _OPEN,
    "canceling": _OPEN,
    "closed": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELED,
    "expired": OrderStatus.EXPIRED,
    "rejected": OrderStatus.REJECTED,
}


class CcxtTradingConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where and how a `CcxtVenue` trades; no secrets (they go to the venue itself).

    Parameters
    ----------
    exchange
        ``"binance"`` (spot) or ``"coinbase"`` (Advanced Trade).
    symbols
        quantlab's (ccxt's unified) spot symbols the venue trades: ``"BTC/USDT"``.
    paper, live
        ``paper=True``: Binance's spot testnet; Coinbase has no sandbox, so there it needs a
        `url` (a local fake). Real money: ``paper=False`` *and* ``live=True``.
    url
        Replaces the scheme and host of every REST URL (a local fake, a proxy).
    name
        The venue's name (orders, fills, routing); default: `exchange`.
    markets
        Venue market ids for some symbols; default ``BTCUSDT`` (binance), ``BTC-USD`` (coinbase).
    timeout_s
        Per HTTP request; a timeout leaves the call's outcome unknown.
    max_retries_429, max_retry_wait_s
        Retries after a rate limit (HTTP 429/418), each after the venue's Retry-After; a
        Retry-After longer than `max_retry_wait_s` is not waited for (the call fails).
    poll_interval_s
        How often the engine should call `CcxtVenue.poll`.
    enable_rate_limit
        ccxt's client-side throttle by the venue's published request weights.
    lookup_window_s
        Coinbase: how far back an order is searched for by client order id.
    options
        Merged into the exchange's ccxt ``options`` (ours first, yours on top).
    """

    exchange: str
    symbols: tuple[str, ...]
    paper: bool = True
    live: bool = False
    url: str | None = None
    name: str | None = None
    markets: tuple[CcxtMarket, ...] = ()
    timeout_s: float = 10.0
    max_retries_429: int = 3
    max_retry_wait_s: float = 30.0
    poll_interval_s: float = 1.0
    enable_rate_limit: bool = True
    lookup_window_s: float = 86_400.0
    options: dict[str, Any] = {}

    def __post_init__(self) -> None:
        if self.exchange not in EXCHANGES:
            raise ConfigError(
                f"{_KEY}.exchange", f"expected one of {sorted(EXCHANGES)}, got {self.exchange!r}"
            )
        if not self.symbols:
            raise ConfigError(f"{_KEY}.symbols", "need at least one symbol")
        for symbol in self.symbols:
            if not _SPOT_SYMBOL.match(symbol):
                raise ConfigError(
                    f"{_KEY}.symbols", f"{symbol!r} is not a spot symbol like 'BTC/USDT'"
                )
        if len(set(self.symbols)) != len(self.symbols):
            raise ConfigError(f"{_KEY}.symbols", f"duplicate symbols in {list(self.symbols)}")
        for market in self.markets:
            if market.symbol not in self.symbols or not market.id or market.type != "spot":
                raise ConfigError(
                    f"{_KEY}.markets", f"{market!r} is not a spot market of one of {self.symbols}"
                )
        if not self.paper and not self.live:
            raise ConfigError(
                f"{_KEY}.live", "paper=false trades real money: it needs live=true as well"
            )
        if self.paper and self.live:
            raise ConfigError(
                f"{_KEY}.live", "live=true trades real money: it needs paper=false as well"
            )
        if self.paper and self.exchange == "coinbase" and self.url is None:
            raise ConfigError(
                f"{_KEY}.paper",
                "coinbase has no sandbox (ccxt's set_sandbox_mode fails for it): paper=true "
                "needs a url (a local fake); real trading needs paper=false and live=true",
            )
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"{_KEY}.url", f"unsupported URL scheme in {self.url!r}")
        for key in ("timeout_s", "poll_interval_s", "lookup_window_s"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"{_KEY}.{key}", f"must be > 0, got {getattr(self, key)}")
        if self.max_retries_429 < 0:
            raise ConfigError(
                f"{_KEY}.max_retries_429", f"must be >= 0, got {self.max_retries_429}"
            )
        if self.max_retry_wait_s < 0:
            raise ConfigError(
                f"{_KEY}.max_retry_wait_s", f"must be >= 0, got {self.max_retry_wait_s}"
            )
        if self.name is not None and not self.name:
            raise ConfigError(f"{_KEY}.name", "must not be empty")

    @property
    def venue_name(self) -> str:
        return self.name or self.exchange

    def market_id(self, symbol: str) -> str:
        for market in self.markets:
            if market.symbol == symbol:
                return market.id
        base, quote = symbol.split("/", 1)
        return f"{base}{quote}" if self.exchange == "binance" else f"{base}-{quote}"


# --- ccxt plumbing ----------------------------------------------------------------------------


class RateLimitedError(RateLimitExceeded):  # type: ignore[misc]
    """HTTP 429/418 from the venue, with its Retry-After (seconds) if it sent one."""

    def __init__(self, message: str, *, status: int, retry_after: float | None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class _RetriesExhaustedError(Exception):
    def __init__(self, last: BaseException, attempts: int) -> None:
        super().__init__(f"rate limited {attempts} times: {last}")
        self.last = last
        self.attempts = attempts


def retry_after_s(headers: Mapping[str, Any] | None, now: float | None = None) -> float | None:
    """The Retry-After header in seconds (a number or an HTTP date), or None."""
    for key, value in (headers or {}).items():
        if str(key).lower() == "retry-after":
            return parse_retry_after(str(value), now)
    return None


class _ErrorDetails:
    """Mixin put first in the bases of a ccxt exchange: 429/418 carry their Retry-After, and
    every ccxt error raised on an HTTP answer carries the status (``ql_status``)."""

    def handle_errors(
        self,
        code: int,
        reason: str,
        url: str,
        method: str,
        headers: dict[str, Any],
        body: str,
        response: Any,
        request_headers: Any,
        request_body: Any,
    ) -> Any:
        if code in (418, 429):
            raise RateLimitedError(
                f"{getattr(self, 'id', '')} HTTP {code} {reason} {body}",
                status=code,
                retry_after=retry_after_s(headers),
            )
        try:
            return super().handle_errors(  # type: ignore[misc]
                code, reason, url, method, headers, body, response, request_headers, request_body
            )
        except BaseError as exc:
            exc.ql_status = code
            raise

    def handle_http_status_code(
        self, code: int, reason: str, url: str, method: str, body: str
    ) -> Any:
        try:
            return super().handle_http_status_code(code, reason, url, method, body)  # type: ignore[misc]
        except BaseError as exc:
            exc.ql_status = code
            raise


@functools.cache
def trading_class(exchange_id: str) -> type[Any]:
    """The ``ccxt.async_support`` class of `exchange_id` with `_ErrorDetails` mixed in."""
    return type(f"QlTrading{exchange_id}", (_ErrorDetails, rest_class(exchange_id)), {})


def new_trading_exchange(
    config: CcxtTradingConfig, credentials: Mapping[str, SecretStr] | None = None
) -> Any:
    """A configured ccxt exchange for order entry; markets seeded, no network touched."""
    options = _merge(dict(_OPTIONS.get(config.exchange, {})), config.options)
    settings: dict[str, Any] = {
        "enableRateLimit": config.enable_rate_limit,
        "timeout": int(config.timeout_s * 1000),
        "options": options,
    }
    for key, secret in (credentials or {}).items():
        settings[key] = secret.get_secret_value()
    exchange = trading_class(config.exchange)(settings)
    if config.paper and config.exchange == "binance":
        exchange.set_sandbox_mode(True)
    if config.url is not None:
        exchange.urls["api"] = rewrite_urls(exchange.urls["api"], rest=config.url, ws=None)
    exchange.set_markets([_market(exchange, config, s) for s in config.symbols])
    return exchange


def _market(exchange: Any, config: CcxtTradingConfig, symbol: str) -> Any:
    base, quote = symbol.split("/", 1)
    market_id = config.market_id(symbol)
    info: dict[str, Any]
    if config.exchange == "binance":
        info = {"symbol": market_id, "status": "TRADING", "baseAsset": base, "quoteAsset": quote,
                "orderTypes": _BINANCE_ORDER_TYPES, "permissionSets": [["SPOT"]]}  # fmt: skip
    else:
        info = {"product_id": market_id, "base_currency_id": base, "quote_currency_id": quote,
                "product_type": "SPOT", "status": "online"}  # fmt: skip
    return exchange.safe_market_structure(
        {
            "id": market_id,
            "lowercaseId": market_id.lower(),
            "symbol": symbol,
            "base": base,
            "quote": quote,
            "baseId": base,
            "quoteId": quote,
            "type": "spot",
            "spot": True,
            "margin": False,
            "swap": False,
            "future": False,
            "option": False,
            "contract": False,
            "active": True,
            "precision": {"amount": 1e-12, "price": 1e-12},
            "info": info,
        }
    )


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
            base[key] = _merge(dict(base[key]), value)
        else:
            base[key] = value
    return base


def _outcome_unknown(exc: BaseException) -> bool:
    """True if a failed call may have had its effect (timeout, 5xx, transport, parsing)."""
    if isinstance(exc, OperationFailed):  # NetworkError, RequestTimeout, BadResponse, ...
        return True
    status = getattr(exc, "ql_status", None)
    if isinstance(status, int) and status >= 500:
        return True
    if isinstance(exc, ExchangeError):
        return isinstance(exc.__cause__, aiohttp.ClientError)  # a transport failure ccxt wraps
    return True  # anything unexpected (a parse error after the venue answered): unknown


def _not_found(exc: BaseException) -> bool:
    if isinstance(exc, OrderNotFound):
        return True
    if not isinstance(exc, ExchangeError):
        return False
    text = str(exc)
    return (
        getattr(exc, "ql_status", None) == 404
        or "-2013" in text
        or "Order does not exist" in text
        or "NOT_FOUND" in text
    )


def _duplicate(exc: BaseException) -> bool:
    text = str(exc)
    return "Duplicate order sent" in text or "DUPLICATE_CLIENT_ORDER_ID" in text


def _text(value: Decimal) -> str:
    """A decimal as the venue wants it: plain digits, no exponent, no trailing zeros."""
    text = format(value.normalize(), "f")
    return "0" if text in ("", "-0") else text


def _dec(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        if isinstance(value, float | int):
            return to_decimal(float(value))
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def _ms_to_dt(ms: Any) -> dt.datetime | None:
    if isinstance(ms, int | float) and ms > 0:
        return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return None


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# --- the venue --------------------------------------------------------------------------------


@dataclass
class _Known:
    """An order this venue object knows of, and what it has reported about it."""

    client_order_id: str
    symbol: str
    side: Side
    quantity: Decimal
    order_id: uuid.UUID
    strategy_id: str = ""
    price: Decimal | None = None
    venue_order_id: str | None = None
    confirmed: bool = False  # the venue has (or had) the order
    reported: OrderStatus | None = None  # last status reported, or applied through a state
    trade_ids: set[str] = field(default_factory=set)
    filled_reported: Decimal = Decimal(0)
    done: bool = False  # terminal and every fill reported: `poll` leaves it alone


class CcxtVenue:
    """A `Venue` on Binance spot or Coinbase Advanced Trade, through ccxt's REST client.

    Parameters
    ----------
    config
        Where and how (see `CcxtTradingConfig`).
    credentials
        ccxt credentials: ``{"apiKey": ..., "secret": ...}`` (`SecretStr` or str). Coinbase
        takes a CDP key name (``organizations/.../apiKeys/...``) and its EC private key (PEM).
    api_key, secret
        The same two, given on their own (they override `credentials`' ``apiKey``/``secret``).
    clock
        For report timestamps the venue does not give.
    """

    binance_page_size = 1000  # trades per myTrades call (Binance's maximum)

    def __init__(
        self,
        config: CcxtTradingConfig,
        *,
        credentials: Mapping[str, str | SecretStr] | None = None,
        api_key: str | SecretStr | None = None,
        secret: str | SecretStr | None = None,
        clock: Clock | None = None,
    ) -> None:
        given: dict[str, str | SecretStr] = dict(credentials or {})
        if api_key is not None:
            given["apiKey"] = api_key
        if secret is not None:
            given["secret"] = secret
        creds = check_credentials(given)
        for key in ("apiKey", "secret"):
            if not creds.get(key) or not creds[key].get_secret_value():
                raise ConfigError(
                    f"{_KEY}.credentials", f"{config.exchange} order entry needs {key!r}"
                )
        self.config = config
        self.name = config.venue_name
        self.paper = config.paper
        self.poll_interval_s = config.poll_interval_s
        self.clock: Clock = clock or WallClock()
        self.exchange: Any = new_trading_exchange(config, creds)
        self._binance = config.exchange == "binance"
        self._quotes = {s: s.split("/", 1)[1] for s in config.symbols}
        self._listener: VenueListener | None = None
        self._known: dict[str, _Known] = {}
        self._by_venue_id: dict[str, str] = {}
        self._strangers: dict[str, _Known] = {}  # venue order id -> an order we cannot name
        self._lock = asyncio.Lock()
        self.submitted = 0
        self.rejected = 0
        self.unknown = 0
        self.duplicates_adopted = 0
        self.rate_limit_retries = 0
        self.fills_reported = 0
        self.events_reported = 0
        self.poll_errors = 0

    # -- Venue port ------------------------------------------------------------------------
    def set_listener(self, listener: VenueListener) -> None:
        self._listener = listener

    async def close(self) -> None:
        """Close the ccxt exchange (its HTTP session)."""
        await self.exchange.close()

    async def __aenter__(self) -> CcxtVenue:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def submit(self, order: Order) -> None:
        """Place `order`; its acceptance and fills so far are reported before this returns.

        Raises `VenueRejectedError` (refused, or still rate limited after the retries: not
        placed) or `VenueUnknownError` (timeout, 5xx, dropped connection: query it, never
        resubmit). An id already used at the venue is adopted, not resent.
        """
        coid = order.client_order_id
        known = self._known.get(coid)
        if known is not None and known.confirmed:
            return  # placed through this object already: never send an id twice
        self._check(order)
        if known is not None:  # a second submit after an unknown outcome: look before sending
            try:
                found = await self._retrying(self._fetch_order, known)
            except Exception as exc:
                raise self._failure(exc, f"lookup of {coid} before resending") from exc
            if found is not None:
                await self._settle_after_send(known, found, adopted=True)
                return
        else:
            known = self._track(order)
        self.submitted += 1
        try:
            created = await self._retrying(self._create, order)
        except _RetriesExhaustedError as exc:
            known.done = True
            self.rejected += 1
            raise VenueRejectedError(
                f"{self.name} kept rate limiting {coid} ({exc.attempts} attempts, HTTP 429): "
                f"not placed: {exc.last}"
            ) from exc
        except Exception as exc:
            if _duplicate(exc):
                await self._adopt_duplicate(known, exc)
                return
            if not _outcome_unknown(exc):
                known.done = True
                self.rejected += 1
                raise VenueRejectedError(f"{self.name} refused {coid}: {exc}") from exc
            self.unknown += 1
            raise VenueUnknownError(
                f"{self.name}: outcome of {coid} unknown ({type(exc).__name__}: {exc}); "
                "query it, never resubmit"
            ) from exc
        self._attach(known, created)
        if self._binance:
            await self._settle_after_send(known, created)
            return
        # Coinbase answers with the order id only (a reused id: the existing order's).
        try:
            found = await self._retrying(self._fetch_order, known)
        except Exception as exc:
            log.warning("%s: %s placed, its state follows by poll: %s", self.name, coid, exc)
            found = None
        if found is None:
            async with self._lock:
                await self._accept(known, created)
            return
        await self._settle_after_send(known, found)

    async def cancel(self, client_order_id: str) -> None:
        """Cancel an open order; the cancellation (after any last fills) is reported.

        Raises `VenueRejectedError` if the venue has no such order, `VenueUnknownError` if it
        cannot be reached. An order that is no longer open is left as it is (its final state
        is reported).
        """
        known = self._known.get(client_order_id)
        if known is None or not known.confirmed or known.venue_order_id is None:
            # Found, not queried: its fills so far are still to be reported (after the cancel).
            try:
                found = await self._retrying(self._lookup, client_order_id, known)
            except Exception as exc:
                raise self._failure(exc, f"lookup of {client_order_id} to cancel") from exc
            if found is None:
                raise VenueRejectedError(f"{self.name} has no order {client_order_id} to cancel")
            if known is None:
                known = self._adopt(found)
            self._attach(known, found)
        try:
            answer = await self._retrying(self._cancel, known)
        except Exception as exc:
            if not (_not_found(exc) or self._cancel_refused(exc)):
                raise self._failure(exc, f"cancel of {client_order_id}") from exc
            answer = None  # no longer open (filled, canceled) or not visible yet
        try:
            current = await self._retrying(self._fetch_order, known)
        except Exception as exc:
            log.warning("%s: state after cancel of %s: %s", self.name, client_order_id, exc)
            current = answer if answer is not None and answer.get("status") else None
        if current is not None:
            await self._advance(known, current)

    async def query_order(self, client_order_id: str) -> VenueOrderState | None:
        """The venue's view of an order by client order id; None if it has no such order."""
        known = self._known.get(client_order_id)
        try:
            found = await self._retrying(self._lookup, client_order_id, known)
        except Exception as exc:
            raise self._failure(exc, f"query of {client_order_id}") from exc
        if found is None:
            return None
        if known is None:
            known = self._adopt(found)
        async with self._lock:
            self._attach(known, found)
            try:
                return await self._state(known, found, with_fills=True)
            except Exception as exc:
                raise self._failure(exc, f"fills of {client_order_id}") from exc

    async def open_orders(self) -> list[VenueOrderState]:
        """The venue's open orders on the configured symbols (fills follow by `poll`)."""
        out: list[VenueOrderState] = []
        for symbol in self.config.symbols:
            try:
                listing = await self._retrying(self._open_orders_raw, symbol)
            except Exception as exc:
                raise self._failure(exc, f"open orders of {symbol}") from exc
            for raw in listing:
                coid = raw.get("clientOrderId")
                if not coid:
                    continue
                known = self._known.get(coid) or self._adopt(raw)
                async with self._lock:
                    self._attach(known, raw)
                    out.append(await self._state(known, raw, with_fills=False))
        return out

    async def fills_since(self, since: dt.datetime) -> list[Fill]:
        """The account's fills on the configured symbols at or after `since`, oldest first.

        Each fill names our client order id (looked up by the venue order id when this object
        has not seen the order); these count as reported (`poll` does not repeat them).
        """
        since_ms = int(since.timestamp() * 1000)
        fills: list[Fill] = []
        for symbol in self.config.symbols:
            try:
                trades = await self._retrying(self._trades_since, symbol, since_ms)
                for trade in trades:
                    known = await self._known_for(symbol, str(trade.get("order") or ""))
                    fill = self._fill(known, trade)
                    if fill is None:
                        continue
                    if fill.trade_id not in known.trade_ids:
                        known.trade_ids.add(fill.trade_id)
                        known.filled_reported += fill.quantity
                    fills.append(fill)
            except VenueError:
                raise
            except Exception as exc:
                raise self._failure(exc, f"fills of {symbol}") from exc
        fills.sort(key=lambda f: (f.timestamp, f.trade_id))
        return fills

    async def positions(self) -> dict[str, Decimal] | None:
        """None: spot balances are the account's, not positions of one strategy."""
        return None

    async def poll(self) -> None:
        """Report status changes and new fills of the orders this object knows to be open.

        Every symbol is polled even if one fails; the first failure is raised at the end.
        """
        active = [k for k in self._known.values() if not k.done]
        first: VenueError | None = None
        for symbol in sorted({k.symbol for k in active}):
            try:
                await self._poll_symbol(symbol, [k for k in active if k.symbol == symbol])
            except Exception as exc:
                self.poll_errors += 1
                error = exc if isinstance(exc, VenueError) else self._failure(exc, f"poll {symbol}")
                log.warning("%s: poll of %s failed: %s", self.name, symbol, error)
                first = first or error
        if first is not None:
            raise first

    def stats(self) -> dict[str, Any]:
        return {
            "submitted": self.submitted,
            "rejected": self.rejected,
            "unknown": self.unknown,
            "duplicates_adopted": self.duplicates_adopted,
            "rate_limit_retries": self.rate_limit_retries,
            "fills_reported": self.fills_reported,
            "events_reported": self.events_reported,
            "poll_errors": self.poll_errors,
            "open": sum(not k.done for k in self._known.values()),
        }

    # -- submission ------------------------------------------------------------------------
    def _check(self, order: Order) -> None:
        coid = order.client_order_id
        if order.symbol not in self._quotes:
            raise VenueRejectedError(
                f"{self.name} does not trade {order.symbol} (configured: {self.config.symbols})"
            )
        if not (order.quantity.is_finite() and order.quantity > 0):
            raise VenueRejectedError(f"{coid}: quantity must be > 0, got {order.quantity}")
        if order.order_type is OrderType.LIMIT:
            if order.price is None or not (order.price.is_finite() and order.price > 0):
                raise VenueRejectedError(f"{coid}: limit price must be > 0, got {order.price}")
            if order.time_in_force is TimeInForce.DAY and self._binance:
                raise VenueRejectedError(
                    f"{coid}: binance spot has no DAY time in force (GTC, IOC, FOK only); "
                    "send GTC or IOC"
                )

    def _track(self, order: Order) -> _Known:
        known = _Known(
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            quantity=order.quantity,
            order_id=order.order_id,
            strategy_id=order.strategy_id,
            price=order.price,
        )
        self._known[order.client_order_id] = known
        return known

    async def _create(self, order: Order) -> Any:
        limit = order.order_type is OrderType.LIMIT
        price = float(order.price) if limit and order.price is not None else None
        params: dict[str, Any]
        if self._binance:
            params = {"newClientOrderId": order.client_order_id, "quantity": _text(order.quantity)}
            if limit and order.price is not None:
                params["price"] = _text(order.price)
                params["timeInForce"] = "IOC" if order.time_in_force is TimeInForce.IOC else "GTC"
        else:
            params = {
                "client_order_id": order.client_order_id,
                "order_configuration": self._coinbase_configuration(order),
            }
            if not limit and order.side is Side.BUY:
                # ccxt would size a market buy in quote (amount x price); our configuration
                # (base_size) replaces it, this only keeps ccxt from asking for a price.
                params["createMarketBuyOrderRequiresPrice"] = False
        return await self.exchange.create_order(
            order.symbol,
            order.order_type.value,
            order.side.value,
            float(order.quantity),
            price,
            params,
        )

    @staticmethod
    def _coinbase_configuration(order: Order) -> dict[str, Any]:
        size = _text(order.quantity)
        if order.order_type is OrderType.MARKET or order.price is None:
            return {"market_market_ioc": {"base_size": size}}
        price = _text(order.price)
        if order.time_in_force is TimeInForce.IOC:
            return {"sor_limit_ioc": {"base_size": size, "limit_price": price}}
        if order.time_in_force is TimeInForce.DAY:
            day = order.timestamp.astimezone(dt.UTC).date()
            end = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC) + _DAY
            return {
                "limit_limit_gtd": {
                    "base_size": size,
                    "limit_price": price,
                    "end_time": _iso(end),
                    "post_only": False,
                }
            }
        return {"limit_limit_gtc": {"base_size": size, "limit_price": price, "post_only": False}}

    async def _adopt_duplicate(self, known: _Known, error: BaseException) -> None:
        coid = known.client_order_id
        try:
            found = await self._retrying(self._fetch_order, known)
        except Exception as exc:
            raise VenueUnknownError(
                f"{self.name}: {coid} already at the venue ({error}) but the lookup failed: "
                f"{exc}; query it, never resubmit"
            ) from exc
        if found is None:
            raise VenueUnknownError(
                f"{self.name}: {coid} already at the venue ({error}) but not found yet; "
                "query it, never resubmit"
            )
        self.duplicates_adopted += 1
        await self._settle_after_send(known, found, adopted=True)

    async def _settle_after_send(self, known: _Known, found: Any, *, adopted: bool = False) -> None:
        """Report what the venue says of an order just placed (or found placed)."""
        if adopted:
            self._warn_mismatch(known, found)
        try:
            await self._advance(known, found)
        except Exception as exc:  # the order is placed: what follows comes by poll
            log.warning(
                "%s: %s placed, its state follows by poll: %s",
                self.name,
                known.client_order_id,
                exc,
            )

    def _warn_mismatch(self, known: _Known, found: Any) -> None:
        amount = _dec(found.get("amount"))
        side = found.get("side")
        if (
            (found.get("symbol") not in (None, known.symbol))
            or (side is not None and side != known.side.value)
            or (amount is not None and amount != known.quantity)
        ):
            log.error(
                "%s: %s is already used by a different order (%s %s %s); reporting that one",
                self.name,
                known.client_order_id,
                found.get("symbol"),
                side,
                amount,
            )

    # -- venue calls -----------------------------------------------------------------------
    async def _retrying(self, call: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """`call(*args)`, retried after each rate limit (429/418) per the Retry-After."""
        attempt = 0
        while True:
            try:
                return await call(*args)
            except (RateLimitExceeded, DDoSProtection) as exc:
                wait = getattr(exc, "retry_after", None)
                if wait is None:  # the venue did not say: back off, within the bound
                    wait = min(float(2**attempt), self.config.max_retry_wait_s)
                if attempt >= self.config.max_retries_429 or wait > self.config.max_retry_wait_s:
                    raise _RetriesExhaustedError(exc, attempt + 1) from exc
                attempt += 1
                self.rate_limit_retries += 1
                log.info("%s rate limited; retry %d in %.3gs", self.name, attempt, wait)
                await asyncio.sleep(wait)

    def _failure(self, exc: BaseException, what: str) -> VenueError:
        """A failure of a call other than a submission, as a `VenueError`."""
        if isinstance(exc, VenueError):
            return exc
        if isinstance(exc, _RetriesExhaustedError):
            return VenueUnknownError(f"{self.name}: {what}: {exc}")
        if _outcome_unknown(exc):
            return VenueUnknownError(f"{self.name}: {what}: {type(exc).__name__}: {exc}")
        return VenueRejectedError(f"{self.name}: {what}: {exc}")

    async def _fetch_order(self, known: _Known) -> Any:
        """The order as the venue has it now; None if the venue says it has no such order."""
        try:
            if self._binance:
                if known.venue_order_id is not None:
                    return await self.exchange.fetch_order(known.venue_order_id, known.symbol)
                return await self.exchange.fetch_order(
                    "", known.symbol, {"origClientOrderId": known.client_order_id}
                )
            if known.venue_order_id is not None:
                return await self.exchange.fetch_order(known.venue_order_id, known.symbol)
            return await self._coinbase_scan(known.client_order_id, [known.symbol])
        except (RateLimitExceeded, DDoSProtection):
            raise
        except BaseError as exc:
            if _not_found(exc):
                return None
            raise

    async def _lookup(self, coid: str, known: _Known | None) -> Any:
        if known is not None:
            return await self._fetch_order(known)
        if not self._binance:
            return await self._coinbase_scan(coid, list(self.config.symbols))
        for symbol in self.config.symbols:
            try:
                return await self.exchange.fetch_order("", symbol, {"origClientOrderId": coid})
            except (RateLimitExceeded, DDoSProtection):
                raise
            except BaseError as exc:
                if not _not_found(exc):
                    raise
        return None

    async def _cancel(self, known: _Known) -> Any:
        if self._binance:
            return await self.exchange.cancel_order(
                "", known.symbol, {"origClientOrderId": known.client_order_id}
            )
        return await self.exchange.cancel_order(known.venue_order_id, known.symbol)

    def _cancel_refused(self, exc: BaseException) -> bool:
        """Coinbase answers a cancel of a closed order ``success: false`` (ccxt: BadRequest)."""
        return not self._binance and "cancelOrders() has failed" in str(exc)

    async def _open_orders_raw(self, symbol: str) -> list[Any]:
        if self._binance:
            return list(await self.exchange.fetch_open_orders(symbol))
        return await self._coinbase_orders({"order_status": ["OPEN"]}, [symbol])

    async def _order_trades(self, known: _Known) -> list[Any]:
        if known.venue_order_id is None:
            return []
        if self._binance:
            return list(
                await self.exchange.fetch_my_trades(
                    known.symbol, None, None, {"orderId": known.venue_order_id}
                )
            )
        return await self._coinbase_fills({"order_ids": [known.venue_order_id]})

    async def _trades_since(self, symbol: str, since_ms: int) -> list[Any]:
        if not self._binance:
            begin = _iso(dt.datetime.fromtimestamp(since_ms / 1000, tz=dt.UTC))
            return await self._coinbase_fills(
                {"product_ids": [self.config.market_id(symbol)], "start_sequence_timestamp": begin}
            )
        # Binance: startTime/endTime at most 24 h apart, and not combinable with fromId. Find
        # the first trade at or after `since` day by day, then walk the (increasing) trade ids
        # with fromId: a burst of trades within one millisecond cannot be skipped that way.
        size = self.binance_page_size
        now = int(time.time() * 1000)
        first: int | None = None
        window = since_ms
        while first is None and window <= now:
            end = min(window + _DAY_MS - 1, now)
            page = await self.exchange.fetch_my_trades(symbol, window, size, {"endTime": end})
            if page:
                first = min(int(t["id"]) for t in page)
            window = end + 1
        out: dict[str, Any] = {}
        while first is not None:
            page = await self.exchange.fetch_my_trades(symbol, None, size, {"fromId": first})
            for trade in page:
                if (trade.get("timestamp") or since_ms) >= since_ms:
                    out[str(trade["id"])] = trade
            first = max(int(t["id"]) for t in page) + 1 if len(page) >= size else None
        return sorted(out.values(), key=lambda t: (t.get("timestamp") or 0, str(t["id"])))

    async def _coinbase_orders(self, params: dict[str, Any], symbols: list[str]) -> list[Any]:
        request = dict(params)
        request["product_ids"] = [self.config.market_id(s) for s in symbols]
        request["limit"] = 1000
        out: list[Any] = []
        for _ in range(_COINBASE_PAGES):
            response = await self.exchange.v3PrivateGetBrokerageOrdersHistoricalBatch(request)
            out.extend(self.exchange.parse_order(raw) for raw in response.get("orders") or [])
            cursor = response.get("cursor")
            if not response.get("has_next") or not cursor:
                break
            request["cursor"] = cursor
        return out

    async def _coinbase_scan(self, coid: str, symbols: list[str]) -> Any:
        """Coinbase cannot look an order up by client order id: list and match it here."""
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.config.lookup_window_s)
        request: dict[str, Any] = {
            "product_ids": [self.config.market_id(s) for s in symbols],
            "start_date": _iso(since),
            "limit": 1000,
        }
        for _ in range(_COINBASE_PAGES):
            response = await self.exchange.v3PrivateGetBrokerageOrdersHistoricalBatch(request)
            for raw in response.get("orders") or []:
                if raw.get("client_order_id") == coid:  # newest first: the latest use of the id
                    return self.exchange.parse_order(raw)
            cursor = response.get("cursor")
            if not response.get("has_next") or not cursor:
                break
            request["cursor"] = cursor
        return None

    async def _coinbase_fills(self, params: dict[str, Any]) -> list[Any]:
        request = dict(params)
        request["limit"] = 100
        raw: list[Any] = []
        for _ in range(_COINBASE_PAGES):
            response = await self.exchange.v3PrivateGetBrokerageOrdersHistoricalFills(request)
            raw.extend(response.get("fills") or [])
            cursor = response.get("cursor")
            if not cursor:
                break
            request["cursor"] = cursor
        return list(self.exchange.parse_trades(raw))

    # -- what the venue says -> reports ----------------------------------------------------
    def _attach(self, known: _Known, found: Any) -> None:
        venue_id = found.get("id")
        if venue_id:
            known.venue_order_id = str(venue_id)
            self._by_venue_id[str(venue_id)] = known.client_order_id
        known.confirmed = True

    def _adopt(self, found: Any) -> _Known:
        """Start tracking an order the venue told us of (a query, an open order, a fill)."""
        coid = str(found.get("clientOrderId") or "")
        side = Side.SELL if found.get("side") == "sell" else Side.BUY
        known = _Known(
            client_order_id=coid,
            symbol=str(found.get("symbol") or ""),
            side=side,
            quantity=_dec(found.get("amount")) or Decimal(0),
            order_id=ids.order_id(coid),
            price=_dec(found.get("price")),
            reported=_OPEN,  # its state went out with the answer that adopted it
        )
        self._known[coid] = known
        self._attach(known, found)
        return known

    def _status(self, found: Any) -> OrderStatus | None:
        """ACCEPTED (open), FILLED, CANCELED, EXPIRED or REJECTED; None if not stated."""
        info = found.get("info") or {}
        raw = info.get("status") if isinstance(info, dict) else None
        table = _RAW_STATUS["binance" if self._binance else "coinbase"]
        if isinstance(raw, str) and raw in table:
            return table[raw]
        unified = found.get("status")
        return _UNIFIED_STATUS.get(unified) if isinstance(unified, str) else None

    @staticmethod
    def _reason(found: Any, status: OrderStatus) -> str:
        info = found.get("info") or {}
        raw = info.get("status", "") if isinstance(info, dict) else ""
        detail = ""
        if isinstance(info, dict):
            detail = str(info.get("reject_message") or info.get("cancel_message") or "")
        return f"venue status {raw or status.value}" + (f": {detail}" if detail else "")

    def _at(self, *values: Any) -> dt.datetime:
        for value in values:
            when = _ms_to_dt(value)
            if when is not None:
                return when
        return self.clock.now()

    def _event(
        self, known: _Known, status: OrderStatus, at: dt.datetime, reason: str = ""
    ) -> OrderEvent:
        return OrderEvent(
            order_id=known.order_id,
            client_order_id=known.client_order_id,
            symbol=known.symbol,
            status=status,
            venue=self.name,
            timestamp=at,
            reason=reason,
        )

    def _fill(self, known: _Known, trade: Any) -> Fill | None:
        trade_id = str(trade.get("id") or "")
        price, quantity = _dec(trade.get("price")), _dec(trade.get("amount"))
        if not trade_id or price is None or quantity is None or price <= 0 or quantity <= 0:
            log.warning("%s: unusable trade for %s: %s", self.name, known.client_order_id, trade)
            return None
        fee = trade.get("fee") or {}
        cost = _dec(fee.get("cost")) or Decimal(0)
        currency = str(fee.get("currency") or self._quotes.get(known.symbol, ""))
        side = trade.get("side")
        try:
            return Fill(
                fill_id=ids.fill_id(self.name, trade_id),
                order_id=known.order_id,
                client_order_id=known.client_order_id,
                symbol=known.symbol,
                side=Side(side) if side in ("buy", "sell") else known.side,
                price=price,
                quantity=quantity,
                fee=cost,
                fee_currency=currency,
                liquidity=Liquidity.MAKER
                if trade.get("takerOrMaker") == "maker"
                else Liquidity.TAKER,
                timestamp=self._at(trade.get("timestamp")),
                venue=self.name,
                trade_id=trade_id,
                strategy_id=known.strategy_id,
            )
        except ValidationError as exc:
            log.warning("%s: unusable trade %s: %s", self.name, trade_id, exc)
            return None

    async def _report(self, report: VenueReport) -> None:
        if self._listener is not None:
            await self._listener(report)
        if isinstance(report, Fill):
            self.fills_reported += 1
        else:
            self.events_reported += 1

    async def _accept(self, known: _Known, found: Any) -> None:
        if known.reported is None:
            at = self._at(found.get("timestamp"))
            await self._report(self._event(known, OrderStatus.ACCEPTED, at))
            known.reported = OrderStatus.ACCEPTED

    async def _new_fills(self, known: _Known) -> list[Fill]:
        trades = await self._retrying(self._order_trades, known)
        trades = sorted(trades, key=lambda t: (t.get("timestamp") or 0, str(t.get("id"))))
        fills = [self._fill(known, t) for t in trades]
        return [f for f in fills if f is not None and f.trade_id not in known.trade_ids]

    async def _advance(self, known: _Known, found: Any) -> None:
        """Report what changed: ACCEPTED once, then new fills, then a terminal status."""
        async with self._lock:
            self._attach(known, found)
            status = self._status(found)
            if status is None:
                return
            filled = _dec(found.get("filled")) or Decimal(0)
            if status is OrderStatus.REJECTED and filled == 0:
                if known.reported is not OrderStatus.REJECTED:
                    at = self._at(found.get("lastUpdateTimestamp"), found.get("timestamp"))
                    reason = self._reason(found, status)
                    await self._report(self._event(known, status, at, reason))
                    known.reported = status
                known.done = True
                return
            await self._accept(known, found)
            if filled > known.filled_reported:
                for fill in await self._new_fills(known):
                    await self._report(fill)
                    known.trade_ids.add(fill.trade_id)
                    known.filled_reported += fill.quantity
            if not status.is_terminal:
                return
            if known.filled_reported < filled:
                log.info(
                    "%s: %s is %s with %s filled, %s reported: waiting for its trades",
                    self.name, known.client_order_id, status.value, filled, known.filled_reported,
                )  # fmt: skip
                return
            if status is not OrderStatus.FILLED and known.reported is not status:
                at = self._at(
                    found.get("lastUpdateTimestamp"),
                    found.get("lastTradeTimestamp"),
                    found.get("timestamp"),
                )
                await self._report(self._event(known, status, at, self._reason(found, status)))
                known.reported = status
            known.done = True

    async def _state(self, known: _Known, found: Any, *, with_fills: bool) -> VenueOrderState:
        """`found` as a `VenueOrderState` (caller holds the lock); its fills count as reported."""
        status = self._status(found) or _OPEN
        filled = _dec(found.get("filled")) or Decimal(0)
        if status is _OPEN and filled > 0:
            status = OrderStatus.PARTIALLY_FILLED
        fills: list[Fill] = []
        if with_fills and filled > 0:
            trades = await self._retrying(self._order_trades, known)
            fills = [f for f in (self._fill(known, t) for t in trades) if f is not None]
            fills.sort(key=lambda f: (f.timestamp, f.trade_id))
            for fill in fills:
                if fill.trade_id not in known.trade_ids:
                    known.trade_ids.add(fill.trade_id)
                    known.filled_reported += fill.quantity
        terminal = status.is_terminal
        if not (terminal and known.filled_reported < filled):
            known.reported = (
                _OPEN if status in (OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED) else status
            )
        known.done = terminal and known.filled_reported >= filled
        return VenueOrderState(
            client_order_id=known.client_order_id,
            venue_order_id=known.venue_order_id or str(found.get("id") or ""),
            symbol=known.symbol,
            side=known.side,
            quantity=_dec(found.get("amount")) or known.quantity,
            filled_quantity=filled,
            status=status,
            price=_dec(found.get("price")) or known.price,
            fills=tuple(fills),
            reason=self._reason(found, status) if terminal else "",
            updated_at=self._at(found.get("lastUpdateTimestamp"), found.get("timestamp")),
        )

    async def _poll_symbol(self, symbol: str, known: list[_Known]) -> None:
        listing = {
            o.get("clientOrderId"): o for o in await self._retrying(self._open_orders_raw, symbol)
        }
        for order in known:
            found = listing.get(order.client_order_id)
            if found is None:
                if not order.confirmed:
                    continue  # outcome unknown and not open: the engine's resolver queries it
                found = await self._retrying(self._fetch_order, order)
                if found is None:
                    continue  # not visible (yet): look again next time
            await self._advance(order, found)

    async def _known_for(self, symbol: str, venue_order_id: str) -> _Known:
        """The order a trade belongs to, fetched from the venue if this object has not seen it."""
        coid = self._by_venue_id.get(venue_order_id)
        if coid is not None and coid in self._known:
            return self._known[coid]
        stranger = self._strangers.get(venue_order_id)
        if stranger is not None:
            return stranger
        found = None
        if venue_order_id:
            try:
                found = await self._retrying(self.exchange.fetch_order, venue_order_id, symbol)
            except BaseError as exc:
                if not _not_found(exc):
                    raise
        if found is not None and found.get("clientOrderId"):
            known = self._adopt(found)
            known.done = self._status(found) in (
                OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED,
                OrderStatus.REJECTED,
            )  # fmt: skip
            return known
        placeholder = f"{self.name}:{venue_order_id}"
        stranger = _Known(
            client_order_id=placeholder,
            symbol=symbol,
            side=Side.BUY,
            quantity=Decimal(0),
            order_id=ids.order_id(placeholder),
            venue_order_id=venue_order_id,
            confirmed=True,
            reported=_OPEN,
            done=True,
        )
        self._strangers[venue_order_id] = stranger
        return stranger
