"""One error hierarchy for quantlab; every message names the offending value."""

from __future__ import annotations


class QuantlabError(Exception):
    """Base class of every error quantlab raises on purpose."""


class ConfigError(QuantlabError):
    """A configuration value is missing or invalid; the message names the key."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"invalid configuration {key!r}: {reason}")


class ValidationError(QuantlabError, ValueError):
    """A market event or message failed validation."""


class CodecError(QuantlabError):
    """A binary or JSON payload could not be encoded or decoded."""


class BusError(QuantlabError):
    """The event bus was misused (closed, bad topic, unknown message)."""


class TopicError(BusError):
    """A topic or topic pattern is malformed."""


class OrderError(QuantlabError):
    """An order is invalid or an order state transition is not allowed."""


class StorageError(QuantlabError):
    """A store (SQL, lake, vectors) failed or holds inconsistent data."""


class DataError(QuantlabError):
    """Input market data is missing, empty or has the wrong shape."""
