"""Market-data sources for tests of the ingest engine."""

from __future__ import annotations

from collections.abc import AsyncIterator

from quantlab.ingest.items import SourceItem


class NoSource:
    """A source with nothing to stream: the test feeds `IngestEngine.on_item` itself."""

    def __init__(self, name: str = "test") -> None:
        self.name = name
        self.asset_class = "crypto"
        self.total_rows: int | None = None

    async def stream(self) -> AsyncIterator[SourceItem]:
        nothing: tuple[SourceItem, ...] = ()
        for item in nothing:
            yield item
