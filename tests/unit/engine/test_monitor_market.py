"""The monitor's per-symbol view of market batches: small batches are read from the columns
without a Polars query; the view must be what a ``group_by`` gives (last row per symbol, the
volume summed), whatever the batch."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import polars as pl
import pytest

from quantlab.bus.base import Envelope
from quantlab.core.enums import EventType
from quantlab.core.messages import MarketBatch
from quantlab.engine.monitor import _PRICE_COLUMNS, MonitorWriter, _latest


def frame(kind: EventType, n: int, rng: np.random.Generator, symbols: int) -> pl.DataFrame:
    names = rng.choice([f"S{i}" for i in range(symbols)], n).astype(object)
    ts = 1_700_000_000_000_000_000 + np.sort(rng.integers(0, 10**9, n))
    px = rng.uniform(1, 2, n) * 10 ** rng.uniform(-3, 3, n)

    def spoil(values: np.ndarray) -> list[float | None]:
        out: list[float | None] = values.tolist()
        for i in np.flatnonzero(rng.random(n) < 0.1):
            out[i] = None if rng.random() < 0.5 else math.nan
        return out

    data: dict[str, object] = {
        "symbol": names.tolist(),
        "timestamp": pl.Series(ts).cast(pl.Datetime("ns", "UTC")),
    }
    if kind is EventType.QUOTE:
        data |= {"bid": spoil(px), "ask": spoil(px * 1.001), "bid_size": px, "ask_size": px}
    elif kind is EventType.TRADE:
        data |= {"price": spoil(px), "size": spoil(rng.lognormal(0, 2, n))}
    else:
        data |= {"close": spoil(px), "volume": spoil(rng.lognormal(0, 2, n))}
    f = pl.DataFrame(data).with_columns(pl.lit(0, pl.UInt8).alias("flags"))
    return f.cast({c: pl.Float64 for c in f.columns if f[c].dtype == pl.Null})  # all-None


def reference(f: pl.DataFrame, kind: str) -> list[tuple[object, ...]]:
    """What the monitor computed with one ``group_by`` per batch."""
    cols = _PRICE_COLUMNS[kind]
    stamps = f.get_column("timestamp").cast(pl.Datetime("ns", "UTC")).cast(pl.Int64)
    last = (
        f.with_columns(stamps.alias("__ts"))
        .group_by("symbol", maintain_order=True)
        .agg(pl.all().last(), pl.col(cols[-1]).sum().alias("__volume"))
    )
    out = []
    for row in last.iter_rows(named=True):
        if kind == "quote":
            out.append((row["symbol"], row["__ts"], row["bid"], row["ask"], None))
        else:
            out.append((row["symbol"], row["__ts"], row[cols[0]], None, row["__volume"]))
    return out


@pytest.mark.parametrize("kind", [EventType.QUOTE, EventType.TRADE, EventType.BAR])
@pytest.mark.parametrize(("n", "symbols"), [(1, 1), (2, 2), (5, 2), (20, 20), (20, 8), (300, 20)])
def test_latest_per_symbol_equals_a_group_by(kind: EventType, n: int, symbols: int) -> None:
    rng = np.random.default_rng(n * 100 + symbols)
    for _ in range(30):
        f = frame(kind, n, rng, symbols)
        got = _latest(f, kind.topic_name, _PRICE_COLUMNS[kind.topic_name])
        assert repr(got) == repr(reference(f, kind.topic_name))  # repr: NaN equals NaN


def test_a_stream_of_mixed_batches_gives_the_group_by_view() -> None:
    rng = np.random.default_rng(7)
    writer = MonitorWriter("unused.json", every_s=1.0, collect=dict)
    expected: dict[object, list[tuple[object, ...]]] = {}
    for seq in range(300):
        kind = [EventType.QUOTE, EventType.TRADE, EventType.BAR][int(rng.integers(3))]
        f = frame(kind, int(rng.choice([1, 2, 3, 20, 200])), rng, 5)
        batch = MarketBatch(kind=kind, frame=f, seq=seq, ts_min=0, ts_max=0)
        env = Envelope(id=str(seq), topic="t", payload=batch, ts_publish=0)
        asyncio.run(writer._on_market(env))
        for row in reference(f, kind.topic_name):
            expected.setdefault(row[0], []).append(row)
    assert set(writer.symbols) == set(expected)
    for name, sym in writer.symbols.items():
        assert sym.history, name
        assert [p[0] for p in sym.history] == sorted(p[0] for p in sym.history)
