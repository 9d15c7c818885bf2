"""Pattern-memory search: Chroma HNSW vs the in-process SimHash index, on real windows.

Windows are built from the bundled real bars (10 Binance BTC pairs, 5 m, January 2018, and
BTC-PERP 1 m, January 2022: ~102k full 64x8 windows), embedded by `Embedder`. The last 500
windows of each dataset are held out as queries (1,000 in all); the memory of size N is the
first N of the remaining windows. Consecutive windows overlap, so querying with stored windows
would make recall look perfect; held-out queries give the honest figure.

For each N it measures, for batches of 1 and 10 query vectors, p50/p95 latency of:

* ``exact``: brute-force cosine (numpy/BLAS matmul over all N), the ground truth;
* ``simhash b/C``: `SimHashIndex` with b-bit signatures re-ranking the C Hamming-closest;
* ``chroma ef=E``: a Chroma collection (EphemeralClient, cosine, M=16, ef_construction=200)
  at ef_search E (one collection per E: Chroma applies ef_search when it loads the index),
  without a where clause and (``+where``, at ef_search 128, on fewer queries because it is
  slow) with a ``where ts < now`` that admits every stored window: the cost of the filter;

and recall@10 against exact over all 1,000 queries. It also reports Chroma's insertion rate,
whether two fresh collections built with the same inserts answer identically, and (at the
largest N) the recall and candidate share of hyperplane-table LSH, the design SimHash replaced.

    python benchmarks/measure_pattern_search.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import uuid
from pathlib import Path

import numpy as np
import polars as pl

import quantlab.features as qf
from quantlab.signals.patterns import Embedder, SimHashIndex
from quantlab.signals.windows import window_array
from quantlab.storage.vectors import ChromaVectorStore, make_client

DATA = Path(__file__).resolve().parents[1] / "src" / "quantlab" / "_data" / "market"
FILES = ("binance_btc_pairs_5m_2018-01.parquet", "btc_perp_1m_2022-01.parquet")
HELD_OUT = 500  # per dataset
K = 10
SIMHASH = ((256, 1000), (512, 250), (512, 500))
EF_SEARCH = (32, 64, 128, 256)
WHERE_EF = 128  # the ``where ts < now`` cost is measured at this ef_search


def windows() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(base vectors, base ts_ns, query vectors, query ts_ns)."""
    emb = Embedder()
    base_v, base_t, q_v, q_t = [], [], [], []
    for name in FILES:
        feats = qf.compute(pl.read_parquet(DATA / name), spec="default")
        w, full = window_array(feats)
        v = emb.embed(w[full])
        ts = feats["timestamp"].to_numpy()[full].astype("datetime64[ns]").astype(np.int64)
        base_v.append(v[:-HELD_OUT])
        base_t.append(ts[:-HELD_OUT])
        q_v.append(v[-HELD_OUT:])
        q_t.append(ts[-HELD_OUT:])
    return np.concatenate(base_v), np.concatenate(base_t), np.concatenate(q_v), np.concatenate(q_t)


def timed(fn, queries: np.ndarray, batch: int, limit: int) -> tuple[float, float, list]:  # type: ignore[no-untyped-def]
    lat, out = [], []
    for i in range(0, min(len(queries), limit), batch):
        t = time.perf_counter()
        out.extend(fn(queries[i : i + batch]))
        lat.append(time.perf_counter() - t)
    ms = np.asarray(lat) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), out


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    hits = [len(set(f) & set(t.tolist())) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) / truth.shape[1]


def exact_search(base: np.ndarray):  # type: ignore[no-untyped-def]
    def run(q: np.ndarray) -> list[list[int]]:
        sims = q @ base.T
        top = np.argpartition(-sims, K, axis=1)[:, :K]
        return [t[np.argsort(-s[t])].tolist() for t, s in zip(top, sims, strict=True)]

    return run


def row(name: str, n: int, results: dict[int, tuple[float, float, float]]) -> str:
    cells = [f"{name:<22}{n:>8}"]
    for b in (1, 10):
        p50, p95, rec = results[b]
        cells.append(f"{p50:>8.2f}{p95:>8.2f}{rec:>8.4f}")
    return "".join(cells)


def measure(sizes: list[int], latency_queries: int) -> None:
    t0 = time.perf_counter()
    base_all, ts_all, queries, _ = windows()
    print(
        f"{len(base_all)} stored windows available, {len(queries)} held-out queries "
        f"(built in {time.perf_counter() - t0:.1f} s); {platform.processor() or platform.machine()}"
        f", {os.cpu_count()} CPUs"
    )
    # a `where ts < now` filter that admits every stored window: its cost, not its effect
    before_s = int(ts_all.max() // 1_000_000_000) + 1
    header = f"{'search':<22}{'N':>8}" + "".join(
        f"{f'b={b} p50 ms':>10}{'p95 ms':>8}{'rec@10':>6}" for b in (1, 10)
    )
    print(header)
    inserts: dict[tuple[int, int], float] = {}
    client = make_client()
    for n in sizes:
        base, ts = base_all[:n], ts_all[:n]
        truth = np.array(exact_search(base)(queries))
        results: dict[int, tuple[float, float, float]] = {}
        for b in (1, 10):
            p50, p95, found = timed(exact_search(base), queries, b, len(queries))
            results[b] = (p50, p95, recall(found, truth))
        print(row("exact (numpy)", n, results), flush=True)
        for bits, cand in SIMHASH:
            index = SimHashIndex(512, bits=bits, candidates=cand)
            index.add([str(i) for i in range(n)], base, ts_ns=ts, symbols=["s"] * n,
                      outcomes=np.zeros(n))  # fmt: skip
            index.query(queries[:1], K)  # compile / load the kernel

            def search(q: np.ndarray, index: SimHashIndex = index) -> list[list[int]]:
                found = index.query(q, K, before_ns=before_s * 1_000_000_000)
                return [[int(nb.id) for nb in r] for r in found]

            for b in (1, 10):
                p50, p95, _ = timed(search, queries, b, latency_queries)
                _, _, found = timed(search, queries, 10, len(queries))
                results[b] = (p50, p95, recall(found, truth))
            print(row(f"simhash {bits}/{cand}", n, results), flush=True)
        metas: list[dict[str, str | int | float]] = [
            {"symbol": "s", "ts": int(t // 1_000_000_000), "ts_ns": int(t), "outcome": 0.0}
            for t in ts
        ]
        for ef in EF_SEARCH:
            store = ChromaVectorStore(client, f"bench-{uuid.uuid4().hex[:12]}", 512, ef_search=ef)
            t = time.perf_counter()
            store.upsert([str(i) for i in range(n)], base, metas)
            inserts[(n, ef)] = n / (time.perf_counter() - t)
            wheres = [None, before_s] if ef == WHERE_EF else [None]
            for before in wheres:

                def search_c(
                    q: np.ndarray, before: int | None = before, store: ChromaVectorStore = store
                ) -> list[list[int]]:
                    found = store.query(q, K, before_ts=before)
                    return [[int(nb.id) for nb in r] for r in found]

                search_c(queries[:1])
                # the where clause is slow: fewer queries for it
                lim = latency_queries if before is None else min(latency_queries, 100)
                rec_q = len(queries) if before is None else 200
                for b in (1, 10):
                    p50, p95, _ = timed(search_c, queries, b, lim)
                    _, _, found = timed(search_c, queries, 10, rec_q)
                    results[b] = (p50, p95, recall(found, truth[:rec_q]))
                label = f"chroma ef={ef}" + ("" if before is None else " +where")
                print(row(label, n, results), flush=True)
            client.delete_collection(store.name)
    print("chroma insertion rate (vectors/s, upserts in chunks of the max batch size):")
    for ef in EF_SEARCH:
        rates = ", ".join(f"N={n}: {r:,.0f}/s" for (n, e), r in inserts.items() if e == ef)
        print(f"  ef_search={ef} (ef_construction=200): {rates}")
    determinism(client, base_all[: min(10_000, sizes[-1])], ts_all, queries)
    tables(base_all[: sizes[-1]], queries)


def determinism(client, base: np.ndarray, ts: np.ndarray, queries: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    n = len(base)
    metas: list[dict[str, str | int | float]] = [
        {"symbol": "s", "ts": int(t // 1_000_000_000), "ts_ns": int(t), "outcome": 0.0}
        for t in ts[:n]
    ]
    answers = []
    for _ in range(2):
        store = ChromaVectorStore(client, f"det-{uuid.uuid4().hex[:12]}", 512)
        store.upsert([str(i) for i in range(n)], base, metas)
        res = store.query(queries, K)
        answers.append([[(nb.id, nb.similarity) for nb in r] for r in res])
        again = store.query(queries, K)
        same_twice = answers[-1] == [[(nb.id, nb.similarity) for nb in r] for r in again]
        client.delete_collection(store.name)
    ids_same = sum(
        [i for i, _ in a] == [i for i, _ in b] for a, b in zip(*answers, strict=True)
    )  # fmt: skip
    exact_same = sum(a == b for a, b in zip(*answers, strict=True))
    print(
        f"chroma determinism, two fresh collections, same {n} inserts in the same order, "
        f"{len(queries)} queries: identical ids {ids_same}/{len(queries)}, identical ids and "
        f"distances {exact_same}/{len(queries)}; same collection queried twice identical: "
        f"{same_twice}"
    )


def tables(base: np.ndarray, queries: np.ndarray) -> None:
    """Hyperplane-table LSH (b bits per table, L tables, exact bucket match): the share of
    the memory it must re-rank to reach a recall."""
    truth = np.array(exact_search(base)(queries))
    rng = np.random.default_rng(7)
    print(f"hyperplane-table LSH at N={len(base)} (rejected design):")
    for b in (8, 12, 16):
        for tables_ in (16, 32):
            planes = rng.standard_normal((base.shape[1], b * tables_)).astype(np.float32)
            weights = 1 << np.arange(b)
            kb = (((base @ planes) > 0).reshape(len(base), tables_, b) * weights).sum(-1)
            kq = (((queries @ planes) > 0).reshape(len(queries), tables_, b) * weights).sum(-1)
            hit = np.zeros((len(queries), len(base)), bool)
            for t in range(tables_):
                hit |= kq[:, t : t + 1] == kb[None, :, t]
            rec = np.mean([hit[i, truth[i]].mean() for i in range(len(queries))])
            print(f"  b={b:>2} L={tables_:>2}: recall@10 {rec:.4f}, re-ranks {hit.mean():.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 1k and 10k only")
    args = parser.parse_args()
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 50_000, 100_000]
    measure(sizes, latency_queries=200 if args.quick else 500)


if __name__ == "__main__":
    main()
