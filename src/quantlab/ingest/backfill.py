"""Gap backfill: the bars a live source missed, fetched from the venue's REST history.

A live feed loses what the venue sent while the link was down: a reset, a stalled link the
multiplexer gave up on, the backoff and handshake of the reconnect. At every disconnect the
ingest engine notes the newest event time of each (kind, symbol) of the source, and the first
events after the reconnect close each hole. On a bar stream a `DataGap` (no bar for longer than
the bar interval plus `QualityConfig.gap_s`) opens a hole too, since a bar can be lost without
a reconnect. Each hole becomes a window of bars to fetch from the source's `HistoricalBars`:

* after bars: the bars strictly between the last bar before the hole and the first after it;
* after trades or quotes: every bar that overlaps the hole, from the one holding the last event
  before it to the one holding the first event after it. That last bar may still be forming at
  the venue, so its fetch waits until the stream has moved past the bar's end (event time, so
  replayed or delayed feeds are judged by their own clock).

A window, or the part of it, that an earlier fetch of the symbol already covered is not fetched
again; a fetch that fails is retried (`retries`, doubling `retry_delay_s`), then given up,
logged and counted. Fetched bars pass the source's data-quality checks
(`QualityChecker.check_history`: the row rules and the duplicate window the stream's bars go
through), so a bar the stream delivered, or delivers later, is stored once: the lake holds each
symbol and bar time once. They are published on ``market.backfill.bar`` (`bus.topics.backfill`),
which the lake writer stores and the live stages never see: history must not move a strategy,
a mark or a paper fill.

Configuration: `BackfillConfig`. The live engine (`engine.sources.build_backfill`) builds a
`Backfiller` when ``live.backfill`` is on (the default) and it writes the lake, for every
configured source whose adapter has a REST history (Alpaca, Polygon, Coinbase, ccxt), with
``live.backfill_timeframe`` (``"1m"``); a source's own ``backfill = false`` leaves it out::

    [live]
    backfill = true
    backfill_timeframe = "1m"

    [[live.sources]]
    type = "coinbase"
    symbols = ["BTC/USD"]
    backfill = false        # this one is only alerted (DataGap), not healed

Counted per source (`Backfiller.stats`, in the ingest figures): holes, windows fetched,
bars stored and already there, failures, retries. What is left when the engine stops (a
window whose last bar has not closed) is counted ``abandoned``. Holes live in memory: what a
source missed while the process itself was down (a restart) is not backfilled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import polars as pl

from quantlab.core.clock import ns_to_datetime
from quantlab.core.enums import EventType
from quantlab.core.errors import ConfigError
from quantlab.core.schemas import TIMESTAMP
from quantlab.ingest.ports import HistoricalBars

log = logging.getLogger(__name__)

_TIMEFRAME: Final = re.compile(r"^([1-9][0-9]*)([smhd])$")
_UNIT_NS: Final = {"s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_UNIT_NS["d"] = 24 * _UNIT_NS["h"]
_KEPT_WINDOWS: Final = 512  # fetched windows remembered per symbol, for the coverage check

# (source name, bars fetched) -> (rows kept, rows the stream or an earlier fetch already had)
Deliver = Callable[[str, pl.DataFrame], Awaitable[tuple[int, int]]]
# (source name, symbol) -> how far the stream has got (int ns, event time), None if unknown
Newest = Callable[[str, str], int | None]


def timeframe_ns(timeframe: str) -> int:
    """``"1m"`` -> 60e9: the length of one bar of `timeframe` (``<n><s|m|h|d>``) in ns."""
    match = _TIMEFRAME.match(timeframe)
    if match is None:
        raise ConfigError(
            "backfill.timeframe", f"expected <n><s|m|h|d> such as '1m', got {timeframe!r}"
        )
    return int(match.group(1)) * _UNIT_NS[match.group(2)]


@dataclass(frozen=True)
class BackfillConfig:
    """How gaps are backfilled.

    Parameters
    ----------
    timeframe
        The bars fetched (the stream's own bars, for a bar stream): ``"1m"``, ``"1s"``...
    gaps
        A bar stream's `DataGap` opens a hole too (not only a reconnect).
    max_window_s
        Longest window fetched for one hole; a longer one keeps its most recent part (logged
        and counted ``clipped``).
    retries, retry_delay_s
        Attempts after a failed fetch, the first after `retry_delay_s`, then doubling.
    concurrency
        Fetches in flight per source (the adapter's own limiter paces its requests).
    """

    timeframe: str = "1m"
    gaps: bool = True
    max_window_s: float = 7 * 86_400.0
    retries: int = 3
    retry_delay_s: float = 1.0
    concurrency: int = 2

    def __post_init__(self) -> None:
        timeframe_ns(self.timeframe)
        if not self.max_window_s > 0:
            raise ConfigError("backfill.max_window_s", f"must be > 0, got {self.max_window_s}")
        if self.retries < 0:
            raise ConfigError("backfill.retries", f"must be >= 0, got {self.retries}")
        if not self.retry_delay_s > 0:
            raise ConfigError("backfill.retry_delay_s", f"must be > 0, got {self.retry_delay_s}")
        if self.concurrency < 1:
            raise ConfigError("backfill.concurrency", f"must be >= 1, got {self.concurrency}")


@dataclass
class BackfillStats:
    """Per source: holes seen and what became of them."""

    holes: int = 0  # disconnect holes and bar gaps reported
    windows: int = 0  # windows fetched (or being fetched)
    covered: int = 0  # holes an earlier fetch had already covered
    clipped: int = 0  # windows cut to `max_window_s`
    backfilled: int = 0  # windows fetched and stored
    failed: int = 0  # windows given up after the retries
    retried: int = 0  # failed attempts that were retried
    abandoned: int = 0  # windows still waiting for their last bar to close at stop
    rows_fetched: int = 0
    rows_kept: int = 0  # new to the lake
    rows_duplicate: int = 0  # the stream (or an earlier fetch) had them already
    last_error: str = ""  # of the last failed attempt

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class _Window:
    symbol: str
    start_ns: int  # first bar start fetched
    end_ns: int  # bars starting before this
    ready_ns: int | None = None  # fetch once the stream has reached this (event time)


@dataclass
class _Source:
    history: HistoricalBars
    semaphore: asyncio.Semaphore
    stats: BackfillStats = field(default_factory=BackfillStats)
    done: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    waiting: list[_Window] = field(default_factory=list)


class Backfiller:
    """Turns holes in live sources into fetches of bars from their REST histories.

    Parameters
    ----------
    histories
        Source name -> that venue's `HistoricalBars`; sources without one are not backfilled.
        Histories with an ``aclose()`` are closed by `close`.
    config
        `BackfillConfig`.

    The ingest engine calls `bind` (how to store fetched bars, how far each stream has got),
    then `hole`, `gap` and `advance` as data flows, and `close` when it stops.
    """

    def __init__(
        self, histories: Mapping[str, HistoricalBars], config: BackfillConfig | None = None
    ) -> None:
        self.config = config or BackfillConfig()
        self.interval_ns = timeframe_ns(self.config.timeframe)
        self._sources = {
            name: _Source(history, asyncio.Semaphore(self.config.concurrency))
            for name, history in histories.items()
        }
        self._deliver: Deliver | None = None
        self._newest: Newest | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"Backfiller(sources={sorted(self._sources)}, timeframe={self.config.timeframe!r})"

    def bind(self, deliver: Deliver, newest: Newest) -> None:
        """Where fetched bars go, and how far each stream has got (the ingest engine's)."""
        self._deliver, self._newest = deliver, newest

    def covers(self, source: str) -> bool:
        """Whether `source` has a history to backfill from."""
        return source in self._sources

    # -- holes ----------------------------------------------------------------------------
    def hole(
        self, source: str, symbol: str, kind: EventType, before_ns: int, after_ns: int
    ) -> None:
        """`source` delivered no `kind` event of `symbol` between these two it delivered
        (event times, ns): fetch the bars the hole may have lost."""
        state = self._sources.get(source)
        if state is None or after_ns <= before_ns:
            return
        state.stats.holes += 1
        iv = self.interval_ns
        if kind is EventType.BAR:  # bar starts: the bars strictly between them
            self._schedule(source, state, _Window(symbol, before_ns + iv, after_ns))
        else:  # every bar overlapping the hole; the last one once it has closed
            first, last = before_ns - before_ns % iv, after_ns - after_ns % iv
            self._schedule(source, state, _Window(symbol, first, last + iv, ready_ns=last + iv))

    def gap(self, source: str, symbol: str, start_ns: int, end_ns: int) -> None:
        """A `DataGap` on `source`'s bars: no bar between these two bar starts."""
        if self.config.gaps:
            self.hole(source, symbol, EventType.BAR, start_ns, end_ns)

    def waiting(self, source: str) -> bool:
        """Whether `source` has windows waiting for their last bar to close (see `advance`)."""
        state = self._sources.get(source)
        return state is not None and bool(state.waiting)

    def advance(self, source: str) -> None:
        """Fetch the waiting windows of `source` whose last bar the stream has moved past."""
        state = self._sources.get(source)
        if self._closed or state is None or not state.waiting or self._newest is None:
            return  # closing: what still waits is counted abandoned by `close`
        still = []
        for window in state.waiting:
            newest = self._newest(source, window.symbol)
            if window.ready_ns is not None and (newest is None or newest < window.ready_ns):
                still.append(window)
            else:
                self._start(source, state, window)
        state.waiting = still

    def _schedule(self, source: str, state: _Source, window: _Window) -> None:
        if self._closed or window.end_ns <= window.start_ns:
            return
        longest = int(self.config.max_window_s * 1e9)
        if window.end_ns - window.start_ns > longest:
            start = window.end_ns - longest
            start += -start % self.interval_ns  # up to a bar boundary: never past the cap
            log.warning(
                "%s %s: a hole of %.0fs, backfilling its last %.0fs only",
                source,
                window.symbol,
                (window.end_ns - window.start_ns) / 1e9,
                (window.end_ns - start) / 1e9,
            )
            state.stats.clipped += 1
            window = _Window(window.symbol, start, window.end_ns, window.ready_ns)
        parts = _uncovered(window.start_ns, window.end_ns, state.done.get(window.symbol, []))
        if not parts:
            state.stats.covered += 1
            return
        for start, end in parts:
            part = _Window(window.symbol, start, end, window.ready_ns)
            done = state.done.setdefault(window.symbol, [])
            done.append((start, end))  # claimed now: a hole reported meanwhile is not fetched twice
            del done[:-_KEPT_WINDOWS]
            state.stats.windows += 1
            if part.ready_ns is None:
                self._start(source, state, part)
            else:
                state.waiting.append(part)
        self.advance(source)

    # -- fetching -------------------------------------------------------------------------
    def _start(self, source: str, state: _Source, window: _Window) -> None:
        task = asyncio.get_running_loop().create_task(
            self._fetch(source, state, window), name=f"backfill:{source}:{window.symbol}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch(self, source: str, state: _Source, window: _Window) -> None:
        cfg, stats = self.config, state.stats
        start, end = ns_to_datetime(window.start_ns), ns_to_datetime(window.end_ns)
        async with state.semaphore:
            for attempt in range(cfg.retries + 1):
                try:
                    bars = await state.history.fetch_bars(window.symbol, start, end, cfg.timeframe)
                    ts = pl.col("timestamp").cast(TIMESTAMP).cast(pl.Int64)
                    bars = bars.filter((ts >= window.start_ns) & (ts < window.end_ns))
                    stats.rows_fetched += bars.height
                    kept, duplicate = (0, 0)
                    if bars.height and self._deliver is not None:
                        kept, duplicate = await self._deliver(source, bars)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    stats.last_error = f"{type(exc).__name__}: {exc}"
                    if attempt < cfg.retries:
                        stats.retried += 1
                        await asyncio.sleep(cfg.retry_delay_s * 2**attempt)
                        continue
                    stats.failed += 1
                    with contextlib.suppress(ValueError):  # not covered after all: free it
                        state.done.get(window.symbol, []).remove((window.start_ns, window.end_ns))
                    log.error(
                        "%s %s: backfill of %s .. %s failed after %d attempts: %s: %s",
                        source,
                        window.symbol,
                        start.isoformat(),
                        end.isoformat(),
                        attempt + 1,
                        type(exc).__name__,
                        exc,
                    )
                    return
                stats.backfilled += 1
                stats.rows_kept += kept
                stats.rows_duplicate += duplicate
                log.info(
                    "%s %s: backfilled %s .. %s: %d bars new, %d already stored",
                    source,
                    window.symbol,
                    start.isoformat(),
                    end.isoformat(),
                    kept,
                    duplicate,
                )
                return

    # -- lifecycle ------------------------------------------------------------------------
    def pending(self) -> int:
        """Windows being fetched or waiting for their last bar."""
        return len(self._tasks) + sum(len(s.waiting) for s in self._sources.values())

    async def idle(self, timeout: float | None = None) -> None:
        """Wait until no fetch is in flight and no window waits (a test's checkpoint)."""
        async with asyncio.timeout(timeout):
            while self.pending():
                if self._tasks:
                    await asyncio.wait(set(self._tasks))
                else:
                    await asyncio.sleep(0.01)

    async def close(self, timeout: float = 10.0) -> None:
        """Finish the fetches in flight (cancelled after `timeout`), count what still waits as
        abandoned, and close the histories that have an ``aclose()``."""
        self._closed = True
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        for name, state in self._sources.items():
            if state.waiting:
                log.warning(
                    "%s: %d backfill windows abandoned at stop (their last bar never closed)",
                    name,
                    len(state.waiting),
                )
                state.stats.abandoned += len(state.waiting)
                state.waiting = []
            aclose = getattr(state.history, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception as exc:  # closing must not hide the run's outcome
                    log.warning("%s: closing the backfill history failed: %r", name, exc)

    def stats(self) -> dict[str, dict[str, Any]]:
        return {name: state.stats.as_dict() for name, state in self._sources.items()}


def _uncovered(start: int, end: int, done: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``[start, end)`` no interval in `done` covers."""
    parts = [(start, end)]
    for lo, hi in done:
        nxt = []
        for a, b in parts:
            if hi <= a or lo >= b:
                nxt.append((a, b))
                continue
            if a < lo:
                nxt.append((a, lo))
            if hi < b:
                nxt.append((hi, b))
        parts = nxt
        if not parts:
            break
    return parts
