"""A local fake of Alpaca's trading REST API (v2), for `adapters.alpaca.trading.AlpacaVenue`.

Speaks the JSON Alpaca documents (https://docs.alpaca.markets/reference), as alpaca-py's
`TradingClient` parses it:

* ``POST /v2/orders``: creates an order (422 ``{"code":40010001,"message":"client_order_id
  must be unique"}`` on a reused ``client_order_id``, 403 ``insufficient buying power``, 422 on
  an invalid field) and answers the order as created (status ``accepted``, nothing filled); the
  fill policy then runs.
* ``GET /v2/orders`` (``status=open|closed|all``, ``after``, ``until``, ``direction``,
  ``limit`` <= 500), ``GET /v2/orders/{id}``, ``GET /v2/orders:by_client_order_id?client_order_id=``
  (404 ``order not found``), ``DELETE /v2/orders/{id}`` (204; 422 ``order is not cancelable``
  once closed).
* ``GET /v2/account/activities/FILL`` and ``GET /v2/account/activities?activity_types=FILL``:
  the fills as ``TradeActivity`` objects (``after``, ``until``, ``direction`` (default
  ``desc``), ``page_size`` <= 100, ``page_token`` = the id of the last activity of the previous
  page), ids in Alpaca's ``"YYYYMMDDhhmmssSSS::uuid"`` form.
* ``GET /v2/positions`` (net of the fills; crypto symbols without the slash, ``BTCUSD``, as
  Alpaca lists them), ``GET /v2/account``.

Every request needs the ``APCA-API-KEY-ID`` / ``APCA-API-SECRET-KEY`` headers (401 otherwise).

Fill policy (`fill_mode`): ``"immediate"`` fills an order in full at its limit price (a market
order at `prices[symbol]`) right after it is created; ``"partial"`` fills ``1/parts`` of it on
creation and one more part per `advance()`; ``"rest"`` fills nothing until `advance()` (the
remainder) or `fill(coid, qty, price)`. An IOC order's unfilled remainder is canceled at once.
Time is a fake clock (`now`, starting 2024-01-02 15:00 UTC) that moves 1 s per order event, so
ids and timestamps are deterministic: order id = uuid5(client_order_id).

Test controls: `fail_next` (canned errors: 429 + Retry-After, 500, 503, 422...), `delay_next`
(answer late: the request is processed, the answer waits, so a client times out on a done
request), `commit_then_fail` (create the order, then answer 504/500 or drop the connection),
`invisible_for` (new orders are "not found" on every read for a while: eventual consistency),
`schedule` (a seeded random `faults.FaultSchedule` asked about every request: 429s, 5xx,
timeouts and dropped connections before or after the order is created, orders invisible for a
while), `hold_responses` / `release` (order POST answers wait until released), `advance`,
`fill`, `cancel_order`, `expire`, `reject`; records: `requests`, `orders` (by
client_order_id), `create_count` (creations per client_order_id: must stay 1), `fills` (the
activities), `invisible` (how long each order created invisible stayed "not found").

>>> with FakeAlpacaTrading(fill_mode="rest") as fake:                   # doctest: +SKIP
...     venue = AlpacaVenue(AlpacaTradingConfig(url=fake.url), "test-key", "test-secret")
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Literal
from urllib.parse import parse_qs, urlsplit

from quantlab.testing.fakes.faults import Fault, FaultSchedule

START: Final = dt.datetime(2024, 1, 2, 15, 0, tzinfo=dt.UTC)
_NS: Final = uuid.UUID("0f3c2a8e-6a55-4a7e-9d2b-5b1f0c9e7d31")
ACCOUNT_ID: Final = str(uuid.uuid5(_NS, "account"))
_OPEN: Final = frozenset({"new", "accepted", "pending_new", "partially_filled", "pending_cancel"})
_CRYPTO_QUOTES: Final = ("USD", "USDT", "USDC", "BTC")
_HTML_5XX: Final = "<html><body><h1>{status} Gateway Error</h1></body></html>"

FillMode = Literal["immediate", "partial", "rest"]


def order_uuid(client_order_id: str) -> str:
    """The fake's (deterministic) Alpaca order id for a client order id."""
    return str(uuid.uuid5(_NS, f"order:{client_order_id}"))


def stamp(t: dt.datetime) -> str:
    """RFC 3339 with microseconds and ``Z``, as Alpaca writes timestamps."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(text.strip().replace(" ", "+"))
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


def _dec(value: Decimal) -> str:
    return format(value.normalize(), "f") if value == value.to_integral() else format(value, "f")


@dataclass
class FakeRequest:
    method: str
    path: str
    params: dict[str, str]
    body: Any = None


@dataclass
class _Failure:
    path_prefix: str
    method: str | None
    status: int
    body: Any
    headers: dict[str, str]
    times: int


@dataclass
class _Delay:
    path_prefix: str
    method: str | None
    seconds: float
    times: int


@dataclass
class _Reply:
    status: int
    body: Any = None  # dict/list -> JSON, str -> text, None -> empty
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    delay_s: float = 0.0
    hold: bool = False


class FakeAlpacaTrading:
    """Alpaca's trading REST API on 127.0.0.1 (a free port), thread-safe; see the module doc."""

    def __init__(
        self,
        *,
        key: str = "test-key",
        secret: str = "test-secret",  # noqa: S107
        fill_mode: FillMode = "immediate",
        parts: int = 2,
        buying_power: Decimal = Decimal("1000000"),
    ) -> None:
        self.key, self.secret = key, secret
        self.fill_mode: FillMode = fill_mode
        self.parts = parts
        self.buying_power = buying_power
        self.prices: dict[str, Decimal] = {}  # market-order fill price per symbol (default 100)
        self.advance_on_poll = False  # advance() before answering each GET /v2/orders
        self.now = START
        self.requests: list[FakeRequest] = []
        self.orders: dict[str, dict[str, Any]] = {}  # client_order_id -> Alpaca order JSON
        self.create_count: Counter[str] = Counter()
        self.fills: list[dict[str, Any]] = []  # FILL activities, oldest first
        self._by_id: dict[str, str] = {}  # order id -> client_order_id
        self._visible_at: dict[str, float] = {}  # client_order_id -> monotonic time
        self._invisible_s = 0.0
        self._next_invisible_s = 0.0  # of the order the request being served creates
        self.invisible: dict[str, float] = {}  # client_order_id -> seconds "not found"
        self.schedule: FaultSchedule | None = None
        self._failures: list[_Failure] = []
        self._delays: list[_Delay] = []
        self._commit_fail: list[int | Literal["drop"]] = []
        self._holding = False
        self._gate = threading.Event()
        self._gate.set()
        self.held = 0  # answers currently held back by `hold_responses`
        self._lock = threading.RLock()
        self._seq = 0
        self._http: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> FakeAlpacaTrading:
        self._http = _Server(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(
            target=self._http.serve_forever, args=(0.05,), name="fake-alpaca-trading", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeAlpacaTrading:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeAlpacaTrading:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL to give `TradingClient(url_override=...)` (no ``/v2``)."""
        if self._http is None:
            raise RuntimeError("start FakeAlpacaTrading first (use it as a context manager)")
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    # -- controls ------------------------------------------------------------------------------
    def fail_next(
        self,
        path_prefix: str,
        status: int,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        times: int = 1,
        method: str | None = None,
    ) -> None:
        """Answer the next `times` requests whose path starts with `path_prefix` (and of
        `method`, if given) with `status`, without processing them. `body` defaults to
        Alpaca's ``{"code", "message"}`` for a 4xx and an HTML gateway page for a 5xx."""
        if body is None:
            body = (
                _HTML_5XX.format(status=status)
                if status >= 500
                else {"code": status * 100_000, "message": _DEFAULT_MESSAGE.get(status, "error")}
            )
        with self._lock:
            self._failures.append(
                _Failure(path_prefix, method, status, body, dict(headers or {}), times)
            )

    def delay_next(
        self,
        seconds: float,
        path_prefix: str = "/v2/orders",
        *,
        method: str | None = "POST",
        times: int = 1,
    ) -> None:
        """Process the next matching request(s) normally but send the answer `seconds` late
        (a client with a shorter timeout gives up on a request that did happen)."""
        with self._lock:
            self._delays.append(_Delay(path_prefix, method, seconds, times))

    def commit_then_fail(self, status_or_drop: int | Literal["drop"] = 504, times: int = 1) -> None:
        """The next order POST(s) create the order, then answer `status_or_drop` (an HTML
        5xx page) or close the connection without an answer."""
        with self._lock:
            self._commit_fail.extend([status_or_drop] * times)

    def invisible_for(self, seconds: float) -> None:
        """Orders created from now on are "not found" by every read (by id, by client order
        id, listings) for `seconds` after their creation; 0 turns this off."""
        with self._lock:
            self._invisible_s = seconds

    def hold_responses(self) -> None:
        """Order POSTs are processed but their answers wait until `release()`."""
        with self._lock:
            self._holding = True
            self._gate.clear()

    def release(self) -> None:
        with self._lock:
            self._holding = False
            self._gate.set()

    def tick(self, seconds: float = 1.0) -> dt.datetime:
        """Move the fake clock on."""
        with self._lock:
            self.now += dt.timedelta(seconds=seconds)
            return self.now

    def advance(self) -> int:
        """Fill every open order one step (a part in "partial" mode, the rest otherwise)."""
        with self._lock:
            count = 0
            for coid, order in list(self.orders.items()):
                if order["status"] not in _OPEN:
                    continue
                remaining = Decimal(order["qty"]) - Decimal(order["filled_qty"])
                step = remaining
                if self.fill_mode == "partial":
                    step = min(remaining, Decimal(order["qty"]) / self.parts)
                if step > 0:
                    self._fill(coid, step, None)
                    count += 1
            return count

    def fill(
        self, client_order_id: str, qty: Decimal | None = None, price: Decimal | None = None
    ) -> dict[str, Any]:
        """Execute `qty` (default: the rest) of an open order at `price` (default: its limit
        or the symbol's market price); returns the FILL activity."""
        with self._lock:
            order = self.orders[client_order_id]
            if order["status"] not in _OPEN:
                raise ValueError(f"order {client_order_id} is {order['status']}, cannot fill")
            remaining = Decimal(order["qty"]) - Decimal(order["filled_qty"])
            return self._fill(client_order_id, remaining if qty is None else qty, price)

    def cancel_order(self, client_order_id: str, status: str = "canceled") -> None:
        """Close an open order at the venue's initiative (``canceled``/``expired``/``rejected``)."""
        with self._lock:
            order = self.orders[client_order_id]
            at = stamp(self._tick())
            order["status"] = status
            order["updated_at"] = at
            key = {"canceled": "canceled_at", "expired": "expired_at", "rejected": "failed_at"}
            order[key.get(status, "canceled_at")] = at

    def expire(self, client_order_id: str) -> None:
        self.cancel_order(client_order_id, "expired")

    def reject(self, client_order_id: str) -> None:
        self.cancel_order(client_order_id, "rejected")

    def requests_to(self, path_prefix: str, method: str | None = None) -> list[FakeRequest]:
        with self._lock:
            return [
                r
                for r in self.requests
                if r.path.startswith(path_prefix) and method in (None, r.method)
            ]

    # -- state (under the lock) ----------------------------------------------------------------
    def _tick(self) -> dt.datetime:
        self.now += dt.timedelta(seconds=1)
        return self.now

    def _visible(self, coid: str) -> bool:
        return time.monotonic() >= self._visible_at.get(coid, 0.0)

    def _create(self, body: dict[str, Any]) -> _Reply:
        coid = str(body.get("client_order_id") or uuid.uuid5(_NS, f"anon:{len(self.orders)}"))
        if coid in self.orders:
            return _Reply(422, {"code": 40010001, "message": "client_order_id must be unique"})
        problem = _validate(body)
        if problem:
            return _Reply(422, {"code": 40010001, "message": problem})
        symbol, qty = str(body["symbol"]), Decimal(str(body["qty"]))
        limit = Decimal(str(body["limit_price"])) if body.get("limit_price") is not None else None
        price = limit if limit is not None else self.prices.get(symbol, Decimal(100))
        if body["side"] == "buy" and qty * price > self.buying_power:
            return _Reply(403, {"code": 40310000, "message": "insufficient buying power"})
        at = stamp(self._tick())
        oid = order_uuid(coid)
        crypto = "/" in symbol
        order: dict[str, Any] = {
            "id": oid,
            "client_order_id": coid,
            "created_at": at,
            "updated_at": at,
            "submitted_at": at,
            "filled_at": None,
            "expired_at": None,
            "canceled_at": None,
            "failed_at": None,
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": str(uuid.uuid5(_NS, f"asset:{symbol}")),
            "symbol": symbol,
            "asset_class": "crypto" if crypto else "us_equity",
            "notional": None,
            "qty": _dec(qty),
            "filled_qty": "0",
            "filled_avg_price": None,
            "order_class": "",
            "order_type": body["type"],
            "type": body["type"],
            "side": body["side"],
            "time_in_force": body["time_in_force"],
            "limit_price": None if limit is None else _dec(limit),
            "stop_price": None,
            "status": "accepted",
            "extended_hours": bool(body.get("extended_hours", False)),
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
            "position_intent": "buy_to_open" if body["side"] == "buy" else "sell_to_close",
        }
        self.orders[coid] = order
        self._by_id[oid] = coid
        self.create_count[coid] += 1
        invisible = max(self._invisible_s, self._next_invisible_s)
        self._visible_at[coid] = time.monotonic() + invisible
        if invisible > 0:
            self.invisible[coid] = invisible
        answer = dict(order)  # as created: the fills below happen "after" the answer
        if self.fill_mode == "immediate":
            self._fill(coid, qty, None)
        elif self.fill_mode == "partial":
            self._fill(coid, qty / self.parts, None)
        if body["time_in_force"] == "ioc" and order["status"] in _OPEN:
            self.cancel_order(coid)
        return _Reply(200, answer)

    def _fill(self, coid: str, qty: Decimal, price: Decimal | None) -> dict[str, Any]:
        order = self.orders[coid]
        if price is None:
            limit = order["limit_price"]
            price = Decimal(limit) if limit else self.prices.get(order["symbol"], Decimal(100))
        total, filled = Decimal(order["qty"]), Decimal(order["filled_qty"])
        qty = min(qty, total - filled)
        if qty <= 0:
            raise ValueError(f"nothing left to fill on {coid}")
        avg = Decimal(order["filled_avg_price"] or 0)
        cum = filled + qty
        t = self._tick()
        self._seq += 1
        done = cum == total
        order.update(
            filled_qty=_dec(cum),
            filled_avg_price=_dec((avg * filled + price * qty) / cum),
            status="filled" if done else "partially_filled",
            updated_at=stamp(t),
            filled_at=stamp(t) if done else None,
        )
        activity = {
            "id": f"{t:%Y%m%d%H%M%S}{t.microsecond // 1000:03d}::"
            f"{uuid.uuid5(_NS, f'activity:{self._seq}')}",
            "account_id": ACCOUNT_ID,
            "activity_type": "FILL",
            "transaction_time": stamp(t),
            "type": "fill" if done else "partial_fill",
            "price": _dec(price),
            "qty": _dec(qty),
            "side": order["side"],
            "symbol": order["symbol"],
            "leaves_qty": _dec(total - cum),
            "order_id": order["id"],
            "cum_qty": _dec(cum),
            "order_status": order["status"],
        }
        self.fills.append(activity)
        return activity

    def _positions(self) -> list[dict[str, Any]]:
        net: dict[str, Decimal] = {}
        cost: dict[str, Decimal] = {}
        for f in self.fills:
            sign = 1 if f["side"] == "buy" else -1
            net[f["symbol"]] = net.get(f["symbol"], Decimal(0)) + sign * Decimal(f["qty"])
            cost[f["symbol"]] = cost.get(f["symbol"], Decimal(0)) + Decimal(f["qty"]) * Decimal(
                f["price"]
            )
        out = []
        for symbol, qty in sorted(net.items()):
            if qty == 0:
                continue
            crypto = "/" in symbol
            bought = sum(Decimal(f["qty"]) for f in self.fills if f["symbol"] == symbol)
            avg = cost[symbol] / bought
            value = abs(qty) * avg
            out.append(
                {
                    "asset_id": str(uuid.uuid5(_NS, f"asset:{symbol}")),
                    "symbol": symbol.replace("/", ""),
                    "exchange": "CRYPTO" if crypto else "NASDAQ",
                    "asset_class": "crypto" if crypto else "us_equity",
                    "asset_marginable": not crypto,
                    "qty": _dec(qty),
                    "avg_entry_price": _dec(avg),
                    "side": "long" if qty > 0 else "short",
                    "market_value": _dec(qty * avg),
                    "cost_basis": _dec(value),
                    "unrealized_pl": "0",
                    "unrealized_plpc": "0",
                    "unrealized_intraday_pl": "0",
                    "unrealized_intraday_plpc": "0",
                    "current_price": _dec(avg),
                    "lastday_price": _dec(avg),
                    "change_today": "0",
                    "qty_available": _dec(qty),
                }
            )
        return out

    def _account(self) -> dict[str, Any]:
        bp = _dec(self.buying_power)
        return {
            "id": ACCOUNT_ID,
            "account_number": "PA3FAKE00001",
            "status": "ACTIVE",
            "crypto_status": "ACTIVE",
            "currency": "USD",
            "buying_power": bp,
            "regt_buying_power": bp,
            "non_marginable_buying_power": bp,
            "cash": bp,
            "accrued_fees": "0",
            "portfolio_value": bp,
            "pattern_day_trader": False,
            "trading_blocked": False,
            "transfers_blocked": False,
            "account_blocked": False,
            "created_at": stamp(START - dt.timedelta(days=30)),
            "trade_suspended_by_user": False,
            "multiplier": "1",
            "shorting_enabled": False,
            "equity": bp,
            "last_equity": bp,
            "long_market_value": "0",
            "short_market_value": "0",
            "initial_margin": "0",
            "maintenance_margin": "0",
            "last_maintenance_margin": "0",
            "sma": "0",
            "daytrade_count": 0,
        }

    # -- routing -------------------------------------------------------------------------------
    def _route(
        self, method: str, path: str, params: dict[str, str], body: Any, headers: dict[str, str]
    ) -> _Reply:
        with self._lock:
            self.requests.append(FakeRequest(method, path, params, body))
            canned = self._take_failure(method, path)
            delay = self._take_delay(method, path)
            if canned is not None:
                canned.delay_s = delay
                return canned
            if (headers.get("apca-api-key-id"), headers.get("apca-api-secret-key")) != (
                self.key,
                self.secret,
            ):
                return _Reply(401, {"code": 40110000, "message": "request is not authorized"})
            creates = method == "POST" and path == "/v2/orders"
            planned = self.schedule.draw(creates_order=creates) if self.schedule else None
            if planned is not None and not planned.commit:
                return self._fault_reply(planned, delay)
            self._next_invisible_s = planned.invisible_s if planned is not None else 0.0
            try:
                reply = self._dispatch(method, path, params, body)
            finally:
                self._next_invisible_s = 0.0
            reply.delay_s = delay
            if planned is not None and planned.kind:
                return self._fault_reply(planned, delay, reply)
            if creates:
                if reply.status == 200 and self._commit_fail:
                    outcome = self._commit_fail.pop(0)
                    if outcome == "drop":
                        reply = _Reply(0, drop=True, delay_s=delay)
                    else:
                        reply = _Reply(outcome, _HTML_5XX.format(status=outcome), delay_s=delay)
                reply.hold = self._holding
            return reply

    @staticmethod
    def _fault_reply(fault: Fault, delay: float, done: _Reply | None = None) -> _Reply:
        """The answer a scheduled `fault` gives (`done`: the request's own, once processed)."""
        delay += fault.delay_s
        if fault.drop:
            return _Reply(0, drop=True, delay_s=delay)
        if fault.status is None:
            if done is None:
                raise ValueError(f"fault {fault.kind!r} answers normally but nothing was done")
            done.delay_s = delay
            return done
        if fault.status >= 500:
            page = _HTML_5XX.format(status=fault.status)
            return _Reply(fault.status, page, delay_s=delay)
        message = _DEFAULT_MESSAGE.get(fault.status, "error")
        body = {"code": fault.status * 100_000, "message": message}
        return _Reply(fault.status, body, fault.headers, delay_s=delay)

    def _take_failure(self, method: str, path: str) -> _Reply | None:
        for failure in self._failures:
            if path.startswith(failure.path_prefix) and failure.method in (None, method):
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                return _Reply(failure.status, failure.body, dict(failure.headers))
        return None

    def _take_delay(self, method: str, path: str) -> float:
        for delay in self._delays:
            if path.startswith(delay.path_prefix) and delay.method in (None, method):
                delay.times -= 1
                if delay.times <= 0:
                    self._delays.remove(delay)
                return delay.seconds
        return 0.0

    def _dispatch(self, method: str, path: str, params: dict[str, str], body: Any) -> _Reply:
        not_found = _Reply(404, {"code": 40410000, "message": "order not found"})
        if path == "/v2/orders" and method == "POST":
            if not isinstance(body, dict):
                return _Reply(400, {"code": 40010000, "message": "request body format is invalid"})
            return self._create(body)
        if path == "/v2/orders" and method == "GET":
            if self.advance_on_poll:
                self.advance()
            return _Reply(200, self._list_orders(params))
        if path == "/v2/orders:by_client_order_id" and method == "GET":
            coid = params.get("client_order_id", "")
            if coid not in self.orders or not self._visible(coid):
                return not_found
            return _Reply(200, self.orders[coid])
        if path.startswith("/v2/orders/") and method in ("GET", "DELETE"):
            coid = self._by_id.get(path.removeprefix("/v2/orders/"), "")
            if coid not in self.orders or not self._visible(coid):
                return not_found
            if method == "GET":
                return _Reply(200, self.orders[coid])
            if self.orders[coid]["status"] not in _OPEN:
                return _Reply(422, {"code": 42210000, "message": "order is not cancelable"})
            self.cancel_order(coid)
            return _Reply(204)
        if method == "GET" and path in ("/v2/account/activities/FILL", "/v2/account/activities"):
            types = params.get("activity_types", "FILL").split(",")
            if path.endswith("/FILL") or "FILL" in types:
                return self._activities(params)
            return _Reply(200, [])
        if method == "GET" and path.startswith("/v2/account/activities/"):
            kind = path.rsplit("/", 1)[1]
            return _Reply(422, {"code": 40010001, "message": f"invalid activity type: {kind}"})
        if method == "GET" and path == "/v2/positions":
            return _Reply(200, self._positions())
        if method == "GET" and path == "/v2/account":
            return _Reply(200, self._account())
        return _Reply(404, {"code": 40410000, "message": "Not Found"})

    def _list_orders(self, params: dict[str, str]) -> list[dict[str, Any]]:
        status = params.get("status", "open")
        after = _parse_time(params["after"]) if "after" in params else None
        until = _parse_time(params["until"]) if "until" in params else None
        limit = min(int(params.get("limit", 50)), 500)
        rows = []
        for coid, order in self.orders.items():
            is_open = order["status"] in _OPEN
            if (status == "open" and not is_open) or (status == "closed" and is_open):
                continue
            if not self._visible(coid):
                continue
            submitted = _parse_time(order["submitted_at"])
            if (after is not None and submitted <= after) or (
                until is not None and submitted >= until
            ):
                continue
            rows.append(order)
        rows.sort(key=lambda o: (o["submitted_at"], o["id"]))
        if params.get("direction", "desc") == "desc":
            rows.reverse()
        return rows[:limit]

    def _activities(self, params: dict[str, str]) -> _Reply:
        rows = list(self.fills)
        if "after" in params:
            after = _parse_time(params["after"])
            rows = [a for a in rows if _parse_time(a["transaction_time"]) > after]
        if "until" in params:
            until = _parse_time(params["until"])
            rows = [a for a in rows if _parse_time(a["transaction_time"]) < until]
        asc = params.get("direction", "desc") == "asc"
        rows.sort(key=lambda a: a["id"], reverse=not asc)
        token = params.get("page_token")
        if token:
            rows = [a for a in rows if (a["id"] > token if asc else a["id"] < token)]
        size = min(int(params.get("page_size", 100)), 100)
        return _Reply(200, rows[:size])


_DEFAULT_MESSAGE: Final = {
    400: "request body format is invalid",
    401: "request is not authorized",
    403: "forbidden",
    404: "not found",
    422: "invalid request",
    429: "rate limit exceeded",
}


def _validate(body: dict[str, Any]) -> str:
    """Alpaca's 422 message for an invalid order body, or "" if it is fine."""
    if not body.get("symbol"):
        return "symbol is required"
    if body.get("side") not in ("buy", "sell"):
        return f"invalid side: {body.get('side')}"
    if body.get("type") not in ("market", "limit"):
        return f"invalid order type: {body.get('type')}"
    tif = body.get("time_in_force")
    crypto = "/" in str(body["symbol"])
    allowed = ("gtc", "ioc") if crypto else ("day", "gtc", "ioc", "fok", "opg", "cls")
    if tif not in allowed:
        return f"invalid time_in_force: {tif}"
    try:
        qty = Decimal(str(body.get("qty")))
    except ArithmeticError:
        return "qty is required"
    if not qty.is_finite() or qty <= 0:
        return "qty must be > 0"
    if body["type"] == "limit":
        try:
            limit = Decimal(str(body.get("limit_price")))
        except ArithmeticError:
            return "limit_price is required for limit orders"
        if not limit.is_finite() or limit <= 0:
            return "limit_price must be > 0"
    return ""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that gave up (timeout tests) is not an error of the fake
        super().handle_error(request, client_address)


def _handler(fake: FakeAlpacaTrading) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            params = {k: v[-1] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("latin-1")
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = fake._route(method, url.path, params, body, headers)
            if reply.hold:
                with fake._lock:
                    fake.held += 1
                fake._gate.wait(timeout=30)
                with fake._lock:
                    fake.held -= 1
            if reply.delay_s:
                time.sleep(reply.delay_s)
            if reply.drop:
                self.close_connection = True
                return
            self._reply(reply)

        def _reply(self, reply: _Reply) -> None:
            if reply.body is None:
                data, kind = b"", "application/json"
            elif isinstance(reply.body, str):
                data, kind = reply.body.encode(), "text/html"
            else:
                data, kind = json.dumps(reply.body).encode(), "application/json; charset=UTF-8"
            try:
                self.send_response(reply.status)
                if data:
                    self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test): nothing to answer

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output quiet

    return Handler
