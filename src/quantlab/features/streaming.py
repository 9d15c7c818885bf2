"""Exact streaming computation: batch after batch with carried per-symbol state equals the
whole history computed at once, whatever the batch boundaries."""

from __future__ import annotations

import polars as pl

from quantlab.core.errors import DataError
from quantlab.features.indicators import ema, sma

_STATE = "__state"
_SEED = "__seed"
_ROW = "__row"


class CrossoverFeatures:
    """Fast and slow SMA and EMA of a price column for many symbols at once.

    Output columns: ``symbol, timestamp, price, sma_<fast>, sma_<slow>, ema_<fast>, ema_<slow>,
    n`` (``n`` counts the symbol's observations so far, for warm-up checks).
    The carried state per symbol is its last ``slow - 1`` prices and its last EMA values.
    """

    spec = "crossover"
    version = "1"

    def __init__(self, fast: int, slow: int, price: str = "close") -> None:
        if not 1 < fast < slow:
            raise DataError(f"need 1 < fast < slow, got fast={fast}, slow={slow}")
        self.fast, self.slow, self.price = fast, slow, price
        self.ema_cols = (f"ema_{fast}", f"ema_{slow}")
        self.sma_cols = (f"sma_{fast}", f"sma_{slow}")
        self._state = pl.DataFrame(
            schema={
                "symbol": pl.String,
                "timestamp": pl.Datetime("ns", "UTC"),
                "price": pl.Float64,
                self.ema_cols[0]: pl.Float64,
                self.ema_cols[1]: pl.Float64,
                "n": pl.Int64,
                _ROW: pl.Int64,
                _STATE: pl.Boolean,
                _SEED: pl.Boolean,
            }
        )

    @property
    def columns(self) -> list[str]:
        return ["symbol", "timestamp", "price", *self.sma_cols, *self.ema_cols, "n"]

    def update(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Features of `frame`'s rows (same order), continuing from the carried state."""
        if self.price not in frame.columns:
            raise DataError(f"feature input lacks price column {self.price!r}: {frame.columns}")
        new = frame.select(
            "symbol",
            pl.col("timestamp").cast(pl.Datetime("ns", "UTC")),
            pl.col(self.price).cast(pl.Float64).alias("price"),
        ).with_columns(
            pl.int_range(pl.len(), dtype=pl.Int64).alias(_ROW),
            pl.lit(True).alias(_STATE).not_(),
            pl.lit(False).alias(_SEED),
        )
        both = pl.concat([self._state, new], how="diagonal").sort(
            ["symbol", _STATE, _ROW], descending=[False, True, False], maintain_order=True
        )
        ema_exprs = []
        for n, col in zip((self.fast, self.slow), self.ema_cols, strict=True):
            seeded = (
                pl.when(pl.col(_SEED))
                .then(pl.col(col))
                .when(pl.col(_STATE))
                .then(None)
                .otherwise(pl.col("price"))
            )
            ema_exprs.append(ema(seeded, n).over("symbol").alias(col))
        carried_n = pl.col("n").fill_null(strategy="forward").over("symbol").fill_null(0)
        new_rank = (~pl.col(_STATE)).cast(pl.Int64).cum_sum().over("symbol")
        out = both.with_columns(
            sma("price", self.fast).over("symbol").alias(self.sma_cols[0]),
            sma("price", self.slow).over("symbol").alias(self.sma_cols[1]),
            *ema_exprs,
            pl.when(pl.col(_STATE)).then(pl.col("n")).otherwise(carried_n + new_rank).alias("n"),
        )
        keep = self.slow - 1
        self._state = (
            out.group_by("symbol", maintain_order=True)
            .tail(keep)
            .with_columns(
                pl.lit(True).alias(_STATE),
                (pl.int_range(pl.len()).over("symbol") == pl.len().over("symbol") - 1).alias(_SEED),
                (pl.int_range(pl.len(), dtype=pl.Int64).over("symbol") - keep).alias(_ROW),
            )
            .select(self._state.columns)
        )
        return out.filter(~pl.col(_STATE)).sort(_ROW).select(self.columns)
