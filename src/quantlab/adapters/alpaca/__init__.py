"""Alpaca market data: live stock and crypto trades, quotes and bars, and REST bar history."""

from quantlab.adapters.alpaca.config import AlpacaDataConfig
from quantlab.adapters.alpaca.data import AlpacaDataSource
from quantlab.adapters.alpaca.historical import AlpacaHistoricalBars, parse_timeframe
from quantlab.adapters.alpaca.parser import AlpacaControl, AlpacaParser

__all__ = [
    "AlpacaControl",
    "AlpacaDataConfig",
    "AlpacaDataSource",
    "AlpacaHistoricalBars",
    "AlpacaParser",
    "parse_timeframe",
]
