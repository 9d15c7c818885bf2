"""The engine: the `Node` composition root and run results."""

from quantlab.engine.node import EngineError, Node, new_run_id
from quantlab.engine.result import RunResult, RunSummary

__all__ = ["EngineError", "Node", "RunResult", "RunSummary", "new_run_id"]
