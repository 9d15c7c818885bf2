"""Crash points: where the kill tests SIGKILL the engine between an order's intent and its
acknowledgement (and its fills).

A crash point is a named place in the order path. In production every call is one dictionary
lookup that finds nothing. With ``QUANTLAB_CRASH_AT=<point>:<n>`` in the environment, the
process sends itself SIGKILL the n-th time it reaches `point`: no exception, no ``finally``,
no flush, exactly what a power cut or the OOM killer does. `tests/kill/` restarts the engine
afterwards and checks that the venue and the database agree (no duplicate order, no lost
fill). The idea is FoundationDB's "buggify" and CockroachDB's testing knobs: the faults live
in the real code path, not in a mock of it.

Points, in the order an order meets them:

``intent_committed``
    the intent is committed to SQL; the venue has not been called.
``venue_acked``
    the venue answered the submission; the answer is not yet committed.
``status_committed``
    the acknowledgement is committed; its event is not yet published.
``fill_received``
    the venue reported a fill; it is not yet committed.
``fill_committed``
    the fill is committed; ``orders.filled`` is not yet published.

A sixth place, a request in flight (the venue has the order, the engine has no answer), is
not a line of our code: the kill test holds the fake venue's reply and kills the process
from outside while it waits.
"""

from __future__ import annotations

import os
import signal
from typing import Final

POINTS: Final = (
    "intent_committed",
    "venue_acked",
    "status_committed",
    "fill_received",
    "fill_committed",
)
ENV: Final = "QUANTLAB_CRASH_AT"


def _plan(spec: str | None) -> dict[str, int]:
    if not spec:
        return {}
    point, _, nth = spec.partition(":")
    if point not in POINTS or not nth.isdigit() or int(nth) < 1:
        raise ValueError(f"{ENV}={spec!r}: expected <point>:<n> with point in {POINTS}, n >= 1")
    return {point: int(nth)}


_armed: dict[str, int] = _plan(os.environ.get(ENV))
_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    """SIGKILL this process if it is armed to die at the n-th pass through `name`."""
    if not _armed or name not in _armed:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == _armed[name]:
        os.kill(os.getpid(), signal.SIGKILL)


def arm(spec: str | None) -> None:
    """Arm (or with None disarm) the crash plan in this process, as the environment would."""
    _armed.clear()
    _hits.clear()
    _armed.update(_plan(spec))
