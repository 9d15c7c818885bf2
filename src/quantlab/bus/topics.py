"""Every topic name quantlab uses is built here (DESIGN §4); nothing else writes topic strings.

Topics are dot-separated. Patterns are globs in the NautilusTrader style: `*` matches any run
of characters (dots included) and `?` one character, so ``market.data.*`` takes all market data
and ``orders.*`` every order event.

Market data and features travel as *batches* that carry many symbols (a Polars frame), on
``market.data.<kind>`` and ``features``; per-symbol topics (``market.data.<kind>.<symbol>``,
``features.<symbol>``) carry typed single messages (`Quote`, `Trade`, `Bar`) for consumers
that want one symbol. Batching many symbols is what keeps the hot path vectorised.
"""

from __future__ import annotations

import re
from fnmatch import translate
from functools import lru_cache
from typing import Final

from quantlab.core.enums import EventType
from quantlab.core.errors import TopicError

MARKET_KINDS: Final = frozenset({"quote", "trade", "bar"})
ORDER_EVENTS: Final = frozenset(
    {
        "new",  # built by the order builder, awaiting the risk check
        "approved",  # passed the risk check, to be routed to a venue
        "denied",  # refused by the risk check (an `OrderDenied` with the reason)
        "submitted",
        "accepted",
        "rejected",
        "canceled",
        "expired",
        "unknown",  # a submission's outcome is unknown until the venue is queried
        "filled",  # a `Fill` (partial or complete)
    }
)
RISK_EVENTS: Final = frozenset({"alert", "breaker"})
SYSTEM_EVENTS: Final = frozenset({"metric", "log", "deadletter", "alert"})
PORTFOLIO_EVENTS: Final = frozenset({"positions", "pnl", "costs"})

_BAD_CHARS = re.compile(r"[\s*?\[\]]")


def _segment(value: str, what: str) -> str:
    if (
        not value
        or _BAD_CHARS.search(value)
        or value.startswith(".")
        or value.endswith(".")
        or ".." in value
    ):
        raise TopicError(f"{what} {value!r} cannot be a topic segment (empty, blank or wildcard)")
    return value


def _one_of(value: str, allowed: frozenset[str], what: str) -> str:
    if value not in allowed:
        raise TopicError(f"unknown {what} {value!r}; expected one of {sorted(allowed)}")
    return value


def market_data(kind: EventType | str, symbol: str | None = None) -> str:
    """``market.data.<kind>`` for batches, ``market.data.<kind>.<symbol>`` for single events."""
    name = kind.topic_name if isinstance(kind, EventType) else kind
    _one_of(name, MARKET_KINDS, "market data kind")
    base = f"market.data.{name}"
    return base if symbol is None else f"{base}.{_segment(symbol, 'symbol')}"


def backfill(kind: EventType | str) -> str:
    """``market.backfill.<kind>``: events fetched after the fact to heal a gap in a live feed
    (`ingest.backfill`). The lake writer stores them; the live stages, which act on
    ``market.data.*``, never see them."""
    name = kind.topic_name if isinstance(kind, EventType) else kind
    return f"market.backfill.{_one_of(name, MARKET_KINDS, 'market data kind')}"


def features(symbol: str | None = None) -> str:
    """``features`` for feature batches, ``features.<symbol>`` for one symbol's vectors."""
    return "features" if symbol is None else f"features.{_segment(symbol, 'symbol')}"


def signals(strategy_id: str) -> str:
    return f"signals.{_segment(strategy_id, 'strategy id')}"


def weights(strategy_id: str) -> str:
    """``weights.<strategy>``: an ensemble's expert weights after each learning round."""
    return f"weights.{_segment(strategy_id, 'strategy id')}"


def orders(event: str) -> str:
    return f"orders.{_one_of(event, ORDER_EVENTS, 'order event')}"


def risk(event: str) -> str:
    return f"risk.{_one_of(event, RISK_EVENTS, 'risk event')}"


def system(event: str) -> str:
    return f"system.{_one_of(event, SYSTEM_EVENTS, 'system event')}"


def portfolio(event: str) -> str:
    return f"portfolio.{_one_of(event, PORTFOLIO_EVENTS, 'portfolio event')}"


def news(symbol: str) -> str:
    return f"news.{_segment(symbol, 'symbol')}"


DEAD_LETTER: Final = "system.deadletter"
ALL_SIGNALS: Final = "signals.*"
ALL_MARKET_DATA: Final = "market.data.*"
ALL_BACKFILL: Final = "market.backfill.*"


def check_topic(topic: str) -> str:
    """Return `topic` if it is a concrete (publishable) topic, else raise `TopicError`."""
    if (
        not topic
        or _BAD_CHARS.search(topic)
        or ".." in topic
        or topic[0] == "."
        or topic[-1] == "."
    ):
        raise TopicError(f"cannot publish to {topic!r}: not a concrete dot-separated topic")
    return topic


def check_pattern(pattern: str) -> str:
    if not pattern or re.search(r"\s", pattern):
        raise TopicError(f"topic pattern {pattern!r} is empty or contains whitespace")
    return pattern


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(translate(pattern))


def matches(pattern: str, topic: str) -> bool:
    """True if `topic` matches the glob `pattern` (``*`` any run, ``?`` one character)."""
    if "*" not in pattern and "?" not in pattern and "[" not in pattern:
        return pattern == topic
    return _compiled(pattern).match(topic) is not None
