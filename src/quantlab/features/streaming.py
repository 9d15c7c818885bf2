"""Exact streaming computation: batch after batch with carried per-symbol state equals the
whole history computed at once, whatever the batch boundaries (`features.library`)."""

from __future__ import annotations

import polars as pl

from quantlab.core.errors import DataError
from quantlab.features.library import Count, Ema, IndicatorSet, Sma


class CrossoverFeatures:
    """Fast and slow SMA and EMA of a price column for many symbols at once (TA-Lib's
    conventions: the EMAs are seeded with the SMA of their first n values).

    Output columns: ``symbol, timestamp, price, sma_<fast>, sma_<slow>, ema_<fast>, ema_<slow>,
    n`` (``n`` counts the symbol's observations so far, for warm-up checks).
    """

    spec = "crossover"
    version = "2"

    def __init__(self, fast: int, slow: int, price: str = "close") -> None:
        if not 1 < fast < slow:
            raise DataError(f"need 1 < fast < slow, got fast={fast}, slow={slow}")
        self.fast, self.slow, self.price = fast, slow, price
        self.ema_cols = (f"ema_{fast}", f"ema_{slow}")
        self.sma_cols = (f"sma_{fast}", f"sma_{slow}")
        self._set = IndicatorSet(
            [Sma(fast), Sma(slow), Ema(fast), Ema(slow), Count("n")], price=price
        )

    @property
    def columns(self) -> list[str]:
        return ["symbol", "timestamp", "price", *self.sma_cols, *self.ema_cols, "n"]

    def update(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Features of `frame`'s rows (same order), continuing from the carried state."""
        if self.price not in frame.columns:
            raise DataError(f"feature input lacks price column {self.price!r}: {frame.columns}")
        return self._set.update(frame).select(self.columns)
