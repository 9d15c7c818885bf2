"""Data quality (DESIGN §6), vectorised per frame with carried per-symbol state.

Outcomes are kept apart:

* **rejected** (dropped, counted by reason, sent to the dead-letter store):
  ``null_field``, ``non_finite_price``, ``non_positive_price``, ``bad_size``, ``high_below_low``,
  ``crossed_quote``, ``future_timestamp``, ``stale_timestamp``, ``duplicate``, ``out_of_order``;
* **flagged** (kept, marked in the ``flags`` bit column, counted): ``price_jump`` (a move of more
  than 10 % within 1 s), ``volume_spike`` (size more than 3 standard deviations above the
  rolling mean), ``reordered`` (late by less than the tolerance: accepted, batch re-sorted);
* **gaps** (alerts): more than 5 s without an event for a symbol; for equities only while the
  regular session (09:30-16:00 New York, weekdays) is open at both ends.

Every rule runs over the whole frame at once on numpy arrays (a Polars query per rule costs
more in fixed overhead than the rule itself on a 1,000-row batch); per-symbol running values
use grouped scans, not loops over rows. The only per-row Python work is the duplicate
window's hash-set lookup, symbol interning and hashing of string trade ids.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Final
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from quantlab.core.enums import EventType
from quantlab.core.errors import ConfigError
from quantlab.core.schemas import SCHEMAS, TIMESTAMP
from quantlab.core.symbols import SymbolCodes

FLAG_PRICE_JUMP: Final = 1
FLAG_VOLUME_SPIKE: Final = 2
FLAG_REORDERED: Final = 4
FLAG_NAMES: Final = {
    FLAG_PRICE_JUMP: "price_jump",
    FLAG_VOLUME_SPIKE: "volume_spike",
    FLAG_REORDERED: "reordered",
}

_PRICES = {
    EventType.BAR: ("open", "high", "low", "close"),
    EventType.TRADE: ("price",),
    EventType.QUOTE: ("bid", "ask"),
}
# What makes two events the same event (the duplicate hash).
_IDENTITY = {
    EventType.BAR: ("symbol", "timestamp"),
    EventType.TRADE: ("symbol", "timestamp", "price", "size", "trade_id"),
    EventType.QUOTE: ("symbol", "timestamp", "bid", "ask", "bid_size", "ask_size"),
}
_NY = ZoneInfo("America/New_York")
_NONE: Final = np.iinfo(np.int64).min  # "no earlier event"
REASONS: Final = (
    "null_field",
    "non_finite_price",
    "non_positive_price",
    "bad_size",
    "high_below_low",
    "crossed_quote",
    "future_timestamp",
    "stale_timestamp",
    "duplicate",
    "out_of_order",
)
_CODE = {name: i + 1 for i, name in enumerate(REASONS)}
_REASON_NAMES = np.array(["", *REASONS], dtype=object)
_NO_REASONS: Final = pl.Series("reason", [], dtype=pl.String)
_SMALL: Final = 64  # frames below this many rows take the per-row paths


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the data-quality rules; `None` disables a time rule (e.g. for replay)."""

    jump_pct: float = 0.10
    jump_window_s: float = 1.0
    volume_sigmas: float = 3.0
    volume_window: int = 100
    volume_min_samples: int = 20
    gap_s: float = 5.0
    reorder_tolerance_ms: float = 0.0
    max_future_s: float | None = 5.0
    max_age_s: float | None = None
    dedup_window: int = 200_000

    def __post_init__(self) -> None:
        for name in ("jump_pct", "jump_window_s", "volume_sigmas", "gap_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"quality.{name}", f"must be > 0, got {getattr(self, name)}")
        if self.volume_window < 2 or not 2 <= self.volume_min_samples <= self.volume_window:
            raise ConfigError(
                "quality.volume_window",
                f"need 2 <= volume_min_samples ({self.volume_min_samples}) <= volume_window "
                f"({self.volume_window})",
            )
        if self.reorder_tolerance_ms < 0:
            raise ConfigError("quality.reorder_tolerance_ms", "must be >= 0")
        if self.dedup_window < 1:
            raise ConfigError("quality.dedup_window", f"must be >= 1, got {self.dedup_window}")


@dataclass
class Gap:
    symbol: str
    start_ns: int
    end_ns: int

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


@dataclass
class QualityResult:
    accepted: pl.DataFrame  # the kind's schema plus ``flags`` (UInt8), time-sorted per symbol
    rejected: pl.DataFrame  # the input columns plus ``reason``
    gaps: list[Gap] = field(default_factory=list)


class DuplicateWindow:
    """The identity hashes of recent events: a sliding window of `size` to `2 * size` events.

    Two generations of an open-addressing hash table (numpy, linear probing, load factor at
    most 1/2): new hashes go into the current one; when it holds `size`, it becomes the
    previous generation and the oldest is dropped. Lookups and inserts are vectorised over a
    whole batch, so no per-event Python runs.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        slots = 1 << max(4, int(2 * size - 1).bit_length())
        self._mask = np.uint64(slots - 1)
        self._cur = np.zeros(slots, np.uint64)
        self._prev = np.zeros(slots, np.uint64)
        self._owner = np.zeros(slots, np.int64)  # scratch: which row claimed a slot
        self._count = 0

    @staticmethod
    def _key(hashes: np.ndarray) -> np.ndarray:
        keys = hashes.astype(np.uint64, copy=True)
        keys[keys == 0] = 1  # 0 marks an empty slot
        return keys

    def _lookup(self, table: np.ndarray, keys: np.ndarray) -> np.ndarray:
        found = np.zeros(len(keys), bool)
        pos = keys & self._mask
        active = np.arange(len(keys))
        while len(active):
            slot = table[pos[active]]
            hit = slot == keys[active]
            found[active[hit]] = True
            active = active[~hit & (slot != 0)]
            pos[active] = (pos[active] + np.uint64(1)) & self._mask
        return found

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        keys = self._key(hashes)
        found: np.ndarray = self._lookup(self._cur, keys) | self._lookup(self._prev, keys)
        return found

    def insert(self, hashes: np.ndarray) -> np.ndarray:
        """Add `hashes`; True where a hash was new (not in the window, not earlier in `hashes`).

        Works in chunks that cannot overfill the current generation (it rotates in between),
        so the table never holds more than `size` keys (load factor <= 1/2).
        """
        keys = self._key(hashes)
        out = np.zeros(len(keys), bool)
        start = 0
        while start < len(keys):
            stop = start + (self.size - self._count)
            out[start:stop] = self._insert_chunk(keys[start:stop])
            start = stop
            if self._count >= self.size:  # rotate: the oldest generation is forgotten
                self._prev, self._cur = self._cur, self._prev
                self._cur.fill(0)
                self._count = 0
        return out

    def _insert_chunk(self, keys: np.ndarray) -> np.ndarray:
        new = ~(self._lookup(self._cur, keys) | self._lookup(self._prev, keys))
        rows = np.flatnonzero(new)
        inserted = np.zeros(len(keys), bool)
        table, owner = self._cur, self._owner
        pos = keys & self._mask
        while len(rows):
            slot = table[pos[rows]]
            twin = slot == keys[rows]  # an identical hash got in first: a repeat in this batch
            empty = slot == 0
            free = rows[empty]
            if len(free):
                owner[pos[free[::-1]]] = free[::-1]  # the earliest row claims a contested slot
                won = free[owner[pos[free]] == free]
                table[pos[won]] = keys[won]
                inserted[won] = True
            rows = rows[~twin & ~inserted[rows]]
            if len(rows):
                slot = table[pos[rows]]
                move = (slot != 0) & (slot != keys[rows])
                pos[rows[move]] = (pos[rows[move]] + np.uint64(1)) & self._mask
        self._count += int(inserted.sum())
        return inserted


class QualityChecker:
    """Checks frames of one kind from one source, carrying per-symbol state between frames."""

    def __init__(
        self, kind: EventType, config: QualityConfig | None = None, *, asset_class: str = "crypto"
    ) -> None:
        self.kind = kind
        self.config = config or QualityConfig()
        self.equity = asset_class == "equity"
        self.schema = SCHEMAS[kind]
        self._window = DuplicateWindow(self.config.dedup_window)
        self._symbols = SymbolCodes()  # symbol -> position in the state arrays
        self._last_ts = np.zeros(0, np.int64)
        self._last_px = np.zeros(0, np.float64)
        self._hist = np.zeros((0, self.config.volume_window))  # last sizes per symbol
        self._bar_interval_ns: int | None = None
        self.rejected: Counter[str] = Counter()
        self.flagged: Counter[str] = Counter()
        self.accepted = 0
        self.gaps = 0

    # -- the check -------------------------------------------------------------------------
    def _codes(self, symbols: pl.Series) -> np.ndarray:
        """Each row's position in the per-symbol state arrays (new symbols get new ones)."""
        if len(symbols) < _SMALL:
            # A dict lookup per row beats the Enum cast's fixed cost on a small frame; the
            # codes are SymbolCodes' own (its Enum catches up when it next sees a new name).
            index = self._symbols.index
            row_codes = []
            for name in symbols.to_list():
                key = "" if name is None else name
                code = index.get(key)
                if code is None:
                    code = index[key] = len(index)
                row_codes.append(code)
            codes = np.array(row_codes, dtype=np.int64)
        else:
            codes = self._symbols.codes(symbols)
        grow = len(self._symbols) - len(self._last_ts)
        if grow > 0:
            self._last_ts = np.concatenate([self._last_ts, np.full(grow, _NONE)])
            self._last_px = np.concatenate([self._last_px, np.full(grow, np.nan)])
            w = self.config.volume_window
            self._hist = np.vstack([self._hist, np.full((grow, w), np.nan)])
        return codes

    def check(self, frame: pl.DataFrame, now_ns: int | None = None) -> QualityResult:
        """Split `frame` into accepted (flagged) and rejected rows; report gaps."""
        cfg = self.config
        names = self.schema.names()
        f = frame if frame.columns == names else frame.select(names)
        n = f.height
        if n == 0:
            return QualityResult(
                accepted=f.with_columns(pl.lit(0, pl.UInt8).alias("flags")),
                rejected=f.with_columns(pl.lit("", pl.String).alias("reason")),
            )
        codes = self._codes(f["symbol"])
        ts = _timestamps(f["timestamp"])
        reason, px, size = self._row_rules(f, ts, now_ns)

        # Duplicates: against the window of accepted events and earlier rows of this frame.
        h = self._hash(f, codes, ts)
        # An event seen before (in the window, or earlier in this frame) is a duplicate; the
        # first copy is kept. Seen means passed the row rules: an event later rejected for
        # its ordering still counts as seen.
        ok = np.flatnonzero(reason == 0)
        if len(ok):
            reason[ok[~self._window.insert(h[ok])]] = _CODE["duplicate"]

        # Ordering per symbol against the running maximum (carried across frames).
        ok = np.flatnonzero(reason == 0)
        reordered = np.zeros(n, bool)
        if len(ok):
            ok_codes = codes[ok]
            ok_prev = _grouped_prev_index(ok_codes)
            prev_max = np.maximum(
                _grouped_prev_max(ok_codes, ts[ok], ok_prev), self._last_ts[ok_codes]
            )
            tol = int(cfg.reorder_tolerance_ms * 1e6)
            has_prev = prev_max != _NONE
            late_by = np.where(has_prev, prev_max - ts[ok], 0)
            if self.kind is EventType.BAR:
                behind = has_prev & (late_by >= 0)
                ooo = behind & ((late_by > tol) | (late_by == 0))
            else:
                behind = has_prev & (late_by > 0)
                ooo = behind & (late_by > tol)
            reason[ok[ooo]] = _CODE["out_of_order"]
            reordered[ok[behind & ~ooo]] = True
        acc = np.flatnonzero(reason == 0)
        if reordered[acc].any():
            acc = acc[np.lexsort((acc, ts[acc]))]

        # Flags against the previous accepted event of the symbol.
        a_codes, a_ts, a_px = codes[acc], ts[acc], px[acc]
        # the same rows in the same order as the ordering rule's: already known
        same = len(ok) and np.array_equal(acc, ok)
        prev_idx = ok_prev if same else _grouped_prev_index(a_codes)
        has = prev_idx >= 0
        prev_px = np.where(has, a_px[np.maximum(prev_idx, 0)], self._last_px[a_codes])
        prev_ts = np.where(has, a_ts[np.maximum(prev_idx, 0)], self._last_ts[a_codes])
        known = prev_ts != _NONE
        with np.errstate(divide="ignore", invalid="ignore"):
            jump = (
                known
                & (np.abs(a_px / prev_px - 1) > cfg.jump_pct)
                & (a_ts - prev_ts <= int(cfg.jump_window_s * 1e9))
            )
        flags = np.where(jump, FLAG_PRICE_JUMP, 0).astype(np.uint8)
        flags |= np.where(reordered[acc], FLAG_REORDERED, 0).astype(np.uint8)
        if size is not None and len(acc):
            flags |= np.where(self._volume_spikes(a_codes, size[acc]), FLAG_VOLUME_SPIKE, 0).astype(
                np.uint8
            )
        gaps = self._gaps(f["symbol"], acc, a_ts, prev_ts, known)

        # Carry state, remember hashes, count.
        if len(acc):
            np.maximum.at(self._last_ts, a_codes, a_ts)
            last = len(a_codes) - 1 - np.unique(a_codes[::-1], return_index=True)[1]
            self._last_px[a_codes[last]] = a_px[last]
        rej = np.flatnonzero(reason != 0)
        reasons = _REASON_NAMES[reason[rej]]
        if len(rej):
            self.rejected.update(Counter(reasons.tolist()))
        for bit, name in FLAG_NAMES.items():
            hits = int(np.count_nonzero(flags & bit))
            if hits:
                self.flagged[name] += hits
        self.accepted += len(acc)
        self.gaps += len(gaps)
        flag_col = pl.Series("flags", flags)  # numpy uint8: no conversion
        if len(acc) == n and (n < 2 or bool(np.all(acc[1:] > acc[:-1]))):
            kept = f  # the common case: every row accepted, in order (no gather)
        elif not reordered[acc].any():
            mask = np.zeros(n, bool)
            mask[acc] = True
            kept = f.filter(pl.Series(mask))
        else:
            kept = f[acc]
        accepted = kept.hstack([flag_col])
        if len(rej):
            rejected = f[rej].hstack([pl.Series("reason", reasons, dtype=pl.String)])
        else:
            rejected = f.clear().hstack([_NO_REASONS])
        return QualityResult(accepted=accepted, rejected=rejected, gaps=gaps)

    def check_history(self, frame: pl.DataFrame, now_ns: int | None = None) -> QualityResult:
        """Check events fetched after the fact (a gap's backfill): the row rules and the
        duplicate window only, shared with `check`, so an event the stream delivered (or
        delivers later) is kept once. Being older than the stream is their nature, so the
        ordering rule, the flags and the gap rule do not apply, and the carried per-symbol
        state (newest time, last price, sizes) is left as the stream set it.

        Accepted rows come sorted by symbol and time, with ``flags`` 0.
        """
        names = self.schema.names()
        f = frame if frame.columns == names else frame.select(names)
        if f.height == 0:
            return QualityResult(
                accepted=f.with_columns(pl.lit(0, pl.UInt8).alias("flags")),
                rejected=f.with_columns(pl.lit("", pl.String).alias("reason")),
            )
        f = f.sort("symbol", "timestamp", maintain_order=True)
        codes = self._codes(f["symbol"])
        ts = _timestamps(f["timestamp"])
        reason, _, _ = self._row_rules(f, ts, now_ns)
        ok = np.flatnonzero(reason == 0)
        if len(ok):
            reason[ok[~self._window.insert(self._hash(f, codes, ts)[ok])]] = _CODE["duplicate"]
        keep = reason == 0
        rej = np.flatnonzero(~keep)
        reasons = _REASON_NAMES[reason[rej]]
        if len(rej):
            self.rejected.update(Counter(reasons.tolist()))
        self.accepted += int(keep.sum())
        accepted = f.filter(pl.Series(keep)).with_columns(pl.lit(0, pl.UInt8).alias("flags"))
        rejected = f[rej].hstack([pl.Series("reason", reasons, dtype=pl.String)])
        return QualityResult(accepted=accepted, rejected=rejected)

    def newest(self) -> dict[str, int]:
        """The newest accepted event time (int ns) of every symbol `check` has accepted."""
        return {
            name: int(self._last_ts[code])
            for name, code in self._symbols.index.items()
            if code < len(self._last_ts) and self._last_ts[code] != _NONE
        }

    def newest_of(self, symbol: str) -> int | None:
        """The newest accepted event time (int ns) of `symbol`, None before its first."""
        code = self._symbols.index.get(symbol)
        if code is None or code >= len(self._last_ts) or self._last_ts[code] == _NONE:
            return None
        return int(self._last_ts[code])

    def _row_rules(
        self, f: pl.DataFrame, ts: np.ndarray, now_ns: int | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The rules on each row alone: (reason code per row, 0 if none; the price the flags
        follow; the size the volume rule follows, None for quotes)."""
        cfg = self.config
        n = f.height
        reason = np.zeros(n, np.uint8)

        def rule(code: int, failed: np.ndarray) -> None:
            reason[(reason == 0) & failed] = code

        with_nulls = [c for c in f.iter_columns() if c.null_count()]  # metadata: no scan
        if with_nulls:
            nulls = np.zeros(n, bool)
            for col in with_nulls:
                nulls |= col.is_null().to_numpy()
            rule(_CODE["null_field"], nulls)
        cols = {c: f[c].to_numpy() for c in _PRICES[self.kind]}
        with np.errstate(invalid="ignore"):
            rule(
                _CODE["non_finite_price"],
                ~np.logical_and.reduce([np.isfinite(v) for v in cols.values()]),
            )
            rule(_CODE["non_positive_price"], np.logical_or.reduce([v <= 0 for v in cols.values()]))
            if self.kind is EventType.TRADE:
                size = f["size"].to_numpy()
                rule(_CODE["bad_size"], ~np.isfinite(size) | (size <= 0))
                px = cols["price"]
            elif self.kind is EventType.BAR:
                size = f["volume"].to_numpy()
                rule(_CODE["bad_size"], ~np.isfinite(size) | (size < 0))
                rule(_CODE["high_below_low"], cols["high"] < cols["low"])
                px = cols["close"]
            else:
                bs, az = f["bid_size"].to_numpy(), f["ask_size"].to_numpy()
                rule(_CODE["bad_size"], ~np.isfinite(bs) | (bs < 0) | ~np.isfinite(az) | (az < 0))
                rule(_CODE["crossed_quote"], cols["bid"] > cols["ask"])
                size = None
                px = (cols["bid"] + cols["ask"]) / 2
        if now_ns is not None and cfg.max_future_s is not None:
            rule(_CODE["future_timestamp"], ts > now_ns + int(cfg.max_future_s * 1e9))
        if now_ns is not None and cfg.max_age_s is not None:
            rule(_CODE["stale_timestamp"], ts < now_ns - int(cfg.max_age_s * 1e9))
        return reason, px, size

    def _hash(self, f: pl.DataFrame, codes: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """A 64-bit hash of each row's identity (`_IDENTITY`), stable within the process."""
        h = _mix(codes.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15))
        h = _mix(h ^ ts.view(np.uint64))
        for col in _IDENTITY[self.kind][2:]:
            if self.schema[col] == pl.String():
                # Python's string hash (salted per process, so stable within it): a few µs
                # on a small frame where a Polars hash is a query of its own.
                strings = f[col].to_list()
                hashed = np.fromiter(
                    (hash("" if v is None else v) for v in strings), np.int64, len(strings)
                )
                h = _mix(h ^ hashed.view(np.uint64))
            else:
                values = np.ascontiguousarray(f[col].to_numpy(), dtype=np.float64)
                h = _mix(h ^ values.view(np.uint64))
        return h

    def _volume_spikes(self, a_codes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """Size more than `volume_sigmas` sample standard deviations above the mean of the
        symbol's previous `volume_window` sizes (at least `volume_min_samples` of them).

        Vectorised over symbols: each symbol present is a row of a matrix holding its last
        `volume_window` sizes (the carried history, NaN where missing) followed by this
        batch's sizes; rolling sums come from prefix sums along the rows.
        """
        cfg = self.config
        w = cfg.volume_window
        order = _group_order(a_codes)
        sorted_codes = a_codes[order]
        new_group = np.empty(len(sorted_codes), bool)
        new_group[:1] = True
        np.not_equal(sorted_codes[1:], sorted_codes[:-1], out=new_group[1:])
        starts = np.flatnonzero(new_group)
        groups = sorted_codes[starts]
        counts = np.empty_like(starts)
        counts[:-1] = starts[1:] - starts[:-1]
        counts[-1] = len(sorted_codes) - starts[-1]
        row_of = np.repeat(np.arange(len(groups)), counts)
        col_of = w + np.arange(len(order)) - np.repeat(starts, counts)
        m = np.full((len(groups), w + int(counts.max())), np.nan)
        m[:, :w] = self._hist[groups]
        m[row_of, col_of] = sizes[order]
        present = ~np.isnan(m)
        count = present.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            # centred (exact sums of squares) on the mean of the present values: what
            # `np.nanmean` computes (a sum with NaN as 0, over the count), without its overhead
            centre = np.where(present, m, 0.0).sum(axis=1, keepdims=True) / count
        x = np.where(present, m - centre, 0.0)
        width = m.shape[1] + 1
        c1 = np.zeros((len(groups), width))
        c2 = np.zeros((len(groups), width))
        cn = np.zeros((len(groups), width))
        np.cumsum(x, axis=1, out=c1[:, 1:])
        np.cumsum(x * x, axis=1, out=c2[:, 1:])
        np.cumsum(present, axis=1, out=cn[:, 1:])
        lo, hi = col_of - w, col_of  # the window is the `w` columns before the event
        n = cn[row_of, hi] - cn[row_of, lo]
        s1 = c1[row_of, hi] - c1[row_of, lo]
        s2 = c2[row_of, hi] - c2[row_of, lo]
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = s1 / n
            std = np.sqrt(np.maximum((s2 - n * mean * mean) / (n - 1), 0.0))
            value = x[row_of, col_of]
            spike = (
                (n >= cfg.volume_min_samples) & (std > 0) & (value > mean + cfg.volume_sigmas * std)
            )
        # carry each symbol's last `w` sizes
        ends = w + counts
        cols = ends[:, None] - w + np.arange(w)[None, :]
        self._hist[groups] = m[np.arange(len(groups))[:, None], cols]
        out = np.zeros(len(a_codes), bool)
        out[order] = spike
        return out

    def _gaps(
        self,
        symbols: pl.Series,
        acc: np.ndarray,
        a_ts: np.ndarray,
        prev_ts: np.ndarray,
        known: np.ndarray,
    ) -> list[Gap]:
        if not len(acc):
            return []
        limit = int(self.config.gap_s * 1e9)
        delta = a_ts - prev_ts
        if self.kind is EventType.BAR:
            # Bars arrive once per interval: a gap is `gap_s` beyond the symbol's bar interval.
            if self._bar_interval_ns is None:
                spacing = delta[known & (delta > 0)]
                if not len(spacing):
                    return []
                self._bar_interval_ns = int(np.median(spacing))
            limit += self._bar_interval_ns
        idx = np.flatnonzero(known & (delta > limit))
        gaps = [Gap(str(symbols[int(acc[i])]), int(prev_ts[i]), int(a_ts[i])) for i in idx]
        if self.equity:
            gaps = [g for g in gaps if _in_one_session(g.start_ns, g.end_ns)]
        return gaps


def _timestamps(stamps: pl.Series) -> np.ndarray:
    """The timestamps as int64 ns UTC (nulls as 0); plain Series calls, no query."""
    if stamps.dtype != TIMESTAMP:
        stamps = stamps.cast(TIMESTAMP)
    ints = stamps.cast(pl.Int64)
    if ints.null_count():
        ints = ints.fill_null(0)
    out: np.ndarray = ints.to_numpy()
    return out


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over the output (wrapping uint64)."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    out: np.ndarray = h ^ (h >> np.uint64(31))
    return out


def _group_order(codes: np.ndarray) -> np.ndarray:
    """A stable order grouping equal codes (a radix sort when the codes fit 16 bits)."""
    if len(codes) and int(codes.max()) < 32_768:
        return np.argsort(codes.astype(np.int16), kind="stable")
    return np.argsort(codes, kind="stable")


def _grouped_prev_max(codes: np.ndarray, values: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """For each row, the maximum of the earlier rows of its group (`_NONE` for the first);
    `prev` is `_grouped_prev_index(codes)`."""
    m = len(values)
    has = prev >= 0
    before = np.where(has, values[np.maximum(prev, 0)], _NONE)
    if not (has & (values < before)).any():
        return before  # each group is already in order: the running max is the previous value
    order = _group_order(codes)
    sorted_codes = codes[order]
    rank_order = np.argsort(values, kind="stable")
    rank = np.empty(m, np.int64)
    rank[rank_order] = np.arange(m)
    # groups occupy disjoint, increasing ranges, so one running maximum never crosses groups
    group = np.cumsum(np.r_[0, sorted_codes[1:] != sorted_codes[:-1]])
    key = group * m + rank[order]
    running = np.maximum.accumulate(key)
    prev_key = np.r_[-1, running[:-1]]
    first = np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]
    out_sorted = np.where(first, _NONE, values[rank_order[np.maximum(prev_key, 0) % m]])
    out = np.empty(m, np.int64)
    out[order] = out_sorted
    return out


def _grouped_prev_index(codes: np.ndarray) -> np.ndarray:
    """For each row, the index of the previous row of its group (-1 for the first)."""
    m = len(codes)
    order = _group_order(codes)
    sorted_codes = codes[order]
    first = np.empty(m, bool)
    first[:1] = True
    np.not_equal(sorted_codes[1:], sorted_codes[:-1], out=first[1:])
    before = np.empty(m, np.int64)
    before[:1] = -1
    before[1:] = order[:-1]
    prev_sorted = np.where(first, -1, before)
    out = np.empty(m, np.int64)
    out[order] = prev_sorted
    return out


def _in_one_session(start_ns: int, end_ns: int) -> bool:
    """Both ends inside the same regular New York session (09:30-16:00, weekdays)."""
    a = dt.datetime.fromtimestamp(start_ns / 1e9, tz=_NY)
    b = dt.datetime.fromtimestamp(end_ns / 1e9, tz=_NY)

    def open_(t: dt.datetime) -> bool:
        minutes = t.hour * 60 + t.minute
        return t.weekday() < 5 and 9 * 60 + 30 <= minutes < 16 * 60

    return a.date() == b.date() and open_(a) and open_(b)
