"""The circuit breaker's state file: JSON, written atomically, editable from another process.

A write goes to a temporary file in the same folder, is fsynced, replaces the state file with
``os.replace`` and then the folder is fsynced: after a crash (even ``kill -9`` or a power cut
once the write returned) the file holds either the old or the new state, never a torn one.
Read-modify-write cycles hold an exclusive ``flock`` on ``<path>.lock`` (POSIX), so a `kill`
from the command line and an escalation in the running engine cannot overwrite each other.

`kill`, `reset` and `read_state` are what the CLI uses; a running `RiskEngine` watches the
file and applies what they wrote (see `CircuitBreaker.poll`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import msgspec

from quantlab.core.enums import BreakerState
from quantlab.core.errors import StorageError

if sys.platform != "win32":
    import fcntl


class BreakerRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What the state file holds: the state, the change that led to it, and a version that
    increases with every write (the id of the `BreakerEvent` that announces it)."""

    state: BreakerState
    previous: BreakerState
    trigger: str
    reason: str
    # Aware: the breaker compares it with its own clock and publishes it in a BreakerEvent.
    timestamp: Annotated[dt.datetime, msgspec.Meta(tz=True)]
    version: int = 0
    pid: int = 0


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(BreakerRecord)


def encode(record: BreakerRecord) -> bytes:
    return _encoder.encode(record) + b"\n"


def decode(data: bytes, path: str | Path = "<bytes>") -> BreakerRecord:
    """The record in `data` (the bytes of the file at `path`); `StorageError` naming the
    file if it is not a valid state (malformed, bad UTF-8, nested too deeply, a naive time)."""
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise StorageError(
            f"breaker state file {str(path)!r} is not a valid state: {exc}"
        ) from None


def read_bytes(path: str | Path) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return None


def read_state(path: str | Path) -> BreakerRecord | None:
    """The record in the state file at `path`; None if there is none yet.

    Raises `StorageError` (naming the file) when the file is not a valid state.
    """
    data = read_bytes(path)
    return None if data is None else decode(data, path)


def write_state(path: str | Path, record: BreakerRecord) -> bytes:
    """Write `record` atomically (tmp file, fsync, replace, fsync folder); return the bytes."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = encode(record)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)
    return data


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms where a folder cannot be opened (Windows)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold the state file's lock (an exclusive ``flock`` on ``<path>.lock``; none on Windows)."""
    target = Path(path)
    if sys.platform == "win32":
        yield
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{target}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _change(
    path: str | Path, state: BreakerState, trigger: str, reason: str, now: dt.datetime | None
) -> BreakerRecord:
    with locked(path):
        try:
            current = read_state(path)
        except StorageError:
            current = None  # an operator's decision replaces a broken file
        record = BreakerRecord(
            state=state,
            previous=current.state if current else BreakerState.ACTIVE,
            trigger=trigger,
            reason=reason,
            timestamp=now or dt.datetime.now(dt.UTC),
            version=(current.version if current else 0) + 1,
            pid=os.getpid(),
        )
        write_state(path, record)
        return record


def kill(path: str | Path, reason: str, *, now: dt.datetime | None = None) -> BreakerRecord:
    """The manual kill switch: set the breaker at `path` to HALTED (trigger ``kill_switch``).

    A running risk engine watching `path` picks it up within its ``watch_s``, publishes the
    `BreakerEvent` and the execution engine cancels every open order.
    """
    return _change(path, BreakerState.HALTED, "kill_switch", reason, now)


def reset(path: str | Path, reason: str, *, now: dt.datetime | None = None) -> BreakerRecord:
    """Set the breaker at `path` back to ACTIVE (trigger ``reset``): the only way down."""
    return _change(path, BreakerState.ACTIVE, "reset", reason, now)
