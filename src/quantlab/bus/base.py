"""The `Bus` port: publish to topics, subscribe to glob patterns, acknowledge what was handled.

Delivery is at-least-once. A subscription hands out `Envelope`s; each must be acknowledged
(`ack`) once its effect is done. An envelope not acknowledged within the subscription's
`ack_timeout`, or negatively acknowledged (`nack`), is delivered again, up to `max_deliveries`
times; then it goes to the dead-letter topic with the reason, and the stream flows on.
Consumers are therefore idempotent on `Envelope.id` (see `IdempotentConsumer`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

import msgspec


class Envelope(msgspec.Struct, kw_only=True):
    """One delivery of a message to one subscription."""

    id: str
    topic: str
    payload: Any
    ts_publish: int
    deliveries: int = 0
    # Per-subscription sequence number: tells two deliveries of equal ids apart.
    seq: int = 0


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """What reaches ``system.deadletter``: the envelope, who gave up on it and why."""

    envelope: Envelope
    subscription: str
    reason: str


Handler = Callable[[Envelope], Awaitable[None]]


@runtime_checkable
class Subscription(Protocol):
    name: str
    pattern: str

    async def get(self, timeout: float | None = None) -> Envelope | None:
        """The next envelope (redeliveries first); None if `timeout` seconds pass first."""
        ...

    def ack(self, envelope: Envelope) -> None:
        """The envelope's effect is done; it will not be delivered again."""
        ...

    def nack(self, envelope: Envelope, reason: str = "nack") -> None:
        """Handling failed; deliver it again (or dead-letter it after `max_deliveries`)."""
        ...

    @property
    def in_flight(self) -> int:
        """Delivered and not yet acknowledged."""
        ...

    @property
    def queued(self) -> int:
        """Published to this subscription and not yet delivered."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class Bus(Protocol):
    async def publish(self, topic: str, payload: Any, *, msg_id: str | None = None) -> str:
        """Deliver `payload` to every subscription whose pattern matches `topic`.

        Waits while a matching subscription's queue is full (backpressure). Returns the id.
        """
        ...

    def subscribe(
        self,
        pattern: str,
        *,
        name: str,
        maxsize: int | None = None,
        ack_timeout: float | None = None,
        max_deliveries: int | None = None,
    ) -> Subscription:
        """A pull subscription to every topic matching the glob `pattern`."""
        ...

    def consume(
        self,
        pattern: str,
        handler: Handler,
        *,
        name: str,
        maxsize: int | None = None,
        max_deliveries: int | None = None,
    ) -> Subscription:
        """Subscribe and run `handler` on each envelope in a task; ack on success, nack on error."""
        ...

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until every published message has been acknowledged or dead-lettered."""
        ...

    async def close(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...
