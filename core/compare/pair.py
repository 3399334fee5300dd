"""One prediction scored against its reference: the single code path of ``airway evaluate``,
``airway compare`` and the review's Compare (so the three give the same numbers)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def evaluate_pair(
    pred: Any,
    ref: Any,
    tree: Any,
    *,
    atm22: bool = False,
    connectivity: int = 6,
    threshold: float = 0.8,
    diameter_edges: Sequence[float] | None = None,
    cancel: Any = None,
) -> Any:
    """``core.metrics.evaluate`` with the commands' defaults; returns an ``AirwayMetrics``."""
    from core.metrics import DEFAULT_DIAMETER_EDGES, evaluate

    return evaluate(
        pred,
        ref,
        tree=tree,
        atm22=atm22,
        connectivity=connectivity,
        detection_threshold=threshold,
        diameter_edges=tuple(diameter_edges) if diameter_edges else DEFAULT_DIAMETER_EDGES,
        cancel=cancel,
    )
