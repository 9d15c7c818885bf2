"""quantlab: research-to-production framework for systematic trading.

The public API is this namespace (and `quantlab.research`); everything else is internal.
Names load lazily, so ``import quantlab`` stays cheap.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# onnxruntime (the production inference runtime) starts telemetry on Linux unless this is set
# before its first import; quantlab never sends anything anywhere.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"

_EXPORTS = {
    "Bar": "quantlab.core",
    "ConfigError": "quantlab.core",
    "DataError": "quantlab.core",
    "Fill": "quantlab.core",
    "Order": "quantlab.core",
    "OrderStatus": "quantlab.core",
    "OrderType": "quantlab.core",
    "QuantlabError": "quantlab.core",
    "Quote": "quantlab.core",
    "RunResult": "quantlab.engine",
    "RunSummary": "quantlab.engine",
    "Settings": "quantlab.config",
    "Side": "quantlab.core",
    "Signal": "quantlab.core",
    "TimeInForce": "quantlab.core",
    "Trade": "quantlab.core",
    "backtest": "quantlab.research",
    "load_bars": "quantlab.research",
    "load_settings": "quantlab.config",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'quantlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
