"""The pattern memory on real feature windows: embedding, outcomes, search, no look-ahead."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

import quantlab.features as qf
from quantlab.core.errors import DataError
from quantlab.signals.patterns import (
    Embedder,
    Neighbour,
    PatternMemory,
    SimHashIndex,
    VectorStore,
)
from quantlab.signals.windows import window_array
from quantlab.storage.vectors import ChromaVectorStore, make_client

NS = 1_000_000_000
DAY = 86_400 * NS


@dataclass
class Rows:
    symbol: list[str]
    ts: np.ndarray  # int ns
    n: np.ndarray
    price: np.ndarray
    vec: np.ndarray

    def __len__(self) -> int:
        return len(self.symbol)

    def take(self, sl: slice | np.ndarray) -> Rows:
        idx = np.arange(len(self))[sl]
        return Rows([self.symbol[i] for i in idx], self.ts[idx], self.n[idx], self.price[idx],
                    self.vec[idx])  # fmt: skip

    def observe(self, memory: PatternMemory) -> int:
        return memory.observe(self.symbol, self.ts, self.n, self.price, self.vec)


def bars(data_dir: Path, rows: int = 6000) -> pl.DataFrame:
    return pl.read_parquet(data_dir / "binance_btc_pairs_5m_2018-01.parquet").head(rows)


def full_rows(features: pl.DataFrame) -> Rows:
    w, full = window_array(features)
    f = features.filter(pl.Series(full))
    return Rows(
        f["symbol"].to_list(),
        f["timestamp"].to_numpy().astype("datetime64[ns]").astype(np.int64),
        f["n"].to_numpy(),
        f["price"].to_numpy(),
        Embedder().embed(w[full]),
    )


@pytest.fixture(scope="module")
def real(data_dir: Path) -> Rows:
    return full_rows(qf.compute(bars(data_dir), spec="default"))


class DictStore:
    """An exact in-memory `VectorStore` (the port, without Chroma)."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}

    def upsert(
        self, ids: list[str], vectors: np.ndarray, metadatas: list[dict[str, str | int | float]]
    ) -> None:
        for i, v, m in zip(ids, vectors, metadatas, strict=True):
            self.rows[i] = (np.asarray(v, np.float32), dict(m))

    def query(
        self, vectors: np.ndarray, k: int, *, before_ts: int | None = None
    ) -> list[list[Neighbour]]:
        ids = [i for i, (_, m) in self.rows.items() if before_ts is None or m["ts"] < before_ts]
        if not ids:
            return [[] for _ in vectors]
        mat = np.stack([self.rows[i][0] for i in ids])
        sims = np.asarray(vectors) @ mat.T
        out = []
        for s in sims:
            best = np.argsort(-s, kind="stable")[:k]
            out.append([Neighbour(ids[j], self.rows[ids[j]][1]["symbol"],
                                  self.rows[ids[j]][1]["ts_ns"], self.rows[ids[j]][1]["outcome"],
                                  float(s[j])) for j in best])  # fmt: skip
        return out

    def get_all(self) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
        ids = list(self.rows)
        vecs = np.stack([self.rows[i][0] for i in ids]) if ids else np.empty((0, 512))
        return ids, vecs, [self.rows[i][1] for i in ids]

    def delete_before(self, ts: int) -> int:
        gone = [i for i, (_, m) in self.rows.items() if m["ts"] < ts]
        for i in gone:
            del self.rows[i]
        return len(gone)

    def count(self) -> int:
        return len(self.rows)


@pytest.fixture
def chroma() -> Iterator[ChromaVectorStore]:
    client = make_client()
    store = ChromaVectorStore(client, f"test-{uuid.uuid4().hex}", 512)
    yield store
    client.delete_collection(store.name)


# --- embedding ------------------------------------------------------------------------------


def test_embedding_is_deterministic_unit_and_fast_path_free(real: Rows, data_dir: Path) -> None:
    w, full = window_array(qf.compute(bars(data_dir, 3000), spec="default"))
    a = Embedder().embed(w[full])
    b = Embedder().embed(w[full].copy())
    assert a.dtype == np.float32
    assert a.shape == (int(full.sum()), 512)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    # a projection to another dimension is drawn from a module seed: equal in every instance
    p, q = Embedder(dim=128).embed(w[full][:50]), Embedder(dim=128).embed(w[full][:50])
    np.testing.assert_array_equal(p, q)
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), 1.0, atol=1e-5)


def test_embedding_is_free_of_the_price_scale(data_dir: Path) -> None:
    raw = bars(data_dir, 3000)
    scaled = raw.with_columns(pl.col("open", "high", "low", "close") * 1000.0)
    w1, full1 = window_array(qf.compute(raw, spec="default"))
    w2, full2 = window_array(qf.compute(scaled, spec="default"))
    np.testing.assert_array_equal(full1, full2)
    e1, e2 = Embedder().embed(w1[full1]), Embedder().embed(w2[full2])
    assert np.abs(e1).max() > 0.05
    np.testing.assert_allclose(e1, e2, atol=2e-5)
    assert float(np.min(np.sum(e1 * e2, axis=1))) > 0.99999


def test_flat_and_non_finite_windows() -> None:
    rng = np.random.default_rng(3)
    w = rng.standard_normal((3, 64, 8)).astype(np.float32)
    w[0, :, 2] = 0.25  # one flat channel -> zeros in that channel, rest unit
    w[1] = 7.0  # all flat -> the zero vector
    w[2, 10, 4] = np.nan  # non-finite -> the zero vector
    e = Embedder().embed(w)
    assert np.all(e[0].reshape(64, 8)[:, 2] == 0)
    assert np.linalg.norm(e[0]) == pytest.approx(1.0, abs=1e-6)
    assert not e[1].any()
    assert not e[2].any()


def test_embedder_names_a_bad_shape() -> None:
    with pytest.raises(DataError, match=r"\(n, 64, 8\), got \(2, 32, 8\)"):
        Embedder().embed(np.zeros((2, 32, 8)))


# --- SimHash index --------------------------------------------------------------------------


def test_simhash_is_exact_below_its_candidate_count_and_filters_first(real: Rows) -> None:
    index = SimHashIndex(512, candidates=500)
    base, queries = real.vec[:400], real.vec[-20:]
    ts = real.ts[:400]
    index.add([f"p{i}" for i in range(400)], base, ts_ns=ts, symbols=real.symbol[:400],
              outcomes=np.zeros(400))  # fmt: skip
    cut = int(np.median(ts))
    found = index.query(queries, 10, before_ns=cut)
    sims = queries @ base.T
    sims[:, ts >= cut] = -np.inf
    for row, s in zip(found, sims, strict=True):
        assert [nb.id for nb in row] == [f"p{j}" for j in np.argsort(-s, kind="stable")[:10]]
        assert all(nb.ts < cut for nb in row)
        assert [nb.similarity for nb in row] == sorted((nb.similarity for nb in row), reverse=True)


def test_simhash_upsert_replaces_and_delete_before(real: Rows) -> None:
    index = SimHashIndex(512)
    index.add(["a", "b"], real.vec[:2], ts_ns=np.array([1, 2]), symbols=["X", "Y"],
              outcomes=np.array([0.1, 0.2]))  # fmt: skip
    index.add(["a"], real.vec[5:6], ts_ns=np.array([3]), symbols=["Z"], outcomes=np.array([0.3]))
    assert len(index) == 2
    (hit,) = index.query(real.vec[5:6], 1)
    assert (hit[0].id, hit[0].symbol, hit[0].ts, hit[0].outcome) == ("a", "Z", 3, 0.3)
    assert index.delete_before(3) == 1
    assert [nb.id for nb in index.query(real.vec[:1], 5)[0]] == ["a"]
    with pytest.raises(DataError, match="row 0 is zero"):
        index.add(["z"], np.zeros((1, 512)), ts_ns=np.array([1]), symbols=["X"],
                  outcomes=np.zeros(1))  # fmt: skip


# --- outcomes, ids and metadata -------------------------------------------------------------


def test_outcomes_resolve_across_calls_per_symbol(real: Rows) -> None:
    store = DictStore()
    assert isinstance(store, VectorStore)
    memory = PatternMemory(store, strategy_id="s1", horizon=12, search="simhash")
    rows = real.take(slice(0, 1500))
    resolved = sum(rows.take(sl).observe(memory) for sl in
                   (slice(0, 7), slice(7, 300), slice(300, 301), slice(301, 1500)))  # fmt: skip
    frame = pl.DataFrame({"symbol": rows.symbol, "ts": rows.ts, "price": rows.price,
                          "n": rows.n})  # fmt: skip
    expected = frame.with_columns(
        pl.col("price").shift(-12).over("symbol").alias("later"),
        pl.col("n").shift(-12).over("symbol").alias("n_later"),
        pl.col("ts").shift(-12).over("symbol").alias("known"),
    ).filter(pl.col("later").is_not_null())
    assert (expected["n_later"] - expected["n"] == 12).all()
    assert resolved == expected.height == store.count() == memory.size
    assert memory.metrics()["pending"] == 12 * frame["symbol"].n_unique()
    ids, _, metas = store.get_all()
    got = {i: m for i, m in zip(ids, metas, strict=True)}
    for sym, ts, price, later, known in expected.select(
        "symbol", "ts", "price", "later", "known"
    ).iter_rows():
        meta = got[f"strategy:s1:pattern:{ts}:{sym}"]
        assert meta == {
            "symbol": sym,
            "ts": ts // NS,
            "ts_ns": ts,
            "outcome": pytest.approx(np.log(later / price), rel=1e-12),
            "known_ns": known,
        }
        assert type(meta["ts"]) is int
        assert type(meta["ts_ns"]) is int
        assert type(meta["outcome"]) is float


def test_ids_and_metadata_in_chroma(real: Rows, chroma: ChromaVectorStore) -> None:
    memory = PatternMemory(chroma, strategy_id="ema-7", horizon=3, search="chroma")
    real.take(slice(0, 200)).observe(memory)
    ids, vecs, metas = chroma.get_all()
    assert len(ids) == memory.size > 0
    assert vecs.shape == (len(ids), 512)
    for id_, meta in zip(ids, metas, strict=True):
        prefix, strategy, kind, ts_ns, symbol = id_.split(":", 4)
        assert (prefix, strategy, kind) == ("strategy", "ema-7", "pattern")
        assert int(ts_ns) == meta["ts_ns"]
        assert symbol == meta["symbol"]
        assert set(meta) == {"symbol", "ts", "ts_ns", "outcome", "known_ns"}
        assert meta["ts"] == meta["ts_ns"] // NS
        assert meta["known_ns"] > meta["ts_ns"]


def test_bad_rows_are_skipped_or_named(real: Rows) -> None:
    memory = PatternMemory(DictStore(), strategy_id="s", horizon=2, search="simhash")
    rows = real.take(slice(0, 40))
    vec = rows.vec.copy()
    vec[0] = 0.0  # no window: filed nowhere, still a price
    price = rows.price.copy()
    price[1] = np.nan
    memory.observe(rows.symbol, rows.ts, rows.n, price, vec)
    assert memory.metrics()["skipped"] == 2
    with pytest.raises(DataError, match="observe needs 3 timestamps"):
        memory.observe(["A", "B", "C"], np.arange(2), np.arange(3), np.ones(3), np.ones((3, 512)))
    with pytest.raises(DataError, match="strategy_id"):
        PatternMemory(DictStore(), strategy_id="a:b")
    with pytest.raises(DataError, match="search must be"):
        PatternMemory(DictStore(), strategy_id="a", search="faiss")  # type: ignore[arg-type]


# --- predictions and look-ahead -------------------------------------------------------------


def test_empty_memory_advises_nothing() -> None:
    memory = PatternMemory(DictStore(), strategy_id="s")
    p = memory.predict(np.ones((3, 512), np.float32), 10**18)
    assert p.advice.tolist() == [0.0, 0.0, 0.0]
    assert p.confidence.tolist() == [0.0, 0.0, 0.0]
    assert p.neighbours == [[], [], []]


@pytest.mark.parametrize("search", ["simhash", "chroma"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_never_a_neighbour_from_the_future(
    real: Rows, chroma: ChromaVectorStore, search: str, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    memory = PatternMemory(chroma, strategy_id="s", horizon=6, k=8, search=search)  # type: ignore[arg-type]
    rows = real.take(slice(0, 2500))
    checked = 0
    start = 0
    while start < len(rows):
        batch = rows.take(slice(start, start + int(rng.integers(1, 400))))
        start += len(batch)
        first = bool(rng.integers(2))  # predict before observing, or after (the harder case)
        if not first:
            batch.observe(memory)
        extra = rng.integers(0, len(rows), 5)
        queries = np.concatenate([batch.vec, rows.vec[extra]])
        lo, hi = int(rows.ts[0]) - DAY, int(rows.ts[-1]) + DAY
        now = np.concatenate([batch.ts, rng.integers(lo, hi, 5)])
        pred = memory.predict(queries, now)
        if first:
            batch.observe(memory)
        for r, found in enumerate(pred.neighbours):
            for nb in found:
                known = memory.index.known_ns(nb.id)
                assert known is not None
                assert nb.ts < now[r], f"neighbour {nb.id} ended at/after now {now[r]}"
                assert known <= now[r], f"neighbour {nb.id} outcome known after now {now[r]}"
                checked += 1
        assert np.all(np.abs(pred.advice) <= 1)
        assert np.all((pred.confidence >= 0) & (pred.confidence <= 1))
    assert checked > 1000
    m = memory.metrics()
    assert m["future_dropped"] == 0
    if search == "chroma":
        assert m["search_path_rows"]["chroma"] > 0
    assert chroma.count() == memory.size


def test_chroma_and_simhash_agree(real: Rows, chroma: ChromaVectorStore) -> None:
    via_chroma = PatternMemory(chroma, strategy_id="s", search="chroma")
    in_process = PatternMemory(DictStore(), strategy_id="s", search="simhash")
    head = real.take(slice(0, 3000))
    head.observe(via_chroma)
    head.observe(in_process)
    tail = real.take(slice(3000, 3200))
    now = int(tail.ts.max()) + 1
    a, b = via_chroma.predict(tail.vec, now), in_process.predict(tail.vec, now)
    same = [
        len({n.id for n in x} & {n.id for n in y}) / 10
        for x, y in zip(a.neighbours, b.neighbours, strict=True)
    ]
    assert np.mean(same) > 0.97
    assert np.corrcoef(a.advice, b.advice)[0, 1] > 0.97


def test_advice_and_confidence_formula() -> None:
    store = DictStore()
    memory = PatternMemory(store, strategy_id="s", k=4, horizon=1, search="simhash")
    rng = np.random.default_rng(0)
    base = rng.standard_normal(512).astype(np.float32)
    vecs = np.stack([base + 0.1 * rng.standard_normal(512).astype(np.float32) for _ in range(3)])
    # three patterns, horizon 1: outcomes +, +, - ; the outcome rows carry no vector
    prices = np.array([1.0, 1.1, 1.0, 1.2, 1.0, 0.9])
    v = np.zeros((6, 512), np.float32)
    v[[0, 2, 4]] = vecs
    memory.observe(["A", "A", "B", "B", "C", "C"], np.arange(6) * NS, np.array([1, 2] * 3),
                   prices, v)  # fmt: skip
    pred = memory.predict(base[None, :], 10 * NS)
    sims = np.array([nb.similarity for nb in pred.neighbours[0]])
    signs = np.array([np.sign(nb.outcome) for nb in pred.neighbours[0]])
    assert len(sims) == 3
    advice = float(np.dot(sims, signs) / sims.sum())
    assert pred.advice[0] == pytest.approx(advice)
    assert pred.confidence[0] == pytest.approx(abs(advice) * sims.mean() * 3 / 4)


def test_sweep_deletes_exactly_the_expired(real: Rows, chroma: ChromaVectorStore) -> None:
    memory = PatternMemory(chroma, strategy_id="s", horizon=1, ttl_days=90, search="chroma")
    t0 = 1_600_000_000 * NS
    count = 300
    ts = t0 + np.arange(count) * (DAY // 2)  # one row every 12 h over 150 days
    memory.observe(["X"] * count, ts, np.arange(1, count + 1), real.price[:count] + 1.0,
                   real.vec[:count])  # fmt: skip
    assert memory.size == count - 1
    now = int(ts[-1])
    cutoff = now - 90 * DAY
    expected = {memory.pattern_id(int(t), "X") for t in ts[:-1] if t >= cutoff}
    deleted = memory.sweep(now)
    assert deleted == (count - 1) - len(expected)
    assert set(chroma.get_all()[0]) == expected
    found = memory.predict(real.vec[:50], now + 1).neighbours
    assert {nb.id for row in found for nb in row} <= expected
    assert memory.size == len(expected)
    assert memory.sweep(now) == 0


def test_simhash_a_repeated_id_in_one_call_keeps_the_last(real: Rows) -> None:
    index = SimHashIndex(512)
    index.add(["a", "b", "a"], real.vec[:3], ts_ns=np.array([1, 2, 3]), symbols=["X", "Y", "Z"],
              outcomes=np.array([0.1, 0.2, 0.3]))  # fmt: skip
    assert len(index) == 2
    (hit,) = index.query(real.vec[2:3], 1)
    assert (hit[0].id, hit[0].symbol, hit[0].ts, hit[0].outcome) == ("a", "Z", 3, 0.3)
