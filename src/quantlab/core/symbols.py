"""Stable integer codes for symbols in frames, for per-symbol state arrays."""

from __future__ import annotations

import numpy as np
import polars as pl


class SymbolCodes:
    """Maps symbols to 0, 1, 2, ... in first-seen order, for a whole column at once.

    Polars categorical codes are per series, not global, so they cannot name a symbol across
    batches; a cast to an Enum of our own symbol list is stable and fast. New symbols extend
    the Enum at the end, so existing codes never move.
    """

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self._enum = pl.Enum([])

    def __len__(self) -> int:
        return len(self.index)

    def codes(self, symbols: pl.Series) -> np.ndarray:
        """Each row's code (nulls are coded as the empty symbol)."""
        if symbols.null_count():
            symbols = symbols.fill_null("")
        if len(symbols) >= 64:
            run = symbols.rle_id()  # consecutive equal symbols share a run
            runs = int(run[-1]) + 1
            if runs * 4 <= len(symbols):  # grouped rows: code one value per run
                first = np.r_[True, np.diff(run.to_numpy()) != 0]
                per_run = self._direct(symbols.filter(pl.Series(first)))
                coded: np.ndarray = per_run[run.to_numpy()]
                return coded
        return self._direct(symbols)

    def _direct(self, symbols: pl.Series) -> np.ndarray:
        known = symbols.cast(self._enum, strict=False)
        if known.null_count():
            distinct = symbols.unique(maintain_order=True)  # few values: cheap to look through
            for name in distinct.filter(distinct.cast(self._enum, strict=False).is_null()):
                self.index.setdefault(name, len(self.index))
            self._enum = pl.Enum(list(self.index))
            known = symbols.cast(self._enum)
        out: np.ndarray = known.to_physical().cast(pl.Int64).to_numpy()
        return out

    def names(self) -> list[str]:
        return list(self.index)
