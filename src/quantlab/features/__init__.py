"""Features: indicator expressions, exact streaming computation and the feature engine."""

from quantlab.features.engine import FeatureEngine
from quantlab.features.indicators import ema, ema_alpha, sma
from quantlab.features.streaming import CrossoverFeatures

__all__ = ["CrossoverFeatures", "FeatureEngine", "ema", "ema_alpha", "sma"]
