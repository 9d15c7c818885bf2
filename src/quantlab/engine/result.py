"""What a run returns: its summary and its orders, fills and positions as Polars frames."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import polars as pl


class RunSummary(msgspec.Struct, kw_only=True):
    """The headline figures of a run; written as ``summary.json`` beside its outputs."""

    run_id: str
    mode: str
    started_at: str
    data: list[str]
    symbols: int
    events: int
    events_accepted: int
    rejected: dict[str, int]
    flagged: dict[str, int]
    gaps: int
    batches: int
    feature_spec: str
    feature_rows: int
    signals: int
    orders: int
    approved: int
    denied: dict[str, int]
    fills: int
    pnl: dict[str, dict[str, Decimal]]
    wall_s: float
    events_per_s: float
    handler_errors: int
    dead_letters: int
    run_dir: str
    database: str
    sources: dict[str, dict[str, Any]] = {}
    strategy: dict[str, Any] = {}
    sketches: dict[str, Any] = {}
    risk: dict[str, Any] = {}
    pnl_base: dict[str, Any] | None = None
    costs: dict[str, dict[str, Decimal]] = {}
    ledger: dict[str, Any] = {}
    execution: dict[str, Any] = {}
    # Per-consumer handler latency and the DESIGN §7 stages against budget (`bus.metrics`).
    latency: dict[str, Any] = {}
    # The part of a multi-process engine this run was (`quantlab live --role`), else "all".
    role: str = "all"
    # The code and settings hashes of this process (`engine.deployment.fingerprint`), and,
    # for the execution role, what its deployment check saw of the other processes.
    fingerprint: dict[str, str] = {}
    deployment: dict[str, Any] = {}

    def to_json(self) -> bytes:
        return msgspec.json.format(msgspec.json.encode(self), indent=2)


@dataclass(frozen=True)
class RunResult:
    """A finished run (returned by `quantlab.backtest`)."""

    summary: RunSummary
    orders: pl.DataFrame
    fills: pl.DataFrame
    positions: pl.DataFrame
    run_dir: Path
    signals: pl.DataFrame | None = None
    weights: pl.DataFrame | None = None

    @property
    def pnl(self) -> dict[str, dict[str, Decimal]]:
        """PnL per quote currency: realized, unrealized, fees and total."""
        return self.summary.pnl

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self.summary)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        s = self.summary
        totals = ", ".join(f"{ccy} {v['total']:.8f}" for ccy, v in s.pnl.items()) or "none"
        return (
            f"RunResult(run_id={s.run_id!r}, events={s.events}, orders={s.orders}, "
            f"fills={s.fills}, pnl=[{totals}], events_per_s={s.events_per_s:,.0f})"
        )
