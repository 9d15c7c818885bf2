"""The risk circuit breaker: ACTIVE -> REDUCING (reduce-only) -> HALTED.

Triggers:

* ``drawdown``: equity below its peak by more than ``max_drawdown_soft`` (REDUCING) or
  ``max_drawdown_hard`` (HALTED);
* ``window_loss``: equity below its highest point of the last ``loss_window_s`` seconds by
  more than ``max_window_loss_soft`` (REDUCING) or ``max_window_loss_hard`` (HALTED);
* ``error_rate``: more than ``max_errors`` venue rejections and ``rate_limit`` denials within
  ``error_window_s`` seconds (HALTED): what stops a runaway strategy;
* ``kill_switch``: the manual kill (`kill`, here or from another process) (HALTED);
* any other name through `halt` (reconciliation calls it on a position mismatch) (HALTED).

The breaker only ever escalates on its own; `reset` (a person's decision) is the only way
back to ACTIVE. Every change is written to the state file (atomically, see
`quantlab.risk.statefile`) *before* the caller publishes the returned `BreakerEvent`, and the
state is loaded on start, so a restart (even after ``kill -9``) keeps it. Changes written to
the file by another process (`kill`, `reset`) are applied by `poll`.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from quantlab.core.clock import Clock, WallClock
from quantlab.core.enums import BreakerState
from quantlab.core.errors import ConfigError, StorageError
from quantlab.core.messages import BreakerEvent
from quantlab.risk.statefile import (
    BreakerRecord,
    decode,
    kill,
    locked,
    read_bytes,
    read_state,
    reset,
    write_state,
)

__all__ = ["BreakerChange", "BreakerConfig", "CircuitBreaker", "kill", "read_state", "reset"]


class BreakerChange(NamedTuple):
    """A state change: the event to publish and the state-file version it announces."""

    event: BreakerEvent
    version: int

    @property
    def msg_id(self) -> str:
        """The bus message id: unique per change, the same on a redelivery."""
        return f"breaker:{self.version}:{self.event.timestamp.isoformat()}"


Changes = tuple[BreakerChange, ...]
_NONE: Changes = ()
_NS = 1_000_000_000
_WINDOW_BUCKETS = 256  # the loss window's resolution: window / 256


class BreakerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Circuit-breaker settings. Amounts are equity in quote units (see `EquityTracker`).

    Parameters
    ----------
    state_path
        The JSON state file; None keeps the state in memory only (backtests).
    max_drawdown_soft, max_drawdown_hard
        Drawdown from the equity peak that sets REDUCING / HALTED. None: off.
    loss_window_s, max_window_loss_soft, max_window_loss_hard
        Loss from the highest equity within the last `loss_window_s` seconds that sets
        REDUCING / HALTED. None: off.
    error_window_s, max_errors
        More than `max_errors` venue rejections plus ``rate_limit`` denials within
        `error_window_s` seconds set HALTED. None: off.
    watch_s
        How often (seconds, wall time) the engine looks at the state file for a kill or a
        reset written by another process: on the order path and on a timer.
    """

    state_path: str | None = None
    max_drawdown_soft: float | None = None
    max_drawdown_hard: float | None = None
    loss_window_s: float = 3600.0
    max_window_loss_soft: float | None = None
    max_window_loss_hard: float | None = None
    error_window_s: float = 60.0
    max_errors: int | None = 20
    watch_s: float = 1.0

    def __post_init__(self) -> None:
        for key in (
            "max_drawdown_soft",
            "max_drawdown_hard",
            "max_window_loss_soft",
            "max_window_loss_hard",
        ):
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"risk.breaker.{key}", f"must be > 0, got {value!r}")
        for key in ("loss_window_s", "error_window_s"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"risk.breaker.{key}", f"must be > 0, got {value!r}")
        if not (math.isfinite(self.watch_s) and self.watch_s >= 0):
            raise ConfigError("risk.breaker.watch_s", f"must be >= 0, got {self.watch_s!r}")
        if self.max_errors is not None and self.max_errors < 1:
            raise ConfigError("risk.breaker.max_errors", f"must be >= 1, got {self.max_errors}")
        for soft, hard in (
            ("max_drawdown_soft", "max_drawdown_hard"),
            ("max_window_loss_soft", "max_window_loss_hard"),
        ):
            lo, hi = getattr(self, soft), getattr(self, hard)
            if lo is not None and hi is not None and lo >= hi:
                raise ConfigError(f"risk.breaker.{soft}", f"{lo} must be below {hard} {hi}")


class CircuitBreaker:
    """The breaker's state machine and its persistence.

    Methods that may change the state return the `BreakerChange`s whose events the caller
    publishes (usually none or one); the state file is already written when they return.

    Examples
    --------
    >>> breaker = CircuitBreaker(BreakerConfig(max_drawdown_soft=5, max_drawdown_hard=10))
    >>> breaker.on_equity(100.0, 0), breaker.state
    ((), <BreakerState.ACTIVE: 'active'>)
    >>> [c.event.state for c in breaker.on_equity(94.0, 1)]
    [<BreakerState.REDUCING: 'reducing'>]
    """

    def __init__(self, config: BreakerConfig | None = None, clock: Clock | None = None) -> None:
        self.config = config = config or BreakerConfig()
        self.clock = clock or WallClock()
        self.path = Path(config.state_path) if config.state_path else None
        self.record = BreakerRecord(
            state=BreakerState.ACTIVE,
            previous=BreakerState.ACTIVE,
            trigger="start",
            reason="",
            timestamp=self.clock.now(),
        )
        self._errors: deque[tuple[int, str]] | None = (
            deque(maxlen=config.max_errors + 1) if config.max_errors is not None else None
        )
        self._error_window_ns = round(config.error_window_s * _NS)
        self._loss_window_ns = round(config.loss_window_s * _NS)
        self._bucket_ns = max(1, self._loss_window_ns // _WINDOW_BUCKETS)
        self._highs: deque[tuple[int, float]] = deque()  # (bucket, equity), decreasing
        self.peak: float | None = None
        self.equity: float | None = None
        self.drawdown = 0.0
        self.window_loss = 0.0
        self._seen: bytes | None = None
        self._next_watch = 0.0
        self.external = 0  # changes applied from the file
        if self.path is not None:
            self._load(self.path)

    @property
    def state(self) -> BreakerState:
        return self.record.state

    # -- persistence -------------------------------------------------------------------------
    def _load(self, path: Path) -> None:
        with locked(path):
            data = read_bytes(path)
            if data is None:
                self.record = self._stamped(self.record)
                self._seen = write_state(path, self.record)
                return
            try:
                self.record = decode(data, path)
                self._seen = data
            except StorageError as exc:  # fail safe: a state we cannot read is a halt
                self.record = self._next(BreakerState.HALTED, "state_file", str(exc), 0)
                self._seen = write_state(path, self.record)

    def _stamped(self, record: BreakerRecord) -> BreakerRecord:
        return msgspec.structs.replace(record, pid=os.getpid())

    def _next(self, state: BreakerState, trigger: str, reason: str, version: int) -> BreakerRecord:
        return BreakerRecord(
            state=state,
            previous=self.record.state,
            trigger=trigger,
            reason=reason,
            timestamp=self.clock.now(),
            version=version + 1,
            pid=os.getpid(),
        )

    def _adopt(self, record: BreakerRecord) -> Changes:
        """Take a record written by someone else; an event if the state changed."""
        before = self.record.state
        self.record = record
        if record.state is before:
            return _NONE
        self.external += 1
        if record.state is BreakerState.ACTIVE:
            self._rebase()
        event = BreakerEvent(
            state=record.state,
            previous=before,
            trigger=record.trigger,
            reason=record.reason,
            timestamp=record.timestamp,
        )
        return (BreakerChange(event, record.version),)

    def _sync_locked(self, path: Path) -> Changes:
        data = read_bytes(path)
        if data is not None and data == self._seen:
            return _NONE
        if data is None:  # deleted: write ours back
            self._seen = write_state(path, self.record)
            return _NONE
        try:
            record = decode(data, path)
        except StorageError as exc:  # fail safe: a state we cannot read is a halt
            if self.record.state is BreakerState.HALTED:
                self._seen = write_state(path, self.record)
                return _NONE
            return self._change(BreakerState.HALTED, "state_file", str(exc), path=path)
        self._seen = data
        return self._adopt(record)

    def poll(self, *, force: bool = False) -> Changes:
        """Apply a kill or reset another process wrote to the state file.

        Reads the file at most every ``watch_s`` seconds (wall time) unless `force`.
        """
        if self.path is None:
            return _NONE
        now = time.monotonic()
        if not force and now < self._next_watch:
            return _NONE
        self._next_watch = now + self.config.watch_s
        data = read_bytes(self.path)
        if data is not None and data == self._seen:
            return _NONE
        with locked(self.path):
            return self._sync_locked(self.path)

    # -- transitions -------------------------------------------------------------------------
    def _change(
        self, state: BreakerState, trigger: str, reason: str, *, path: Path | None
    ) -> Changes:
        """Move to `state`: persisted first, then the event is returned for publishing."""
        before = self.record.state
        self.record = self._next(state, trigger, reason, self.record.version)
        if state is BreakerState.ACTIVE:
            self._rebase()
        if path is not None:
            self._seen = write_state(path, self.record)
        event = BreakerEvent(
            state=state,
            previous=before,
            trigger=trigger,
            reason=reason,
            timestamp=self.record.timestamp,
        )
        return (BreakerChange(event, self.record.version),)

    def _move(self, state: BreakerState, trigger: str, reason: str) -> Changes:
        if self.path is None:
            if not self._allowed(state):
                return _NONE
            return self._change(state, trigger, reason, path=None)
        with locked(self.path):
            events = self._sync_locked(self.path)  # a kill or reset written meanwhile first
            if not self._allowed(state):
                return events
            return events + self._change(state, trigger, reason, path=self.path)

    def _allowed(self, state: BreakerState) -> bool:
        current = self.record.state
        if state is BreakerState.ACTIVE:
            return current is not BreakerState.ACTIVE
        return state.level > current.level

    def escalate(self, state: BreakerState, trigger: str, reason: str) -> Changes:
        """Move up to `state` (never down); nothing if the breaker is already there or above."""
        if state is BreakerState.ACTIVE or not self._allowed(state):
            return _NONE
        return self._move(state, trigger, reason)

    def halt(self, trigger: str, reason: str) -> Changes:
        """HALTED by an outside decision (reconciliation: ``halt("reconciliation", ...)``)."""
        return self.escalate(BreakerState.HALTED, trigger, reason)

    def kill(self, reason: str) -> Changes:
        """The manual kill switch: HALTED."""
        return self.escalate(BreakerState.HALTED, "kill_switch", reason)

    def reset(self, reason: str) -> Changes:
        """Back to ACTIVE (a manual decision): the drawdown peak, the loss window and the
        error count start afresh from here."""
        return self._move(BreakerState.ACTIVE, "reset", reason)

    def _rebase(self) -> None:
        self.peak = None
        self._highs.clear()
        if self._errors is not None:
            self._errors.clear()

    # -- triggers ----------------------------------------------------------------------------
    def on_equity(self, equity: float, now_ns: int) -> Changes:
        """A new equity figure at `now_ns`: check drawdown and window loss."""
        cfg = self.config
        self.equity = equity
        if self.peak is None or equity > self.peak:
            self.peak = equity
        self.drawdown = self.peak - equity
        highs = self._highs
        bucket = now_ns // self._bucket_ns
        while highs and highs[-1][1] <= equity:
            highs.pop()
        if not highs or highs[-1][0] < bucket:
            highs.append((bucket, equity))
        oldest = (now_ns - self._loss_window_ns) // self._bucket_ns
        while highs[0][0] < oldest:
            highs.popleft()
        high = highs[0][1]
        self.window_loss = high - equity
        level = self.record.state.level
        if level >= BreakerState.HALTED.level:
            return _NONE
        dd, wl = self.drawdown, self.window_loss
        if cfg.max_drawdown_hard is not None and dd > cfg.max_drawdown_hard:
            return self._move(
                BreakerState.HALTED,
                "drawdown",
                f"drawdown {dd:.8g} from peak {self.peak:.8g} (equity {equity:.8g}) "
                f"> hard limit {cfg.max_drawdown_hard:g}",
            )
        if cfg.max_window_loss_hard is not None and wl > cfg.max_window_loss_hard:
            return self._move(
                BreakerState.HALTED,
                "window_loss",
                f"loss {wl:.8g} within {cfg.loss_window_s:g}s (from {high:.8g} to "
                f"{equity:.8g}) > hard limit {cfg.max_window_loss_hard:g}",
            )
        if level >= BreakerState.REDUCING.level:
            return _NONE
        if cfg.max_drawdown_soft is not None and dd > cfg.max_drawdown_soft:
            return self._move(
                BreakerState.REDUCING,
                "drawdown",
                f"drawdown {dd:.8g} from peak {self.peak:.8g} (equity {equity:.8g}) "
                f"> soft limit {cfg.max_drawdown_soft:g}",
            )
        if cfg.max_window_loss_soft is not None and wl > cfg.max_window_loss_soft:
            return self._move(
                BreakerState.REDUCING,
                "window_loss",
                f"loss {wl:.8g} within {cfg.loss_window_s:g}s (from {high:.8g} to "
                f"{equity:.8g}) > soft limit {cfg.max_window_loss_soft:g}",
            )
        return _NONE

    def record_error(self, now_ns: int, what: str) -> Changes:
        """A venue rejection or a ``rate_limit`` denial at `now_ns` (`what` says which)."""
        errors = self._errors
        if errors is None:
            return _NONE
        errors.append((now_ns, what))
        if len(errors) < (errors.maxlen or 0) or now_ns - errors[0][0] > self._error_window_ns:
            return _NONE
        if self.record.state is BreakerState.HALTED:
            return _NONE
        kinds = Counter(w for _, w in errors)
        listed = ", ".join(f"{n} {w}" for w, n in sorted(kinds.items()))
        return self._move(
            BreakerState.HALTED,
            "error_rate",
            f"{len(errors)} errors ({listed}) within {self.config.error_window_s:g}s "
            f"> max_errors {self.config.max_errors}",
        )

    def stats(self) -> dict[str, Any]:
        return {
            "state": self.record.state.value,
            "trigger": self.record.trigger,
            "reason": self.record.reason,
            "since": self.record.timestamp.isoformat(),
            "version": self.record.version,
            "equity": self.equity,
            "peak": self.peak,
            "drawdown": self.drawdown,
            "window_loss": self.window_loss,
        }
