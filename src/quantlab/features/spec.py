"""Feature specs: a named, versioned list of indicators that research and production share.

A spec's version is recorded with every run and model that used it, so a number can always be
traced to the definition that produced it. Specs are immutable; a changed definition is a new
version.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import polars as pl

from quantlab.core.errors import DataError
from quantlab.features.library import (
    Atr,
    Bollinger,
    Count,
    Ema,
    Indicator,
    IndicatorSet,
    Macd,
    Rsi,
    Sma,
)


@dataclass(frozen=True)
class FeatureSpec:
    """`indicators` holds (class, keyword arguments) pairs: fresh state for every use."""

    name: str
    version: str
    indicators: tuple[tuple[type[Indicator], dict[str, Any]], ...]
    price: str = "close"
    description: str = ""

    def build(self) -> IndicatorSet:
        """A fresh streaming `IndicatorSet` for this spec."""
        return IndicatorSet([cls(**kwargs) for cls, kwargs in self.indicators], price=self.price)

    @property
    def columns(self) -> list[str]:
        return ["symbol", "timestamp", "price", *self.build().outputs]

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    def with_indicators(
        self, extra: tuple[tuple[type[Indicator], dict[str, Any]], ...]
    ) -> FeatureSpec:
        """This spec plus the indicators in `extra` whose outputs it lacks (for a strategy
        that needs other windows); the name records what was added."""
        have = set(self.build().outputs)
        added = tuple((cls, kw) for cls, kw in extra if not set(cls(**kw).outputs) <= have)
        if not added:
            return self
        tag = "+".join(o for cls, kw in added for o in cls(**kw).outputs)
        return FeatureSpec(
            f"{self.name}+{tag}", self.version, self.indicators + added, self.price,
            self.description,
        )  # fmt: skip


DEFAULT = FeatureSpec(
    name="default",
    version="1",
    indicators=(
        (Sma, {"n": 20}),
        (Ema, {"n": 12}),
        (Ema, {"n": 26}),
        (Rsi, {"n": 14}),
        (Macd, {"fast": 12, "slow": 26, "signal": 9}),
        (Bollinger, {"n": 20, "k_std": 2.0}),
        (Atr, {"n": 14}),
        (Count, {"name": "n"}),
    ),
    description="trend, momentum and volatility of bars (TA-Lib conventions)",
)

_SPECS: dict[str, FeatureSpec] = {DEFAULT.name: DEFAULT}


def register_spec(spec: FeatureSpec) -> FeatureSpec:
    """Make `spec` available by name; a different definition under a taken name@version fails."""
    known = _SPECS.get(spec.name)
    if known is not None and known.version == spec.version and known != spec:
        raise DataError(
            f"feature spec {spec.id} is already registered with a different definition; "
            "give the changed definition a new version"
        )
    _SPECS[spec.name] = spec
    return spec


def get_spec(spec: str | FeatureSpec) -> FeatureSpec:
    if isinstance(spec, FeatureSpec):
        return spec
    found = _SPECS.get(spec)
    if found is None:
        raise DataError(f"unknown feature spec {spec!r}; known: {sorted(_SPECS)}")
    return found


def compute(df: pl.DataFrame, spec: str | FeatureSpec = "default") -> pl.DataFrame:
    """The spec's features for every row of `df` (``symbol, timestamp`` and the spec's inputs).

    Rows are taken in time order (stable, so each symbol's rows keep their order); the result
    is in that order: ``symbol, timestamp, price`` and the spec's columns. Computing a frame in
    pieces, carrying the state (`FeatureSpec.build().update`), gives the same numbers.
    """
    missing = {"symbol", "timestamp"} - set(df.columns)
    if missing:
        raise DataError(f"compute() needs columns {sorted(missing)} (has {df.columns})")
    ordered = df if df["timestamp"].is_sorted() else df.sort("timestamp", maintain_order=True)
    return get_spec(spec).build().update(ordered)


def as_of(
    left: pl.DataFrame,
    features: pl.DataFrame,
    *,
    on: str = "timestamp",
    by: str = "symbol",
    tolerance: dt.timedelta | None = None,
) -> pl.DataFrame:
    """Join to each row of `left` the latest feature row of its symbol at or before its time.

    No look-ahead: a label or an order at time t only sees features computed from data up to t.
    `tolerance` limits how old the joined features may be.
    """
    for frame, what in ((left, "left"), (features, "features")):
        missing = {on, by} - set(frame.columns)
        if missing:
            raise DataError(f"as_of: {what} frame lacks {sorted(missing)}")

    def ns(frame: pl.DataFrame) -> pl.DataFrame:  # one time unit on both sides
        dtype = frame.schema[on]
        if isinstance(dtype, pl.Datetime) and dtype.time_unit != "ns":
            return frame.with_columns(pl.col(on).cast(pl.Datetime("ns", dtype.time_zone)))
        return frame

    return (
        ns(left)
        .sort(on)
        .join_asof(ns(features).sort(on), on=on, by=by, strategy="backward", tolerance=tolerance)
    )
