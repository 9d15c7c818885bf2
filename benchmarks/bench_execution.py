"""Execution path speed: signal -> risk-approved, approved -> submitted, orders/s (paper venue).

Cases, on the in-process bus with the real stages, marks and returns from the bundled real
bars (10 BTC pairs, 5-minute bars of 2018-01):

* signal -> approved: a `Signal` published on ``signals.<id>`` until its order leaves the risk
  manager on ``orders.approved``: the order builder (Kelly sizing, limit price, rounding,
  deterministic ids) and every risk check (bad values, unknown symbol, stale data, breaker,
  order and position limits, collar, throttle, incremental historical VaR against a limit).
  Reference: the same bus hop with a stage that republishes at once (the floor).
  Also the pure `RiskEngine.check` call.
* approved -> submitted: an approved order until the venue's acknowledgement is committed
  and published (``orders.accepted``): the intent committed to SQLite, the paper venue's
  submit, the status committed. SQLite as a live run has it (WAL, synchronous=FULL: every
  commit fsynced) and as a backtest has it (synchronous=OFF).
* orders/s: a burst of approved orders through the same path until all are acknowledged.
  Reference: the paper venue's `submit` called in a loop (no bus, no SQL: no durability).

Targets (DESIGN §6): signal -> approved p99 < 1 ms, approved -> submitted p95 < 5 ms,
>= 1,000 orders/s. Prints a table and, as its last line, one JSON object.

    python benchmarks/bench_execution.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import platform
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from _rows import row

from quantlab.adapters.sim.data import bundled_dir
from quantlab.adapters.sim.paper import PaperVenue
from quantlab.bus import InProcessBus, topics
from quantlab.bus.base import Envelope
from quantlab.core import ids
from quantlab.core.clock import SimulatedClock, datetime_to_ns
from quantlab.core.enums import EventType, OrderType, Side, TimeInForce
from quantlab.core.instruments import InstrumentBook
from quantlab.core.messages import MarketBatch, Order, Signal
from quantlab.execution import ExecutionEngine, OrderBuilder, OrderTracker, Router
from quantlab.execution.sizing import KellySizer
from quantlab.risk import RiskEngine, RiskLimits, VarConfig
from quantlab.storage.sql.engine import make_engine, upgrade
from quantlab.storage.sql.store import SqlOrderStore

BOOK = InstrumentBook(Decimal("0.00000001"), Decimal("0.00000001"))


def bars() -> pl.DataFrame:
    return pl.read_parquet(bundled_dir() / "binance_btc_pairs_5m_2018-01.parquet").filter(
        pl.col("timestamp") < dt.datetime(2018, 1, 14, tzinfo=dt.UTC)
    )


def pct(samples: list[float], q: float) -> float:
    return round(float(np.percentile(np.array(samples) * 1e3, q)), 4)


def summary(samples: list[float]) -> dict[str, float]:
    return {"n": len(samples), "p50_ms": pct(samples, 50), "p95_ms": pct(samples, 95),
            "p99_ms": pct(samples, 99)}  # fmt: skip


# -- signal -> approved -----------------------------------------------------------------------
async def signal_to_approved(n: int, *, floor: bool) -> tuple[list[float], list[float]]:
    frame = bars()
    clock = SimulatedClock()
    last_ts = datetime_to_ns(frame["timestamp"].max())
    clock.advance_to(last_ts)
    bus = InProcessBus()
    risk = RiskEngine(
        RiskLimits(
            max_position_notional=Decimal("1000"),
            max_order_notional=Decimal("1000"),
            max_gross_notional=Decimal("2000"),
            rate_per_s=1e9,  # the throttle runs (and never binds)
            burst=1_000_000,
        ),
        BOOK,
        clock,
        var=VarConfig(method="historical", confidence=0.99, limit=1e6),
    )
    builder = OrderBuilder(BOOK, sizer=KellySizer(capital=Decimal("4")))
    approved: dict[str, asyncio.Future[None]] = {}

    async def on_approved(envelope: Envelope) -> None:
        fut = approved.pop(envelope.payload.client_order_id, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    if floor:  # the reference: one stage that turns each signal into "approved" at once

        async def passthrough(envelope: Envelope) -> None:
            sig: Signal = envelope.payload
            coid = ids.client_order_id(sig.signal_id)
            fut = approved.pop(coid, None)
            if fut is not None:
                fut.set_result(None)

        bus.consume(topics.ALL_SIGNALS, passthrough, name="floor")
    else:
        await builder.start(bus)
        await risk.start(bus)
        bus.consume(topics.orders("approved"), on_approved, name="probe")
        await bus.publish(
            topics.market_data(EventType.BAR),
            MarketBatch(kind=EventType.BAR, frame=frame, seq=0,
                        ts_min=datetime_to_ns(frame["timestamp"].min()), ts_max=last_ts),
        )  # fmt: skip
        await bus.drain(timeout=60)
    last = frame.group_by("symbol").agg(pl.col("close").last()).sort("symbol").rows()
    at = frame["timestamp"].max()
    lat: list[float] = []
    loop = asyncio.get_running_loop()
    for i in range(n):
        symbol, close = last[i % len(last)]
        side = Side.BUY if (i // len(last)) % 2 == 0 else Side.SELL
        sig = Signal(
            signal_id=ids.signal_id("bench", symbol, last_ts, i),
            strategy_id="bench",
            symbol=symbol,
            side=side,
            strength=0.8,
            confidence=0.6,
            timestamp=at,
            mid=float(close),
            spread=float(close) * 5e-4,
        )
        fut: asyncio.Future[None] = loop.create_future()
        approved[ids.client_order_id(sig.signal_id)] = fut
        t = time.perf_counter()
        await bus.publish(topics.signals("bench"), sig, msg_id=str(sig.signal_id))
        await asyncio.wait_for(fut, 5)
        lat.append(time.perf_counter() - t)
    # the pure check, on orders like the ones above
    checks: list[float] = []
    if not floor:
        for i in range(n):
            symbol, close = last[i % len(last)]
            coid = f"ql-bench-{i}"
            order = Order(
                order_id=ids.order_id(coid), client_order_id=coid, symbol=symbol,
                side=Side.BUY, order_type=OrderType.LIMIT, quantity=Decimal("0.1"),
                price=Decimal(repr(close)), time_in_force=TimeInForce.IOC,
                strategy_id="bench", signal_id=ids.signal_id("c", symbol, i), timestamp=at,
            )  # fmt: skip
            t = time.perf_counter()
            denial = risk.check(order)
            checks.append(time.perf_counter() - t)
            assert denial is None, denial
        assert sum(risk.denied.values()) == 0, risk.denied
    await bus.close()
    return lat, checks


# -- approved -> submitted, orders/s ---------------------------------------------------------
def make_order(i: int, at: dt.datetime) -> Order:
    signal = ids.signal_id("bench", "ETH/BTC", i)
    coid = ids.client_order_id(signal)
    return Order(
        order_id=ids.order_id(coid), client_order_id=coid, symbol="ETH/BTC",
        side=Side.BUY if i % 2 else Side.SELL, order_type=OrderType.LIMIT,
        quantity=Decimal("0.01"), price=Decimal("0.0912"), time_in_force=TimeInForce.GTC,
        strategy_id="bench", signal_id=signal, timestamp=at,
    )  # fmt: skip


async def approved_to_submitted(n: int, burst: int, durable: bool, folder: Path) -> dict[str, Any]:
    url = f"sqlite:///{folder / f'book-{durable}.db'}"
    sql = make_engine(url, durable=durable)
    upgrade(sql)
    # as a live run has it: intents and fills fsynced, status changes in WAL NORMAL
    status = make_engine(url, synchronous="NORMAL") if durable else None
    venue = PaperVenue(BOOK)
    bus = InProcessBus()
    store = SqlOrderStore(sql, status_engine=status)
    engine = ExecutionEngine(Router([venue], default=venue.name), OrderTracker(store))
    await venue.start(bus)
    await engine.start(bus)
    acked: dict[str, asyncio.Future[None]] = {}
    done = {"n": 0}
    all_in: asyncio.Event = asyncio.Event()
    target = {"n": 0}

    async def on_accepted(envelope: Envelope) -> None:
        fut = acked.pop(envelope.payload.client_order_id, None)
        if fut is not None and not fut.done():
            fut.set_result(None)
        done["n"] += 1
        if done["n"] >= target["n"]:
            all_in.set()

    bus.consume(topics.orders("accepted"), on_accepted, name="probe")
    loop = asyncio.get_running_loop()
    at = dt.datetime(2018, 1, 10, tzinfo=dt.UTC)
    lat = []
    for i in range(n):
        order = make_order(i, at)
        fut: asyncio.Future[None] = loop.create_future()
        acked[order.client_order_id] = fut
        target["n"] = done["n"] + 1
        t = time.perf_counter()
        await bus.publish(topics.orders("approved"), order, msg_id=order.client_order_id)
        await asyncio.wait_for(fut, 10)
        lat.append(time.perf_counter() - t)
    # throughput: a burst
    orders = [make_order(n + i, at) for i in range(burst)]
    all_in.clear()
    target["n"] = done["n"] + burst
    t = time.perf_counter()
    for order in orders:
        await bus.publish(topics.orders("approved"), order, msg_id=order.client_order_id)
    await asyncio.wait_for(all_in.wait(), 120)
    burst_s = time.perf_counter() - t
    await engine.stop()
    await bus.close()
    sql.dispose()
    if status is not None:
        status.dispose()
    return {"latency": summary(lat), "orders_per_s": round(burst / burst_s, 1)}


async def naive_venue_loop(burst: int) -> float:
    venue = PaperVenue(BOOK)
    at = dt.datetime(2018, 1, 10, tzinfo=dt.UTC)

    async def sink(_report: object) -> None:
        return None

    venue.set_listener(sink)
    orders = [make_order(i, at) for i in range(burst)]
    t = time.perf_counter()
    for order in orders:
        await venue.submit(order)
    return round(burst / (time.perf_counter() - t), 1)


async def run(quick: bool) -> dict[str, Any]:
    n = 2_000 if quick else 10_000
    burst = 2_000 if quick else 10_000
    await signal_to_approved(200, floor=False)  # warm-up
    lat, checks = await signal_to_approved(n, floor=False)
    floor, _ = await signal_to_approved(n, floor=True)
    with tempfile.TemporaryDirectory() as tmp:
        live = await approved_to_submitted(n // 4, burst, True, Path(tmp))
        backtest = await approved_to_submitted(n // 4, burst, False, Path(tmp))
    naive = await naive_venue_loop(burst)
    s2a, fl = summary(lat), summary(floor)
    return {
        "benchmark": "execution",
        "quick": quick,
        "machine": f"{platform.machine()} python {platform.python_version()}",
        "signal_to_approved": s2a,
        "signal_to_approved_floor": fl,
        "risk_check": summary(checks),
        "approved_to_submitted_fsync": live["latency"],
        "approved_to_submitted_no_fsync": backtest["latency"],
        "orders_per_s_fsync": live["orders_per_s"],
        "orders_per_s_no_fsync": backtest["orders_per_s"],
        "orders_per_s_naive_venue_loop": naive,
        "ratios": {
            "signal_to_approved_p99_vs_floor": round(s2a["p99_ms"] / fl["p99_ms"], 2),
            "orders_per_s_fsync_vs_naive": round(live["orders_per_s"] / naive, 4),
        },
        "targets": {
            "signal_to_approved_p99_ms": 1.0,
            "approved_to_submitted_p95_ms": 5.0,
            "orders_per_s": 1000,
        },
    }


def main(quick: bool) -> dict[str, Any]:
    return asyncio.run(run(quick))


def table_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Headline rows for `quantlab bench`: stage latencies and orders/s against the bare bus
    hop and the venue's bare `submit` loop of the same run."""
    goals = result["targets"]
    s2a, risk = result["signal_to_approved"], result["risk_check"]
    fsync = result["approved_to_submitted_fsync"]
    no_fsync = result["approved_to_submitted_no_fsync"]
    naive = {"reference": result["orders_per_s_naive_venue_loop"],
             "reference_name": "venue submit loop, nothing durable"}  # fmt: skip
    return [
        row(f"signal → risk-approved, {s2a['n']:,} signals", "p99 ms", s2a["p99_ms"],
            better="lower", reference=result["signal_to_approved_floor"]["p99_ms"],
            reference_name="bare bus hop", target=goals["signal_to_approved_p99_ms"]),
        row("risk check alone (RiskEngine.check)", "p99 µs", round(risk["p99_ms"] * 1000, 2),
            better="lower"),
        row("approved → submitted, paper venue, fsync", "p95 ms", fsync["p95_ms"],
            better="lower", target=goals["approved_to_submitted_p95_ms"]),
        row("approved → submitted, paper venue, no fsync", "p95 ms", no_fsync["p95_ms"],
            better="lower"),
        row("orders through the paper venue, fsync", "orders/s", result["orders_per_s_fsync"],
            better="higher", target=goals["orders_per_s"], **naive),
        row("orders through the paper venue, no fsync", "orders/s",
            result["orders_per_s_no_fsync"], better="higher", **naive),
    ]  # fmt: skip


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a run that finishes within a minute")
    out = main(ap.parse_args().quick)
    for key in ("signal_to_approved", "signal_to_approved_floor", "risk_check",
                "approved_to_submitted_fsync", "approved_to_submitted_no_fsync"):  # fmt: skip
        r = out[key]
        print(f"{key:32s} n {r['n']:>6,}  p50 {r['p50_ms']:>8} ms  p95 {r['p95_ms']:>8} ms  "
              f"p99 {r['p99_ms']:>8} ms")  # fmt: skip
    for key in ("orders_per_s_fsync", "orders_per_s_no_fsync", "orders_per_s_naive_venue_loop"):
        print(f"{key:32s} {out[key]:>12,.0f} /s")
    out["rows"] = table_rows(out)
    print(json.dumps(out))
