"""The risk engine's market-data handler on the batches a live feed sends: small, several
symbols interleaved, some rows without a usable price; and the return window fed in small
batches (most of which close no interval) against the same rows in one batch."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import polars as pl
import pytest
from riskkit import SECOND, T0_NS, batch, quotes, settle, start_engine

from quantlab.bus import InProcessBus, topics
from quantlab.core.enums import EventType
from quantlab.risk.returns import ReturnWindow

S = SECOND


@pytest.fixture
async def bus() -> AsyncIterator[InProcessBus]:
    bus = InProcessBus()
    yield bus
    await bus.close()


async def publish(bus: InProcessBus, frame: pl.DataFrame) -> None:
    await bus.publish(topics.market_data(EventType.QUOTE), batch(frame, EventType.QUOTE))
    await settle(bus)


async def test_interleaved_quotes_set_each_symbols_mark_time_and_recent_rows(
    bus: InProcessBus,
) -> None:
    engine, _, _ = await start_engine(bus)
    frame = quotes(
        [
            ("ETH/BTC", T0_NS + 1 * S, 0.050, 0.052),
            ("LTC/BTC", T0_NS + 1 * S, 0.010, 0.012),
            ("ETH/BTC", T0_NS + 2 * S, 0.051, 0.053),
            ("XRP/BTC", T0_NS + 2 * S, float("nan"), 0.001),  # no usable price at all
            ("LTC/BTC", T0_NS + 3 * S, 0.0, 0.011),  # mid > 0 still: 0.0055
            ("ETH/BTC", T0_NS + 4 * S, float("nan"), 0.054),  # skipped: ETH stays at 2 s
        ]
    )
    await publish(bus, frame)
    assert engine.marks == {"ETH/BTC": pytest.approx(0.052), "LTC/BTC": pytest.approx(0.0055)}
    assert engine.last_ts == {"ETH/BTC": T0_NS + 2 * S, "LTC/BTC": T0_NS + 3 * S}
    eth_ts, eth_px = engine._recent["ETH/BTC"]
    assert eth_ts.tolist() == [T0_NS + 1 * S, T0_NS + 2 * S]
    assert eth_px == pytest.approx([0.051, 0.052])
    ltc_ts, ltc_px = engine._recent["LTC/BTC"]
    assert ltc_ts.tolist() == [T0_NS + 1 * S, T0_NS + 3 * S]
    assert ltc_px == pytest.approx([0.011, 0.0055])
    assert "XRP/BTC" not in engine._recent
    # Every symbol of the batch has a VaR column, even one with no usable price yet.
    assert set(engine.var.window.symbols) == {"ETH/BTC", "LTC/BTC", "XRP/BTC"}
    # A one-symbol batch older than what was seen moves nothing; a newer one does.
    old = quotes([("ETH/BTC", T0_NS, 0.060, 0.062)])
    await publish(bus, old)
    assert engine.marks["ETH/BTC"] == pytest.approx(0.052)
    assert engine._recent["ETH/BTC"][0].tolist() == [T0_NS + 1 * S, T0_NS + 2 * S]
    new = quotes([("ETH/BTC", T0_NS + 5 * S, 0.060, 0.062), ("ETH/BTC", T0_NS + 6 * S, 0.07, 0.07)])
    await publish(bus, new)
    assert engine.marks["ETH/BTC"] == pytest.approx(0.07)
    assert engine.last_ts["ETH/BTC"] == T0_NS + 6 * S
    assert engine._recent["ETH/BTC"][1] == pytest.approx([0.061, 0.07])


def _feed(win: ReturnWindow, rows: list[tuple[str, int, float]]) -> None:
    cols = np.array([win.column(s) for s, _, _ in rows], dtype=np.int64)
    ts = np.array([t for _, t, _ in rows], dtype=np.int64)
    px = np.array([p for _, _, p in rows])
    win.update(cols, ts, px)


@pytest.mark.parametrize("seed", range(6))
def test_small_batches_build_the_same_return_window_as_one_batch(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 400
    ts = np.sort(rng.integers(0, 40 * 60 * S, n))  # ~40 one-minute intervals, time-ordered
    symbols = [f"S{int(k)}" for k in rng.integers(0, 4, n)]
    prices = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    rows = [(s, int(t), float(p)) for s, t, p in zip(symbols, ts, prices, strict=True)]
    whole = ReturnWindow(window=25, interval_ns=60 * S)
    _feed(whole, rows)
    parts = ReturnWindow(window=25, interval_ns=60 * S)
    i = 0
    while i < n:
        k = int(rng.integers(1, 12))
        _feed(parts, rows[i : i + k])
        i += k
    # Same columns (first-seen order is the same), rows, counts and current prices.
    assert parts.symbols == whole.symbols
    assert parts.count == whole.count
    np.testing.assert_array_equal(parts.ordered(), whole.ordered())
    np.testing.assert_array_equal(parts.prices(), whole.prices())


def test_a_batch_inside_the_open_interval_only_moves_current_prices() -> None:
    win = ReturnWindow(window=5, interval_ns=60 * S)
    _feed(win, [("A", 0, 100.0), ("B", 1 * S, 50.0), ("A", 61 * S, 101.0)])
    version, count = win.version, win.count
    # Interval 1 is open: late rows (interval 0) are ignored, each symbol's last row wins,
    # and a NaN last row keeps the price held before the batch (as `update` always did).
    _feed(
        win,
        [
            ("B", 30 * S, 70.0),  # late
            ("A", 70 * S, 102.0),
            ("B", 80 * S, 51.0),
            ("A", 90 * S, 103.0),
            ("B", 95 * S, float("nan")),
        ],
    )
    assert (win.version, win.count) == (version, count)
    assert list(win.prices()) == [103.0, 50.0]
    _feed(win, [("A", 130 * S, 99.0)])  # closes interval 1: A 100 -> 103, B carried at 50
    assert win.ordered()[-1] == pytest.approx([103 / 100 - 1, 0.0])
