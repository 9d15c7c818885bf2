"""Indicators with carried per-symbol state, on the compiled kernels (`features.kernels`).

Each indicator consumes columns of a frame (many symbols, rows in time order per symbol) and
returns its output columns for those rows, keeping whatever it needs to continue on the next
frame. Feeding a history in one frame or in any number of pieces gives identical results.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np
import polars as pl

from quantlab.core.errors import DataError
from quantlab.core.symbols import SymbolCodes
from quantlab.features import kernels as k


def _window(n: int, what: str = "window") -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise DataError(f"{what} must be a positive integer, got {n!r}")
    return n


class _Stateful:
    """Per-symbol state arrays that grow as symbols appear."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}
        self.capacity = 0

    def _state(self, name: str, dtype: Any = np.float64, width: int = 0) -> np.ndarray:
        arr = self._arrays.get(name)
        if arr is None or len(arr) < self.capacity:
            shape = (self.capacity, width) if width else (self.capacity,)
            grown = np.zeros(shape, dtype)
            if arr is not None:
                grown[: len(arr)] = arr
            self._arrays[name] = arr = grown
        return arr

    def ensure(self, n_symbols: int) -> None:
        self.capacity = max(self.capacity, n_symbols)


class Indicator(_Stateful, ABC):
    """Base: `inputs` are the frame columns read, `outputs` the columns produced.

    `compute` writes the outputs for rows `codes`/`cols` into `outs` (arrays the caller
    allocated); rows of different symbols may be computed by different threads.
    """

    inputs: ClassVar[tuple[str, ...]] = ("price",)
    outputs: tuple[str, ...]

    @abstractmethod
    def compute(
        self, codes: np.ndarray, cols: dict[str, np.ndarray], outs: dict[str, np.ndarray]
    ) -> None:
        """Write the outputs of rows `codes`/`cols` into `outs`, carrying state."""

    def allocate(self, n: int) -> dict[str, np.ndarray]:
        dtypes: dict[str, Any] = getattr(self, "dtypes", {})
        return {o: np.empty(n, dtypes.get(o, np.float64)) for o in self.outputs}

    def prepare(self, n_symbols: int, cols: dict[str, np.ndarray]) -> None:
        """Grow the state for `n_symbols` (before threads touch it)."""
        self.ensure(n_symbols)
        empty = np.zeros(0, np.int64)
        self.compute(empty, {k: v[:0] for k, v in cols.items()}, self.allocate(0))

    def update(self, codes: np.ndarray, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.ensure(int(codes.max()) + 1 if len(codes) else 0)
        outs = self.allocate(len(codes))
        self.compute(codes, cols, outs)
        return outs


class Count(Indicator):
    """How many observations of the symbol so far (for warm-up checks)."""

    def __init__(self, name: str = "n") -> None:
        super().__init__()
        self.outputs = (name,)
        self.dtypes: dict[str, Any] = {name: np.int64}

    def compute(
        self, codes: np.ndarray, cols: dict[str, np.ndarray], outs: dict[str, np.ndarray]
    ) -> None:
        _count(codes, self._state("seen", np.int64), outs[self.outputs[0]])


def _count(codes: np.ndarray, seen: np.ndarray, out: np.ndarray) -> None:
    # a running count per symbol, vectorised: rank of each row within its symbol + carried
    if not len(codes):
        return
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.r_[0, np.flatnonzero(sorted_codes[1:] != sorted_codes[:-1]) + 1]
    rank = np.arange(len(codes)) - np.repeat(starts, np.diff(np.r_[starts, len(codes)]))
    out[order] = seen[sorted_codes] + rank + 1
    np.add.at(seen, codes, 1)


class Sma(Indicator):
    def __init__(self, n: int, name: str | None = None) -> None:
        super().__init__()
        self.n = _window(n)
        self.outputs = (name or f"sma_{n}",)

    def compute(
        self, codes: np.ndarray, cols: dict[str, np.ndarray], outs: dict[str, np.ndarray]
    ) -> None:
        k.sma_kernel(
            codes,
            cols["price"],
            self.n,
            self._state("ring", width=self.n),
            self._state("pos", np.int64),
            self._state("count", np.int64),
            self._state("total"),
            outs[self.outputs[0]],
        )


class Ema(Indicator):
    def __init__(self, n: int, name: str | None = None) -> None:
        super().__init__()
        self.n = _window(n)
        self.outputs = (name or f"ema_{n}",)

    def compute(
        self, codes: np.ndarray, cols: dict[str, np.ndarray], outs: dict[str, np.ndarray]
    ) -> None:
        k.ema_kernel(
            codes,
            cols["price"],
            self.n,
            self._state("count", np.int64),
            self._state("seed"),
            self._state("value"),
            outs[self.outputs[0]],
        )


class Rsi(Indicator):
    def __init__(self, n: int = 14, name: str | None = None) -> None:
        super().__init__()
        self.n = _window(n)
        self.outputs = (name or f"rsi_{n}",)

    def compute(
        self, codes: np.ndarray, cols: dict[str, np.ndarray], outs: dict[str, np.ndarray]
    ) -> None:
        k.rsi_kernel(
            codes,
            cols["price"],
            self.n,
            self._state("count", np.int64),
            self._state("prev"),
            self._state("gain"),
            self._state("loss"),
            outs[self.outputs[0]],
        )


class Macd(Indicator):
    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        super().__init__()
        self.fast, self.slow, self.signal = _window(fast), _window(slow), _window(signal)
        if fast >= slow:
            raise DataError(f"MACD needs fast < slow, got fast={fast}, slow={slow}")
        self.outputs = ("macd", "macd_signal", "macd_hist")

    def compute(
        self, codes: np.ndarray, cols: dict[str, np.ndarray], outs: dict[str, np.ndarray]
    ) -> None:
        s = self._state
        k.macd_kernel(
            codes, cols["price"], self.fast, self.slow, self.signal,
            s("count", np.int64), s("slow_sum"), s("fast_sum"), s("ring", width=self.fast),
            s("fast_ema"), s("slow_ema"), s("sig_count", np.int64), s("sig_sum"), s("sig_ema"),
            *(outs[o] for o in self.outputs),
        )  # fmt: skip


class Bollinger(Indicator):
    def __init__(self, n: int = 20, k_std: float = 2.0) -> None:
        super().__init__()
        self.n = _window(n)
        if not k_std > 0:
            raise DataError(f"Bollinger width must be > 0 standard deviations, got {k_std}")
        self.k_std = float(k_std)
        self.outputs = (f"bb_mid_{n}", f"bb_upper_{n}", f"bb_lower_{n}")

    def compute(
        self, codes: np.ndarray, cols: dict[str, np.ndarray], outs: dict[str, np.ndarray]
    ) -> None:
        k.bollinger_kernel(
            codes,
            cols["price"],
            self.n,
            self.k_std,
            self._state("ring", width=self.n),
            self._state("pos", np.int64),
            self._state("count", np.int64),
            *(outs[o] for o in self.outputs),
        )


class Atr(Indicator):
    inputs: ClassVar[tuple[str, ...]] = ("high", "low", "price")

    def __init__(self, n: int = 14, name: str | None = None) -> None:
        super().__init__()
        self.n = _window(n)
        self.outputs = (name or f"atr_{n}",)

    def compute(
        self, codes: np.ndarray, cols: dict[str, np.ndarray], outs: dict[str, np.ndarray]
    ) -> None:
        k.atr_kernel(
            codes,
            cols["high"],
            cols["low"],
            cols["price"],
            self.n,
            self._state("count", np.int64),
            self._state("prev_close"),
            self._state("total"),
            self._state("value"),
            outs[self.outputs[0]],
        )


class Returns(Indicator):
    """Simple (or log) returns against the symbol's previous price."""

    def __init__(self, log: bool = False, name: str | None = None) -> None:
        super().__init__()
        self.log = bool(log)
        self.outputs = (name or ("log_return" if log else "return"),)

    def compute(
        self, codes: np.ndarray, cols: dict[str, np.ndarray], outs: dict[str, np.ndarray]
    ) -> None:
        k.returns_kernel(
            codes, cols["price"], self.log, self._state("count", np.int64), self._state("prev"),
            outs[self.outputs[0]],
        )  # fmt: skip


class Volatility(Indicator):
    """Sample standard deviation of the last `n` log returns (first value after n returns)."""

    def __init__(self, n: int, name: str | None = None) -> None:
        super().__init__()
        self.n = _window(n)
        self.outputs = (name or f"volatility_{n}",)
        self._returns = Returns(log=True)

    def compute(
        self, codes: np.ndarray, cols: dict[str, np.ndarray], outs: dict[str, np.ndarray]
    ) -> None:
        self._returns.ensure(self.capacity)
        r = np.empty(len(codes))
        self._returns.compute(codes, cols, {self._returns.outputs[0]: r})
        mean = np.empty(len(codes))
        k.rolling_kernel(
            codes, r, self.n, True, self._state("ring", width=self.n), self._state("pos", np.int64),
            self._state("count", np.int64), self._state("seen", np.int64), mean,
            outs[self.outputs[0]],
        )  # fmt: skip


class ZScore(Indicator):
    """(x - mean) / sample standard deviation over the last `n` values, x included."""

    def __init__(self, n: int, name: str | None = None) -> None:
        super().__init__()
        self.n = _window(n)
        self.outputs = (name or f"zscore_{n}",)

    def compute(
        self, codes: np.ndarray, cols: dict[str, np.ndarray], outs: dict[str, np.ndarray]
    ) -> None:
        mean, std = np.empty(len(codes)), np.empty(len(codes))
        k.rolling_kernel(
            codes, cols["price"], self.n, False, self._state("ring", width=self.n),
            self._state("pos", np.int64), self._state("count", np.int64),
            self._state("seen", np.int64), mean, std,
        )  # fmt: skip
        with np.errstate(divide="ignore", invalid="ignore"):
            np.divide(cols["price"] - mean, std, out=outs[self.outputs[0]])


class Vwap(Indicator):
    """Volume-weighted average price of the last `n` rows."""

    inputs: ClassVar[tuple[str, ...]] = ("price", "volume")

    def __init__(self, n: int, name: str | None = None) -> None:
        super().__init__()
        self.n = _window(n)
        self.outputs = (name or f"vwap_{n}",)

    def compute(
        self, codes: np.ndarray, cols: dict[str, np.ndarray], outs: dict[str, np.ndarray]
    ) -> None:
        k.vwap_kernel(
            codes, cols["price"], cols["volume"], self.n, self._state("ring_pv", width=self.n),
            self._state("ring_v", width=self.n), self._state("pos", np.int64),
            self._state("count", np.int64), outs[self.outputs[0]],
        )  # fmt: skip


class OrderFlowImbalance(Indicator):
    """Cont, Kukanov and Stoikov's order-flow imbalance of each quote against the previous."""

    inputs: ClassVar[tuple[str, ...]] = ("bid", "ask", "bid_size", "ask_size")

    def __init__(self, name: str = "ofi") -> None:
        super().__init__()
        self.outputs = (name,)

    def compute(
        self, codes: np.ndarray, cols: dict[str, np.ndarray], outs: dict[str, np.ndarray]
    ) -> None:
        k.ofi_kernel(
            codes, cols["bid"], cols["ask"], cols["bid_size"], cols["ask_size"],
            self._state("count", np.int64), self._state("prev", width=4), outs[self.outputs[0]],
        )  # fmt: skip


class IndicatorSet:
    """Several indicators over one frame layout, with one symbol coding shared by all.

    `update(frame)` returns ``symbol, timestamp, price`` plus every indicator's outputs for
    the frame's rows (same order); state carries to the next call.
    """

    def __init__(
        self,
        indicators: list[Indicator],
        *,
        price: str = "close",
        high: str = "high",
        low: str = "low",
        volume: str = "volume",
    ) -> None:
        names = [o for ind in indicators for o in ind.outputs]
        if len(set(names)) != len(names):
            raise DataError(f"indicator outputs collide: {names}")
        self.indicators = indicators
        self.columns = {
            "price": price,
            "high": high,
            "low": low,
            "volume": volume,
            "bid": "bid",
            "ask": "ask",
            "bid_size": "bid_size",
            "ask_size": "ask_size",
        }
        self.symbols = SymbolCodes()
        # (symbols, input columns) the indicators' state was last grown for
        self._prepared_for: tuple[int, frozenset[str]] | None = None

    @property
    def outputs(self) -> list[str]:
        return [o for ind in self.indicators for o in ind.outputs]

    def update(self, frame: pl.DataFrame) -> pl.DataFrame:
        needed = {self.columns[i] for ind in self.indicators for i in ind.inputs}
        missing = sorted(needed - set(frame.columns))
        if missing:
            raise DataError(f"feature input lacks columns {missing} (has {frame.columns})")
        codes = self.symbols.codes(frame["symbol"])
        cols = {
            role: frame[name].cast(pl.Float64).to_numpy()
            for role, name in self.columns.items()
            if name in frame.columns
        }
        n_symbols = len(self.symbols)
        outs = [ind.allocate(len(codes)) for ind in self.indicators]
        shape = (n_symbols, frozenset(cols))
        if shape != self._prepared_for:  # a new symbol (or input): grow every state first
            for ind in self.indicators:
                ind.prepare(n_symbols, cols)
            self._prepared_for = shape
        split = _split_point(codes) if len(codes) >= _PARALLEL_ROWS else None
        if split is None:
            self._compute(codes, cols, outs, 0, len(codes))
        else:  # two halves of disjoint symbols, each on its own core (kernels release the GIL)
            with ThreadPoolExecutor(2) as pool:
                done = [
                    pool.submit(self._compute, codes, cols, outs, lo, hi)
                    for lo, hi in ((0, split), (split, len(codes)))
                ]
                for future in done:
                    future.result()
        out: dict[str, Any] = {
            "symbol": frame["symbol"],
            "timestamp": frame["timestamp"],
            "price": pl.Series("price", cols["price"]),
        }
        for produced in outs:
            for name, values in produced.items():
                # warm-up NaN becomes null while the column is built (no second pass)
                out[name] = pl.Series(name, values, nan_to_null=values.dtype.kind == "f")
        return pl.DataFrame(out)

    def _compute(
        self,
        codes: np.ndarray,
        cols: dict[str, np.ndarray],
        outs: list[dict[str, np.ndarray]],
        lo: int,
        hi: int,
    ) -> None:
        part = {k: v[lo:hi] for k, v in cols.items()}
        for ind, produced in zip(self.indicators, outs, strict=True):
            ind.compute(codes[lo:hi], part, {k: v[lo:hi] for k, v in produced.items()})


_PARALLEL_ROWS = 200_000


def _split_point(codes: np.ndarray) -> int | None:
    """A row near the middle where the symbol changes, if every symbol forms one run (so the
    two halves share no symbol and no order between them matters); else None."""
    change = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    if not len(change) or len(np.unique(codes[np.r_[0, change]])) != len(change) + 1:
        return None
    return int(change[np.argmin(np.abs(change - len(codes) // 2))])
