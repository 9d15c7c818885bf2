"""Sketch error within DataSketches' stated bounds against exact counts on real trades."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from quantlab.core.errors import DataError
from quantlab.signals.sketches import DistinctCount, VolumeSketch


def trades(data_dir: Path) -> pl.DataFrame:
    xrp = pl.read_parquet(data_dir / "binance_xrpeth_trades_2019-10.parquet")
    btc = pl.read_parquet(data_dir / "binance_btcusdt_trades_2021-01-08.parquet")
    cols = [pl.col("symbol"), pl.col("price"), pl.col("quantity").alias("size"),
            pl.col("trade_id").cast(pl.String)]  # fmt: skip
    return pl.concat([xrp.select(cols), btc.select(cols)])


@pytest.mark.parametrize(("by", "step"), [("symbol", None), ("price_level", 1e-6)])
def test_count_min_never_under_and_within_the_error_bound(
    data_dir: Path, by: str, step: float | None
) -> None:
    frame = trades(data_dir)
    sketch = VolumeSketch(by, price_step=step, relative_error=0.001)
    for chunk in frame.iter_slices(1000):
        sketch.update(chunk)
    exact = frame.group_by(sketch.key_expr().alias("key")).agg(pl.col("size").sum())
    total = float(frame["size"].sum())
    assert sketch.total == pytest.approx(total)
    worst = 0.0
    for key, true in exact.iter_rows():
        est, _low, high = sketch.estimate(key)
        assert est >= true - 1e-9  # Count-Min never underestimates positive weights
        assert true <= high + 1e-9
        worst = max(worst, (est - true) / total)
    assert worst <= 0.001  # the stated error, relative to the stream's total volume
    assert exact.height >= (2 if by == "symbol" else 100)


def test_heavy_hitters_are_the_biggest_keys(data_dir: Path) -> None:
    frame = trades(data_dir)
    sketch = VolumeSketch("symbol", weight_unit=1e-6)
    sketch.update(frame)
    top = [key for key, _ in sketch.heavy_hitters(2)]
    by_volume = frame.group_by("symbol").agg(pl.col("size").sum()).sort("size", descending=True)
    assert top == by_volume["symbol"].to_list()


def test_hyperloglog_within_its_bounds_on_distinct_trade_ids(data_dir: Path) -> None:
    frame = trades(data_dir)
    distinct = DistinctCount(lg_k=12)
    for chunk in frame.iter_slices(777):
        distinct.update(chunk["trade_id"])
    distinct.update(frame["trade_id"].head(5000))  # repeats change nothing
    exact = frame["trade_id"].n_unique()
    low, high = distinct.bounds(3)
    assert low <= exact <= high
    assert abs(distinct.estimate() - exact) / exact < 0.05


def test_memory_is_constant_as_the_stream_grows(data_dir: Path) -> None:
    frame = trades(data_dir)
    volume, distinct = VolumeSketch("symbol"), DistinctCount(10)
    volume.update(frame.head(100))
    distinct.update(frame["trade_id"].head(100))
    sizes = (volume.size_bytes(), distinct.size_bytes())
    for i in range(20):  # 20 times the tape, with fresh ids
        chunk = frame.with_columns(pl.col("trade_id") + f"-{i}")
        volume.update(chunk)
        distinct.update(chunk["trade_id"])
    assert volume.size_bytes() <= sizes[0] + 64
    assert distinct.size_bytes() <= 2**10 + 64  # HLL's fixed register array


def test_bad_arguments() -> None:
    with pytest.raises(DataError, match="price_step"):
        VolumeSketch("price_level")
    with pytest.raises(DataError, match="lg_k"):
        DistinctCount(30)


async def test_sketch_engine_publishes_metrics_and_annotates_features(data_dir: Path) -> None:
    import asyncio

    from quantlab.bus import InProcessBus, topics
    from quantlab.bus.base import Envelope
    from quantlab.core.clock import SimulatedClock
    from quantlab.core.enums import EventType
    from quantlab.core.messages import MarketBatch
    from quantlab.features import FeatureStore
    from quantlab.signals.sketches import SketchEngine

    frame = trades(data_dir)
    clock = SimulatedClock(0)
    store = FeatureStore(clock)
    store.put(
        pl.DataFrame({"symbol": ["XRP/ETH"], "timestamp": [0], "rsi_14": [50.0]}).cast(
            {"timestamp": pl.Datetime("ns", "UTC")}
        )
    )
    engine = SketchEngine(store, every=3)
    bus = InProcessBus()
    metrics: list[dict[str, object]] = []

    async def collect(envelope: Envelope) -> None:
        metrics.append(envelope.payload)

    bus.consume(topics.system("metric"), collect, name="test")
    await engine.start(bus)
    sizes = []
    for i, chunk in enumerate(frame.iter_slices(1000)):
        batch = MarketBatch(kind=EventType.TRADE, frame=chunk, seq=i, ts_min=0, ts_max=0)
        await bus.publish(topics.market_data("trade"), batch)
        await asyncio.wait_for(bus.drain(), 5)
        sizes.append(engine.metrics()["bytes"])
    await engine.stop()
    await asyncio.wait_for(bus.drain(), 5)
    await bus.close()
    # bounded memory however long the stream (the heavy-hitter list fills to its cap)
    assert max(sizes) - sizes[0] < 0.01 * sizes[0]
    batches = -(-frame.height // 1000)
    assert len(metrics) == -(-batches // 3)
    last = metrics[-1]
    assert last["component"] == "sketches"
    exact_ids = frame["trade_id"].n_unique()
    low, high = last["distinct_trade_ids"]["low_2sd"], last["distinct_trade_ids"]["high_2sd"]
    assert low <= exact_ids <= high
    assert last["distinct_symbols"]["estimate"] == pytest.approx(2, abs=0.01)
    vector = store.get("XRP/ETH")
    assert vector is not None
    true = float(frame.filter(pl.col("symbol") == "XRP/ETH")["size"].sum())
    assert vector["sketch_volume"] >= true - 1e-6
    assert vector["sketch_volume"] <= true + 0.001 * float(frame["size"].sum())
    assert vector["rsi_14"] == 50.0  # the sketch values sit beside the features
