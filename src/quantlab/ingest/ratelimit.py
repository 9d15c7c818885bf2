"""Token-bucket limits on outbound requests, one bucket per source (aiolimiter)."""

from __future__ import annotations

import datetime as dt
import email.utils

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


def retry_after_s(value: str | None, default: float, cap: float) -> float:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), capped."""
    if value is None:
        return min(default, cap)
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return min(default, cap)
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - dt.datetime.now(dt.UTC)).total_seconds()
    return min(max(seconds, 0.0), cap)
