"""A local fake of Coinbase Advanced Trade market data (websocket + REST candles), 127.0.0.1.

It speaks what ccxt.pro's coinbase client sends and expects (``ccxt/pro/coinbase.py``):
one channel per ``{"type": "subscribe", "product_ids": [...], "channel": "ticker"}``
(``ticker``, ``ticker_batch``, ``market_trades``, ``level2``, ``heartbeats``), acknowledged
on the ``subscriptions`` channel; data on ``ticker``, ``market_trades`` (trades newest
first, as Coinbase sends them) and ``l2_data`` (a ``snapshot`` of the book on subscribe,
then ``update``s; ``level2`` is the channel subscribed to, ``l2_data`` the one received);
``heartbeats`` once a second to clients that subscribed to them. Every message carries the
connection's ``sequence_num``. A client that has not subscribed within
`subscribe_timeout_s` is disconnected (Coinbase: 5 s). An unknown channel gets
``{"type": "error", "message": ...}``. REST serves
``GET /api/v3/brokerage/market/products/{id}/candles`` (newest first, at most 350 per call)
and ``/api/v3/brokerage/time``.

Point ccxt at it with ``ws_url``/``rest_url`` and seed the markets (coinbase's
``load_markets`` walks several endpoints): ``markets=(CcxtMarket(symbol="BTC/USD",
id="BTC-USD"),)``.

Examples
--------
>>> async def demo():
...     async with FakeCoinbaseAdvancedTrade(products=("BTC-USD",)) as fake:
...         fake.trade("BTC-USD", 21000.5, 0.3, trade_id="1")
...         ...  # CcxtDataSource(CcxtDataConfig(exchange="coinbase", ws_url=fake.ws_url, ...))
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from collections.abc import Sequence
from typing import Any, Final

from quantlab.testing.fakes.ccxt_venues import Client, FakeVenue, encode

CHANNELS: Final = frozenset({"ticker", "ticker_batch", "market_trades", "level2", "heartbeats"})
_GRANULARITY_S: Final = {
    "ONE_MINUTE": 60, "FIVE_MINUTE": 300, "FIFTEEN_MINUTE": 900, "THIRTY_MINUTE": 1800,
    "ONE_HOUR": 3600, "TWO_HOUR": 7200, "SIX_HOUR": 21600, "ONE_DAY": 86400,
}  # fmt: skip
_CANDLES = re.compile(r"^/api/v3/brokerage/market/products/([^/]+)/candles$")
_MAX_CANDLES: Final = 350


def iso(ts_ms: int | None = None) -> str:
    """Milliseconds since the epoch as Coinbase's RFC 3339 time (now if None)."""
    ms = time.time_ns() // 1_000_000 if ts_ms is None else ts_ms
    when = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}000Z"


def _num(value: float) -> str:
    return f"{value:.8f}".rstrip("0").rstrip(".")


class FakeCoinbaseAdvancedTrade(FakeVenue):
    """Fake Coinbase Advanced Trade server; use as ``async with ... as fake``."""

    def __init__(
        self,
        *,
        products: tuple[str, ...] = ("BTC-USD", "ETH-USD"),
        resend_last: int = 0,
        heartbeat_interval_s: float | None = 1.0,
        subscribe_timeout_s: float = 5.0,
    ) -> None:
        super().__init__(resend_last=resend_last, tick_interval_s=heartbeat_interval_s)
        self.products = products
        self.subscribe_timeout_s = subscribe_timeout_s
        self.candles: dict[str, list[dict[str, str]]] = {}  # by product, REST rows
        self.books: dict[str, tuple[dict[float, float], dict[float, float]]] = {
            p: ({}, {}) for p in products
        }
        self._heartbeats = 0

    # --- data ----------------------------------------------------------------------------

    def trade(
        self,
        product: str,
        price: float,
        size: float,
        *,
        trade_id: str,
        side: str = "BUY",
        ts_ms: int | None = None,
    ) -> dict[str, Any]:
        """Queue a ``market_trades`` update holding one trade."""
        return self.trades(product, [(trade_id, price, size, side, ts_ms)])

    def trades(
        self, product: str, rows: Sequence[tuple[str, float, float, str, int | None]]
    ) -> dict[str, Any]:
        """Queue one ``market_trades`` update with trades ``(id, price, size, side, ts_ms)``,
        given oldest first; they are sent newest first, as Coinbase does."""
        trades = [
            {"trade_id": tid, "product_id": product, "price": _num(price), "size": _num(size),
             "side": side, "time": iso(ts)}
            for tid, price, size, side, ts in reversed(rows)
        ]  # fmt: skip
        message = self._message("market_trades", [{"type": "update", "trades": trades}])
        self.send(f"market_trades:{product}", message)
        return message

    def ticker(
        self,
        product: str,
        bid: float,
        ask: float,
        bid_qty: float = 1.0,
        ask_qty: float = 1.0,
        *,
        ts_ms: int | None = None,
    ) -> dict[str, Any]:
        """Queue a ``ticker`` update with this best bid/ask (fields as of 2024-04)."""
        last = (bid + ask) / 2
        ticker = {
            "type": "ticker", "product_id": product, "price": _num(last),
            "volume_24_h": "16038.28770938", "low_24_h": _num(bid), "high_24_h": _num(ask),
            "low_52_w": "15460", "high_52_w": "48240", "price_percent_chg_24_h": "-4.15",
            "best_bid": _num(bid), "best_bid_quantity": _num(bid_qty),
            "best_ask": _num(ask), "best_ask_quantity": _num(ask_qty),
        }  # fmt: skip
        message = self._message("ticker", [{"type": "update", "tickers": [ticker]}], ts_ms)
        self.send(f"ticker:{product}", message)
        return message

    def l2_update(
        self,
        product: str,
        bids: Sequence[tuple[float, float]] = (),
        asks: Sequence[tuple[float, float]] = (),
        *,
        ts_ms: int | None = None,
    ) -> dict[str, Any]:
        """Queue an ``l2_data`` update (quantity 0 removes a level) and apply it to the book."""
        book_bids, book_asks = self.books[product]
        for side, levels in ((book_bids, bids), (book_asks, asks)):
            for price, qty in levels:
                if qty:
                    side[price] = qty
                else:
                    side.pop(price, None)
        event = {"type": "update", "product_id": product, "updates": _updates(bids, asks, ts_ms)}
        message = self._message("l2_data", [event], ts_ms)
        self.send(f"level2:{product}", message)
        return message

    def add_candles(
        self, product: str, rows: list[tuple[int, float, float, float, float, float]]
    ) -> None:
        """Serve these candles ``(start_s, o, h, l, c, v)`` over REST."""
        market = self.candles.setdefault(product, [])
        for t, o, h, low, c, v in rows:
            market.append({
                "start": str(t), "low": _num(low), "high": _num(h), "open": _num(o),
                "close": _num(c), "volume": _num(v),
            })  # fmt: skip

    # --- websocket -----------------------------------------------------------------------

    async def on_connect(self, client: Client) -> None:
        async def expire() -> None:
            await asyncio.sleep(self.subscribe_timeout_s)
            if not client.topics:
                await client.ws.close(1000, "no subscribe message within the time limit")

        self._spawn(expire())

    async def on_message(self, client: Client, message: Any) -> None:
        if not isinstance(message, dict) or message.get("type") not in ("subscribe", "unsubscribe"):
            await self.reply(client, {"type": "error", "message": "unknown message type"})
            return
        channel, products = message.get("channel"), message.get("product_ids", [])
        if channel not in CHANNELS or not isinstance(products, list):
            await self.reply(
                client, {"type": "error", "message": f"Failure to subscribe: {channel}"}
            )
            return
        topics = ["heartbeats"] if channel == "heartbeats" else [f"{channel}:{p}" for p in products]
        if message["type"] == "unsubscribe":
            await self.unsubscribe(client, topics)
            await self.reply(client, self._ack(client))
            return
        client.topics.update(topics)
        await self.reply(client, self._ack(client))
        if channel == "level2":
            for product in products:
                bids, asks = self.books.get(product, ({}, {}))
                event = {
                    "type": "snapshot", "product_id": product,
                    "updates": _updates(sorted(bids.items(), reverse=True), sorted(asks.items())),
                }  # fmt: skip
                await client.ws.send(self.frame(client, "", self._message("l2_data", [event])))
        await self.subscribe(client, topics)

    def frame(self, client: Client, topic: str, message: Any) -> str:
        client.sequence += 1
        return encode({**message, "sequence_num": client.sequence})

    async def on_tick(self, client: Client) -> None:
        if "heartbeats" in client.topics:
            self._heartbeats += 1
            events = [{"current_time": iso(), "heartbeat_counter": str(self._heartbeats)}]
            await client.ws.send(
                self.frame(client, "heartbeats", self._message("heartbeats", events))
            )

    def _ack(self, client: Client) -> dict[str, Any]:
        subs: dict[str, list[str]] = {}
        for topic in sorted(client.topics):
            channel, _, product = topic.partition(":")
            subs.setdefault(channel, [])
            if product:
                subs[channel].append(product)
        return self._message("subscriptions", [{"subscriptions": subs}])

    @staticmethod
    def _message(channel: str, events: list[Any], ts_ms: int | None = None) -> dict[str, Any]:
        return {
            "channel": channel,
            "client_id": "",
            "timestamp": iso(ts_ms),
            "sequence_num": 0,
            "events": events,
        }

    # --- REST ----------------------------------------------------------------------------

    def route(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        if path == "/api/v3/brokerage/time":
            ms = time.time_ns() // 1_000_000
            return 200, {"iso": iso(ms), "epochSeconds": str(ms // 1000), "epochMillis": str(ms)}
        match = _CANDLES.match(path)
        if match is None:
            return 404, {"error": "NOT_FOUND", "message": f"no route {path}"}
        product, granularity = match.group(1), query.get("granularity", "")
        if product not in self.products:
            return 404, {"error": "NOT_FOUND", "message": "ProductID is invalid"}
        if granularity not in _GRANULARITY_S:
            return 400, {"error": "INVALID_ARGUMENT", "message": "Unsupported granularity"}
        start, end = int(query.get("start", 0)), int(query.get("end", 0))
        if (end - start) // _GRANULARITY_S[granularity] > _MAX_CANDLES:
            message = f"number of candles requested should be less than {_MAX_CANDLES}"
            return 400, {"error": "INVALID_ARGUMENT", "error_details": message, "message": message}
        rows = [c for c in self.candles.get(product, []) if start <= int(c["start"]) <= end]
        return 200, {"candles": sorted(rows, key=lambda c: -int(c["start"]))}


def _updates(
    bids: Sequence[tuple[float, float]],
    asks: Sequence[tuple[float, float]],
    ts_ms: int | None = None,
) -> list[dict[str, str]]:
    when = iso(ts_ms)
    return [
        {"side": side, "event_time": when, "price_level": _num(price), "new_quantity": _num(qty)}
        for side, levels in (("bid", bids), ("offer", asks))
        for price, qty in levels
    ]
