"""Ingestion: source port, multiplexer, data-quality rules, batching, gap backfill and the
ingest engine."""

from quantlab.ingest.backfill import BackfillConfig, Backfiller
from quantlab.ingest.batcher import Batcher
from quantlab.ingest.engine import IngestEngine
from quantlab.ingest.items import Events, Heartbeat, Reject, SourceItem
from quantlab.ingest.multiplexer import Backoff, Multiplexer
from quantlab.ingest.ports import HistoricalBars, MarketDataSource, SourceDisconnected
from quantlab.ingest.quality import QualityChecker, QualityConfig

__all__ = [
    "BackfillConfig",
    "Backfiller",
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
