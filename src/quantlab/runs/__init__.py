"""Production runs: notebooks executed with papermill, archived and registered; schedules
and sweeps of them (`quantlab run`, `quantlab runs`, `quantlab schedule`, `quantlab sweep`)."""

from quantlab.runs.executor import RunError, RunOutcome, execute
from quantlab.runs.registry import RunNotFoundError, RunRecord, RunRegistry, idempotency_key

__all__ = [
    "RunError",
    "RunNotFoundError",
    "RunOutcome",
    "RunRecord",
    "RunRegistry",
    "execute",
    "idempotency_key",
]
