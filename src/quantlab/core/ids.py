"""Deterministic identifiers.

Ids are UUIDv5 over the identity of what they name, so a replayed signal gets the same
`signal_id`, the same `client_order_id` and therefore can never send a second order, and two
runs over the same data produce identical ids.
"""

from __future__ import annotations

import json
import uuid

NAMESPACE = uuid.UUID("6f1d3c52-8f0e-4c1b-9a55-2d9d3b8f1a10")


def _name(kind: str, *parts: object) -> str:
    # JSON keeps parts apart unambiguously ("a:b","c" differs from "a","b:c").
    return json.dumps([kind, *(str(p) for p in parts)], separators=(",", ":"))


def signal_id(strategy_id: str, symbol: str, ts_ns: int, seq: int = 0) -> uuid.UUID:
    """The id of the signal `strategy_id` emits for `symbol` at `ts_ns` (`seq` if several)."""
    return uuid.uuid5(NAMESPACE, _name("signal", strategy_id, symbol, int(ts_ns), seq))


def client_order_id(signal: uuid.UUID, leg: int = 0) -> str:
    """The venue-facing order id, derived from the signal id only (at most 36 characters)."""
    digest = uuid.uuid5(NAMESPACE, _name("order", signal, leg)).hex
    return f"ql-{digest[:32]}"


def order_id(client_id: str) -> uuid.UUID:
    """Our internal order id, derived from the client order id."""
    return uuid.uuid5(NAMESPACE, _name("order-id", client_id))


def fill_id(venue: str, trade_id: str) -> uuid.UUID:
    """A fill's id from the venue's trade id, so a fill reported twice dedups to one."""
    return uuid.uuid5(NAMESPACE, _name("fill", venue, trade_id))


def message_id(*parts: object) -> str:
    """A bus message id from the parts that identify the message."""
    return uuid.uuid5(NAMESPACE, _name("msg", *parts)).hex
