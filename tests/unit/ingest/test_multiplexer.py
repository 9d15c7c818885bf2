"""The multiplexer: many sources at once, reconnects with backoff, staleness, stop, stats."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlab.adapters.sim.data import bundled_dir, read_market
from quantlab.core.clock import SimulatedClock
from quantlab.core.enums import EventType
from quantlab.core.errors import ConfigError
from quantlab.ingest.items import Events, Heartbeat, Reject, SourceItem
from quantlab.ingest.multiplexer import Backoff, Multiplexer
from quantlab.ingest.ports import MarketDataSource, SourceDisconnected

DETERMINISTIC = settings(derandomize=True, database=None, deadline=None)
TRADES = read_market(bundled_dir() / "binance_btcusdt_trades_2021-01-08.parquet")[1].sort(
    "timestamp"
)
FAST = Backoff(initial=0.01, maximum=0.02, jitter=0.0)


class Hang:
    """A script step: wait silently (forever by default)."""

    def __init__(self, seconds: float = 3600.0) -> None:
        self.seconds = seconds


Step = SourceItem | Exception | Hang


class ScriptedSource:
    """A source whose n-th connection plays `connections[n]` (the last one repeats)."""

    asset_class = "crypto"
    total_rows: int | None = None

    def __init__(
        self,
        name: str,
        connections: Sequence[Sequence[Step]],
        *,
        stale_after_s: float | None = None,
    ) -> None:
        self.name = name
        self.connections = connections
        self.calls = 0
        self.closed = 0
        if stale_after_s is not None:
            self.stale_after_s = stale_after_s

    async def stream(self) -> AsyncIterator[SourceItem]:
        script = self.connections[min(self.calls, len(self.connections) - 1)]
        self.calls += 1
        try:
            for step in script:
                if isinstance(step, Exception):
                    raise step
                if isinstance(step, Hang):
                    await asyncio.sleep(step.seconds)
                    continue
                yield step
        finally:
            self.closed += 1


class Recorder:
    """A sink that keeps every (source name, item, monotonic time)."""

    def __init__(self) -> None:
        self.got: list[tuple[str, SourceItem, float]] = []

    async def __call__(self, name: str, item: SourceItem) -> None:
        self.got.append((name, item, time.monotonic()))

    def items(self, name: str) -> list[SourceItem]:
        return [item for n, item, _ in self.got if n == name]

    def times(self, name: str) -> list[float]:
        return [t for n, _, t in self.got if n == name]


def events(offset: int, n: int = 10) -> Events:
    return Events(EventType.TRADE, TRADES.slice(offset, n))


def newest_ns(frame: pl.DataFrame) -> int:
    stamps = frame["timestamp"].cast(pl.Datetime("ns", "UTC")).cast(pl.Int64)
    return int(stamps.max())  # type: ignore[arg-type]


async def run_for(mux: Multiplexer, sink: Recorder, timeout: float = 10.0) -> float:
    t0 = time.monotonic()
    await asyncio.wait_for(mux.run(sink), timeout)
    return time.monotonic() - t0


# -- fan-in ----------------------------------------------------------------------------------


async def test_items_of_every_source_reach_the_sink_in_order_tagged_with_its_name() -> None:
    scripts: dict[str, list[Step]] = {}
    for k, name in enumerate(["alpha", "beta", "gamma"]):
        steps: list[Step] = []
        for i in range(5):
            steps += [events(100 * k + 10 * i), Hang(0.005)]
        steps += [Reject("malformed_json", "bad"), Heartbeat(ts_ns=k), events(100 * k + 50, 3)]
        scripts[name] = steps
    sources = [ScriptedSource(name, [steps]) for name, steps in scripts.items()]
    clock = SimulatedClock(newest_ns(TRADES) + 2_000_000_000)
    mux = Multiplexer(sources, clock=clock, stale_after_s=5.0, seed=1)
    sink = Recorder()
    await run_for(mux, sink)

    for name, steps in scripts.items():
        want = [s for s in steps if not isinstance(s, Hang)]
        got = sink.items(name)
        assert len(got) == len(want)
        assert all(g is w for g, w in zip(got, want, strict=True))
        stats = mux.stats[name]
        assert stats.events == 53
        assert stats.rejects == Counter({"malformed_json": 1})
        assert (stats.finished, stats.connected, stats.reconnects, stats.stale) == (
            True,
            False,
            0,
            0,
        )
        newest = newest_ns(want[-1].frame)  # type: ignore[union-attr]
        assert stats.last_event_ns is not None
        assert abs(stats.last_event_ns - newest) < 1_000  # see the exactness test below
        assert stats.lag_ms == pytest.approx((clock.now_ns() - newest) / 1e6)
    # The sources ran concurrently: their items interleave in the sink.
    names = [n for n, _, _ in sink.got]
    switches = sum(a != b for a, b in itertools.pairwise(names))
    assert switches >= 6
    metrics = mux.metrics()
    assert set(metrics) == {"alpha", "beta", "gamma"}
    assert metrics["beta"]["events"] == 53
    assert metrics["beta"]["rejects"] == {"malformed_json": 1}
    assert metrics["beta"]["finished"] is True


async def test_rejects_are_counted_by_reason_and_passed_on() -> None:
    steps: list[Step] = [
        Reject("malformed_json", "a"),
        events(0, 4),
        Reject("unknown_symbol", "b"),
        Reject("malformed_json", "c"),
        Reject("truncated_frame", "d"),
        Reject("malformed_json", "e"),
    ]
    mux = Multiplexer([ScriptedSource("ws", [steps])])
    sink = Recorder()
    await run_for(mux, sink)
    assert mux.stats["ws"].rejects == Counter(
        {"malformed_json": 3, "unknown_symbol": 1, "truncated_frame": 1}
    )
    assert mux.metrics()["ws"]["rejects"] == {
        "malformed_json": 3,
        "unknown_symbol": 1,
        "truncated_frame": 1,
    }
    assert mux.stats["ws"].events == 4
    assert [i.detail for i in sink.items("ws") if isinstance(i, Reject)] == list("abcde")


async def test_a_finite_source_that_ends_is_finished_and_not_reconnected() -> None:
    done = ScriptedSource("done", [[events(0), events(10)]])
    empty = ScriptedSource("empty", [[]])
    mux = Multiplexer([done, empty], backoff=FAST)
    sink = Recorder()
    await run_for(mux, sink)
    for src in (done, empty):
        stats = mux.stats[src.name]
        assert src.calls == 1
        assert src.closed == 1
        assert (stats.finished, stats.reconnects, stats.last_error) == (True, 0, "")
    assert mux.stats["done"].events == 20
    assert mux.stats["empty"].events == 0
    assert mux.stats["empty"].last_event_ns is None


def test_duplicate_source_names_are_refused() -> None:
    a, b = ScriptedSource("feed", [[]]), ScriptedSource("feed", [[]])
    with pytest.raises(ConfigError) as err:
        Multiplexer([a, b])
    assert err.value.key == "sources"
    assert "feed" in str(err.value)


@pytest.mark.parametrize("stale", [0.0, -1.0])
def test_a_non_positive_stale_limit_is_refused(stale: float) -> None:
    with pytest.raises(ConfigError) as err:
        Multiplexer([ScriptedSource("a", [[]])], stale_after_s=stale)
    assert err.value.key == "stale_after_s"


def test_the_fake_source_is_a_market_data_source() -> None:
    assert isinstance(ScriptedSource("a", [[]]), MarketDataSource)


# -- reconnects ------------------------------------------------------------------------------


async def test_a_failing_source_is_reconnected_after_a_backoff_and_the_others_keep_flowing() -> (
    None
):
    flaky = ScriptedSource(
        "flaky",
        [
            [events(0), events(10), SourceDisconnected("connection reset")],
            [events(20), SourceDisconnected("connection reset")],
            [events(30)],
        ],
    )
    steady_steps: list[Step] = []
    for i in range(40):
        steady_steps += [Heartbeat(ts_ns=i), Hang(0.005)]
    steady = ScriptedSource("steady", [steady_steps])
    backoff = Backoff(initial=0.05, maximum=0.05, jitter=0.0)
    mux = Multiplexer([flaky, steady], backoff=backoff, seed=3)
    sink = Recorder()
    await run_for(mux, sink)

    stats = mux.stats["flaky"]
    assert flaky.calls == 3
    assert flaky.closed == 3
    assert stats.reconnects == 2
    assert stats.finished
    assert stats.last_error == "SourceDisconnected: connection reset"
    assert stats.events == 40
    got = sink.items("flaky")
    assert [int(i.frame["trade_id"][0]) for i in got] == [  # type: ignore[union-attr]
        int(TRADES["trade_id"][k]) for k in (0, 10, 20, 30)
    ]
    # Each reconnect waited out the backoff...
    t = sink.times("flaky")
    assert t[2] - t[1] >= 0.045
    assert t[3] - t[2] >= 0.045
    # ... while the other source kept delivering.
    steady_times = sink.times("steady")
    assert len(steady_times) == 40
    assert sum(t[1] < s < t[2] for s in steady_times) >= 3
    assert mux.stats["steady"].reconnects == 0


async def test_max_reconnects_gives_up_and_leaves_the_others_running() -> None:
    broken = ScriptedSource("broken", [[SourceDisconnected("refused")]])
    other = ScriptedSource("other", [[events(0), Hang(0.2), events(10)]])
    mux = Multiplexer([broken, other], backoff=FAST, max_reconnects=3)
    sink = Recorder()
    await run_for(mux, sink)
    assert broken.calls == 4  # the first connection and three reconnects
    stats = mux.stats["broken"]
    assert not stats.finished
    assert not stats.connected
    assert stats.last_error == "SourceDisconnected: refused"
    assert sink.items("broken") == []
    assert mux.stats["other"].finished
    assert mux.stats["other"].events == 20


async def test_the_reconnects_counter_matches_the_reconnects_made_when_giving_up() -> None:
    broken = ScriptedSource("broken", [[SourceDisconnected("refused")]])
    mux = Multiplexer([broken], backoff=FAST, max_reconnects=3)
    await run_for(mux, Recorder())
    assert mux.stats["broken"].reconnects == broken.calls - 1 == 3


async def test_the_backoff_grows_while_connections_fail_and_resets_after_a_delivery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attempts: list[int] = []
    real_delay = Backoff.delay

    def delay(self: Backoff, attempt: int, rng: random.Random) -> float:
        attempts.append(attempt)
        return real_delay(self, attempt, rng)

    monkeypatch.setattr(Backoff, "delay", delay)
    cut = SourceDisconnected("cut")
    source = ScriptedSource(
        "ws",
        [[cut], [cut], [events(0), cut], [cut], [cut], [events(10)]],
    )
    mux = Multiplexer([source], backoff=Backoff(initial=0.001, maximum=0.004, jitter=0.1))
    await run_for(mux, Recorder())
    assert attempts == [1, 2, 1, 2, 3]
    assert mux.stats["ws"].reconnects == 5
    assert mux.stats["ws"].finished


# -- Backoff -------------------------------------------------------------------------------


def test_backoff_doubles_from_initial_up_to_the_cap() -> None:
    backoff = Backoff(initial=0.5, maximum=30.0, jitter=0.0)
    rng = random.Random(0)
    delays = [backoff.delay(k, rng) for k in range(1, 11)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    assert backoff.delay(0, rng) == 0.5


@DETERMINISTIC
@given(
    initial=st.floats(0.001, 5.0),
    factor=st.floats(1.0, 100.0),
    jitter=st.floats(0.0, 0.99),
    attempt=st.integers(1, 40),
    seed=st.integers(0, 2**32),
)
def test_backoff_stays_within_the_jitter_of_the_capped_exponential(
    initial: float, factor: float, jitter: float, attempt: int, seed: int
) -> None:
    backoff = Backoff(initial=initial, maximum=initial * factor, jitter=jitter)
    base = min(initial * factor, initial * 2 ** (attempt - 1))
    for value in (backoff.delay(attempt, random.Random(seed)) for _ in range(3)):
        assert base * (1 - jitter) - 1e-9 <= value <= base * (1 + jitter) + 1e-9
        assert value <= backoff.maximum * (1 + jitter) + 1e-9


def test_backoff_jitter_is_seeded_and_spreads_both_ways() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0, jitter=0.2)
    a = [backoff.delay(k % 6 + 1, random.Random(42)) for k in range(6)]
    b = [backoff.delay(k % 6 + 1, random.Random(42)) for k in range(6)]
    assert a == b
    rng = random.Random(7)
    ratios = [backoff.delay(2, rng) / 2.0 for _ in range(500)]
    assert 0.8 <= min(ratios) < 0.85
    assert 1.15 < max(ratios) <= 1.2


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"initial": 0.0}, "backoff"),
        ({"initial": -1.0}, "backoff"),
        ({"initial": 10.0, "maximum": 5.0}, "backoff"),
        ({"jitter": 1.0}, "backoff.jitter"),
        ({"jitter": -0.1}, "backoff.jitter"),
    ],
)
def test_invalid_backoff_is_refused(kwargs: dict[str, float], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        Backoff(**kwargs)
    assert err.value.key == key


# -- staleness -------------------------------------------------------------------------------


async def test_a_silent_source_is_detected_stale_and_reconnected() -> None:
    silent = ScriptedSource("silent", [[events(0), Hang()]])
    mux = Multiplexer([silent], backoff=FAST, stale_after_s=0.1, max_reconnects=2)
    sink = Recorder()
    elapsed = await run_for(mux, sink)
    assert silent.calls == 3
    assert silent.closed == 3  # each silent connection was closed before the next
    stats = mux.stats["silent"]
    assert stats.stale == 3
    assert "no message or heartbeat from silent for 0.1s" in stats.last_error
    assert len(sink.items("silent")) == 3
    assert 0.3 <= elapsed < 3.0


async def test_heartbeats_keep_a_quiet_source_fresh() -> None:
    steps: list[Step] = []
    for i in range(8):
        steps += [Hang(0.04), Heartbeat(ts_ns=i)]
    quiet = ScriptedSource("quiet", [steps])
    mux = Multiplexer([quiet], backoff=FAST, stale_after_s=0.15)
    await run_for(mux, Recorder())
    assert (mux.stats["quiet"].stale, mux.stats["quiet"].reconnects) == (0, 0)
    assert mux.stats["quiet"].finished


async def test_a_source_stale_limit_overrides_a_longer_multiplexer_limit() -> None:
    strict = ScriptedSource("strict", [[events(0), Hang()]], stale_after_s=0.05)
    mux = Multiplexer([strict], backoff=FAST, stale_after_s=60.0, max_reconnects=0)
    elapsed = await run_for(mux, Recorder())
    assert strict.calls == 1
    assert mux.stats["strict"].stale == 1
    assert "for 0.05s" in mux.stats["strict"].last_error
    assert elapsed < 2.0


async def test_a_source_stale_limit_overrides_a_shorter_multiplexer_limit() -> None:
    poller = ScriptedSource(
        "poller", [[events(0), Hang(0.2), events(10), Hang(0.2), events(20)]], stale_after_s=5.0
    )
    mux = Multiplexer([poller], backoff=FAST, stale_after_s=0.05, max_reconnects=0)
    await run_for(mux, Recorder())
    stats = mux.stats["poller"]
    assert (stats.stale, stats.reconnects, stats.events, stats.finished) == (0, 0, 30, True)


# -- stop ------------------------------------------------------------------------------------


async def test_stop_ends_the_run_and_no_source_is_reconnected() -> None:
    def endless(k: int) -> list[Step]:
        steps: list[Step] = []
        for i in range(10_000):
            steps += [events((k * 7 + i) % 1990, 1), Hang(0.002)]
        return steps

    sources = [ScriptedSource(f"s{k}", [endless(k)]) for k in range(3)]
    mux = Multiplexer(sources, backoff=FAST, stale_after_s=1.0)
    sink = Recorder()
    task = asyncio.create_task(mux.run(sink))

    def least() -> int:
        return min((s.events for s in mux.stats.values()), default=0) if mux.stats else 0

    deadline = time.monotonic() + 20  # a loaded machine may take longer than the usual 0.2 s
    while (least() <= 10 or len(mux.stats) < 3) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    mux.stop()
    t0 = time.monotonic()
    await asyncio.wait_for(task, 2.0)
    assert time.monotonic() - t0 < 0.5
    seen = len(sink.got)
    await asyncio.sleep(0.05)
    assert len(sink.got) == seen  # nothing after the run ended
    for src in sources:
        stats = mux.stats[src.name]
        assert src.calls == 1
        assert src.closed == 1
        assert stats.events > 10
        assert (stats.reconnects, stats.finished, stats.connected) == (0, False, False)


@pytest.mark.parametrize("state", ["backing off", "silent"])
async def test_stop_ends_the_run_promptly_whatever_the_sources_are_doing(state: str) -> None:
    if state == "backing off":
        source = ScriptedSource("ws", [[SourceDisconnected("cut")]])
        mux = Multiplexer([source], backoff=Backoff(initial=20.0, maximum=20.0, jitter=0.0))
    else:
        source = ScriptedSource("ws", [[events(0), Hang()]])
        mux = Multiplexer([source], stale_after_s=None)
    task = asyncio.create_task(mux.run(Recorder()))
    await asyncio.sleep(0.1)
    mux.stop()
    await asyncio.wait_for(task, 1.0)


async def test_last_event_time_is_the_newest_event_seen() -> None:
    trades = events(100, 10)
    bar_ts = TRADES["timestamp"][100]
    bar = Events(
        EventType.BAR,
        pl.DataFrame(
            {
                "symbol": ["BTC/USDT"],
                "timestamp": [bar_ts],
                "open": [1.0],
                "high": [1.0],
                "low": [1.0],
                "close": [1.0],
                "volume": [1.0],
            }
        ),
    )
    mux = Multiplexer([ScriptedSource("ws", [[trades, bar]])])
    await run_for(mux, Recorder())
    assert mux.stats["ws"].last_event_ns == newest_ns(trades.frame)


async def test_last_event_time_keeps_nanosecond_precision() -> None:
    frame = TRADES.head(3).with_columns(
        pl.Series("timestamp", [1_610_064_002_299_000_123] * 3).cast(pl.Datetime("ns", "UTC"))
    )
    mux = Multiplexer([ScriptedSource("ws", [[Events(EventType.TRADE, frame)]])])
    await run_for(mux, Recorder())
    assert mux.stats["ws"].last_event_ns == 1_610_064_002_299_000_123
