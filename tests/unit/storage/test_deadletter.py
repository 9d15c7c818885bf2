"""The dead-letter file: rejected rows with their source and reason, flushed to Parquet."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quantlab.adapters.sim.data import bundled_dir
from quantlab.core.enums import EventType
from quantlab.ingest.quality import QualityChecker, QualityConfig
from quantlab.storage.deadletter import DeadLetterFile

MARKET = bundled_dir()


@pytest.fixture(scope="module")
def rejected_bars() -> pl.DataFrame:
    """Real ETH/BTC bars broken three ways, as the validator rejects them."""
    bars = (
        pl.read_parquet(MARKET / "binance_btc_pairs_5m_2018-01.parquet")
        .filter(pl.col("symbol") == "ETH/BTC")
        .head(6)
    )
    broken = bars.with_columns(
        open=pl.when(pl.int_range(pl.len()) == 1).then(-1.0).otherwise(pl.col("open")),
        volume=pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("volume")),
    )
    broken = pl.concat([broken, bars.slice(2, 1)])  # a repeated timestamp
    bad = QualityChecker(EventType.BAR, QualityConfig(max_future_s=None)).check(broken).rejected
    assert bad["reason"].to_list() == ["non_positive_price", "null_field", "duplicate"]
    return bad


@pytest.fixture(scope="module")
def rejected_quotes() -> pl.DataFrame:
    quotes = (
        pl.read_parquet(MARKET / "binance_btcusdt_quotes_2021-01-08.parquet")
        .with_columns(pl.col("timestamp").cast(pl.Datetime("ns", "UTC")))
        .unique("timestamp", keep="first", maintain_order=True)
        .head(4)
    )
    crossed = quotes.with_columns(bid=pl.col("ask") * 1.01)
    bad = QualityChecker(EventType.QUOTE, QualityConfig(max_future_s=None)).check(crossed).rejected
    assert bad["reason"].unique().to_list() == ["crossed_quote"]
    return bad


def test_collects_rows_with_source_and_reason(tmp_path: Path, rejected_bars: pl.DataFrame) -> None:
    dead = DeadLetterFile(tmp_path / "rejected.parquet")
    dead("replay", rejected_bars)
    assert dead.rows == 3
    assert not dead.path.exists()  # nothing written before flush
    path = dead.flush()
    assert path == tmp_path / "rejected.parquet"
    stored = pl.read_parquet(path)
    assert stored["source"].to_list() == ["replay"] * 3
    assert stored["reason"].to_list() == ["non_positive_price", "null_field", "duplicate"]
    assert_frame_equal(stored.drop("source"), rejected_bars)


def test_flush_appends_to_what_the_file_holds(
    tmp_path: Path, rejected_bars: pl.DataFrame, rejected_quotes: pl.DataFrame
) -> None:
    dead = DeadLetterFile(tmp_path / "dl" / "rejected.parquet")
    dead("bars", rejected_bars)
    dead.flush()
    dead("quotes", rejected_quotes)
    dead("bars", rejected_bars.head(1))
    dead.flush()
    assert dead.rows == 3 + 4 + 1

    # A new instance (a later run) appends too.
    again = DeadLetterFile(dead.path)
    again("bars", rejected_bars.tail(1))
    again.flush()

    stored = pl.read_parquet(dead.path)
    assert stored["source"].to_list() == ["bars"] * 3 + ["quotes"] * 4 + ["bars", "bars"]
    assert stored["reason"].to_list() == [
        "non_positive_price",
        "null_field",
        "duplicate",
        *["crossed_quote"] * 4,
        "non_positive_price",
        "duplicate",
    ]
    # Different schemas merge: each row keeps its own columns, the others are null.
    assert {"open", "volume", "bid", "ask_size"} <= set(stored.columns)
    assert stored["bid"].is_null().sum() == 5
    assert stored["open"].is_null().sum() == 4
    assert not list(dead.path.parent.glob(".tmp-*"))


def test_flush_with_nothing_collected_writes_nothing(
    tmp_path: Path, rejected_bars: pl.DataFrame
) -> None:
    dead = DeadLetterFile(tmp_path / "rejected.parquet")
    assert dead.flush() is None
    assert not dead.path.exists()
    dead("replay", rejected_bars)
    dead.flush()
    before = dead.path.read_bytes()
    assert dead.flush() is None  # already flushed: no second copy of the rows
    assert dead.path.read_bytes() == before
