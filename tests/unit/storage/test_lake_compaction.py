"""The lake's write path: part files, compaction, crash recovery, retention, inventory, and the
`LakeWriter` that feeds it from the bus (DESIGN §5)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import threading
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quantlab.adapters.sim.data import bundled_dir, read_market
from quantlab.bus import InProcessBus, topics
from quantlab.core.enums import EventType
from quantlab.core.errors import StorageError
from quantlab.core.messages import MarketBatch
from quantlab.core.schemas import TIMESTAMP
from quantlab.storage.lake import Lake
from quantlab.storage.lake_writer import LakeWriter

BARS_FILE = bundled_dir() / "binance_btc_pairs_5m_2018-01.parquet"
TRADES_FILE = bundled_dir() / "binance_btcusdt_trades_2021-01-08.parquet"
DAY1, DAY2 = dt.date(2018, 1, 10), dt.date(2018, 1, 11)


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    """Real 5-minute bars of ETH/BTC and ADA/BTC on 2018-01-10 and 2018-01-11."""
    return (
        pl.read_parquet(BARS_FILE)
        .filter(
            pl.col("symbol").is_in(["ETH/BTC", "ADA/BTC"]),
            pl.col("timestamp") < dt.datetime(2018, 1, 12, tzinfo=dt.UTC),
        )
        .sort("timestamp", "symbol")
    )


def _eth_day1(bars: pl.DataFrame) -> pl.DataFrame:
    return bars.filter(pl.col("symbol") == "ETH/BTC", pl.col("timestamp").dt.date() == DAY1)


def _part_files(root: Path) -> list[Path]:
    return sorted(root.rglob(".parts/*/part-*.parquet"))


def _absorbed_names(main: Path) -> list[str]:
    return json.loads(pl.read_parquet_metadata(main)["quantlab.parts"])


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort("symbol", "timestamp")


# -- part files -----------------------------------------------------------------------------


def test_append_writes_part_files_under_the_day_and_symbol(
    tmp_path: Path, bars: pl.DataFrame
) -> None:
    lake = Lake(tmp_path)
    written = lake.append(bars, "bar")
    assert len(written) == 4  # 2 symbols x 2 days
    for path in written:
        assert path.name.startswith("part-")
        assert path.suffix == ".parquet"
        assert path.parent.parent.name == ".parts"
        assert path.parent.name in {"ETH%2FBTC", "ADA%2FBTC"}
        assert path.parent.parent.parent.name in {"2018-01-10", "2018-01-11"}
        assert path.parent.parent.parent.parent == tmp_path / "bar"
    (eth1_part,) = lake.parts_dir("bar", DAY1, "ETH/BTC").glob("part-*.parquet")
    eth1 = pl.read_parquet(eth1_part)
    assert_frame_equal(eth1, _eth_day1(bars))
    # No main file yet; the parts are what readers see.
    assert list(tmp_path.rglob("bar/*/*.parquet")) == []
    assert sorted(lake.files("bar")) == sorted(written)
    assert_frame_equal(_sorted(lake.scan("bar").collect()), _sorted(bars))
    assert lake.append(bars.clear(), "bar") == []


def test_scan_and_files_see_the_main_file_and_unabsorbed_parts(
    tmp_path: Path, bars: pl.DataFrame
) -> None:
    lake = Lake(tmp_path)
    eth = _eth_day1(bars)
    (main,) = lake.write(eth.head(100), "bar")
    (part1,) = lake.append(eth.slice(100, 50), "bar")
    (part2,) = lake.append(eth.slice(150), "bar")
    assert lake.files("bar") == [main, *sorted([part1, part2])]
    assert lake.files("bar", symbols=["ADA/BTC"]) == []
    got = lake.scan("bar", symbols=["ETH/BTC"]).collect().sort("timestamp")
    assert_frame_equal(got, eth)


def test_compact_merges_parts_drops_exact_duplicates_and_keeps_time_order(
    tmp_path: Path, bars: pl.DataFrame
) -> None:
    lake = Lake(tmp_path)
    eth = _eth_day1(bars)
    rng = random.Random(5)
    # Overlapping, out-of-order chunks: rows 0-199 twice over, plus one revised row that
    # differs in a single column (kept: only exact duplicates are dropped).
    chunks = [eth.slice(120, 80), eth.slice(0, 100), eth.slice(60, 100), eth.slice(0, 10)]
    rng.shuffle(chunks)
    revised = eth.slice(5, 1).with_columns(pl.col("volume") + 1.0)
    parts = [p for c in [*chunks, revised] for p in lake.append(c, "bar")]
    assert lake.compact() == 1
    main = lake.path("bar", DAY1, "ETH/BTC")
    stored = pl.read_parquet(main)
    expected = pl.concat([eth.head(200), revised])
    assert stored.height == 201
    assert_frame_equal(stored.sort("timestamp", "volume"), expected.sort("timestamp", "volume"))
    assert stored["timestamp"].is_sorted()
    assert stored.select("timestamp", "volume").is_duplicated().sum() == 0
    # The parts are gone; the main file names every part it absorbed.
    assert _part_files(tmp_path) == []
    assert not lake.parts_dir("bar", DAY1, "ETH/BTC").exists()
    assert _absorbed_names(main) == sorted(p.name for p in parts)
    assert lake.files("bar") == [main]
    # Nothing left to merge.
    assert lake.compact() == 0
    assert lake.compact("bar") == 0


def test_compact_adds_new_parts_to_an_existing_main_file(
    tmp_path: Path, bars: pl.DataFrame
) -> None:
    lake = Lake(tmp_path)
    eth = _eth_day1(bars)
    first = lake.append(eth.slice(150), "bar")
    lake.compact()
    second = lake.append(eth.head(150), "bar")
    assert lake.compact() == 1
    main = lake.path("bar", DAY1, "ETH/BTC")
    assert_frame_equal(pl.read_parquet(main), eth)
    assert _absorbed_names(main) == sorted(p.name for p in first + second)


def test_compact_of_one_dataset_leaves_the_others_alone(tmp_path: Path, bars: pl.DataFrame) -> None:
    lake = Lake(tmp_path)
    lake.append(bars, "bar")
    lake.append(bars, "features")
    assert lake.compact("bar") == 4
    assert _part_files(tmp_path / "bar") == []
    assert len(_part_files(tmp_path / "features")) == 4
    assert lake.compact("missing") == 0
    assert lake.compact() == 4
    assert _part_files(tmp_path) == []
    assert_frame_equal(_sorted(lake.scan("features").collect()), _sorted(bars))


# -- a crash between writing the main file and deleting the parts ---------------------------


def _fail_part_deletion(monkeypatch: pytest.MonkeyPatch, after: int = 0) -> list[Path]:
    """Make `Path.unlink` of part files raise after `after` of them were deleted."""
    real_unlink = Path.unlink
    deleted: list[Path] = []

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self.name.startswith("part-"):
            if len(deleted) >= after:
                raise OSError(f"simulated crash before deleting {self.name}")
            deleted.append(self)
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    return deleted


@pytest.mark.parametrize("deleted_before_crash", [0, 2])
def test_a_crash_after_the_main_file_was_replaced_never_counts_a_row_twice(
    tmp_path: Path,
    bars: pl.DataFrame,
    monkeypatch: pytest.MonkeyPatch,
    deleted_before_crash: int,
) -> None:
    lake = Lake(tmp_path)
    eth = _eth_day1(bars)
    lake.write(eth.head(50), "bar")  # an older main file
    parts = [p for i in range(50, eth.height, 40) for p in lake.append(eth.slice(i, 40), "bar")]
    assert len(parts) >= 4
    main = lake.path("bar", DAY1, "ETH/BTC")

    deleted = _fail_part_deletion(monkeypatch, after=deleted_before_crash)
    with pytest.raises(OSError, match="simulated crash"):
        lake.compact()
    monkeypatch.undo()

    # The main file holds every row and names the parts; some parts are still on disk.
    left = _part_files(tmp_path)
    assert len(left) == len(parts) - deleted_before_crash
    assert len(deleted) == deleted_before_crash
    assert_frame_equal(pl.read_parquet(main), eth)
    assert set(_absorbed_names(main)) >= {p.name for p in parts}
    # A reader counts every row exactly once.
    assert lake.files("bar") == [main]
    got = lake.scan("bar").collect()
    assert got.height == eth.height
    assert_frame_equal(got, eth)
    inv = lake.inventory()
    assert inv["rows"].to_list() == [eth.height]

    # The next compaction finishes the cleanup without rewriting the rows.
    before = main.read_bytes()
    assert lake.compact() == 1
    assert _part_files(tmp_path) == []
    assert not lake.parts_dir("bar", DAY1, "ETH/BTC").exists()
    assert main.read_bytes() == before
    assert_frame_equal(lake.scan("bar").collect(), eth)


def test_a_new_part_after_a_crash_is_merged_and_the_old_parts_cleaned(
    tmp_path: Path, bars: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake(tmp_path)
    eth = _eth_day1(bars)
    lake.append(eth.head(100), "bar")
    _fail_part_deletion(monkeypatch)
    with pytest.raises(OSError, match="simulated crash"):
        lake.compact()
    monkeypatch.undo()
    (fresh,) = lake.append(eth.slice(100), "bar")
    assert len(lake.files("bar")) == 2  # the main file and the new part, not the absorbed one
    assert_frame_equal(lake.scan("bar").collect().sort("timestamp"), eth)
    assert lake.compact() == 1
    main = lake.path("bar", DAY1, "ETH/BTC")
    assert _part_files(tmp_path) == []
    assert fresh.name in _absorbed_names(main)
    assert_frame_equal(pl.read_parquet(main), eth)


def test_files_never_list_temporary_files(tmp_path: Path, bars: pl.DataFrame) -> None:
    lake = Lake(tmp_path)
    eth = _eth_day1(bars)
    (main,) = lake.write(eth.head(100), "bar")
    (part,) = lake.append(eth.slice(100), "bar")
    # What a writer killed mid-write leaves behind: half-written temporaries (not Parquet).
    junk = [
        main.parent / f".tmp-0123abcd-{main.name}",
        part.parent / f".tmp-4567cdef-{part.name}",
    ]
    for path in junk:
        path.write_bytes(b"PAR1 half a file")
    assert lake.files("bar") == [main, part]
    assert_frame_equal(lake.scan("bar").collect().sort("timestamp"), eth)
    assert lake.compact() == 1
    assert_frame_equal(pl.read_parquet(main), eth)
    assert lake.inventory()["rows"].to_list() == [eth.height]


# -- retention -------------------------------------------------------------------------------


def _day_rows(bars: pl.DataFrame, day: dt.date, symbol: str = "ETH/BTC") -> pl.DataFrame:
    """ETH/BTC's real bars of 2018-01-10, moved to `day`."""
    shift = dt.datetime.combine(day, dt.time(), dt.UTC) - dt.datetime(2018, 1, 10, tzinfo=dt.UTC)
    return _eth_day1(bars).with_columns(
        (pl.col("timestamp") + shift).cast(TIMESTAMP), symbol=pl.lit(symbol)
    )


def test_retain_moves_old_days_to_the_cold_tier_and_deletes_expired_ones(
    tmp_path: Path, bars: pl.DataFrame
) -> None:
    hot, cold = tmp_path / "hot", tmp_path / "cold"
    lake = Lake(hot, cold_root=cold)
    now = dt.datetime(2019, 6, 1, 12, tzinfo=dt.UTC)
    ages = [0, 30, 31, 200, 365, 366, 900]
    frames = {age: _day_rows(bars, now.date() - dt.timedelta(days=age)) for age in ages}
    for age, frame in frames.items():
        if age == 200:  # one day still in part files: it moves all the same
            lake.append(frame, "bar")
        else:
            lake.write(frame, "bar")
    # A day already cold and past the retention horizon goes too.
    Lake(cold).write(_day_rows(bars, now.date() - dt.timedelta(days=400)), "bar")

    assert lake.retain(now, hot_days=30, delete_after_days=365) == {"moved": 3, "deleted": 3}

    def days(root: Path) -> set[int]:
        return {(now.date() - dt.date.fromisoformat(p.name)).days for p in (root / "bar").iterdir()}

    assert days(hot) == {0, 30}
    assert days(cold) == {31, 200, 365}
    # Still readable through the lake (both tiers), rows unchanged, expired rows gone.
    kept = pl.concat([frames[a] for a in (0, 30, 31, 200, 365)])
    assert_frame_equal(lake.scan("bar").collect().sort("timestamp"), kept.sort("timestamp"))
    start = dt.datetime.combine(now.date() - dt.timedelta(days=200), dt.time(), dt.UTC)
    got = lake.scan("bar", start=start, end=start + dt.timedelta(days=1)).collect()
    assert_frame_equal(got, frames[200])
    # Running it again changes nothing.
    assert lake.retain(now, hot_days=30, delete_after_days=365) == {"moved": 0, "deleted": 0}


def test_retain_without_a_cold_tier_keeps_old_days_hot_until_they_expire(
    tmp_path: Path, bars: pl.DataFrame
) -> None:
    lake = Lake(tmp_path)
    now = dt.datetime(2019, 6, 1, tzinfo=dt.UTC)
    for age in (10, 100, 400):
        lake.write(_day_rows(bars, now.date() - dt.timedelta(days=age)), "bar")
    assert lake.retain(now) == {"moved": 0, "deleted": 1}
    assert len(list((tmp_path / "bar").iterdir())) == 2


@pytest.mark.parametrize(("hot", "delete"), [(400, 365), (0, 365), (-1, 10), (31, 30)])
def test_retain_rejects_a_hot_horizon_beyond_the_retention_horizon(
    tmp_path: Path, bars: pl.DataFrame, hot: int, delete: int
) -> None:
    lake = Lake(tmp_path / "hot", cold_root=tmp_path / "cold")
    lake.write(bars, "bar")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(StorageError, match="hot_days"):
        lake.retain(dt.datetime(2019, 1, 1, tzinfo=dt.UTC), hot_days=hot, delete_after_days=delete)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_retain_merging_into_an_existing_cold_day_keeps_the_cold_rows(
    tmp_path: Path, bars: pl.DataFrame
) -> None:
    hot, cold = tmp_path / "hot", tmp_path / "cold"
    lake = Lake(hot, cold_root=cold)
    now = dt.datetime(2019, 6, 1, tzinfo=dt.UTC)
    day = now.date() - dt.timedelta(days=40)
    rows = _day_rows(bars, day)
    lake.write(rows.head(100), "bar")
    assert lake.retain(now) == {"moved": 1, "deleted": 0}
    # Late rows of the same day (a backfill) land in the hot tier, then age out again.
    lake.write(rows.slice(100), "bar")
    assert lake.scan("bar").collect().height == rows.height
    assert lake.retain(now) == {"moved": 1, "deleted": 0}
    assert_frame_equal(lake.scan("bar").collect().sort("timestamp"), rows)


# -- inventory -------------------------------------------------------------------------------


def test_inventory_counts_rows_and_bounds_per_dataset_and_symbol(
    tmp_path: Path, bars: pl.DataFrame
) -> None:
    hot, cold = tmp_path / "hot", tmp_path / "cold"
    lake = Lake(hot, cold_root=cold)
    assert lake.inventory().is_empty()
    trades = read_market(TRADES_FILE)[1]
    lake.write(bars.filter(pl.col("timestamp").dt.date() == DAY1), "bar")
    lake.append(bars.filter(pl.col("timestamp").dt.date() == DAY2), "bar")  # parts only
    lake.write(trades, "trade")
    older = bars.filter(pl.col("symbol") == "ETH/BTC").head(3)
    older = older.with_columns((pl.col("timestamp") - dt.timedelta(days=5)).cast(TIMESTAMP))
    Lake(cold).write(older, "bar")  # three older ETH/BTC bars in the cold tier
    inv = lake.inventory()
    assert inv.columns == ["dataset", "symbol", "first", "last", "rows"]
    got = {(d, s): (f, la, n) for d, s, f, la, n in inv.rows()}
    expected = {}
    for (sym,), g in bars.group_by(["symbol"]):
        extra = 3 if sym == "ETH/BTC" else 0
        first = g["timestamp"].min() - (dt.timedelta(days=5) if extra else dt.timedelta())
        expected[("bar", sym)] = (first, g["timestamp"].max(), g.height + extra)
    expected[("trade", "BTC/USDT")] = (
        trades["timestamp"].min(),
        trades["timestamp"].max(),
        trades.height,
    )
    assert got == expected
    assert inv.select("dataset", "symbol").rows() == sorted(expected)


# -- LakeWriter on the bus -------------------------------------------------------------------


def _batch(frame: pl.DataFrame, seq: int) -> MarketBatch:
    ts = frame["timestamp"].cast(pl.Int64)
    return MarketBatch(
        kind=EventType.TRADE,
        frame=frame.with_columns(pl.lit(0, pl.UInt8).alias("flags")),
        seq=seq,
        ts_min=int(ts.min()),  # type: ignore[arg-type]
        ts_max=int(ts.max()),  # type: ignore[arg-type]
        source="replay",
    )


class _ThreadSpy:
    """Wraps a Lake method and records the thread each call ran on."""

    def __init__(self, lake: Lake, name: str) -> None:
        self.threads: list[threading.Thread] = []
        real = getattr(lake, name)

        def spy(*args: Any, **kwargs: Any) -> Any:
            self.threads.append(threading.current_thread())
            return real(*args, **kwargs)

        setattr(lake, name, spy)


async def test_lake_writer_stores_trade_batches_from_the_bus_compacted_on_stop(
    tmp_path: Path,
) -> None:
    trades = read_market(TRADES_FILE)[1].sort("timestamp")
    lake = Lake(tmp_path / "lake")
    appends, compacts = _ThreadSpy(lake, "append"), _ThreadSpy(lake, "compact")
    writer = LakeWriter(lake, flush_rows=500, flush_s=3600)
    bus = InProcessBus()
    try:
        await writer.start(bus)
        topic = topics.market_data(EventType.TRADE)
        assert topic == "market.data.trade"
        for seq, offset in enumerate(range(0, trades.height, 200)):
            await bus.publish(topic, _batch(trades.slice(offset, 200), seq))
        await bus.publish("market.data.quote", "not a batch")  # ignored
        await bus.drain(timeout=30)
        # flush_rows reached: part files were written before stop.
        assert writer.rows_written == 1800
        assert _part_files(lake.root)
        await writer.stop()
    finally:
        await bus.close()
    assert bus.handler_errors == []
    assert writer.stats() == {"rows_written": trades.height, "files_written": 4}
    main = lake.path("trade", dt.date(2021, 1, 8), "BTC/USDT")
    assert lake.files("trade") == [main]
    assert _part_files(lake.root) == []
    stored = pl.read_parquet(main)
    assert_frame_equal(stored.drop("flags"), trades)
    main_thread = threading.main_thread()
    assert len(appends.threads) == 4
    assert len(compacts.threads) == 1
    assert all(t is not main_thread for t in appends.threads + compacts.threads)


async def test_lake_writer_flushes_on_time_and_keeps_kinds_apart(tmp_path: Path) -> None:
    trades = read_market(TRADES_FILE)[1].sort("timestamp").head(300)
    lake = Lake(tmp_path / "lake")
    writer = LakeWriter(lake, flush_rows=10**9, flush_s=0.0)  # every batch is due
    bus = InProcessBus()
    try:
        await writer.start(bus)
        await bus.publish("market.data.trade", _batch(trades.head(100), 0))
        await bus.drain(timeout=30)
        assert writer.stats() == {"rows_written": 100, "files_written": 1}
        await bus.publish("market.data.trade", _batch(trades.slice(100), 1))
        await bus.drain(timeout=30)
        await asyncio.wait_for(writer.stop(), 30)
    finally:
        await bus.close()
    assert lake.datasets() == ["trade"]
    assert_frame_equal(lake.scan("trade").collect().drop("flags"), trades)
    assert _part_files(lake.root) == []
