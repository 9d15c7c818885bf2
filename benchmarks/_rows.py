"""The ``rows`` of a benchmark's JSON line: one per headline figure, for `quantlab bench`."""

from __future__ import annotations

from typing import Any, Literal


def row(
    case: str,
    metric: str,
    quantlab: float,
    *,
    better: Literal["higher", "lower"],
    reference: float | None = None,
    reference_name: str | None = None,
    target: float | None = None,
) -> dict[str, Any]:
    """One table row; ``meets_target`` is ``quantlab`` on the better side of ``target``
    (inclusive), or None when there is no target."""
    if better not in ("higher", "lower"):
        raise ValueError(f"better must be 'higher' or 'lower', not {better!r}")
    q = float(quantlab)
    meets = None
    if target is not None:
        meets = q >= target if better == "higher" else q <= target
    return {
        "case": case,
        "metric": metric,
        "quantlab": q,
        "reference": None if reference is None else float(reference),
        "reference_name": reference_name if reference is not None else None,
        "better": better,
        "target": None if target is None else float(target),
        "meets_target": meets,
    }
