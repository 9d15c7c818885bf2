"""Figures of the reliability suite (`tests/reliability`, `quantlab check reliability`).

Every reliability test measures what it proves (how many kills, messages, payloads; how many
of them lost, duplicated or leaked something) and calls `record` with the figures **before**
it asserts, so that a failing run's report still shows what went wrong::

    record(
        "faults",
        "kill -9 during fills, SQLite (WAL, synchronous=FULL)",
        trials=120,
        unit="kills",
        lost=0,
        duplicated=0,
        failed=0,
        failed_what="integrity_check not ok",
    )

`lost`, `duplicated` and `leaked` are counts of what must be zero; ``None`` means the check
does not measure that quantity (a fuzz test loses nothing: it counts crashes, in `failed`).
`failed` counts the check's own failure kind, named by `failed_what` (crashes, unclear
rejections, requests let in, rows altered, corrupt files...).

`record` appends one JSON line to the file named by ``QUANTLAB_RELIABILITY_OUT`` (one
``write`` in append mode, so the pytest-xdist workers can share the file); without it, it
does nothing. `quantlab check reliability` sets it, runs the suite and turns the lines into
the report (`quantlab.runs.reliability`).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

ENV = "QUANTLAB_RELIABILITY_OUT"
AREAS = ("faults", "bad input", "security")
COUNTS = ("lost", "duplicated", "leaked", "failed")


def record(
    area: str,
    check: str,
    *,
    trials: int,
    unit: str,
    lost: int | None = None,
    duplicated: int | None = None,
    leaked: int | None = None,
    failed: int | None = None,
    failed_what: str = "",
    detail: str = "",
) -> dict[str, Any]:
    """Record one row of the report (see the module's doc); returns the row."""
    if area not in AREAS:
        raise ValueError(f"reliability area {area!r} is not one of {AREAS}")
    if trials < 0:
        raise ValueError(f"trials must be >= 0, got {trials}")
    if failed is not None and not failed_what:
        raise ValueError(f"{check!r}: a `failed` count needs `failed_what` to say what failed")
    row: dict[str, Any] = {
        "area": area,
        "check": check,
        "trials": int(trials),
        "unit": unit,
        "lost": lost,
        "duplicated": duplicated,
        "leaked": leaked,
        "failed": failed,
        "failed_what": failed_what,
        "detail": detail,
        "test": os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0],
        "at": time.time(),
    }
    for name in COUNTS:
        value = row[name]
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ValueError(f"{check!r}: {name} must be a count >= 0 or None, got {value!r}")
    path = os.environ.get(ENV)
    if path:
        line = (json.dumps(row, default=str) + "\n").encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    return row
