"""Branch names as a layer of the review session: the labeller's names plus the user's corrections.

The reference tree's automatic names (:func:`core.anatomy.label_tree`) are computed where the tree
is parsed, in the analysis job (:func:`name_tree`), never on the GUI thread. The user corrects a
branch (:meth:`NamesLayer.correct`); its descendants follow the corrected lobe and segment
(:meth:`core.anatomy.TreeNames.corrected`). Corrections are saved with the case (project file,
recovery file) as ``{branch id: name}`` under the content key of the reference they were made on:
branch ids are stable only for the same reference content. When the reference changed (edits, a
new parse), each corrected branch is found again by position, its centreline midpoint in mm, in
the new tree (:func:`remap_corrections`).

Error regions are placed in the reference branch they lie in (:func:`region_branches`, also in the
analysis job): an FN region in the branch whose voxels it holds most, an FP region in the branch
nearest its voxels (distance transform, within :data:`FP_NEAR_MM`), else "outside".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from core.anatomy import BranchName, TreeNames
    from core.tree import AirwayTree

# An FP voxel farther than this from every reference voxel lies "outside" the tree.
FP_NEAR_MM = 5.0
# A corrected branch is found again in a changed tree when the new centreline passes within this.
REMAP_MM = 5.0
OUTSIDE = "outside"

Position = tuple[float, float, float]


@dataclass(frozen=True)
class Correction:
    """The user's name for one branch (None: "unnamed") and where that branch was (mm, z y x)."""

    name: str | None
    position_mm: Position

    def to_json(self, branch_id: int) -> dict[str, Any]:
        return {"branch": int(branch_id), "name": self.name, "position_mm": [float(v) for v in self.position_mm]}


# -- worker side: names of a new tree, branches of error regions --------------------------------------------


@dataclass
class NamedTree:
    """What the analysis job hands back about a new tree's names."""

    names: TreeNames | None
    reference_key: str | None
    error: str | None = None  # the labeller failed: the tree stays unnamed, the analysis goes on


def name_tree(tree: AirwayTree, reference: np.ndarray, geometry: Any) -> NamedTree:
    """The automatic names of ``tree`` and the content key of the reference it was parsed from."""
    from core.outputs import content_key
    from core.volume import LabelVolume

    key = content_key(LabelVolume(np.asarray(reference, dtype=bool), geometry))
    try:
        from core.anatomy import label_tree

        # the session's grid (canonical LPS) tells the labeller left, posterior and superior
        return NamedTree(label_tree(tree, geometry=geometry), key)
    except Exception as exc:  # noqa: BLE001 - naming is an extra: a failure must not lose the metrics
        return NamedTree(None, key, f"{type(exc).__name__}: {exc}")


def region_branches(regions: Sequence[Any], tree: AirwayTree, near_mm: float = FP_NEAR_MM) -> dict[str, int]:
    """Region key -> the reference branch it lies in (0: outside the tree).

    FN voxels are reference voxels: the branch holding most of them. FP voxels get the branch of
    the nearest parsed reference voxel (Euclidean distance transform in mm on the region's box grown
    by ``near_mm``) when it is within ``near_mm``; the branch most of them get wins."""
    from scipy.ndimage import distance_transform_edt

    sp = np.asarray(tree.spacing_zyx, dtype=float)
    shape = np.asarray(tree.shape)
    grow = np.ceil(near_mm / sp).astype(np.int64)
    t_lo = np.asarray(tree.box.start, dtype=np.int64)
    t_hi = np.asarray(tree.box.stop, dtype=np.int64)
    out: dict[str, int] = {}
    for r in regions:
        coords = np.asarray(r.coords, dtype=np.int64)
        if coords.size == 0:
            out[str(r.key)] = 0
            continue
        lo = np.maximum(coords.min(axis=0) - grow, 0)
        hi = np.minimum(coords.max(axis=0) + 1 + grow, shape)
        # the tree's branch map covers its own box only: intersect
        clo, chi = np.maximum(lo, t_lo), np.minimum(hi, t_hi)
        if (chi <= clo).any():
            out[str(r.key)] = 0
            continue
        bm = np.zeros(tuple(int(v) for v in hi - lo), dtype=np.int64)
        src = tuple(slice(int(a - b), int(c - b)) for a, b, c in zip(clo, t_lo, chi))
        dst = tuple(slice(int(a - b), int(c - b)) for a, b, c in zip(clo, lo, chi))
        bm[dst] = tree.branch_map[src]
        local = coords - lo
        own = bm[local[:, 0], local[:, 1], local[:, 2]]
        if r.kind != "FP" or (own > 0).all():
            ids = own[own > 0]
        elif not (bm > 0).any():
            ids = own[:0]
        else:
            dist, idx = distance_transform_edt(bm == 0, sampling=sp, return_indices=True)
            d = dist[local[:, 0], local[:, 1], local[:, 2]]
            near = idx[:, local[:, 0], local[:, 1], local[:, 2]]
            ids = bm[near[0], near[1], near[2]][d <= near_mm]
        out[str(r.key)] = int(np.bincount(ids).argmax()) if ids.size else 0
    return out


# -- positions ----------------------------------------------------------------------------------------------


def branch_midpoint_mm(tree: AirwayTree, branch_id: int) -> Position | None:
    """The middle of a branch's centreline in mm (z y x, index times spacing): the skeleton voxel of the
    branch nearest the mean of its skeleton voxels (a curved branch's mean may lie off the branch)."""
    pts = tree.centreline_zyx[tree.centreline_branch == branch_id]
    if not len(pts):
        vox = np.argwhere(tree.branch_map == branch_id)
        if not len(vox):
            return None
        pts = vox + np.asarray(tree.box.start)
    mm = np.asarray(pts, dtype=float) * np.asarray(tree.spacing_zyx, dtype=float)
    mid = mm[int(np.argmin(((mm - mm.mean(axis=0)) ** 2).sum(axis=1)))]
    return float(mid[0]), float(mid[1]), float(mid[2])


def branch_at_position(tree: AirwayTree, position_mm: Sequence[float], within_mm: float = REMAP_MM) -> int | None:
    """The branch whose centreline passes nearest ``position_mm`` (within ``within_mm``), or None."""
    if not len(tree.centreline_zyx):
        return None
    mm = np.asarray(tree.centreline_zyx, dtype=float) * np.asarray(tree.spacing_zyx, dtype=float)
    d2 = ((mm - np.asarray(position_mm, dtype=float)) ** 2).sum(axis=1)
    i = int(np.argmin(d2))
    if d2[i] > within_mm**2:
        return None
    return int(tree.centreline_branch[i])


def remap_corrections(
    corrections: Mapping[int, Correction], tree: AirwayTree, within_mm: float = REMAP_MM
) -> tuple[dict[int, Correction], list[Correction]]:
    """Corrections made on another tree, placed on ``tree`` by position: (placed by new branch id, lost).
    Two corrections landing on one branch: the one made nearer its midpoint wins."""
    placed: dict[int, tuple[float, Correction]] = {}
    lost: list[Correction] = []
    for corr in corrections.values():
        bid = branch_at_position(tree, corr.position_mm, within_mm)
        mid = None if bid is None else branch_midpoint_mm(tree, bid)
        if bid is None or mid is None:
            lost.append(corr)
            continue
        d = float(np.linalg.norm(np.subtract(mid, corr.position_mm)))
        if bid in placed and placed[bid][0] <= d:
            lost.append(corr)
            continue
        if bid in placed:
            lost.append(placed[bid][1])
        placed[bid] = (d, Correction(corr.name, mid))
    return {b: c for b, (_, c) in placed.items()}, lost


# -- the layer ----------------------------------------------------------------------------------------------


@dataclass
class NamesLayer:
    """The reference tree's names: automatic (``auto``) and as corrected (``names``).

    ``corrections`` are keyed by branch id of the tree of ``reference_key``. Before a tree is named
    (a project or recovery file read before the first analysis) they wait in the layer and are
    placed when :meth:`set_tree` brings the tree: by id for the same reference content, by position
    otherwise. ``revision`` rises with every change (views key their caches by it)."""

    tree: AirwayTree | None = None
    auto: TreeNames | None = None
    reference_key: str | None = None
    corrections: dict[int, Correction] = field(default_factory=dict)
    names: TreeNames | None = None
    revision: int = 0
    error: str | None = None
    lost: list[Correction] = field(default_factory=list)  # corrections no branch of the new tree took

    # -- reading ------------------------------------------------------------------------------
    def name(self, branch_id: int) -> BranchName | None:
        if self.names is None:
            return None
        return self.names.names.get(int(branch_id))

    def label_text(self, branch_id: int) -> str:
        """ "RB6", "RLL (unnamed)", "unnamed"; "" without names."""
        return "" if self.names is None or branch_id <= 0 else self.names.label_text(int(branch_id))

    def is_corrected(self, branch_id: int) -> bool:
        return int(branch_id) in self.corrections

    # -- the tree -----------------------------------------------------------------------------
    def set_tree(self, tree: AirwayTree, auto: TreeNames | None, reference_key: str | None) -> None:
        """A newly parsed (and named) reference tree; corrections made on another tree are placed on it."""
        same = reference_key is not None and reference_key == self.reference_key
        if self.corrections and not same:
            self.corrections, self.lost = remap_corrections(self.corrections, tree)
        elif same:
            self.corrections = {b: c for b, c in self.corrections.items() if 1 <= b <= tree.n_branches}
        self.tree, self.auto, self.reference_key = tree, auto, reference_key
        self._refresh()

    def forget_tree(self) -> None:
        """The reference changed: its tree is gone until the next analysis (corrections are kept)."""
        self.tree = None

    def _refresh(self) -> None:
        names = self.auto
        tree = self.tree
        if names is not None and tree is not None:
            # ancestors first: a child's own correction overrides what it inherits
            for bid in sorted(self.corrections, key=lambda b: (tree.branch(b).generation, b)):
                names = names.corrected(tree, bid, self.corrections[bid].name)
        self.names = names
        self.revision += 1

    # -- corrections ---------------------------------------------------------------------------
    def correct(self, branch_id: int, name: str | None) -> tuple[Correction | None, Correction]:
        """Name ``branch_id`` (None: "unnamed"); its descendants follow. (before, after)."""
        bid = int(branch_id)
        tree = self.check_branch(bid)
        mid = branch_midpoint_mm(tree, bid)
        before = self.corrections.get(bid)
        after = Correction(name, mid if mid is not None else (0.0, 0.0, 0.0))
        self.corrections[bid] = after
        self._refresh()
        return before, after

    def check_branch(self, branch_id: int) -> AirwayTree:
        """The named tree, when ``branch_id`` is one of its branches (InputError otherwise)."""
        from core.errors import InputError

        if self.tree is None or self.auto is None:
            raise InputError(
                "The reference tree has no names yet.", "Wait for the analysis of the reference to finish."
            )
        if not 1 <= branch_id <= self.tree.n_branches:
            raise InputError(f"The reference tree has no branch {branch_id}.", "Choose a branch of the reference.")
        return self.tree

    def restore(self, branch_id: int, correction: Correction | None) -> None:
        """Put a branch's correction back as it was (undo, redo; None: the automatic name)."""
        if correction is None:
            self.corrections.pop(int(branch_id), None)
        else:
            self.corrections[int(branch_id)] = correction
        self._refresh()

    # -- files -------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """What a project and a recovery file keep: the reference's content key and the corrections."""
        return {
            "reference_key": self.reference_key,
            "corrections": [c.to_json(b) for b, c in sorted(self.corrections.items())],
        }

    def load_json(self, data: Mapping[str, Any] | None) -> None:
        """Corrections read from a file (checked by core.review.project): by branch id when the tree
        named now is of the same reference content, else placed by position (now, or when a tree comes)."""
        if not data:
            return
        corrections = dict(corrections_from_json(data.get("corrections") or []))
        key = data.get("reference_key")
        if self.tree is None:
            self.corrections, self.reference_key = corrections, key
            return
        self.corrections = corrections
        if key != self.reference_key:
            self.corrections, self.lost = remap_corrections(corrections, self.tree)
        self._refresh()


def corrections_from_json(items: Iterable[Mapping[str, Any]]) -> Iterable[tuple[int, Correction]]:
    for item in items:
        pos = item.get("position_mm") or (0.0, 0.0, 0.0)
        yield int(item["branch"]), Correction(item.get("name"), (float(pos[0]), float(pos[1]), float(pos[2])))


def correction_json(c: Correction | None) -> dict[str, Any] | None:
    """A correction as an edit-log entry holds it (no branch id: the entry has it)."""
    return None if c is None else {"name": c.name, "position_mm": list(c.position_mm)}


def correction_of_json(d: Mapping[str, Any] | None) -> Correction | None:
    if d is None:
        return None
    pos = d["position_mm"]
    return Correction(d.get("name"), (float(pos[0]), float(pos[1]), float(pos[2])))
