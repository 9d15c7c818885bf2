"""The feature store: the latest feature vector per symbol, for strategies and dashboards.

O(1) reads and writes (a dict), entries expire `ttl_s` after they were written (by the
engine's clock, so a backtest expires in simulated time), memory is bounded by `max_symbols`
(the least recently written symbol is evicted first), and hits, misses, expiries and evictions
are counted.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import polars as pl

from quantlab.core.clock import Clock
from quantlab.core.errors import ConfigError


@dataclass(frozen=True)
class FeatureVector:
    symbol: str
    ts_ns: int  # the event time of the row the features were computed at
    written_ns: int  # the clock time it was stored
    values: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


class FeatureStore:
    def __init__(self, clock: Clock, *, ttl_s: float = 3600.0, max_symbols: int = 100_000):
        if not ttl_s > 0:
            raise ConfigError("features.ttl_s", f"must be > 0 seconds, got {ttl_s}")
        if max_symbols < 1:
            raise ConfigError("features.max_symbols", f"must be >= 1, got {max_symbols}")
        self.clock = clock
        self.ttl_ns = int(ttl_s * 1e9)
        self.max_symbols = max_symbols
        self._latest: OrderedDict[str, FeatureVector] = OrderedDict()
        self._extra: dict[str, dict[str, Any]] = {}  # per-symbol values from other stages
        self.hits = self.misses = self.expired = self.evicted = self.writes = 0

    def __len__(self) -> int:
        return len(self._latest)

    def put(self, frame: pl.DataFrame) -> int:
        """Store each symbol's last row of a feature frame; returns how many were stored."""
        if frame.is_empty():
            return 0
        last = frame.group_by("symbol", maintain_order=True).last()
        now = self.clock.now_ns()
        ts = last["timestamp"].cast(pl.Datetime("ns", "UTC")).cast(pl.Int64).to_list()
        for row, t in zip(last.iter_rows(named=True), ts, strict=True):
            symbol = row.pop("symbol")
            row.pop("timestamp")
            self._latest.pop(symbol, None)
            self._latest[symbol] = FeatureVector(symbol, t, now, row | self._extra.get(symbol, {}))
            self.writes += 1
        while len(self._latest) > self.max_symbols:
            self._latest.popitem(last=False)
            self.evicted += 1
        return last.height

    def annotate(self, symbol: str, values: dict[str, Any]) -> None:
        """Attach values computed elsewhere (e.g. stream sketches) to `symbol`'s vector; they
        stay attached as the symbol's features are refreshed."""
        extra = self._extra.setdefault(symbol, {})
        extra.update(values)
        found = self._latest.get(symbol)
        if found is not None:
            self._latest[symbol] = FeatureVector(
                symbol, found.ts_ns, found.written_ns, found.values | values
            )
        while len(self._extra) > self.max_symbols:
            self._extra.pop(next(iter(self._extra)))

    def get(self, symbol: str) -> FeatureVector | None:
        """The symbol's latest vector, or None if there is none or it expired."""
        found = self._latest.get(symbol)
        if found is None:
            self.misses += 1
            return None
        if self.clock.now_ns() - found.written_ns > self.ttl_ns:
            del self._latest[symbol]
            self.expired += 1
            self.misses += 1
            return None
        self.hits += 1
        return found

    def sweep(self) -> int:
        """Drop every expired entry; returns how many."""
        cutoff = self.clock.now_ns() - self.ttl_ns
        old = [s for s, v in self._latest.items() if v.written_ns < cutoff]
        for symbol in old:
            del self._latest[symbol]
        self.expired += len(old)
        return len(old)

    def frame(self) -> pl.DataFrame:
        """The live vectors as a frame (for notebooks and the dashboard)."""
        rows = [{"symbol": v.symbol, "ts_ns": v.ts_ns, **v.values} for v in self._latest.values()]
        return pl.DataFrame(rows)

    def metrics(self) -> dict[str, int]:
        return {
            "symbols": len(self._latest),
            "hits": self.hits,
            "misses": self.misses,
            "expired": self.expired,
            "evicted": self.evicted,
            "writes": self.writes,
        }
