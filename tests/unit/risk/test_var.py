"""VaR: hand-computed numbers, the return window, the cached incremental check, real bars."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from statistics import NormalDist

import numpy as np
import polars as pl
import pytest

from quantlab.adapters.sim.data import bundled_dir
from quantlab.core.errors import ConfigError
from quantlab.risk.returns import ReturnWindow
from quantlab.risk.var import (
    VarConfig,
    VarModel,
    covariance,
    historical_var,
    parametric_var,
    portfolio_var,
    tail_rank,
    z_score,
)

S = 1_000_000_000  # one second in ns
MIN = 60 * S

try:  # scipy is not a dependency; when present it checks the normal quantiles too
    from scipy.stats import norm
except ImportError:  # pragma: no cover
    norm = None


# -- the pure functions ---------------------------------------------------------------------


def test_tail_rank_is_the_ceiling_of_the_tail_count() -> None:
    assert tail_rank(100, 0.95) == 5  # not 6: 100 x 0.05 is 5.000000000000004 in floats
    assert tail_rank(100, 0.99) == 1
    assert tail_rank(500, 0.95) == 25
    assert tail_rank(500, 0.99) == 5
    assert tail_rank(250, 0.95) == 13  # 12.5 rounds up
    assert tail_rank(250, 0.99) == 3
    assert tail_rank(6, 0.99) == 1


def test_z_scores_are_the_normal_quantiles() -> None:
    assert z_score(0.95) == pytest.approx(1.6448536269514722, abs=1e-12)
    assert z_score(0.99) == pytest.approx(2.3263478740408408, abs=1e-12)
    if norm is not None:
        assert z_score(0.99) == pytest.approx(norm.ppf(0.99), abs=1e-12)


def test_historical_var_is_the_kth_largest_loss() -> None:
    pnl = np.arange(-50.0, 50.0)  # losses 50, 49, ..., -49
    np.random.default_rng(3).shuffle(pnl)
    assert historical_var(pnl, 0.95) == 46.0  # the 5th largest loss
    assert historical_var(pnl, 0.99) == 50.0  # the largest
    assert historical_var(np.arange(1.0, 10.0), 0.95) == 0.0  # all gains: no loss at risk
    assert historical_var(np.zeros(0), 0.99) == 0.0


# Six joint scenarios of two assets and a long/short position, computed by hand below.
R1 = [0.01, -0.02, 0.015, 0.0, -0.01, 0.005]
R2 = [0.02, -0.01, 0.0, 0.01, -0.015, 0.005]
X = [1000.0, -500.0]


def _cov(a: list[float], b: list[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    return sum((p - ma) * (q - mb) for p, q in zip(a, b, strict=True)) / (len(a) - 1)


def test_parametric_var_by_hand() -> None:
    variance = X[0] ** 2 * _cov(R1, R1) + X[1] ** 2 * _cov(R2, R2) + 2 * X[0] * X[1] * _cov(R1, R2)
    returns = np.array([R1, R2]).T
    for c in (0.95, 0.99):
        expected = NormalDist().inv_cdf(c) * math.sqrt(variance)
        assert parametric_var(np.array(X), covariance(returns), c) == pytest.approx(
            expected, rel=1e-12
        )
        assert portfolio_var(returns, np.array(X), c, "parametric") == pytest.approx(
            expected, rel=1e-12
        )
    # By hand: var(r1) = 8.5e-4 / 5 = 1.7e-4 (mean 0), var(r2) = (8.5e-4 - 6 (0.01/6)^2) / 5
    # = 1.6667e-4, cov = 5.75e-4 / 5 = 1.15e-4, so x'Sx = 170 + 41.667 - 115 = 290/3.
    assert variance == pytest.approx(290 / 3, rel=1e-12)
    assert portfolio_var(returns, np.array(X), 0.95, "parametric") == pytest.approx(
        16.1720, rel=1e-5
    )
    assert portfolio_var(returns, np.array(X), 0.99, "parametric") == pytest.approx(
        22.8725, rel=1e-5
    )


def test_historical_portfolio_var_by_hand() -> None:
    # P&L per scenario: 1000 r1 - 500 r2 = 0, -15, 15, -5, -2.5, 2.5.
    returns = np.array([R1, R2]).T
    assert list(returns @ np.array(X)) == pytest.approx([0, -15, 15, -5, -2.5, 2.5])
    assert portfolio_var(returns, np.array(X), 0.95) == pytest.approx(15.0)
    assert portfolio_var(returns, np.array(X), 0.99) == pytest.approx(15.0)
    # Flat: no risk; the opposite position loses 15 in the third scenario.
    assert portfolio_var(returns, np.zeros(2), 0.99) == 0.0
    assert portfolio_var(returns, -np.array(X), 0.99) == pytest.approx(15.0)


def test_var_config_is_validated_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"risk\.var\.confidence"):
        VarConfig(confidence=1.0)
    with pytest.raises(ConfigError, match=r"risk\.var\.method"):
        VarConfig(method="montecarlo")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"risk\.var\.min_obs"):
        VarConfig(window=20, min_obs=30)


# -- the return window ----------------------------------------------------------------------


def _update(win: ReturnWindow, rows: list[tuple[str, int, float]]) -> int:
    cols = np.array([win.column(s) for s, _, _ in rows], dtype=np.int64)
    ts = np.array([t for _, t, _ in rows], dtype=np.int64)
    px = np.array([p for _, _, p in rows])
    return win.update(cols, ts, px)


def test_return_window_samples_the_grid_carrying_prices_forward() -> None:
    win = ReturnWindow(window=10, interval_ns=MIN)
    added = _update(
        win,
        [
            ("A", 0, 100.0),
            ("B", 10 * S, 50.0),
            ("A", 30 * S, 101.0),  # A closes interval 0 at 101
            ("A", 70 * S, 102.0),  # interval 1: B has nothing, carried at 50
            ("A", 125 * S, 99.0),  # interval 2 stays open
            ("B", 130 * S, 55.0),
        ],
    )
    assert added == 1  # interval 0 has no previous one; interval 1 gives the first row
    assert win.ordered() == pytest.approx(np.array([[102 / 101 - 1, 0.0]]))
    added = _update(
        win,
        [
            ("A", 150 * S, 98.0),  # still interval 2
            ("C", 170 * S, 10.0),  # a new symbol: zero returns before it was seen
            ("B", 45 * S, 70.0),  # late: ignored
            ("A", 200 * S, 100.0),  # interval 3: closes interval 2
        ],
    )
    assert added == 1
    assert win.symbols == ["A", "B", "C"]
    expected = np.array([[102 / 101 - 1, 0.0, 0.0], [98 / 102 - 1, 55 / 50 - 1, 0.0]])
    assert win.ordered() == pytest.approx(expected, abs=1e-15)
    assert list(win.prices()) == [100.0, 55.0, 10.0]
    assert win.version == 2


def test_return_window_keeps_the_last_rows_in_a_ring() -> None:
    prices = [100.0, 110.0, 99.0, 99.0, 120.0, 60.0, 61.0, 30.5]
    returns = [b / a - 1 for a, b in itertools.pairwise(prices)]
    win = ReturnWindow(window=3, interval_ns=MIN)
    _update(win, [("A", i * MIN, p) for i, p in enumerate(prices[:5])])  # 3 rows
    assert win.ordered()[:, 0] == pytest.approx(returns[:3])
    _update(win, [("A", 5 * MIN, prices[5])])
    assert win.ordered()[:, 0] == pytest.approx(returns[1:4])
    _update(win, [("A", 6 * MIN, prices[6]), ("A", 7 * MIN, prices[7])])
    assert win.count == 3
    assert win.ordered()[:, 0] == pytest.approx(returns[3:6])
    assert sorted(win.returns()[:, 0]) == pytest.approx(sorted(returns[3:6]))
    # More closed intervals in one batch than the window holds.
    win2 = ReturnWindow(window=3, interval_ns=MIN)
    _update(win2, [("A", i * MIN, p) for i, p in enumerate(prices)])
    assert win2.ordered()[:, 0] == pytest.approx(returns[3:6])


# -- the cached model -----------------------------------------------------------------------


def _model(method: str, rows: int = 300, n: int = 4, seed: int = 11) -> VarModel:
    model = VarModel(VarConfig(method=method, confidence=0.99, window=200, interval_s=60))  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    prices = np.full(n, 100.0)
    data = []
    for k in range(rows):
        prices = prices * (1 + rng.normal(0, 0.01, n))
        data += [(f"S{j}/USD", k * MIN, float(prices[j])) for j in range(n)]
    _update(model.window, data)
    return model


@pytest.mark.parametrize("method", ["historical", "parametric"])
def test_incremental_var_matches_the_full_computation(method: str) -> None:
    model = _model(method)
    qty = [3.0, -2.0, 0.0, 1.0]
    for col, q in enumerate(qty):
        model.set_quantity(col, q)
    returns, prices = model.window.returns(), model.window.prices()
    x = np.array(qty) * prices
    pre = portfolio_var(returns, x, 0.99, method)  # type: ignore[arg-type]
    assert model.value() == pytest.approx(pre, rel=1e-12)
    for col, dq in [(0, 5.0), (1, 2.0), (2, -4.0), (3, -1.0)]:
        post_x = x.copy()
        post_x[col] += dq * prices[col]
        got_pre, got_post = model.incremental(col, dq * prices[col])
        assert got_pre == pytest.approx(pre, rel=1e-12)
        expected = portfolio_var(returns, post_x, 0.99, method)  # type: ignore[arg-type]
        assert got_post == pytest.approx(expected, rel=1e-9, abs=1e-12)
    report = model.report()
    assert report["historical_99"] >= report["historical_95"] > 0
    assert report["parametric_99"] == pytest.approx(
        report["parametric_95"] * z_score(0.99) / z_score(0.95)
    )


def test_the_covariance_is_computed_once_per_window_change() -> None:
    model = _model("parametric")
    model.set_quantity(0, 1.0)
    for _ in range(100):
        model.incremental(1, 10.0)
    assert model.refreshes == 1
    model.set_quantity(0, 2.0)  # exposure changes: P&L recomputed, covariance kept
    model.incremental(1, 10.0)
    assert model.refreshes == 1
    _update(model.window, [("S0/USD", 10_000 * MIN, 100.0), ("S0/USD", 10_001 * MIN, 101.0)])
    for _ in range(10):
        model.incremental(1, 10.0)
    assert model.refreshes == 2


# -- the real bundled bars ------------------------------------------------------------------


def _reference_returns(bars: pl.DataFrame, window: int) -> pl.DataFrame:
    wide = (
        bars.pivot(on="symbol", index="timestamp", values="close")
        .sort("timestamp")
        .fill_null(strategy="forward")
    )
    symbols = [c for c in wide.columns if c != "timestamp"]
    returns = wide.select(
        [(pl.col(s) / pl.col(s).shift(1) - 1).fill_null(0.0).alias(s) for s in symbols]
    )
    # The first interval has no return; the last one is still open.
    return returns.slice(1, returns.height - 2).tail(window)


def test_historical_var_on_the_bundled_binance_bars() -> None:
    path = Path(bundled_dir()) / "binance_btc_pairs_5m_2018-01.parquet"
    bars = pl.read_parquet(path).sort("timestamp", "symbol")
    model = VarModel(VarConfig(window=500, interval_s=300.0, confidence=0.99))
    win = model.window
    for chunk in bars.iter_slices(1000):  # as the ingest batcher would hand them over
        cols = np.array([win.column(s) for s in chunk["symbol"].to_list()], dtype=np.int64)
        win.update(cols, chunk["timestamp"].dt.epoch("ns").to_numpy(), chunk["close"].to_numpy())
    assert win.count == 500
    reference = _reference_returns(bars, 500)
    assert set(win.symbols) == set(reference.columns)
    ordered = win.ordered()
    for symbol in reference.columns:
        assert ordered[:, win.columns[symbol]] == pytest.approx(
            reference[symbol].to_numpy(), rel=1e-12, abs=1e-15
        )
    # 1 BTC long ETH, 0.5 BTC short LTC, 0.25 BTC long XMR.
    notional = {"ETH/BTC": 1.0, "LTC/BTC": -0.5, "XMR/BTC": 0.25}
    prices = win.prices()
    for symbol, value in notional.items():
        col = win.columns[symbol]
        model.set_quantity(col, value / prices[col])
    pnl = reference.select(
        pl.sum_horizontal(pl.col(s) * v for s, v in notional.items())
    ).to_series()
    losses = sorted((-pnl).to_list(), reverse=True)  # largest loss first
    expected99, expected95 = losses[4], losses[24]  # k = 5 and 25 of 500
    assert model.value() == pytest.approx(expected99, rel=1e-9)
    report = model.report()
    assert report["historical_99"] == pytest.approx(expected99, rel=1e-9)
    assert report["historical_95"] == pytest.approx(expected95, rel=1e-9)
    # Five-minute VaR of ~1.75 BTC gross in Jan 2018: a few thousandths of a BTC.
    assert 0.001 < expected95 < expected99 < 0.05
    # Fat tails: the historical 99% is above the normal one; both are the same order.
    assert 0.5 < report["parametric_99"] / expected99 < 2.0
