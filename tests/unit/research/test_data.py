"""`quantlab.research.data`: paths notebooks may write to, the recordings, the lake, quality."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quantlab.core.errors import DataError
from quantlab.research import (
    bundled_catalog,
    check_quality,
    load_market,
    open_lake,
    project_root,
    research_dir,
    return_spikes,
)


def test_project_root_walks_up_to_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    deep = tmp_path / "notebooks" / "research"
    deep.mkdir(parents=True)
    assert project_root(deep) == tmp_path.resolve()


def test_project_root_default_is_this_checkout() -> None:
    root = project_root()
    assert (root / "pyproject.toml").is_file()
    assert (root / "src" / "quantlab" / "research" / "data.py").is_file()


def test_project_root_names_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no pyproject.toml in"):
        project_root(tmp_path)


def test_research_dir_stays_under_var_research(tmp_path: Path) -> None:
    folder = research_dir("lake", "x", root=tmp_path)
    assert folder == tmp_path.resolve() / "var" / "research" / "lake" / "x"
    assert folder.is_dir()
    (folder / "old.txt").write_text("old")
    again = research_dir("lake", "x", root=tmp_path, clean=True)
    assert again.is_dir()
    assert not any(again.iterdir())
    for bad in ("..", "a/b", ""):
        with pytest.raises(DataError, match=r"plain folder names"):
            research_dir(bad, root=tmp_path)


def test_load_market_tells_the_kind(data_dir: Path) -> None:
    kind, trades = load_market("bundled:binance_btcusdt_trades_2021-01-08.parquet")
    assert kind == "trade"
    assert trades.columns == ["symbol", "timestamp", "price", "size", "aggressor", "trade_id"]
    raw = pl.read_parquet(data_dir / "binance_btcusdt_trades_2021-01-08.parquet")
    assert trades.height == raw.height == 2001
    assert trades["timestamp"].is_sorted()
    assert trades["size"].sum() == pytest.approx(raw["quantity"].sum())
    kind, quotes = load_market("bundled:binance_btcusdt_quotes_2021-01-08.parquet")
    assert kind == "quote"
    assert quotes.height == 451
    with pytest.raises(DataError, match=r"no bundled data file 'nope.parquet'"):
        load_market("bundled:nope.parquet")


def test_bundled_catalog_counts_every_file(data_dir: Path) -> None:
    catalog = bundled_catalog()
    files = sorted(p.name for p in data_dir.glob("*.parquet"))
    assert catalog["file"].to_list() == files
    for name, kind, rows, symbols in catalog.select("file", "kind", "rows", "symbols").rows():
        raw = pl.read_parquet(data_dir / name)
        assert rows == raw.height
        assert symbols == raw["symbol"].n_unique()
        assert kind == (
            "bar" if "open" in raw.columns else "quote" if "bid" in raw.columns else "trade"
        )


def test_lake_round_trip(tmp_path: Path) -> None:
    lake = open_lake(tmp_path / "lake")
    kind, bars = load_market("bundled:binance_btc_pairs_5m_2018-01.parquet")
    eth = bars.filter(pl.col("symbol").is_in(["ETH/BTC", "LTC/BTC"]))
    lake.write(eth, kind)
    inventory = lake.inventory()
    assert inventory["symbol"].to_list() == ["ETH/BTC", "LTC/BTC"]
    assert inventory["rows"].sum() == eth.height
    back = lake.scan("bar", symbols=["ETH/BTC"]).sort("timestamp").collect()
    want = eth.filter(pl.col("symbol") == "ETH/BTC")
    unit = pl.Datetime("us", "UTC")
    assert back["timestamp"].cast(unit).equals(want["timestamp"].cast(unit))
    assert back.select(want.columns).drop("timestamp").equals(want.drop("timestamp"))


def test_check_quality_rejects_crossed_quotes(data_dir: Path) -> None:
    _, fx = load_market("bundled:fxcm_gbpusd_1m_quotes_2012-02.parquet")
    crossed = fx.filter(pl.col("bid") > pl.col("ask")).height
    report = check_quality(fx, gap_s=90)
    assert report.kind == "quote"
    assert crossed == 347
    assert report.counts["rejected:crossed_quote"] == crossed
    assert report.rejected.height == crossed
    assert set(report.rejected["reason"]) == {"crossed_quote"}
    assert report.accepted.height + report.rejected.height == fx.height
    assert (
        report.summary().filter(pl.col("check") == "accepted")["count"].item()
        == fx.height - crossed
    )


def test_check_quality_finds_the_gaps_in_bars() -> None:
    _, bars = load_market("bundled:binance_btc_pairs_5m_2018-01.parquet")
    report = check_quality(bars, gap_s=60)
    # independently: consecutive bars of a symbol more than 5 min + 60 s apart
    expected = (
        bars.sort("timestamp")
        .with_columns(pl.col("timestamp").diff().over("symbol").dt.total_seconds().alias("d"))
        .filter(pl.col("d") > 300 + 60)
    )
    assert report.gaps.height == expected.height == report.counts["gaps"] > 0
    got = report.gaps.sort("symbol", "end")
    want = expected.sort("symbol", "timestamp")
    assert got["symbol"].to_list() == want["symbol"].to_list()
    assert got["seconds"].to_list() == [float(x) for x in want["d"].to_list()]


def test_check_quality_names_flags() -> None:
    _, bars = load_market("bundled:btc_perp_1m_2022-01.parquet")
    report = check_quality(bars, gap_s=60)
    spikes = report.accepted.filter((pl.col("flags") & 2) > 0)
    assert spikes.height == report.counts["flagged:volume_spike"] > 0
    assert (spikes["flag"] == "volume_spike").all()
    assert (report.accepted.filter(pl.col("flags") == 0)["flag"] == "").all()


def test_check_quality_errors_name_bad_values() -> None:
    _, bars = load_market("bundled:btc_perp_1m_2022-01.parquet")
    with pytest.raises(DataError, match=r"unknown quality thresholds \['gap'\]"):
        check_quality(bars, gap=5)
    with pytest.raises(DataError, match=r"kind must be .* got 'bars'"):
        check_quality(bars, "bars")
    with pytest.raises(DataError, match=r"batch_rows must be a positive integer, got 0"):
        check_quality(bars, batch_rows=0)


def test_return_spikes_are_extreme_against_past_volatility() -> None:
    _, bars = load_market("bundled:binance_btc_pairs_5m_2018-01.parquet")
    spikes = return_spikes(bars, z=8.0, window=288)
    assert spikes.height > 0
    assert (spikes["z"].abs() > 8.0).all()
    top = spikes.row(0, named=True)
    closes = bars.filter(pl.col("symbol") == top["symbol"]).sort("timestamp")
    i = closes["timestamp"].to_list().index(top["timestamp"])
    r = np.diff(np.log(closes["close"].to_numpy()))  # r[j] is the return into row j + 1
    previous = r[i - 1 - 288 : i - 1]
    assert top["log_return"] == pytest.approx(r[i - 1])
    assert top["sigma"] == pytest.approx(previous.std(ddof=1))
    with pytest.raises(DataError, match=r"z must be > 0, got 0"):
        return_spikes(bars, z=0)
