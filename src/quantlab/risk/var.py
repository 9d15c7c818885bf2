"""Portfolio value at risk: historical and parametric (variance-covariance), and the
incremental VaR of a proposed order.

Positions are a vector ``x`` of signed notionals (quantity x mark, in quote units; different
quote currencies are summed as they are), returns a ``T x n`` matrix of joint scenarios
(`ReturnWindow`), so the scenario profit and loss is ``R @ x``. The VaR horizon is one
return interval.

* historical: the ``k``-th largest loss of the ``T`` scenarios, ``k = ceil(T (1 - c))``
  (with ``T = 100`` at 95%: the 5th worst loss).
* parametric: ``z_c sqrt(x' S x)``, ``S`` the sample covariance (``ddof=1``) of the returns,
  zero mean assumed (the usual short-horizon convention).

VaR is a loss, reported as a number >= 0.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Literal

import msgspec
import numpy as np

from quantlab.core.errors import ConfigError
from quantlab.risk.returns import ReturnWindow

Method = Literal["historical", "parametric"]


class VarConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the risk engine computes and limits VaR.

    Parameters
    ----------
    method, confidence
        The VaR the limit applies to (``"historical"`` or ``"parametric"``; e.g. 0.95, 0.99).
    limit
        Deny an order when the post-trade VaR exceeds this (quote units) and the order
        increases VaR. None: VaR is computed and reported, not enforced.
    window
        Return rows kept (the rolling window).
    interval_s
        Return sampling interval, also the VaR horizon.
    min_obs
        VaR is enforced only once the window holds this many rows (before that there is no
        meaningful estimate; the engine reports ``var_ready: false``).
    """

    method: Method = "historical"
    confidence: float = 0.99
    limit: float | None = None
    window: int = 500
    interval_s: float = 300.0
    min_obs: int = 30

    def __post_init__(self) -> None:
        if self.method not in ("historical", "parametric"):
            raise ConfigError(
                "risk.var.method", f"expected historical or parametric, got {self.method!r}"
            )
        if not 0.5 < self.confidence < 1.0:
            raise ConfigError(
                "risk.var.confidence", f"must be in (0.5, 1), got {self.confidence!r}"
            )
        if self.limit is not None and not (math.isfinite(self.limit) and self.limit > 0):
            raise ConfigError("risk.var.limit", f"must be a finite number > 0, got {self.limit!r}")
        if self.window < 2:
            raise ConfigError("risk.var.window", f"must be >= 2, got {self.window}")
        if not (math.isfinite(self.interval_s) and self.interval_s > 0):
            raise ConfigError("risk.var.interval_s", f"must be > 0, got {self.interval_s!r}")
        if not 2 <= self.min_obs <= self.window:
            raise ConfigError(
                "risk.var.min_obs", f"must be in [2, window={self.window}], got {self.min_obs}"
            )


def tail_rank(n: int, confidence: float) -> int:
    """``k = ceil(n (1 - c))`` (at least 1): the historical VaR is the k-th largest loss."""
    return max(1, math.ceil(round(n * (1.0 - confidence), 9)))


def z_score(confidence: float) -> float:
    """The standard normal quantile at `confidence` (1.6449 at 95%, 2.3263 at 99%)."""
    return NormalDist().inv_cdf(confidence)


def historical_var(pnl: np.ndarray, confidence: float) -> float:
    """The k-th largest loss of the scenario P&Ls `pnl` (see `tail_rank`), floored at 0."""
    n = pnl.shape[0]
    if n == 0:
        return 0.0
    k = tail_rank(n, confidence)
    losses = np.negative(pnl)
    losses.partition(n - k)
    return max(0.0, float(losses[n - k]))


def parametric_var(exposure: np.ndarray, cov: np.ndarray, confidence: float) -> float:
    """``z_c sqrt(x' S x)`` for notionals `exposure` (x) and return covariance `cov` (S)."""
    variance = float(exposure @ cov @ exposure)
    return z_score(confidence) * math.sqrt(max(0.0, variance))


def covariance(returns: np.ndarray) -> np.ndarray:
    """Sample covariance (``ddof=1``) of the columns of `returns`, always ``n x n``."""
    return np.atleast_2d(np.cov(returns, rowvar=False, ddof=1))


def portfolio_var(
    returns: np.ndarray, exposure: np.ndarray, confidence: float, method: Method = "historical"
) -> float:
    """The VaR of notionals `exposure` over the scenarios `returns` (``T x n``)."""
    if method == "historical":
        return historical_var(returns @ exposure, confidence)
    return parametric_var(exposure, covariance(returns), confidence)


class VarModel:
    """Portfolio VaR over a `ReturnWindow`, cached for a fast per-order incremental check.

    The return matrix and its covariance are refreshed at most once per change of the window
    (once per market batch that closes an interval); the portfolio's scenario P&L once per
    change of exposure or prices. `incremental` is then O(T) (historical) or O(1)
    (parametric), with no allocation beyond one scratch vector.
    """

    def __init__(self, config: VarConfig) -> None:
        self.config = config
        self.window = ReturnWindow(config.window, round(config.interval_s * 1e9))
        self._z = z_score(config.confidence)
        self._qty = np.zeros(0)
        self._x_dirty = True
        self._win_version = -1
        self._prices_version = 0
        self._seen_prices = -1
        self._r = np.zeros((0, 0))  # Fortran order: a column is contiguous
        self._cov = np.zeros((0, 0))
        self._x = np.zeros(0)
        self._pnl = np.zeros(0)
        self._sx = np.zeros(0)
        self._xsx = 0.0
        self._scratch = np.zeros(0)
        self._var = 0.0
        self.refreshes = 0

    def value(self) -> float:
        """The portfolio's VaR now (configured method and confidence)."""
        self._refresh()
        return self._var

    @property
    def ready(self) -> bool:
        return self.window.count >= self.config.min_obs

    def set_quantity(self, col: int, quantity: float) -> None:
        """The signed quantity (position + open orders) held in column `col`."""
        if col >= self._qty.shape[0]:
            grown = np.zeros(max(col + 1, 2 * self._qty.shape[0]))
            grown[: self._qty.shape[0]] = self._qty
            self._qty = grown
        if self._qty[col] != quantity:
            self._qty[col] = quantity
            self._x_dirty = True

    def prices_changed(self) -> None:
        self._prices_version += 1

    def _refresh(self) -> None:
        win = self.window
        n = win.n
        if self._win_version != win.version or self._r.shape[1] != n:
            self._r = np.asfortranarray(win.returns())
            self._cov = covariance(self._r) if self._r.shape[0] > 1 else np.zeros((n, n))
            self._scratch = np.zeros(self._r.shape[0])
            self._win_version = win.version
            self._x_dirty = True
            self.refreshes += 1
        if self._x_dirty or self._seen_prices != self._prices_version:
            qty = np.zeros(n)
            m = min(n, self._qty.shape[0])
            qty[:m] = self._qty[:m]
            self._x = np.nan_to_num(qty * win.prices())
            self._pnl = self._r @ self._x
            self._sx = self._cov @ self._x
            self._xsx = float(self._x @ self._sx)
            if self.config.method == "historical":
                self._var = historical_var(self._pnl, self.config.confidence)
            else:
                self._var = self._z * math.sqrt(max(0.0, self._xsx))
            self._x_dirty = False
            self._seen_prices = self._prices_version

    def incremental(self, col: int, notional: float) -> tuple[float, float]:
        """VaR before and after adding `notional` (signed, quote units) in column `col`."""
        self._refresh()
        pre = self._var
        if self.config.method == "historical":
            post_pnl = self._scratch
            np.multiply(self._r[:, col], notional, out=post_pnl)
            post_pnl += self._pnl
            n = post_pnl.shape[0]
            if n == 0:
                return pre, 0.0
            k = tail_rank(n, self.config.confidence)
            np.negative(post_pnl, out=post_pnl)
            post_pnl.partition(n - k)
            return pre, max(0.0, float(post_pnl[n - k]))
        variance = (
            self._xsx
            + 2.0 * notional * float(self._sx[col])
            + notional * notional * float(self._cov[col, col])
        )
        return pre, self._z * math.sqrt(max(0.0, variance))

    def report(self) -> dict[str, float]:
        """The portfolio's VaR by both methods at 95% and 99% (for stats and dashboards)."""
        self._refresh()
        out: dict[str, float] = {}
        for c in (0.95, 0.99):
            pct = round(c * 100)
            out[f"historical_{pct}"] = historical_var(self._pnl, c)
            out[f"parametric_{pct}"] = z_score(c) * math.sqrt(max(0.0, self._xsx))
        return out
