"""Any ccxt exchange (binance, coinbase, ...): ccxt.pro websocket trades and quotes, REST bars;
order entry on binance spot and coinbase Advanced Trade (`CcxtVenue`)."""

from quantlab.adapters.ccxt.config import CHANNELS, CcxtDataConfig, CcxtMarket
from quantlab.adapters.ccxt.data import CcxtDataSource
from quantlab.adapters.ccxt.historical import CcxtHistoricalBars
from quantlab.adapters.ccxt.parser import (
    check_frame,
    handler_error,
    parse_ohlcv,
    parse_order_book,
    parse_ticker,
    parse_trades,
    transport_error,
)
from quantlab.adapters.ccxt.trading import CcxtTradingConfig, CcxtVenue

__all__ = [
    "CHANNELS",
    "CcxtDataConfig",
    "CcxtDataSource",
    "CcxtHistoricalBars",
    "CcxtMarket",
    "CcxtTradingConfig",
    "CcxtVenue",
    "check_frame",
    "handler_error",
    "parse_ohlcv",
    "parse_order_book",
    "parse_ticker",
    "parse_trades",
    "transport_error",
]
