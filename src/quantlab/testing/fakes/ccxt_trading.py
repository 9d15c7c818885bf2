"""Local fake trading venues for ccxt: Binance spot and Coinbase Advanced Trade (REST), 127.0.0.1.

They speak what ``ccxt.async_support`` 4.5 sends and expects for order entry, with the venues'
own JSON shapes (taken from the venues' API references and from the payloads recorded in
ccxt's repository, ``ts/src/test/static/response/{binance,coinbase}.json``).

Binance spot (`FakeBinanceTrading`; point ccxt's REST URLs at ``fake.url``):

* ``POST/GET/DELETE /api/v3/order`` (form body / query string; ``newClientOrderId`` or
  ``origClientOrderId``), ``GET /api/v3/openOrders``, ``GET /api/v3/myTrades`` (``orderId``,
  ``startTime``/``endTime`` at most 24 h apart and not with ``fromId``, ``limit``),
  ``GET /api/v3/time``,
  ``GET /api/v3/exchangeInfo``. Private endpoints need ``X-MBX-APIKEY`` and a ``signature``
  parameter (not verified); a parameter the endpoint does not take is refused (``-1103``).
  Errors are Binance's: HTTP 400 with ``{"code": -2010, "msg":
  "Duplicate order sent."}`` (a client order id of an *open* order; Binance lets a closed
  order's id be reused, and so does the fake), ``-2013 Order does not exist.``, ``-2011
  Unknown order sent.``, ``-1121 Invalid symbol.``. An IOC or market remainder ends
  ``EXPIRED``, as on Binance.

Coinbase Advanced Trade (`FakeCoinbaseTrading`):

* ``POST /api/v3/brokerage/orders`` (``order_configuration``: ``market_market_ioc``,
  ``limit_limit_gtc``, ``limit_limit_gtd``, ``sor_limit_ioc``). A reused ``client_order_id``
  creates nothing and answers with the existing order, as Coinbase documents ("the order
  will not be created and the order corresponding with that ID will be returned instead").
* ``GET /api/v3/brokerage/orders/historical/{order_id}`` (404 ``NOT_FOUND`` if unknown),
  ``GET .../historical/batch`` and ``GET .../historical/fills`` (filters, newest first,
  ``cursor`` pagination), ``POST /api/v3/brokerage/orders/batch_cancel``,
  ``GET /api/v3/brokerage/time``. Every brokerage call needs an ``Authorization: Bearer
  <jwt>`` header (ccxt signs with an EC key; the fake checks only that the JWT's ``uri``
  names the request's path). An IOC remainder ends ``CANCELLED`` (an assumption: Coinbase
  does not document it).

Fill policy (`policy`, captured per order when it arrives): ``"fill"`` fills the whole order
on arrival (taker, one trade); ``"rest"`` fills nothing until `advance` (maker, one trade);
``"partial"`` fills one of `parts` parts on arrival and one more per `advance`. IOC and
market orders never rest: what did not fill on arrival is canceled. Limit orders fill at
their limit price, market orders at ``prices[symbol]``.

Test controls: `fail_next` (canned replies, with a Retry-After header for 429s, for the next
N requests to a path), `rate_limit_next`, `insufficient_funds_next`, `delay_next` (the
request is processed, the reply held back: the client times out), `fail_after_commit` /
`drop_after_commit` (the order is created, then a 5xx or a dropped connection),
`invisible_for_s` (a new order is not found by any lookup for that long), `schedule` (a
seeded random `faults.FaultSchedule` asked about every request: 429s, 5xx, timeouts and
dropped connections before or after the order is created, orders invisible for a while),
`advance`, `max_page` (Coinbase pages hold at most that many items: exercises cursor
pagination). Records: `requests`, `orders` (by the venue's order id),
`order(client_order_id)`, `create_count` (orders actually created per client order id),
`fills`, `cancel_count`, `invisible` (venue order id -> seconds an order created invisible
stayed "not found").
Order and trade ids are deterministic (counters).

Examples
--------
>>> async def demo():
...     async with FakeBinanceTrading(symbols=("BTC/USDT",)) as fake:
...         fake.policy = "rest"
...         ...  # CcxtVenue(CcxtTradingConfig(exchange="binance", url=fake.url, ...))
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import time
import uuid
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from quantlab.testing.fakes.faults import FaultSchedule

_NS: Final = uuid.UUID("1b0d6c1e-52f4-4a7e-9c55-0c7f3b7d2a11")
_REASONS: Final = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 418: "I'm a teapot",
    429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}  # fmt: skip
_DAY_MS: Final = 86_400_000
_STEP: Final = Decimal("1e-8")
POLICIES: Final = frozenset({"fill", "rest", "partial"})


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _num(value: Decimal) -> str:
    """Binance's fixed 8-decimal numbers."""
    return f"{value:.8f}"


def _plain(value: Decimal) -> str:
    """Coinbase's plain decimal strings (no exponent, no trailing zeros)."""
    text = format(value.normalize(), "f")
    return text if text not in ("-0", "") else "0"


def _iso(ms: int) -> str:
    when = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}000Z"


def _parse_iso_ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


# --- HTTP -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeRequest:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    headers: dict[str, str]
    at: float

    def param(self, name: str) -> str | None:
        """A query or form parameter (the first value), or None."""
        values = self.query.get(name) or self.form.get(name)
        return values[0] if values else None

    def params(self, name: str) -> list[str]:
        """Every value of a repeated query parameter (``order_ids=a&order_ids=b``)."""
        return list(self.query.get(name, [])) + list(self.form.get(name, []))

    @property
    def form(self) -> dict[str, list[str]]:
        if self.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return parse_qs(self.body.decode(), keep_blank_values=True)
        return {}

    def json(self) -> Any:
        return json.loads(self.body) if self.body else {}


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering


@dataclass
class _Fault:
    method: str | None
    path: str
    count: int
    status: int | None = None  # a canned reply (None: the normal one)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    commit: bool = False  # process the request before replying with the fault
    drop: bool = False
    invisible_s: float = 0.0  # an order the request creates is "not found" for this long


# --- the book ---------------------------------------------------------------------------------


@dataclass
class FakeOrder:
    """An order at the fake venue (venue-neutral; each fake renders its own JSON)."""

    venue_id: str
    client_order_id: str
    symbol: str  # the venue's id: BTCUSDT, BTC-USD
    side: str  # BUY | SELL
    type: str  # LIMIT | MARKET
    time_in_force: str  # GTC | IOC | GTD
    quantity: Decimal
    price: Decimal | None
    created_ms: int
    visible_at: float
    policy: str
    parts: list[Decimal]
    status: str = "open"  # open | filled | canceled | expired
    filled: Decimal = Decimal(0)
    quote_filled: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    updated_ms: int = 0
    end_ms: int | None = None  # GTD
    configuration: dict[str, Any] = field(default_factory=dict)  # coinbase's, echoed back

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled


@dataclass(frozen=True)
class FakeFill:
    trade_id: str
    order: FakeOrder
    price: Decimal
    quantity: Decimal
    fee: Decimal
    fee_asset: str
    maker: bool
    time_ms: int


class _FakeTradingVenue(ABC):
    """The server, the book and the test controls; subclasses speak a venue's API."""

    ioc_remainder = "expired"
    maker_fee = Decimal("0.0005")
    taker_fee = Decimal("0.001")

    def __init__(
        self,
        *,
        symbols: Sequence[str],
        policy: str = "fill",
        parts: int = 3,
        prices: Mapping[str, Decimal | float | str] | None = None,
        invisible_for_s: float = 0.0,
    ) -> None:
        self.symbols = tuple(symbols)
        self.policy = policy
        self.parts = parts
        self.prices = {s: Decimal(str(p)) for s, p in (prices or {}).items()}
        self.invisible_for_s = invisible_for_s
        self.max_page: int | None = None  # coinbase: cap every page at this many items
        self.requests: list[FakeRequest] = []
        self.orders: dict[str, FakeOrder] = {}
        self.fills: list[FakeFill] = []
        self.create_count: Counter[str] = Counter()
        self.cancel_count = 0
        self.schedule: FaultSchedule | None = None
        self.invisible: dict[str, float] = {}  # venue order id -> seconds "not found"
        self._next_invisible_s = 0.0  # of the order the request being served creates
        self._faults: list[_Fault] = []
        self._order_seq = 0
        self._trade_seq = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle ------------------------------------------------------------------------
    async def __aenter__(self) -> Any:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("start the fake first: `async with Fake...() as fake`")
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    # -- test controls --------------------------------------------------------------------
    def fail_next(
        self,
        path: str,
        status: int,
        body: Any,
        *,
        count: int = 1,
        method: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay_s: float = 0.0,
    ) -> None:
        """Answer the next `count` requests to `path` with `status` and `body` (not processed)."""
        self._faults.append(
            _Fault(method, path, count, status, body, dict(headers or {}), delay_s=delay_s)
        )

    def rate_limit_next(
        self, path: str, *, count: int = 1, retry_after: float | None = 1, method: str | None = None
    ) -> None:
        """HTTP 429 (with ``Retry-After: <retry_after>`` unless None) for the next requests."""
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        self.fail_next(
            path, 429, self.rate_limit_body(), count=count, method=method, headers=headers
        )

    def delay_next(
        self, path: str, seconds: float, *, count: int = 1, method: str | None = None
    ) -> None:
        """Process the next requests to `path` at once, but hold the reply for `seconds`."""
        self._faults.append(_Fault(method, path, count, delay_s=seconds, commit=True))

    def fail_after_commit(
        self,
        path: str,
        status: int = 503,
        body: Any = None,
        *,
        count: int = 1,
        method: str | None = None,
    ) -> None:
        """Process the next requests to `path`, then answer `status` (a 5xx after the commit)."""
        reply_body = body if body is not None else self.server_error_body(status)
        self._faults.append(_Fault(method, path, count, status, reply_body, commit=True))

    def drop_after_commit(self, path: str, *, count: int = 1, method: str | None = None) -> None:
        """Process the next requests to `path`, then close the connection without a reply."""
        self._faults.append(_Fault(method, path, count, commit=True, drop=True))

    def order(self, client_order_id: str) -> FakeOrder | None:
        """The newest order with `client_order_id` (visible or not)."""
        found = [o for o in self.orders.values() if o.client_order_id == client_order_id]
        return found[-1] if found else None

    def requests_to(self, path: str, method: str | None = None) -> list[FakeRequest]:
        return [
            r for r in self.requests if r.path == path and (method is None or r.method == method)
        ]

    def advance(self, client_order_id: str | None = None) -> int:
        """Fill the next part of one resting order (or of every one); returns the fills made."""
        made = 0
        for order in list(self.orders.values()):
            if not order.is_open or (
                client_order_id is not None and order.client_order_id != client_order_id
            ):
                continue
            if not order.parts:
                order.parts = [order.remaining]
            made += self._execute(order, order.parts.pop(0), maker=True)
        return made

    # -- for subclasses -------------------------------------------------------------------
    @abstractmethod
    def route(self, request: FakeRequest) -> Reply:
        """The venue's answer to `request`."""

    @abstractmethod
    def venue_symbol(self, symbol: str) -> str:
        """``"BTC/USDT"`` -> the venue's market id."""

    @abstractmethod
    def rate_limit_body(self) -> Any: ...

    @abstractmethod
    def server_error_body(self, status: int) -> Any: ...

    @abstractmethod
    def new_order_id(self, seq: int) -> str: ...

    @abstractmethod
    def new_trade_id(self, seq: int) -> str: ...

    @abstractmethod
    def creates_order(self, request: FakeRequest) -> bool:
        """True if `request` is an order entry (the faults that commit apply to it)."""

    def quote_of(self, venue_symbol: str) -> str:
        for symbol in self.symbols:
            if self.venue_symbol(symbol) == venue_symbol:
                return symbol.split("/", 1)[1]
        return ""

    def known_symbol(self, venue_symbol: str) -> bool:
        return any(self.venue_symbol(s) == venue_symbol for s in self.symbols)

    def visible(self, order: FakeOrder) -> bool:
        return time.monotonic() >= order.visible_at

    def create(
        self,
        *,
        client_order_id: str,
        symbol: str,
        side: str,
        type: str,
        time_in_force: str,
        quantity: Decimal,
        price: Decimal | None,
        end_ms: int | None = None,
        configuration: dict[str, Any] | None = None,
    ) -> FakeOrder:
        """Put an order on the book and run the fill policy for its arrival."""
        self._order_seq += 1
        created = now_ms()
        invisible = max(self.invisible_for_s, self._next_invisible_s)
        order = FakeOrder(
            venue_id=self.new_order_id(self._order_seq),
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            type=type,
            time_in_force=time_in_force,
            quantity=quantity,
            price=price,
            created_ms=created,
            updated_ms=created,
            visible_at=time.monotonic() + invisible,
            policy=self.policy,
            parts=self._split(quantity),
            end_ms=end_ms,
            configuration=configuration or {},
        )
        self.orders[order.venue_id] = order
        self.create_count[client_order_id] += 1
        if invisible > 0:
            self.invisible[order.venue_id] = invisible
        if self.policy == "fill":
            self._execute(order, order.quantity, maker=False)
        elif self.policy == "partial":
            self._execute(order, order.parts.pop(0), maker=False)
        if order.is_open and (type == "MARKET" or time_in_force == "IOC"):
            order.status = self.ioc_remainder
            order.updated_ms = now_ms()
        return order

    def cancel(self, order: FakeOrder) -> bool:
        if not order.is_open:
            return False
        order.status = "canceled"
        order.updated_ms = now_ms()
        self.cancel_count += 1
        return True

    def expire_due(self) -> None:
        """GTD orders whose end time has passed expire (checked on every request)."""
        now = now_ms()
        for order in self.orders.values():
            if order.is_open and order.end_ms is not None and order.end_ms <= now:
                order.status = "expired"
                order.updated_ms = order.end_ms

    def order_fills(self, order: FakeOrder) -> list[FakeFill]:
        return [f for f in self.fills if f.order is order]

    # -- machinery ------------------------------------------------------------------------
    def _split(self, quantity: Decimal) -> list[Decimal]:
        n = max(1, self.parts if self.policy == "partial" else 1)
        part = (quantity / n).quantize(_STEP, rounding=ROUND_DOWN)
        if part <= 0:
            return [quantity]
        return [part] * (n - 1) + [quantity - part * (n - 1)]

    def _execute(self, order: FakeOrder, quantity: Decimal, *, maker: bool) -> int:
        quantity = min(quantity, order.remaining)
        if quantity <= 0 or not order.is_open:
            return 0
        price = order.price if order.price is not None else self.prices.get(order.symbol)
        if price is None:
            price = Decimal("100")
        fee = (price * quantity * (self.maker_fee if maker else self.taker_fee)).quantize(_STEP)
        self._trade_seq += 1
        at = now_ms()
        self.fills.append(
            FakeFill(
                trade_id=self.new_trade_id(self._trade_seq),
                order=order,
                price=price,
                quantity=quantity,
                fee=fee,
                fee_asset=self.quote_of(order.symbol),
                maker=maker,
                time_ms=at,
            )
        )
        order.filled += quantity
        order.quote_filled += price * quantity
        order.fees += fee
        order.updated_ms = at
        if order.remaining <= 0:
            order.status = "filled"
            order.parts = []
        return 1

    def _take_fault(self, request: FakeRequest) -> _Fault | None:
        for fault in self._faults:
            if fault.path == request.path and fault.method in (None, request.method):
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    async def _dispatch(self, request: FakeRequest) -> Reply:
        self.requests.append(request)
        self.expire_due()
        fault = self._take_fault(request)
        if fault is None:
            fault = self._scheduled(request)
        if fault is None:
            return self.route(request)
        reply = self._route_creating(request, fault.invisible_s) if fault.commit else None
        if fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault.drop:
            return Reply(0, None, drop=True)
        if fault.status is not None:
            return Reply(fault.status, fault.body, dict(fault.headers))
        assert reply is not None  # noqa: S101 (a delay-only fault always commits)
        return reply

    def _scheduled(self, request: FakeRequest) -> _Fault | None:
        """The `schedule`'s fault for `request`, as a one-off `_Fault`."""
        if self.schedule is None:
            return None
        planned = self.schedule.draw(creates_order=self.creates_order(request))
        if planned is None:
            return None
        status = planned.status
        body: Any = None
        if status == 429:
            body = self.rate_limit_body()
        elif status is not None:
            body = self.server_error_body(status)
        return _Fault(
            request.method,
            request.path,
            1,
            status,
            body,
            planned.headers,
            delay_s=planned.delay_s,
            commit=planned.commit,
            drop=planned.drop,
            invisible_s=planned.invisible_s,
        )

    def _route_creating(self, request: FakeRequest, invisible_s: float) -> Reply:
        """`route(request)`; an order it creates stays invisible for `invisible_s`."""
        self._next_invisible_s = invisible_s
        try:
            return self.route(request)
        finally:
            self._next_invisible_s = 0.0

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *lines = head.split("\r\n")
            method, target, _version = request_line.split(" ", 2)
            headers = {
                k.strip().lower(): v.strip()
                for k, v in (x.split(":", 1) for x in lines if ":" in x)
            }
            length = int(headers.get("content-length", "0") or 0)
            body = await reader.readexactly(length) if length else b""
            parts = urlsplit(target)
            request = FakeRequest(
                method=method.upper(),
                path=parts.path,
                query=parse_qs(parts.query, keep_blank_values=True),
                body=body,
                headers=headers,
                at=time.monotonic(),
            )
            reply = await self._dispatch(request)
            if reply.drop:
                writer.transport.abort()
                return
            payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body)
            data = payload.encode() if isinstance(payload, str) else payload
            head_out = [
                f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Error')}",
                "Content-Type: application/json",
                f"Content-Length: {len(data)}",
                "Connection: close",
                *(f"{k}: {v}" for k, v in reply.headers.items()),
            ]
            writer.write(("\r\n".join(head_out) + "\r\n\r\n").encode("latin-1") + data)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)


# --- Binance spot -----------------------------------------------------------------------------

_BINANCE_PRIVATE: Final = frozenset(
    {"/api/v3/order", "/api/v3/openOrders", "/api/v3/myTrades", "/api/v3/account"}
)
_SIGNED: Final = frozenset({"recvWindow", "timestamp", "signature"})
# The parameters each endpoint takes; Binance refuses any other (-1103).
_BINANCE_PARAMS: Final = {
    ("POST", "/api/v3/order"): _SIGNED | {
        "symbol", "side", "type", "timeInForce", "quantity", "quoteOrderQty", "price",
        "newClientOrderId", "strategyId", "strategyType", "stopPrice", "trailingDelta",
        "icebergQty", "newOrderRespType", "selfTradePreventionMode",
    },
    ("GET", "/api/v3/order"): _SIGNED | {"symbol", "orderId", "origClientOrderId"},
    ("DELETE", "/api/v3/order"): _SIGNED | {
        "symbol", "orderId", "origClientOrderId", "newClientOrderId", "cancelRestrictions",
    },
    ("GET", "/api/v3/openOrders"): _SIGNED | {"symbol"},
    ("GET", "/api/v3/myTrades"): _SIGNED | {
        "symbol", "orderId", "startTime", "endTime", "fromId", "limit",
    },
}  # fmt: skip
_COINBASE_ORDER_KEYS: Final = frozenset(
    {
        "client_order_id", "product_id", "side", "order_configuration", "leverage",
        "margin_type", "retail_portfolio_id", "self_trade_prevention_id", "preview_id",
        "attached_order_configuration", "sor_preference",
    }
)  # fmt: skip


def binance_error(code: int, msg: str, status: int = 400) -> Reply:
    return Reply(status, {"code": code, "msg": msg})


class FakeBinanceTrading(_FakeTradingVenue):
    """Fake Binance spot order entry; use as ``async with FakeBinanceTrading() as fake``."""

    ioc_remainder = "expired"

    def __init__(self, *, symbols: Sequence[str] = ("BTC/USDT", "ETH/USDT"), **kw: Any) -> None:
        super().__init__(symbols=symbols, **kw)

    def venue_symbol(self, symbol: str) -> str:
        return symbol.replace("/", "")

    def new_order_id(self, seq: int) -> str:
        return str(1000 + seq)

    def new_trade_id(self, seq: int) -> str:
        return str(5000 + seq)

    def creates_order(self, request: FakeRequest) -> bool:
        return request.method == "POST" and request.path == "/api/v3/order"

    def rate_limit_body(self) -> Any:
        return {
            "code": -1003,
            "msg": "Too much request weight used; current limit is 6000 request weight per "
            "1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.",
        }

    def server_error_body(self, status: int) -> Any:
        return {
            "code": -1001,
            "msg": "Internal error; unable to process your request. Please try again.",
        }

    def insufficient_funds_next(self, *, count: int = 1) -> None:
        self.fail_next(
            "/api/v3/order",
            400,
            {"code": -2010, "msg": "Account has insufficient balance for requested action."},
            count=count,
            method="POST",
        )

    # -- JSON -----------------------------------------------------------------------------
    def status_of(self, order: FakeOrder) -> str:
        if order.status == "open":
            return "PARTIALLY_FILLED" if order.filled > 0 else "NEW"
        return {"filled": "FILLED", "canceled": "CANCELED", "expired": "EXPIRED"}[order.status]

    def order_json(self, order: FakeOrder) -> dict[str, Any]:
        return {
            "symbol": order.symbol,
            "orderId": int(order.venue_id),
            "orderListId": -1,
            "clientOrderId": order.client_order_id,
            "price": _num(order.price or Decimal(0)),
            "origQty": _num(order.quantity),
            "executedQty": _num(order.filled),
            "cummulativeQuoteQty": _num(order.quote_filled),
            "status": self.status_of(order),
            "timeInForce": order.time_in_force,
            "type": order.type,
            "side": order.side,
            "stopPrice": _num(Decimal(0)),
            "icebergQty": _num(Decimal(0)),
            "time": order.created_ms,
            "updateTime": order.updated_ms,
            "isWorking": True,
            "workingTime": order.created_ms,
            "origQuoteOrderQty": _num(Decimal(0)),
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }

    def trade_json(self, fill: FakeFill) -> dict[str, Any]:
        return {
            "symbol": fill.order.symbol,
            "id": int(fill.trade_id),
            "orderId": int(fill.order.venue_id),
            "orderListId": -1,
            "price": _num(fill.price),
            "qty": _num(fill.quantity),
            "quoteQty": _num(fill.price * fill.quantity),
            "commission": _num(fill.fee),
            "commissionAsset": fill.fee_asset,
            "time": fill.time_ms,
            "isBuyer": fill.order.side == "BUY",
            "isMaker": fill.maker,
            "isBestMatch": True,
        }

    # -- routes ---------------------------------------------------------------------------
    def route(self, request: FakeRequest) -> Reply:
        path, method = request.path, request.method
        if path == "/api/v3/time":
            return Reply(200, {"serverTime": now_ms()})
        if path == "/api/v3/exchangeInfo":
            return Reply(200, self._exchange_info())
        if path in _BINANCE_PRIVATE:
            if not request.headers.get("x-mbx-apikey"):
                return binance_error(-2014, "API-key format invalid.", 401)
            for name in ("signature", "timestamp"):
                if request.param(name) is None:
                    return binance_error(
                        -1102,
                        f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
                    )
            allowed = _BINANCE_PARAMS.get((method, path))
            sent = set(request.query) | set(request.form)
            if allowed is not None and not sent <= allowed:
                return binance_error(
                    -1103, f"An unknown parameter was sent: {sorted(sent - allowed)}"
                )
        if path == "/api/v3/order":
            if method == "POST":
                return self._new_order(request)
            if method == "GET":
                return self._get_order(request)
            if method == "DELETE":
                return self._cancel(request)
        if path == "/api/v3/openOrders" and method == "GET":
            symbol = request.param("symbol")
            if symbol is not None and not self.known_symbol(symbol):
                return binance_error(-1121, "Invalid symbol.")
            found = [
                self.order_json(o)
                for o in self.orders.values()
                if o.is_open and self.visible(o) and symbol in (None, o.symbol)
            ]
            return Reply(200, found)
        if path == "/api/v3/myTrades" and method == "GET":
            return self._my_trades(request)
        return Reply(404, {"code": -1000, "msg": f"no route {method} {path}"})

    def _exchange_info(self) -> dict[str, Any]:
        return {
            "timezone": "UTC",
            "serverTime": now_ms(),
            "rateLimits": [],
            "exchangeFilters": [],
            "symbols": [
                {
                    "symbol": self.venue_symbol(s),
                    "status": "TRADING",
                    "baseAsset": s.split("/")[0],
                    "baseAssetPrecision": 8,
                    "quoteAsset": s.split("/")[1],
                    "quotePrecision": 8,
                    "quoteAssetPrecision": 8,
                    "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT"],
                    "isSpotTradingAllowed": True,
                    "isMarginTradingAllowed": False,
                    "filters": [],
                    "permissions": [],
                    "permissionSets": [["SPOT"]],
                }
                for s in self.symbols
            ],
        }

    def _find(self, request: FakeRequest) -> FakeOrder | None:
        symbol = request.param("symbol")
        order_id = request.param("orderId")
        coid = request.param("origClientOrderId")
        for order in reversed(list(self.orders.values())):
            if order.symbol != symbol or not self.visible(order):
                continue
            if (order_id is not None and order.venue_id == order_id) or (
                order_id is None and coid is not None and order.client_order_id == coid
            ):
                return order
        return None

    def _new_order(self, request: FakeRequest) -> Reply:
        symbol = request.param("symbol") or ""
        if not self.known_symbol(symbol):
            return binance_error(-1121, "Invalid symbol.")
        side, type_ = request.param("side"), request.param("type")
        coid = request.param("newClientOrderId") or f"x-fake-{self._order_seq + 1}"
        quantity = request.param("quantity")
        if side not in ("BUY", "SELL") or type_ not in ("LIMIT", "MARKET") or not quantity:
            return binance_error(
                -1102, "Mandatory parameter was not sent, was empty/null, or malformed."
            )
        tif = request.param("timeInForce")
        price = request.param("price")
        if type_ == "LIMIT" and (tif not in ("GTC", "IOC", "FOK") or not price):
            return binance_error(
                -1102, "Mandatory parameter 'timeInForce' or 'price' was not sent."
            )
        if any(o.is_open and o.client_order_id == coid for o in self.orders.values()):
            return binance_error(-2010, "Duplicate order sent.")
        order = self.create(
            client_order_id=coid,
            symbol=symbol,
            side=side,
            type=type_,
            time_in_force=tif or "GTC",
            quantity=Decimal(quantity),
            price=Decimal(price) if type_ == "LIMIT" and price else None,
        )
        body = self.order_json(order)
        for key in ("stopPrice", "icebergQty", "time", "updateTime", "isWorking"):
            body.pop(key)
        body["transactTime"] = order.updated_ms
        body["fills"] = [
            {
                "price": _num(f.price),
                "qty": _num(f.quantity),
                "commission": _num(f.fee),
                "commissionAsset": f.fee_asset,
                "tradeId": int(f.trade_id),
            }
            for f in self.order_fills(order)
        ]
        return Reply(200, body)

    def _get_order(self, request: FakeRequest) -> Reply:
        order = self._find(request)
        if order is None:
            return binance_error(-2013, "Order does not exist.")
        return Reply(200, self.order_json(order))

    def _cancel(self, request: FakeRequest) -> Reply:
        order = self._find(request)
        if order is None or not self.cancel(order):
            return binance_error(-2011, "Unknown order sent.")
        body = self.order_json(order)
        for key in ("stopPrice", "icebergQty", "time", "updateTime", "isWorking", "workingTime"):
            body.pop(key)
        body["origClientOrderId"] = order.client_order_id
        body["clientOrderId"] = f"cancel-{order.venue_id}"
        body["transactTime"] = order.updated_ms
        return Reply(200, body)

    def _my_trades(self, request: FakeRequest) -> Reply:
        symbol = request.param("symbol")
        if symbol is None or not self.known_symbol(symbol):
            return binance_error(-1121, "Invalid symbol.")
        order_id, from_id = request.param("orderId"), request.param("fromId")
        start, end = request.param("startTime"), request.param("endTime")
        limit = min(int(request.param("limit") or 500), 1000)
        start_ms = int(start) if start is not None else None
        end_ms = int(end) if end is not None else None
        if from_id is not None and (start_ms is not None or end_ms is not None):
            return binance_error(-1128, "Combination of optional parameters invalid.")
        if start_ms is not None and end_ms is not None and end_ms - start_ms > _DAY_MS:
            return binance_error(-1127, "More than 24 hours between startTime and endTime.")
        if start_ms is not None and end_ms is None:
            end_ms = start_ms + _DAY_MS
        if end_ms is not None and start_ms is None:
            start_ms = end_ms - _DAY_MS
        found = []
        for fill in self.fills:
            order = fill.order
            if order.symbol != symbol or not self.visible(order):
                continue
            if order_id is not None and order.venue_id != order_id:
                continue
            if from_id is not None and int(fill.trade_id) < int(from_id):
                continue
            if start_ms is not None and not (start_ms <= fill.time_ms <= (end_ms or 0)):
                continue
            found.append(fill)
        if from_id is None and start_ms is None:
            found = found[-limit:]  # the most recent ones
        return Reply(200, [self.trade_json(f) for f in found[:limit]])


# --- Coinbase Advanced Trade ------------------------------------------------------------------

_CB: Final = "/api/v3/brokerage"
_KIND_TIF: Final = {"sor_limit_ioc": "IOC", "market_market_ioc": "IOC", "limit_limit_gtd": "GTD"}
_CONFIG_TIF: Final = {
    "market_market_ioc": "IMMEDIATE_OR_CANCEL",
    "limit_limit_gtc": "GOOD_UNTIL_CANCELLED",
    "limit_limit_gtd": "GOOD_UNTIL_DATE_TIME",
    "sor_limit_ioc": "IMMEDIATE_OR_CANCEL",
}


def coinbase_error(status: int, error: str, message: str) -> Reply:
    return Reply(status, {"error": error, "error_details": message, "message": message})


def ec_key_pem() -> str:
    """A fresh EC (P-256) private key in PEM: the secret ccxt signs Coinbase Advanced Trade
    requests with (the fake does not check the signature, only that one is sent)."""
    from cryptography.hazmat.primitives import serialization  # ccxt's own dependency
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


class FakeCoinbaseTrading(_FakeTradingVenue):
    """Fake Coinbase Advanced Trade order entry; ``async with FakeCoinbaseTrading() as fake``."""

    ioc_remainder = "canceled"

    def __init__(self, *, symbols: Sequence[str] = ("BTC/USD", "ETH/USD"), **kw: Any) -> None:
        super().__init__(symbols=symbols, **kw)
        self.user_id = str(uuid.uuid5(_NS, "coinbase-user"))

    def venue_symbol(self, symbol: str) -> str:
        return symbol.replace("/", "-")

    def new_order_id(self, seq: int) -> str:
        return str(uuid.uuid5(_NS, f"coinbase-order-{seq}"))

    def new_trade_id(self, seq: int) -> str:
        return str(uuid.uuid5(_NS, f"coinbase-trade-{seq}"))

    def creates_order(self, request: FakeRequest) -> bool:
        return request.method == "POST" and request.path == f"{_CB}/orders"

    def rate_limit_body(self) -> Any:
        return {"errors": [{"id": "rate_limit_exceeded", "message": "Too many requests"}]}

    def server_error_body(self, status: int) -> Any:
        return {"error": "INTERNAL", "error_details": "internal error", "message": "internal error"}

    def insufficient_funds_next(self, *, count: int = 1) -> None:
        self.fail_next(
            f"{_CB}/orders",
            200,
            self._failure("INSUFFICIENT_FUND", "Insufficient balance in source account"),
            count=count,
            method="POST",
        )

    @staticmethod
    def _failure(error: str, message: str) -> dict[str, Any]:
        return {
            "success": False,
            "failure_reason": "UNKNOWN_FAILURE_REASON",
            "order_id": "",
            "error_response": {
                "error": error,
                "message": message,
                "error_details": "",
                "new_order_failure_reason": error,
            },
            "order_configuration": None,
        }

    # -- JSON -----------------------------------------------------------------------------
    def status_of(self, order: FakeOrder) -> str:
        return {"open": "OPEN", "filled": "FILLED", "canceled": "CANCELLED",
                "expired": "EXPIRED"}[order.status]  # fmt: skip

    def order_json(self, order: FakeOrder) -> dict[str, Any]:
        fills = self.order_fills(order)
        average = order.quote_filled / order.filled if order.filled else Decimal(0)
        kind = next(iter(order.configuration), "")
        done = order.filled / order.quantity * 100
        return {
            "order_id": order.venue_id,
            "product_id": order.symbol,
            "user_id": self.user_id,
            "order_configuration": order.configuration,
            "side": order.side,
            "client_order_id": order.client_order_id,
            "status": self.status_of(order),
            "time_in_force": _CONFIG_TIF.get(kind, "UNKNOWN_TIME_IN_FORCE"),
            "created_time": _iso(order.created_ms),
            "completion_percentage": _plain(done.quantize(Decimal("0.01"))),
            "filled_size": _plain(order.filled),
            "average_filled_price": _plain(average),
            "fee": "",
            "number_of_fills": str(len(fills)),
            "filled_value": _plain(order.quote_filled),
            "pending_cancel": False,
            "size_in_quote": False,
            "total_fees": _plain(order.fees),
            "size_inclusive_of_fees": False,
            "total_value_after_fees": _plain(order.quote_filled + order.fees),
            "trigger_status": "INVALID_ORDER_TYPE",
            "order_type": order.type,
            "reject_reason": "REJECT_REASON_UNSPECIFIED",
            "settled": not order.is_open,
            "product_type": "SPOT",
            "reject_message": "",
            "cancel_message": "User requested cancel" if order.status == "canceled" else "",
            "order_placement_source": "RETAIL_ADVANCED",
            "outstanding_hold_amount": "0",
            "is_liquidation": False,
            "last_fill_time": _iso(fills[-1].time_ms) if fills else None,
            "edit_history": [],
            "leverage": "",
            "margin_type": "UNKNOWN_MARGIN_TYPE",
        }

    def fill_json(self, fill: FakeFill) -> dict[str, Any]:
        return {
            "entry_id": uuid.uuid5(_NS, f"entry-{fill.trade_id}").hex * 2,
            "trade_id": fill.trade_id,
            "order_id": fill.order.venue_id,
            "trade_time": _iso(fill.time_ms),
            "trade_type": "FILL",
            "price": _plain(fill.price),
            "size": _plain(fill.quantity),
            "commission": _plain(fill.fee),
            "product_id": fill.order.symbol,
            "sequence_timestamp": _iso(fill.time_ms),
            "liquidity_indicator": "MAKER" if fill.maker else "TAKER",
            "size_in_quote": False,
            "user_id": self.user_id,
            "side": fill.order.side,
        }

    # -- routes ---------------------------------------------------------------------------
    def route(self, request: FakeRequest) -> Reply:
        path, method = request.path, request.method
        if not path.startswith(_CB):
            return coinbase_error(404, "NOT_FOUND", f"no route {method} {path}")
        if path == f"{_CB}/time":
            ms = now_ms()
            return Reply(200, {"iso": _iso(ms), "epochSeconds": str(ms // 1000),
                               "epochMillis": str(ms)})  # fmt: skip
        unauthorized = self._check_auth(request)
        if unauthorized is not None:
            return unauthorized
        if path == f"{_CB}/orders" and method == "POST":
            return self._new_order(request)
        if path == f"{_CB}/orders/batch_cancel" and method == "POST":
            return self._batch_cancel(request)
        if path == f"{_CB}/orders/historical/batch" and method == "GET":
            return self._list_orders(request)
        if path == f"{_CB}/orders/historical/fills" and method == "GET":
            return self._list_fills(request)
        prefix = f"{_CB}/orders/historical/"
        if path.startswith(prefix) and method == "GET":
            order = self.orders.get(path[len(prefix) :])
            if order is None or not self.visible(order):
                return coinbase_error(404, "NOT_FOUND", "order with this orderID was not found")
            return Reply(200, {"order": self.order_json(order)})
        return coinbase_error(404, "NOT_FOUND", f"no route {method} {path}")

    def _check_auth(self, request: FakeRequest) -> Reply | None:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return coinbase_error(401, "UNAUTHENTICATED", "missing bearer token")
        try:
            payload_part = header.split(" ", 1)[1].split(".")[1]
            padded = payload_part + "=" * (-len(payload_part) % 4)
            claims = json.loads(base64.urlsafe_b64decode(padded))
        except (IndexError, ValueError):
            return coinbase_error(401, "UNAUTHENTICATED", "malformed JWT")
        uri = str(claims.get("uri", ""))
        if not uri.startswith(f"{request.method} ") or not uri.endswith(request.path):
            return coinbase_error(401, "UNAUTHENTICATED", f"JWT uri {uri!r} is not this request")
        return None

    def _new_order(self, request: FakeRequest) -> Reply:
        try:
            body = request.json()
        except ValueError:
            return coinbase_error(400, "INVALID_ARGUMENT", "body is not JSON")
        unknown = set(body) - _COINBASE_ORDER_KEYS
        if unknown:
            return coinbase_error(400, "INVALID_ARGUMENT", f"unknown fields {sorted(unknown)}")
        coid = str(body.get("client_order_id") or "")
        product = str(body.get("product_id") or "")
        side = body.get("side")
        configuration = body.get("order_configuration") or {}
        if not coid or side not in ("BUY", "SELL") or len(configuration) != 1:
            return coinbase_error(
                400,
                "INVALID_ARGUMENT",
                "client_order_id, side and one order_configuration are required",
            )
        if not self.known_symbol(product):
            return Reply(200, self._failure("INVALID_PRODUCT_ID", f"unknown product {product}"))
        existing = self.order(coid)
        if existing is None:
            kind, spec = next(iter(configuration.items()))
            if kind not in _CONFIG_TIF or "base_size" not in spec:
                return Reply(
                    200,
                    self._failure("UNSUPPORTED_ORDER_CONFIGURATION", f"unsupported {kind}"),
                )
            limit = spec.get("limit_price")
            end_time = spec.get("end_time")
            existing = self.create(
                client_order_id=coid,
                symbol=product,
                side=side,
                type="MARKET" if kind == "market_market_ioc" else "LIMIT",
                time_in_force=_KIND_TIF.get(kind, "GTC"),
                quantity=Decimal(str(spec["base_size"])),
                price=Decimal(str(limit)) if limit is not None else None,
                end_ms=_parse_iso_ms(end_time) if end_time else None,
                configuration=configuration,
            )
        return Reply(
            200,
            {
                "success": True,
                "failure_reason": "UNKNOWN_FAILURE_REASON",
                "order_id": existing.venue_id,
                "success_response": {
                    "order_id": existing.venue_id,
                    "product_id": existing.symbol,
                    "side": existing.side,
                    "client_order_id": existing.client_order_id,
                },
                "order_configuration": existing.configuration,
            },
        )

    def _batch_cancel(self, request: FakeRequest) -> Reply:
        try:
            ids = list(request.json().get("order_ids") or [])
        except ValueError:
            return coinbase_error(400, "INVALID_ARGUMENT", "body is not JSON")
        results = []
        for order_id in ids:
            order = self.orders.get(str(order_id))
            if order is None or not self.visible(order):
                results.append({"success": False, "failure_reason": "UNKNOWN_CANCEL_ORDER",
                                "order_id": order_id})  # fmt: skip
            elif not self.cancel(order):
                results.append({"success": False, "failure_reason": "INVALID_CANCEL_REQUEST",
                                "order_id": order_id})  # fmt: skip
            else:
                results.append({"success": True,
                                "failure_reason": "UNKNOWN_CANCEL_FAILURE_REASON",
                                "order_id": order_id})  # fmt: skip
        return Reply(200, {"results": results})

    def _page(self, items: list[Any], request: FakeRequest, default: int) -> tuple[list[Any], str]:
        limit = int(request.param("limit") or default)
        if self.max_page is not None:
            limit = min(limit, self.max_page)
        start = int(request.param("cursor") or 0)
        page = items[start : start + limit]
        cursor = str(start + limit) if start + limit < len(items) else ""
        return page, cursor

    def _products(self, request: FakeRequest) -> set[str]:
        return set(request.params("product_ids") + request.params("product_id"))

    def _list_orders(self, request: FakeRequest) -> Reply:
        statuses = set(request.params("order_status"))
        products = self._products(request)
        order_ids = set(request.params("order_ids"))
        start, end = request.param("start_date"), request.param("end_date")
        start_ms = _parse_iso_ms(start) if start else None
        end_ms = _parse_iso_ms(end) if end else None
        found = [
            o
            for o in self.orders.values()
            if self.visible(o)
            and (not statuses or self.status_of(o) in statuses)
            and (not products or o.symbol in products)
            and (not order_ids or o.venue_id in order_ids)
            and (start_ms is None or o.created_ms >= start_ms)
            and (end_ms is None or o.created_ms <= end_ms)
        ]
        found.sort(key=lambda o: (o.created_ms, o.venue_id), reverse=True)
        page, cursor = self._page(found, request, 1000)
        return Reply(
            200,
            {
                "orders": [self.order_json(o) for o in page],
                "sequence": "0",
                "has_next": bool(cursor),
                "cursor": cursor,
            },
        )

    def _list_fills(self, request: FakeRequest) -> Reply:
        order_ids = set(request.params("order_ids") + request.params("order_id"))
        products = self._products(request)
        start = request.param("start_sequence_timestamp")
        end = request.param("end_sequence_timestamp")
        start_ms = _parse_iso_ms(start) if start else None
        end_ms = _parse_iso_ms(end) if end else None
        found = [
            f
            for f in self.fills
            if self.visible(f.order)
            and (not order_ids or f.order.venue_id in order_ids)
            and (not products or f.order.symbol in products)
            and (start_ms is None or f.time_ms >= start_ms)
            and (end_ms is None or f.time_ms <= end_ms)
        ]
        found.reverse()  # newest first
        page, cursor = self._page(found, request, 100)
        return Reply(200, {"fills": [self.fill_json(f) for f in page], "cursor": cursor})
