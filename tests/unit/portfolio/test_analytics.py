"""Performance analytics: against empyrical-reloaded, by hand, and by property."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import empyrical
import numpy as np
import pandas as pd
import polars as pl
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from quantlab.adapters.sim.data import bundled_dir
from quantlab.portfolio import analytics as an

# Same examples on every run (no example database, no random seed): deterministic tests.
DETERMINISTIC = settings(derandomize=True, database=None, deadline=None, max_examples=60)

T0 = dt.datetime(2018, 1, 10, 4, 55, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
FIVE_MIN = dt.timedelta(minutes=5)
REL = 1e-9


def frame(equity: list[float] | np.ndarray, step: dt.timedelta = DAY) -> pl.DataFrame:
    """An equity frame with one bar per `step` from T0."""
    values = np.asarray(equity, dtype=np.float64)
    return pl.DataFrame(
        {
            "timestamp": pl.Series([T0 + i * step for i in range(len(values))]).cast(
                pl.Datetime("ns", "UTC")
            ),
            "equity": values,
        }
    )


def t(i: int, step: dt.timedelta = DAY) -> dt.datetime:
    return T0 + i * step


def close(a: float, b: float, rel: float = REL) -> bool:
    """Equal to `rel`, NaN equal to NaN, infinities equal to themselves."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-15)


def random_walk() -> pl.DataFrame:
    rng = np.random.default_rng(20180110)
    r = rng.normal(0.0001, 0.004, size=3000)
    return frame(10_000 * np.cumprod(1 + r), FIVE_MIN)


def eth_btc() -> pl.DataFrame:
    bars = pl.read_parquet(bundled_dir() / "binance_btc_pairs_5m_2018-01.parquet")
    return (
        bars.filter(pl.col("symbol") == "ETH/BTC")
        .sort("timestamp")
        .select("timestamp", pl.col("close").alias("equity"))
    )


CURVES = {"random_walk": random_walk(), "eth_btc": eth_btc()}


# --------------------------------------------------------------------------- vs empyrical


@pytest.fixture(params=sorted(CURVES), scope="module")
def curve(request: pytest.FixtureRequest) -> pl.DataFrame:
    return CURVES[request.param]


def test_returns_match_empyrical_simple_returns(curve: pl.DataFrame) -> None:
    r = an.returns(curve)
    expected = empyrical.simple_returns(pd.Series(curve["equity"].to_numpy()))
    assert r.height == curve.height - 1
    assert r["timestamp"].to_list() == curve["timestamp"].to_list()[1:]
    np.testing.assert_allclose(r["returns"].to_numpy(), expected.to_numpy(), rtol=REL)
    roundtrip = an.equity_curve(r, start=float(curve["equity"][0]))
    np.testing.assert_allclose(roundtrip["equity"].to_numpy(), curve["equity"].to_numpy()[1:])


def test_ratios_match_empyrical(curve: pl.DataFrame) -> None:
    ppy = an.periods_per_year(curve["timestamp"])
    assert ppy == 105_120
    frame_r = an.returns(curve)
    r = frame_r["returns"].to_numpy()
    for data in (frame_r, frame_r["returns"], r):  # frame, Series and array all accepted
        assert close(an.sharpe(data, ppy), empyrical.sharpe_ratio(r, annualization=ppy))
    rf, mar = 1e-6, 2e-5
    checks = {
        "sharpe": (an.sharpe(r, ppy), empyrical.sharpe_ratio(r, annualization=ppy)),
        "sharpe_rf": (
            an.sharpe(r, ppy, risk_free=rf),
            empyrical.sharpe_ratio(r, risk_free=rf, annualization=ppy),
        ),
        "sortino": (an.sortino(r, ppy), empyrical.sortino_ratio(r, annualization=ppy)),
        "sortino_mar": (
            an.sortino(r, ppy, required_return=mar),
            empyrical.sortino_ratio(r, required_return=mar, annualization=ppy),
        ),
        "downside_risk": (
            an.downside_risk(r, ppy),
            empyrical.downside_risk(r, annualization=ppy),
        ),
        "annual_return": (an.annual_return(r, ppy), empyrical.annual_return(r, annualization=ppy)),
        "annual_volatility": (
            an.annual_volatility(r, ppy),
            empyrical.annual_volatility(r, annualization=ppy),
        ),
        "calmar": (an.calmar(r, ppy), empyrical.calmar_ratio(r, annualization=ppy)),
        "total_return": (an.total_return(r), empyrical.cum_returns_final(r)),
        "max_drawdown": (an.max_drawdown(curve).depth, -empyrical.max_drawdown(r)),
        "max_drawdown_returns": (an.max_drawdown(frame_r).depth, -empyrical.max_drawdown(r)),
    }
    bad = {k: v for k, v in checks.items() if not close(float(v[0]), float(v[1]))}
    assert not bad
    assert all(math.isfinite(v[0]) for v in checks.values())


def test_drawdown_dates_on_real_curve_are_consistent() -> None:
    curve = CURVES["eth_btc"]
    dd = an.max_drawdown(curve)
    eq = dict(zip(curve["timestamp"].to_list(), curve["equity"].to_list(), strict=True))
    assert dd.peak is not None
    assert dd.trough is not None
    assert dd.peak < dd.trough
    assert math.isclose(1 - eq[dd.trough] / eq[dd.peak], dd.depth, rel_tol=1e-12)
    end = dd.recovery if dd.recovery is not None else curve["timestamp"][-1]
    assert dd.duration == end - dd.peak


# --------------------------------------------------------------------------- by hand


def test_max_drawdown_duration_recovered_and_first_of_tied_troughs() -> None:
    # Two 50 % drawdowns: 120 -> 60 (recovered at t5) and 130 -> 65 (open): the first wins.
    dd = an.max_drawdown(frame([100, 120, 90, 60, 90, 120, 130, 65]))
    assert dd == an.Drawdown(0.5, t(1), t(3), t(5), 4 * DAY)


def test_max_drawdown_not_recovered_lasts_to_the_end() -> None:
    dd = an.max_drawdown(frame([100, 110, 80, 100]))
    assert dd.depth == pytest.approx(1 - 80 / 110, rel=1e-15)
    assert (dd.peak, dd.trough, dd.recovery, dd.duration) == (t(1), t(2), None, 2 * DAY)


def test_max_drawdown_peak_is_the_last_time_at_the_high() -> None:
    dd = an.max_drawdown(frame([100, 120, 110, 120, 90, 125]))
    assert (dd.peak, dd.trough, dd.recovery, dd.duration) == (t(3), t(4), t(5), 2 * DAY)
    assert dd.depth == pytest.approx(0.25, rel=1e-15)


def test_max_drawdown_of_returns_frame_dates_the_start_one_bar_earlier() -> None:
    r = an.returns(frame([100, 90, 110]))  # returns at t1, t2; the start is t0
    dd = an.max_drawdown(r)
    assert (dd.peak, dd.trough, dd.recovery, dd.duration) == (t(0), t(1), t(2), 2 * DAY)
    assert dd.depth == pytest.approx(0.1, rel=1e-15)
    start = T0 - DAY
    assert an.max_drawdown(r, start=start).peak == start
    with pytest.raises(ValueError, match="start"):
        an.max_drawdown(r, start=t(1))
    with pytest.raises(ValueError, match="start"):
        an.max_drawdown(r.head(1))


def test_no_drawdown() -> None:
    assert an.max_drawdown(frame([1, 2, 2, 3])) == an.Drawdown(
        0.0, None, None, None, dt.timedelta(0)
    )
    assert math.isnan(an.calmar([0.1, 0.0, 0.2], 252))


def test_hit_rate() -> None:
    assert an.hit_rate(pl.DataFrame({"pnl": [10.0, -5.0, 0.0, 3.0]})) == 0.5
    decimals = pl.DataFrame({"pnl": [Decimal("0.01"), Decimal("-2"), Decimal("7.5")]})
    assert an.hit_rate(decimals) == pytest.approx(2 / 3)
    assert an.hit_rate(pl.DataFrame({"p": [1.0]}), pnl="p") == 1.0
    assert math.isnan(an.hit_rate(pl.DataFrame({"pnl": []}, schema={"pnl": pl.Float64})))
    with pytest.raises(ValueError, match=r"trades\.pnl: 1 null"):
        an.hit_rate(pl.DataFrame({"pnl": [1.0, None]}))
    with pytest.raises(ValueError, match="missing column"):
        an.hit_rate(pl.DataFrame({"profit": [1.0]}))


EQ4 = frame([100, 100, 200, 200])  # average equity 150


def test_turnover() -> None:
    fills = pl.DataFrame({"timestamp": [t(1), t(3)], "notional": [50.0, -100.0]})
    assert an.turnover(fills, EQ4) == 1.0  # (50 + 100) / 150
    qp = pl.DataFrame(
        {
            "timestamp": [t(0), t(2), t(2)],
            "quantity": [Decimal("1"), Decimal("-2"), Decimal("0.5")],
            "price": [Decimal("30"), Decimal("45"), Decimal("60")],
        }
    )
    assert an.turnover(qp, EQ4) == pytest.approx((30 + 90 + 30) / 150)
    empty = pl.DataFrame(schema={"timestamp": pl.Datetime("us", "UTC"), "notional": pl.Float64})
    assert an.turnover(empty, EQ4) == 0.0
    late = pl.DataFrame({"timestamp": [t(4)], "notional": [1.0]})
    with pytest.raises(ValueError, match="outside the equity span"):
        an.turnover(late, EQ4)


def test_exposure() -> None:
    positions = pl.DataFrame(
        {
            "timestamp": [t(1), t(2), t(2), t(3)],
            "symbol": ["ETH/BTC", "ETH/BTC", "LTC/BTC", "ETH/BTC"],
            "quantity": [1.0, -1.0, 2.0, 0.0],
            "price": [50.0, 50.0, 25.0, 40.0],
        }
    )
    # Gross by bar: 0, 50, 100, 0 over equity 100, 100, 200, 200.
    assert an.exposure(positions, EQ4) == an.Exposure(0.5, (0 + 0.5 + 0.5 + 0) / 4)
    stray = pl.DataFrame({"timestamp": [t(1) + FIVE_MIN], "notional": [1.0]})
    with pytest.raises(ValueError, match="not in the equity frame"):
        an.exposure(stray, EQ4)


def test_periods_per_year_calendar_convention() -> None:
    five_min = frame(np.ones(10), FIVE_MIN)["timestamp"]
    assert an.periods_per_year(five_min) == 105_120
    assert an.periods_per_year([t(0), t(1), t(2)]) == 365
    hourly = [T0 + dt.timedelta(hours=h) for h in (0, 1, 2, 4, 5)]  # a missing bar
    assert an.periods_per_year(hourly) == 8760
    with pytest.raises(ValueError, match="at least 2"):
        an.periods_per_year([T0])
    with pytest.raises(ValueError, match="not sorted"):
        an.periods_per_year([t(1), t(0)])


# --------------------------------------------------------------------------- edge cases


def test_empty_and_single_bar_give_nan() -> None:
    for eq in (frame([]), frame([100.0])):
        r = an.returns(eq)
        assert r.height == 0
        assert r.schema["returns"] == pl.Float64
        for value in (
            an.sharpe(r, 252),
            an.sortino(r, 252),
            an.annual_return(r, 252),
            an.annual_volatility(r, 252),
            an.calmar(r, 252),
            an.total_return(r),
        ):
            assert math.isnan(value)
    assert math.isnan(an.max_drawdown(frame([])).depth)
    assert an.max_drawdown(frame([100.0])).depth == 0.0
    assert math.isnan(an.sharpe([0.01], 252))  # fewer than 2 returns
    assert math.isnan(empyrical.sharpe_ratio(np.array([0.01]), annualization=252))


def test_zero_volatility_follows_empyrical() -> None:
    flat = an.returns(frame([100.0] * 6))["returns"].to_numpy()
    assert math.isnan(an.sharpe(flat, 252))
    assert math.isnan(an.sortino(flat, 252))
    assert an.annual_volatility(flat, 252) == 0.0
    assert an.max_drawdown(frame([100.0] * 6)).depth == 0.0
    assert math.isnan(an.calmar(flat, 252))
    assert math.isnan(empyrical.sharpe_ratio(flat, annualization=252))
    steady = np.full(5, 0.01)
    assert an.sharpe(steady, 252) == math.inf == empyrical.sharpe_ratio(steady, annualization=252)
    assert an.sharpe(-steady, 252) == -math.inf
    assert an.sortino(steady, 252) == math.inf


@pytest.mark.parametrize(
    ("eq", "match"),
    [
        (frame([100.0, 0.0, 50.0]), "non-positive"),
        (frame([100.0, -1.0]), "non-positive"),
        (frame([100.0, math.nan]), "NaN"),
        (frame([100.0, 90.0]).reverse(), "not sorted"),
        (pl.concat([frame([100.0]), frame([101.0])]), "duplicate"),
        (frame([1.0]).rename({"equity": "value"}), "missing column"),
        (frame([1.0]).with_columns(pl.col("timestamp").dt.date()), "Datetime"),
        (frame([1.0]).with_columns(pl.col("equity").cast(pl.String)), "numeric"),
        (
            frame([1.0]).with_columns(pl.col("timestamp").dt.convert_time_zone("Europe/Paris")),
            "UTC",
        ),
    ],
)
def test_bad_equity_raises(eq: pl.DataFrame, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        an.returns(eq)
    with pytest.raises(ValueError, match=match):
        an.summary(eq)


def test_bad_returns_and_factor_raise() -> None:
    with pytest.raises(ValueError, match="NaN"):
        an.sharpe([0.1, math.nan], 252)
    with pytest.raises(ValueError, match="below -100%"):
        an.annual_return([0.1, -1.5], 252)
    with pytest.raises(ValueError, match="periods_per_year"):
        an.sharpe([0.1, 0.2], 0)
    with pytest.raises(ValueError, match="one dimension"):
        an.sharpe(np.ones((2, 2)), 252)


# --------------------------------------------------------------------------- summary


def test_summary_bundles_the_statistics() -> None:
    eq = frame([100, 110, 99, 120, 130])
    r = an.returns(eq)
    out = an.summary(
        eq,
        trades=pl.DataFrame({"pnl": [1.0, -1.0]}),
        positions=pl.DataFrame({"timestamp": [t(1)], "notional": [55.0]}),
        fills=pl.DataFrame({"timestamp": [t(1)], "notional": [55.0]}),
    )
    assert out["periods_per_year"] == 365
    assert out["periods"] == 4
    assert out["sharpe"] == an.sharpe(r, 365)
    assert out["sortino"] == an.sortino(r, 365)
    assert out["calmar"] == an.calmar(r, 365)
    assert out["annual_return"] == an.annual_return(r, 365)
    assert out["annual_volatility"] == an.annual_volatility(r, 365)
    assert out["total_return"] == pytest.approx(0.3)
    assert out["max_drawdown"] == pytest.approx(0.1)
    assert out["max_drawdown_duration_days"] == 2.0
    assert out["hit_rate"] == 0.5
    assert out["trades"] == 2
    assert out["time_in_market"] == 0.2
    assert out["avg_gross_exposure"] == pytest.approx(0.5 / 5)
    assert out["turnover"] == pytest.approx(55 / 111.8)
    assert all(isinstance(v, float) for v in out.values())
    daily = an.summary(eq, periods_per_year=252)
    assert daily["sharpe"] == an.sharpe(r, 252)
    assert "hit_rate" not in daily
    assert math.isnan(an.summary(frame([100.0]))["sharpe"])


# --------------------------------------------------------------------------- properties

cents = st.integers(min_value=100, max_value=10**6).map(lambda c: c / 100)
equities = st.lists(cents, min_size=2, max_size=40)


@DETERMINISTIC
@given(equities)
def test_max_drawdown_is_a_fraction_and_matches_empyrical(values: list[float]) -> None:
    dd = an.max_drawdown(frame(values))
    assert 0.0 <= dd.depth <= 1.0
    r = an.returns(frame(values))["returns"].to_numpy()
    assert math.isclose(dd.depth, -empyrical.max_drawdown(r), rel_tol=1e-12, abs_tol=1e-15)
    assert (dd.peak is None) == (dd.depth == 0.0)


@DETERMINISTIC
@given(equities, st.floats(min_value=1e-3, max_value=1e3))
def test_sharpe_is_invariant_to_scaling_the_equity(values: list[float], k: float) -> None:
    r = an.returns(frame(values))["returns"].to_numpy()
    assume(len(r) >= 2 and np.std(r) > 1e-4)
    scaled = an.returns(frame([k * v for v in values]))
    assert math.isclose(an.sharpe(scaled, 252), an.sharpe(r, 252), rel_tol=1e-6, abs_tol=1e-6)
    assert an.max_drawdown(frame(values)).depth == pytest.approx(
        an.max_drawdown(frame([k * v for v in values])).depth, rel=1e-9, abs=1e-12
    )


@DETERMINISTIC
@given(
    st.floats(min_value=0.01, max_value=1e6),
    st.lists(st.floats(min_value=0.0, max_value=1e3), min_size=1, max_size=40),
)
def test_no_drawdown_for_a_non_decreasing_curve(start: float, steps: list[float]) -> None:
    values = start + np.cumsum([0.0, *steps])
    dd = an.max_drawdown(frame(values))
    assert dd == an.Drawdown(0.0, None, None, None, dt.timedelta(0))
    assert math.isnan(an.calmar(an.returns(frame(values)), 252))
