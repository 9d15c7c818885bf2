"""The event bus: the `Bus` port, topics, the in-process bus and the idempotent-consumer helper."""

from quantlab.bus import topics
from quantlab.bus.base import Bus, DeadLetter, Envelope, Handler, Subscription
from quantlab.bus.component import Component
from quantlab.bus.idempotent import IdempotentConsumer
from quantlab.bus.memory import InProcessBus, InProcessSubscription

__all__ = [
    "Bus",
    "Component",
    "DeadLetter",
    "Envelope",
    "Handler",
    "IdempotentConsumer",
    "InProcessBus",
    "InProcessSubscription",
    "Subscription",
    "topics",
]
