"""The `MarketDataSource` port: what feeds ingestion."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

import polars as pl

from quantlab.core.enums import EventType


@runtime_checkable
class MarketDataSource(Protocol):
    """Yields frames of raw market events of one kind, in the kind's schema (`core.schemas`).

    Frames may hold bad rows: ingestion validates them. `total_rows`, when known, drives
    progress bars.
    """

    name: str
    kind: EventType
    total_rows: int | None

    def stream(self) -> AsyncIterator[pl.DataFrame]: ...
