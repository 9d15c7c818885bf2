"""The batcher: fixed-size frames, remainder on flush, nothing lost, time flush."""

from __future__ import annotations

import time

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from quantlab.adapters.sim.data import bundled_dir
from quantlab.core.errors import DataError
from quantlab.ingest.batcher import Batcher

# Same examples on every run (no example database, no random seed): deterministic tests.
DETERMINISTIC = settings(derandomize=True, database=None, deadline=None)

BARS = (
    pl.read_parquet(bundled_dir() / "binance_btc_pairs_5m_2018-01.parquet")
    .sort("timestamp", "symbol")
    .head(3_000)
)


class FakeMonotonic:
    """Stands in for the `time` module inside the batcher: time moves only when told."""

    def __init__(self) -> None:
        self.now = 1_000_000_000

    def monotonic_ns(self) -> int:
        return self.now

    def advance_ms(self, ms: float) -> None:
        self.now += int(ms * 1e6)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeMonotonic:
    fake = FakeMonotonic()
    monkeypatch.setattr("quantlab.ingest.batcher.time", fake)
    return fake


def test_emits_exact_batch_size_frames_and_the_rest_on_flush() -> None:
    batcher = Batcher(batch_size=100)
    assert batcher.add(BARS.slice(0, 60)) == []
    assert batcher.pending == 60
    out = batcher.add(BARS.slice(60, 190))  # 250 rows in: two batches, 50 left
    assert [b.height for b in out] == [100, 100]
    assert_frame_equal(out[0], BARS.slice(0, 100))
    assert_frame_equal(out[1], BARS.slice(100, 100))
    assert batcher.pending == 50
    rest = batcher.flush()
    assert rest is not None
    assert_frame_equal(rest, BARS.slice(200, 50))
    assert batcher.pending == 0
    assert batcher.flush() is None


def test_empty_frames_are_ignored() -> None:
    batcher = Batcher(batch_size=10)
    assert batcher.add(BARS.clear()) == []
    assert batcher.pending == 0
    assert not batcher.due()
    assert batcher.flush() is None


@settings(DETERMINISTIC, max_examples=100)
@given(
    st.integers(1, 700),
    st.lists(st.integers(0, 900), max_size=12),
    st.lists(st.booleans(), max_size=12),
)
def test_no_row_is_lost_or_duplicated(
    batch_size: int, sizes: list[int], flushes: list[bool]
) -> None:
    batcher = Batcher(batch_size=batch_size)
    out: list[pl.DataFrame] = []
    offset = 0
    for k, size in enumerate(sizes):
        size = min(size, BARS.height - offset)
        full = batcher.add(BARS.slice(offset, size))
        offset += size
        assert all(b.height == batch_size for b in full)
        assert batcher.pending < batch_size
        out.extend(full)
        if k < len(flushes) and flushes[k]:
            rest = batcher.flush()
            assert rest is None or 0 < rest.height < batch_size
            out.extend([rest] if rest is not None else [])
    rest = batcher.flush()
    out.extend([rest] if rest is not None else [])
    got = pl.concat(out) if out else BARS.clear()
    assert_frame_equal(got, BARS.head(offset))


def test_due_after_flush_ms(clock: FakeMonotonic) -> None:
    batcher = Batcher(batch_size=100, flush_ms=5.0)
    assert not batcher.due()  # nothing pending
    batcher.add(BARS.slice(0, 10))
    clock.advance_ms(4.9)
    batcher.add(BARS.slice(10, 10))  # a later frame does not restart the wait
    assert not batcher.due()
    clock.advance_ms(0.1)
    assert batcher.due()
    batcher.flush()
    assert not batcher.due()


def test_due_restarts_for_the_rows_left_after_a_cut(clock: FakeMonotonic) -> None:
    batcher = Batcher(batch_size=100, flush_ms=5.0)
    batcher.add(BARS.slice(0, 90))
    clock.advance_ms(4.0)
    assert len(batcher.add(BARS.slice(90, 30))) == 1  # 20 rows left, all from the new frame
    clock.advance_ms(4.0)
    assert not batcher.due()
    clock.advance_ms(1.0)
    assert batcher.due()
    batcher.add(BARS.slice(120, 80))  # exactly one batch, nothing left
    assert not batcher.due()


def test_due_with_the_real_clock() -> None:
    batcher = Batcher(batch_size=100, flush_ms=1.0)
    batcher.add(BARS.slice(0, 1))
    time.sleep(0.002)
    assert batcher.due()


@pytest.mark.parametrize(("size", "ms"), [(0, 5.0), (-1, 5.0), (10, 0.0), (10, -1.0)])
def test_bad_settings_are_refused(size: int, ms: float) -> None:
    with pytest.raises(DataError, match="must be"):
        Batcher(batch_size=size, flush_ms=ms)
