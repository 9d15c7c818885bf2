"""Helpers for driving a ccxt source against the local fakes (imported by the test modules)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

from quantlab.core.enums import EventType
from quantlab.ingest.items import Events, Heartbeat, Reject, SourceItem
from quantlab.ingest.multiplexer import Multiplexer

OPTIONS_SPOT_ONLY = {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False}


async def until(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    """Poll `predicate` until it holds, or fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(0.01)


def rows(items: list[Any], kind: EventType) -> list[dict[str, Any]]:
    """Every event of `kind` in `items` (bare items or (source, item) pairs), as dicts."""
    out: list[dict[str, Any]] = []
    for item in items:
        item = item[1] if isinstance(item, tuple) else item
        if isinstance(item, Events) and item.kind is kind:
            out.extend(item.frame.to_dicts())
    return out


def reasons(items: list[Any]) -> Counter[str]:
    return Counter(
        (i[1] if isinstance(i, tuple) else i).reason
        for i in items
        if isinstance(i[1] if isinstance(i, tuple) else i, Reject)
    )


def heartbeats(items: list[Any]) -> int:
    return sum(isinstance(i, Heartbeat) for i in items)


class Collector:
    """Consumes a source's `stream()` in the background; `items` grows as it yields."""

    def __init__(self, stream: AsyncIterator[SourceItem]) -> None:
        self.stream = stream
        self.items: list[SourceItem] = []
        self.error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.stream.aclose()  # type: ignore[attr-defined]

    async def _run(self) -> None:
        try:
            async for item in self.stream:
                self.items.append(item)
        except Exception as exc:
            self.error = exc

    def rows(self, kind: EventType) -> list[dict[str, Any]]:
        return rows(self.items, kind)

    async def until(self, predicate: Callable[[Collector], bool], timeout: float = 15.0) -> None:
        def ready() -> bool:
            if self.error is not None:
                raise AssertionError(f"the stream failed: {self.error!r}") from self.error
            return predicate(self)

        await until(ready, timeout)


class MuxRun:
    """A `Multiplexer` running in the background; `items` holds what reached the sink."""

    def __init__(self, mux: Multiplexer) -> None:
        self.mux = mux
        self.items: list[tuple[str, SourceItem]] = []
        self._task: asyncio.Task[None] | None = None

    async def _sink(self, name: str, item: SourceItem) -> None:
        self.items.append((name, item))

    async def __aenter__(self) -> MuxRun:
        self._task = asyncio.create_task(self.mux.run(self._sink))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.mux.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
