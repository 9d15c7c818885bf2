"""Property: the L2 book's top equals a brute-force recomputation over random update sequences."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from quantlab.adapters.coinbase import CoinbaseFeedParser, L2Book
from quantlab.core.enums import EventType
from quantlab.ingest.items import Events

# Few price levels, so updates often hit, replace and remove the same level.
PRICES = st.sampled_from([99.0, 99.5, 100.0, 100.25, 100.5, 101.0, 102.0])
QUANTITIES = st.one_of(st.just(0.0), st.sampled_from([0.1, 1.0, 2.5]), st.floats(-1.0, 5.0))
UPDATES = st.lists(st.tuples(st.sampled_from(["bid", "offer"]), PRICES, QUANTITIES), max_size=80)


def brute_top(levels: dict[str, dict[float, float]]) -> tuple[float, float, float, float] | None:
    """The top recomputed from scratch: the best of the levels that hold a positive quantity."""
    bids = {p: q for p, q in levels["bid"].items() if q > 0}
    asks = {p: q for p, q in levels["offer"].items() if q > 0}
    if not bids or not asks:
        return None
    bid, ask = max(bids), min(asks)
    return (bid, bids[bid], ask, asks[ask])


@given(UPDATES)
@settings(max_examples=300, deadline=None)
def test_book_top_equals_brute_force(updates: list[tuple[str, float, float]]) -> None:
    book = L2Book()
    levels: dict[str, dict[float, float]] = {"bid": {}, "offer": {}}
    for side, price, quantity in updates:
        book.apply(side, price, quantity)
        levels[side][price] = quantity
        assert book.top() == brute_top(levels)


def message(kind: str, updates: list[Any], seq: int) -> bytes:
    rows = [
        {
            "side": side,
            "event_time": f"2024-01-02T03:04:{t:02d}.000000001Z",
            "price_level": repr(price),
            "new_quantity": repr(quantity),
        }
        for side, price, quantity, t in updates
    ]
    event = {"type": kind, "product_id": "BTC-USD", "updates": rows}
    msg = {"channel": "l2_data", "timestamp": "2024-01-02T03:04:05Z", "sequence_num": seq}
    return json.dumps({**msg, "events": [event]}).encode()


TIMED = st.lists(
    st.tuples(st.sampled_from(["bid", "offer"]), PRICES, QUANTITIES, st.integers(0, 3)),
    max_size=30,
)


@given(TIMED, st.lists(TIMED, max_size=6))
@settings(max_examples=200, deadline=None)
def test_parser_quotes_are_the_brute_force_top_at_each_change(
    snapshot: list[Any], batches: list[list[Any]]
) -> None:
    parser = CoinbaseFeedParser(["BTC/USD"])
    levels: dict[str, dict[float, float]] = {"bid": {}, "offer": {}}
    expected: list[tuple[float, float, float, float]] = []
    last = None
    for side, price, quantity, _ in snapshot:
        levels[side][price] = quantity
    got = quotes(parser.parse(message("snapshot", snapshot, 0)))
    top = brute_top(levels)
    if top != last and top is not None:
        expected.append(top)
    last = top
    for seq, batch in enumerate(batches, start=1):
        got += quotes(parser.parse(message("update", batch, seq)))
        for i, (side, price, quantity, t) in enumerate(batch):
            levels[side][price] = quantity
            if i + 1 == len(batch) or batch[i + 1][3] != t:  # end of a run of one event_time
                top = brute_top(levels)
                if top != last and top is not None:
                    expected.append(top)
                last = top
    assert got == expected
    assert parser.gaps == 0


def quotes(items: list[Any]) -> list[tuple[float, float, float, float]]:
    out = []
    for item in items:
        assert isinstance(item, Events)
        assert item.kind == EventType.QUOTE
        out += [(r["bid"], r["bid_size"], r["ask"], r["ask_size"]) for r in item.frame.to_dicts()]
    return out
