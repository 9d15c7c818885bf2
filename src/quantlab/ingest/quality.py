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

Every rule is a Polars expression over the whole frame; the only per-row Python work is the
duplicate window's hash-set lookup.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Final
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from quantlab.core.enums import EventType
from quantlab.core.errors import ConfigError
from quantlab.core.schemas import SCHEMAS, TIMESTAMP

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
_REF_PRICE = {
    EventType.BAR: pl.col("close"),
    EventType.TRADE: pl.col("price"),
    EventType.QUOTE: (pl.col("bid") + pl.col("ask")) / 2,
}
_VOLUME = {EventType.BAR: "volume", EventType.TRADE: "size", EventType.QUOTE: None}
# What makes two events the same event (the duplicate hash).
_IDENTITY = {
    EventType.BAR: ("symbol", "timestamp"),
    EventType.TRADE: ("symbol", "timestamp", "price", "size", "trade_id"),
    EventType.QUOTE: ("symbol", "timestamp", "bid", "ask", "bid_size", "ask_size"),
}
_NY = ZoneInfo("America/New_York")


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
    """The hashes of the last `size` accepted events, oldest evicted first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._seen: set[int] = set()
        self._chunks: deque[np.ndarray] = deque()
        self._count = 0

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        seen = self._seen
        return np.fromiter((h in seen for h in hashes.tolist()), dtype=bool, count=len(hashes))

    def add(self, hashes: np.ndarray) -> None:
        if not len(hashes):
            return
        self._seen.update(hashes.tolist())
        self._chunks.append(hashes)
        self._count += len(hashes)
        while self._count > self.size and self._chunks:
            old = self._chunks.popleft()
            self._count -= len(old)
            self._seen.difference_update(old.tolist())

    def __len__(self) -> int:
        return len(self._seen)


def _market_open(ts: pl.Expr) -> pl.Expr:
    local = ts.dt.convert_time_zone("America/New_York")
    minutes = local.dt.hour().cast(pl.Int32) * 60 + local.dt.minute().cast(pl.Int32)
    return (local.dt.weekday() <= 5) & (minutes >= 9 * 60 + 30) & (minutes < 16 * 60)


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
        self._last = pl.DataFrame(
            schema={"symbol": pl.String, "__last_ts": pl.Int64, "__last_px": pl.Float64}
        )
        self._sizes = pl.DataFrame(schema={"symbol": pl.String, "__size": pl.Float64})
        self._bar_interval_ns: int | None = None
        self.rejected: Counter[str] = Counter()
        self.flagged: Counter[str] = Counter()
        self.accepted = 0
        self.gaps = 0

    # -- rules ---------------------------------------------------------------------------
    def _row_rules(self, now_ns: int | None) -> list[tuple[str, pl.Expr]]:
        prices = [pl.col(c) for c in _PRICES[self.kind]]
        rules: list[tuple[str, pl.Expr]] = [
            ("null_field", pl.any_horizontal([pl.col(c).is_null() for c in self.schema.names()])),
            ("non_finite_price", pl.any_horizontal([~p.is_finite() for p in prices])),
            ("non_positive_price", pl.any_horizontal([p <= 0 for p in prices])),
        ]
        if self.kind is EventType.TRADE:
            size = pl.col("size")
            rules.append(("bad_size", ~size.is_finite() | (size <= 0)))
        elif self.kind is EventType.BAR:
            vol = pl.col("volume")
            rules.append(("bad_size", ~vol.is_finite() | (vol < 0)))
            rules.append(("high_below_low", pl.col("high") < pl.col("low")))
        else:
            sizes = [pl.col("bid_size"), pl.col("ask_size")]
            rules.append(("bad_size", pl.any_horizontal([~s.is_finite() | (s < 0) for s in sizes])))
            rules.append(("crossed_quote", pl.col("bid") > pl.col("ask")))
        ts = pl.col("__ts")
        if now_ns is not None and self.config.max_future_s is not None:
            limit = now_ns + int(self.config.max_future_s * 1e9)
            rules.append(("future_timestamp", ts > limit))
        if now_ns is not None and self.config.max_age_s is not None:
            limit = now_ns - int(self.config.max_age_s * 1e9)
            rules.append(("stale_timestamp", ts < limit))
        return rules

    def check(self, frame: pl.DataFrame, now_ns: int | None = None) -> QualityResult:
        """Split `frame` into accepted (flagged) and rejected rows; report gaps."""
        cfg = self.config
        f = (
            frame.select(self.schema.names())
            .with_columns(
                pl.col("timestamp").cast(TIMESTAMP).cast(pl.Int64).alias("__ts"),
            )
            .with_row_index("__row")
        )
        reason: pl.Expr = pl.lit(None, pl.String)
        for name, failed in reversed(self._row_rules(now_ns)):
            reason = pl.when(failed.fill_null(True)).then(pl.lit(name)).otherwise(reason)
        f = f.with_columns(reason.alias("reason"))

        # Duplicates: against the window of accepted events and earlier rows of this frame.
        hashes = f.select(pl.struct(list(_IDENTITY[self.kind])).hash(seed=7).alias("h"))["h"]
        f = f.with_columns(hashes.alias("__h"))
        ok = f["reason"].is_null().to_numpy()
        h = f["__h"].to_numpy()
        dup = np.zeros(f.height, dtype=bool)
        if ok.any():
            idx = np.flatnonzero(ok)
            seen = self._window.contains(h[idx])
            _, first = np.unique(h[idx], return_index=True)
            repeat = np.ones(len(idx), dtype=bool)
            repeat[first] = False
            dup[idx[seen | repeat]] = True
        f = f.with_columns(
            pl.when(pl.Series(dup))
            .then(pl.lit("duplicate"))
            .otherwise(pl.col("reason"))
            .alias("reason")
        )

        # Ordering per symbol against the running maximum (carried across frames).
        tol = int(cfg.reorder_tolerance_ms * 1e6)
        strict = self.kind is EventType.BAR
        good = f.filter(pl.col("reason").is_null()).join(self._last, on="symbol", how="left")
        prev_max = pl.col("__ts").cum_max().shift(1).over("symbol", order_by="__row")
        good = good.with_columns(
            pl.max_horizontal(prev_max, pl.col("__last_ts")).alias("__prev_max")
        )
        behind = (
            pl.col("__ts") <= pl.col("__prev_max")
            if strict
            else pl.col("__ts") < pl.col("__prev_max")
        ).fill_null(False)
        late_by = pl.col("__prev_max") - pl.col("__ts")
        good = good.with_columns(
            pl.when(behind & (late_by > tol) | (behind & pl.lit(strict) & (late_by == 0)))
            .then(pl.lit("out_of_order"))
            .otherwise(None)
            .alias("__ooo"),
            (behind & (late_by <= tol) & (late_by > 0)).alias("__reordered"),
        )
        ooo_rows = good.filter(pl.col("__ooo").is_not_null()).select("__row", "__ooo")
        if ooo_rows.height:
            f = (
                f.join(ooo_rows, on="__row", how="left")
                .with_columns(pl.coalesce("reason", "__ooo").alias("reason"))
                .drop("__ooo")
            )
        accepted = good.filter(pl.col("__ooo").is_null())
        if accepted.get_column("__reordered").any():
            accepted = accepted.sort(["__ts", "__row"])

        # Flags: price jumps and volume spikes, against the previous accepted event.
        ref = _REF_PRICE[self.kind]
        accepted = accepted.with_columns(ref.alias("__px"))
        prev_px = pl.col("__px").shift(1).over("symbol").fill_null(pl.col("__last_px"))
        prev_ts = pl.col("__ts").shift(1).over("symbol").fill_null(pl.col("__last_ts"))
        jump = (
            ((pl.col("__px") / prev_px - 1).abs() > cfg.jump_pct)
            & ((pl.col("__ts") - prev_ts) <= int(cfg.jump_window_s * 1e9))
        ).fill_null(False)
        flags = pl.when(jump).then(FLAG_PRICE_JUMP).otherwise(0).cast(pl.UInt8)
        flags = flags | pl.when(pl.col("__reordered")).then(FLAG_REORDERED).otherwise(0).cast(
            pl.UInt8
        )
        accepted = accepted.with_columns(prev_ts.alias("__prev_ts"), flags.alias("flags"))
        vol_col = _VOLUME[self.kind]
        if vol_col is not None and accepted.height:
            accepted = self._volume_flags(accepted, vol_col)

        # Gaps between consecutive events of a symbol.
        gaps = self._gaps(accepted)

        # Carry state, remember hashes, count.
        if accepted.height:
            latest = accepted.group_by("symbol").agg(
                pl.col("__ts").max().alias("__last_ts"), pl.col("__px").last().alias("__last_px")
            )
            self._last = pl.concat(
                [self._last.join(latest, on="symbol", how="anti"), latest], how="vertical"
            )
            self._window.add(accepted["__h"].to_numpy())
        rejected = f.filter(pl.col("reason").is_not_null())
        if rejected.height:
            self.rejected.update(dict(rejected["reason"].value_counts().iter_rows()))
        for bit, name in FLAG_NAMES.items():
            n = int((accepted["flags"] & bit).cast(pl.Boolean).sum()) if accepted.height else 0
            if n:
                self.flagged[name] += n
        self.accepted += accepted.height
        self.gaps += len(gaps)
        out_cols = [*self.schema.names(), "flags"]
        return QualityResult(
            accepted=accepted.select(out_cols),
            rejected=rejected.drop("__row", "__ts", "__h"),
            gaps=gaps,
        )

    def _volume_flags(self, accepted: pl.DataFrame, vol_col: str) -> pl.DataFrame:
        cfg = self.config
        hist = self._sizes.with_columns(
            pl.lit(-1, pl.Int64).alias("__ord"), pl.lit(True).alias("__hist")
        )
        cur = accepted.select(
            "symbol", pl.col(vol_col).alias("__size"), pl.int_range(pl.len()).alias("__ord")
        ).with_columns(pl.lit(False).alias("__hist"))
        both = pl.concat([hist, cur], how="vertical")
        prior = pl.col("__size").shift(1)
        stats = both.with_columns(
            prior.rolling_mean(cfg.volume_window, min_samples=cfg.volume_min_samples)
            .over("symbol")
            .alias("__mean"),
            prior.rolling_std(cfg.volume_window, min_samples=cfg.volume_min_samples)
            .over("symbol")
            .alias("__std"),
        )
        spike = (
            stats.filter(~pl.col("__hist"))
            .sort("__ord")
            .select(
                (
                    (pl.col("__size") > pl.col("__mean") + cfg.volume_sigmas * pl.col("__std"))
                    & (pl.col("__std") > 0)
                ).fill_null(False)
            )
            .to_series()
        )
        self._sizes = (
            both.select("symbol", "__size")
            .group_by("symbol", maintain_order=True)
            .tail(cfg.volume_window)
        )
        return accepted.with_columns(
            (
                pl.col("flags") | pl.when(spike).then(FLAG_VOLUME_SPIKE).otherwise(0).cast(pl.UInt8)
            ).alias("flags")
        )

    def _gaps(self, accepted: pl.DataFrame) -> list[Gap]:
        if not accepted.height:
            return []
        limit = int(self.config.gap_s * 1e9)
        if self.kind is EventType.BAR:
            # Bars arrive once per interval: a gap is `gap_s` beyond the symbol's bar interval.
            if self._bar_interval_ns is None:
                spacing = (pl.col("__ts") - pl.col("__prev_ts")).filter(
                    pl.col("__ts") > pl.col("__prev_ts")
                )
                found = accepted.select(spacing.median()).item()
                if found is None:
                    return []
                self._bar_interval_ns = int(found)
            limit += self._bar_interval_ns
        cand = accepted.filter((pl.col("__ts") - pl.col("__prev_ts")) > limit)
        if self.equity and cand.height:
            start = pl.col("__prev_ts").cast(TIMESTAMP)
            end = pl.col("__ts").cast(TIMESTAMP)
            same_day = (
                start.dt.convert_time_zone("America/New_York").dt.date()
                == end.dt.convert_time_zone("America/New_York").dt.date()
            )
            cand = cand.filter(_market_open(start) & _market_open(end) & same_day)
        return [
            Gap(s, int(a), int(b)) for s, a, b in cand.select("symbol", "__prev_ts", "__ts").rows()
        ]


def describe_flags(flags: int) -> list[str]:
    return [name for bit, name in FLAG_NAMES.items() if flags & bit]


def now_ns_of(value: dt.datetime) -> int:  # pragma: no cover - convenience for notebooks
    return int(value.timestamp() * 1e9)
