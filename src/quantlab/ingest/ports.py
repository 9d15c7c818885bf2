"""Ports of the ingestion stage: what feeds it.

`MarketDataSource` is implemented by every adapter (`adapters/sim`, `alpaca`, `coinbase`,
`ccxt`, `polygon`, `news`). The multiplexer runs many of them at once and reconnects the ones
that fail; ingestion validates, deduplicates and batches what they yield.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

import polars as pl

from quantlab.core.errors import QuantlabError
from quantlab.ingest.items import SourceItem


class SourceDisconnected(QuantlabError):  # noqa: N818 (reads as the event it is)
    """The source lost its connection; the multiplexer will reconnect it (after a backoff)."""


@runtime_checkable
class MarketDataSource(Protocol):
    """A stream of market events.

    `stream()` connects, authenticates, subscribes and yields items until the data end
    (a finite source: replay, a bounded synthetic run) or the connection fails (it raises,
    `SourceDisconnected` for a lost connection). Each call is a fresh connection, so the
    multiplexer reconnects and resubscribes by calling it again. Parsing never raises on bad
    input; it yields `Reject`s. `asset_class` ("crypto", "equity", "fx") tells the gap rule
    whether the market sleeps; `total_rows`, when known, drives progress bars. A source may
    also have a `stale_after_s` attribute, its own silence limit (a poller that speaks once a
    minute), which overrides the multiplexer's.
    """

    name: str
    asset_class: str
    total_rows: int | None

    def stream(self) -> AsyncIterator[SourceItem]: ...


@runtime_checkable
class HistoricalBars(Protocol):
    """REST backfill of bars, in `core.schemas.BAR_SCHEMA` (used to heal gaps)."""

    async def fetch_bars(
        self, symbol: str, start: dt.datetime, end: dt.datetime, timeframe: str = "1m"
    ) -> pl.DataFrame: ...
