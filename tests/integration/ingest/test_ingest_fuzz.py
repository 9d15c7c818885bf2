"""100,000 mixed messages with 5 % bad ones of every kind through parsing and ingestion.

Rejects by reason must equal what was injected, and every good event must be published
exactly once.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import msgspec
import polars as pl

from quantlab.bus import InProcessBus, topics
from quantlab.bus.base import Envelope
from quantlab.core.clock import SimulatedClock
from quantlab.core.messages import MarketBatch
from quantlab.ingest import IngestEngine
from quantlab.ingest.items import MAX_FRAME_BYTES
from quantlab.ingest.quality import QualityConfig
from quantlab.ingest.wire import WireParser, WireQuote, WireTrade, encode_json, encode_msgpack
from quantlab.testing.sources import NoSource

N_MESSAGES = 100_000
BAD_SHARE = 0.05
SYMBOLS = [f"F{i:02d}/USD" for i in range(20)]
NOW = 1_700_000_000_000_000_000
BAD_KINDS = [
    "malformed_json",
    "malformed_msgpack",
    "truncated_frame",
    "oversized_frame",
    "wrong_type",
    "non_finite_price",
    "non_positive_price",
    "bad_size",
    "crossed_quote",
    "future_timestamp",
    "stale_timestamp",
    "unknown_symbol",
]


def _good(i: int, rng: random.Random) -> WireQuote | WireTrade:
    symbol = SYMBOLS[i % len(SYMBOLS)]
    ts = NOW - 3_600_000_000_000 + i * 10_000  # unique, increasing, within the last hour
    price = 100.0 + rng.random()
    if rng.random() < 0.5:
        return WireTrade(S=symbol, t=ts, p=price, s=1.0 + rng.random(), a=1, i=f"t{i}")
    return WireQuote(S=symbol, t=ts, bp=price, ap=price + 0.01, bs=1.0, az=1.0)


def _bad(kind: str, i: int, rng: random.Random) -> tuple[str, bytes]:
    """One bad message of `kind`, as (format, raw bytes)."""
    ok = _good(i, rng)
    if kind == "malformed_json":
        return "json", b'[{"T":"t","S":"F00/USD",,}]'
    if kind == "malformed_msgpack":
        return "msgpack", b"\xc1\xc1\xc1"  # 0xc1 is never used in MessagePack
    if kind == "truncated_frame":
        if rng.random() < 0.5:
            return "json", encode_json([ok])[:-7]
        return "msgpack", encode_msgpack([ok])[:-7]
    if kind == "oversized_frame":
        return (
            "json",
            b'[{"T":"t","S":"F00/USD","t":1,"p":1,"s":1,"i":"' + b"x" * MAX_FRAME_BYTES + b'"}]',
        )
    if kind == "wrong_type":
        return "json", b'[{"T":"t","S":"F00/USD","t":"yesterday","p":1.0,"s":1.0}]'
    if kind == "non_finite_price":
        value = rng.choice([math.nan, math.inf, -math.inf])
        return "msgpack", encode_msgpack([msgspec.structs.replace(ok, **_price(ok, value))])
    if kind == "non_positive_price":
        value = rng.choice([0.0, -1.5])
        return "json", encode_json([msgspec.structs.replace(ok, **_price(ok, value))])
    if kind == "bad_size":
        bad = rng.choice([0.0, -2.0, math.nan])
        trade = WireTrade(S=ok.S, t=ok.t, p=100.0, s=bad, a=1, i=f"b{i}")
        return "msgpack", encode_msgpack([trade])
    if kind == "crossed_quote":
        return "json", encode_json([WireQuote(S=ok.S, t=ok.t, bp=101.0, ap=100.0)])
    if kind == "future_timestamp":
        trade = WireTrade(S=ok.S, t=NOW + 86_400_000_000_000, p=100.0, s=1.0, i=f"f{i}")
        return "json", encode_json([trade])
    if kind == "stale_timestamp":
        trade = WireTrade(S=ok.S, t=NOW - 30 * 86_400_000_000_000, p=100.0, s=1.0, i=f"s{i}")
        return "json", encode_json([trade])
    if kind == "unknown_symbol":
        return "json", encode_json([msgspec.structs.replace(ok, S="NOPE/USD")])
    raise AssertionError(kind)


def _price(event: WireQuote | WireTrade, value: float) -> dict[str, float]:
    return {"p": value} if isinstance(event, WireTrade) else {"bp": value, "ap": value}


async def test_fuzzed_stream_rejects_exactly_the_bad_and_delivers_the_good_once() -> None:
    rng = random.Random(20261124)
    n_bad = int(N_MESSAGES * BAD_SHARE)
    plan = [BAD_KINDS[k % len(BAD_KINDS)] for k in range(n_bad)] + [None] * (N_MESSAGES - n_bad)
    rng.shuffle(plan)

    clock = SimulatedClock(NOW)
    bus = InProcessBus()
    published: list[pl.DataFrame] = []

    async def collect(env: Envelope) -> None:
        batch: MarketBatch = env.payload
        published.append(batch.frame.select("symbol", "timestamp"))

    bus.consume(topics.ALL_MARKET_DATA, collect, name="collect")
    engine = IngestEngine(
        [NoSource("fuzz")],
        clock=clock,
        quality=QualityConfig(max_future_s=5.0, max_age_s=24 * 3600.0),
    )
    await engine.start(bus)
    parser = WireParser(SYMBOLS)

    injected: Counter[str] = Counter()
    good_keys: list[tuple[str, int]] = []
    pending: list[WireQuote | WireTrade] = []

    async def flush_good() -> None:
        # good events travel in small frames (1-8 events), alternating JSON and MessagePack
        for start in range(0, len(pending), 8):
            chunk = pending[start : start + 8]
            raw = encode_json(chunk) if start % 16 else encode_msgpack(chunk)
            items = parser.parse_json(raw) if start % 16 else parser.parse_msgpack(raw)
            for item in items:
                await engine.on_item("fuzz", item)
        pending.clear()

    for i, kind in enumerate(plan):
        if kind is None:
            event = _good(i, rng)
            pending.append(event)
            good_keys.append((event.S, event.t))
            continue
        await flush_good()
        fmt, raw = _bad(kind, i, rng)
        injected[kind] += 1
        items = parser.parse_json(raw) if fmt == "json" else parser.parse_msgpack(raw)
        for item in items:
            await engine.on_item("fuzz", item)
    await flush_good()
    await engine.flush()
    await bus.drain(timeout=30)
    await bus.close()

    assert sum(injected.values()) == n_bad
    assert dict(engine.rejected) == dict(injected)
    got = pl.concat(published).with_columns(pl.col("timestamp").cast(pl.Int64))
    assert got.height == len(good_keys)  # nothing lost, nothing twice
    expected = pl.DataFrame(good_keys, schema=["symbol", "timestamp"], orient="row")
    assert got.sort("symbol", "timestamp").equals(expected.sort("symbol", "timestamp"))
