"""`HedgeStrategy`: a Hedge ensemble of experts, learning online which to trust.

Each expert maps a feature batch to advice in [-1, 1] per row (long, flat, short). The
ensemble's score is the weight-averaged advice; a signal is emitted when a symbol's score
changes side and is at least `min_strength` strong. Each row's advice is filed with its price;
`horizon` bars later (per symbol) the forward return is known and each expert's loss is
(1 - advice · sign(return)) / 2, averaged over the batch's resolved rows: one Hedge round per
batch. Nothing is learnt before its outcome exists (no look-ahead). The weights persist as JSON
(`save` / `load`) and are exposed for dashboards (`weights`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quantlab.core import ids
from quantlab.core.clock import ns_to_datetime
from quantlab.core.enums import Side
from quantlab.core.errors import DataError
from quantlab.core.messages import ExpertWeights, Signal
from quantlab.signals.ensemble import Hedge
from quantlab.signals.experts import (
    RULE_EXPERTS,
    BatchExpert,
    ExpertBatch,
    PatternExpert,
    RuleExpert,
    replace_by_symbol,
)
from quantlab.signals.strategy import StrategyContext
from quantlab.signals.windows import WindowBuffer

Expert = RuleExpert | BatchExpert
DEFAULT_EXPERTS: dict[str, Expert] = dict(RULE_EXPERTS)


class HedgeStrategy:
    def __init__(
        self,
        experts: dict[str, Expert] | None = None,
        *,
        strategy_id: str = "hedge",
        horizon: int = 12,
        min_strength: float = 0.2,
        eta: float | None = None,
        warm_up: int = 35,
    ) -> None:
        self.experts: dict[str, Expert] = dict(experts or DEFAULT_EXPERTS)
        if horizon < 1:
            raise DataError(f"horizon must be >= 1 bar, got {horizon}")
        if not 0 <= min_strength <= 1:
            raise DataError(f"min_strength must be in [0, 1], got {min_strength}")
        self.strategy_id, self.horizon = strategy_id, horizon
        self.min_strength, self.warm_up = min_strength, warm_up
        self.hedge = Hedge(list(self.experts), eta=eta)
        # One window buffer per window length the batch experts read, fed once per batch.
        self._batch_experts = {e: x for e, x in self.experts.items() if isinstance(x, BatchExpert)}
        self._pattern_experts = [
            x for x in self._batch_experts.values() if isinstance(x, PatternExpert)
        ]
        self._buffers = {x.window: WindowBuffer(x.window) for x in self._batch_experts.values()}
        self.last_advice: dict[str, float] = {}
        self._published_rounds = 0
        self._unlearnt: ExpertBatch | None = None
        names = list(self.experts)
        self._pending = pl.DataFrame(
            schema={"symbol": pl.String, "n": pl.Int64, "price": pl.Float64}
            | {f"adv_{e}": pl.Float64 for e in names}
        )
        self._side = pl.DataFrame(schema={"symbol": pl.String, "__carried": pl.Int8})
        self.resolved = 0

    @property
    def weights(self) -> dict[str, float]:
        """The weights after learning from everything seen so far."""
        self.learn()
        return self.hedge.weights

    # -- learning ------------------------------------------------------------------------
    def _learn(self, rows: pl.DataFrame) -> None:
        """Resolve filed advice whose outcome bar (n + horizon) is in `rows`."""
        if self._pending.is_empty():
            return
        later = rows.select("symbol", (pl.col("n") - self.horizon).alias("n"), "price")
        done = self._pending.join(later, on=["symbol", "n"], how="inner", suffix="_later")
        if done.is_empty():
            return
        direction = (pl.col("price_later") / pl.col("price") - 1).sign()
        losses = done.select(
            [((1 - pl.col(f"adv_{e}") * direction) / 2).mean().alias(e) for e in self.experts]
        ).row(0, named=True)
        self.hedge.update({e: min(1.0, max(0.0, float(v))) for e, v in losses.items()})
        self.resolved += done.height
        self._pending = self._pending.join(
            done.select("symbol", "n"), on=["symbol", "n"], how="anti"
        )

    # -- the strategy API ----------------------------------------------------------------
    def on_features(self, features: pl.DataFrame, ctx: StrategyContext) -> list[Signal]:
        needed = {"symbol", "timestamp", "price", "n"}
        missing = needed - set(features.columns)
        if missing:
            raise DataError(f"{self.strategy_id} needs feature columns {sorted(missing)}")
        self.learn()  # the previous batch's lessons, if the caller did not ask for them yet
        # Decide with the weights as of the batch's start ...
        batch = ExpertBatch(features, self._buffers)
        batch.advance()
        advice: dict[str, np.ndarray] = {}
        for e, expert in self.experts.items():
            if isinstance(expert, BatchExpert):
                advice[e] = np.asarray(expert.advise(batch), dtype=np.float64)
            else:
                advice[e] = expert(features).cast(pl.Float64).fill_null(0.0).to_numpy()
            if advice[e].shape != (features.height,):
                raise DataError(
                    f"expert {e!r} gave {advice[e].shape} advice for {features.height} rows"
                )
        w = self.hedge.weights
        score_values = np.zeros(features.height, dtype=np.float64)
        for e, a in advice.items():
            score_values += w[e] * a
        score = pl.Series("__score", score_values)
        marked = (
            features.with_row_index("__row")
            .with_columns(
                pl.Series("__score", score),
                __ts=pl.col("timestamp").cast(pl.Datetime("ns", "UTC")).cast(pl.Int64),
            )
            .with_columns(
                __side=pl.when(
                    (pl.col("n") >= self.warm_up) & (pl.col("__score").abs() >= self.min_strength)
                )
                .then(pl.col("__score").sign().cast(pl.Int8))
                .otherwise(None)
            )
            .join(self._side, on="symbol", how="left")
            .with_columns(__side=pl.col("__side").forward_fill().over("symbol", order_by="__row"))
            .with_columns(
                __prev=pl.col("__side")
                .shift(1)
                .over("symbol", order_by="__row")
                .fill_null(pl.col("__carried"))
            )
            .sort("__row")
        )
        latest = (
            marked.filter(pl.col("__side").is_not_null())
            .group_by("symbol")
            .agg(pl.col("__side").last().alias("__carried"))
        )
        if latest.height:
            self._side = replace_by_symbol(self._side, latest)
        flips = marked.filter(
            pl.col("__side").is_not_null()
            & ((pl.col("__prev").is_null()) | (pl.col("__side") != pl.col("__prev")))
        )
        confidence = max(w.values())
        signals = [
            self._signal(row, ctx, confidence, w, advice) for row in flips.iter_rows(named=True)
        ]
        if features.height:
            self.last_advice = {e: float(a[-1]) for e, a in advice.items()}
        # ... then file this batch's advice; `learn` takes in what the batch reveals.
        filed = features.select("symbol", pl.col("n").cast(pl.Int64), "price").with_columns(
            [pl.Series(f"adv_{e}", a) for e, a in advice.items()]
        )
        self._pending = pl.concat([self._pending, filed], how="vertical_relaxed")
        self._unlearnt = batch
        return signals

    def learn(self) -> None:
        """Learn from every outcome the last batch revealed (advice from earlier batches or
        from earlier rows of that batch) and let the batch experts take it in (the pattern
        memory stores what resolved). The batch's decisions were already made, so nothing is
        learnt from the future. The strategy engine calls this after publishing the batch's
        signals, keeping it off the decision path; `on_features` calls it first otherwise."""
        batch, self._unlearnt = self._unlearnt, None
        if batch is None:
            return
        self._learn(batch.features)
        for expert in self._batch_experts.values():
            expert.learn(batch)

    def _signal(
        self,
        row: dict[str, Any],
        ctx: StrategyContext,
        confidence: float,
        w: dict[str, float],
        advice: dict[str, np.ndarray],
    ) -> Signal:
        price = float(row["price"])
        ts_ns = int(row["__ts"])
        score = float(row["__score"])
        i = int(row["__row"])
        metadata = {f"w_{e}": f"{v:.4f}" for e, v in w.items()}
        for expert in self._pattern_experts:
            if expert.neighbours(i):
                near = expert.neighbours(i)[:3]
                metadata["pattern_neighbours"] = ",".join(nb.id for nb in near)
                metadata["pattern_similarity"] = f"{near[0].similarity:.4f}"
                metadata["pattern_similarities"] = ",".join(f"{nb.similarity:.4f}" for nb in near)
                metadata["pattern_outcomes"] = ",".join(f"{nb.outcome:.6g}" for nb in near)
        return Signal(
            signal_id=ids.signal_id(self.strategy_id, str(row["symbol"]), ts_ns),
            strategy_id=self.strategy_id,
            symbol=str(row["symbol"]),
            side=Side.BUY if score > 0 else Side.SELL,
            strength=min(1.0, abs(score)),
            confidence=confidence,
            timestamp=ns_to_datetime(ts_ns),
            features=[score, *(float(advice[e][i]) for e in self.experts)],
            metadata=metadata,
            mid=price,
            spread=price * ctx.assumed_spread_bps / 1e4,
        )

    def weights_message(self, now: dt.datetime) -> ExpertWeights | None:
        """The weights if a learning round happened since the last call, else None."""
        self.learn()
        if self.hedge.rounds == self._published_rounds:
            return None
        self._published_rounds = self.hedge.rounds
        return ExpertWeights(
            strategy_id=self.strategy_id,
            timestamp=now,
            rounds=self.hedge.rounds,
            weights=self.weights,
            advice=dict(self.last_advice),
        )

    def metrics(self) -> dict[str, Any]:
        """Weights, rounds, resolved outcomes and each batch expert's own figures."""
        return {
            "weights": self.weights,
            "rounds": self.hedge.rounds,
            "resolved": self.resolved,
            "experts": {e: x.metrics() for e, x in self._batch_experts.items()},
        }

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        self.learn()
        Path(path).write_bytes(self.hedge.to_json())

    def load(self, path: str | Path) -> bool:
        """Restore the weights if `path` exists; True if it did."""
        p = Path(path)
        if not p.exists():
            return False
        restored = Hedge.from_json(p.read_bytes())
        if restored.experts != list(self.experts):
            raise DataError(
                f"saved Hedge state has experts {restored.experts}, this strategy has "
                f"{list(self.experts)}"
            )
        self.hedge = restored
        return True
