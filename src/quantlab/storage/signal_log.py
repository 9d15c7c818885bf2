"""Signals at rest: an append-only MessagePack log (DESIGN §4: JSON on the bus, MessagePack
at rest).

The log is a sequence of records, each a 4-byte little-endian length followed by one
MessagePack-encoded `Signal`. `SignalLog` is a bus component on ``signals.*``: it appends every
signal once. A repeated ``signal_id`` (a redelivery, a replayed strategy, a restart over the
same data) is ignored, counted in `duplicates`; the ids already in the file are read back on
start, so the log stays free of repeats across restarts. A torn last record (a crash mid-write)
is detected on read and reported, never decoded as garbage.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from quantlab.bus import topics
from quantlab.bus.base import Bus, Envelope
from quantlab.core.errors import DataError
from quantlab.core.messages import Signal, from_msgpack, to_msgpack

_LEN = struct.Struct("<I")


def _records(data: bytes, path: Path) -> Iterator[bytes]:
    pos = 0
    while pos < len(data):
        if pos + _LEN.size > len(data):
            raise DataError(f"{path}: torn record header at byte {pos} (file cut short?)")
        (size,) = _LEN.unpack_from(data, pos)
        start, end = pos + _LEN.size, pos + _LEN.size + size
        if end > len(data):
            raise DataError(f"{path}: torn record at byte {pos}: needs {size} bytes")
        yield data[start:end]
        pos = end


def read_signals(path: str | Path) -> list[Signal]:
    """Every signal in the log at `path`, in the order they were written."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for i, record in enumerate(_records(p.read_bytes(), p)):
        message = from_msgpack(record)
        if not isinstance(message, Signal):
            raise DataError(f"{p}: record {i} is a {type(message).__name__}, not a Signal")
        out.append(message)
    return out


def signals_frame(signals: list[Signal]) -> pl.DataFrame:
    """Signals as a frame (one row each; metadata as a JSON-ish string column)."""
    return pl.DataFrame(
        {
            "signal_id": [str(s.signal_id) for s in signals],
            "strategy_id": [s.strategy_id for s in signals],
            "symbol": [s.symbol for s in signals],
            "side": [str(s.side) for s in signals],
            "strength": [s.strength for s in signals],
            "confidence": [s.confidence for s in signals],
            "timestamp": [s.timestamp for s in signals],
            "mid": [s.mid for s in signals],
            "metadata": [str(s.metadata) for s in signals],
        },
        schema_overrides={"timestamp": pl.Datetime("us", "UTC")},
    )


class SignalLog:
    """Appends each distinct signal from ``signals.*`` to a MessagePack log file."""

    name = "signal-log"

    def __init__(self, path: str | Path, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._seen: set[str] = set()
        self._fh: Any = None
        self.written = 0
        self.duplicates = 0

    async def start(self, bus: Bus) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._seen = {str(s.signal_id) for s in read_signals(self.path)}
        self._fh = self.path.open("ab")
        bus.consume(topics.ALL_SIGNALS, self._on_signal, name=self.name)

    async def stop(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            if self.fsync:
                os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None

    def append(self, signal: Signal) -> bool:
        """Write `signal` unless its id is already in the log; True if written."""
        key = str(signal.signal_id)
        if key in self._seen:
            self.duplicates += 1
            return False
        if self._fh is None:
            raise DataError(f"signal log {self.path} is not open (start() first)")
        record = to_msgpack(signal)
        self._fh.write(_LEN.pack(len(record)) + record)
        self._seen.add(key)
        self.written += 1
        return True

    async def _on_signal(self, envelope: Envelope) -> None:
        if isinstance(envelope.payload, Signal):
            self.append(envelope.payload)

    def stats(self) -> dict[str, Any]:
        return {"written": self.written, "duplicates": self.duplicates, "path": str(self.path)}
