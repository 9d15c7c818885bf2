"""Signal generation speed: the strategy's decision, the pattern memory, ONNX inference.

Cases, on real data (the bundled 5-minute BTC pairs and 1-minute BTC-PERP bars):

* **decision**: feature batch -> signals for 1000-row batches of the BTC pairs (10 symbols;
  ``--quick``: the first 20,000 rows), `HedgeStrategy` over all five experts (three rules, the
  bundled ONNX model, the pattern memory with one query per symbol per batch and every 4th bar
  stored, the engine's defaults), p50/p95 of ``on_features`` after 5 warm-up batches; the
  learning step that follows (``learn``: Hedge update and storing resolved patterns in Chroma)
  is timed apart.
* **pattern memory**: N stored 512-d embeddings of real feature windows (N = 100,000;
  ``--quick``: 20,000), the next held-out windows as queries (each strictly after every stored
  one). Insert rate into Chroma (M=16, ef_construction=200); single-query p50/p95 and recall@10
  against exact brute force, through `PatternMemory.predict` for the Chroma path and the
  in-process SimHash path, with numpy brute force as the reference.
* **inference**: one-row p50/p99 of the same MLP in onnxruntime and in torch eager.

Prints a table and, as its last line, one JSON object with the figures, the references' and
the ratios.

    python benchmarks/bench_signals.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from _rows import row

from quantlab.adapters.sim.data import bundled_dir
from quantlab.core.clock import SimulatedClock
from quantlab.features import compute, get_spec
from quantlab.signals.experts import RULE_EXPERTS, ModelExpert, PatternExpert
from quantlab.signals.hedge_strategy import Expert, HedgeStrategy
from quantlab.signals.models import BUNDLED_MODELS, ModelRegistry, label_windows
from quantlab.signals.patterns import Embedder, PatternMemory
from quantlab.signals.strategy import StrategyContext
from quantlab.signals.windows import CHANNELS, WindowBuffer
from quantlab.storage.vectors import ChromaVectorStore, make_client

K = 10
DIM, WINDOW, HORIZON = 512, 64, 12


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 4)


def features() -> list[pl.DataFrame]:
    return [
        compute(pl.read_parquet(bundled_dir() / name).sort("timestamp"))
        for name in ("binance_btc_pairs_5m_2018-01.parquet", "btc_perp_1m_2022-01.parquet")
    ]


# -- decision latency -------------------------------------------------------------------------
def decision(frames: list[pl.DataFrame], tmp: Path, rows: int | None) -> dict[str, object]:
    warm_batches = 5
    model = ModelRegistry(BUNDLED_MODELS).load("direction_mlp", feature_spec=get_spec("default").id)
    store = ChromaVectorStore(make_client(path=tmp / "decision"), "decision", DIM)
    memory = PatternMemory(store, strategy_id="bench", dim=DIM, window=WINDOW, horizon=HORIZON)
    experts: dict[str, Expert] = {
        **RULE_EXPERTS,
        "model": ModelExpert(model),
        "patterns": PatternExpert(memory, Embedder(WINDOW, len(CHANNELS), DIM), store_every=4),
    }
    strat = HedgeStrategy(experts, strategy_id="bench", horizon=HORIZON)
    ctx = StrategyContext(clock=SimulatedClock(0), assumed_spread_bps=5.0)
    decide, learn, signals = [], [], 0
    data = frames[0] if rows is None else frames[0].head(rows)
    for i, batch in enumerate(data.iter_slices(1000)):
        t = time.perf_counter()
        signals += len(strat.on_features(batch, ctx))
        t1 = time.perf_counter()
        strat.learn()
        t2 = time.perf_counter()
        if i >= warm_batches and batch.height == 1000:
            decide.append((t1 - t) * 1e3)
            learn.append((t2 - t1) * 1e3)
    return {
        "batches": len(decide),
        "stored_patterns": memory.size,
        "signals": signals,
        "decide_ms_p50": pct(decide, 50),
        "decide_ms_p95": pct(decide, 95),
        "learn_ms_p50": pct(learn, 50),
        "learn_ms_p95": pct(learn, 95),
        "target_decide_ms_p95": 5.0,
    }


# -- pattern memory ---------------------------------------------------------------------------
def embedded(frames: list[pl.DataFrame]) -> pl.DataFrame:
    embedder = Embedder(WINDOW, len(CHANNELS), DIM)
    parts = []
    for f in frames:
        windows, full = WindowBuffer(WINDOW).windows(f)
        rows = f.filter(pl.Series(full)).select(
            "symbol", pl.col("timestamp").cast(pl.Datetime("ns", "UTC")), "n", "price"
        )
        parts.append(rows.with_columns(pl.Series("vec", list(embedder.embed(windows[full])))))
    return pl.concat(parts).sort("timestamp", maintain_order=True)


def memory_case(frames: list[pl.DataFrame], tmp: Path, n_stored: int, n_queries: int) -> dict:
    rows = embedded(frames)
    if rows.height < n_stored + n_queries:
        raise SystemExit(f"only {rows.height} real windows; need {n_stored + n_queries}")
    stored, queries = rows.head(n_stored), rows.slice(n_stored, n_queries)
    store = ChromaVectorStore(make_client(path=tmp / "memory"), "memory", DIM)
    memory = PatternMemory(store, strategy_id="bench", dim=DIM, window=WINDOW, horizon=HORIZON, k=K)
    ts = stored["timestamp"].cast(pl.Int64).to_numpy()
    vecs = np.stack(stored["vec"].to_numpy()).astype(np.float32)
    # File every window, then the rows HORIZON later resolve them and they go to Chroma.
    t = time.perf_counter()
    memory.observe(stored["symbol"].to_list(), ts, stored["n"].to_numpy(),
                   stored["price"].to_numpy(), vecs)  # fmt: skip
    insert_s = time.perf_counter() - t
    inserted = memory.size
    ids = [memory.pattern_id(int(a), s) for a, s in zip(ts, stored["symbol"], strict=True)]
    have = {pid for pid in store.get_all()[0]}
    keep = np.array([pid in have for pid in ids])
    base, base_ids = vecs[keep], [pid for pid, k in zip(ids, keep, strict=True) if k]
    q = np.stack(queries["vec"].to_numpy()).astype(np.float32)
    q_ts = queries["timestamp"].cast(pl.Int64).to_numpy()

    def exact(i: int) -> list[str]:
        sims = base @ q[i]
        top = np.argpartition(-sims, K)[:K]
        return [base_ids[j] for j in top[np.argsort(-sims[top])]]

    brute = []
    truth = []
    for i in range(len(q)):
        t = time.perf_counter()
        truth.append(exact(i))
        brute.append((time.perf_counter() - t) * 1e3)
    out: dict[str, object] = {
        "stored": inserted,
        "insert_per_s": round(inserted / insert_s, 1),
        "queries": len(q),
        "numpy_brute_force_ms_p50": pct(brute, 50),
        "numpy_brute_force_ms_p95": pct(brute, 95),
    }
    for path in ("chroma", "simhash"):
        memory.search = path  # type: ignore[assignment]
        memory.predict(q[:5], q_ts[:5])  # warm
        lat, hits = [], 0
        for i in range(len(q)):
            t = time.perf_counter()
            pred = memory.predict(q[i : i + 1], int(q_ts[i]))
            lat.append((time.perf_counter() - t) * 1e3)
            hits += len({nb.id for nb in pred.neighbours[0]} & set(truth[i]))
        out[path] = {
            "ms_p50": pct(lat, 50),
            "ms_p95": pct(lat, 95),
            "recall_at_10": round(hits / (K * len(q)), 4),
        }
    out["targets"] = {"query_ms_p95": 3.0, "recall_at_10": 0.98}
    return out


# -- inference --------------------------------------------------------------------------------
def inference(frames: list[pl.DataFrame], n: int) -> dict[str, object]:
    import torch

    from quantlab.signals.models import train

    data = label_windows(frames[1].head(6_000), window=32, horizon=HORIZON)
    config = train.TrainConfig(epochs=1, stride=4, n_splits=2)
    model = train.fit(data, config).eval()
    onnx_bytes, parity = train.export_onnx(model, data.windows[:256])
    from quantlab.signals.models.onnx_model import session

    sess = session(onnx_bytes)
    torch.set_num_threads(1)
    rows = data.windows[:n]
    ort_lat, torch_lat = [], []
    for i in range(n):
        x = rows[i : i + 1]
        t = time.perf_counter()
        sess.run(None, {"windows": x})
        ort_lat.append((time.perf_counter() - t) * 1e6)
        xt = torch.from_numpy(x)
        t = time.perf_counter()
        with torch.inference_mode():
            model(xt)
        torch_lat.append((time.perf_counter() - t) * 1e6)
    return {
        "rows": n,
        "parity_max_abs_diff": parity,
        "onnxruntime_us_p50": pct(ort_lat, 50),
        "onnxruntime_us_p99": pct(ort_lat, 99),
        "torch_eager_us_p50": pct(torch_lat, 50),
        "torch_eager_us_p99": pct(torch_lat, 99),
        "torch_over_onnx_p50": round(pct(torch_lat, 50) / pct(ort_lat, 50), 2),
    }


def main(quick: bool) -> dict[str, Any]:
    frames = features()
    with tempfile.TemporaryDirectory() as tmp:
        out: dict[str, Any] = {
            "benchmark": "signals",
            "quick": quick,
            "machine": f"{platform.machine()} python {platform.python_version()}",
            "decision": decision(frames, Path(tmp), 20_000 if quick else None),
            "pattern_memory": memory_case(
                frames, Path(tmp), 20_000 if quick else 100_000, 200 if quick else 1_000
            ),
            "inference": inference(frames, 2_000 if quick else 10_000),
        }
    return out


def table_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Headline rows for `quantlab bench`: decision latency, the pattern queries against numpy
    brute force, insertion, and one-row inference against torch eager."""
    d, m, inf = result["decision"], result["pattern_memory"], result["inference"]
    goals = m["targets"]
    brute = {"reference": m["numpy_brute_force_ms_p95"], "reference_name": "numpy brute force"}
    size = f"{m['stored']:,} × 512"
    rows = [
        row("feature batch → signals, 1000 rows, all experts", "p95 ms", d["decide_ms_p95"],
            better="lower", target=d["target_decide_ms_p95"]),
        row("learning after the batch (Hedge update, storing patterns)", "p95 ms",
            d["learn_ms_p95"], better="lower"),
    ]  # fmt: skip
    for key, label in (("simhash", "in-process SimHash"), ("chroma", "Chroma (HNSW)")):
        r = m[key]
        rows += [
            row(f"pattern query, {label}, {size}", "p95 ms", r["ms_p95"], better="lower",
                target=goals["query_ms_p95"], **brute),
            row(f"pattern query, {label}, {size}", "recall@10", r["recall_at_10"],
                better="higher", target=goals["recall_at_10"]),
        ]  # fmt: skip
    rows += [
        row(f"insertion into Chroma, {m['stored']:,} vectors", "vectors/s", m["insert_per_s"],
            better="higher"),
        row("ONNX MLP inference, one row", "p50 µs", inf["onnxruntime_us_p50"],
            better="lower", reference=inf["torch_eager_us_p50"], reference_name="torch eager"),
    ]  # fmt: skip
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a run that finishes within a minute")
    res = main(ap.parse_args().quick)
    d, m, inf = res["decision"], res["pattern_memory"], res["inference"]
    print(
        f"decision, 1000-row batch, 10 symbols, all experts: p50 {d['decide_ms_p50']} ms, "
        f"p95 {d['decide_ms_p95']} ms (learning after it: p50 {d['learn_ms_p50']} ms)"
    )
    print(f"pattern memory: {m['stored']:,} stored, insert {m['insert_per_s']:,} vectors/s")
    print(f"{'query path':18s} {'p50 ms':>8s} {'p95 ms':>8s} {'recall@10':>10s}")
    for path in ("chroma", "simhash"):
        r = m[path]
        print(f"{path:18s} {r['ms_p50']:>8} {r['ms_p95']:>8} {r['recall_at_10']:>10}")
    print(f"{'numpy brute force':18s} {m['numpy_brute_force_ms_p50']:>8} "
          f"{m['numpy_brute_force_ms_p95']:>8} {1.0:>10}")  # fmt: skip
    print(f"one-row inference: onnxruntime p50 {inf['onnxruntime_us_p50']} us "
          f"p99 {inf['onnxruntime_us_p99']} us; torch eager p50 {inf['torch_eager_us_p50']} us "
          f"p99 {inf['torch_eager_us_p99']} us")  # fmt: skip
    res["rows"] = table_rows(res)
    print(json.dumps(res))
