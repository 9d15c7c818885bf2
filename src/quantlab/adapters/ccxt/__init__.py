"""Any ccxt exchange (binance, coinbase, ...): ccxt.pro websocket trades and quotes, REST bars."""

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

__all__ = [
    "CHANNELS",
    "CcxtDataConfig",
    "CcxtDataSource",
    "CcxtHistoricalBars",
    "CcxtMarket",
    "check_frame",
    "handler_error",
    "parse_ohlcv",
    "parse_order_book",
    "parse_ticker",
    "parse_trades",
    "transport_error",
]
