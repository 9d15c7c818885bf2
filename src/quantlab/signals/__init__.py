"""Signals: the strategy API, shipped strategies, the strategy engine, sketches and the Hedge
ensemble."""

from quantlab.signals.ema_cross import EmaCross
from quantlab.signals.engine import StrategyEngine
from quantlab.signals.ensemble import Hedge, Outcomes, regret_bound, theoretical_eta
from quantlab.signals.sketches import DistinctCount, VolumeSketch
from quantlab.signals.strategy import Strategy, StrategyContext

__all__ = [
    "DistinctCount",
    "EmaCross",
    "Hedge",
    "Outcomes",
    "Strategy",
    "StrategyContext",
    "StrategyEngine",
    "VolumeSketch",
    "regret_bound",
    "theoretical_eta",
]
