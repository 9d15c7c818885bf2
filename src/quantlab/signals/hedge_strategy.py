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

from collections.abc import Callable
from pathlib import Path

import polars as pl

from quantlab.core import ids
from quantlab.core.clock import ns_to_datetime
from quantlab.core.enums import Side
from quantlab.core.errors import DataError
from quantlab.core.messages import Signal
from quantlab.signals.ensemble import Hedge
from quantlab.signals.strategy import StrategyContext

Expert = Callable[[pl.DataFrame], pl.Series]


def macd_cross(f: pl.DataFrame) -> pl.Series:
    """Long when the MACD histogram is positive, short when negative."""
    return f.select(pl.col("macd_hist").sign().fill_null(0.0))["macd_hist"]


def rsi_reversion(f: pl.DataFrame) -> pl.Series:
    """Long when RSI(14) < 30 (oversold), short when > 70 (overbought)."""
    rsi = pl.col("rsi_14")
    return f.select(
        pl.when(rsi < 30).then(1.0).when(rsi > 70).then(-1.0).otherwise(0.0).alias("a")
    )["a"]


def ema_trend(f: pl.DataFrame) -> pl.Series:
    """Long when EMA(12) is above EMA(26), short below."""
    return f.select((pl.col("ema_12") - pl.col("ema_26")).sign().fill_null(0.0).alias("a"))["a"]


DEFAULT_EXPERTS: dict[str, Expert] = {
    "macd_cross": macd_cross,
    "rsi_reversion": rsi_reversion,
    "ema_trend": ema_trend,
}


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
        self.experts = dict(experts or DEFAULT_EXPERTS)
        if horizon < 1:
            raise DataError(f"horizon must be >= 1 bar, got {horizon}")
        if not 0 <= min_strength <= 1:
            raise DataError(f"min_strength must be in [0, 1], got {min_strength}")
        self.strategy_id, self.horizon = strategy_id, horizon
        self.min_strength, self.warm_up = min_strength, warm_up
        self.hedge = Hedge(list(self.experts), eta=eta)
        names = list(self.experts)
        self._pending = pl.DataFrame(
            schema={"symbol": pl.String, "n": pl.Int64, "price": pl.Float64}
            | {f"adv_{e}": pl.Float64 for e in names}
        )
        self._side = pl.DataFrame(schema={"symbol": pl.String, "__carried": pl.Int8})
        self.resolved = 0

    @property
    def weights(self) -> dict[str, float]:
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
        # Decide with the weights as of the batch's start ...
        advice = {e: fn(features).cast(pl.Float64) for e, fn in self.experts.items()}
        w = self.hedge.weights
        score = pl.Series("__score", [0.0] * features.height, dtype=pl.Float64)
        for e, a in advice.items():
            score = score + w[e] * a
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
            self._side = pl.concat([self._side.join(latest, on="symbol", how="anti"), latest])
        flips = marked.filter(
            pl.col("__side").is_not_null()
            & ((pl.col("__prev").is_null()) | (pl.col("__side") != pl.col("__prev")))
        )
        confidence = max(w.values())
        signals = [self._signal(row, ctx, confidence, w) for row in flips.iter_rows(named=True)]
        # ... then file this batch's advice and learn from every outcome the batch reveals
        # (advice from earlier batches or from earlier rows of this one). This batch's
        # decisions were already made, so nothing is learnt from the future.
        filed = features.select("symbol", pl.col("n").cast(pl.Int64), "price").with_columns(
            [a.alias(f"adv_{e}") for e, a in advice.items()]
        )
        self._pending = pl.concat([self._pending, filed], how="vertical_relaxed")
        self._learn(features)
        return signals

    def _signal(
        self, row: dict[str, object], ctx: StrategyContext, confidence: float, w: dict[str, float]
    ) -> Signal:
        price = float(row["price"])  # type: ignore[arg-type]
        ts_ns = int(row["__ts"])  # type: ignore[call-overload]
        score = float(row["__score"])  # type: ignore[arg-type]
        return Signal(
            signal_id=ids.signal_id(self.strategy_id, str(row["symbol"]), ts_ns),
            strategy_id=self.strategy_id,
            symbol=str(row["symbol"]),
            side=Side.BUY if score > 0 else Side.SELL,
            strength=min(1.0, abs(score)),
            confidence=confidence,
            timestamp=ns_to_datetime(ts_ns),
            features=[score],
            metadata={f"w_{e}": f"{v:.4f}" for e, v in w.items()},
            mid=price,
            spread=price * ctx.assumed_spread_bps / 1e4,
        )

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
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
