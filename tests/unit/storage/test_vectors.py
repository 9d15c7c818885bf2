"""The Chroma vector store: clients, collection configuration, filters, TTL, persistence."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

import quantlab.features as qf
from quantlab.core.errors import StorageError
from quantlab.signals.patterns import Embedder, PatternMemory, VectorStore
from quantlab.signals.windows import window_array
from quantlab.storage.vectors import EF_SEARCH, ChromaVectorStore, make_client

NS = 1_000_000_000


@pytest.fixture(scope="module")
def frame(data_dir: Path) -> pl.DataFrame:
    bars = pl.read_parquet(data_dir / "binance_btc_pairs_5m_2018-01.parquet").head(4000)
    features = qf.compute(bars, spec="default")
    w, full = window_array(features)
    return features.filter(pl.Series(full)).with_columns(
        pl.Series("vec", list(Embedder().embed(w[full]))),
        pl.col("timestamp").dt.epoch("ns").alias("ts_ns"),
    )


def vectors(frame: pl.DataFrame) -> np.ndarray:
    return np.stack(frame["vec"].to_list()).astype(np.float32)


def metas(frame: pl.DataFrame) -> list[dict[str, str | int | float]]:
    return [
        {"symbol": s, "ts": t // NS, "ts_ns": t, "outcome": 0.0}
        for s, t in frame.select("symbol", "ts_ns").iter_rows()
    ]


def ids(frame: pl.DataFrame) -> list[str]:
    return [f"strategy:t:pattern:{t}:{s}" for s, t in frame.select("symbol", "ts_ns").iter_rows()]


@pytest.fixture
def store() -> Iterator[ChromaVectorStore]:
    client = make_client()  # in-memory clients share collections: a unique name per test
    s = ChromaVectorStore(client, f"test-{uuid.uuid4().hex}", 512)
    yield s
    client.delete_collection(s.name)


def test_collection_configuration_reads_back(store: ChromaVectorStore) -> None:
    assert isinstance(store, VectorStore)
    config = store.collection.configuration_json
    assert config["hnsw"]["space"] == "cosine"
    assert config["hnsw"]["max_neighbors"] == 16
    assert config["hnsw"]["ef_construction"] == 200
    assert config["hnsw"]["ef_search"] == EF_SEARCH
    # never Chroma's default (ONNX model) embedding function
    assert config["embedding_function"] != {"type": "known", "name": "default"}
    assert "default" not in str(config["embedding_function"])


def test_upsert_query_filter_count(store: ChromaVectorStore, frame: pl.DataFrame) -> None:
    head = frame.head(500)
    store.upsert(ids(head), vectors(head), metas(head))
    store.upsert(ids(head)[:10], vectors(head)[:10], metas(head)[:10])  # upsert: no duplicates
    assert store.count() == 500
    rng = np.random.default_rng(5)
    secs = head["ts_ns"].to_numpy() // NS
    q = vectors(frame.tail(20))
    for before in [*rng.choice(secs, 10).tolist(), int(secs.min()), int(secs.max()) + 1]:
        found = store.query(q, 10, before_ts=before)
        allowed = int((secs < before).sum())
        for row in found:
            assert len(row) == min(10, allowed)
            assert all(nb.ts // NS < before for nb in row)
            assert all(-1.0 <= nb.similarity <= 1.0 + 1e-6 for nb in row)
    (row,) = store.query(vectors(head)[:1], 1)  # a stored vector finds itself
    assert row[0].id == ids(head)[0]
    assert row[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert row[0].ts == head["ts_ns"][0]  # Neighbour.ts is nanoseconds


def test_results_are_checked_against_before_ts(store: ChromaVectorStore) -> None:
    class Leaky:  # a collection whose where clause lets a future entry through
        def query(self, **_: Any) -> dict[str, Any]:
            metas = [{"symbol": "X", "ts": 5, "ts_ns": 5 * NS, "outcome": 0.1},
                     {"symbol": "X", "ts": 9, "ts_ns": 9 * NS, "outcome": 0.2}]  # fmt: skip
            return {"ids": [["a", "b"]], "metadatas": [metas], "distances": [[0.1, 0.2]]}

    store.collection = Leaky()  # type: ignore[assignment]
    (row,) = store.query(np.ones((1, 512), np.float32), 2, before_ts=9)
    assert [nb.id for nb in row] == ["a"]


def test_upserts_and_reads_are_chunked_to_the_max_batch(
    store: ChromaVectorStore, frame: pl.DataFrame
) -> None:
    batch = store.client.get_max_batch_size()
    n = batch + 37
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((n, 512)).astype(np.float32)
    real = store.collection
    sizes: list[int] = []

    class Spy:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def upsert(self, **kw: Any) -> None:
            sizes.append(len(kw["ids"]))
            real.upsert(**kw)

    store.collection = Spy()  # type: ignore[assignment]
    metas = [{"symbol": "X", "ts": i, "ts_ns": i * NS, "outcome": 0.0} for i in range(n)]
    store.upsert([f"id{i}" for i in range(n)], vecs, metas)  # type: ignore[arg-type]
    assert sizes == [batch, 37]
    got_ids, got_vecs, got_metas = store.get_all()
    assert len(got_ids) == n == len(set(got_ids))
    order = np.argsort([int(i[2:]) for i in got_ids])
    np.testing.assert_allclose(got_vecs[order], vecs, rtol=1e-6)
    assert got_metas[order[7]]["ts"] == 7
    assert store.delete_before(100) == 100
    assert store.count() == n - 100


def test_a_dimension_mismatch_is_a_clear_error(store: ChromaVectorStore) -> None:
    store.upsert(["a"], np.ones((1, 512), np.float32),
                 [{"symbol": "X", "ts": 1, "ts_ns": NS, "outcome": 0.0}])  # fmt: skip
    with pytest.raises(StorageError, match=r"holds 512-dimensional vectors, expected 64"):
        ChromaVectorStore(store.client, store.name, 64)
    with pytest.raises(StorageError, match=r"takes \(n, 512\) vectors, got shape \(1, 3\)"):
        store.upsert(["b"], np.ones((1, 3)), [{"ts": 1}])
    with pytest.raises(StorageError, match=r"queried with \(n, 512\) vectors"):
        store.query(np.ones((1, 3)), 1)


def test_an_existing_collection_in_another_space_is_refused() -> None:
    client = make_client()
    name = f"test-{uuid.uuid4().hex}"
    client.create_collection(name, embedding_function=None, configuration={"hnsw": {"space": "l2"}})
    try:
        with pytest.raises(StorageError, match=r"uses space 'l2'.*needs 'cosine'"):
            ChromaVectorStore(client, name, 512)
    finally:
        client.delete_collection(name)


def test_bad_collection_names_and_urls() -> None:
    with pytest.raises(StorageError, match="'ab'"):
        ChromaVectorStore(make_client(), "ab", 512)
    for url in ("localhost:8000", "ftp://127.0.0.1:8000", "http://", "http://h:99999",
                "http://127.0.0.1:8000/api"):  # fmt: skip
        with pytest.raises(StorageError, match="bad Chroma url"):
            make_client(url=url)
    with pytest.raises(StorageError, match="not both"):
        make_client(path="x", url="http://127.0.0.1:8000")


def test_an_unreachable_server_is_named() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(
        StorageError, match=rf"cannot reach a Chroma server at 'http://127.0.0.1:{port}'"
    ):
        make_client(url=f"http://127.0.0.1:{port}")


def test_a_persistent_memory_survives_reopening(tmp_path: Path, frame: pl.DataFrame) -> None:
    def open_memory() -> PatternMemory:
        store = ChromaVectorStore(make_client(path=tmp_path / "chroma"), "patterns", 512)
        return PatternMemory(store, strategy_id="s", horizon=6, search="simhash")

    rows = frame.head(1500)
    memory = open_memory()
    memory.observe(rows["symbol"].to_list(), rows["ts_ns"].to_numpy(), rows["n"].to_numpy(),
                   rows["price"].to_numpy(), vectors(rows))  # fmt: skip
    queries = vectors(frame.tail(30))
    now = int(frame["ts_ns"].max()) + NS
    before = memory.predict(queries, now)
    size = memory.size
    del memory

    reopened = open_memory()
    assert reopened.size == 0
    assert reopened.load() == size
    after = reopened.predict(queries, now)
    assert [[n.id for n in r] for r in after.neighbours] == [
        [n.id for n in r] for r in before.neighbours
    ]
    np.testing.assert_allclose(after.advice, before.advice, atol=1e-6)
    # the look-ahead guard survives too: outcome times come back from the metadata
    past = int(rows["ts_ns"][700])
    for row in reopened.predict(queries, past).neighbours:
        for nb in row:
            known = reopened.index.known_ns(nb.id)
            assert known is not None
            assert nb.ts < past
            assert known <= past


def test_load_refuses_another_strategys_patterns(store: ChromaVectorStore) -> None:
    store.upsert(["strategy:other:pattern:1:X"], np.ones((1, 512), np.float32),
                 [{"symbol": "X", "ts": 1, "ts_ns": NS, "outcome": 0.0}])  # fmt: skip
    with pytest.raises(StorageError, match="not a pattern of strategy 'mine'"):
        PatternMemory(store, strategy_id="mine").load()
