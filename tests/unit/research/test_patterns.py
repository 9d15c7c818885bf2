"""`quantlab.research.patterns`: the pattern memory built from history, queried, evaluated."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quantlab.core.errors import DataError
from quantlab.research import (
    build_pattern_memory,
    compute_features,
    embed_windows,
    evaluate_pattern_expert,
    load_bars,
    pattern_paths,
    similar_situations,
)

PAIRS = "bundled:binance_btc_pairs_5m_2018-01.parquet"
SYMBOLS = ["ETH/BTC", "LTC/BTC", "XMR/BTC"]


@pytest.fixture(scope="module")
def features() -> pl.DataFrame:
    return compute_features(load_bars(PAIRS, symbols=SYMBOLS))


@pytest.fixture(scope="module")
def memory(features: pl.DataFrame):  # type: ignore[no-untyped-def]
    return build_pattern_memory(features, store_every=4, collection="test-research-patterns")


def _forward(features: pl.DataFrame, symbol: str, ts: dt.datetime, h: int) -> float:
    mine = features.filter(pl.col("symbol") == symbol)
    i = mine["timestamp"].to_list().index(ts)
    return float(np.log(mine["price"][i + h] / mine["price"][i]))


def test_embed_windows(features: pl.DataFrame) -> None:
    vectors, full = embed_windows(features, window=64, dim=512)
    assert vectors.shape == (features.height, 512)
    assert full.sum() == features.height - 63 * len(SYMBOLS)
    norms = np.linalg.norm(vectors, axis=1)
    np.testing.assert_allclose(norms[full], 1.0, atol=1e-5)
    assert (norms[~full] == 0).all()
    with pytest.raises(DataError, match=r"window must be an integer >= 2, got 1"):
        embed_windows(features, window=1)


def test_memory_stores_every_resolved_pattern(features: pl.DataFrame, memory) -> None:  # type: ignore[no-untyped-def]
    # rows with a full window, n divisible by 4, and an outcome row 12 bars later
    rows = features.with_columns(pl.len().over("symbol").alias("rows")).filter(
        (pl.col("n") >= 64) & (pl.col("n") % 4 == 0) & (pl.col("n") + 12 <= pl.col("rows"))
    )
    assert memory.size == rows.height
    assert memory.store.count() == rows.height


def test_similar_situations_only_look_back(features: pl.DataFrame, memory) -> None:  # type: ignore[no-untyped-def]
    at = dt.datetime(2018, 1, 20, 12, 0, tzinfo=dt.UTC)
    situation = similar_situations(memory, features, "ETH/BTC", at="2018-01-20T12:00:00")
    assert situation.timestamp == at
    nb = situation.neighbours
    assert nb.height == 10
    assert nb["similarity"].is_sorted(descending=True)
    # every neighbour's outcome was known by the query time: its window ended 12 bars before
    for symbol, ts, outcome in nb.select("symbol", "timestamp", "outcome").rows():
        assert ts + dt.timedelta(minutes=5 * 12) <= at
        assert outcome == pytest.approx(_forward(features, symbol, ts, 12))
    assert -1 <= situation.advice <= 1
    assert 0 <= situation.confidence <= 1
    with pytest.raises(DataError, match=r"symbol 'BTC/USD' is not in the features"):
        similar_situations(memory, features, "BTC/USD")


def test_chroma_and_simhash_agree_on_the_latest_window(features: pl.DataFrame, memory) -> None:  # type: ignore[no-untyped-def]
    simhash = similar_situations(memory, features, "LTC/BTC", search="simhash")
    chroma = similar_situations(memory, features, "LTC/BTC", search="chroma")
    same = set(simhash.neighbours["timestamp"]) & set(chroma.neighbours["timestamp"])
    assert len(same) >= 8
    assert memory.search == "simhash"  # restored


def test_pattern_paths(features: pl.DataFrame, memory) -> None:  # type: ignore[no-untyped-def]
    situation = similar_situations(memory, features, "XMR/BTC", at="2018-01-25")
    paths = pattern_paths(features, situation, before=64, after=12)
    assert paths["label"].n_unique() == 11
    assert paths.filter(pl.col("offset") == 0)["log_price"].abs().max() == 0.0
    query = paths.filter(pl.col("label") == "query")
    assert query["offset"].to_list() == list(range(-63, 1))
    first = paths.filter(pl.col("label").str.starts_with("#1 "))
    assert first["offset"].max() == 12
    row = situation.neighbours.row(0, named=True)
    assert first.filter(pl.col("offset") == 12)["log_price"].item() == pytest.approx(row["outcome"])


def test_evaluate_pattern_expert(features: pl.DataFrame, memory) -> None:  # type: ignore[no-untyped-def]
    evaluation = evaluate_pattern_expert(memory, features, every=12, start="2018-01-15")
    rows = evaluation.rows
    assert rows["timestamp"].min() >= dt.datetime(2018, 1, 15, tzinfo=dt.UTC)
    assert (rows["neighbours"] == 10).all()
    sample = rows.row(rows.height // 2, named=True)
    assert sample["realized"] == pytest.approx(
        _forward(features, sample["symbol"], sample["timestamp"], 12)
    )
    np.testing.assert_allclose(rows["score"], rows["advice"] * rows["confidence"])
    stats = evaluation.stats
    assert stats["queries"] == rows.height
    active = rows.filter((pl.col("score") != 0) & (pl.col("realized") != 0))
    hits = (active["score"].sign() == active["realized"].sign()).mean()
    assert stats["hit_rate"] == pytest.approx(hits)
    assert 0.4 < stats["hit_rate"] < 0.7


def test_build_errors_name_bad_values(features: pl.DataFrame) -> None:
    with pytest.raises(DataError, match=r"store_every must be .* got 5"):
        build_pattern_memory(features, store_every=5)
    with pytest.raises(DataError, match=r"collection must be .* got 'x'"):
        build_pattern_memory(features, collection="x")
    with pytest.raises(DataError, match=r"needs a feature frame"):
        build_pattern_memory(features.drop("n"))


def test_persisted_memory(features: pl.DataFrame, tmp_path: Path) -> None:
    few = features.filter(pl.col("symbol") == "ETH/BTC").head(600)
    memory = build_pattern_memory(few, path=tmp_path / "chroma", collection="persisted")
    assert memory.size > 0
    assert any((tmp_path / "chroma").iterdir())
    again = build_pattern_memory(few, path=tmp_path / "chroma", collection="persisted")
    assert again.store.count() == memory.size  # replaced, not appended
