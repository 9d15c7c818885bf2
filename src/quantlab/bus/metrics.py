"""Per-stage latency: streaming quantile sketches of how long each bus consumer takes.

Every consumer of the in-process bus is timed per message, wall clock, from the moment its
handler starts to the moment its effect is done (time the handler spends waiting in
`InProcessBus.settle` for downstream stages is not its own and is left out). Each consumer's
times go into a KLL sketch (Apache DataSketches, about 100 ns an update, bounded memory, rank
error ~1.3 % at k=200), so percentiles cost nothing to keep on a stream of any length.

`STAGES` maps the DESIGN §7 budget's stages onto the consumers that do their work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import datasketches as ds


@dataclass(frozen=True)
class Stage:
    """A pipeline stage of DESIGN §7: the bus consumer doing it and its two budgets (ms)."""

    name: str
    consumer: str
    percentile: float
    spec_ms: float | None
    goal_ms: float | None


# The consumers' names are the stage components' `name`s (see `engine.node`).
STAGES: tuple[Stage, ...] = (
    Stage("DataFrame → features", "features", 0.95, 10.0, 2.0),
    Stage("features → signal", "strategies", 0.95, 50.0, 5.0),
    Stage("signal → order built", "order_builder", 0.99, None, None),
    Stage("signal → risk check", "risk", 0.99, 10.0, 1.0),
    Stage("risk → order submitted", "execution", 0.95, 30.0, 5.0),
    Stage("fill → settled", "settlement", 0.99, None, None),
)


class LatencySketch:
    """A stream of durations (seconds) summarised by a KLL quantile sketch."""

    __slots__ = ("_sketch", "max_s", "total_s")

    def __init__(self, k: int = 200) -> None:
        self._sketch = ds.kll_doubles_sketch(k)
        self.total_s = 0.0
        self.max_s = 0.0

    def update(self, seconds: float) -> None:
        self._sketch.update(seconds)
        self.total_s += seconds
        if seconds > self.max_s:
            self.max_s = seconds

    @property
    def count(self) -> int:
        return int(self._sketch.n)

    def quantile(self, q: float) -> float:
        """The `q`-quantile in seconds (NaN while empty)."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q!r}")
        if self._sketch.is_empty():
            return math.nan
        return float(self._sketch.get_quantile(q))

    def merge(self, other: LatencySketch) -> None:
        self._sketch.merge(other._sketch)
        self.total_s += other.total_s
        self.max_s = max(self.max_s, other.max_s)

    def summary(self) -> dict[str, float | int]:
        """Count, mean, p50/p95/p99 and max, in milliseconds."""
        n = self.count
        return {
            "count": n,
            "mean_ms": self.total_s / n * 1e3 if n else math.nan,
            "p50_ms": self.quantile(0.50) * 1e3,
            "p95_ms": self.quantile(0.95) * 1e3,
            "p99_ms": self.quantile(0.99) * 1e3,
            "max_ms": self.max_s * 1e3,
        }


class LatencyRecorder:
    """Latency sketches by consumer name (a consumer's sub-subscriptions are kept apart).

    Two kinds: a consumer's own handling time per message (`record`), and, for messages that
    carry the wall time their market data was received (``ts_recv``: batches, signals,
    orders of a live engine), the time from that arrival until the consumer was done with
    it (`record_since_data`): the pipeline's latency up to and including that stage.
    """

    def __init__(self) -> None:
        self.sketches: dict[str, LatencySketch] = {}
        self.since_data: dict[str, LatencySketch] = {}

    def record(self, consumer: str, seconds: float) -> None:
        sketch = self.sketches.get(consumer)
        if sketch is None:
            sketch = self.sketches[consumer] = LatencySketch()
        sketch.update(seconds)

    def record_since_data(self, consumer: str, seconds: float) -> None:
        sketch = self.since_data.get(consumer)
        if sketch is None:
            sketch = self.since_data[consumer] = LatencySketch()
        sketch.update(seconds)

    def summary(self) -> dict[str, dict[str, float | int]]:
        return {name: s.summary() for name, s in sorted(self.sketches.items())}

    def since_data_summary(self) -> dict[str, dict[str, float | int]]:
        """Per consumer: market data received -> the consumer done with what it caused."""
        return {name: s.summary() for name, s in sorted(self.since_data.items())}

    def stages(self) -> list[dict[str, Any]]:
        """The DESIGN §7 stages with their measured percentile and verdicts against the budget.

        A stage with no measurement (its consumer saw no message) is listed with count 0.
        """
        return stages_from_summary(self.summary())


def stages_from_summary(consumers: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """`LatencyRecorder.stages` from consumer summaries (`LatencyRecorder.summary`), which
    may come from several processes (each role of a multi-process engine reports its own)."""
    rows = []
    for stage in STAGES:
        found = consumers.get(stage.consumer) or {}
        pct = f"p{round(stage.percentile * 100)}"
        measured = float(found.get(f"{pct}_ms", math.nan))
        rows.append(
            {
                "stage": stage.name,
                "consumer": stage.consumer,
                "percentile": pct,
                "count": int(found.get("count", 0)),
                "measured_ms": measured,
                "spec_ms": stage.spec_ms,
                "goal_ms": stage.goal_ms,
                "within_spec": _within(measured, stage.spec_ms),
                "within_goal": _within(measured, stage.goal_ms),
            }
        )
    return rows


def _within(measured: float, budget: float | None) -> bool | None:
    if budget is None or math.isnan(measured):
        return None
    return measured <= budget
