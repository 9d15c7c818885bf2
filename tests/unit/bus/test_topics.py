"""Topic builders, glob matching and topic checks (DESIGN §4)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlab.bus import InProcessBus, topics
from quantlab.core import BusError, EventType, TopicError

# -- builders ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(EventType))
def test_market_data_from_event_type(kind: EventType) -> None:
    assert topics.market_data(kind) == f"market.data.{kind.name.lower()}"
    assert topics.market_data(kind, "BTC/USD") == f"market.data.{kind.name.lower()}.BTC/USD"


@pytest.mark.parametrize("kind", ["quote", "trade", "bar"])
def test_market_data_from_string(kind: str) -> None:
    assert topics.market_data(kind) == f"market.data.{kind}"
    assert topics.market_data(kind, "AAPL") == f"market.data.{kind}.AAPL"


def test_market_data_event_type_and_string_agree() -> None:
    assert topics.market_data(EventType.QUOTE, "X") == topics.market_data("quote", "X")


def test_symbols_with_inner_dots_and_slashes_are_segments() -> None:
    assert topics.market_data("trade", "BRK.B") == "market.data.trade.BRK.B"
    assert topics.features("ETH-PERP") == "features.ETH-PERP"


@pytest.mark.parametrize("kind", ["candle", "QUOTE", "quotes", "", "quote.x"])
def test_unknown_market_data_kind_names_the_value(kind: str) -> None:
    with pytest.raises(TopicError, match=rf"unknown market data kind {kind!r}"):
        topics.market_data(kind)


BAD_SEGMENTS = ["", " ", "BTC USD", "BTC\tUSD", "*", "BTC*", "BTC?", "[BTC]", ".BTC", "BTC."]


@pytest.mark.parametrize("symbol", BAD_SEGMENTS)
def test_bad_symbol_is_refused_naming_it(symbol: str) -> None:
    with pytest.raises(TopicError, match=re.escape(f"symbol {symbol!r} cannot be a topic segment")):
        topics.market_data("quote", symbol)
    with pytest.raises(TopicError, match="cannot be a topic segment"):
        topics.features(symbol)
    with pytest.raises(TopicError, match="cannot be a topic segment"):
        topics.news(symbol)


def test_features_topics() -> None:
    assert topics.features() == "features"
    assert topics.features("BTC/USD") == "features.BTC/USD"


def test_signals_topic() -> None:
    assert topics.signals("mom-fast") == "signals.mom-fast"
    assert topics.matches(topics.ALL_SIGNALS, topics.signals("mom-fast"))


@pytest.mark.parametrize("strategy", ["", "a b", "mom.*", "."])
def test_bad_strategy_id_is_refused(strategy: str) -> None:
    with pytest.raises(TopicError, match="strategy id"):
        topics.signals(strategy)


@pytest.mark.parametrize("event", sorted(topics.ORDER_EVENTS))
def test_orders_topic_for_every_order_event(event: str) -> None:
    topic = topics.orders(event)
    assert topic == f"orders.{event}"
    assert topics.check_topic(topic) == topic
    assert topics.matches("orders.*", topic)


def test_order_events_cover_the_design() -> None:
    # DESIGN §4 names these; the code adds the risk-check steps and expiry.
    assert {"submitted", "accepted", "rejected", "canceled", "filled"} <= topics.ORDER_EVENTS


@pytest.mark.parametrize("event", ["fill", "FILLED", "", "cancelled", "filled.x"])
def test_unknown_order_event_names_the_value(event: str) -> None:
    with pytest.raises(TopicError, match=rf"unknown order event {event!r}; expected one of"):
        topics.orders(event)


@pytest.mark.parametrize(
    ("build", "good", "allowed"),
    [
        (topics.risk, "risk", topics.RISK_EVENTS),
        (topics.system, "system", topics.SYSTEM_EVENTS),
        (topics.portfolio, "portfolio", topics.PORTFOLIO_EVENTS),
    ],
)
def test_closed_vocabulary_builders(
    build: Callable[[str], str], good: str, allowed: frozenset[str]
) -> None:
    for event in allowed:
        assert build(event) == f"{good}.{event}"
    with pytest.raises(TopicError, match="'nope'"):
        build("nope")


def test_named_constants() -> None:
    assert topics.DEAD_LETTER == topics.system("deadletter") == "system.deadletter"
    assert topics.ALL_MARKET_DATA == "market.data.*"
    assert topics.news("AAPL") == "news.AAPL"


def test_topic_error_is_a_bus_error() -> None:
    assert issubclass(TopicError, BusError)


_segment_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Z", "Cc")).filter(lambda c: c not in "*?[]."),
    min_size=1,
    max_size=10,
)
_symbols = st.lists(_segment_text, min_size=1, max_size=3).map(".".join)


@settings(deadline=None)
@given(symbol=_symbols, kind=st.sampled_from(EventType))
def test_every_built_topic_is_publishable(symbol: str, kind: EventType) -> None:
    for topic in (
        topics.market_data(kind, symbol),
        topics.features(symbol),
        topics.signals(symbol),
        topics.news(symbol),
    ):
        assert topics.check_topic(topic) == topic


@pytest.mark.parametrize(
    "build",
    [
        lambda: topics.market_data("quote", "A..B"),
        lambda: topics.features("A..B"),
        lambda: topics.signals("A..B"),
        lambda: topics.news("A..B"),
    ],
    ids=["market_data", "features", "signals", "news"],
)
def test_builders_refuse_empty_inner_segments(build: Callable[[], str]) -> None:
    with pytest.raises(TopicError):
        build()


# -- matching ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        # `*` matches any run of characters, dots included
        ("market.data.*", "market.data.bar", True),
        ("market.data.*", "market.data.quote.BTC/USD", True),
        ("market.data.*", "market.data", False),
        ("market.data.*", "market.database", False),
        ("market.data.*", "marketXdata.bar", False),  # dots are literal
        ("market.*.quote.*", "market.data.quote.ETH/USD", True),
        ("*.BTC/USD", "market.data.quote.BTC/USD", True),
        ("*.BTC/USD", "market.data.quote.BTC/USDT", False),
        ("orders.*", "orders.filled", True),
        ("orders.*", "orders", False),
        ("orders.*", "ordersX", False),
        ("*", "system.deadletter", True),
        ("signals.*", "features.x", False),
        # `?` is exactly one character
        ("orders.fill?d", "orders.filled", True),
        ("orders.?", "orders.ab", False),
        ("risk.???rt", "risk.alert", True),
        # character classes come with fnmatch
        ("orders.[ar]*", "orders.accepted", True),
        ("orders.[ar]*", "orders.rejected", True),
        ("orders.[ar]*", "orders.canceled", False),
        # no wildcard: exact equality, no prefix matching
        ("orders.filled", "orders.filled", True),
        ("orders.filled", "orders.filled.x", False),
        ("features", "features.BTC/USD", False),
        # case-sensitive; regex metacharacters in topics are literal
        ("orders.*", "ORDERS.filled", False),
        ("features.BTC+USD", "features.BTC+USD", True),
        ("features.BTC+*", "features.BTCCUSD", False),
        ("features.(x)*", "features.(x)y", True),
    ],
)
def test_glob_matching(pattern: str, topic: str, expected: bool) -> None:
    assert topics.matches(pattern, topic) is expected


@settings(deadline=None)
@given(topic=_symbols)
def test_star_matches_everything_and_a_topic_matches_itself(topic: str) -> None:
    assert topics.matches("*", topic)
    assert topics.matches(topic, topic)


# -- topic and pattern checks --------------------------------------------------------------------


@pytest.mark.parametrize("topic", ["orders.filled", "market.data.quote.BTC/USD", "features", "a"])
def test_check_topic_accepts_concrete_topics(topic: str) -> None:
    assert topics.check_topic(topic) == topic


@pytest.mark.parametrize(
    "topic", ["", " ", "a b", "a\tb", "orders.*", "orders.?", "orders.[ab]", "a..b", ".a", "a."]
)
def test_check_topic_refuses_naming_the_topic(topic: str) -> None:
    with pytest.raises(TopicError, match="cannot publish to") as info:
        topics.check_topic(topic)
    assert repr(topic) in str(info.value)


@pytest.mark.parametrize("pattern", ["", " ", "market data.*", "orders.*\n"])
def test_check_pattern_refuses_empty_or_blank(pattern: str) -> None:
    with pytest.raises(TopicError, match="empty or contains whitespace"):
        topics.check_pattern(pattern)


def test_check_pattern_accepts_globs() -> None:
    assert topics.check_pattern("market.data.*") == "market.data.*"


# -- through the bus -----------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["", "   ", "orders .*"])
async def test_subscribing_with_a_blank_pattern_raises_topic_error(pattern: str) -> None:
    bus = InProcessBus()
    try:
        with pytest.raises(TopicError):
            bus.subscribe(pattern, name="s")
    finally:
        await bus.close()


async def test_publishing_to_a_concrete_topic_works() -> None:
    bus = InProcessBus()
    try:
        sub = bus.subscribe("orders.*", name="s")
        await bus.publish(topics.orders("filled"), "x")
        envelope = await sub.get(timeout=1)
        assert envelope is not None
        assert envelope.topic == "orders.filled"
    finally:
        await bus.close()


@pytest.mark.parametrize("with_subscriber", [False, True], ids=["no-subscriber", "subscriber-*"])
@pytest.mark.parametrize("topic", ["market.data.*", "orders.?", "", "   ", "orders filled", "a..b"])
async def test_publishing_to_a_non_concrete_topic_raises_topic_error(
    topic: str, with_subscriber: bool
) -> None:
    bus = InProcessBus()
    try:
        if with_subscriber:
            bus.subscribe("*", name="everything")
        with pytest.raises(TopicError):
            await bus.publish(topic, "x")
    finally:
        await bus.close()
