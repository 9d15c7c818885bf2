"""The router: which venue an order goes to, by symbol."""

from __future__ import annotations

from quantlab.core.errors import OrderError
from quantlab.execution.ports import Venue


class Router:
    """Routes by an explicit symbol -> venue map, else to the default venue."""

    def __init__(
        self, venues: list[Venue], *, default: str, routes: dict[str, str] | None = None
    ) -> None:
        self.venues = {v.name: v for v in venues}
        if default not in self.venues:
            raise OrderError(f"default venue {default!r} is not among {sorted(self.venues)}")
        for symbol, name in (routes or {}).items():
            if name not in self.venues:
                raise OrderError(f"route {symbol} -> {name!r}: no such venue {sorted(self.venues)}")
        self.default = default
        self.routes = dict(routes or {})

    def venue_for(self, symbol: str) -> Venue:
        return self.venues[self.routes.get(symbol, self.default)]
