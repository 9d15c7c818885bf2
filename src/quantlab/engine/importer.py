"""Importing recorded files into the lake through the same quality checks as a live feed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quantlab.adapters.sim.data import read_market
from quantlab.ingest.quality import QualityChecker, QualityConfig
from quantlab.storage.deadletter import DeadLetterFile
from quantlab.storage.lake import Lake


def import_file(
    path: str | Path,
    lake: Lake,
    *,
    symbol: str | None = None,
    chunk_rows: int = 100_000,
    dead_letters: DeadLetterFile | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Validate `path` (Parquet, CSV or ccxt OHLCV JSON) and write what passes to the lake.

    Returns rows read, written and rejected by reason, and the dataset written.
    """
    kind, frame = read_market(path, symbol=symbol)
    frame = frame.sort("timestamp", maintain_order=True)
    checker = QualityChecker(kind, QualityConfig(max_future_s=None, max_age_s=None))
    written = 0
    for offset in range(0, frame.height, chunk_rows):
        part = frame.slice(offset, chunk_rows)
        result = checker.check(part)
        if result.rejected.height and dead_letters is not None:
            dead_letters(str(path), result.rejected)
        if result.accepted.height:
            lake.write(result.accepted, kind.topic_name)
            written += result.accepted.height
        if progress is not None:
            progress(min(offset + chunk_rows, frame.height), frame.height)
    if dead_letters is not None:
        dead_letters.flush()
    return {
        "file": str(path),
        "dataset": kind.topic_name,
        "rows": frame.height,
        "written": written,
        "rejected": dict(Counter(checker.rejected)),
        "flagged": dict(checker.flagged),
        "symbols": sorted(frame["symbol"].unique().to_list()),
    }
