"""Settings of the polled news source (credentials are passed to the source, not stored here)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

import msgspec

from quantlab.core.errors import ConfigError

# Response shapes the source understands: Alpaca's ``/v1beta1/news`` and Polygon's
# ``/v2/reference/news``.
SHAPES: Final = frozenset({"alpaca", "polygon"})
# A symbol that can be a query value and a bus topic segment (``news.<symbol>``).
_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9./\-]*$")


class NewsDataConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which news endpoint to poll, for which symbols, and how often.

    Parameters
    ----------
    url
        The endpoint, e.g. ``https://data.alpaca.markets/v1beta1/news`` (``shape="alpaca"``)
        or ``https://api.polygon.io/v2/reference/news`` (``shape="polygon"``).
    symbols
        quantlab symbols; articles are kept only for these (other tickers they name are
        dropped from `NewsEvent.symbols`).
    poll_interval_s
        Pause between polls; a multiplexer watching this source needs ``stale_after_s``
        above it (each successful poll yields a `Heartbeat`).
    start, lookback_s
        The first poll asks for articles since `start`, or since ``lookback_s`` ago.
    overlap_s
        Later polls ask again from this long before the newest article seen, to catch
        stories indexed late; the ids already seen are dropped.
    seen_capacity
        How many article ids are remembered for deduplication (oldest forgotten first).
    """

    url: str
    symbols: tuple[str, ...]
    shape: str = "alpaca"
    name: str = "news"
    asset_class: str = "equity"
    poll_interval_s: float = 60.0
    start: dt.datetime | None = None
    lookback_s: float = 3600.0
    overlap_s: float = 300.0
    page_limit: int = 50
    max_pages_per_poll: int = 10
    timeout_s: float = 10.0
    max_rate: float = 3.0
    rate_period_s: float = 1.0
    max_retries: int = 3
    max_retry_after_s: float = 300.0
    max_body_bytes: int = 8 << 20
    seen_capacity: int = 100_000

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ConfigError("news.shape", f"expected one of {sorted(SHAPES)}, got {self.shape!r}")
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError("news.url", f"expected an http(s) URL, got {self.url!r}")
        if not self.symbols:
            raise ConfigError("news.symbols", "need at least one symbol")
        for symbol in self.symbols:
            if not _SYMBOL.match(symbol):
                raise ConfigError(
                    "news.symbols", f"{symbol!r} is not an upper-case symbol like 'AAPL'"
                )
        if self.start is not None and self.start.tzinfo is None:
            raise ConfigError("news.start", f"must be timezone-aware, got {self.start}")
        for key in (
            "poll_interval_s",
            "lookback_s",
            "timeout_s",
            "max_rate",
            "rate_period_s",
            "max_retry_after_s",
        ):
            if not getattr(self, key) > 0:
                raise ConfigError(f"news.{key}", f"must be > 0, got {getattr(self, key)}")
        if self.overlap_s < 0:
            raise ConfigError("news.overlap_s", f"must be >= 0, got {self.overlap_s}")
        if self.max_retries < 0:
            raise ConfigError("news.max_retries", f"must be >= 0, got {self.max_retries}")
        for key in ("page_limit", "max_pages_per_poll", "max_body_bytes", "seen_capacity"):
            if getattr(self, key) < 1:
                raise ConfigError(f"news.{key}", f"must be >= 1, got {getattr(self, key)}")
