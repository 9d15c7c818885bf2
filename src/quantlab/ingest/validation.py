"""Vectorised validation of market-event frames (DESIGN §6), one pass per batch.

Each rule is a Polars expression evaluated over the whole batch; no per-event Python loop.
A row that breaks a rule is *rejected* with the first rule's reason; carried state (the last
accepted timestamp per symbol) makes the ordering rule hold across batches.
"""

from __future__ import annotations

from collections import Counter

import polars as pl

from quantlab.core.enums import EventType
from quantlab.core.schemas import SCHEMAS

_PRICE_COLUMNS = {
    EventType.BAR: ("open", "high", "low", "close"),
    EventType.TRADE: ("price",),
    EventType.QUOTE: ("bid", "ask"),
}
_SIZE_COLUMNS = {
    EventType.BAR: ("volume",),
    EventType.TRADE: ("size",),
    EventType.QUOTE: ("bid_size", "ask_size"),
}

REASONS = (
    "null_field",
    "non_finite_price",
    "non_positive_price",
    "bad_size",
    "high_below_low",
    "crossed_quote",
    "out_of_order",
)


def _rules(kind: EventType) -> list[tuple[str, pl.Expr]]:
    schema = SCHEMAS[kind]
    prices = [pl.col(c) for c in _PRICE_COLUMNS[kind]]
    sizes = [pl.col(c) for c in _SIZE_COLUMNS[kind]]
    rules: list[tuple[str, pl.Expr]] = [
        ("null_field", pl.any_horizontal([pl.col(c).is_null() for c in schema.names()])),
        ("non_finite_price", pl.any_horizontal([~p.is_finite() for p in prices])),
        ("non_positive_price", pl.any_horizontal([p <= 0 for p in prices])),
        ("bad_size", pl.any_horizontal([(~s.is_finite()) | (s < 0) for s in sizes])),
    ]
    if kind is EventType.BAR:
        rules.append(("high_below_low", pl.col("high") < pl.col("low")))
    if kind is EventType.QUOTE:
        rules.append(("crossed_quote", pl.col("bid") > pl.col("ask")))
    return rules


class Validator:
    """Validates frames of one kind, carrying the last accepted timestamp per symbol."""

    def __init__(self, kind: EventType) -> None:
        self.kind = kind
        self._rules = _rules(kind)
        self._last_ts = pl.DataFrame(
            schema={"symbol": pl.String, "__last": pl.Datetime("ns", "UTC")}
        )
        self.rejected: Counter[str] = Counter()
        self.accepted = 0

    def validate(self, frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Split `frame` into (accepted rows, rejected rows with a ``reason`` column)."""
        if frame.is_empty():
            return frame, frame.with_columns(reason=pl.lit("", pl.String))
        reason = pl.lit(None, pl.String)
        for name, failed in reversed(self._rules):
            reason = pl.when(failed.fill_null(True)).then(pl.lit(name)).otherwise(reason)
        checked = frame.with_columns(reason=reason)
        # Ordering: a timestamp must exceed every earlier one of its symbol (this batch or before).
        checked = (
            checked.with_row_index("__row")
            .join(self._last_ts, on="symbol", how="left")
            .with_columns(
                __prev=pl.when(pl.col("reason").is_null())
                .then(pl.col("timestamp"))
                .otherwise(None)
                .cum_max()
                .shift(1)
                .over("symbol", order_by="__row")
            )
            .with_columns(__prev=pl.max_horizontal("__prev", "__last"))
            .with_columns(
                reason=pl.when(
                    pl.col("reason").is_null() & (pl.col("timestamp") <= pl.col("__prev"))
                )
                .then(pl.lit("out_of_order"))
                .otherwise(pl.col("reason"))
            )
            .sort("__row")
            .drop("__row", "__last", "__prev")
        )
        good = checked.filter(pl.col("reason").is_null()).drop("reason")
        bad = checked.filter(pl.col("reason").is_not_null())
        if not bad.is_empty():
            self.rejected.update(dict(bad["reason"].value_counts().iter_rows()))
        self.accepted += good.height
        if not good.is_empty():
            latest = good.group_by("symbol").agg(pl.col("timestamp").max().alias("__last"))
            self._last_ts = (
                pl.concat([self._last_ts, latest]).group_by("symbol").agg(pl.col("__last").max())
            )
        return good, bad
