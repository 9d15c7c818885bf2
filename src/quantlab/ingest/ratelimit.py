"""Token-bucket limits on outbound requests, one bucket per source (aiolimiter)."""

from __future__ import annotations

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
