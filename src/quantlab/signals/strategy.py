"""The strategy API: a strategy turns feature batches into `Signal`s.

A strategy is any object with a ``strategy_id`` and an ``on_features(frame, ctx)`` method that
returns a list of signals. It receives a whole feature batch (many symbols, time-sorted) and
should work on it with Polars expressions, keeping whatever it must carry between batches.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import msgspec
import polars as pl

from quantlab.core.clock import Clock
from quantlab.core.messages import Signal


class StrategyContext(msgspec.Struct, frozen=True, kw_only=True):
    """What a strategy may read besides its batch: the clock, and the feature store's latest
    vector of any symbol (``ctx.features.get("ETH/BTC")``)."""

    clock: Clock
    assumed_spread_bps: float = 0.0
    features: Any = None  # a `quantlab.features.FeatureStore`


@runtime_checkable
class Strategy(Protocol):
    strategy_id: str

    def on_features(self, features: pl.DataFrame, ctx: StrategyContext) -> list[Signal]: ...
