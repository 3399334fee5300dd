"""Name the branches of an airway tree: trachea, main, lobar and segmental bronchi.

Central and lobar names follow Gu et al. (2012), the rules AirQuant adapts, read in the patient
frame (world mm, so any grid orientation gives the same names):

- trachea = the tree's root; carina = where it divides into its two largest subtrees;
- right and left main bronchus by the patient-x position of their subtrees (the steeper one, the
  right, breaks a tie);
- right: the first division of the right main bronchus whose subtree lies highest is the upper
  lobe bronchus (RUL), the other is the bronchus intermedius; its division whose subtree lies most
  anterior-superior (the extreme of z - y in LPS) is the middle lobe bronchus (RML), the rest the
  lower lobe (RLL); where the superior segment (RB6) leaves before the middle lobe, the trunk that
  still holds the middle lobe continues the bronchus intermedius;
- left: the left main bronchus divides into the upper lobe (LUL, the anterior-superior subtree)
  and the lower lobe (LLL); the upper lobe into its upper division and the lingula (the
  inferior-anterior subtree).

Segmental names: :mod:`core.anatomy.segments`. Names are given to :class:`Chain` s (one bronchus
the parse may have cut into pieces at twigs); descendants inherit lobe and segment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from core.anatomy.branches import Chain, TreeGeometry
from core.anatomy.names import LOBES, is_known_name, is_segmental, lobe_of_name
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

    def run(self) -> None:
        g = self.g
        root = g.chain(self.tree.trachea)
        self.put(root, "Trachea", 1.0)
        kids = sorted(root.children, key=g.chain_volume, reverse=True)
        if len(kids) < 2:
            self.warnings.append("The trachea does not divide: no main bronchi named.")
            return
        if len(kids) > 2:
            self.warnings.append(f"The carina divides into {len(kids)} bronchi; the two largest are the main bronchi.")
        a, b = kids[0], kids[1]
        carina = g.distal(root.end)
        ax, bx = self.c(a)[0], self.c(b)[0]
        right, left = (a, b) if ax < bx else (b, a)
        conf = _conf(abs(ax - bx), 15.0)
        # the right main bronchus is the steeper: a disagreement lowers the confidence
        axis = g.distal(root.end) - g.proximal(root.head)
        axis = axis / max(float(np.linalg.norm(axis)), 1e-9)

        def angle(ch: Chain) -> float:
            d = self.c(ch) - carina
            return float(np.degrees(np.arccos(np.clip(np.dot(d, axis) / max(np.linalg.norm(d), 1e-9), -1, 1))))

        if angle(right) > angle(left) + 10.0:
            conf = min(conf, 0.6)
        self.put(right, "RMB", conf)
        self.put(left, "LMB", conf)
        self.right(right)
        self.left(left)

    # -- right lung --------------------------------------------------------------------------
    def right(self, rmb: Chain) -> None:
        kids = list(rmb.children)
        if len(kids) < 2:
            self.warnings.append("The right main bronchus does not divide: no right lobar bronchi named.")
            return
        zs = [self.c(k)[2] for k in kids]
        order = np.argsort(zs)[::-1]
        rul = kids[int(order[0])]
        self.put(rul, "RUL", _conf(zs[int(order[0])] - zs[int(order[1])]))
        self.forests.append(("RUL", list(rul.children)))
        rest = [k for k in kids if k is not rul]
        if len(rest) == 1:
            self.put(rest[0], "BronInt", _conf(zs[int(order[0])] - zs[int(order[1])]))
            self.middle_lower(rest[0], list(rest[0].children))
        else:
            self.middle_lower(None, rest)

    def middle_lower(self, bronint: Chain | None, kids: list[Chain]) -> None:
        if len(kids) < 2:
            self.warnings.append("The bronchus intermedius does not divide: RML and RLL not named.")
            return
        total = sum(self.g.chain_volume(k) for k in kids)

        def score(ch: Chain) -> float:
            c = self.c(ch)
            return float(c[2] - c[1])  # superior + anterior

        scores = [score(k) for k in kids]
        best = int(np.argmax(scores))
        rml = kids[best]
        others = [k for i, k in enumerate(kids) if i != best]
        margin = scores[best] - max(s for i, s in enumerate(scores) if i != best)
        # the superior segment (RB6) left first: the anterior subtree still holds the middle AND
        # the basal lower lobe; it is the bronchus intermedius continued, the middle lobe is its
        # anterior division
        if len(kids) == 2 and len(rml.children) >= 2 and self.g.chain_volume(rml) > 0.5 * total:
            inner = rml.children
            s2 = [score(k) for k in inner]
            b2 = int(np.argmax(s2))
            self.put(rml, "BronInt", 0.7)
            lower_roots = others + [k for i, k in enumerate(inner) if i != b2]
            rml = inner[b2]
            margin = s2[b2] - max(s for i, s in enumerate(s2) if i != b2)
            others = lower_roots
            basal = [k for k in inner if k is not rml]
            self.put(rml, "RML", _conf(margin))
            self.forests.append(("RML", list(rml.children)))
            if len(basal) == 1:
                # the lower lobe bronchus proper starts past the middle lobe's origin
                self.put(basal[0], "RLL", 0.7)
                others = [k for k in others if k is not basal[0]] + list(basal[0].children)
            self.forests.append(("RLL", others))
            return
        self.put(rml, "RML", _conf(margin))
        self.forests.append(("RML", list(rml.children)))
        if len(others) == 1:
            self.put(others[0], "RLL", _conf(margin))
            self.forests.append(("RLL", list(others[0].children)))
        else:
            # RML, RB6 and the basal trunk from one point: the basal trunk continues the lower lobe bronchus
            stem = max(others, key=self.g.chain_volume)
            self.put(stem, "RLL", 0.7)
            self.forests.append(("RLL", [k for k in others if k is not stem] + list(stem.children)))

    # -- left lung -------------------------------------------------------------------------
    def left(self, lmb: Chain) -> None:
        kids = list(lmb.children)
        if len(kids) < 2:
            self.warnings.append("The left main bronchus does not divide: no left lobar bronchi named.")
            return

        def up(ch: Chain) -> float:
            c = self.c(ch)
            return float(c[2] - c[1])  # superior + anterior

        scores = [up(k) for k in kids]
        order = np.argsort(scores)
        lll = kids[int(order[0])]
        margin = scores[int(order[1])] - scores[int(order[0])]
        self.put(lll, "LLL", _conf(margin))
        self.forests.append(("LLL", list(lll.children)))
        rest = [k for k in kids if k is not lll]
        has_stem = len(rest) == 1
        if has_stem:
            lul = rest[0]
            self.put(lul, "LUL", _conf(margin))
            parts = list(lul.children)
        else:
            parts = rest
        if len(parts) < 2:
            return

        def low(ch: Chain) -> float:
            c = self.c(ch)
            return float(-c[2] - c[1])  # inferior + anterior

        s2 = [low(k) for k in parts]
        o2 = np.argsort(s2)[::-1]
        ling = parts[int(o2[0])]
        m2 = s2[int(o2[0])] - s2[int(o2[1])]
        self.put(ling, "Lingula", _conf(m2))
        self.forests.append(("Lingula", list(ling.children)))
        upper = [k for k in parts if k is not ling]
        if len(upper) == 1:
            # without an upper lobe stem (lingula and upper division leave the main bronchus
            # together) the upper division carries the lobe's name
            self.put(upper[0], "LULupper" if has_stem else "LUL", _conf(m2))
            self.forests.append(("LULupper", list(upper[0].children)))
        else:
            self.forests.append(("LULupper", upper))

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
    """
    if tree.n_branches == 0:
        raise InputError("The airway tree has no branches.", "Check that the mask holds an airway.")
    lab = _Labeller(tree, geometry)
    lab.run()
    if segments:
        lab.segments()
    names = TreeNames({}, list(tree.warnings[:0]) + lab.warnings)
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
    parent = {b.id: b.parent for b in tree.branches}
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


def check_names(names: Mapping[int, str | None]) -> None:
    for b, n in names.items():
        if n is not None and not is_known_name(n):
            raise InputError(f"Branch {b}: '{n}' is not a bronchus name.")
