"""Clocks and the ns <-> datetime conversions."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlab.core import (
    Clock,
    QuantlabError,
    SimulatedClock,
    WallClock,
    datetime_to_ns,
    ns_to_datetime,
)

NS = 1_000_000_000
T0 = 1_704_448_800 * NS  # 2024-01-05T10:00:00Z


# -- conversions ---------------------------------------------------------------------------------


def test_known_instants() -> None:
    assert datetime_to_ns(dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) == 0
    assert datetime_to_ns(dt.datetime(2024, 1, 5, 10, tzinfo=dt.UTC)) == T0
    assert ns_to_datetime(T0) == dt.datetime(2024, 1, 5, 10, tzinfo=dt.UTC)
    assert ns_to_datetime(0) == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def test_ns_to_datetime_is_aware_utc() -> None:
    value = ns_to_datetime(T0 + 1)
    assert value.tzinfo is not None
    assert value.utcoffset() == dt.timedelta(0)


def test_ns_to_datetime_truncates_to_the_microsecond_floor() -> None:
    assert ns_to_datetime(T0 + 1_999) == dt.datetime(2024, 1, 5, 10, 0, 0, 1, tzinfo=dt.UTC)
    # Before the epoch too: floor, not toward zero.
    assert ns_to_datetime(-1) == dt.datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=dt.UTC)


def test_offset_datetime_converts_to_the_same_instant() -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert datetime_to_ns(dt.datetime(2024, 1, 5, 12, tzinfo=plus_two)) == T0


def test_naive_datetime_is_refused_naming_it() -> None:
    with pytest.raises(QuantlabError, match=r"timezone-aware, got naive 2024-01-05T10:00:00"):
        datetime_to_ns(dt.datetime(2024, 1, 5, 10))


_aware = st.builds(
    lambda naive, minutes: naive.replace(tzinfo=dt.timezone(dt.timedelta(minutes=minutes))),
    st.datetimes(min_value=dt.datetime(1900, 1, 2), max_value=dt.datetime(2200, 1, 1)),
    st.integers(-23 * 60 - 59, 23 * 60 + 59),
)


@settings(deadline=None)
@given(value=_aware)
def test_datetime_ns_datetime_round_trip(value: dt.datetime) -> None:
    back = ns_to_datetime(datetime_to_ns(value))
    assert back == value
    assert back.utcoffset() == dt.timedelta(0)


@settings(deadline=None)
@given(ts_ns=st.integers(-(2**62), 2**62))
def test_ns_datetime_ns_round_trip_to_the_microsecond(ts_ns: int) -> None:
    assert datetime_to_ns(ns_to_datetime(ts_ns)) == ts_ns - ts_ns % 1000


# -- SimulatedClock ------------------------------------------------------------------------------


def test_simulated_clock_starts_where_told() -> None:
    clock = SimulatedClock(T0)
    assert clock.now_ns() == T0
    assert clock.now() == dt.datetime(2024, 1, 5, 10, tzinfo=dt.UTC)
    assert SimulatedClock().now_ns() == 0


def test_simulated_clock_only_moves_when_told() -> None:
    clock = SimulatedClock(T0)
    time.sleep(0.001)
    assert clock.now_ns() == T0


def test_advance_to_moves_forward_and_ignores_the_past() -> None:
    clock = SimulatedClock(T0)
    clock.advance_to(T0 + 5)
    assert clock.now_ns() == T0 + 5
    clock.advance_to(T0)  # earlier: ignored
    assert clock.now_ns() == T0 + 5
    clock.advance_to(T0 + 5)
    assert clock.now_ns() == T0 + 5


def test_advance_by() -> None:
    clock = SimulatedClock(T0)
    clock.advance_by(NS)
    clock.advance_by(0)
    assert clock.now_ns() == T0 + NS
    assert clock.now() == dt.datetime(2024, 1, 5, 10, 0, 1, tzinfo=dt.UTC)


def test_advance_by_negative_raises_naming_the_delta() -> None:
    clock = SimulatedClock(T0)
    with pytest.raises(QuantlabError, match=r"cannot move backwards, got delta -1 ns"):
        clock.advance_by(-1)
    assert clock.now_ns() == T0


_steps = st.lists(
    st.one_of(
        st.tuples(st.just("to"), st.integers(-(2**40), 2**40)),
        st.tuples(st.just("by"), st.integers(-(2**30), 2**30)),
    ),
    max_size=50,
)


@settings(deadline=None)
@given(steps=_steps)
def test_simulated_clock_never_goes_backwards(steps: list[tuple[str, int]]) -> None:
    clock = SimulatedClock()
    previous = clock.now_ns()
    for kind, value in steps:
        if kind == "to":
            clock.advance_to(value)
            assert clock.now_ns() == max(previous, value)
        elif value < 0:
            with pytest.raises(QuantlabError):
                clock.advance_by(value)
        else:
            clock.advance_by(value)
            assert clock.now_ns() == previous + value
        assert clock.now_ns() >= previous
        previous = clock.now_ns()


# -- WallClock and the protocol ------------------------------------------------------------------


def test_wall_clock_reads_real_time() -> None:
    clock = WallClock()
    before = time.time_ns()
    now = clock.now_ns()
    after = time.time_ns()
    assert before <= now <= after
    aware = clock.now()
    assert aware.tzinfo is not None
    assert abs(datetime_to_ns(aware) - time.time_ns()) < 5 * NS


def test_both_clocks_satisfy_the_clock_protocol() -> None:
    assert isinstance(WallClock(), Clock)
    assert isinstance(SimulatedClock(), Clock)
    assert not isinstance(object(), Clock)
