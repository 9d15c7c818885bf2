"""Coinbase Advanced Trade market data: native websocket feed and REST candles."""

from quantlab.adapters.coinbase.config import CoinbaseDataConfig, to_product, to_symbol
from quantlab.adapters.coinbase.data import CoinbaseDataSource
from quantlab.adapters.coinbase.historical import CoinbaseHistoricalBars
from quantlab.adapters.coinbase.parser import CoinbaseFeedParser, L2Book, parse_candles

__all__ = [
    "CoinbaseDataConfig",
    "CoinbaseDataSource",
    "CoinbaseFeedParser",
    "CoinbaseHistoricalBars",
    "L2Book",
    "parse_candles",
    "to_product",
    "to_symbol",
]
