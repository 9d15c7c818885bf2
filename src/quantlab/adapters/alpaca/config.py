"""Settings of the Alpaca market-data adapter (live stream and REST history).

One config describes one Alpaca feed: US equities (`asset_class="equity"`, the IEX or SIP
stream) or crypto (`asset_class="crypto"`, the `v1beta3/crypto/us` stream). Run two sources for
both. Alpaca names symbols the way quantlab does (`AAPL`, `BTC/USD`), so no mapping table is
needed; a symbol of the wrong shape for its asset class is rejected here, at start.
API keys are passed to the source and the REST client, never stored in a config.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from quantlab.core.errors import ConfigError

STREAM_HOST: Final = "wss://stream.data.alpaca.markets"
REST_HOST: Final = "https://data.alpaca.markets"
CRYPTO_STREAM_PATH: Final = "/v1beta3/crypto/us"
CHANNELS: Final = ("trades", "quotes", "bars")
TRANSPORTS: Final = ("alpaca-py", "websocket")
# The websocket client's frame limit: above `items.MAX_FRAME_BYTES` so that an oversized frame
# reaches the parser and is counted as `oversized_frame` instead of closing the connection.
CLIENT_MAX_FRAME_BYTES: Final = 16 << 20

AssetClass = Literal["equity", "crypto"]
Channel = Literal["trades", "quotes", "bars"]
Transport = Literal["alpaca-py", "websocket"]


class AlpacaDataConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One Alpaca market-data feed.

    Parameters
    ----------
    asset_class
        ``"equity"`` (stocks, e.g. ``AAPL``) or ``"crypto"`` (pairs, e.g. ``BTC/USD``).
    symbols
        quantlab symbols to subscribe to (Alpaca uses the same names).
    channels
        Any of ``"trades"``, ``"quotes"``, ``"bars"`` (minute bars).
    stock_feed
        ``"iex"`` (free) or ``"sip"``: the equity stream path and the REST ``feed`` parameter.
    stream_url, rest_url
        ``None`` means Alpaca's production hosts; tests point them at `testing.fakes.alpaca`.
    transport
        ``"alpaca-py"`` runs alpaca-py's `StockDataStream` / `CryptoDataStream`;
        ``"websocket"`` speaks the same protocol with `websockets` and quantlab's parser, which
        also counts bad frames (alpaca-py drops them silently; see `data.py`).
    open_timeout_s
        Time allowed for the connect + auth + subscribe handshake.
    close_timeout_s
        How long closing the stream waits for Alpaca's close frame (a stalled link never
        sends it) before the socket is dropped: the reconnect waits this long at most.
    rest_max_rate, rest_period_s
        Pace of REST requests (Alpaca's basic plan allows 200 per minute per account).
    page_limit
        Bars per REST page (Alpaca's maximum is 10,000).

    Examples
    --------
    >>> cfg = AlpacaDataConfig(asset_class="crypto", symbols=("BTC/USD",), channels=("trades",))
    >>> cfg.resolved_stream_url
    'wss://stream.data.alpaca.markets/v1beta3/crypto/us'
    """

    asset_class: AssetClass = "equity"
    symbols: tuple[str, ...] = ()
    channels: tuple[Channel, ...] = CHANNELS
    stock_feed: Literal["iex", "sip"] = "iex"
    stream_url: str | None = None
    rest_url: str | None = None
    transport: Transport = "alpaca-py"
    open_timeout_s: float = 10.0
    close_timeout_s: float = 2.0
    rest_max_rate: float = 200.0
    rest_period_s: float = 60.0
    page_limit: int = 10_000

    def __post_init__(self) -> None:
        if self.asset_class not in ("equity", "crypto"):
            raise ConfigError(
                "alpaca.asset_class", f"must be 'equity' or 'crypto', got {self.asset_class!r}"
            )
        if not self.symbols:
            raise ConfigError("alpaca.symbols", "need at least one symbol")
        for symbol in self.symbols:
            pair = "/" in symbol
            if not symbol or symbol != symbol.strip() or pair != (self.asset_class == "crypto"):
                shape = "BASE/QUOTE like 'BTC/USD'" if self.asset_class == "crypto" else "'AAPL'"
                raise ConfigError(
                    "alpaca.symbols",
                    f"{self.asset_class} symbols look like {shape}, got {symbol!r}",
                )
        if len(set(self.symbols)) != len(self.symbols):
            raise ConfigError("alpaca.symbols", f"symbols must be unique, got {self.symbols}")
        bad = [c for c in self.channels if c not in CHANNELS]
        if bad or not self.channels:
            raise ConfigError(
                "alpaca.channels", f"need one or more of {CHANNELS}, got {self.channels}"
            )
        if self.stock_feed not in ("iex", "sip"):
            raise ConfigError(
                "alpaca.stock_feed", f"must be 'iex' or 'sip', got {self.stock_feed!r}"
            )
        if self.transport not in TRANSPORTS:
            raise ConfigError(
                "alpaca.transport", f"must be one of {TRANSPORTS}, got {self.transport!r}"
            )
        for key in ("open_timeout_s", "close_timeout_s", "rest_max_rate", "rest_period_s"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"alpaca.{key}", f"must be > 0, got {getattr(self, key)}")
        if not 1 <= self.page_limit <= 10_000:
            raise ConfigError("alpaca.page_limit", f"must be in [1, 10000], got {self.page_limit}")

    @property
    def resolved_stream_url(self) -> str:
        """The websocket URL: `stream_url`, or Alpaca's for the asset class (and stock feed)."""
        if self.stream_url is not None:
            return self.stream_url
        if self.asset_class == "crypto":
            return STREAM_HOST + CRYPTO_STREAM_PATH
        return f"{STREAM_HOST}/v2/{self.stock_feed}"

    @property
    def resolved_rest_url(self) -> str:
        return REST_HOST if self.rest_url is None else self.rest_url.rstrip("/")
