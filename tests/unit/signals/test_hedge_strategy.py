"""The Hedge ensemble strategy: learns which expert to trust, never from the future, persists."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import polars as pl

from quantlab.config import load_settings
from quantlab.core.clock import SimulatedClock
from quantlab.engine import Node
from quantlab.signals.hedge_strategy import HedgeStrategy
from quantlab.signals.strategy import StrategyContext

CTX = StrategyContext(clock=SimulatedClock(0), assumed_spread_bps=5.0)


def bars(n: int, seed: int = 1) -> pl.DataFrame:
    """Features where `ema_trend` always points the way the price then goes, and the other
    experts point the other way."""
    rng = np.random.default_rng(seed)
    moves = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    price = 100 * np.cumprod(1 + 0.001 * moves)
    # advice at bar t is the sign of the move from t to t+1 (known to nobody at t but the
    # "oracle" expert); horizon 1 makes that the scored outcome
    nxt = np.r_[moves[1:], 1.0]
    return pl.DataFrame(
        {
            "symbol": ["X"] * n,
            "timestamp": pl.Series(np.arange(n, dtype=np.int64) * 60_000_000_000).cast(
                pl.Datetime("ns", "UTC")
            ),
            "price": price,
            "n": np.arange(1, n + 1),
            "ema_12": price + nxt,  # ema_trend: sign(ema_12 - ema_26) = the next move
            "ema_26": price,
            "macd_hist": -nxt,  # macd_cross: always wrong
            "rsi_14": np.where(nxt > 0, 80.0, 20.0),  # rsi_reversion: always wrong
        }
    )


def test_learns_to_trust_the_expert_that_is_right() -> None:
    strat = HedgeStrategy(horizon=1, eta=0.5, warm_up=1)
    frame = bars(2_000)
    for chunk in frame.iter_slices(50):
        strat.on_features(chunk, CTX)
    w = strat.weights
    assert w["ema_trend"] > 0.99
    assert strat.resolved == 1_999  # every bar but the last has its outcome
    assert strat.hedge.rounds == 40


def test_nothing_is_learnt_before_the_outcome_exists() -> None:
    strat = HedgeStrategy(horizon=5, eta=0.5, warm_up=1)
    frame = bars(20)
    strat.on_features(frame.slice(0, 5), CTX)  # bars 1..5: no outcome 5 bars later yet
    strat.learn()
    assert strat.hedge.rounds == 0
    assert len(set(strat.weights.values())) == 1  # still uniform
    strat.on_features(frame.slice(5, 1), CTX)  # bar 6 resolves bar 1 only
    assert strat.resolved == 0  # learning waits until the decisions are out ...
    strat.learn()
    assert strat.resolved == 1
    assert strat.hedge.rounds == 1


def test_signals_carry_strength_confidence_and_weights() -> None:
    strat = HedgeStrategy(horizon=1, eta=0.5, warm_up=1, min_strength=0.1)
    signals = [s for c in bars(300).iter_slices(30) for s in strat.on_features(c, CTX)]
    assert signals
    for s in signals:
        assert 0.1 <= s.strength <= 1.0
        assert 0.0 <= s.confidence <= 1.0
        assert set(s.metadata) == {"w_macd_cross", "w_rsi_reversion", "w_ema_trend"}
    sides = [s.side for s in signals]
    assert all(a != b for a, b in itertools.pairwise(sides))  # only on a flip


def test_weights_survive_a_restart_through_the_engine(tmp_path: Path) -> None:
    state = tmp_path / "hedge.json"
    settings = load_settings(
        strategy={"name": "hedge", "id": "hedge", "state_file": str(state), "horizon": 6},
        patterns={"store_every": 3},
        data={"symbols": ["ETH/BTC", "LTC/BTC"], "end": "2018-01-16"},
    )
    first = Node(settings, run_dir=tmp_path / "a")
    result = first.run()
    assert result.summary.signals > 0
    assert result.summary.fills > 0
    assert state.exists()
    learnt = first.strategy.weights  # type: ignore[union-attr]
    second = Node(settings, run_dir=tmp_path / "b")
    assert second.strategy.weights == learnt  # type: ignore[union-attr]
    assert len(set(learnt.values())) > 1  # it did learn something
