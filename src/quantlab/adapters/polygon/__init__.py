"""Polygon.io US equities: the stocks websocket (trades, quotes, bars) and REST aggregates."""

from quantlab.adapters.polygon.config import CHANNELS, PolygonDataConfig
from quantlab.adapters.polygon.data import PolygonDataSource
from quantlab.adapters.polygon.historical import PolygonHistoricalBars, parse_timeframe
from quantlab.adapters.polygon.parser import (
    AggregatesPage,
    ParsedFrame,
    Status,
    parse_aggregates,
    parse_frame,
)

__all__ = [
    "CHANNELS",
    "AggregatesPage",
    "ParsedFrame",
    "PolygonDataConfig",
    "PolygonDataSource",
    "PolygonHistoricalBars",
    "Status",
    "parse_aggregates",
    "parse_frame",
    "parse_timeframe",
]
