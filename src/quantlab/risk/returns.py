"""A rolling window of per-symbol returns on a fixed time grid, built from market-data batches.

Prices are sampled at the close of each grid interval (``interval_ns``, by event time): the
last price of every symbol in the interval, carried forward when a symbol had none. Each
closed interval adds one row of simple returns ``p_t / p_{t-1} - 1`` for all symbols, so rows
are joint scenarios across symbols (what a portfolio VaR needs). A symbol without a previous
price has a return of 0 in that row. Intervals with no data at all add no row, and data older
than the interval being filled is ignored (marks elsewhere take the newest price anyway).

Work is per batch and vectorised (numpy); there is no Python loop over rows.
"""

from __future__ import annotations

import numpy as np

from quantlab.core.errors import ConfigError

_INITIAL_COLUMNS = 8


class ReturnWindow:
    """The last `window` return rows of every symbol seen, one column per symbol."""

    def __init__(self, window: int, interval_ns: int) -> None:
        if window < 2:
            raise ConfigError("risk.var.window", f"must be >= 2, got {window}")
        if interval_ns < 1:
            raise ConfigError("risk.var.interval_s", f"must be > 0, got {interval_ns} ns")
        self.window = window
        self.interval_ns = interval_ns
        self.columns: dict[str, int] = {}
        self.symbols: list[str] = []
        cap = _INITIAL_COLUMNS
        self._buf = np.zeros((window, cap))
        self._cur = np.full(cap, np.nan)  # prices of the interval being filled
        self._prev = np.full(cap, np.nan)  # prices at the last closed interval
        self._cur_bucket: int | None = None
        self._closed = 0  # intervals closed so far
        self._head = 0  # next ring row to write
        self.count = 0  # return rows held (<= window)
        self.version = 0  # bumps whenever rows are added

    # -- columns -----------------------------------------------------------------------------
    def column(self, symbol: str) -> int:
        """The column of `symbol`, added (with zero past returns) when first seen."""
        col = self.columns.get(symbol)
        if col is None:
            col = len(self.symbols)
            if col >= self._cur.shape[0]:
                self._grow(2 * self._cur.shape[0])
            self.columns[symbol] = col
            self.symbols.append(symbol)
        return col

    def _grow(self, cap: int) -> None:
        old = self._cur.shape[0]
        buf = np.zeros((self.window, cap))
        buf[:, :old] = self._buf
        self._buf = buf
        for name in ("_cur", "_prev"):
            grown = np.full(cap, np.nan)
            grown[:old] = getattr(self, name)
            setattr(self, name, grown)

    @property
    def n(self) -> int:
        return len(self.symbols)

    # -- updates -----------------------------------------------------------------------------
    def update(self, cols: np.ndarray, ts_ns: np.ndarray, prices: np.ndarray) -> int:
        """Add a batch: column indices, event times (ns) and prices, time-ordered per symbol.

        Returns the number of return rows added.
        """
        if cols.size == 0:
            return 0
        n = self.n
        bucket = ts_ns // self.interval_ns
        if self._cur_bucket is not None and bucket.max() <= self._cur_bucket:
            return self._within(cols, bucket, prices)
        if self._cur_bucket is not None:
            keep = bucket >= self._cur_bucket
            if not keep.all():
                cols, bucket, prices = cols[keep], bucket[keep], prices[keep]
                if cols.size == 0:
                    return 0
        # The last row of each (interval, symbol): first occurrence in the reversed arrays.
        keys = bucket * n + cols
        _, last = np.unique(keys[::-1], return_index=True)
        idx = keys.size - 1 - last
        buckets, b_idx = np.unique(bucket[idx], return_inverse=True)
        rows = np.full((buckets.size, n), np.nan)
        rows[b_idx, cols[idx]] = prices[idx]
        cur = self._cur[:n]
        if self._cur_bucket is not None and buckets[0] == self._cur_bucket:
            np.copyto(rows[0], cur, where=np.isnan(rows[0]))
            states = rows
        else:
            states = np.vstack([cur[None, :], rows])
        # Carry each symbol's last price forward through the intervals.
        have = ~np.isnan(states)
        pick = np.where(have, np.arange(states.shape[0])[:, None], 0)
        np.maximum.accumulate(pick, axis=0, out=pick)
        states = states[pick, np.arange(n)]
        first_ever = self._cur_bucket is None
        closed = states[1:-1] if first_ever else states[:-1]
        self._cur[:n] = states[-1]
        self._cur_bucket = int(buckets[-1])
        return self._close(closed)

    def _within(self, cols: np.ndarray, bucket: np.ndarray, prices: np.ndarray) -> int:
        """`update` for a batch that closes no interval (the common case: small, frequent
        batches): each symbol's last price in the interval being filled becomes its current
        one (a NaN one keeps the current), older rows are ignored. No row is added."""
        cur_bucket = self._cur_bucket
        if bucket.min() < cur_bucket:
            keep = bucket == cur_bucket
            cols, prices = cols[keep], prices[keep]
            if cols.size == 0:
                return 0
        if cols.size > 1:  # the last row of each symbol
            _, last = np.unique(cols[::-1], return_index=True)
            idx = cols.size - 1 - last
            cols, prices = cols[idx], prices[idx]
        have = ~np.isnan(prices)
        self._cur[cols[have]] = prices[have]
        return 0

    def _close(self, snapshots: np.ndarray) -> int:
        if snapshots.shape[0] == 0:
            return 0
        n = self.n
        if self._closed == 0:  # the first closed interval has no previous one: no return
            self._prev[:n] = snapshots[0]
            self._closed = 1
            snapshots = snapshots[1:]
            if snapshots.shape[0] == 0:
                return 0
        before = np.vstack([self._prev[None, :n], snapshots[:-1]])
        with np.errstate(invalid="ignore", divide="ignore"):
            returns = snapshots / before - 1.0
        returns[~np.isfinite(returns)] = 0.0
        self._prev[:n] = snapshots[-1]
        self._closed += snapshots.shape[0]
        added = int(returns.shape[0])
        if added > self.window:
            returns = returns[-self.window :]
        k = returns.shape[0]
        at = (self._head + np.arange(k)) % self.window
        self._buf[at, :n] = returns
        self._head = (self._head + k) % self.window
        self.count = min(self.window, self.count + k)
        self.version += 1
        return added

    # -- reading -----------------------------------------------------------------------------
    def returns(self) -> np.ndarray:
        """The held return rows (``count x n``), in ring order: order does not matter to VaR."""
        return self._buf[: self.count, : self.n]

    def ordered(self) -> np.ndarray:
        """The held return rows, oldest first (a copy)."""
        rows = self.returns()
        if self.count < self.window:
            return rows.copy()
        return np.vstack([rows[self._head :], rows[: self._head]])

    def prices(self) -> np.ndarray:
        """The latest price of every column (NaN before its first)."""
        return self._cur[: self.n]
