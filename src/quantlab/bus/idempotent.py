"""The idempotent-consumer helper: at-least-once delivery, exactly-once effect."""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from quantlab.bus.base import Envelope, Handler
from quantlab.core.errors import BusError


class IdempotentConsumer:
    """Wrap a handler so that a message id already handled is skipped (and acknowledged).

    A redelivery that arrives while the first delivery is still being handled waits for its
    outcome: if the first succeeds the duplicate is skipped, if it fails the duplicate runs.
    The set of seen ids is bounded (`window` most recent), which is enough for redeliveries;
    consumers whose effects must be exactly-once across restarts also dedup on a durable key
    (the order tracker dedups fills on ``(venue, trade_id)`` in SQL).
    """

    def __init__(self, handler: Handler, *, window: int = 100_000) -> None:
        if window < 1:
            raise BusError(f"window must be >= 1, got {window}")
        self._handler = handler
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._running: dict[str, asyncio.Future[bool]] = {}
        self._window = window
        self.duplicates = 0

    def seen(self, msg_id: str) -> bool:
        return msg_id in self._seen

    async def __call__(self, envelope: Envelope) -> None:
        while True:
            if envelope.id in self._seen:
                self.duplicates += 1
                return
            running = self._running.get(envelope.id)
            if running is None:
                break
            await asyncio.shield(running)  # the first delivery's outcome decides
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._running[envelope.id] = done
        try:
            await self._handler(envelope)
        except BaseException:
            done.set_result(False)
            raise
        else:
            self._seen[envelope.id] = None
            if len(self._seen) > self._window:
                self._seen.popitem(last=False)
            done.set_result(True)
        finally:
            del self._running[envelope.id]
