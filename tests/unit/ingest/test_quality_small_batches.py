"""Small batches (the live engine flushes every few ms: 1-20 rows) take per-row paths for
symbol codes; the results must not depend on how the stream is cut into batches."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quantlab.core.enums import EventType
from quantlab.core.schemas import SCHEMAS
from quantlab.ingest.quality import QualityChecker, QualityConfig

CFG = QualityConfig(max_future_s=None, max_age_s=None)


def cut(frame: pl.DataFrame, sizes: list[int]) -> list[pl.DataFrame]:
    out, start = [], 0
    for size in itertools.cycle(sizes):
        if start >= frame.height:
            return out
        out.append(frame.slice(start, size))
        start += size
    raise AssertionError  # pragma: no cover


def run(kind: EventType, chunks: list[pl.DataFrame], cfg: QualityConfig = CFG):
    checker = QualityChecker(kind, cfg)
    results = [checker.check(c) for c in chunks]
    accepted = pl.concat([r.accepted for r in results])
    rejected = pl.concat([r.rejected for r in results])
    gaps = [(g.symbol, g.start_ns, g.end_ns) for r in results for g in r.gaps]
    return accepted, rejected, gaps, checker


def synthetic(kind: EventType, n: int, seed: int) -> pl.DataFrame:
    """Rows of several symbols with every kind of bad row: nulls, NaN, zero and negative
    prices, bad sizes, crossed quotes, repeats, out-of-order times, jumps and gaps."""
    rng = np.random.default_rng(seed)
    symbols = rng.choice(["A", "B", "C", "D", "E"], n).astype(object)
    symbols[rng.random(n) < 0.01] = None
    ts = np.cumsum(
        rng.choice([1, 1_000_000, 500_000_000, 7_000_000_000], n, p=[0.2, 0.6, 0.15, 0.05])
    )
    ts = ts - rng.choice([0, 2_000_000_000], n, p=[0.95, 0.05])  # late rows
    px = 100 * np.exp(np.cumsum(rng.normal(0, 0.03, n)))
    size = rng.lognormal(0, 1, n) * np.where(rng.random(n) < 0.03, 30, 1)

    def spoil(values: np.ndarray, bad: list[float]) -> list[float | None]:
        out: list[float | None] = values.tolist()
        for i in np.flatnonzero(rng.random(n) < 0.02):
            out[i] = rng.choice(np.array(bad, dtype=object))
        return out

    data: dict[str, object] = {"symbol": symbols.tolist(), "timestamp": ts}
    if kind is EventType.TRADE:
        data |= {
            "price": spoil(px, [np.nan, np.inf, 0.0, -1.0, None]),
            "size": spoil(size, [0.0, -1.0, np.nan, None]),
            "aggressor": np.zeros(n, np.uint8),
            "trade_id": [None if i % 97 == 0 else str(i % 400) for i in range(n)],
        }
    elif kind is EventType.QUOTE:
        spread = np.where(rng.random(n) < 0.03, -0.05, 0.05)
        data |= {
            "bid": spoil(px, [np.nan, 0.0, None]),
            "ask": (px + spread).tolist(),
            "bid_size": spoil(size, [-1.0, np.nan, None]),
            "ask_size": size.tolist(),
        }
    else:
        data |= {
            "open": px.tolist(),
            "high": spoil(px + 0.1, [np.nan, 0.0]),
            "low": spoil(px - 0.1, [1e9, None]),
            "close": spoil(px, [-1.0]),
            "volume": spoil(size, [-1.0, np.nan]),
        }
    frame = pl.DataFrame(data).with_columns(pl.col("timestamp").cast(pl.Datetime("ns", "UTC")))
    frame = frame.cast(dict(SCHEMAS[kind]))  # type: ignore[arg-type]
    repeats = frame.sample(n // 20, seed=seed)  # exact repeats, later in the stream
    return pl.concat([frame, repeats])


@pytest.mark.parametrize("kind", [EventType.TRADE, EventType.QUOTE, EventType.BAR])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_any_cut_into_batches_gives_the_same_outcome(kind: EventType, seed: int) -> None:
    frame = synthetic(kind, 3000, seed)
    whole = run(kind, [frame])
    for sizes in ([1], [3, 17, 1, 8], [2, 150, 5, 63, 64, 1]):  # both sides of the per-row cut
        accepted, rejected, gaps, checker = run(kind, cut(frame, sizes))
        assert rejected.height > 0
        assert rejected.equals(whole[1])
        assert accepted.equals(whole[0])
        if kind is not EventType.BAR:  # a bar checker learns the interval from its first batch
            assert gaps == whole[2]
        assert checker.rejected == whole[3].rejected
        assert checker.flagged == whole[3].flagged
        assert checker._symbols.names() == whole[3]._symbols.names()


def test_real_trades_in_live_sized_batches_equal_engine_sized_ones(data_dir: Path) -> None:
    raw = pl.read_parquet(data_dir / "binance_xrpeth_trades_2019-10.parquet").slice(0, 20_000)
    frame = raw.select(
        "symbol",
        pl.col("timestamp").cast(pl.Datetime("ns", "UTC")),
        "price",
        pl.col("quantity").alias("size"),
        pl.lit(0, pl.UInt8).alias("aggressor"),
        pl.col("trade_id").cast(pl.String),
    )
    frame = pl.concat([frame, frame.slice(100, 300)])  # duplicates
    cfg = QualityConfig(max_future_s=None, jump_pct=0.005)
    big = run(EventType.TRADE, cut(frame, [1000]), cfg)
    small = run(EventType.TRADE, cut(frame, [1, 7, 20, 3]), cfg)
    assert (big[1]["reason"] == "duplicate").sum() == 300
    assert small[0].equals(big[0])
    assert small[1].equals(big[1])
    assert small[2] == big[2]
    assert small[3].flagged == big[3].flagged
