"""Name the branches of an airway tree: trachea, main, lobar and segmental bronchi.

Central and lobar names follow Gu et al. (2012), the rules AirQuant adapts, read in the patient
frame (world mm, LPS, so any grid orientation gives the same names). Each step splits the
divisions at hand in two by the largest gap of a score of their subtrees' centroids, so it works
whether the parse gives a bronchus a branch of its own or only its divisions:

- trachea = the branch at the top of the airway (the parse's root where that is it); the carina's
  divisions go right or left of the trachea's axis; one division on a side is that main bronchus;
- right: the highest division(s) are the upper lobe (RUL), the rest the bronchus intermedius;
  of its divisions the most anterior-then-superior (-y + z/2, at most two) are the middle lobe
  (RML), the rest the lower lobe (RLL); where the superior segment (RB6) leaves before the middle
  lobe, the trunk that still holds the middle lobe continues the bronchus intermedius;
- left: upper lobe (LUL) by superior + anterior (z - y), the rest the lower lobe (LLL); the
  upper lobe's lowest division(s) are the lingula, the rest its upper division (LULupper);
- a lower lobe without a stem of its own names its basal trunk (the lower lobe bronchus continues
  as the basal trunk past its superior segment).

Details and the measured figures: docs/anatomy.md. Segmental names: :mod:`core.anatomy.segments`.
Names are given to :class:`Chain` s (one bronchus the parse may have cut into pieces at twigs);
descendants inherit lobe and segment.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from core.anatomy.branches import Chain, TreeGeometry
from core.anatomy.names import LOBES, is_segmental, lobe_of_name
from core.anatomy.segments import SegmentSolver
from core.anatomy.tree_names import BranchName, TreeNames
from core.errors import InputError
from core.tree import AirwayTree
from core.volume import Geometry

# Label values of a lobe mask, unless told otherwise: 1..5 in the order of LOBES
# (RUL, RML, RLL, LUL, LLL).
DEFAULT_LOBE_VALUES: dict[int, str] = {k + 1: lobe for k, lobe in enumerate(LOBES)}


def _conf(separation_mm: float, scale_mm: float = 10.0) -> float:
    """Confidence of a decision between two subtrees whose deciding coordinates differ by ``separation_mm``."""
    return float(1.0 - 0.5 * math.exp(-max(separation_mm, 0.0) / scale_mm))


def _split(parts: list[Chain], score: list[float]) -> tuple[list[Chain], list[Chain], float]:
    """Parts in two classes (low scores, high scores) at the largest gap of ``score``; and that gap."""
    order = np.argsort(score)
    s = np.asarray(score, dtype=float)[order]
    gaps = np.diff(s)
    k = int(np.argmax(gaps))
    low = [parts[int(i)] for i in order[: k + 1]]
    high = [parts[int(i)] for i in order[k + 1 :]]
    return low, high, float(gaps[k])


def _split_top(parts: list[Chain], score: list[float], most: int) -> tuple[list[Chain], list[Chain], float]:
    """Like :func:`_split`, the high class holding at most ``most`` parts (a lobe's own divisions)."""
    order = np.argsort(score)[::-1]
    s = np.asarray(score, dtype=float)[order]
    gaps = s[:-1] - s[1:]
    gaps_k = gaps[: max(1, min(most, len(gaps)))]
    # fewer parts unless more are clearly better separated (a lobe is usually one bronchus)
    k = int(np.flatnonzero(gaps_k >= gaps_k.max() / 1.5)[0])
    high = [parts[int(i)] for i in order[: k + 1]]
    low = [parts[int(i)] for i in order[k + 1 :]]
    return low, high, float(gaps[k])


class _Labeller:
    def __init__(self, tree: AirwayTree, geometry: Geometry | None) -> None:
        self.tree = tree
        self.g = TreeGeometry(tree, geometry)
        self.auto: dict[int, tuple[str, float]] = {}
        self.warnings: list[str] = []
        self.forests: list[tuple[str, list[Chain]]] = []  # (model key, the bronchi to name segments among)

    def put(self, ch: Chain, name: str, conf: float) -> None:
        for b in ch.ids:
            self.auto[b] = (name, conf)

    # -- patient-frame scores of a chain's subtree (LPS world: x left, y posterior, z superior) --
    def c(self, ch: Chain) -> np.ndarray:
        return self.g.centroid(ch.head)

    def up_front(self, ch: Chain) -> float:
        c = self.c(ch)
        return float(c[2] - c[1])  # superior + anterior

    def front_up(self, ch: Chain) -> float:
        # the middle lobe is anterior; the lower lobe's superior segment (RB6) can lie as high
        # as the middle lobe but posterior, its basal segments lower
        c = self.c(ch)
        return float(-c[1] + 0.5 * c[2])

    def down_front(self, ch: Chain) -> float:
        c = self.c(ch)
        return float(-c[2])  # inferior (an anterior term would pull LB3 to the lingula)

    def run(self) -> None:
        g = self.g
        if g.root != self.tree.trachea:
            self.warnings.append(
                f"The parse's largest region (branch {self.tree.trachea}) is not the trachea; "
                f"branch {g.root}, at the top of the airway, is."
            )
        root = g.chain(g.root)
        top = g.branch_points(root.head)
        mid_x = float(np.median(top[:, 0])) if len(top) else float(g.distal(root.end)[0])
        # a branch of the trachea's chain that runs off to one side is a main bronchus the parse
        # ran together with the lower trachea (coarse slices): the other side's bronchi leave it
        main_side, main_ids = "", []
        for i, b in enumerate(root.ids[1:], start=1):
            side = self.lateral(b, mid_x)
            if side:
                main_side, main_ids = side, root.ids[i:]
                root.ids = root.ids[:i]
                break
        self.put(root, "Trachea", 1.0)
        kids = list(root.children)
        if len(kids) < 2:
            self.warnings.append("The trachea does not divide: no main bronchi named.")
            return
        # the trachea's axis: which side of it each division's subtree lies
        right = [k for k in kids if self.c(k)[0] < mid_x]
        left = [k for k in kids if self.c(k)[0] >= mid_x]
        if not right or not left:
            left, right, _ = _split(kids, [-float(self.c(k)[0]) for k in kids])
        if main_side:
            self.warnings.append(
                f"The parse runs the {'right' if main_side == 'R' else 'left'} main bronchus together with the "
                "lower trachea; the other main bronchus leaves it."
            )
            main = Chain(main_ids)
            self.put(main, "RMB" if main_side == "R" else "LMB", 0.7)
            if main_side == "R":
                self.right(right)
                self.main_or_parts(left, "LMB", self.left)
            else:
                self.left(left)
                self.main_or_parts(right, "RMB", self.right)
            return
        for side, parts in (("right", right), ("left", left)):
            if len(parts) > 1:
                self.warnings.append(
                    f"The {side} main bronchus has no branch of its own in the parse (the carina divides into "
                    f"{len(kids)}); its divisions are named."
                )
        rc = g.centroid_of([k.head for k in right])
        lc = g.centroid_of([k.head for k in left])
        conf = _conf(float(lc[0] - rc[0]), 15.0)
        if len(right) == 1:
            self.put(right[0], "RMB", conf)
            right = list(right[0].children)
        if len(left) == 1:
            self.put(left[0], "LMB", conf)
            left = list(left[0].children)
        self.right(right)
        self.left(left)

    def lateral(self, b: int, mid_x: float) -> str:
        """ "R" or "L" where branch ``b`` itself runs off sideways from the trachea's axis, else ""."""
        pts = self.g.branch_points(b)
        if len(pts) < 3:
            return ""
        start = self.g.proximal(b)
        far = pts[int(np.argmax(np.linalg.norm(pts - start, axis=1)))]
        length = float(np.linalg.norm(far - start))
        # the trachea's own centreline stays within a few mm of its axis; its end at the carina too
        if length < 15.0 or abs(far[0] - mid_x) < 20.0:
            return ""
        return "R" if far[0] < mid_x else "L"

    def runs_posterior(self, ch: Chain) -> bool:
        """Whether the bronchus's own centreline heads more posterior than inferior (a superior segment's way)."""
        pts = np.concatenate([self.g.branch_points(b) for b in ch.ids])
        if len(pts) < 3:
            return False
        start = self.g.proximal(ch.head)
        far = pts[int(np.argmax(np.linalg.norm(pts - start, axis=1)))]
        d = far - start
        return bool(d[1] > -d[2] and d[1] > 0)

    def main_or_parts(self, parts: list[Chain], name: str, then: Callable[[list[Chain]], None]) -> None:
        if len(parts) == 1:
            self.put(parts[0], name, 0.7)
            parts = list(parts[0].children)
        then(parts)

    # -- right lung --------------------------------------------------------------------------
    def right(self, parts: list[Chain]) -> None:
        if len(parts) < 2:
            self.warnings.append("The right main bronchus does not divide: no right lobar bronchi named.")
            return
        lower, upper, gap = _split_top(parts, [float(self.c(k)[2]) for k in parts], 3)
        self.lobe("RUL", upper, _conf(gap))
        if len(lower) == 1:
            self.put(lower[0], "BronInt", _conf(gap))
            lower = list(lower[0].children)
        self.middle_lower(lower)

    def middle_lower(self, parts: list[Chain]) -> None:
        while True:
            if len(parts) < 2:
                self.warnings.append("The bronchus intermedius does not divide: RML and RLL not named.")
                return
            lower, middle, gap = _split_top(parts, [self.front_up(k) for k in parts], 2)
            total = sum(self.g.chain_volume(k) for k in parts)
            big = middle[0] if len(middle) == 1 else None
            # the superior segment (RB6) left first: the anterior subtree still holds the middle AND
            # the basal lower lobe; it continues the bronchus intermedius
            if big is not None and len(big.children) >= 2 and self.g.chain_volume(big) > 0.5 * total:
                self.put(big, "BronInt", 0.7)
                parts = lower + list(big.children)
                continue
            break
        self.lobe("RML", middle, _conf(gap))
        self.lower_lobe("RLL", lower, _conf(gap))

    # -- left lung -------------------------------------------------------------------------
    def left(self, parts: list[Chain]) -> None:
        if len(parts) < 2:
            self.warnings.append("The left main bronchus does not divide: no left lobar bronchi named.")
            return
        lower, upper, gap = _split(parts, [self.up_front(k) for k in parts])
        self.lower_lobe("LLL", lower, _conf(gap))
        if len(upper) == 1:
            self.put(upper[0], "LUL", _conf(gap))
            upper = list(upper[0].children)
        if len(upper) < 2:
            return
        rest, ling, gap2 = _split_top(upper, [self.down_front(k) for k in upper], 2)
        self.lobe("Lingula", ling, _conf(gap2))
        self.lobe("LULupper", rest, _conf(gap2))

    def lobe(self, name: str, parts: list[Chain], conf: float) -> None:
        """``parts`` make up bronchus ``name``: one part is it, several are its divisions."""
        if len(parts) == 1:
            self.put(parts[0], name, conf)
            self.forests.append((name, list(parts[0].children)))
        else:
            self.forests.append((name, parts))

    def lower_lobe(self, name: str, parts: list[Chain], conf: float) -> None:
        """As :meth:`lobe`; without a stem of its own, the basal trunk continues the lower lobe bronchus.

        (Boyden: past its superior segmental bronchus the lower lobe bronchus continues as the
        basal trunk.) So every lower lobe has a named bronchus where the parse has its trunk.
        """
        if len(parts) == 1 and len(parts[0].children) >= 2 and self.runs_posterior(parts[0]):
            # the parse ran a short lower lobe bronchus into its superior segment, which then
            # holds most of the branch; the basal bronchi leave it
            superior_name = "RB6" if name == "RLL" else "LB6"
            self.put(parts[0], superior_name, 0.6)
            self.warnings.append(f"{name} has no branch of its own: the parse joined it to {superior_name}.")
            self.forests.append((f"{name}basal", list(parts[0].children)))
            return
        if len(parts) > 1:
            superior = max(parts, key=lambda k: float(self.c(k)[1] + self.c(k)[2]))  # posterior-superior
            rest = [k for k in parts if k is not superior]
            trunk = max(rest, key=self.g.chain_volume)
            if len(trunk.children) >= 2:
                self.put(trunk, name, min(conf, 0.7))
                self.forests.append((name, [k for k in parts if k is not trunk] + list(trunk.children)))
                return
        self.lobe(name, parts, conf)

    # -- segments ----------------------------------------------------------------------------
    def segments(self) -> None:
        solver = SegmentSolver(self.g)
        for key, roots in self.forests:
            for chain, name, conf in solver.solve(key, roots):
                if name is None:
                    continue
                self.put(chain, name, conf)
        for key, names in solver.stems.items():
            for chain in names:
                if chain.head not in self.auto:
                    self.put(chain, key, 0.6)


def label_tree(
    tree: AirwayTree,
    *,
    geometry: Geometry | None = None,
    lobes: Any = None,
    corrections: Mapping[int, str | None] | None = None,
    lobe_values: Mapping[int, str] | None = None,
    segments: bool = True,
) -> TreeNames:
    """Name the branches of ``tree`` (see the module doc).

    ``geometry``: the grid the tree was parsed on (spacing, origin, direction), to read directions
    in the patient frame; None takes the tree's spacing with identity direction (index axes x, y, z
    = patient left, posterior, superior). ``lobes``: optional lobe label volume (``LabelVolume`` or
    array on the tree's grid) with values ``lobe_values`` (default 1..5 = RUL, RML, RLL, LUL, LLL);
    a branch below the lobar bronchi then takes the lobe most of its voxels lie in. ``corrections``:
    branch id -> name (None = unnamed) set by the user; their descendants follow.

    The trachea is the branch at the top of the airway; where the parse's root (its largest
    region) is another branch, the tree is read from the trachea down (``TreeNames.parents``).
    Notes on what the parse lacks (a main bronchus without a branch of its own, ...) are in
    ``TreeNames.warnings``.
    """
    if tree.n_branches == 0:
        raise InputError("The airway tree has no branches.", "Check that the mask holds an airway.")
    lab = _Labeller(tree, geometry)
    lab.run()
    if segments:
        lab.segments()
    names = TreeNames({}, list(lab.warnings), lab.g.parents())
    for b in lab.g.order:
        nm, conf = lab.auto.get(b, (None, 0.0))
        names.names[b] = BranchName(nm, round(conf, 4) if nm else 0.0, None, None)
    for br in tree.branches:  # branches the walk from the trachea does not reach
        names.names.setdefault(br.id, BranchName(None, 0.0, None, None))
    names._inherit(tree, lab.g.order)
    if lobes is not None:
        _apply_lobe_mask(tree, names, lobes, lobe_values or DEFAULT_LOBE_VALUES, lab.g.order)
    for b, nm in (corrections or {}).items():
        if int(b) in names.names:
            names = names.corrected(tree, int(b), nm)
        else:
            names.warnings.append(f"Correction of branch {b} dropped: the tree has no such branch.")
    return names


def _apply_lobe_mask(
    tree: AirwayTree, names: TreeNames, lobes: Any, values: Mapping[int, str], order: Sequence[int]
) -> None:
    """Below the lobar bronchi, a branch's lobe is the lobe most of its voxels lie in."""
    arr = np.asarray(getattr(lobes, "array", lobes))
    if arr.shape != tuple(tree.shape):
        raise InputError(
            f"The lobe mask's shape {arr.shape} is not the airway's {tuple(tree.shape)}.",
            "Give a lobe mask on the airway mask's grid (resample it first).",
        )
    sub = arr[tree.slices]
    bm = tree.branch_map
    inside = bm > 0
    codes = sorted(values)
    lut = np.zeros(max(codes) + 2 if codes else 1, dtype=np.int64)
    for k, code in enumerate(codes):
        lut[code] = k + 1
    vals = sub[inside].astype(np.int64)
    vals = np.where((vals >= 0) & (vals < len(lut)), lut[np.clip(vals, 0, len(lut) - 1)], 0)
    ids = bm[inside].astype(np.int64)
    n = tree.n_branches
    counts = np.zeros((n + 1, len(codes) + 1), dtype=np.int64)
    np.add.at(counts, (ids, vals), 1)
    above = {"Trachea", "RMB", "LMB", "BronInt"}
    mask_lobe: dict[int, str] = {}
    for b in order:
        row = counts[b, 1:]
        if row.sum() == 0 or row.sum() < 0.5 * counts[b].sum():
            continue
        mask_lobe[b] = values[codes[int(np.argmax(row))]]
    parent = names.parents or {b.id: b.parent for b in tree.branches}
    for b in order:
        cur = names.names[b]
        if cur.name in above:
            continue
        p = parent.get(b)
        pn = names.names.get(p) if p else None
        lobe = mask_lobe.get(b) or (pn.lobe if pn else None) or cur.lobe
        if lobe == cur.lobe:
            continue
        keep = cur.name if lobe_of_name(cur.name) in (None, lobe) else None
        segment = keep if is_segmental(keep) else (pn.segment if pn and pn.lobe == lobe else None)
        names.names[b] = BranchName(keep, cur.confidence if keep else 0.0, lobe, segment, cur.source)
