"""The router: explicit symbol routes, else the default venue; bad configuration fails early."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from quantlab.adapters.sim.paper import PaperVenue
from quantlab.core.errors import OrderError
from quantlab.core.instruments import InstrumentBook
from quantlab.core.messages import Fill, Order
from quantlab.execution.ports import Venue, VenueListener, VenueOrderState
from quantlab.execution.router import Router


class RecordingVenue:
    """A minimal `Venue`: remembers what it was sent."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[Order] = []
        self.listener: VenueListener | None = None
        self.paper = True
        self.poll_interval_s = 0.0

    def set_listener(self, listener: VenueListener) -> None:
        self.listener = listener

    async def submit(self, order: Order) -> None:
        self.sent.append(order)

    async def cancel(self, client_order_id: str) -> None:
        return None

    async def query_order(self, client_order_id: str) -> VenueOrderState | None:
        return None

    async def open_orders(self) -> list[VenueOrderState]:
        return []

    async def fills_since(self, since: dt.datetime) -> list[Fill]:
        return []

    async def positions(self) -> dict[str, Decimal] | None:
        return None

    async def poll(self) -> None:
        return None


def test_fakes_and_the_paper_venue_are_venues() -> None:
    assert isinstance(RecordingVenue("x"), Venue)
    assert isinstance(PaperVenue(InstrumentBook(Decimal("0.01"), Decimal("0.01"))), Venue)


def test_routes_by_symbol_else_default() -> None:
    paper, binance, coinbase = (RecordingVenue(n) for n in ("paper", "binance", "coinbase"))
    router = Router(
        [paper, binance, coinbase],
        default="paper",
        routes={"ETH/BTC": "binance", "BTC-USD": "coinbase"},
    )
    assert router.venue_for("ETH/BTC") is binance
    assert router.venue_for("BTC-USD") is coinbase
    assert router.venue_for("ADA/BTC") is paper
    assert router.venue_for("eth/btc") is paper  # symbols are exact
    assert set(router.venues) == {"paper", "binance", "coinbase"}


def test_routes_are_copied() -> None:
    paper, binance = RecordingVenue("paper"), RecordingVenue("binance")
    routes = {"ETH/BTC": "binance"}
    router = Router([paper, binance], default="paper", routes=routes)
    routes["ETH/BTC"] = "paper"
    assert router.venue_for("ETH/BTC") is binance


def test_unknown_default_venue_is_refused() -> None:
    with pytest.raises(OrderError, match=r"default venue 'kraken' is not among \['paper'\]"):
        Router([RecordingVenue("paper")], default="kraken")


def test_route_to_an_unknown_venue_is_refused() -> None:
    with pytest.raises(OrderError, match=r"ETH/BTC -> 'kraken'"):
        Router([RecordingVenue("paper")], default="paper", routes={"ETH/BTC": "kraken"})
