"""Ingestion: the source port, validation, batching and the ingest engine."""

from quantlab.ingest.batcher import Batcher
from quantlab.ingest.engine import IngestEngine
from quantlab.ingest.ports import MarketDataSource
from quantlab.ingest.validation import Validator

__all__ = ["Batcher", "IngestEngine", "MarketDataSource", "Validator"]
