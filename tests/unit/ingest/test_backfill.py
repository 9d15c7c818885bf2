"""Gap backfill (`ingest.backfill`): which windows of bars each hole fetches from a venue's
`HistoricalBars`, when, how often, and what the lake gets of them.

The venue is an in-memory fake that serves one bar per minute with loose bounds (a bar before
the window and the bar at its end, as REST endpoints with inclusive ends do), so the window
the `Backfiller` keeps is checked, not the fake's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest

from quantlab.bus import InProcessBus
from quantlab.bus.base import Envelope
from quantlab.config import load_settings
from quantlab.core.clock import SimulatedClock
from quantlab.core.enums import EventType
from quantlab.core.errors import ConfigError
from quantlab.core.messages import MarketBatch
from quantlab.core.schemas import BAR_SCHEMA, TIMESTAMP, TRADE_SCHEMA
from quantlab.engine.sources import build_backfill
from quantlab.ingest import IngestEngine
from quantlab.ingest.backfill import BackfillConfig, Backfiller, timeframe_ns
from quantlab.ingest.items import Events
from quantlab.ingest.ports import HistoricalBars
from quantlab.ingest.quality import QualityConfig
from quantlab.testing.sources import NoSource

SYM = "BTC/USD"
T0 = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
T0_NS = int(T0.timestamp()) * 1_000_000_000
SEC = 1_000_000_000
MIN = 60 * SEC
DAY = 1440 * MIN
FAST = BackfillConfig(retry_delay_s=0.001)


def ns(minutes: float, seconds: float = 0) -> int:
    """T0 plus `minutes` and `seconds`, as int ns."""
    return T0_NS + round(minutes * MIN) + round(seconds * SEC)


def at(minutes: float, seconds: float = 0) -> dt.datetime:
    """T0 plus `minutes` and `seconds`."""
    return T0 + dt.timedelta(minutes=minutes, seconds=seconds)


def bars(symbol: str, starts: list[int]) -> pl.DataFrame:
    """One-minute bars of `symbol` starting at `starts` (int ns); close = minute index."""
    closes = [100.0 + (s - T0_NS) // MIN for s in starts]
    return pl.DataFrame(
        {
            "symbol": [symbol] * len(starts),
            "timestamp": pl.Series(starts, dtype=pl.Int64).cast(TIMESTAMP),
            "open": closes,
            "high": [c + 1 for c in closes],
            "low": [c - 1 for c in closes],
            "close": closes,
            "volume": [1.0] * len(starts),
        },
        schema=BAR_SCHEMA,
    )


def trades(symbol: str, times: list[int]) -> pl.DataFrame:
    """One trade of `symbol` at each of `times` (int ns)."""
    return pl.DataFrame(
        {
            "symbol": [symbol] * len(times),
            "timestamp": pl.Series(times, dtype=pl.Int64).cast(TIMESTAMP),
            "price": [100.0] * len(times),
            "size": [1.0] * len(times),
            "aggressor": [0] * len(times),
            "trade_id": [str(t) for t in times],
        },
        schema=TRADE_SCHEMA,
    )


def stamps(frames: list[pl.DataFrame]) -> list[int]:
    """The bar times (int ns) of `frames`, in order."""
    return [t for f in frames for t in f["timestamp"].cast(pl.Int64).to_list()]


@dataclass
class FakeHistory:
    """A venue's REST bars: one bar per minute, served from the minute before `start` through
    the one at `end` inclusive; the first `fail` calls raise `ConnectionError`."""

    fail: int = 0
    calls: list[tuple[str, dt.datetime, dt.datetime, str]] = field(default_factory=list)
    closed: int = 0

    async def fetch_bars(
        self, symbol: str, start: dt.datetime, end: dt.datetime, timeframe: str = "1m"
    ) -> pl.DataFrame:
        self.calls.append((symbol, start, end, timeframe))
        if len(self.calls) <= self.fail:
            raise ConnectionError(f"venue down #{len(self.calls)}")
        lo = int(start.timestamp()) * SEC
        hi = int(end.timestamp()) * SEC
        return bars(symbol, list(range(lo - lo % MIN - MIN, hi + 1, MIN)))

    async def aclose(self) -> None:
        self.closed += 1


class GatedHistory(FakeHistory):
    """A `FakeHistory` whose fetches return only once their gate is set: fetch i waits for
    ``gates[i]`` (the last gate for the later ones); `closed_at` holds, per fetch returned,
    how often the history had been closed by then."""

    def __init__(self, gates: int = 1) -> None:
        super().__init__()
        self.gates = [asyncio.Event() for _ in range(gates)]
        self.closed_at: list[int] = []

    async def fetch_bars(
        self, symbol: str, start: dt.datetime, end: dt.datetime, timeframe: str = "1m"
    ) -> pl.DataFrame:
        gate = self.gates[min(len(self.calls), len(self.gates) - 1)]
        frame = await super().fetch_bars(symbol, start, end, timeframe)
        await gate.wait()
        self.closed_at.append(self.closed)
        return frame


@dataclass
class Lake:
    """Stands in for the ingest engine behind `Backfiller.bind`: stores what it is given and
    reports how far each symbol's stream has got (`newest`, event time)."""

    frames: list[pl.DataFrame] = field(default_factory=list)
    newest: dict[str, int] = field(default_factory=dict)

    async def deliver(self, source: str, frame: pl.DataFrame) -> tuple[int, int]:
        self.frames.append(frame)
        return frame.height, 0

    def stream_at(self, source: str, symbol: str) -> int | None:
        return self.newest.get(symbol)


def backfiller(
    history: FakeHistory, config: BackfillConfig = FAST, source: str = "src"
) -> tuple[Backfiller, Lake]:
    """A `Backfiller` over `history` as `source`, bound to a fresh `Lake`."""
    histories: dict[str, HistoricalBars] = {source: history}
    bf = Backfiller(histories, config)
    lake = Lake()
    bf.bind(lake.deliver, lake.stream_at)
    return bf, lake


async def settle() -> None:
    """Let every task that is ready run (fetch tasks included) a few steps."""
    for _ in range(5):
        await asyncio.sleep(0)


# -- the windows ------------------------------------------------------------------------------
async def test_bar_hole_fetches_the_bars_strictly_between() -> None:
    """After bars at 2 and 6 min: the bars of 3, 4 and 5 min, nothing either side."""
    history = FakeHistory()
    bf, lake = backfiller(history)
    bf.hole("src", SYM, EventType.BAR, ns(2), ns(6))
    await bf.idle(timeout=2)
    assert history.calls == [(SYM, at(3), at(6), "1m")]
    assert stamps(lake.frames) == [ns(3), ns(4), ns(5)]
    s = bf.stats()["src"]
    assert (s["holes"], s["windows"], s["backfilled"]) == (1, 1, 1)
    assert (s["rows_fetched"], s["rows_kept"], s["rows_duplicate"]) == (3, 3, 0)


async def test_adjacent_bars_are_no_hole_to_fetch() -> None:
    """Bars one interval apart, or a hole ending where it starts: nothing is fetched."""
    history = FakeHistory()
    bf, _ = backfiller(history)
    bf.hole("src", SYM, EventType.BAR, ns(2), ns(3))
    bf.hole("src", SYM, EventType.TRADE, ns(2), ns(2))
    await settle()
    assert history.calls == []
    assert bf.stats()["src"]["windows"] == 0
    assert bf.pending() == 0


async def test_trade_hole_waits_until_the_stream_passes_its_last_bar() -> None:
    """After trades at 2:10 and 5:20: bars 2..5 min, fetched only once the stream's event
    time reaches 6:00, the end of the bar holding 5:20 (still forming before)."""
    history = FakeHistory()
    bf, lake = backfiller(history)
    lake.newest[SYM] = ns(5, 20)
    bf.hole("src", SYM, EventType.TRADE, ns(2, 10), ns(5, 20))
    await settle()
    assert history.calls == []
    assert bf.waiting("src")
    assert bf.pending() == 1

    lake.newest[SYM] = ns(6) - 1  # one ns short of the bar's end
    bf.advance("src")
    await settle()
    assert history.calls == []
    assert bf.waiting("src")

    lake.newest[SYM] = ns(6)
    bf.advance("src")
    await bf.idle(timeout=2)
    assert history.calls == [(SYM, at(2), at(6), "1m")]
    assert stamps(lake.frames) == [ns(2), ns(3), ns(4), ns(5)]
    assert not bf.waiting("src")
    assert bf.stats()["src"]["rows_kept"] == 4


async def test_trade_hole_with_its_last_bar_closed_is_fetched_at_once() -> None:
    """The stream (say its bars) is already past the hole's last bar: no waiting."""
    history = FakeHistory()
    bf, lake = backfiller(history)
    lake.newest[SYM] = ns(9)
    bf.hole("src", SYM, EventType.QUOTE, ns(4, 59), ns(7))
    assert not bf.waiting("src")
    await bf.idle(timeout=2)
    assert history.calls == [(SYM, at(4), at(8), "1m")]
    assert stamps(lake.frames) == [ns(4), ns(5), ns(6), ns(7)]


async def test_windows_already_covered_are_not_fetched_twice() -> None:
    """Holes reported while the first fetch is in flight fetch only what it does not cover;
    another symbol's window covers nothing of this one."""
    history = FakeHistory()
    bf, lake = backfiller(history)
    bf.hole("src", SYM, EventType.BAR, ns(0), ns(5))  # 1..4
    bf.hole("src", SYM, EventType.BAR, ns(2), ns(8))  # 3..7: only 5..7 is new
    bf.hole("src", SYM, EventType.BAR, ns(0), ns(5))  # covered
    bf.hole("src", SYM, EventType.TRADE, ns(1, 30), ns(4, 30))  # 1..4: covered, no waiting
    bf.hole("src", "ETH/USD", EventType.BAR, ns(0), ns(5))
    assert not bf.waiting("src")
    await bf.idle(timeout=2)
    assert history.calls == [
        (SYM, at(1), at(5), "1m"),
        (SYM, at(5), at(8), "1m"),
        ("ETH/USD", at(1), at(5), "1m"),
    ]
    kept = pl.concat(lake.frames)
    assert stamps([kept.filter(pl.col("symbol") == SYM)]) == [ns(m) for m in range(1, 8)]
    assert kept.filter(pl.col("symbol") == "ETH/USD").height == 4
    s = bf.stats()["src"]
    assert (s["holes"], s["windows"], s["covered"], s["backfilled"]) == (5, 3, 2, 3)

    bf.hole("src", SYM, EventType.BAR, ns(3), ns(7))  # done by now too
    await settle()
    assert len(history.calls) == 3
    assert bf.stats()["src"]["covered"] == 3


# -- failures ---------------------------------------------------------------------------------
async def test_failing_fetch_is_retried_and_counted_then_succeeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two failures, then the bars: retried twice after 0.5 s then 1 s, stored once."""
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def no_wait(delay: float) -> None:
        delays.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", no_wait)
    history = FakeHistory(fail=2)
    bf, lake = backfiller(history, BackfillConfig(retries=3, retry_delay_s=0.5))
    bf.hole("src", SYM, EventType.BAR, ns(0), ns(4))
    await bf.idle(timeout=2)
    assert history.calls == [(SYM, at(1), at(4), "1m")] * 3
    assert delays == [0.5, 1.0]
    assert stamps(lake.frames) == [ns(1), ns(2), ns(3)]
    s = bf.stats()["src"]
    assert (s["retried"], s["failed"], s["backfilled"], s["rows_kept"]) == (2, 0, 1, 3)
    assert s["last_error"] == "ConnectionError: venue down #2"


async def test_fetch_given_up_after_its_retries_is_logged_counted_and_freed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every attempt fails: 1 + `retries` calls, one failure logged; the window is not
    counted as covered, so the next hole over it fetches it again."""
    history = FakeHistory(fail=2)
    bf, lake = backfiller(history, BackfillConfig(retries=1, retry_delay_s=0.001))
    with caplog.at_level(logging.ERROR, logger="quantlab.ingest.backfill"):
        bf.hole("src", SYM, EventType.BAR, ns(0), ns(4))
        await bf.idle(timeout=2)
    assert len(history.calls) == 2
    assert lake.frames == []
    s = bf.stats()["src"]
    assert (s["retried"], s["failed"], s["backfilled"]) == (1, 1, 0)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "src BTC/USD: backfill of 2024-01-02T00:01:00+00:00 .. 2024-01-02T00:04:00+00:00 "
        "failed after 2 attempts: ConnectionError: venue down #2"
    ]

    bf.hole("src", SYM, EventType.BAR, ns(0), ns(4))  # the venue is back
    await bf.idle(timeout=2)
    assert history.calls[2:] == [(SYM, at(1), at(4), "1m")]
    assert stamps(lake.frames) == [ns(1), ns(2), ns(3)]
    s = bf.stats()["src"]
    assert (s["covered"], s["windows"], s["backfilled"], s["failed"]) == (0, 2, 1, 1)


async def test_fetches_in_flight_are_limited_by_concurrency() -> None:
    """With ``concurrency = 2`` a third window waits for one of two slow fetches."""
    history = GatedHistory()
    bf, lake = backfiller(history, BackfillConfig(concurrency=2))
    for symbol in ("A/USD", "B/USD", "C/USD"):
        bf.hole("src", symbol, EventType.BAR, ns(0), ns(2))
    await settle()
    assert [c[0] for c in history.calls] == ["A/USD", "B/USD"]
    history.gates[0].set()
    await bf.idle(timeout=2)
    assert [c[0] for c in history.calls] == ["A/USD", "B/USD", "C/USD"]
    assert stamps(lake.frames) == [ns(1)] * 3


# -- the cap ----------------------------------------------------------------------------------
async def test_window_longer_than_the_cap_keeps_its_most_recent_part(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A ten-day hole between bars: the last 7 days of it (10,080 bars), logged and counted."""
    history = FakeHistory()
    bf, lake = backfiller(history)
    with caplog.at_level(logging.WARNING, logger="quantlab.ingest.backfill"):
        bf.hole("src", SYM, EventType.BAR, ns(0), T0_NS + 10 * DAY)
        await bf.idle(timeout=4)
    assert history.calls == [(SYM, T0 + dt.timedelta(days=3), T0 + dt.timedelta(days=10), "1m")]
    got = stamps(lake.frames)
    assert len(got) == 7 * 1440
    assert (got[0], got[-1]) == (T0_NS + 3 * DAY, T0_NS + 10 * DAY - MIN)
    s = bf.stats()["src"]
    assert (s["clipped"], s["windows"], s["rows_kept"]) == (1, 1, 10_080)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["src BTC/USD: a hole of 863940s, backfilling its last 604800s only"]


async def test_window_within_the_cap_is_not_clipped() -> None:
    """Exactly 7 days of bars: fetched whole, nothing counted."""
    history = FakeHistory()
    bf, lake = backfiller(history)
    bf.hole("src", SYM, EventType.BAR, ns(-1), T0_NS + 7 * DAY)
    await bf.idle(timeout=4)
    assert history.calls == [(SYM, T0, T0 + dt.timedelta(days=7), "1m")]
    assert bf.stats()["src"]["clipped"] == 0
    assert len(stamps(lake.frames)) == 7 * 1440


# -- through the ingest engine ----------------------------------------------------------------
@dataclass
class Live:
    """An `IngestEngine` with a `Backfiller` on an in-process bus, and what it published."""

    engine: IngestEngine
    backfill: Backfiller
    bus: InProcessBus
    stream: list[MarketBatch]
    backfilled: list[MarketBatch]

    async def feed(self, source: str, kind: EventType, frame: pl.DataFrame) -> None:
        """`frame` from `source`, checked at once (as the flush loop would shortly)."""
        await self.engine.on_item(source, Events(kind, frame))
        await self.engine.flush()

    async def disconnect(self, source: str) -> None:
        hook = self.engine.multiplexer.on_disconnect
        assert hook is not None
        await hook(source)

    async def settle(self) -> None:
        await self.backfill.idle(timeout=2)
        await self.bus.drain(timeout=2)


@pytest.fixture
async def live() -> AsyncIterator[Callable[..., Awaitable[Live]]]:
    buses: list[InProcessBus] = []

    async def make(histories: dict[str, HistoricalBars], sources: list[str]) -> Live:
        bus = InProcessBus()
        buses.append(bus)
        stream: list[MarketBatch] = []
        backfilled: list[MarketBatch] = []

        async def on_stream(envelope: Envelope) -> None:
            stream.append(envelope.payload)

        async def on_backfill(envelope: Envelope) -> None:
            backfilled.append(envelope.payload)

        bus.consume("market.data.bar", on_stream, name="stream")
        bus.consume("market.backfill.bar", on_backfill, name="backfill")
        bf = Backfiller(histories, FAST)
        engine = IngestEngine(
            [NoSource(name) for name in sources],
            clock=SimulatedClock(),
            quality=QualityConfig(max_future_s=None, max_age_s=None),
            backfill=bf,
        )
        await engine.start(bus)
        return Live(engine, bf, bus, stream, backfilled)

    yield make
    for bus in buses:
        await bus.close()


async def test_bars_the_stream_has_or_gets_are_stored_once(
    live: Callable[..., Awaitable[Live]],
) -> None:
    """A source streaming bars and trades loses its link after the 1-min bar and a trade at
    1:10. The trade hole (1:10 .. 3:20) fetches bars 1..3 once the trades pass 4:00: bar 1
    the stream delivered is dropped as a duplicate, and bar 3, which the bar stream delivers
    after the fetch, is rejected there; the bar stream's own hole is already covered."""
    history = FakeHistory()
    lv = await live({"src": history}, ["src"])
    await lv.feed("src", EventType.BAR, bars(SYM, [ns(0), ns(1)]))
    await lv.feed("src", EventType.TRADE, trades(SYM, [ns(0, 10), ns(1, 10)]))
    await lv.disconnect("src")

    await lv.feed("src", EventType.TRADE, trades(SYM, [ns(3, 20)]))  # back: trades first
    await settle()
    assert history.calls == []  # bar 3 is still forming
    assert lv.backfill.waiting("src")
    await lv.feed("src", EventType.TRADE, trades(SYM, [ns(4, 5)]))
    await lv.settle()
    assert history.calls == [(SYM, at(1), at(4), "1m")]

    await lv.feed("src", EventType.BAR, bars(SYM, [ns(3)]))  # bar 3, as the venue closed it
    await lv.feed("src", EventType.BAR, bars(SYM, [ns(4)]))
    await lv.settle()

    assert stamps([b.frame for b in lv.stream]) == [ns(0), ns(1), ns(4)]
    assert stamps([b.frame for b in lv.backfilled]) == [ns(2), ns(3)]
    assert all(b.source == "src" for b in lv.backfilled)
    both = pl.concat([b.frame.select("symbol", "timestamp") for b in lv.stream + lv.backfilled])
    assert both.height == both.unique().height == 5
    assert lv.engine.rejected == {"duplicate": 1}  # the stream's bar 3
    s = lv.backfill.stats()["src"]
    assert (s["rows_fetched"], s["rows_kept"], s["rows_duplicate"]) == (3, 2, 1)
    # holes: the trades' (1:10 .. 3:20), the bars' (1 .. 4) and its DataGap (1 .. 4)
    assert (s["holes"], s["windows"], s["covered"], s["backfilled"]) == (3, 1, 2, 1)
    assert history.calls == [(SYM, at(1), at(4), "1m")]


async def test_bar_gap_without_a_disconnect_is_backfilled(
    live: Callable[..., Awaitable[Live]],
) -> None:
    """A bar stream skipping bars 2..4 (a `DataGap`) gets them from the venue."""
    history = FakeHistory()
    lv = await live({"src": history}, ["src"])
    await lv.feed("src", EventType.BAR, bars(SYM, [ns(0), ns(1), ns(5)]))
    await lv.settle()
    assert history.calls == [(SYM, at(2), at(5), "1m")]
    assert stamps([b.frame for b in lv.backfilled]) == [ns(2), ns(3), ns(4)]
    assert lv.engine.gaps == 1


async def test_source_with_backfill_off_is_left_alone(
    live: Callable[..., Awaitable[Live]],
) -> None:
    """Only the source with a history is backfilled; the other's holes and gaps are only
    alerted, and never reach the backfill or another source's history."""
    history = FakeHistory()
    lv = await live({"a": history}, ["a", "b"])
    for source in ("a", "b"):
        await lv.feed(source, EventType.BAR, bars(SYM, [ns(0), ns(1)]))
        await lv.disconnect(source)
        await lv.feed(source, EventType.BAR, bars(SYM, [ns(5)]))
    await lv.settle()
    assert history.calls == [(SYM, at(2), at(5), "1m")]
    assert not lv.backfill.covers("b")
    assert list(lv.backfill.stats()) == ["a"]
    assert lv.engine.gaps == 2  # both alerted
    assert {b.source for b in lv.backfilled} == {"a"}


async def test_backfiller_ignores_unknown_sources_and_gaps_when_off() -> None:
    """A hole on a source without a history is dropped; `gaps=False` drops bar gaps (holes
    from reconnects are still fetched)."""
    history = FakeHistory()
    bf, _ = backfiller(history, BackfillConfig(gaps=False), source="a")
    bf.hole("b", SYM, EventType.BAR, ns(0), ns(5))
    bf.gap("a", SYM, ns(0), ns(5))
    await settle()
    assert history.calls == []
    assert bf.stats() == {"a": bf.stats()["a"]}
    assert bf.stats()["a"]["holes"] == 0
    bf.hole("a", SYM, EventType.BAR, ns(0), ns(5))
    await bf.idle(timeout=2)
    assert history.calls == [(SYM, at(1), at(5), "1m")]


async def test_build_backfill_leaves_out_sources_switched_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``backfill = false`` on a source, or ``live.backfill = false``, builds no history."""
    monkeypatch.chdir(tmp_path)  # no quantlab.toml of the working directory
    off = {"type": "coinbase", "symbols": ["BTC/USD"], "backfill": False}
    on = {"type": "coinbase", "name": "cb2", "symbols": ["ETH/USD"]}
    assert build_backfill(load_settings(live={"sources": [off]})) is None
    assert build_backfill(load_settings(live={"sources": [on], "backfill": False})) is None
    bf = build_backfill(load_settings(live={"sources": [off, on], "backfill_timeframe": "5m"}))
    assert bf is not None
    try:
        assert (bf.covers("cb2"), bf.covers("coinbase")) == (True, False)
        assert bf.config.timeframe == "5m"
        assert bf.interval_ns == 5 * MIN
    finally:
        await bf.close()


# -- stopping ---------------------------------------------------------------------------------
async def test_close_counts_windows_still_waiting_as_abandoned() -> None:
    """At stop a window whose last bar never closed is abandoned, not fetched; the history
    is closed, and holes reported afterwards are ignored."""
    history = FakeHistory()
    bf, lake = backfiller(history)
    lake.newest[SYM] = ns(3, 30)
    bf.hole("src", SYM, EventType.TRADE, ns(1, 30), ns(3, 30))
    await bf.close()
    assert history.calls == []
    assert history.closed == 1
    assert bf.stats()["src"]["abandoned"] == 1
    assert bf.pending() == 0
    bf.hole("src", SYM, EventType.BAR, ns(0), ns(5))
    await settle()
    assert history.calls == []


async def test_window_released_while_closing_is_not_fetched_after_close() -> None:
    """`close` waits for a slow fetch; meanwhile the engine (its flusher, or the run's last
    flush) checks data that releases a waiting trade window. When `close` returns nothing
    may be in flight or use the closed history: the window was fetched, or it is abandoned."""
    history = GatedHistory(gates=2)
    bf, lake = backfiller(history)
    bf.hole("src", SYM, EventType.BAR, ns(0), ns(4))  # in flight until gate 0
    lake.newest[SYM] = ns(12, 30)
    bf.hole("src", SYM, EventType.TRADE, ns(10, 30), ns(12, 30))  # waits for 13:00
    await settle()
    closing = asyncio.get_running_loop().create_task(bf.close(timeout=2))
    await settle()
    lake.newest[SYM] = ns(13)
    bf.advance("src")
    await settle()
    history.gates[0].set()
    await closing
    in_flight_after_close = bf.pending()
    history.gates[1].set()
    await settle()
    assert bf.pending() == 0
    assert in_flight_after_close == 0
    assert history.closed_at in ([0], [0, 0])  # the window abandoned, or fetched before


# -- configuration ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "key", "shown"),
    [
        ({"timeframe": "1x"}, "backfill.timeframe", "'1x'"),
        ({"timeframe": "0m"}, "backfill.timeframe", "'0m'"),
        ({"timeframe": "m"}, "backfill.timeframe", "'m'"),
        ({"max_window_s": 0.0}, "backfill.max_window_s", "got 0.0"),
        ({"max_window_s": float("nan")}, "backfill.max_window_s", "got nan"),
        ({"retries": -1}, "backfill.retries", "got -1"),
        ({"retry_delay_s": 0.0}, "backfill.retry_delay_s", "got 0.0"),
        ({"concurrency": 0}, "backfill.concurrency", "got 0"),
    ],
)
def test_backfill_config_errors_name_the_key_and_value(
    kwargs: dict[str, object], key: str, shown: str
) -> None:
    """Each bad `BackfillConfig` value raises a `ConfigError` naming it."""
    with pytest.raises(ConfigError) as info:
        BackfillConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.key == key
    assert shown in str(info.value)


@pytest.mark.parametrize(
    ("timeframe", "expected"),
    [("1s", SEC), ("1m", MIN), ("15m", 15 * MIN), ("2h", 120 * MIN), ("1d", DAY)],
)
def test_timeframe_lengths(timeframe: str, expected: int) -> None:
    """``<n><s|m|h|d>`` is n bars of a second, minute, hour or day."""
    assert timeframe_ns(timeframe) == expected
    assert Backfiller({}, BackfillConfig(timeframe=timeframe)).interval_ns == expected


@pytest.mark.parametrize(
    ("live_settings", "key", "shown"),
    [
        ({"backfill_timeframe": "5x"}, "live.backfill_timeframe", "'5x'"),
        ({"backfill_timeframe": "0m"}, "live.backfill_timeframe", "'0m'"),
        ({"backfill": "maybe"}, "live.backfill", "'maybe'"),
        (
            {"sources": [{"type": "coinbase", "backfill": "nope"}]},
            "live.sources.0.backfill",
            "'nope'",
        ),
    ],
)
def test_live_backfill_settings_errors_name_the_key_and_value(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    live_settings: dict[str, object],
    key: str,
    shown: str,
) -> None:
    """A bad ``live.backfill*`` setting raises a `ConfigError` naming the key and value."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_settings(live=live_settings)
    assert info.value.key == key
    assert shown in str(info.value)
