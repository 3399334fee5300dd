"""Two predictions of one case without a reference: how far they agree.

Dice between the masks, voxels only one has, and branches one finds and the
other misses: the branches of A's parsed tree that B does not detect (ATM'22
rule: 80% of the branch's centreline inside the other mask's largest
component), and with ``both_trees`` the same the other way round.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class Agreement:
    name_a: str
    name_b: str
    dice: float  # percent
    a_voxels: int
    b_voxels: int
    both_voxels: int
    a_branches: int
    a_branches_missed_by_b: list[int] = field(default_factory=list)  # branch ids of A's tree
    b_branches: int | None = None
    b_branches_missed_by_a: list[int] = field(default_factory=list)  # branch ids of B's tree
    a_generations_missed_by_b: dict[int, int] = field(default_factory=dict)
    b_generations_missed_by_a: dict[int, int] = field(default_factory=dict)

    @property
    def a_only_voxels(self) -> int:
        return self.a_voxels - self.both_voxels

    @property
    def b_only_voxels(self) -> int:
        return self.b_voxels - self.both_voxels

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(a_only_voxels=self.a_only_voxels, b_only_voxels=self.b_only_voxels)
        return d


def _mask(x: Any) -> tuple[np.ndarray, Any]:
    if hasattr(x, "array") and hasattr(x, "geometry"):
        arr = x.array
        return (arr if arr.dtype == bool else arr != 0), x.geometry.spacing_zyx
    arr = np.asarray(x)
    return (arr if arr.dtype == bool else arr != 0), None


def _missed(
    pred: np.ndarray, tree: Any, spacing: Any, connectivity: int, threshold: float, cancel: Any
) -> tuple[list[int], dict[int, int]]:
    from core.metrics import evaluate

    m = evaluate(
        pred, tree, spacing, tree=tree, connectivity=connectivity, detection_threshold=threshold, cancel=cancel
    )
    missed = [b.id for b in m.branches if not b.detected]
    gens: dict[int, int] = {}
    for b in m.branches:
        if not b.detected:
            gens[b.generation] = gens.get(b.generation, 0) + 1
    return missed, gens


def agreement(
    a: Any,
    b: Any,
    spacing_zyx: Sequence[float] | None = None,
    *,
    name_a: str = "A",
    name_b: str = "B",
    both_trees: bool = True,
    connectivity: int = 6,
    detection_threshold: float = 0.8,
    progress: Callable[[int, int, str], None] | None = None,
    cancel: Any = None,
) -> Agreement:
    """Agreement of predictions ``a`` and ``b`` (masks or ``LabelVolume`` s on one grid)."""
    from core.errors import GeometryError, InputError
    from core.tree import parse_tree

    if hasattr(a, "geometry") and hasattr(b, "geometry"):
        from core.volume import check_same_grid

        check_same_grid(a, b)
    ma, sa = _mask(a)
    mb, sb = _mask(b)
    if ma.shape != mb.shape:
        raise GeometryError(
            f"The predictions' shapes differ: {ma.shape} and {mb.shape}.",
            "Compare predictions made on the same CT grid.",
        )
    if not ma.any() or (both_trees and not mb.any()):
        raise InputError("A prediction is empty: there is no tree to compare.", "Check the prediction files.")
    spacing = tuple(spacing_zyx or sa or sb or (1.0, 1.0, 1.0))
    steps = 4 if both_trees else 2

    def report(k: int, what: str) -> None:
        if progress is not None:
            progress(k, steps, what)

    na, nb = int(np.count_nonzero(ma)), int(np.count_nonzero(mb))
    both = int(np.count_nonzero(ma & mb))
    dice = 200.0 * both / (na + nb) if na + nb else 100.0
    report(0, f"tree of {name_a}")
    tree_a = parse_tree(ma, spacing, cancel=cancel)
    report(1, f"branches of {name_a} in {name_b}")
    a_missed, a_gens = _missed(mb, tree_a, spacing, connectivity, detection_threshold, cancel)
    out = Agreement(name_a, name_b, dice, na, nb, both, tree_a.n_branches, a_missed, a_generations_missed_by_b=a_gens)
    if both_trees:
        report(2, f"tree of {name_b}")
        tree_b = parse_tree(mb, spacing, cancel=cancel)
        report(3, f"branches of {name_b} in {name_a}")
        out.b_branches = tree_b.n_branches
        out.b_branches_missed_by_a, out.b_generations_missed_by_a = _missed(
            ma, tree_b, spacing, connectivity, detection_threshold, cancel
        )
    report(steps, "done")
    return out
