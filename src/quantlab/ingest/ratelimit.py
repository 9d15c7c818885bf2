"""Token-bucket limits on outbound requests, one bucket per source (aiolimiter)."""

from __future__ import annotations

import datetime as dt
import email.utils
import time

from aiolimiter import AsyncLimiter

from quantlab.core.errors import ConfigError


def limiter(max_rate: float, period_s: float = 1.0, *, name: str = "source") -> AsyncLimiter:
    """A token bucket allowing `max_rate` requests per `period_s` seconds (bursts up to it).

    Use as ``async with limiter: await client.get(...)``.
    """
    if not max_rate > 0:
        raise ConfigError(f"{name}.max_rate", f"must be > 0 requests per period, got {max_rate}")
    if not period_s > 0:
        raise ConfigError(f"{name}.period_s", f"must be > 0 seconds, got {period_s}")
    return AsyncLimiter(max_rate, period_s)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date; >= 0), or None when it is
    missing or unreadable. `now` (epoch seconds) is for tests."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def retry_after_s(value: str | None, default: float, cap: float) -> float:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), capped."""
    seconds = parse_retry_after(value)
    return min(default if seconds is None else seconds, cap)
