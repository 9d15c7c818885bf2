"""Order throttle: a token bucket per key (strategy), driven by the engine's clock.

Integer arithmetic in nanoseconds, so a simulated clock gives exact, repeatable counts: a
token is ``period_ns = round(1e9 / rate)`` nanoseconds of credit, the bucket holds at most
``burst`` tokens and starts full.
"""

from __future__ import annotations

from typing import Any

from quantlab.core.errors import ConfigError


class Throttle:
    """At most `burst` orders at once and `rate_per_s` orders per second on average, per key.

    `available` refills and tells whether a token is there without taking it; `consume`
    takes one (call it when the order is approved, so refused orders cost no token).

    Examples
    --------
    >>> t = Throttle(rate_per_s=2, burst=1)
    >>> t.available("s", 0), t.consume("s", 0), t.available("s", 0)
    (True, None, False)
    >>> t.available("s", 500_000_000)
    True
    """

    def __init__(self, rate_per_s: float, burst: int) -> None:
        if not rate_per_s > 0:
            raise ConfigError("risk.rate_per_s", f"must be > 0, got {rate_per_s!r}")
        if burst < 1:
            raise ConfigError("risk.burst", f"must be >= 1, got {burst}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.period_ns = max(1, round(1e9 / rate_per_s))
        self._cap = burst * self.period_ns
        # key -> [credit_ns, last_ns]; a list so the hot path updates in place.
        self._buckets: dict[str, list[int]] = {}

    def _refill(self, key: str, now_ns: int) -> list[int]:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [self._cap, now_ns]
            return bucket
        elapsed = now_ns - bucket[1]
        if elapsed > 0:  # a clock that steps back refills nothing
            credit = bucket[0] + elapsed
            bucket[0] = credit if credit < self._cap else self._cap
            bucket[1] = now_ns
        return bucket

    def available(self, key: str, now_ns: int) -> bool:
        return self._refill(key, now_ns)[0] >= self.period_ns

    def consume(self, key: str, now_ns: int) -> None:
        bucket = self._refill(key, now_ns)
        bucket[0] -= self.period_ns

    def tokens(self, key: str, now_ns: int) -> float:
        return self._refill(key, now_ns)[0] / self.period_ns

    def stats(self) -> dict[str, Any]:
        return {"rate_per_s": self.rate_per_s, "burst": self.burst, "keys": len(self._buckets)}
