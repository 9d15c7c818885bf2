"""Signals: the strategy API, shipped strategies and the strategy engine."""

from quantlab.signals.ema_cross import EmaCross
from quantlab.signals.engine import StrategyEngine
from quantlab.signals.strategy import Strategy, StrategyContext

__all__ = ["EmaCross", "Strategy", "StrategyContext", "StrategyEngine"]
