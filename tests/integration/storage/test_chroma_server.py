"""The pattern memory against a real ``chroma run`` server over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

import quantlab.features as qf
from quantlab.signals.patterns import Embedder, PatternMemory
from quantlab.signals.windows import window_array
from quantlab.storage.vectors import ChromaVectorStore, make_client
from quantlab.testing.chroma_server import ChromaServer

pytestmark = pytest.mark.integration

NS = 1_000_000_000
DAY = 86_400 * NS


@pytest.fixture(scope="module")
def chroma_url() -> Iterator[str]:
    """A ``chroma run`` server on a free local port, stopped (and waited for) at teardown."""
    with ChromaServer() as server:
        yield server.url


def test_pattern_memory_over_http(chroma_url: str, data_dir: Path) -> None:
    bars = pl.read_parquet(data_dir / "binance_btc_pairs_5m_2018-01.parquet").head(3000)
    features = qf.compute(bars, spec="default")
    w, full = window_array(features)
    f = features.filter(pl.Series(full))
    vec = Embedder().embed(w[full])
    ts = f["timestamp"].dt.epoch("ns").to_numpy()
    sym, n, price = f["symbol"].to_list(), f["n"].to_numpy(), f["price"].to_numpy()

    store = ChromaVectorStore(make_client(url=chroma_url), "patterns-http", 512)
    hnsw = store.collection.configuration_json["hnsw"]
    assert (hnsw["space"], hnsw["max_neighbors"], hnsw["ef_construction"]) == ("cosine", 16, 200)
    memory = PatternMemory(store, strategy_id="http", horizon=12, search="chroma")
    split = 2000
    resolved = memory.observe(sym[:split], ts[:split], n[:split], price[:split], vec[:split])
    assert resolved == store.count() == memory.size > 0

    now = int(ts[split])
    pred = memory.predict(vec[split : split + 50], now)
    assert memory.metrics()["search_path_rows"]["chroma"] == 50
    assert all(nb.ts < now for row in pred.neighbours for nb in row)
    assert sum(len(r) for r in pred.neighbours) == 50 * memory.k
    # the store's where clause, over HTTP
    cut = int(ts[1000] // NS)
    for row in store.query(vec[split : split + 5], 10, before_ts=cut):
        assert row
        assert all(nb.ts // NS < cut for nb in row)

    # a restarted process sees the same memory through the server
    again = PatternMemory(
        ChromaVectorStore(make_client(url=chroma_url), "patterns-http", 512),
        strategy_id="http",
        search="chroma",
    )
    assert again.load() == memory.size

    # TTL: pretend 90 days and 10 hours have passed since the first pattern
    sweep_at = int(ts[0]) + 90 * DAY + 10 * 3600 * NS
    cutoff = int(ts[0]) + 10 * 3600 * NS
    keep = {i for i in store.get_all()[0] if int(i.split(":")[3]) >= cutoff}
    deleted = memory.sweep(sweep_at)
    assert deleted > 0
    assert set(store.get_all()[0]) == keep
    assert memory.size == store.count() == len(keep)
