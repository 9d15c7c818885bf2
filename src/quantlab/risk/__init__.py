"""Risk: pre-trade limits and the risk engine."""

from quantlab.risk.engine import RiskEngine
from quantlab.risk.limits import Denial, RiskLimits, check_order

__all__ = ["Denial", "RiskEngine", "RiskLimits", "check_order"]
