"""Airway segmentation metrics: ATM'22 definitions plus the extras users ask for.

On the prediction's largest connected component (6-connectivity in ATM'22's
code; a parameter here):

- TD (tree length detected) = |pred ∩ skeleton| / |skeleton|, in voxels;
- BD (branches detected) = share of reference branches (trachea included)
  with at least 80% of their skeleton voxels predicted;
- DSC, precision, sensitivity, specificity, on the whole masks;
- ATM'22 score = mean of TD, BD, DSC and precision.

All in percent. ``atm22=True`` reproduces the organisers' public
``evaluation_atm_22.py`` to the digit: 1e-5 added to numerator and denominator,
TD/BD/DSC rounded to 2 decimals, precision/sensitivity/specificity to 3 (the
latter two as ``100 - rounded error rate``). The default, ``atm22=False``,
reports exact ratios (an undefined ratio, e.g. precision of an empty
prediction, is 0).

Extras (not in ATM'22): TD in mm along the centreline, leakage
|pred \\ ref| / |ref| and airway missing ratio |ref \\ pred| / |ref| (YangLab's
definitions, percent), breakages (prediction components other than the largest
that touch the reference), branch counts per generation, DSC per airway
diameter interval (Zheng et al. 2021, Fig. 6) and a per-branch table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from core.box import Box, bounding_box
from core.box import union as union_of
from core.errors import GeometryError, InputError
from core.progress import Progress
from core.progress import raise_if_cancelled as _check
from core.tree import AirwayTree, CancelFlag, IntArray, Mask, checked_connectivity, parse_tree

DEFAULT_DIAMETER_EDGES: tuple[float, ...] = (0.0, 2.0, 4.0, 6.0, 8.0)
SMOOTH = 1e-5  # ATM'22 evaluation_atm_22.py


# ATM'22: a branch counts as detected when this share of its centreline is predicted
DETECTION_THRESHOLD = 0.8


@dataclass
class BranchResult:
    id: int
    parent: int | None
    generation: int
    length_mm: float
    mean_diameter_mm: float
    min_diameter_mm: float
    centreline_voxels: int
    detected_voxels: int
    detected_share: float  # percent of the branch's centreline voxels inside the prediction
    detected: bool


@dataclass
class GenerationCount:
    generation: int
    branches: int
    detected: int


@dataclass
class DiameterBin:
    low_mm: float
    high_mm: float  # inf for the last interval
    branches: int
    reference_voxels: int
    prediction_voxels: int
    overlap_voxels: int
    dsc: float  # percent; nan when the interval holds no voxel at all

    @property
    def label(self) -> str:
        return f">{self.low_mm:g} mm" if math.isinf(self.high_mm) else f"{self.low_mm:g}-{self.high_mm:g} mm"


@dataclass
class AirwayMetrics:
    td: float
    bd: float
    dsc: float
    precision: float
    sensitivity: float
    specificity: float
    atm_score: float
    td_mm: float
    tree_length_mm: float
    leakage: float
    missing_ratio: float
    breakages: int
    n_branches: int
    n_detected: int
    counts: dict[str, int]
    per_generation: list[GenerationCount] = field(default_factory=list)
    dsc_by_diameter: list[DiameterBin] = field(default_factory=list)
    branches: list[BranchResult] = field(default_factory=list)
    mode: str = "exact"
    connectivity: int = 6
    detection_threshold: float = DETECTION_THRESHOLD

    MAIN = ("td", "bd", "dsc", "precision", "sensitivity", "specificity", "atm_score")
    EXTRA = ("td_mm", "tree_length_mm", "leakage", "missing_ratio", "breakages", "n_branches", "n_detected")

    def summary(self) -> dict[str, Any]:
        """The scalar metrics (percent, mm, counts) as a flat dict."""
        return {k: getattr(self, k) for k in self.MAIN + self.EXTRA}

    def as_dict(self, branches: bool = True) -> dict[str, Any]:
        d = self.summary()
        d.update(
            mode=self.mode,
            connectivity=self.connectivity,
            detection_threshold=self.detection_threshold,
            counts=dict(self.counts),
            per_generation=[asdict(g) for g in self.per_generation],
            dsc_by_diameter=[{**asdict(b), "label": b.label} for b in self.dsc_by_diameter],
        )
        if branches:
            d["branches"] = [asdict(b) for b in self.branches]
        return d


def _as_mask(x: Any, what: str) -> tuple[Mask, tuple[float, float, float] | None]:
    if hasattr(x, "geometry") and hasattr(x, "array"):
        arr = x.array
        return (arr if arr.dtype == bool else arr != 0), x.geometry.spacing_zyx
    arr = np.asarray(x)
    if arr.ndim != 3:
        raise InputError(f"The {what} must be a 3D mask, got shape {arr.shape}.", "Give a 3D label volume.")
    return (arr if arr.dtype == bool else arr != 0), None


def _ratio(num: float, den: float) -> float:
    return 100.0 * num / den if den else 0.0


def evaluate(
    prediction_mask: Any,
    reference: Any,
    spacing_zyx: Sequence[float] | None = None,
    *,
    tree: AirwayTree | None = None,
    atm22: bool = False,
    connectivity: int = 6,
    largest_component: bool = True,
    detection_threshold: float = DETECTION_THRESHOLD,
    diameter_edges: Sequence[float] = DEFAULT_DIAMETER_EDGES,
    progress: Progress | None = None,
    cancel: CancelFlag | None = None,
) -> AirwayMetrics:
    """Compare a predicted airway mask with a reference.

    ``reference``: the reference mask (array or ``LabelVolume``) or a parsed
    ``AirwayTree`` (then its label, largest component with holes filled, is the
    reference mask). ``tree``: a tree parsed earlier from this reference, to
    skip parsing. ``connectivity`` of the prediction's largest component
    (ATM'22: 6); ``largest_component=False`` evaluates the prediction as is.
    """
    if hasattr(prediction_mask, "geometry") and hasattr(reference, "geometry") and hasattr(reference, "array"):
        from core.volume import check_same_grid

        check_same_grid(reference, prediction_mask)
    pred, pred_sp = _as_mask(prediction_mask, "prediction")
    ref_sp: tuple[float, float, float] | None
    if isinstance(reference, AirwayTree):
        tree = tree or reference
        ref = reference.label_mask()
        ref_sp = reference.spacing_zyx
    else:
        ref, ref_sp = _as_mask(reference, "reference")
    if pred.shape != ref.shape:
        raise GeometryError(
            f"Prediction shape {pred.shape} differs from the reference's {ref.shape}.",
            "Evaluate a prediction made on the reference's CT grid (or resample it explicitly).",
        )
    spacing = tuple(float(s) for s in (spacing_zyx or ref_sp or pred_sp or (1.0, 1.0, 1.0)))
    if not 0.0 < detection_threshold <= 1.0:
        raise InputError(f"Detection threshold {detection_threshold} is not in (0, 1].", "Use 0.8 (ATM'22).")
    edges = [float(e) for e in diameter_edges]
    if len(edges) < 1 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise InputError(f"Diameter edges {edges} must increase.", "For example 0 2 4 6 8 (mm).")

    steps = 4

    def report(k: int, what: str) -> None:
        _check(cancel)
        if progress is not None:
            progress(k, steps, what)

    report(0, "reference tree")
    if tree is None:
        tree = parse_tree(ref, spacing, cancel=cancel)
    if tree.shape != ref.shape:
        raise GeometryError(
            f"The parsed tree is for a {tree.shape} volume, the masks are {ref.shape}.",
            "Use the tree parsed from this reference (or parse it again).",
        )

    report(1, "prediction components")
    p_box, p_sub, breakages, n_components = _prediction_component(pred, ref, connectivity, largest_component)

    report(2, "overlap")
    n_ref = int(np.count_nonzero(ref))
    n_pred = int(np.count_nonzero(p_sub)) if p_sub is not None else 0
    tp = int(np.count_nonzero(p_sub & ref[p_box.slices])) if p_sub is not None and p_box is not None else 0
    fp, fn = n_pred - tp, n_ref - tp
    tn = int(ref.size) - tp - fp - fn

    skel = tree.centreline_zyx
    hit = _lookup(p_sub, p_box, skel)
    n_skel = len(skel)
    n_hit = int(hit.sum())
    nb = tree.n_branches
    per_total = np.bincount(tree.centreline_branch, minlength=nb + 1)[1:]
    per_hit = np.bincount(tree.centreline_branch, weights=hit, minlength=nb + 1)[1:].astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = per_hit / per_total
    detected = share >= detection_threshold  # nan (no centreline) counts as missed, as ATM'22
    n_detected = int(detected.sum())

    if atm22:
        td = round((n_hit + SMOOTH) / (n_skel + SMOOTH) * 100, 2)
        bd = round((n_detected * 100) / nb, 2)
        dsc = round(((2.0 * tp + SMOOTH) / (n_pred + n_ref + SMOOTH)) * 100, 2)
        precision = round((tp + SMOOTH) * 100 / (n_pred + SMOOTH), 3)
        fnr = round((fn + SMOOTH) * 100 / (n_ref + SMOOTH), 3)
        fpr = round((fp + SMOOTH) * 100 / ((tn + fp) + SMOOTH), 3)
        sensitivity = round(100 - fnr, 3)
        specificity = round(100 - fpr, 3)
    else:
        td = _ratio(n_hit, n_skel)
        bd = _ratio(n_detected, nb)
        dsc = _ratio(2 * tp, n_pred + n_ref)
        precision = _ratio(tp, n_pred)
        sensitivity = _ratio(tp, n_ref)
        specificity = _ratio(tn, tn + fp)
    atm_score = (td + bd + dsc + precision) / 4.0

    report(3, "branch tables")
    si, sj, sw = tree.centreline_segments()
    tree_length = float(sw.sum())
    td_mm = float(sw[hit[si] & hit[sj]].sum()) if len(sw) else 0.0

    gens = np.array([b.generation for b in tree.branches], dtype=np.int64)
    per_generation = [
        GenerationCount(int(g), int((gens == g).sum()), int((detected & (gens == g)).sum())) for g in np.unique(gens)
    ]
    branches = [
        BranchResult(
            id=b.id,
            parent=b.parent,
            generation=b.generation,
            length_mm=b.length_mm,
            mean_diameter_mm=b.mean_diameter_mm,
            min_diameter_mm=b.min_diameter_mm,
            centreline_voxels=int(per_total[b.id - 1]),
            detected_voxels=int(per_hit[b.id - 1]),
            detected_share=float(100.0 * share[b.id - 1]) if per_total[b.id - 1] else float("nan"),
            detected=bool(detected[b.id - 1]),
        )
        for b in tree.branches
    ]
    bins = _dsc_by_diameter(tree, ref, p_sub, p_box, edges)
    report(4, "done")
    return AirwayMetrics(
        td=td,
        bd=bd,
        dsc=dsc,
        precision=precision,
        sensitivity=sensitivity,
        specificity=specificity,
        atm_score=atm_score,
        td_mm=td_mm,
        tree_length_mm=tree_length,
        leakage=_ratio(fp, n_ref),
        missing_ratio=_ratio(fn, n_ref),
        breakages=breakages,
        n_branches=nb,
        n_detected=n_detected,
        counts={
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "tn": tn,
            "prediction_voxels": n_pred,
            "reference_voxels": n_ref,
            "centreline_voxels": n_skel,
            "centreline_detected": n_hit,
            "prediction_components": n_components,
        },
        per_generation=per_generation,
        dsc_by_diameter=bins,
        branches=branches,
        mode="atm22" if atm22 else "exact",
        connectivity=connectivity,
        detection_threshold=detection_threshold,
    )


def _prediction_component(
    pred: Mask, ref: Mask, connectivity: int, largest: bool
) -> tuple[Box | None, Mask | None, int, int]:
    """(box, mask on box, breakages, components) of the evaluated prediction; (None, None, 0, 0) if empty."""
    import cc3d

    conn = checked_connectivity(connectivity)
    box = bounding_box(pred)
    if box is None:
        return None, None, 0, 0
    sl = box.slices
    labels, n = cc3d.connected_components(pred[sl], connectivity=conn, return_N=True)
    if not largest:
        return box, labels > 0, 0, int(n)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    keep = int(np.argmax(counts))
    touching = np.unique(labels[ref[sl] & (labels > 0)])
    breakages = int(np.count_nonzero(touching != keep))
    return box, labels == keep, breakages, int(n)


def _lookup(sub: Mask | None, box: Box | None, coords: IntArray) -> Mask:
    """Values of a box-sized bool mask at full-volume coordinates (False outside the box)."""
    out = np.zeros(len(coords), dtype=bool)
    if sub is None or box is None or len(coords) == 0:
        return out
    lo = np.array(box.start)
    hi = np.array(box.stop)
    inside = ((coords >= lo) & (coords < hi)).all(axis=1)
    c = coords[inside] - lo
    out[inside] = sub[c[:, 0], c[:, 1], c[:, 2]]
    return out


def branch_of_voxels(tree: AirwayTree, coords: npt.NDArray[np.integer[Any]]) -> IntArray:
    """Reference branch of each voxel: its branch in the parse, else the branch of the nearest centreline voxel (mm)."""
    from scipy.spatial import cKDTree

    coords = np.asarray(coords, dtype=np.int64)
    out = np.zeros(len(coords), dtype=np.int64)
    if len(coords) == 0:
        return out
    lo = np.array(tree.box.start)
    hi = np.array(tree.box.stop)
    inside = ((coords >= lo) & (coords < hi)).all(axis=1)
    c = coords[inside] - lo
    out[inside] = tree.branch_map[c[:, 0], c[:, 1], c[:, 2]]
    rest = np.flatnonzero(out == 0)
    if rest.size and len(tree.centreline_zyx):
        sp = np.asarray(tree.spacing_zyx, dtype=float)
        _, nn = cKDTree(tree.centreline_zyx * sp).query(coords[rest] * sp)
        out[rest] = tree.centreline_branch[nn]
    return out


def _dsc_by_diameter(
    tree: AirwayTree, ref: Mask, p_sub: Mask | None, p_box: Box | None, edges: list[float]
) -> list[DiameterBin]:
    """DSC of the voxels belonging to branches whose mean diameter falls in each interval.

    Every reference and predicted voxel is given a branch (``branch_of_voxels``);
    a branch's interval is that of its mean centreline diameter.
    """
    diam = np.array([b.mean_diameter_mm for b in tree.branches], dtype=float)
    bin_of_branch = np.concatenate(
        [[-1], np.clip(np.searchsorted(edges, np.nan_to_num(diam), side="right") - 1, 0, None)]
    )
    nbins = len(edges)
    ubox = union_of(bounding_box(ref), p_box)
    ref_n = np.zeros(nbins, np.int64)
    pred_n = np.zeros(nbins, np.int64)
    both_n = np.zeros(nbins, np.int64)
    if ubox is not None:
        r = ref[ubox.slices]
        p = np.zeros(r.shape, dtype=bool)
        if p_sub is not None and p_box is not None:
            p[p_box.shifted([-u for u in ubox.start]).slices] = p_sub
        union = r | p
        idx = np.nonzero(union)
        coords = np.stack(idx, axis=1) + np.array(ubox.start)
        bins = bin_of_branch[branch_of_voxels(tree, coords)]
        rv, pv = r[idx], p[idx]
        ok = bins >= 0
        ref_n = np.bincount(bins[ok & rv], minlength=nbins)
        pred_n = np.bincount(bins[ok & pv], minlength=nbins)
        both_n = np.bincount(bins[ok & rv & pv], minlength=nbins)
    out = []
    for k in range(nbins):
        hi = edges[k + 1] if k + 1 < nbins else math.inf
        den = int(ref_n[k] + pred_n[k])
        out.append(
            DiameterBin(
                low_mm=edges[k],
                high_mm=hi,
                branches=int(np.count_nonzero(bin_of_branch[1:] == k)),
                reference_voxels=int(ref_n[k]),
                prediction_voxels=int(pred_n[k]),
                overlap_voxels=int(both_n[k]),
                dsc=100.0 * 2 * int(both_n[k]) / den if den else float("nan"),
            )
        )
    return out
