"""The batcher: validated rows into fixed-size Polars frames (size or time flush)."""

from __future__ import annotations

import time

import polars as pl

from quantlab.core.errors import DataError


class Batcher:
    """Collects frames and cuts them into batches of `batch_size` rows.

    `add` returns the full batches it could cut; `due` tells whether the oldest pending row
    has waited `flush_ms` (the live path's time flush); `flush` returns what is left.
    """

    def __init__(self, batch_size: int = 1000, flush_ms: float = 5.0) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        if flush_ms <= 0:
            raise DataError(f"flush_ms must be > 0, got {flush_ms}")
        self.batch_size = batch_size
        self.flush_ns = int(flush_ms * 1e6)
        self._parts: list[pl.DataFrame] = []
        self._rows = 0
        self._since: int | None = None

    @property
    def pending(self) -> int:
        return self._rows

    def add(self, frame: pl.DataFrame) -> list[pl.DataFrame]:
        if frame.is_empty():
            return []
        if self._since is None:
            self._since = time.monotonic_ns()
        self._parts.append(frame)
        self._rows += frame.height
        if self._rows < self.batch_size:
            return []
        whole = pl.concat(self._parts, rechunk=False) if len(self._parts) > 1 else self._parts[0]
        n_full = (whole.height // self.batch_size) * self.batch_size
        batches = [
            whole.slice(i, self.batch_size).rechunk() for i in range(0, n_full, self.batch_size)
        ]
        rest = whole.slice(n_full)
        self._parts = [rest] if rest.height else []
        self._rows = rest.height
        self._since = time.monotonic_ns() if rest.height else None
        return batches

    def due(self) -> bool:
        return self._since is not None and time.monotonic_ns() - self._since >= self.flush_ns

    def flush(self) -> pl.DataFrame | None:
        if not self._rows:
            return None
        whole = pl.concat(self._parts).rechunk() if len(self._parts) > 1 else self._parts[0]
        self._parts, self._rows, self._since = [], 0, None
        return whole
