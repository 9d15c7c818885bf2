"""A local fake of Binance spot market data (websocket streams + REST), on 127.0.0.1.

It speaks what ccxt.pro's binance client sends and expects (``ccxt/pro/binance.py``):

* websocket on ``/ws/<n>`` (raw streams: each event as its own JSON object) or ``/stream``
  (combined streams: ``{"stream": "<name>", "data": {...}}``); the client sends
  ``{"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}`` and gets
  ``{"result": null, "id": 1}``; ``UNSUBSCRIBE`` and ``LIST_SUBSCRIPTIONS`` likewise, and
  anything else ``{"error": {"code": 2, "msg": ...}, "id": ...}``. The server pings every
  `ping_interval_s` (Binance: 20 s).
* streams ``<symbol>@trade``, ``<symbol>@ticker`` (24h ticker, with best bid/ask) and
  ``<symbol>@depth`` (diff depth, ``@100ms`` accepted): ccxt subscribes, then fetches the
  REST snapshot and applies the deltas whose ``U``/``u`` follow its ``lastUpdateId``.
* REST ``GET /api/v3/exchangeInfo``, ``/api/v3/depth``, ``/api/v3/klines``, ``/api/v3/time``.

Point ccxt at it with ``rest_url``/``ws_url`` and ``options={"fetchMarkets": {"types":
["spot"]}, "fetchCurrencies": False}`` (then ``load_markets`` only reads exchangeInfo).
ccxt tells spot sockets from futures ones by ``/stream`` in the URL; with only spot markets
loaded every id is unambiguous, so the fake's URLs work as they are.

Examples
--------
>>> async def demo():
...     async with FakeBinance(symbols=("BTC/USDT",)) as fake:
...         fake.trade("BTC/USDT", 100.5, 0.1, trade_id=1)
...         ...  # CcxtDataSource(CcxtDataConfig(exchange="binance", ws_url=fake.ws_url, ...))
"""

from __future__ import annotations

import bisect
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from quantlab.testing.fakes.ccxt_venues import Client, FakeVenue, encode

_INTERVAL = re.compile(r"^(\d+)([smhdwM])$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_UNIT_MS["M"] = 30 * _UNIT_MS["d"]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _num(value: float) -> str:
    return f"{value:.8f}"


def stream_id(symbol: str) -> str:
    """``"BTC/USDT"`` -> ``"btcusdt"``, the stream-name prefix."""
    return symbol.replace("/", "").lower()


@dataclass
class _Book:
    bids: dict[float, float] = field(default_factory=dict)
    asks: dict[float, float] = field(default_factory=dict)
    update_id: int = 100

    def apply(self, side: dict[float, float], levels: Sequence[tuple[float, float]]) -> None:
        for price, qty in levels:
            if qty:
                side[price] = qty
            else:
                side.pop(price, None)


class FakeBinance(FakeVenue):
    """Fake Binance spot server; use as ``async with FakeBinance() as fake``."""

    def __init__(
        self,
        *,
        symbols: tuple[str, ...] = ("BTC/USDT", "ETH/USDT"),
        resend_last: int = 0,
        ping_interval_s: float | None = 20.0,
    ) -> None:
        super().__init__(resend_last=resend_last, tick_interval_s=ping_interval_s)
        self.symbols = {symbol.replace("/", ""): symbol for symbol in symbols}
        self.klines: dict[str, list[list[Any]]] = {}  # by market id, REST rows
        self._books = {market_id: _Book() for market_id in self.symbols}
        self._trade_ids = 0

    # --- data ----------------------------------------------------------------------------

    def trade(
        self,
        symbol: str,
        price: float,
        qty: float,
        *,
        trade_id: int | None = None,
        ts_ms: int | None = None,
        buyer_is_maker: bool = False,
    ) -> dict[str, Any]:
        """Queue a ``trade`` event (``m``: the buyer was the maker, so a seller hit the bid)."""
        self._trade_ids = trade_id if trade_id is not None else self._trade_ids + 1
        ts = _now_ms() if ts_ms is None else ts_ms
        event = {
            "e": "trade", "E": ts, "s": symbol.replace("/", ""), "t": self._trade_ids,
            "p": _num(price), "q": _num(qty), "T": ts, "m": buyer_is_maker, "M": True,
        }  # fmt: skip
        self.send(f"{stream_id(symbol)}@trade", event)
        return event

    def ticker(
        self,
        symbol: str,
        bid: float,
        ask: float,
        bid_qty: float = 1.0,
        ask_qty: float = 1.0,
        *,
        ts_ms: int | None = None,
    ) -> dict[str, Any]:
        """Queue a ``24hrTicker`` event (the ``@ticker`` stream) with this best bid/ask."""
        ts = _now_ms() if ts_ms is None else ts_ms
        last = (bid + ask) / 2
        event = {
            "e": "24hrTicker", "E": ts, "s": symbol.replace("/", ""), "p": "0.00000000",
            "P": "0.000", "w": _num(last), "x": _num(last), "c": _num(last), "Q": "1.00000000",
            "b": _num(bid), "B": _num(bid_qty), "a": _num(ask), "A": _num(ask_qty),
            "o": _num(last), "h": _num(ask), "l": _num(bid), "v": "100.00000000",
            "q": _num(100 * last), "O": ts - 86_400_000, "C": ts, "F": 1, "L": 100, "n": 100,
        }  # fmt: skip
        self.send(f"{stream_id(symbol)}@ticker", event)
        return event

    def set_book(
        self, symbol: str, bids: list[tuple[float, float]], asks: list[tuple[float, float]]
    ) -> None:
        """Replace the book the REST snapshot serves (its ``lastUpdateId`` stays)."""
        book = self._books[symbol.replace("/", "")]
        book.bids, book.asks = dict(bids), dict(asks)

    def depth(
        self,
        symbol: str,
        bids: Sequence[tuple[float, float]] = (),
        asks: Sequence[tuple[float, float]] = (),
        *,
        ts_ms: int | None = None,
        skip_ids: int = 0,
    ) -> dict[str, Any]:
        """Queue a ``depthUpdate`` (quantity 0 removes a level) and apply it to the book.

        `skip_ids` leaves a gap in the update ids, as a lost message would.
        """
        book = self._books[symbol.replace("/", "")]
        first = book.update_id + 1 + skip_ids
        book.update_id = first
        book.apply(book.bids, bids)
        book.apply(book.asks, asks)
        ts = _now_ms() if ts_ms is None else ts_ms
        event = {
            "e": "depthUpdate", "E": ts, "s": symbol.replace("/", ""), "U": first, "u": first,
            "b": [[_num(p), _num(q)] for p, q in bids], "a": [[_num(p), _num(q)] for p, q in asks],
        }  # fmt: skip
        self.send(f"{stream_id(symbol)}@depth", event)
        return event

    def add_klines(
        self, symbol: str, rows: list[tuple[int, float, float, float, float, float]]
    ) -> None:
        """Serve these 1m klines ``(open_ms, o, h, l, c, v)`` over REST."""
        market = self.klines.setdefault(symbol.replace("/", ""), [])
        for t, o, h, low, c, v in rows:
            market.append([
                t, _num(o), _num(h), _num(low), _num(c), _num(v), t + 59_999, _num(v * c), 10,
                _num(v / 2), _num(v * c / 2), "0",
            ])  # fmt: skip
        market.sort(key=lambda row: row[0])

    def kline(
        self, symbol: str, open_ms: int, ohlcv: tuple[float, float, float, float, float]
    ) -> None:
        """Set (add or replace) one 1m kline served over REST: a kline still forming changes."""
        market = self.klines.setdefault(symbol.replace("/", ""), [])
        o, h, low, c, v = ohlcv
        row = [
            open_ms, _num(o), _num(h), _num(low), _num(c), _num(v), open_ms + 59_999,
            _num(v * c), 10, _num(v / 2), _num(v * c / 2), "0",
        ]  # fmt: skip
        at = bisect.bisect_left(market, open_ms, key=lambda r: int(r[0]))
        if at < len(market) and market[at][0] == open_ms:
            market[at] = row
        else:
            market.insert(at, row)

    # --- websocket -----------------------------------------------------------------------

    async def on_message(self, client: Client, message: Any) -> None:
        if not isinstance(message, dict):
            await self.reply(client, {"error": {"code": 3, "msg": "Invalid JSON"}, "id": None})
            return
        method, params, request_id = message.get("method"), message.get("params"), message.get("id")
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                error = {"code": 2, "msg": "Invalid request: params must be a list of streams"}
                await self.reply(client, {"error": error, "id": request_id})
                return
            topics = [re.sub(r"@\d+ms$", "", p) for p in params]
            await self.reply(client, {"result": None, "id": request_id})
            if method == "SUBSCRIBE":
                await self.subscribe(client, topics)
            else:
                await self.unsubscribe(client, topics)
        elif method == "LIST_SUBSCRIPTIONS":
            await self.reply(client, {"result": sorted(client.topics), "id": request_id})
        else:
            error = {"code": 2, "msg": f"Invalid request: unknown method {method!r}"}
            await self.reply(client, {"error": error, "id": request_id})

    def frame(self, client: Client, topic: str, message: Any) -> str:
        if client.path.startswith("/stream"):
            return encode({"stream": topic, "data": message})
        return encode(message)

    async def on_tick(self, client: Client) -> None:
        await client.ws.ping()

    # --- REST ----------------------------------------------------------------------------

    def route(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        if path == "/api/v3/ping":
            return 200, {}
        if path == "/api/v3/time":
            return 200, {"serverTime": _now_ms()}
        if path == "/api/v3/exchangeInfo":
            return 200, self._exchange_info()
        market_id = query.get("symbol", "")
        if path in ("/api/v3/depth", "/api/v3/klines") and market_id not in self.symbols:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        if path == "/api/v3/depth":
            book, limit = self._books[market_id], int(query.get("limit", 100))
            return 200, {
                "lastUpdateId": book.update_id,
                "bids": [[_num(p), _num(q)] for p, q in sorted(book.bids.items(), reverse=True)][
                    :limit
                ],
                "asks": [[_num(p), _num(q)] for p, q in sorted(book.asks.items())][:limit],
            }
        if path == "/api/v3/klines":
            return self._klines(market_id, query)
        return 404, {"code": -1, "msg": f"no route {path}"}

    def _klines(self, market_id: str, query: dict[str, str]) -> tuple[int, Any]:
        match = _INTERVAL.match(query.get("interval", ""))
        if match is None:
            return 400, {"code": -1120, "msg": "Invalid interval."}
        limit = int(query.get("limit", 500))
        if not 1 <= limit <= 1000:
            return 400, {"code": -1100, "msg": "Illegal characters found in parameter 'limit'."}
        lo, hi = int(query.get("startTime", 0)), int(query.get("endTime", 2**62))
        rows = [row for row in self.klines.get(market_id, []) if lo <= row[0] <= hi]
        return 200, rows[:limit]

    def _exchange_info(self) -> dict[str, Any]:
        symbols = [_symbol_info(market_id, symbol) for market_id, symbol in self.symbols.items()]
        return {
            "timezone": "UTC", "serverTime": _now_ms(), "rateLimits": [], "exchangeFilters": [],
            "symbols": symbols,
        }  # fmt: skip


def _symbol_info(market_id: str, symbol: str) -> dict[str, Any]:
    base, quote = symbol.split("/")
    return {
        "symbol": market_id, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
        "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"], "icebergAllowed": True,
        "ocoAllowed": True, "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
        "permissions": [], "permissionSets": [["SPOT"]],
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000.00",
             "tickSize": "0.01"},
            {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000.00000000",
             "stepSize": "0.00001"},
        ],
    }  # fmt: skip
