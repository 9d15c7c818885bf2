"""The five data-quality rules of DESIGN §6 on the real recorded data, each against a plain
per-event Python loop, with the data fed in 1,000-row batches like the engine does."""

from __future__ import annotations

import itertools
import math
import statistics
from pathlib import Path

import polars as pl
import pytest

from quantlab.core.enums import EventType
from quantlab.ingest.quality import (
    FLAG_PRICE_JUMP,
    FLAG_VOLUME_SPIKE,
    QualityChecker,
    QualityConfig,
)

CFG = QualityConfig(max_future_s=None, max_age_s=None)


def trades(data_dir: Path) -> pl.DataFrame:
    raw = pl.read_parquet(data_dir / "binance_xrpeth_trades_2019-10.parquet")
    return raw.select(
        "symbol",
        pl.col("timestamp").cast(pl.Datetime("ns", "UTC")),
        "price",
        pl.col("quantity").alias("size"),
        pl.lit(0, pl.UInt8).alias("aggressor"),
        pl.col("trade_id").cast(pl.String),
    )


def run(checker: QualityChecker, frame: pl.DataFrame, size: int = 1000):
    accepted, rejected, gaps = [], [], []
    for chunk in frame.iter_slices(size):
        r = checker.check(chunk)
        accepted.append(r.accepted)
        rejected.append(r.rejected)
        gaps += r.gaps
    return pl.concat(accepted), pl.concat(rejected, how="diagonal_relaxed"), gaps


def test_gaps_on_real_trades_equal_a_loop(data_dir: Path) -> None:
    frame = trades(data_dir)
    _, _, gaps = run(QualityChecker(EventType.TRADE, CFG), frame)
    ts = frame["timestamp"].cast(pl.Int64).to_list()
    expected = [(a, b) for a, b in itertools.pairwise(ts) if b - a > 5_000_000_000]
    assert len(expected) > 1000  # the recording really has gaps
    assert [(g.start_ns, g.end_ns) for g in gaps] == expected


def test_volume_spikes_on_real_trades_equal_a_loop(data_dir: Path) -> None:
    frame = trades(data_dir)
    accepted, _, _ = run(QualityChecker(EventType.TRADE, CFG), frame)
    sizes = frame["size"].to_list()
    expected = []
    for i, size in enumerate(sizes):
        window = sizes[max(0, i - 100) : i]
        if len(window) >= 20:
            mean, std = statistics.fmean(window), statistics.stdev(window)
            expected.append(std > 0 and size > mean + 3 * std)
        else:
            expected.append(False)
    got = ((accepted["flags"] & FLAG_VOLUME_SPIKE) > 0).to_list()
    assert sum(expected) > 100  # real spikes
    assert got == expected


def test_price_jumps_on_real_trades_equal_a_loop(data_dir: Path) -> None:
    # Real XRP/ETH trades never move 10 % within a second; a 0.5 % threshold exercises the
    # same rule on real moves.
    cfg = QualityConfig(max_future_s=None, jump_pct=0.005)
    frame = trades(data_dir)
    accepted, _, _ = run(QualityChecker(EventType.TRADE, cfg), frame)
    px, ts = frame["price"].to_list(), frame["timestamp"].cast(pl.Int64).to_list()
    expected = [False] + [
        abs(px[i] / px[i - 1] - 1) > 0.005 and ts[i] - ts[i - 1] <= 1_000_000_000
        for i in range(1, len(px))
    ]
    got = ((accepted["flags"] & FLAG_PRICE_JUMP) > 0).to_list()
    assert sum(expected) > 0
    assert got == expected
    untouched = run(QualityChecker(EventType.TRADE, CFG), frame)[0]
    assert int(((untouched["flags"] & FLAG_PRICE_JUMP) > 0).sum()) == 0


def test_out_of_order_and_reordering(data_dir: Path) -> None:
    frame = trades(data_dir).slice(0, 3000)
    swapped = pl.concat([frame.slice(0, 1000), frame.slice(1500, 10), frame.slice(1000, 500)])
    _, rejected, _ = run(QualityChecker(EventType.TRADE, CFG), swapped, size=100_000)
    ts = swapped["timestamp"].cast(pl.Int64).to_list()
    running, expected = -1, 0
    for t in ts:
        if t < running:
            expected += 1
        running = max(running, t)
    assert expected > 0
    assert (rejected["reason"] == "out_of_order").sum() == expected
    tolerant = QualityConfig(max_future_s=None, reorder_tolerance_ms=10_000_000.0)
    accepted, rejected, _ = run(QualityChecker(EventType.TRADE, tolerant), swapped, size=100_000)
    assert rejected.height == 0
    assert accepted["timestamp"].is_sorted()


def test_duplicates_dropped_within_and_across_batches(data_dir: Path) -> None:
    frame = trades(data_dir)
    checker = QualityChecker(EventType.TRADE, CFG)
    first, _, _ = run(checker, frame)
    again, rejected, _ = run(checker, pl.concat([frame.slice(0, 500), frame.slice(0, 500)]))
    assert first.height == frame.height
    assert again.height == 0
    assert (rejected["reason"] == "duplicate").sum() == 1000


def test_crossed_quotes_in_real_fx_data(data_dir: Path) -> None:
    raw = pl.read_parquet(data_dir / "fxcm_gbpusd_1m_quotes_2012-02.parquet")
    quotes = raw.select(
        "symbol",
        pl.col("timestamp").cast(pl.Datetime("ns", "UTC")),
        "bid",
        "ask",
        pl.lit(0.0).alias("bid_size"),
        pl.lit(0.0).alias("ask_size"),
    )
    accepted, rejected, _ = run(QualityChecker(EventType.QUOTE, CFG), quotes)
    crossed = sum(b > a for b, a in zip(raw["bid"], raw["ask"], strict=True))
    assert crossed > 0  # real quotes with bid above ask
    assert (rejected["reason"] == "crossed_quote").sum() == crossed
    assert accepted.height + rejected.height == quotes.height


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("price", math.nan, "non_finite_price"),
        ("price", math.inf, "non_finite_price"),
        ("price", 0.0, "non_positive_price"),
        ("price", -1.0, "non_positive_price"),
        ("size", 0.0, "bad_size"),
        ("size", math.nan, "bad_size"),
        ("price", None, "null_field"),
    ],
)
def test_row_rules_name_the_reason(
    data_dir: Path, column: str, value: float | None, reason: str
) -> None:
    frame = trades(data_dir).slice(0, 50)
    bad = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 10).then(value).otherwise(pl.col(column)).alias(column)
    )
    accepted, rejected, _ = run(QualityChecker(EventType.TRADE, CFG), bad)
    assert rejected["reason"].to_list() == [reason]
    assert accepted.height == 49


def test_future_and_stale_timestamps(data_dir: Path) -> None:
    frame = trades(data_dir).slice(0, 10)
    now = int(frame["timestamp"].cast(pl.Int64)[5])
    cfg = QualityConfig(max_future_s=1.0, max_age_s=3.0)
    result = QualityChecker(EventType.TRADE, cfg).check(frame, now)
    ts = frame["timestamp"].cast(pl.Int64).to_list()
    future = sum(t > now + 1_000_000_000 for t in ts)
    stale = sum(t < now - 3_000_000_000 for t in ts)
    reasons = result.rejected["reason"].to_list()
    assert reasons.count("future_timestamp") == future
    assert reasons.count("stale_timestamp") == stale
    assert future + stale > 0


def test_equity_gaps_only_in_market_hours() -> None:
    ts = (
        pl.Series(
            [
                "2024-01-05T14:30:00Z",  # 09:30 New York: open
                "2024-01-05T14:30:10Z",  # 10 s later: a gap in session
                "2024-01-05T21:30:00Z",  # 16:30 New York: after the close
                "2024-01-08T14:31:00Z",  # Monday morning: not a gap (the market was shut)
            ]
        )
        .str.to_datetime(time_zone="UTC")
        .cast(pl.Datetime("ns", "UTC"))
    )
    frame = pl.DataFrame(
        {
            "symbol": ["AAPL"] * 4,
            "timestamp": ts,
            "price": [100.0, 100.1, 100.2, 100.3],
            "size": [1.0] * 4,
            "aggressor": pl.Series([0] * 4, dtype=pl.UInt8),
            "trade_id": ["1", "2", "3", "4"],
        }
    )
    equity = QualityChecker(EventType.TRADE, CFG, asset_class="equity").check(frame)
    crypto = QualityChecker(EventType.TRADE, CFG, asset_class="crypto").check(frame)
    assert [g.seconds for g in equity.gaps] == [10.0]
    assert len(crypto.gaps) == 3


def test_symbol_state_survives_a_different_symbol_order_per_batch() -> None:
    """State is per symbol whatever order symbols appear in (a regression: per-batch codes)."""

    def batch(rows: list[tuple[str, int, str]]) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "symbol": [r[0] for r in rows],
                "timestamp": pl.Series([r[1] for r in rows]).cast(pl.Datetime("ns", "UTC")),
                "price": [100.0] * len(rows),
                "size": [1.0] * len(rows),
                "aggressor": pl.Series([0] * len(rows), dtype=pl.UInt8),
                "trade_id": [r[2] for r in rows],
            }
        )

    checker = QualityChecker(EventType.TRADE, CFG)
    first = checker.check(batch([("B", 200, "b1"), ("A", 100, "a1")]))
    second = checker.check(batch([("A", 150, "a2"), ("C", 50, "c1"), ("B", 250, "b2")]))
    third = checker.check(batch([("C", 60, "c2"), ("A", 140, "a3")]))
    assert first.rejected.height == 0
    assert second.rejected.height == 0
    assert third.rejected["reason"].to_list() == ["out_of_order"]  # A at 140 after A at 150
    assert third.accepted["symbol"].to_list() == ["C"]
