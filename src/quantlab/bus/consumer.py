"""The consumer loop every bus runs behind `Bus.consume`: get, handle, ack or nack, time it."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable

from quantlab.bus.base import Handler, Subscription
from quantlab.bus.metrics import LatencyRecorder

log = logging.getLogger(__name__)


def _nothing_waited() -> float:
    return 0.0


async def run_consumer(
    sub: Subscription,
    handler: Handler,
    *,
    closed: Callable[[], bool],
    errors: list[tuple[str, BaseException]],
    latency: LatencyRecorder,
    waited: Callable[[], float] = _nothing_waited,
) -> None:
    """Run `handler` on each envelope of `sub` until the subscription closes.

    Success acknowledges the envelope; an exception is recorded in `errors`, logged with its
    traceback and negatively acknowledged (redelivered, then dead-lettered); a cancellation
    of a bus that is still open nacks the envelope in hand. Each handled envelope's wall time
    goes to `latency` under the subscription's name, less `waited()`: the seconds the handler
    spent waiting on something not its own since the previous call (the in-process bus's
    `settle`). A payload that carries ``ts_recv`` (when its market data was received, live
    runs) also records the time from then until this handler was done.
    """
    while True:
        envelope = await sub.get()
        if envelope is None:
            return
        waited()  # what was waited before this envelope is not its time
        started = time.perf_counter()
        try:
            await handler(envelope)
        except asyncio.CancelledError:
            if not closed():
                sub.nack(envelope, "consumer cancelled")
            raise
        except Exception as exc:
            errors.append((sub.name, exc))
            log.error(
                "handler %s failed on %s (delivery %d): %s\n%s",
                sub.name,
                envelope.topic,
                envelope.deliveries,
                exc,
                "".join(traceback.format_exception(exc)),
            )
            sub.nack(envelope, f"{type(exc).__name__}: {exc}")
        else:
            sub.ack(envelope)
            latency.record(sub.name, time.perf_counter() - started - waited())
            received = getattr(envelope.payload, "ts_recv", 0)
            if received:
                latency.record_since_data(sub.name, (time.time_ns() - received) / 1e9)
