"""The Hedge ensemble: multiplicative weights over experts (Freund and Schapire).

Each round every expert has a loss in [0, 1]; expert i's weight is multiplied by
exp(-eta · loss_i). With eta = sqrt(8 ln N / T) over a horizon of T rounds, the ensemble's
expected cumulative loss exceeds the best expert's by at most sqrt(T/2 · ln N).

Losses only exist once outcomes are known: `Outcomes` holds each round's predictions until
their outcome time has passed, so no weight ever moves on information from the future.
Weights are kept as log-weights (no underflow over long streams) and persist as JSON.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import msgspec

from quantlab.core.errors import DataError


def theoretical_eta(n_experts: int, horizon: int) -> float:
    """sqrt(8 ln N / T): the learning rate of Hedge's regret bound."""
    if n_experts < 1 or horizon < 1:
        raise DataError(f"need >= 1 expert and horizon, got N={n_experts}, T={horizon}")
    return math.sqrt(8.0 * math.log(max(n_experts, 2)) / horizon)


def regret_bound(n_experts: int, horizon: int) -> float:
    """sqrt(T/2 · ln N)."""
    return math.sqrt(horizon / 2.0 * math.log(max(n_experts, 2)))


class HedgeState(msgspec.Struct, frozen=True):
    experts: list[str]
    log_weights: list[float]
    eta: float
    rounds: int
    cumulative_loss: float
    expert_losses: list[float]


class Hedge:
    """Multiplicative weights over named experts.

    Parameters
    ----------
    experts
        Expert names (unique).
    eta
        Learning rate; default the theoretical one for `horizon` rounds.
    horizon
        Rounds the default learning rate is tuned for (default 10,000).
    """

    def __init__(
        self, experts: list[str], *, eta: float | None = None, horizon: int = 10_000
    ) -> None:
        if not experts or len(set(experts)) != len(experts):
            raise DataError(f"Hedge needs distinct expert names, got {experts}")
        self.experts = list(experts)
        self.eta = theoretical_eta(len(experts), horizon) if eta is None else float(eta)
        if not self.eta > 0:
            raise DataError(f"Hedge learning rate must be > 0, got {self.eta}")
        self._log_w = [0.0] * len(experts)
        self.rounds = 0
        self.cumulative_loss = 0.0
        self.expert_losses = [0.0] * len(experts)

    @property
    def weights(self) -> dict[str, float]:
        top = max(self._log_w)
        raw = [math.exp(w - top) for w in self._log_w]
        total = sum(raw)
        return {e: r / total for e, r in zip(self.experts, raw, strict=True)}

    def combine(self, advice: Mapping[str, float]) -> float:
        """The weighted average of the experts' advice (all experts must advise)."""
        missing = set(self.experts) - set(advice)
        if missing:
            raise DataError(f"Hedge.combine lacks advice from {sorted(missing)}")
        w = self.weights
        return sum(w[e] * float(advice[e]) for e in self.experts)

    def update(self, losses: Mapping[str, float]) -> float:
        """Apply one round of losses in [0, 1]; returns the ensemble's expected loss."""
        values = []
        for e in self.experts:
            if e not in losses:
                raise DataError(f"Hedge.update lacks a loss for expert {e!r}")
            loss = float(losses[e])
            if not 0.0 <= loss <= 1.0:
                raise DataError(f"loss of expert {e!r} must be in [0, 1], got {loss}")
            values.append(loss)
        w = self.weights
        expected = sum(w[e] * v for e, v in zip(self.experts, values, strict=True))
        self._log_w = [lw - self.eta * v for lw, v in zip(self._log_w, values, strict=True)]
        top = max(self._log_w)
        self._log_w = [lw - top for lw in self._log_w]  # keep the numbers small
        self.expert_losses = [a + v for a, v in zip(self.expert_losses, values, strict=True)]
        self.cumulative_loss += expected
        self.rounds += 1
        return expected

    def regret(self) -> float:
        """Cumulative expected loss minus the best expert's cumulative loss."""
        return self.cumulative_loss - min(self.expert_losses)

    def state(self) -> HedgeState:
        return HedgeState(
            experts=self.experts,
            log_weights=list(self._log_w),
            eta=self.eta,
            rounds=self.rounds,
            cumulative_loss=self.cumulative_loss,
            expert_losses=list(self.expert_losses),
        )

    def to_json(self) -> bytes:
        return msgspec.json.encode(self.state())

    @classmethod
    def from_json(cls, data: bytes) -> Hedge:
        """The Hedge `to_json` saved; `DataError` naming what is wrong with anything else."""
        try:
            st = msgspec.json.decode(data, type=HedgeState)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            # msgspec raises the last two for bad UTF-8 and a nesting deeper than its limit.
            raise DataError(f"not a Hedge state: {exc}") from None
        n = len(st.experts)
        for name in ("log_weights", "expert_losses"):
            values = getattr(st, name)
            if len(values) != n:
                raise DataError(
                    f"Hedge state: {name} has {len(values)} values for {n} experts {st.experts}"
                )
            if not all(math.isfinite(v) for v in values):
                raise DataError(f"Hedge state: {name} must be finite numbers, got {values}")
        if not (math.isfinite(st.cumulative_loss) and st.rounds >= 0):
            raise DataError(
                f"Hedge state: cumulative_loss {st.cumulative_loss!r} and rounds {st.rounds!r} "
                "must be finite and >= 0"
            )
        hedge = cls(st.experts, eta=st.eta)
        hedge._log_w = list(st.log_weights)
        hedge.rounds, hedge.cumulative_loss = st.rounds, st.cumulative_loss
        hedge.expert_losses = list(st.expert_losses)
        return hedge


@dataclass
class _Pending:
    due_ns: int
    key: str
    advice: dict[str, float]


@dataclass
class Outcomes:
    """Predictions waiting for their outcome; losses are computed only once it is known.

    `record(now, key, advice, horizon)` files each expert's advice for `key` (a symbol);
    `settle(now, outcome_of, loss)` applies the losses of every prediction whose outcome time
    has passed, in time order, and never touches one that is still in the future.
    """

    hedge: Hedge
    pending: deque[_Pending] = field(default_factory=deque)

    def record(self, now_ns: int, key: str, advice: Mapping[str, float], horizon_ns: int) -> None:
        self.pending.append(_Pending(now_ns + horizon_ns, key, dict(advice)))

    def settle(
        self,
        now_ns: int,
        outcome_of: Callable[[str, int], float | None],
        loss: Callable[[float, float], float],
    ) -> int:
        done = 0
        while self.pending and self.pending[0].due_ns <= now_ns:
            item = self.pending[0]
            outcome = outcome_of(item.key, item.due_ns)
            if outcome is None:
                break  # the outcome is not observable yet: wait
            self.pending.popleft()
            self.hedge.update({e: loss(a, outcome) for e, a in item.advice.items()})
            done += 1
        return done
