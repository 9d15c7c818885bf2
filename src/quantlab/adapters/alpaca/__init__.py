"""Alpaca market data (live trades, quotes, bars; REST bar history) and trading (`AlpacaVenue`)."""

from quantlab.adapters.alpaca.config import AlpacaDataConfig
from quantlab.adapters.alpaca.data import AlpacaDataSource
from quantlab.adapters.alpaca.historical import AlpacaHistoricalBars, parse_timeframe
from quantlab.adapters.alpaca.parser import AlpacaControl, AlpacaParser
from quantlab.adapters.alpaca.trading import AlpacaTradingConfig, AlpacaVenue, check_credentials

__all__ = [
    "AlpacaControl",
    "AlpacaDataConfig",
    "AlpacaDataSource",
    "AlpacaHistoricalBars",
    "AlpacaParser",
    "AlpacaTradingConfig",
    "AlpacaVenue",
    "check_credentials",
    "parse_timeframe",
]
