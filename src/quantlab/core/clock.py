"""Clocks. The engine asks a `Clock` for the time, so backtest and live differ only in this part."""

from __future__ import annotations

import datetime as dt
import time
from typing import Protocol, runtime_checkable

from quantlab.core.errors import QuantlabError

_NS = 1_000_000_000


def ns_to_datetime(ts_ns: int) -> dt.datetime:
    """Integer nanoseconds since the epoch to an aware UTC datetime (microsecond precision)."""
    seconds, rest = divmod(int(ts_ns), _NS)
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC) + dt.timedelta(microseconds=rest // 1000)


def datetime_to_ns(value: dt.datetime) -> int:
    """An aware datetime to integer nanoseconds since the epoch; naive datetimes are refused."""
    if value.tzinfo is None:
        raise QuantlabError(f"datetime must be timezone-aware, got naive {value.isoformat()}")
    delta = value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * _NS + delta.microseconds * 1000


@runtime_checkable
class Clock(Protocol):
    """Where the engine reads the time from."""

    def now_ns(self) -> int:
        """Integer nanoseconds since the epoch, UTC."""
        ...

    def now(self) -> dt.datetime:
        """The same instant as an aware UTC datetime."""
        ...


class WallClock:
    """The machine's real time."""

    def now_ns(self) -> int:
        return time.time_ns()

    def now(self) -> dt.datetime:
        return ns_to_datetime(self.now_ns())


class SimulatedClock:
    """A clock that only moves when told to; time never goes backwards."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now = int(start_ns)

    def now_ns(self) -> int:
        return self._now

    def now(self) -> dt.datetime:
        return ns_to_datetime(self._now)

    def advance_to(self, ts_ns: int) -> None:
        """Move to `ts_ns`; a time earlier than now is ignored (the clock is monotonic)."""
        ts_ns = int(ts_ns)
        if ts_ns > self._now:
            self._now = ts_ns

    def advance_by(self, delta_ns: int) -> None:
        if delta_ns < 0:
            raise QuantlabError(f"a simulated clock cannot move backwards, got delta {delta_ns} ns")
        self._now += int(delta_ns)
