"""Bad input: the vendor message parsers (Coinbase, Alpaca, Polygon, ccxt, news) fuzzed.

Every parser here promises never to raise on bad input: a message it cannot use becomes a
`Reject` with a reason and a detail, the good messages around it still arrive. Each test
feeds documented sample messages, mutated (`test_fuzz.mutate_doc` / `mutate_bytes`), and
random bytes; any exception, a reject without a reason, or a frame outside its kind's schema
is a crash (see `test_fuzz` for the kit and the counting).
"""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import strategies as st
from test_fuzz import (
    REFUSED,
    BadResultError,
    Tally,
    check_items,
    check_reject,
    fuzz,
    inputs,
    json_bytes,
    mp_bytes,
    mutate_doc,
    pick,
    python_value,
)

from quantlab.adapters.alpaca.parser import AlpacaControl, AlpacaParser
from quantlab.adapters.ccxt import parser as ccxt
from quantlab.adapters.coinbase.parser import CoinbaseFeedParser, parse_candles
from quantlab.adapters.news.parser import parse_news
from quantlab.adapters.polygon.parser import parse_aggregates
from quantlab.adapters.polygon.parser import parse_frame as polygon_frame
from quantlab.core.messages import NewsEvent
from quantlab.ingest.items import Heartbeat, Reject

N = 2500  # examples per parser

# ---- Coinbase Advanced Trade ------------------------------------------------------------------

T0 = "2023-02-09T20:32:50.714964855Z"


def _cb(channel: str, events: list[Any], seq: int = 1) -> dict[str, Any]:
    return {
        "channel": channel,
        "client_id": "",
        "timestamp": T0,
        "sequence_num": seq,
        "events": events,
    }


def _level(side: str, price: str, qty: str) -> dict[str, str]:
    return {"side": side, "event_time": T0, "price_level": price, "new_quantity": qty}


CB_SNAPSHOT = _cb(
    "l2_data",
    [
        {
            "type": "snapshot",
            "product_id": "BTC-USD",
            "updates": [_level("bid", "100.0", "1.5"), _level("offer", "101.0", "2")],
        }
    ],
    seq=0,
)
CB_SEEDS = [
    _cb(
        "ticker",
        [
            {
                "type": "snapshot",
                "tickers": [
                    {
                        "type": "ticker",
                        "product_id": "BTC-USD",
                        "price": "21932.98",
                        "best_bid": "21931.98",
                        "best_bid_quantity": "0.5",
                        "best_ask": "21933.98",
                        "best_ask_quantity": "0.7",
                    }
                ],
            }
        ],
    ),
    _cb(
        "market_trades",
        [
            {
                "type": "update",
                "trades": [
                    {
                        "trade_id": "1",
                        "product_id": "ETH-USD",
                        "price": "1260.01",
                        "size": "0.3",
                        "side": "BUY",
                        "time": "2019-08-14T20:42:27.265Z",
                    }
                ],
            }
        ],
    ),
    _cb("heartbeats", [{"current_time": "2023-06-23 20:31:56", "heartbeat_counter": "3049"}]),
    _cb("subscriptions", [{"subscriptions": {"ticker": ["BTC-USD"]}}]),
    _cb(
        "l2_data",
        [
            {
                "type": "update",
                "product_id": "BTC-USD",
                "updates": [_level("bid", "100.5", "1"), _level("offer", "101.0", "0")],
            }
        ],
    ),
    CB_SNAPSHOT,
    {"type": "error", "message": "rate limited"},
]
CB_CANDLES = [
    {
        "candles": [
            {
                "start": "1700000000",
                "low": "1.0",
                "high": "2.0",
                "open": "1.5",
                "close": "1.75",
                "volume": "10",
            },
            {"start": 1700000060, "low": 1, "high": 2, "open": 1, "close": 2, "volume": 0},
        ]
    }
]


def test_coinbase_frames_never_crash_the_parser() -> None:
    """Coinbase websocket frames (ticker, market_trades, heartbeats, level2 snapshots and
    updates on a live book, errors) and REST candles bodies, mutated, plus random bytes.

    Found: a frame nested deeper than the recursion limit (``[[[...]]]``, 20 kB) raised
    RecursionError and a string with bad UTF-8 UnicodeDecodeError (msgspec raises both,
    outside its DecodeError); a 400-digit number raised OverflowError converting it to float;
    a candle start of 2**64 overflowed int64 building the frame (TypeError)."""
    tally = Tally("Coinbase websocket frames + REST candles (mutated + random bytes)")
    snapshot = json_bytes(CB_SNAPSHOT)

    def decode(data: tuple[str, bytes]) -> str | None:
        kind, raw = data
        if kind == "candles":
            return check_items(parse_candles(raw, "BTC/USD"))
        parser = CoinbaseFeedParser(["BTC/USD", "ETH/USD"])
        parser.parse(snapshot)  # so that level2 updates land on a book
        verdict = check_items(parser.parse(raw), (Heartbeat,))
        resync = parser.take_resync()
        if not all(isinstance(v, list) for v in resync.values()):
            raise BadResultError(f"resync {resync!r}")
        return verdict

    strategy = st.one_of(
        inputs(CB_SEEDS).map(lambda b: ("ws", b)),
        inputs(CB_CANDLES).map(lambda b: ("candles", b)),
    )
    fuzz(tally, strategy, decode, N)
    tally.report(min_trials=N * 4 // 5)


# ---- Alpaca market data -----------------------------------------------------------------------

TS = msgpack.Timestamp.from_unix_nano(1_613_998_304_208_123_456)
ALPACA_SEEDS: list[Any] = [
    [
        {"T": "t", "S": "AAPL", "i": 96921, "x": "D", "p": 126.55, "s": 1, "t": TS, "z": "C"},
        {"T": "q", "S": "AAPL", "bx": "U", "bp": 87.66, "bs": 1, "ap": 87.68, "as": 4, "t": TS},
        {
            "T": "b",
            "S": "AAPL",
            "o": 388.98,
            "h": 389.13,
            "l": 388.97,
            "c": 389.12,
            "v": 49378,
            "t": TS,
        },
        {"T": "t", "S": "BTC/USD", "p": 61950.7, "s": 0.0012, "t": TS, "i": 1, "tks": "S"},
    ],
    [{"T": "success", "msg": "authenticated"}],
    [{"T": "subscription", "trades": ["AAPL"], "quotes": [], "bars": ["*"]}],
    [{"T": "error", "code": 402, "msg": "auth failed"}],
    [
        {
            "T": "q",
            "S": "BTC/USD",
            "bp": 1.0,
            "bs": 0.2,
            "ap": 2.0,
            "as": 0.35,
            "t": "2021-02-22T12:51:44.208123456Z",
        }
    ],
]
ALPACA_PAGES: list[Any] = [
    {
        "bars": {
            "AAPL": [
                {"t": "2022-01-03T09:00:00Z", "o": 1.0, "h": 2.0, "l": 0.5, "c": 1.5, "v": 10},
            ]
        },
        "next_page_token": "abc",
    }
]


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


@st.composite
def _alpaca_pages(draw: st.DrawFn) -> Any:
    return python_value(mutate_doc(draw, ALPACA_PAGES[pick(draw, len(ALPACA_PAGES))]))


def test_alpaca_frames_never_crash_the_parser() -> None:
    """Alpaca websocket frames (MessagePack as the stream sends them, and JSON text) with
    trades, quotes, bars and control messages, and REST bars pages, mutated.

    Found: a 400-digit number (a price, a bar's volume) raised OverflowError converting it
    to float."""
    tally = Tally("Alpaca websocket frames, msgpack + JSON, and REST bars pages")
    parser = AlpacaParser(["AAPL", "BTC/USD"])

    def decode(data: tuple[str, Any]) -> str | None:
        kind, raw = data
        if kind == "page":
            items, token = parser.parse_bars_page(raw)
            if token is not None and not isinstance(token, str):
                raise BadResultError(f"page token {token!r}")
            return check_items(items)
        return check_items(parser.parse_frame(raw), (AlpacaControl,))

    strategy = st.one_of(
        inputs(ALPACA_SEEDS, mp_bytes).map(lambda b: ("msgpack", b)),
        inputs(ALPACA_SEEDS, json_bytes).map(lambda b: ("json", _text(b))),
        _alpaca_pages().map(lambda d: ("page", d)),
    )
    fuzz(tally, strategy, decode, N)
    tally.report(min_trials=N * 4 // 5)


# ---- Polygon ------------------------------------------------------------------------------------

POLYGON_SEEDS: list[Any] = [
    [
        {
            "ev": "T",
            "sym": "AAPL",
            "i": "52983525029461",
            "x": 4,
            "p": 114.125,
            "s": 100,
            "t": 1536036818784,
        },
        {
            "ev": "Q",
            "sym": "AAPL",
            "bx": 4,
            "bp": 114.125,
            "bs": 100,
            "ax": 7,
            "ap": 114.128,
            "as": 160,
            "t": 1536036818784,
        },
        {
            "ev": "AM",
            "sym": "AAPL",
            "v": 4110,
            "o": 0.4372,
            "c": 0.4488,
            "h": 0.4488,
            "l": 0.4344,
            "s": 1610144640000,
            "e": 1610144700000,
        },
    ],
    [{"ev": "status", "status": "auth_success", "message": "authenticated"}],
]
POLYGON_AGGS: list[Any] = [
    {
        "ticker": "AAPL",
        "results": [
            {
                "v": 70790813,
                "o": 130.1,
                "c": 131.0,
                "h": 132.5,
                "l": 129.9,
                "t": 1609736400000,
                "n": 1,
            }
        ],
        "next_url": "https://api.polygon.io/v2/aggs/next",
    }
]


def test_polygon_frames_never_crash_the_parser() -> None:
    """Polygon websocket frames (trades, quotes, minute aggregates, status) and REST
    aggregates pages, mutated, plus random bytes.

    Found: a frame nested deeper than the recursion limit raised RecursionError and bad
    UTF-8 in a string UnicodeDecodeError; an event type ``ev`` that is a list or an object
    raised TypeError (unhashable, looked up in a frozenset)."""
    tally = Tally("Polygon websocket frames + REST aggregates pages")
    symbols = {"AAPL": "AAPL"}

    def decode(data: tuple[str, bytes]) -> str | None:
        kind, raw = data
        if kind == "aggs":
            page = parse_aggregates(raw, "AAPL")
            for item in page.rejects:
                check_reject(item)
            if page.next_url is not None and not isinstance(page.next_url, str):
                raise BadResultError(f"next_url {page.next_url!r}")
            return REFUSED if page.rejects and page.bars.is_empty() else None
        frame = polygon_frame(raw, symbols)
        if not all(isinstance(s.status, str) for s in frame.statuses):
            raise BadResultError(f"statuses {frame.statuses!r}")
        return check_items(frame.items)

    strategy = st.one_of(
        inputs(POLYGON_SEEDS).map(lambda b: ("ws", b)),
        inputs(POLYGON_AGGS).map(lambda b: ("aggs", b)),
    )
    fuzz(tally, strategy, decode, N)
    tally.report(min_trials=N * 4 // 5)


# ---- ccxt ----------------------------------------------------------------------------------------

CCXT_TRADES: list[Any] = [
    [
        {
            "info": {"a": 1},
            "id": "12345",
            "timestamp": 1_700_000_000_000,
            "symbol": "BTC/USD",
            "side": "buy",
            "price": 100.5,
            "amount": 0.25,
            "cost": 25.125,
        },
        {
            "id": None,
            "timestamp": 1_700_000_000_001,
            "symbol": "ETH/BTC",
            "side": "sell",
            "price": "0.05",
            "amount": 1,
        },
    ]
]
CCXT_TICKER: list[Any] = [
    {
        "symbol": "BTC/USD",
        "timestamp": 1_700_000_000_000,
        "bid": 100.0,
        "ask": 101.0,
        "bidVolume": 1.5,
        "askVolume": None,
        "info": {},
    },
]
CCXT_BOOK: list[Any] = [
    {
        "symbol": "BTC/USD",
        "bids": [[100.0, 1.0], [99.0, 2.0]],
        "asks": [[101.0, 0.5]],
        "timestamp": 1_700_000_000_000,
        "nonce": 5,
    },
]
CCXT_OHLCV: list[Any] = [
    [[1_700_000_000_000, 1.0, 2.0, 0.5, 1.5, 10.0], [1_700_000_060_000, 1, 1, 1, 1, 0]]
]
CCXT_FRAMES: list[Any] = [{"e": "trade", "s": "BTCUSD", "p": "100.5"}, [1, 2], "pong", 42]


@st.composite
def _ccxt_structures(draw: st.DrawFn) -> tuple[str, Any]:
    kind, seeds = (
        ("trades", CCXT_TRADES),
        ("ticker", CCXT_TICKER),
        ("book", CCXT_BOOK),
        ("ohlcv", CCXT_OHLCV),
    )[pick(draw, 4)]
    return kind, python_value(mutate_doc(draw, seeds[0]))


def test_ccxt_structures_and_frames_never_crash_the_parser() -> None:
    """ccxt's unified structures (trades, tickers, order books, OHLCV rows) as ccxt hands
    them over, mutated, and raw websocket frames (`check_frame`, bytes and text).

    Found: a timestamp of 10**30 ms overflowed int64 building the frame (OverflowError,
    TypeError), one of 1e300 ms raised OverflowError rounding an infinity; a 400-digit number
    raised OverflowError converting it to float."""
    tally = Tally("ccxt unified structures + raw websocket frames")
    symbols = frozenset({"BTC/USD", "ETH/BTC"})

    def decode(data: tuple[str, Any]) -> str | None:
        kind, value = data
        if kind == "frame":
            item = ccxt.check_frame(value)
            if item is None:
                return None
            check_reject(item)
            return REFUSED
        if kind == "trades":
            return check_items(ccxt.parse_trades(value, symbols))
        if kind == "ticker":
            return check_items(ccxt.parse_ticker(value, symbols, received_ns=1))
        if kind == "book":
            items = ccxt.parse_order_book(value, symbols, symbol="BTC/USD", received_ns=1)
            return check_items(items)
        return check_items(ccxt.parse_ohlcv(value, "BTC/USD"))

    strategy = st.one_of(
        _ccxt_structures(),
        inputs(CCXT_FRAMES).map(lambda b: ("frame", b)),
        inputs(CCXT_FRAMES).map(lambda b: ("frame", _text(b))),
    )
    fuzz(tally, strategy, decode, N)
    tally.report(min_trials=N * 4 // 5)


# ---- news pages ---------------------------------------------------------------------------------

NEWS_ALPACA = {
    "news": [
        {
            "id": 24843171,
            "headline": "Apple Leader in Phone Sales in China",
            "created_at": "2021-12-31T11:08:42Z",
            "url": "https://www.benzinga.com/news/21/12/24843171",
            "symbols": ["AAPL"],
            "source": "benzinga",
        }
    ],
    "next_page_token": "abc",
}
NEWS_POLYGON = {
    "results": [
        {
            "id": "8ec638777ca03b553ae516761c2a22ba",
            "publisher": {"name": "Investing.com"},
            "title": "Markets are underestimating Fed cuts",
            "published_utc": "2024-06-24T18:33:53Z",
            "article_url": "https://uk.investing.com/news/1",
            "tickers": ["UBS", "AAPL"],
        }
    ],
    "next_url": "https://api.polygon.io/v2/reference/news?cursor=x",
}


def test_news_pages_never_crash_the_parser() -> None:
    """News pages in Alpaca's and Polygon's shapes, mutated, plus random bytes.

    Found: a body nested deeper than the recursion limit raised RecursionError and bad
    UTF-8 in a string UnicodeDecodeError."""
    tally = Tally("news pages, Alpaca + Polygon shapes")
    symbols = {"AAPL": "AAPL", "UBS": "UBS"}

    def decode(data: tuple[str, bytes]) -> str | None:
        shape, raw = data
        page = parse_news(raw, shape, symbols)
        if page.cursor is not None and not isinstance(page.cursor, str):
            raise BadResultError(f"cursor {page.cursor!r}")
        refused = 0
        for item in page.items:
            if isinstance(item, Reject):
                check_reject(item)
                refused += 1
            elif not isinstance(item, NewsEvent) or item.timestamp.tzinfo is None:
                raise BadResultError(f"news item {item!r:.200}")
        return REFUSED if refused or not page.valid else None

    strategy = st.one_of(
        inputs([NEWS_ALPACA]).map(lambda b: ("alpaca", b)),
        inputs([NEWS_POLYGON]).map(lambda b: ("polygon", b)),
    )
    fuzz(tally, strategy, decode, N)
    tally.report(min_trials=N * 4 // 5)
