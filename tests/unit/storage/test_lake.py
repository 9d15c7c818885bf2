"""The Parquet lake: partitioning, merging, scanning and crash-safe writes."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from quantlab.adapters.sim.data import bundled_dir
from quantlab.core.errors import DataError, StorageError
from quantlab.storage.lake import Lake, atomic_write_parquet, safe_symbol, unsafe_symbol

# Same examples on every run (no example database, no random seed): deterministic tests.
DETERMINISTIC = settings(derandomize=True, database=None, deadline=None)

BARS_FILE = bundled_dir() / "binance_btc_pairs_5m_2018-01.parquet"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    """Real 5-minute bars of ETH/BTC and ADA/BTC from 2018-01-10 to 2018-01-11 (two days)."""
    return (
        pl.read_parquet(BARS_FILE)
        .filter(
            pl.col("symbol").is_in(["ETH/BTC", "ADA/BTC"]),
            pl.col("timestamp") < dt.datetime(2018, 1, 12, tzinfo=dt.UTC),
        )
        .sort("timestamp", "symbol")
    )


def _tmp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".tmp-")]


# -- layout ---------------------------------------------------------------------------------


def test_write_partitions_by_dataset_day_and_percent_encoded_symbol(
    tmp_path: Path, bars: pl.DataFrame
) -> None:
    lake = Lake(tmp_path)
    written = lake.write(bars, "bar")
    expected = {
        tmp_path / "bar" / day / f"{sym}.parquet"
        for day in ("2018-01-10", "2018-01-11")
        for sym in ("ETH%2FBTC", "ADA%2FBTC")
    }
    assert set(written) == expected
    assert {p for p in tmp_path.rglob("*.parquet")} == expected
    assert lake.path("bar", dt.date(2018, 1, 10), "ADA/BTC").name == "ADA%2FBTC.parquet"
    assert lake.datasets() == ["bar"]


def test_rows_spanning_two_days_land_in_two_files(tmp_path: Path, bars: pl.DataFrame) -> None:
    lake = Lake(tmp_path)
    eth = bars.filter(pl.col("symbol") == "ETH/BTC")
    written = lake.write(eth, "bar")
    assert [p.parent.name for p in written] == ["2018-01-10", "2018-01-11"]
    day1, day2 = (pl.read_parquet(p) for p in written)
    assert day1.height + day2.height == eth.height
    assert (day1["timestamp"].dt.date() == dt.date(2018, 1, 10)).all()
    assert (day2["timestamp"].dt.date() == dt.date(2018, 1, 11)).all()
    assert_frame_equal(pl.concat([day1, day2]), eth)


def test_second_write_merges_dedups_and_keeps_time_order(
    tmp_path: Path, bars: pl.DataFrame
) -> None:
    lake = Lake(tmp_path)
    eth = bars.filter(pl.col("symbol") == "ETH/BTC").head(200)
    first, second = eth.slice(0, 120), eth.slice(80)  # 40 rows in both writes
    lake.write(second, "bar")  # the later rows first
    lake.write(first, "bar")
    (target,) = lake.files("bar")
    stored = pl.read_parquet(target)
    assert_frame_equal(stored, eth)
    assert stored["timestamp"].is_sorted()
    # Writing the same rows again changes nothing.
    lake.write(eth, "bar")
    assert_frame_equal(pl.read_parquet(target), eth)


def test_merge_keeps_rows_that_differ_in_any_column(tmp_path: Path, bars: pl.DataFrame) -> None:
    lake = Lake(tmp_path)
    eth = bars.filter(pl.col("symbol") == "ETH/BTC").head(10)
    lake.write(eth, "bar")
    revised = eth.head(1).with_columns(pl.col("volume") * 2)
    lake.write(revised, "bar")
    stored = pl.read_parquet(lake.files("bar")[0])
    assert stored.height == 11  # only exact duplicates are dropped
    assert stored["timestamp"].is_sorted()


def test_files_are_zstd_compressed(tmp_path: Path, bars: pl.DataFrame) -> None:
    lake = Lake(tmp_path)
    for path in lake.write(bars, "bar"):
        data = path.read_bytes()
        assert data[:4] == b"PAR1"
        assert data[-4:] == b"PAR1"
        # Each of the 7 column chunks is at least one zstd frame (pyarrow is not installed, so
        # the footer's codec field is not read; the zstd frame magic is the evidence).
        assert data.count(ZSTD_MAGIC) >= len(bars.columns)
    plain = tmp_path / "plain.parquet"
    bars.write_parquet(plain, compression="uncompressed")
    assert plain.read_bytes().count(ZSTD_MAGIC) == 0


def test_write_needs_symbol_and_timestamp(tmp_path: Path, bars: pl.DataFrame) -> None:
    with pytest.raises(DataError, match="symbol"):
        Lake(tmp_path).write(bars.drop("symbol"), "bar")
    assert Lake(tmp_path).write(bars.clear(), "bar") == []


@settings(DETERMINISTIC)
@given(st.text(min_size=1, max_size=30).filter(lambda s: not s.startswith(".")))
def test_safe_symbol_is_reversible_and_path_safe(symbol: str) -> None:
    name = safe_symbol(symbol)
    assert unsafe_symbol(name) == symbol
    assert "/" not in name
    assert "\\" not in name
    assert "\x00" not in name
    assert name not in {".", ".."}


def test_empty_symbol_is_refused() -> None:
    with pytest.raises(StorageError, match="empty symbol"):
        safe_symbol("")


def test_a_symbol_that_looks_like_a_temp_file_is_still_scanned(
    tmp_path: Path, bars: pl.DataFrame
) -> None:
    lake = Lake(tmp_path)
    odd = bars.head(3).with_columns(symbol=pl.lit(".tmp-X"))
    lake.write(odd, "bar")
    assert lake.scan("bar", [".tmp-X"]).collect().height == 3


# -- scan -----------------------------------------------------------------------------------


def test_scan_returns_the_rows_asked_for(tmp_path: Path, bars: pl.DataFrame) -> None:
    lake = Lake(tmp_path)
    lake.write(bars, "bar")
    start = dt.datetime(2018, 1, 10, 20, 0, tzinfo=dt.UTC)
    end = dt.datetime(2018, 1, 11, 4, 0, tzinfo=dt.UTC)
    lf = lake.scan("bar", ["ADA/BTC"], start, end)
    assert isinstance(lf, pl.LazyFrame)
    got = lf.collect().sort("timestamp")
    expected = bars.filter(
        pl.col("symbol") == "ADA/BTC", pl.col("timestamp") >= start, pl.col("timestamp") < end
    )
    assert expected.height == 96
    assert_frame_equal(got, expected)
    # Everything, and one day only (partition pruning by day).
    assert_frame_equal(lake.scan("bar").collect().sort("timestamp", "symbol"), bars)
    only_day2 = lake.files("bar", start=dt.datetime(2018, 1, 11, 1, tzinfo=dt.UTC))
    assert {p.parent.name for p in only_day2} == {"2018-01-11"}


def test_scan_of_an_empty_lake_raises(tmp_path: Path, bars: pl.DataFrame) -> None:
    lake = Lake(tmp_path / "nothing")
    with pytest.raises(DataError, match="no 'bar' data"):
        lake.scan("bar")
    assert lake.datasets() == []
    lake = Lake(tmp_path / "some")
    lake.write(bars, "bar")
    with pytest.raises(DataError, match="XRP/BTC"):
        lake.scan("bar", ["XRP/BTC"])
    with pytest.raises(DataError, match="2019"):
        lake.scan("bar", start=dt.datetime(2019, 1, 1, tzinfo=dt.UTC))


def test_scan_with_non_utc_bounds_finds_every_row(tmp_path: Path, bars: pl.DataFrame) -> None:
    lake = Lake(tmp_path)
    lake.write(bars, "bar")
    plus5 = dt.timezone(dt.timedelta(hours=5))
    start = dt.datetime(2018, 1, 11, 1, 0, tzinfo=plus5)  # 2018-01-10 20:00 UTC
    end = dt.datetime(2018, 1, 11, 9, 0, tzinfo=plus5)  # 2018-01-11 04:00 UTC
    got = lake.scan("bar", ["ADA/BTC"], start, end).collect()
    assert got.height == 96  # 48 found today: the 2018-01-10 partition is skipped


# -- crash safety ---------------------------------------------------------------------------


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(
    tmp_path: Path, bars: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake(tmp_path)
    eth = bars.filter(pl.col("symbol") == "ETH/BTC", pl.col("timestamp").dt.day() == 10)
    (target,) = lake.write(eth.head(50), "bar")
    before = target.read_bytes()

    real_write = pl.DataFrame.write_parquet

    def half_then_fail(self: pl.DataFrame, file: Any, *args: Any, **kwargs: Any) -> None:
        real_write(self, file, *args, **kwargs)
        Path(file).write_bytes(Path(file).read_bytes()[: len(before) // 2])  # cut mid-way
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        lake.write(eth, "bar")  # the merge path
    with pytest.raises(OSError, match="disk full"):
        atomic_write_parquet(eth, target)  # the direct path
    with pytest.raises(OSError, match="disk full"):
        atomic_write_parquet(eth, tmp_path / "new" / "x.parquet")  # no old file
    monkeypatch.undo()

    assert target.read_bytes() == before
    assert_frame_equal(pl.read_parquet(target), eth.head(50))
    assert not (tmp_path / "new" / "x.parquet").exists()
    assert _tmp_files(tmp_path) == []


def test_sweep_removes_the_temporary_files_of_dead_writers_only(tmp_path: Path) -> None:
    from quantlab.storage import lake as lake_module

    day = tmp_path / "bar" / "2018-01-10"
    parts = day / ".parts" / "ETH%2FBTC"
    parts.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = lake_module._HOST
    files = {
        "dead": parts / f".tmp-{host}-{dead.pid}-{'a' * 32}-part-1.parquet",
        "alive": day / f".tmp-{host}-{os.getpid()}-{'b' * 32}-ETH%2FBTC.parquet",
        "foreign_fresh": day / f".tmp-ffffffff-1-{'c' * 32}-ETH%2FBTC.parquet",
        "foreign_old": day / f".tmp-ffffffff-2-{'d' * 32}-ETH%2FBTC.parquet",
    }
    assert host != "ffffffff"
    for path in files.values():
        path.write_bytes(b"PAR1 half a file")
    old = time.time() - 2 * 3600
    os.utime(files["foreign_old"], (old, old))
    assert Lake(tmp_path).sweep_temporaries() == 2
    assert sorted(p.name for p in _tmp_files(tmp_path)) == sorted(
        files[k].name for k in ("alive", "foreign_fresh")
    )
