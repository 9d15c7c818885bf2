"""Fixed Polars schemas of market-data frames, one per kind; timestamps are ns UTC."""

from __future__ import annotations

import polars as pl

from quantlab.core.enums import EventType

TIMESTAMP = pl.Datetime("ns", "UTC")

BAR_SCHEMA = pl.Schema(
    {
        "symbol": pl.String(),
        "timestamp": TIMESTAMP,
        "open": pl.Float64(),
        "high": pl.Float64(),
        "low": pl.Float64(),
        "close": pl.Float64(),
        "volume": pl.Float64(),
    }
)
TRADE_SCHEMA = pl.Schema(
    {
        "symbol": pl.String(),
        "timestamp": TIMESTAMP,
        "price": pl.Float64(),
        "size": pl.Float64(),
        "aggressor": pl.UInt8(),
        "trade_id": pl.String(),
    }
)
QUOTE_SCHEMA = pl.Schema(
    {
        "symbol": pl.String(),
        "timestamp": TIMESTAMP,
        "bid": pl.Float64(),
        "ask": pl.Float64(),
        "bid_size": pl.Float64(),
        "ask_size": pl.Float64(),
    }
)

SCHEMAS: dict[EventType, pl.Schema] = {
    EventType.BAR: BAR_SCHEMA,
    EventType.TRADE: TRADE_SCHEMA,
    EventType.QUOTE: QUOTE_SCHEMA,
}

# The price column of each kind, the one features and marks read.
PRICE_COLUMN: dict[EventType, str] = {
    EventType.BAR: "close",
    EventType.TRADE: "price",
    EventType.QUOTE: "bid",
}
