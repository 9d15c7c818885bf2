"""Ingestion: source port, multiplexer, data-quality rules, batching and the ingest engine."""

from quantlab.ingest.batcher import Batcher
from quantlab.ingest.engine import IngestEngine
from quantlab.ingest.items import Events, Heartbeat, Reject, SourceItem
from quantlab.ingest.multiplexer import Backoff, Multiplexer
from quantlab.ingest.ports import HistoricalBars, MarketDataSource, SourceDisconnected
from quantlab.ingest.quality import QualityChecker, QualityConfig

__all__ = [
    "Backoff",
    "Batcher",
    "Events",
    "Heartbeat",
    "HistoricalBars",
    "IngestEngine",
    "MarketDataSource",
    "Multiplexer",
    "QualityChecker",
    "QualityConfig",
    "Reject",
    "SourceDisconnected",
    "SourceItem",
]
