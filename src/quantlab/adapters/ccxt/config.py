"""Settings of the ccxt source and REST backfill (API keys, if any, are passed separately)."""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

from quantlab.core.errors import ConfigError
from quantlab.ingest.items import MAX_FRAME_BYTES

# What a watch loop can follow: `watch_trades`, `watch_ticker` (quotes from its best bid/ask)
# and `watch_order_book` (a quote from the top of the book).
CHANNELS: Final = frozenset({"trades", "ticker", "order_book"})
# A ccxt unified symbol: ``BASE/QUOTE`` (spot) or ``BASE/QUOTE:SETTLE[-...]`` (derivatives).
_SYMBOL = re.compile(r"^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+(:[A-Za-z0-9._-]+)?$")
_EXCHANGE_ID = re.compile(r"^[a-z][a-z0-9]*$")


class CcxtMarket(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A market to seed with ``set_markets`` instead of loading the venue's list.

    Useful against local fakes and for venues whose ``load_markets`` walks many endpoints
    (coinbase calls several). ``id`` is the venue's id (``"BTC-USD"``, ``"BTCUSDT"``).
    """

    symbol: str
    id: str
    type: str = "spot"

    @property
    def base(self) -> str:
        return self.symbol.split("/", 1)[0]

    @property
    def quote(self) -> str:
        return self.symbol.split("/", 1)[1].split(":", 1)[0]


class CcxtDataConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which ccxt exchange to stream from and how; no secrets (they go to the source itself).

    Parameters
    ----------
    exchange
        The ccxt id (``"binance"``, ``"coinbase"``, ...); the live source uses ``ccxt.pro``.
    symbols
        ccxt unified symbols, which are quantlab's crypto symbols (``"BTC/USDT"``).
    channels
        Any of ``trades``, ``ticker`` (quotes from the ticker's bid/ask and their sizes) and
        ``order_book`` (a quote from the top of the book). Pick one quote channel per symbol:
        the two carry different clocks, so their quotes interleave out of order.
    rest_url, ws_url
        Replace the scheme and host of every REST / websocket URL of the exchange, keeping
        the paths (local fakes, proxies). ``None`` keeps ccxt's URLs.
    markets
        Seed these markets instead of calling ``load_markets()``.
    options
        Merged into the exchange's ccxt ``options`` (ours first, yours on top).
    enable_rate_limit
        ccxt's own throttle on the live client: it paces the REST snapshots and subscribe
        messages of one exchange instance by the venue's published weights.
    order_book_limit
        Depth asked for by ``watch_order_book`` (binance fetches a REST snapshot of this
        size); ``None`` is ccxt's default.
    max_frame_bytes
        Frames above this are rejected ``oversized_frame`` before ccxt sees them. ccxt's
        client itself refuses frames above 10 MiB by closing the connection. Coinbase
        ``level2`` snapshots of busy books can exceed the 1 MiB default.
    json_only
        The venue sends only JSON objects/arrays as text frames (true for binance and
        coinbase), so any other text frame is a counted reject; ccxt would drop it silently.
    heartbeats
        Also subscribe to the venue's heartbeat channel where ccxt does not (coinbase:
        quiet channels are closed after 60-90 s without it).
    timeout_s, close_timeout_s
        REST request timeout; how long closing a websocket may wait for the venue's close
        frame (a stalled venue never sends it) before the connection is aborted.
    max_watch_errors
        Consecutive venue errors on one watch (subscription refused, ...) before the stream
        fails and the multiplexer reconnects it.
    rest_max_rate, rest_period_s
        Backfill budget: at most this many REST calls per period (see `historical`).
    ohlcv_page_limit
        Candles asked for per REST call (coinbase caps at 300, binance at 1000).
    """

    exchange: str
    symbols: tuple[str, ...]
    channels: tuple[str, ...] = ("trades", "ticker")
    name: str | None = None
    asset_class: str = "crypto"
    rest_url: str | None = None
    ws_url: str | None = None
    sandbox: bool = False
    markets: tuple[CcxtMarket, ...] = ()
    options: dict[str, Any] = {}
    enable_rate_limit: bool = True
    order_book_limit: int | None = None
    timeout_s: float = 10.0
    close_timeout_s: float = 2.0
    max_frame_bytes: int = MAX_FRAME_BYTES
    json_only: bool = True
    heartbeats: bool = True
    max_watch_errors: int = 5
    rest_max_rate: float = 5.0
    rest_period_s: float = 1.0
    ohlcv_page_limit: int = 300
    rest_max_pages: int = 10_000

    def __post_init__(self) -> None:
        if not _EXCHANGE_ID.match(self.exchange):
            raise ConfigError(
                "ccxt.exchange", f"expected a ccxt id like 'binance', got {self.exchange!r}"
            )
        if not self.symbols:
            raise ConfigError("ccxt.symbols", "need at least one symbol")
        for symbol in self.symbols:
            if not _SYMBOL.match(symbol):
                raise ConfigError(
                    "ccxt.symbols", f"{symbol!r} is not a ccxt unified symbol like 'BTC/USDT'"
                )
        if len(set(self.symbols)) != len(self.symbols):
            raise ConfigError("ccxt.symbols", f"duplicate symbols in {list(self.symbols)}")
        if not self.channels or not set(self.channels) <= CHANNELS:
            raise ConfigError(
                "ccxt.channels", f"expected some of {sorted(CHANNELS)}, got {self.channels}"
            )
        for key, schemes in (
            ("rest_url", ("http://", "https://")),
            ("ws_url", ("ws://", "wss://")),
        ):
            url = getattr(self, key)
            if url is not None and not url.startswith(schemes):
                raise ConfigError(f"ccxt.{key}", f"unsupported URL scheme in {url!r}")
        for market in self.markets:
            if not _SYMBOL.match(market.symbol) or not market.id:
                raise ConfigError("ccxt.markets", f"bad market {market!r}")
        for key in ("timeout_s", "close_timeout_s", "rest_max_rate", "rest_period_s"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"ccxt.{key}", f"must be > 0, got {getattr(self, key)}")
        for key in ("max_frame_bytes", "max_watch_errors", "ohlcv_page_limit", "rest_max_pages"):
            if getattr(self, key) < 1:
                raise ConfigError(f"ccxt.{key}", f"must be >= 1, got {getattr(self, key)}")
        if self.order_book_limit is not None and self.order_book_limit < 1:
            raise ConfigError(
                "ccxt.order_book_limit", f"must be >= 1 or None, got {self.order_book_limit}"
            )

    @property
    def source_name(self) -> str:
        """The source's name in the multiplexer: `name`, or ``ccxt-<exchange>``."""
        return self.name or f"ccxt-{self.exchange}"
