"""Streaming sketches over the event stream (Apache DataSketches): constant memory, however
long the stream.

* `VolumeSketch`: Count-Min estimates of traded volume per key (a symbol, or a symbol and a
  price level), never below the truth, above it by at most `relative_error` × total volume
  with probability `confidence`; and the heaviest keys (a frequent-items sketch).
* `DistinctCount`: HyperLogLog estimate of how many distinct values went by (trade ids,
  active symbols), with bounds at a chosen number of standard deviations.

Batches are aggregated with Polars first, so the sketch sees one update per distinct key per
batch, not one per event.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import datasketches as ds
import polars as pl

from quantlab.bus import topics
from quantlab.core.errors import DataError


class VolumeSketch:
    """Traded volume by key in a Count-Min sketch, heavy hitters in a frequent-items sketch.

    Parameters
    ----------
    by
        ``"symbol"`` or ``"price_level"`` (the symbol and its price rounded to `price_step`).
    relative_error, confidence
        The Count-Min guarantee: estimate - truth <= relative_error * total, with probability
        at least `confidence`.
    weight_unit
        Heavy hitters count integer weights: volume is counted in units of `weight_unit`.
    """

    def __init__(
        self,
        by: str = "symbol",
        *,
        relative_error: float = 0.001,
        confidence: float = 0.99,
        price_step: float | None = None,
        heavy_hitters_lg_k: int = 8,
        weight_unit: float = 1e-6,
    ) -> None:
        if by not in ("symbol", "price_level"):
            raise DataError(f"VolumeSketch by must be 'symbol' or 'price_level', got {by!r}")
        if by == "price_level" and not (price_step and price_step > 0):
            raise DataError(f"price_level sketches need price_step > 0, got {price_step!r}")
        if not 0 < relative_error < 1 or not 0 < confidence < 1:
            raise DataError(
                f"need 0 < relative_error, confidence < 1, got {relative_error}, {confidence}"
            )
        self.by, self.price_step, self.weight_unit = by, price_step, weight_unit
        self.relative_error = relative_error
        self._cm = ds.count_min_sketch(
            ds.count_min_sketch.suggest_num_hashes(confidence),
            ds.count_min_sketch.suggest_num_buckets(relative_error),
        )
        self._top = ds.frequent_strings_sketch(heavy_hitters_lg_k)
        self.events = 0

    def key_expr(self) -> pl.Expr:
        if self.by == "symbol":
            return pl.col("symbol")
        step = self.price_step
        level = (pl.col("price") / step).round(0) * step
        return pl.concat_str([pl.col("symbol"), level.cast(pl.String)], separator="@")

    def key(self, symbol: str, price: float | None = None) -> str:
        if self.by == "symbol":
            return symbol
        if price is None:
            raise DataError("a price_level sketch needs the price to name a key")
        frame = pl.DataFrame({"symbol": [symbol], "price": [price]})
        return str(frame.select(self.key_expr()).item())

    def update(self, trades: pl.DataFrame) -> None:
        """Add a batch of trades (``symbol, price, size``)."""
        if trades.is_empty():
            return
        for key, volume in self._volumes(trades):
            self._cm.update(key, float(volume))
            units = round(volume / self.weight_unit)
            if units > 0:
                self._top.update(key, units)
        self.events += trades.height

    def _volumes(self, trades: pl.DataFrame) -> Iterable[tuple[Any, Any]]:
        """The batch's volume per key.

        By symbol with at most two rows per symbol (small live batches), summed here from the
        columns: such a sum is exact in any order, and a Polars ``group_by`` is a query with a
        fixed cost of hundreds of µs. Otherwise ``group_by`` sums it.
        """
        if self.by == "symbol":
            symbols = trades.get_column("symbol").to_list()
            if len(symbols) <= 2 * len(distinct := set(symbols)) and (
                len(symbols) == len(distinct) or max(Counter(symbols).values()) <= 2
            ):
                totals: dict[Any, Any] = dict.fromkeys(symbols, 0)  # all null: a sum of 0
                for key, size in zip(symbols, trades.get_column("size").to_list(), strict=True):
                    if size is not None:
                        totals[key] += size
                return totals.items()
        return trades.group_by(self.key_expr().alias("key")).agg(pl.col("size").sum()).iter_rows()

    def estimate(self, key: str) -> tuple[float, float, float]:
        """(estimate, DataSketches' lower bound, upper bound) of the volume under `key`.

        The guarantee: truth <= estimate <= truth + relative_error * total (with the sketch's
        confidence), and truth <= upper bound.
        """
        return (
            self._cm.get_estimate(key),
            self._cm.get_lower_bound(key),
            self._cm.get_upper_bound(key),
        )

    @property
    def total(self) -> float:
        return float(self._cm.total_weight)

    def heavy_hitters(self, n: int = 10) -> list[tuple[str, float]]:
        """The keys with the most volume (no false negatives), by estimated volume."""
        items = self._top.get_frequent_items(ds.frequent_items_error_type.NO_FALSE_NEGATIVES)
        return [(k, est * self.weight_unit) for k, est, _lo, _hi in items[:n]]

    def size_bytes(self) -> int:
        return int(self._cm.get_serialized_size_bytes()) + len(self._top.serialize())


class DistinctCount:
    """How many distinct values went by (HyperLogLog, 2^lg_k registers)."""

    def __init__(self, lg_k: int = 12) -> None:
        if not 4 <= lg_k <= 21:
            raise DataError(f"HyperLogLog lg_k must be in [4, 21], got {lg_k}")
        self.lg_k = lg_k
        self._hll = ds.hll_sketch(lg_k)

    def update(self, values: pl.Series) -> None:
        distinct: Iterable[Any]
        if values.dtype == pl.String():  # the distinct values without a Polars query
            distinct = set(values.to_list()) - {None}
        else:
            distinct = values.drop_nulls().unique().cast(pl.String).to_list()
        for value in distinct:  # in no set order, as `unique()` gives them
            self._hll.update(value)

    def estimate(self) -> float:
        return float(self._hll.get_estimate())

    def bounds(self, num_std: int = 2) -> tuple[float, float]:
        return (self._hll.get_lower_bound(num_std), self._hll.get_upper_bound(num_std))

    def size_bytes(self) -> int:
        return len(self._hll.serialize_compact())

    def metrics(self) -> dict[str, Any]:
        low, high = self.bounds(2)
        return {"estimate": self.estimate(), "low_2sd": low, "high_2sd": high}


class SketchEngine:
    """Sketches over the live event stream, exposed as metrics and as features.

    On every trade and bar batch: traded volume by symbol (Count-Min, heavy hitters), distinct
    trade ids and distinct active symbols (HyperLogLog). Every `every` batches the figures go
    out on ``system.metric`` and each symbol's estimated volume and share of all volume are
    attached to its vector in the feature store (``sketch_volume``, ``sketch_volume_share``).
    Memory is the sketches' fixed size, however long the stream runs.
    """

    name = "sketches"

    def __init__(self, store: Any = None, *, every: int = 10, relative_error: float = 0.001):
        if every < 1:
            raise DataError(f"sketch metrics need every >= 1 batch, got {every}")
        self.volume = VolumeSketch("symbol", relative_error=relative_error)
        self.trade_ids = DistinctCount(lg_k=12)
        self.symbols = DistinctCount(lg_k=10)
        self.store = store
        self.every = every
        self.batches = 0
        self._bus: Any = None
        self._touched: set[str] = set()

    async def start(self, bus: Any) -> None:
        self._bus = bus
        bus.consume(topics.market_data("trade"), self._on_batch, name=f"{self.name}-trades")
        bus.consume(topics.market_data("bar"), self._on_batch, name=f"{self.name}-bars")

    async def stop(self) -> None:
        if self.batches % self.every:
            await self._publish()

    def update(self, frame: pl.DataFrame) -> None:
        """Take in one batch of trades (``symbol, price, size[, trade_id]``) or bars
        (``symbol, close, volume``)."""
        if frame.is_empty():
            return
        # Frames of Series, not `select` (a query each): same columns, no copy.
        if "size" not in frame.columns:
            cols = {"symbol": "symbol", "price": "close", "size": "volume"}
        else:
            cols = {"symbol": "symbol", "price": "price", "size": "size"}
        self.volume.update(
            pl.DataFrame([frame.get_column(c).alias(name) for name, c in cols.items()])
        )
        if "trade_id" in frame.columns:
            self.trade_ids.update(frame["trade_id"])
        self.symbols.update(frame["symbol"])
        self._touched.update(frame["symbol"].to_list())
        self.batches += 1

    async def _on_batch(self, envelope: Any) -> None:
        self.update(envelope.payload.frame)
        if self.batches % self.every == 0:
            await self._publish()

    def features(self) -> dict[str, dict[str, float]]:
        """Per symbol seen since the last call: estimated volume and its share of the total."""
        total = self.volume.total
        out = {}
        for symbol in sorted(self._touched):
            est = self.volume.estimate(symbol)[0]
            out[symbol] = {
                "sketch_volume": est,
                "sketch_volume_share": est / total if total > 0 else 0.0,
            }
        self._touched.clear()
        return out

    def metrics(self) -> dict[str, Any]:
        return {
            "events": self.volume.events,
            "total_volume": self.volume.total,
            "heavy_hitters": self.volume.heavy_hitters(5),
            "distinct_trade_ids": self.trade_ids.metrics(),
            "distinct_symbols": self.symbols.metrics(),
            "bytes": self.volume.size_bytes()
            + self.trade_ids.size_bytes()
            + self.symbols.size_bytes(),
        }

    async def _publish(self) -> None:
        if self.store is not None:
            for symbol, values in self.features().items():
                self.store.annotate(symbol, values)
        if self._bus is not None:
            await self._bus.publish(
                topics.system("metric"), {"component": self.name, **self.metrics()}
            )
