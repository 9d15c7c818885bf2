"""Settings of the Coinbase Advanced Trade market-data adapter (websocket feed + REST candles)."""

from __future__ import annotations

import re
from typing import Final

import msgspec

from quantlab.core.errors import ConfigError
from quantlab.ingest.items import MAX_FRAME_BYTES

# Channels we subscribe to, by their subscribe name (level2 data arrives on channel "l2_data").
TICKER: Final = "ticker"
MARKET_TRADES: Final = "market_trades"
LEVEL2: Final = "level2"
HEARTBEATS: Final = "heartbeats"
DATA_CHANNELS: Final = (TICKER, MARKET_TRADES, LEVEL2)
CHANNELS: Final = (*DATA_CHANNELS, HEARTBEATS)

_SYMBOL = re.compile(r"^[A-Za-z0-9]+/[A-Za-z0-9]+$")


def to_product(symbol: str) -> str:
    """The Coinbase product id of a quantlab symbol: ``BTC/USD`` -> ``BTC-USD``."""
    if not isinstance(symbol, str) or not _SYMBOL.match(symbol):
        raise ConfigError("symbols", f"expected a symbol like 'BTC/USD', got {symbol!r}")
    return symbol.upper().replace("/", "-")


def to_symbol(product_id: str) -> str:
    """The quantlab symbol of a Coinbase product id: ``BTC-USD`` -> ``BTC/USD``."""
    return product_id.replace("-", "/")


class CoinbaseDataConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Settings of `CoinbaseDataSource` and `CoinbaseHistoricalBars`.

    Public market data needs no credentials; a JWT provider, when wanted, is passed to the
    source separately so it never appears in a config or its repr.

    Examples
    --------
    >>> CoinbaseDataConfig(symbols=("BTC/USD",)).products
    ('BTC-USD',)
    """

    symbols: tuple[str, ...] = ()
    channels: tuple[str, ...] = CHANNELS
    ws_url: str = "wss://advanced-trade-ws.coinbase.com"
    rest_url: str = "https://api.coinbase.com"
    name: str = "coinbase"
    open_timeout_s: float = 10.0
    close_timeout_s: float = 2.0
    # Websocket-level pings; None turns them off (the heartbeats channel still proves liveness).
    ping_interval_s: float | None = 20.0
    # Above MAX_FRAME_BYTES, so an oversized frame becomes a counted reject, not a dropped link.
    max_frame_bytes: int = 16 * 1024 * 1024
    # Level2 snapshots of deep books (BTC-USD) exceed the shared 1 MiB reject limit
    # (ccxt/ccxt#23597), so snapshot frames are accepted up to this size.
    max_snapshot_bytes: int = 16 * 1024 * 1024
    # Coinbase allows 10 requests/s per IP on public REST endpoints.
    rest_max_rate: float = 10.0
    rest_timeout_s: float = 10.0
    rest_retries: int = 3

    def __post_init__(self) -> None:
        for symbol in self.symbols:
            to_product(symbol)
        if len(set(self.symbols)) != len(self.symbols):
            raise ConfigError("symbols", f"duplicate symbols in {list(self.symbols)}")
        unknown = [c for c in self.channels if c not in CHANNELS]
        if unknown:
            raise ConfigError(
                "channels", f"unknown channels {unknown}; expected some of {CHANNELS}"
            )
        if len(set(self.channels)) != len(self.channels):
            raise ConfigError("channels", f"duplicate channels in {list(self.channels)}")
        if not self.ws_url.startswith(("ws://", "wss://")):
            raise ConfigError("ws_url", f"expected a ws:// or wss:// URL, got {self.ws_url!r}")
        if not self.rest_url.startswith(("http://", "https://")):
            raise ConfigError("rest_url", f"expected an http(s):// URL, got {self.rest_url!r}")
        for key in ("open_timeout_s", "close_timeout_s", "rest_max_rate", "rest_timeout_s"):
            if not getattr(self, key) > 0:
                raise ConfigError(key, f"must be > 0, got {getattr(self, key)}")
        if self.ping_interval_s is not None and not self.ping_interval_s > 0:
            raise ConfigError("ping_interval_s", f"must be > 0 or None, got {self.ping_interval_s}")
        if self.max_frame_bytes <= MAX_FRAME_BYTES:
            raise ConfigError(
                "max_frame_bytes",
                f"must exceed the reject limit {MAX_FRAME_BYTES}, got {self.max_frame_bytes}",
            )
        if not MAX_FRAME_BYTES <= self.max_snapshot_bytes <= self.max_frame_bytes:
            raise ConfigError(
                "max_snapshot_bytes",
                f"must be within [{MAX_FRAME_BYTES}, max_frame_bytes={self.max_frame_bytes}], "
                f"got {self.max_snapshot_bytes}",
            )
        if self.rest_retries < 0:
            raise ConfigError("rest_retries", f"must be >= 0, got {self.rest_retries}")

    @property
    def products(self) -> tuple[str, ...]:
        """The Coinbase product ids of `symbols`, in order."""
        return tuple(to_product(s) for s in self.symbols)
