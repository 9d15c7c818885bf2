"""Small batches reach the sketches without a Polars query: the per-key volumes they add are
exactly those of a ``group_by``, and trade and bar batches feed the same sketch."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from quantlab.signals.sketches import DistinctCount, SketchEngine, VolumeSketch


def trades(n: int, symbols: int, rng: np.random.Generator) -> pl.DataFrame:
    size: list[float | None] = (rng.lognormal(0, 2, n) * 10 ** rng.uniform(-3, 3, n)).tolist()
    for i in np.flatnonzero(rng.random(n) < 0.1):
        size[i] = None
    return pl.DataFrame(
        {
            "symbol": rng.choice([f"S{i}" for i in range(symbols)], n).tolist(),
            "price": rng.uniform(1, 2, n),
            "size": pl.Series(size, dtype=pl.Float64),
            "trade_id": [str(x) for x in rng.integers(0, 50, n)],
        }
    )


@pytest.mark.parametrize(("n", "symbols"), [(1, 1), (2, 1), (3, 2), (20, 20), (20, 12), (500, 5)])
def test_batch_volumes_equal_a_group_by(n: int, symbols: int) -> None:
    rng = np.random.default_rng(n + symbols)
    sketch = VolumeSketch("symbol")
    for _ in range(50):
        f = trades(n, symbols, rng)
        got = dict(sketch._volumes(f))
        exact = dict(f.group_by("symbol").agg(pl.col("size").sum()).iter_rows())
        assert got == exact  # bit for bit


def test_distinct_values_of_strings_with_nulls() -> None:
    values = pl.Series(["a", None, "b", "a", "c", None])
    fast, slow = DistinctCount(), DistinctCount()
    fast.update(values)
    for v in ["a", "b", "c"]:
        slow._hll.update(v)
    assert fast.estimate() == slow.estimate() == pytest.approx(3, abs=0.01)
    ints = DistinctCount()
    ints.update(pl.Series([1, 2, 2, None]))
    assert ints.estimate() == pytest.approx(2, abs=0.01)


def test_bars_and_trades_feed_the_same_volume() -> None:
    rng = np.random.default_rng(3)
    f = trades(40, 4, rng)
    bars = f.select("symbol", pl.col("price").alias("close"), pl.col("size").alias("volume"))
    a, b = SketchEngine(), SketchEngine()
    for chunk in f.iter_slices(3):
        a.update(chunk)
    for chunk in bars.iter_slices(3):
        b.update(chunk)
    assert a.volume.total == b.volume.total
    assert a.features() == b.features()
    assert a.volume.events == b.volume.events == 40
    assert math.isclose(a.volume.total, float(f["size"].sum()), rel_tol=1e-12)
