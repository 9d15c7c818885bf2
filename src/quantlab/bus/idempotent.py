"""The idempotent-consumer helper: at-least-once delivery, exactly-once effect."""

from __future__ import annotations

from collections import OrderedDict

from quantlab.bus.base import Envelope, Handler


class IdempotentConsumer:
    """Wrap a handler so that a message id already handled is skipped (and acknowledged).

    The set of seen ids is bounded (`window` most recent), which is enough for redeliveries;
    consumers whose effects must be exactly-once across restarts also dedup on a durable key
    (the order tracker dedups fills on ``(venue, trade_id)`` in SQL).
    """

    def __init__(self, handler: Handler, *, window: int = 100_000) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self._handler = handler
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._window = window
        self.duplicates = 0

    def seen(self, msg_id: str) -> bool:
        return msg_id in self._seen

    async def __call__(self, envelope: Envelope) -> None:
        if envelope.id in self._seen:
            self.duplicates += 1
            return
        await self._handler(envelope)
        self._seen[envelope.id] = None
        if len(self._seen) > self._window:
            self._seen.popitem(last=False)
