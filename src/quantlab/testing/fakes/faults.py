"""A seeded random schedule of faults for the fake trading venues (`FaultSchedule`).

A fake venue (`alpaca_trading.FakeAlpacaTrading`, `ccxt_trading.FakeBinanceTrading`,
`ccxt_trading.FakeCoinbaseTrading`) with a ``schedule`` asks it, for every request, what to do
(`FaultSchedule.draw`), and carries the answer out:

* ``429`` with a ``Retry-After`` header, and ``429`` without one: not processed;
* ``500``, ``502``, ``503``: not processed;
* ``5xx after commit``: the request is processed (an order is created), then a 5xx answers;
* ``timeout``: no answer within the client's timeout, nothing processed (a 504 comes later);
* ``timeout after commit``: processed at once, the answer sent after the client's timeout;
* ``dropped``: the connection is closed without an answer, nothing processed;
* ``dropped after commit``: processed, then the connection is closed without an answer.

The faults that commit only hit requests that create an order; reads get the others. An order
a request creates may also stay invisible for a while (every lookup and listing answers "not
found", as a venue's eventually consistent reads do): `Fault.invisible_s`, drawn below the
engine's grace period (``short``) or well beyond it (``long``), more often after a fault that
committed (the case where "not found" decides whether the order is believed lost).

Every draw comes from one `random.Random(seed)`, so a seed names a schedule (the order in
which requests reach the fake still depends on timing). `injected` counts what was drawn, by
kind, separately for order entry and reads; `stop` turns the schedule off (no more faults,
no more invisibility).

>>> schedule = FaultSchedule(7, client_timeout_s=0.2, grace_s=0.3)      # doctest: +SKIP
>>> fake.schedule = schedule                                            # doctest: +SKIP
"""

from __future__ import annotations

import math
import random
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

COMMITTING: Final = frozenset({"5xx after commit", "timeout after commit", "dropped after commit"})
KINDS: Final = (
    "429 Retry-After",
    "429 no Retry-After",
    "500",
    "502",
    "503",
    "timeout",
    "dropped",
    *sorted(COMMITTING),
)
DEFAULT_WEIGHTS: Final[Mapping[str, float]] = {kind: 1.0 for kind in KINDS}


@dataclass(frozen=True)
class Fault:
    """What a fake does with one request (see the module doc).

    `status` None with `drop` False is the normal answer (after `delay_s`). `commit` says the
    request is processed before the fault; without it nothing happens at the venue.
    """

    kind: str = ""
    status: int | None = None
    commit: bool = True
    delay_s: float = 0.0
    drop: bool = False
    retry_after: str | None = None
    invisible_s: float = 0.0

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": self.retry_after}


class FaultSchedule:
    """Seeded random faults for a fake venue's requests (see the module doc).

    Parameters
    ----------
    seed
        Seeds the one random generator every draw comes from.
    client_timeout_s
        The client's request timeout: a ``timeout`` answers `timeout_margin_s` after it.
    grace_s
        The engine's ``not_found_grace_s``: ``short`` invisibility is drawn from 20-70 % of
        it, ``long`` from 2-4 times it (past the grace even counted from the client's timeout).
    order_rate, read_rate
        The chance that an order-entry request, or any other request, gets a fault.
    weights
        Relative weights of the fault kinds (`KINDS`); a kind left out is never drawn.
    short_rate, long_rate
        The chance that an order created by a request that answered normally stays invisible
        for a short or a long while; `committed_short_rate`, `committed_long_rate` the same
        after a fault that committed.
    retry_after_s
        The ``Retry-After`` a 429 carries (seconds, as text), scaled down for tests.
    """

    def __init__(
        self,
        seed: int,
        *,
        client_timeout_s: float,
        grace_s: float,
        order_rate: float = 0.3,
        read_rate: float = 0.05,
        weights: Mapping[str, float] | None = None,
        short_rate: float = 0.1,
        long_rate: float = 0.03,
        committed_short_rate: float = 0.3,
        committed_long_rate: float = 0.3,
        retry_after_s: str = "0.02",
        timeout_margin_s: float = 0.1,
    ) -> None:
        for name, value in (("client_timeout_s", client_timeout_s), ("grace_s", grace_s)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be > 0 seconds, got {value!r}")
        rates = {
            "order_rate": order_rate,
            "read_rate": read_rate,
            "short_rate": short_rate,
            "long_rate": long_rate,
            "committed_short_rate": committed_short_rate,
            "committed_long_rate": committed_long_rate,
        }
        for name, value in rates.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        if short_rate + long_rate > 1 or committed_short_rate + committed_long_rate > 1:
            raise ValueError("a short and a long invisibility rate add up to more than 1")
        table = dict(DEFAULT_WEIGHTS if weights is None else weights)
        unknown = set(table) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {list(KINDS)}")
        if any(not (math.isfinite(w) and w >= 0) for w in table.values()):
            raise ValueError(f"fault weights must be >= 0, got {table}")
        self.client_timeout_s = client_timeout_s
        self.grace_s = grace_s
        self.order_rate, self.read_rate = order_rate, read_rate
        self.short_rate, self.long_rate = short_rate, long_rate
        self.committed_short_rate = committed_short_rate
        self.committed_long_rate = committed_long_rate
        self.retry_after_s = retry_after_s
        self.timeout_margin_s = timeout_margin_s
        self._order_kinds = [(k, w) for k, w in table.items() if w > 0]
        self._read_kinds = [(k, w) for k, w in self._order_kinds if k not in COMMITTING]
        self._random = random.Random(seed)  # noqa: S311 (a reproducible schedule, not cryptography)
        self._lock = threading.Lock()  # the Alpaca fake serves from several threads
        self.active = True
        self.injected: Counter[str] = Counter()  # "order entry: 503", "read: dropped"...

    def stop(self) -> None:
        """No more faults and no more invisible orders from now on."""
        self.active = False

    def draw(self, *, creates_order: bool) -> Fault | None:
        """What to do with the next request (None: answer it normally)."""
        if not self.active:
            return None
        with self._lock:
            rate = self.order_rate if creates_order else self.read_rate
            kinds = self._order_kinds if creates_order else self._read_kinds
            kind = self._pick(kinds) if kinds and self._random.random() < rate else ""
            if kind:
                self.injected[f"{'order entry' if creates_order else 'read'}: {kind}"] += 1
            fault = self._fault(kind)
            if not creates_order or not fault.commit:
                return fault if kind else None
            invisible = self._invisible(committed=bool(kind))
            if not kind and not invisible:
                return None
            return Fault(
                kind=fault.kind,
                status=fault.status,
                commit=fault.commit,
                delay_s=fault.delay_s,
                drop=fault.drop,
                retry_after=fault.retry_after,
                invisible_s=invisible,
            )

    def _pick(self, kinds: list[tuple[str, float]]) -> str:
        total = sum(w for _, w in kinds)
        point = self._random.random() * total
        for kind, weight in kinds:
            point -= weight
            if point < 0:
                return kind
        return kinds[-1][0]

    def _fault(self, kind: str) -> Fault:
        late = self.client_timeout_s + self.timeout_margin_s
        if kind == "429 Retry-After":
            return Fault(kind, 429, commit=False, retry_after=self.retry_after_s)
        if kind == "429 no Retry-After":
            return Fault(kind, 429, commit=False)
        if kind in ("500", "502", "503"):
            return Fault(kind, int(kind), commit=False)
        if kind == "timeout":
            return Fault(kind, 504, commit=False, delay_s=late)
        if kind == "dropped":
            return Fault(kind, commit=False, drop=True)
        if kind == "5xx after commit":
            return Fault(kind, self._random.choice((500, 502, 503, 504)))
        if kind == "timeout after commit":
            return Fault(kind, delay_s=late)
        if kind == "dropped after commit":
            return Fault(kind, drop=True)
        return Fault()

    def _invisible(self, *, committed: bool) -> float:
        short = self.committed_short_rate if committed else self.short_rate
        long = self.committed_long_rate if committed else self.long_rate
        point = self._random.random()
        if point < short:
            return self.grace_s * self._random.uniform(0.2, 0.7)
        if point < short + long:
            return self.grace_s * self._random.uniform(2.0, 4.0)
        return 0.0
