"""Hedge: the regret bound on adversarial losses, persistence, and no look-ahead."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlab.core.errors import DataError
from quantlab.signals.ensemble import Hedge, Outcomes, regret_bound, theoretical_eta

T = 2_000


def run(losses: np.ndarray) -> Hedge:
    n = losses.shape[1]
    hedge = Hedge([f"e{i}" for i in range(n)], horizon=len(losses))
    for row in losses:
        hedge.update({f"e{i}": float(v) for i, v in enumerate(row)})
    return hedge


def adversarial(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if name == "random":
        return rng.random((T, n))
    if name == "one_good":  # one expert slightly better, all noisy
        out = rng.random((T, n))
        out[:, 0] *= 0.9
        return out
    if name == "switching":  # the best expert changes every 100 rounds
        out = np.ones((T, n))
        for t in range(T):
            out[t, (t // 100) % n] = 0.0
        return out
    if name == "follow_the_leader_killer":  # punishes whoever led so far
        out = np.zeros((T, n))
        totals = np.zeros(n)
        for t in range(T):
            leader = int(np.argmin(totals + rng.random(n) * 1e-9))
            out[t, leader] = 1.0
            totals += out[t]
        return out
    if name == "binary_bits":
        return (rng.random((T, n)) < 0.5).astype(float)
    raise AssertionError(name)


@pytest.mark.parametrize(
    "name", ["random", "one_good", "switching", "follow_the_leader_killer", "binary_bits"]
)
@pytest.mark.parametrize("n", [2, 5, 20])
def test_regret_within_the_bound(name: str, n: int) -> None:
    hedge = run(adversarial(name, n, np.random.default_rng(n)))
    assert hedge.rounds == T
    assert hedge.regret() <= regret_bound(n, T) + 1e-9


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(st.integers(2, 8), st.integers(50, 400), st.integers(0, 2**31))
def test_regret_bound_on_random_sequences(n: int, t: int, seed: int) -> None:
    losses = np.random.default_rng(seed).random((t, n))
    assert run(losses).regret() <= regret_bound(n, t) + 1e-9


def test_theoretical_learning_rate_and_weights() -> None:
    assert theoretical_eta(4, 100) == pytest.approx(math.sqrt(8 * math.log(4) / 100))
    hedge = Hedge(["a", "b"], eta=1.0)
    hedge.update({"a": 0.0, "b": 1.0})
    w = hedge.weights
    assert w["a"] / w["b"] == pytest.approx(math.e)
    assert sum(w.values()) == pytest.approx(1.0)
    assert hedge.combine({"a": 1.0, "b": -1.0}) == pytest.approx(w["a"] - w["b"])


def test_state_survives_a_restart() -> None:
    hedge = run(np.random.default_rng(3).random((100, 3)))
    restored = Hedge.from_json(hedge.to_json())
    assert restored.weights == hedge.weights
    assert restored.regret() == hedge.regret()
    restored.update({"e0": 0.1, "e1": 0.2, "e2": 0.3})
    hedge.update({"e0": 0.1, "e1": 0.2, "e2": 0.3})
    assert restored.weights == hedge.weights


def test_losses_only_once_outcomes_are_known() -> None:
    hedge = Hedge(["up", "down"], eta=0.5)
    outcomes = Outcomes(hedge)
    prices = {0: 100.0, 60: 101.0}  # the price at each time (seconds)
    outcomes.record(0, "X", {"up": 1.0, "down": -1.0}, horizon_ns=60)

    def outcome_of(_key: str, due: int) -> float | None:
        return prices.get(due)

    def loss(advice: float, outcome: float) -> float:
        return 0.0 if (advice > 0) == (outcome > 100.0) else 1.0

    assert outcomes.settle(59, outcome_of, loss) == 0  # not due: nothing moves
    assert hedge.weights == {"up": 0.5, "down": 0.5}
    assert outcomes.settle(60, outcome_of, loss) == 1
    assert hedge.weights["up"] > hedge.weights["down"]


def test_bad_input() -> None:
    with pytest.raises(DataError, match="distinct"):
        Hedge(["a", "a"])
    hedge = Hedge(["a", "b"])
    with pytest.raises(DataError, match=r"in \[0, 1\]"):
        hedge.update({"a": 2.0, "b": 0.0})
    with pytest.raises(DataError, match="lacks a loss"):
        hedge.update({"a": 0.0})
    with pytest.raises(DataError, match="not a Hedge state"):
        Hedge.from_json(b"{")
