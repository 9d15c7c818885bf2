"""Risk: pre-trade limits, VaR, the circuit breaker and the risk engine."""

from quantlab.risk.breaker import BreakerChange, BreakerConfig, CircuitBreaker
from quantlab.risk.engine import RiskEngine
from quantlab.risk.limits import REASONS, Denial, RiskLimits, check_order
from quantlab.risk.statefile import BreakerRecord, kill, read_state, reset
from quantlab.risk.var import VarConfig, historical_var, parametric_var, portfolio_var

__all__ = [
    "REASONS",
    "BreakerChange",
    "BreakerConfig",
    "BreakerRecord",
    "CircuitBreaker",
    "Denial",
    "RiskEngine",
    "RiskLimits",
    "VarConfig",
    "check_order",
    "historical_var",
    "kill",
    "parametric_var",
    "portfolio_var",
    "read_state",
    "reset",
]
