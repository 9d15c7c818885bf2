"""Scale: events/s through Redis Streams between two processes (part 1 of the scale issue).

A producer process publishes N `Trade` messages (the typed per-event message the engine sends,
e.g. on ``market.data.trade.<symbol>``) with `RedisStreamsBus.publish_many`, 10,000 payloads
per call, ``batch_size`` events per stream entry; a consumer process consumes them with
`RedisStreamsBus.consume` (a counting handler; acknowledgements are written as usual) until all
N have been handled. Throughput is N over the time from the first publish to the last handled
event. Measured on one topic and spread over 100 topics (one per symbol, 100 events per
`publish_many` call, one consumer group per stream). Also measured: `MarketBatch` messages
(Polars frames of 1,000 trade rows, what ingestion publishes on ``market.data.trade``, 20 per
call), counted in rows. Each figure is the best of ``--repeats`` runs (the median is given too),
with each process's CPU time per event (steadier than wall time on a busy machine).

Reference, in the same run and on the same redis-server: the naive way with redis-py, one
event per XADD round trip and one XREADGROUP (COUNT 1) + XACK per message (JSON payloads).

redis-server is started by the benchmark (`quantlab.testing.redis_server.RedisServer`).

    python benchmarks/bench_scale.py --quick                         # under a minute
    python benchmarks/bench_scale.py --out benchmarks/results/scale.txt   # ~1.5 minutes

Part 2: the end-to-end data -> order latency of the three-process topology. ``quantlab live
--role execution``, ``--role strategy`` and ``--role ingest`` run as three processes on the
same redis-server (synthetic source, EMA-crossover strategy, paper venue); the execution role
times every submission from its order's timestamp (the market event that caused it) to the
venue's answer, in a KLL sketch (`ExecutionEngine.data_to_order`). Reference, in the same run:
the same configuration as one process on the in-process bus (``--role all``). Per-stage p95s
of each role come from the run summaries.

The last stdout line is one JSON object: ``throughput`` (part 1) and ``latency`` (part 2).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import multiprocessing as mp
import platform
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from _rows import row

TOPIC_PREFIX = "market.data.trade"
SYMBOLS = [f"S{i:03d}USD" for i in range(100)]
NOW = 1_700_000_000_000_000_000
PUBLISH_CHUNK = 10_000  # payloads per publish_many call (the engine's publish batch)
TARGET_EVENTS_PER_S = 200_000  # DESIGN target of the scale issue
SPAWN = mp.get_context("spawn")


# -- payloads --------------------------------------------------------------------------------
def make_trades(n: int) -> list[Any]:
    from quantlab.core.messages import Trade

    return [
        Trade(
            symbol=SYMBOLS[i % len(SYMBOLS)],
            ts_event=NOW + i * 1_000,
            price=100.0 + (i % 997) * 0.01,
            size=1.0 + (i % 13),
            trade_id=str(i),
        )
        for i in range(n)
    ]


def make_market_batches(n_rows: int, rows_per_batch: int) -> list[Any]:
    import polars as pl

    from quantlab.core.enums import EventType
    from quantlab.core.messages import MarketBatch
    from quantlab.core.schemas import TRADE_SCHEMA

    out = []
    for seq, start in enumerate(range(0, n_rows, rows_per_batch)):
        k = min(rows_per_batch, n_rows - start)
        idx = range(start, start + k)
        frame = pl.DataFrame(
            {
                "symbol": [SYMBOLS[i % len(SYMBOLS)] for i in idx],
                "timestamp": [NOW + i * 1_000 for i in idx],
                "price": [100.0 + (i % 997) * 0.01 for i in idx],
                "size": [1.0 + (i % 13) for i in idx],
                "aggressor": [0] * k,
                "trade_id": [str(i) for i in idx],
            },
            schema=TRADE_SCHEMA,
        ).with_columns(pl.lit(0, pl.UInt32).alias("flags"))
        out.append(
            MarketBatch(
                kind=EventType.TRADE,
                frame=frame,
                seq=seq,
                ts_min=NOW + start * 1_000,
                ts_max=NOW + (start + k - 1) * 1_000,
                source="bench",
            )
        )
    return out


# -- our bus: producer and consumer processes ------------------------------------------------
def _bus_consumer(
    url: str, ns: str, kind: str, expected: int, ready: Any, out: Any, opts: dict[str, Any]
) -> None:
    from quantlab.adapters.redis.bus import RedisStreamsBus

    async def run() -> dict[str, Any]:
        bus = RedisStreamsBus(url, namespace=ns, **opts)
        done = asyncio.Event()
        state = {"n": 0, "first": 0.0, "last": 0.0}

        if kind == "trades":

            async def handler(envelope: Any) -> None:
                state["n"] += 1
                if state["n"] >= expected:
                    state["last"] = time.time()
                    done.set()

            pattern = f"{TOPIC_PREFIX}.*"
        else:

            async def handler(envelope: Any) -> None:
                state["n"] += envelope.payload.frame.height
                if state["n"] >= expected:
                    state["last"] = time.time()
                    done.set()

            pattern = TOPIC_PREFIX

        sub = bus.consume(pattern, handler, name="bench")
        await sub._ready_for_use()
        ready.set()
        cpu0 = time.process_time()
        await done.wait()
        t_handled = state["last"]
        cpu = time.process_time() - cpu0
        await bus._flush_now()  # every XACK written (the time of that is reported apart)
        t_acked = time.time()
        stats = sub.stats()
        await bus.close()
        return {"last": t_handled, "acked": t_acked, "cpu": cpu, "stats": stats}

    out.put(asyncio.run(run()))


def _bus_producer(
    url: str, ns: str, kind: str, n: int, ready: Any, out: Any, opts: dict[str, Any]
) -> None:
    from quantlab.adapters.redis.bus import RedisStreamsBus

    topics_n = opts.pop("topics", len(SYMBOLS))
    if kind == "trades":
        payloads = make_trades(n)
        # one topic per symbol, as the engine publishes single events (market.data.trade.<sym>)
        by_topic: dict[str, list[Any]] = {}
        for p in payloads:
            sym = p.symbol if topics_n > 1 else SYMBOLS[0]
            by_topic.setdefault(f"{TOPIC_PREFIX}.{sym}", []).append(p)
        # publish in chunks of PUBLISH_CHUNK, round-robin over the symbols' topics
        calls: list[tuple[str, list[Any]]] = []
        per_topic = max(1, PUBLISH_CHUNK // len(by_topic))
        offset = 0
        while any(offset < len(v) for v in by_topic.values()):
            for topic, items in by_topic.items():
                if offset < len(items):
                    calls.append((topic, items[offset : offset + per_topic]))
            offset += per_topic
    else:
        batches = make_market_batches(n, opts.pop("rows_per_batch"))
        calls = [(TOPIC_PREFIX, batches[i : i + 20]) for i in range(0, len(batches), 20)]

    async def run() -> dict[str, Any]:
        bus = RedisStreamsBus(url, namespace=ns, **opts)
        await bus._redis.ping()
        ready.wait()
        first = time.time()
        cpu0 = time.process_time()
        for topic, chunk in calls:
            await bus.publish_many(topic, chunk)
        last = time.time()
        cpu = time.process_time() - cpu0
        await bus.close()
        return {"first": first, "published": last, "cpu": cpu}

    out.put(asyncio.run(run()))


def _pair(
    producer: Any, consumer: Any, q_p: Any, q_c: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start a producer and a consumer process; their reports; both always joined."""
    consumer.start()
    producer.start()
    try:
        return q_p.get(timeout=300), q_c.get(timeout=300)
    finally:
        for proc in (producer, consumer):
            proc.join(30)
            if proc.is_alive():
                proc.kill()


def run_bus(url: str, kind: str, n: int, opts: dict[str, Any]) -> dict[str, Any]:
    """One run: a consumer process and a producer process of `RedisStreamsBus`."""
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    ready = SPAWN.Event()
    q_c, q_p = SPAWN.Queue(), SPAWN.Queue()
    consumer_opts = {k: v for k, v in opts.items() if k not in ("rows_per_batch", "topics")}
    c = SPAWN.Process(target=_bus_consumer, args=(url, ns, kind, n, ready, q_c, consumer_opts))
    p = SPAWN.Process(target=_bus_producer, args=(url, ns, kind, n, ready, q_p, dict(opts)))
    prod, cons = _pair(p, c, q_p, q_c)
    wall = cons["last"] - prod["first"]
    return {
        "events": n,
        "seconds": round(wall, 3),
        "events_per_s": round(n / wall),
        "publish_s": round(prod["published"] - prod["first"], 3),
        "acked_after_s": round(cons["acked"] - prod["first"], 3),
        # CPU time per event of each process: steadier than wall time on a busy machine
        "producer_cpu_us_per_event": round(prod["cpu"] / n * 1e6, 3),
        "consumer_cpu_us_per_event": round(cons["cpu"] / n * 1e6, 3),
        "consumer": cons["stats"],
    }


# -- the reference: redis-py, one event per round trip ---------------------------------------
def _naive_consumer(url: str, stream: str, expected: int, ready: Any, out: Any) -> None:
    import redis

    from quantlab.core.messages import from_json

    r = redis.Redis.from_url(url)
    r.xgroup_create(stream, "naive", id="$", mkstream=True)
    ready.set()
    n = 0
    while n < expected:
        resp = r.xreadgroup("naive", "c1", {stream: ">"}, count=1, block=1000)
        for _, entries in resp or []:
            for entry_id, fields in entries:
                from_json(fields[b"e"])
                n += 1
                r.xack(stream, "naive", entry_id)
    out.put({"last": time.time()})


def _naive_producer(url: str, stream: str, n: int, ready: Any, out: Any) -> None:
    import redis

    from quantlab.core.messages import to_json

    payloads = make_trades(n)
    r = redis.Redis.from_url(url)
    r.ping()
    ready.wait()
    first = time.time()
    for p in payloads:
        r.xadd(stream, {b"e": to_json(p)})
    out.put({"first": first, "published": time.time()})


def run_naive(url: str, n: int) -> dict[str, Any]:
    stream = f"naive-{uuid.uuid4().hex[:8]}"
    ready = SPAWN.Event()
    q_c, q_p = SPAWN.Queue(), SPAWN.Queue()
    c = SPAWN.Process(target=_naive_consumer, args=(url, stream, n, ready, q_c))
    p = SPAWN.Process(target=_naive_producer, args=(url, stream, n, ready, q_p))
    prod, cons = _pair(p, c, q_p, q_c)
    wall = cons["last"] - prod["first"]
    return {
        "events": n,
        "seconds": round(wall, 3),
        "events_per_s": round(n / wall),
        "publish_s": round(prod["published"] - prod["first"], 3),
    }


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [r["events_per_s"] for r in runs]
    best = max(runs, key=lambda r: r["events_per_s"])
    return {**best, "median_events_per_s": round(statistics.median(rates)), "runs": rates}


# -- part 1: throughput ----------------------------------------------------------------------
def measure_throughput(url: str, quick: bool, repeats: int, batch_size: int) -> dict[str, Any]:
    n = 200_000 if quick else 1_000_000
    n_rows = 400_000 if quick else 2_000_000
    n_naive = 20_000 if quick else 50_000
    opts: dict[str, Any] = {"batch_size": batch_size}
    trades = _best([run_bus(url, "trades", n, {**opts, "topics": 1}) for _ in range(repeats)])
    spread = _best(
        [run_bus(url, "trades", n, {**opts, "topics": len(SYMBOLS)}) for _ in range(repeats)]
    )
    batches = _best(
        [
            run_bus(url, "market_batches", n_rows, {**opts, "rows_per_batch": 1000})
            for _ in range(repeats)
        ]
    )
    naive = _best([run_naive(url, n_naive) for _ in range(repeats)])
    return {
        "payload": "Trade (typed message), 100 symbols",
        "batch_size": batch_size,
        "publish_many_chunk": PUBLISH_CHUNK,
        "bus_trades": {**trades, "topics": 1},
        "bus_trades_100_topics": {
            **spread,
            "topics": len(SYMBOLS),
            "publish_many_chunk": PUBLISH_CHUNK // len(SYMBOLS),
        },
        "bus_market_batches": {**batches, "rows_per_batch": 1000, "unit": "rows"},
        "naive_redis_py": naive,
        "ratios": {
            "bus_trades_vs_naive": round(trades["events_per_s"] / naive["events_per_s"], 2),
            "bus_trades_100_topics_vs_naive": round(
                spread["events_per_s"] / naive["events_per_s"], 2
            ),
            "bus_market_batch_rows_vs_naive": round(
                batches["events_per_s"] / naive["events_per_s"], 2
            ),
        },
        "targets": {"bus_trades_events_per_s": TARGET_EVENTS_PER_S},
        "meets_target": trades["events_per_s"] >= TARGET_EVENTS_PER_S,
    }


# -- part 2: end-to-end data -> order latency (three processes) ------------------------------
TARGET_P95_MS = 20.0  # data -> order p95 in the three-process topology
LATENCY_CONFIG = """\
[strategy]
name = "ema_cross"
id = "ema"
[features]
fast = 2
slow = 5
[[live.sources]]
type = "synthetic"
symbols = {symbols}
rate = {rate}
[risk]
orders_per_s = 1000
burst = 1000
[live]
monitor_every_s = 1.0
[storage]
lake_root = "{tmp}/lake"
[bus]
backend = "{backend}"
url = "{url}"
namespace = "{namespace}"
"""
STAGE_CONSUMERS = ("features", "strategies", "order_builder", "risk", "execution")


def _run_topology(
    url: str, roles: tuple[str, ...], *, symbols: int, rate: int, seconds: int
) -> dict[str, Any]:
    import tempfile

    from quantlab.testing.dashboard import DashboardStack

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        stack = DashboardStack(Path(tmp))
        try:
            config = LATENCY_CONFIG.format(
                symbols=symbols,
                rate=rate,
                tmp=Path(tmp).as_posix(),
                backend="memory" if roles == ("all",) else "redis",
                url=url,
                namespace=f"bench-{uuid.uuid4().hex[:8]}",
            )
            procs = stack.roles(config, roles, duration=seconds + 60)
            time.sleep(seconds)
            for role in reversed(roles):  # sources first, execution last
                procs[role].terminate()
                if procs[role].wait(timeout=90) != 0:
                    raise RuntimeError(f"role {role} failed:\n{stack.log(role)}")
            summaries = {}
            for path in Path(tmp, "runs").rglob("summary.json"):
                summary = json.loads(path.read_text())
                summaries[summary["role"]] = summary
        finally:
            stack.close()
    execution = summaries["execution" if "execution" in summaries else "all"]
    e2e = execution["execution"]["data_to_order"] or {}
    stages = {}
    for summary in summaries.values():
        for name, figures in summary["latency"]["consumers"].items():
            if name in STAGE_CONSUMERS:
                stages[name] = {"p95_ms": round(figures["p95_ms"], 3), "count": figures["count"]}
    ingest = summaries["ingest" if "ingest" in summaries else "all"]
    return {
        "processes": len(roles),
        "events": ingest["events"],
        "events_per_s": ingest["events_per_s"],
        "orders_submitted": e2e.get("count", 0),
        "fills": execution["fills"],
        "data_to_order_ms": {k: round(e2e[k], 3) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")}
        if e2e.get("count")
        else None,
        "stage_p95_ms": stages,
        "dead_letters": sum(s["dead_letters"] for s in summaries.values()),
    }


def measure_latency(url: str, quick: bool) -> dict[str, Any]:
    """Data -> order latency: three processes on Redis, and one process (the reference), at a
    light load and (full run) at a load that keeps one engine process busy."""
    seconds = 12 if quick else 40
    rates = (500,) if quick else (500, 2_000)
    out: dict[str, Any] = {"symbols": 20, "seconds": seconds, "loads": {}}
    for rate in rates:
        params = {"symbols": 20, "rate": rate, "seconds": seconds}
        three = _run_topology(url, ("execution", "strategy", "ingest"), **params)
        one = _run_topology(url, ("all",), **params)
        p95 = (three["data_to_order_ms"] or {}).get("p95_ms")
        ref = (one["data_to_order_ms"] or {}).get("p95_ms")
        out["loads"][f"{rate}_events_per_s"] = {
            "three_process_redis": three,
            "one_process_reference": one,
            "p95_three_vs_one": round(p95 / ref, 2) if p95 and ref else None,
            "meets_target": p95 is not None and p95 < TARGET_P95_MS,
        }
    out["targets"] = {"data_to_order_p95_ms": TARGET_P95_MS}
    return out


def table_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Headline rows for `quantlab bench`: bus throughput against naive redis-py, and the data
    -> order p95 of three processes against one process, per load (a load with no order has
    no latency row)."""
    t, lat = result["throughput"], result["latency"]
    naive = {"reference": t["naive_redis_py"]["events_per_s"], "reference_name": "redis-py naive"}
    goal = t["targets"]["bus_trades_events_per_s"]
    rows = [
        row("Trade messages, 1 topic, two processes", "events/s",
            t["bus_trades"]["events_per_s"], better="higher", target=goal, **naive),
        row("Trade messages over 100 topics, two processes", "events/s",
            t["bus_trades_100_topics"]["events_per_s"], better="higher", target=goal, **naive),
        row("MarketBatch frames of 1,000 rows (Arrow IPC)", "rows/s",
            t["bus_market_batches"]["events_per_s"], better="higher"),
    ]  # fmt: skip
    for load, figures in lat["loads"].items():
        three = figures["three_process_redis"]["data_to_order_ms"]
        one = figures["one_process_reference"]["data_to_order_ms"]
        if three is None:
            continue
        rate = load.removesuffix("_events_per_s")
        rows.append(
            row(f"data → order, {int(rate):,} events/s, three processes on Redis", "p95 ms",
                three["p95_ms"], better="lower", reference=one and one["p95_ms"],
                reference_name="one process", target=lat["targets"]["data_to_order_p95_ms"])
        )  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a run that finishes within a minute")
    ap.add_argument("--repeats", type=int, default=None, help="runs per path (best is kept)")
    ap.add_argument("--batch-size", type=int, default=None, help="events per stream entry")
    ap.add_argument("--out", type=Path, default=None, help="also write the output to this file")
    args = ap.parse_args()
    from quantlab.adapters.redis.bus import DEFAULT_BATCH_SIZE
    from quantlab.testing.redis_server import RedisServer

    repeats = args.repeats or (1 if args.quick else 3)
    batch_size = args.batch_size or DEFAULT_BATCH_SIZE
    started = time.monotonic()
    with RedisServer() as server:
        throughput = measure_throughput(server.url, args.quick, repeats, batch_size)
        latency = measure_latency(server.url, args.quick)
    result = {
        "benchmark": "scale",
        "quick": args.quick,
        "machine": f"{platform.machine()} python {platform.python_version()}",
        "repeats": repeats,
        "throughput": throughput,
        "latency": latency,
        "seconds": round(time.monotonic() - started, 1),
    }
    result["rows"] = table_rows(result)
    buf = io.StringIO()
    t = throughput
    print(f"{'path':36s} {'events/s':>12s} {'median':>12s} {'events':>10s}", file=buf)
    for key, label in (
        ("bus_trades", f"bus Trade, 1 topic (batch {batch_size})"),
        ("bus_trades_100_topics", "bus Trade, 100 topics"),
        ("bus_market_batches", "bus MarketBatch rows"),
        ("naive_redis_py", "naive redis-py (reference)"),
    ):
        r = t[key]
        print(
            f"{label:36s} {r['events_per_s']:>12,} {r['median_events_per_s']:>12,} "
            f"{r['events']:>10,}",
            file=buf,
        )
    print(
        f"\n{'data -> order (ms)':36s} {'p50':>9s} {'p95':>9s} {'p99':>9s} {'orders':>8s}",
        file=buf,
    )
    for load, figures in latency["loads"].items():
        for key, label in (
            ("three_process_redis", "three processes on Redis"),
            ("one_process_reference", "one process (reference)"),
        ):
            r = figures[key]
            ms = r["data_to_order_ms"] or {}
            print(
                f"{label + ', ' + load.replace('_', ' ').replace(' per s', '/s'):36s} "
                f"{ms.get('p50_ms', float('nan')):>9.2f} "
                f"{ms.get('p95_ms', float('nan')):>9.2f} {ms.get('p99_ms', float('nan')):>9.2f} "
                f"{r['orders_submitted']:>8,}",
                file=buf,
            )
    print(json.dumps(result), file=buf)
    text = buf.getvalue()
    sys.stdout.write(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
