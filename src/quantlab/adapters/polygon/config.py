"""Settings of the Polygon stocks source and REST backfill (the API key is passed separately)."""

from __future__ import annotations

import re
from typing import Final

import msgspec

from quantlab.core.errors import ConfigError

# Channels of Polygon's stocks websocket: trades, quotes, per-second and per-minute aggregates.
CHANNELS: Final = frozenset({"T", "Q", "A", "AM"})
# A ticker that can go into a comma-separated subscription and a bus topic segment.
_TICKER = re.compile(r"^[A-Z0-9][A-Z0-9.\-]*$")


class PolygonDataConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where and what to stream from Polygon; no secrets (the key goes to the source itself).

    Parameters
    ----------
    symbols
        quantlab equity symbols (``"AAPL"``, ``"BRK.B"``); Polygon uses the same tickers.
    channels
        Any of ``T`` (trades), ``Q`` (quotes), ``A`` (second bars), ``AM`` (minute bars).
        ``A`` and ``AM`` are exclusive: bar frames carry no timeframe column.
    heartbeat_interval_s
        After this long without a message the source pings the server and yields a
        `Heartbeat` on the pong (equity streams are silent outside market hours); ``None``
        turns it off and leaves liveness to the multiplexer's staleness check.
    rest_max_rate, rest_period_s
        Outbound REST budget (the free plan allows 5 requests a minute).
    """

    symbols: tuple[str, ...]
    channels: tuple[str, ...] = ("T", "Q", "AM")
    ws_url: str = "wss://socket.polygon.io/stocks"
    rest_url: str = "https://api.polygon.io"
    name: str = "polygon"
    asset_class: str = "equity"
    open_timeout_s: float = 10.0
    auth_timeout_s: float = 10.0
    close_timeout_s: float = 2.0
    heartbeat_interval_s: float | None = 15.0
    pong_timeout_s: float = 10.0
    # Frames up to this size are received (bigger ones end the connection); the parser then
    # rejects anything over `ingest.items.MAX_FRAME_BYTES` as a counted `oversized_frame`.
    max_ws_frame_bytes: int = 16 << 20
    rest_timeout_s: float = 30.0
    rest_max_rate: float = 5.0
    rest_period_s: float = 60.0
    rest_page_limit: int = 50_000
    rest_max_pages: int = 1_000
    rest_max_retries: int = 3
    max_retry_after_s: float = 60.0
    adjusted: bool = True

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ConfigError("polygon.symbols", "need at least one symbol")
        for symbol in self.symbols:
            if not _TICKER.match(symbol):
                raise ConfigError(
                    "polygon.symbols",
                    f"{symbol!r} is not an upper-case ticker like 'AAPL' or 'BRK.B'",
                )
        if len(set(self.symbols)) != len(self.symbols):
            raise ConfigError("polygon.symbols", f"duplicate symbols in {list(self.symbols)}")
        if not self.channels or not set(self.channels) <= CHANNELS:
            raise ConfigError(
                "polygon.channels", f"expected some of {sorted(CHANNELS)}, got {self.channels}"
            )
        if {"A", "AM"} <= set(self.channels):
            raise ConfigError(
                "polygon.channels",
                "subscribe to 'A' (second bars) or 'AM' (minute bars), not both: "
                "bar frames carry no timeframe column",
            )
        for key in ("ws_url", "rest_url"):
            url: str = getattr(self, key)
            if not url.startswith(
                ("ws://", "wss://") if key == "ws_url" else ("http://", "https://")
            ):
                raise ConfigError(f"polygon.{key}", f"unsupported URL scheme in {url!r}")
        for key in (
            "open_timeout_s",
            "auth_timeout_s",
            "close_timeout_s",
            "pong_timeout_s",
            "rest_timeout_s",
            "rest_max_rate",
            "rest_period_s",
            "max_retry_after_s",
        ):
            if not getattr(self, key) > 0:
                raise ConfigError(f"polygon.{key}", f"must be > 0, got {getattr(self, key)}")
        if self.heartbeat_interval_s is not None and not self.heartbeat_interval_s > 0:
            raise ConfigError(
                "polygon.heartbeat_interval_s",
                f"must be > 0 or None, got {self.heartbeat_interval_s}",
            )
        for key in ("max_ws_frame_bytes", "rest_page_limit", "rest_max_pages"):
            if getattr(self, key) < 1:
                raise ConfigError(f"polygon.{key}", f"must be >= 1, got {getattr(self, key)}")
        if self.rest_max_retries < 0:
            raise ConfigError(
                "polygon.rest_max_retries", f"must be >= 0, got {self.rest_max_retries}"
            )

    def subscription(self) -> str:
        """The ``params`` of the subscribe message: ``"T.AAPL,Q.AAPL,..."``."""
        return ",".join(f"{ch}.{sym}" for ch in self.channels for sym in self.symbols)
