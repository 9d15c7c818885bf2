"""Experts for the Hedge ensemble.

An expert turns a feature batch into advice in [-1, 1] per row (+1 long, -1 short, 0 flat).

* **Rule experts** are plain functions ``features -> pl.Series`` (`macd_cross`,
  `rsi_reversion`, `ema_trend`).
* **Batch experts** (`BatchExpert`) carry state and read feature *windows*: the `ModelExpert`
  (an ONNX model from the registry) and the `PatternExpert` (the pattern memory). They see an
  `ExpertBatch`, which builds each window length once per batch from the strategy's shared
  window buffers, and they may learn after the batch's decisions are made (``learn``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import polars as pl

from quantlab.core.errors import DataError
from quantlab.signals.models import OnnxModel
from quantlab.signals.patterns import Embedder, Neighbour, PatternMemory
from quantlab.signals.windows import WindowBuffer

RuleExpert = Callable[[pl.DataFrame], pl.Series]

_NS_PER_HOUR = 3_600_000_000_000


def macd_cross(f: pl.DataFrame) -> pl.Series:
    """Long when the MACD histogram is positive, short when negative."""
    return f.select(pl.col("macd_hist").sign().fill_null(0.0))["macd_hist"]


def rsi_reversion(f: pl.DataFrame) -> pl.Series:
    """Long when RSI(14) < 30 (oversold), short when > 70 (overbought)."""
    rsi = pl.col("rsi_14")
    return f.select(
        pl.when(rsi < 30).then(1.0).when(rsi > 70).then(-1.0).otherwise(0.0).alias("a")
    )["a"]


def ema_trend(f: pl.DataFrame) -> pl.Series:
    """Long when EMA(12) is above EMA(26), short below."""
    return f.select((pl.col("ema_12") - pl.col("ema_26")).sign().fill_null(0.0).alias("a"))["a"]


RULE_EXPERTS: dict[str, RuleExpert] = {
    "macd_cross": macd_cross,
    "rsi_reversion": rsi_reversion,
    "ema_trend": ema_trend,
}


def replace_by_symbol(state: pl.DataFrame, latest: pl.DataFrame) -> pl.DataFrame:
    """Per-symbol carried state: `latest`'s rows replace `state`'s rows of the same symbols."""
    return pl.concat([state.join(latest, on="symbol", how="anti"), latest])


class ExpertBatch:
    """One feature batch as the experts see it: the frame, its windows, and row arrays."""

    def __init__(self, features: pl.DataFrame, buffers: dict[int, WindowBuffer]) -> None:
        self.features = features
        self._buffers = buffers
        self._windows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.ts_ns = features["timestamp"].cast(pl.Datetime("ns", "UTC")).cast(pl.Int64).to_numpy()
        self.n = features["n"].cast(pl.Int64).to_numpy()
        self.price = features["price"].cast(pl.Float64).to_numpy()
        self.symbols = features["symbol"]

    def advance(self) -> None:
        """Feed this batch to every window buffer (each exactly once per batch)."""
        for size, buffer in self._buffers.items():
            self._windows[size] = buffer.windows(self.features)

    def windows(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, size, C)`` windows and the mask of rows with a full window."""
        if size not in self._windows:
            raise DataError(f"no window buffer of {size} rows; the strategy did not register it")
        return self._windows[size]


@runtime_checkable
class BatchExpert(Protocol):
    name: str
    window: int

    def advise(self, batch: ExpertBatch) -> np.ndarray:
        """Advice in [-1, 1] for every row of the batch (float64)."""
        ...

    def learn(self, batch: ExpertBatch) -> None:
        """After the batch's decisions: take in what the batch reveals."""
        ...

    def metrics(self) -> dict[str, Any]: ...


class ModelExpert:
    """An ONNX model's advice (2p - 1 for a direction model) on every row with a full window."""

    def __init__(self, model: OnnxModel, name: str = "model") -> None:
        self.model = model
        self.name = name
        self.window = int(model.window)
        self.rows = 0

    def advise(self, batch: ExpertBatch) -> np.ndarray:
        windows, full = batch.windows(self.window)
        advice = np.zeros(len(full), dtype=np.float64)
        if full.any():
            advice[full] = np.clip(self.model.advice(windows[full]), -1.0, 1.0)
            self.rows += int(full.sum())
        return advice

    def learn(self, batch: ExpertBatch) -> None:
        return None

    def metrics(self) -> dict[str, Any]:
        return {"rows": self.rows, "model": f"{self.model.entry.name}-v{self.model.entry.version}"}


class PatternExpert:
    """What happened after the most similar past situations (the pattern memory).

    Once per batch, each symbol's latest window is embedded and its top-K neighbours strictly
    before now are looked up, in one call for all symbols (at most once every `query_every`
    bars of a symbol). The advice is the memory's prediction times its confidence, held for the
    symbol's rows until its next query: a live stream, whose batches hold a row or two per
    symbol, is advised on every bar; a 1000-row backtest batch of 10 symbols once per 100 bars.
    After the batch, every row with a full window (every `store_every`-th bar of a symbol:
    consecutive windows share all but one row) is filed in the memory, which stores it once
    its outcome (`horizon` bars later) is known. Entries older than the memory's TTL are swept
    once per hour of data time.
    """

    name = "patterns"

    def __init__(
        self,
        memory: PatternMemory,
        embedder: Embedder,
        *,
        query_every: int = 1,
        store_every: int = 1,
    ) -> None:
        if query_every < 1:
            raise DataError(f"query_every must be >= 1 bar, got {query_every}")
        if store_every < 1 or memory.horizon % store_every:
            raise DataError(
                f"store_every must be >= 1 and divide the horizon ({memory.horizon} bars), "
                f"got {store_every}"
            )
        self.store_every = store_every
        self.memory, self.embedder = memory, embedder
        self.window = int(embedder.window)
        self.query_every = query_every
        self._held = pl.DataFrame(schema={"symbol": pl.String, "__held": pl.Float64})
        self._vectors: np.ndarray | None = None
        self._neighbours: dict[int, list[Neighbour]] = {}
        self._last_sweep_ns: int | None = None
        self._last_query: dict[str, int] = {}
        self.queries = 0
        self.swept = 0

    def neighbours(self, row: int) -> list[Neighbour]:
        """The neighbours behind row `row`'s fresh advice in the latest batch ([] if held)."""
        return self._neighbours.get(row, [])

    def _query_rows(self, batch: ExpertBatch, full: np.ndarray) -> np.ndarray:
        """Each symbol's latest full-window row, if `query_every` bars passed since its last."""
        latest = (
            pl.DataFrame({"symbol": batch.symbols, "n": batch.n, "full": full})
            .with_row_index("__row")
            .filter(pl.col("full"))
            .group_by("symbol")
            .agg(pl.col("__row").last(), pl.col("n").last())
            .sort("__row")
        )
        rows = []
        for symbol, row, n in latest.iter_rows():
            last = self._last_query.get(symbol)
            if last is None or n - last >= self.query_every:
                rows.append(row)
                self._last_query[symbol] = n
        return np.asarray(rows, dtype=np.int64)

    def advise(self, batch: ExpertBatch) -> np.ndarray:
        windows, full = batch.windows(self.window)
        n_rows = len(full)
        vectors = np.zeros((n_rows, self.embedder.dim), dtype=np.float32)
        if full.any():
            vectors[full] = self.embedder.embed(windows[full])
        self._vectors = vectors
        self._neighbours = {}
        fresh = np.full(n_rows, np.nan)
        rows = self._query_rows(batch, full)
        if rows.size:
            prediction = self.memory.predict(vectors[rows], batch.ts_ns[rows])
            fresh[rows] = np.clip(prediction.advice * prediction.confidence, -1.0, 1.0)
            self._neighbours = dict(zip(rows.tolist(), prediction.neighbours, strict=True))
            self.queries += int(rows.size)
        held = (
            pl.DataFrame({"symbol": batch.symbols, "__a": fresh})
            .with_row_index("__row")
            .with_columns(pl.col("__a").fill_nan(None))
            .join(self._held, on="symbol", how="left", maintain_order="left")
            .with_columns(
                pl.col("__a")
                .forward_fill()
                .over("symbol", order_by="__row")
                .fill_null(pl.col("__held"))
                .fill_null(0.0)
            )
        )
        latest = held.group_by("symbol").agg(pl.col("__a").last().alias("__held"))
        self._held = replace_by_symbol(self._held, latest)
        return held["__a"].to_numpy().astype(np.float64)

    def learn(self, batch: ExpertBatch) -> None:
        _, full = batch.windows(self.window)
        if self.store_every > 1:  # rows n = 0 mod s; their outcome rows n + horizon are too
            full = full & (batch.n % self.store_every == 0)
        if self._vectors is None or not full.any():
            return
        self.memory.observe(
            batch.symbols.filter(pl.Series(full)).to_list(),
            batch.ts_ns[full],
            batch.n[full],
            batch.price[full],
            self._vectors[full],
        )
        now = int(batch.ts_ns.max())
        if self._last_sweep_ns is None:
            self._last_sweep_ns = now
        elif now - self._last_sweep_ns >= _NS_PER_HOUR:
            self.swept += self.memory.sweep(now)
            self._last_sweep_ns = now

    def metrics(self) -> dict[str, Any]:
        return {"queries": self.queries, "swept": self.swept, **self.memory.metrics()}
