"""The EMA crossover strategy: long when the fast EMA crosses above the slow one, short below."""

from __future__ import annotations

import polars as pl

from quantlab.core import ids
from quantlab.core.clock import ns_to_datetime
from quantlab.core.enums import Side
from quantlab.core.errors import DataError
from quantlab.core.messages import Signal
from quantlab.signals.strategy import StrategyContext

_FULL_STRENGTH_GAP = 0.002  # a 0.2 % gap between the EMAs is a full-strength signal


class EmaCross:
    """Emits a signal at every crossing of ``ema_<fast>`` and ``ema_<slow>`` after warm-up.

    Strength grows with the relative gap between the averages (capped at 1). The rule has no
    calibrated probability, so its confidence is 0.5 (no evidence either way) until an ensemble
    learns better. The last side per symbol is carried across batches, so a crossing that falls
    on a batch boundary is seen exactly once.
    """

    def __init__(self, fast: int, slow: int, strategy_id: str = "ema_cross") -> None:
        if not 1 < fast < slow:
            raise DataError(f"need 1 < fast < slow, got fast={fast}, slow={slow}")
        self.fast, self.slow, self.strategy_id = fast, slow, strategy_id
        self._fast, self._slow = f"ema_{fast}", f"ema_{slow}"
        self._last = pl.DataFrame(schema={"symbol": pl.String, "__carried": pl.Int8})

    def on_features(self, features: pl.DataFrame, ctx: StrategyContext) -> list[Signal]:
        missing = {self._fast, self._slow, "n", "price"} - set(features.columns)
        if missing:
            raise DataError(f"{self.strategy_id} needs feature columns {sorted(missing)}")
        diff = pl.col(self._fast) - pl.col(self._slow)
        marked = (
            features.with_row_index("__row")
            .with_columns(__ts=pl.col("timestamp").cast(pl.Datetime("ns", "UTC")).cast(pl.Int64))
            .join(self._last, on="symbol", how="left")
            .with_columns(
                __side=pl.when((pl.col("n") >= self.slow) & (diff != 0))
                .then(diff.sign().cast(pl.Int8))
                .otherwise(None)
            )
            .with_columns(
                __side=pl.col("__side").forward_fill().over("symbol", order_by="__row"),
            )
            .with_columns(
                __prev=pl.col("__side")
                .shift(1)
                .over("symbol", order_by="__row")
                .fill_null(pl.col("__carried"))
            )
            .sort("__row")
        )
        crossings = marked.filter(
            pl.col("__prev").is_not_null()
            & pl.col("__side").is_not_null()
            & (pl.col("__side") != pl.col("__prev"))
        )
        latest = (
            marked.filter(pl.col("__side").is_not_null())
            .group_by("symbol")
            .agg(pl.col("__side").last().alias("__carried"))
        )
        self._last = (
            pl.concat([self._last.join(latest, on="symbol", how="anti"), latest])
            if latest.height
            else self._last
        )
        return [self._signal(row, ctx) for row in crossings.iter_rows(named=True)]

    def _signal(self, row: dict[str, object], ctx: StrategyContext) -> Signal:
        price = float(row["price"])  # type: ignore[arg-type]
        fast, slow = float(row[self._fast]), float(row[self._slow])  # type: ignore[arg-type]
        ts_ns = int(row["__ts"])  # type: ignore[call-overload]
        side = Side.BUY if int(row["__side"]) > 0 else Side.SELL  # type: ignore[call-overload]
        gap = abs(fast - slow) / price
        return Signal(
            signal_id=ids.signal_id(self.strategy_id, str(row["symbol"]), ts_ns),
            strategy_id=self.strategy_id,
            symbol=str(row["symbol"]),
            side=side,
            strength=min(1.0, gap / _FULL_STRENGTH_GAP),
            confidence=0.5,
            timestamp=ns_to_datetime(ts_ns),
            features=[fast, slow],
            metadata={"rule": "ema_cross", "fast": str(self.fast), "slow": str(self.slow)},
            mid=price,
            spread=price * ctx.assumed_spread_bps / 1e4,
        )
