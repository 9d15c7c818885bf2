"""The dead-letter store for rejected market events: a Parquet file with each row's reason."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from quantlab.storage.lake import atomic_write_parquet


class DeadLetterFile:
    """Collects rejected rows (any schema, plus ``source`` and ``reason``); `flush` writes them."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._parts: list[pl.DataFrame] = []
        self.rows = 0

    def __call__(self, source: str, rejected: pl.DataFrame) -> None:
        self._parts.append(rejected.with_columns(source=pl.lit(source)))
        self.rows += rejected.height

    def flush(self) -> Path | None:
        """Write everything collected so far (merged with the file's rows); None if nothing."""
        if not self._parts:
            return None
        frame = pl.concat(self._parts, how="diagonal_relaxed")
        if self.path.exists():
            frame = pl.concat([pl.read_parquet(self.path), frame], how="diagonal_relaxed")
        atomic_write_parquet(frame, self.path)
        self._parts = []
        return self.path
