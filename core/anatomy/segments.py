"""Segmental bronchi: match the bronchi below a lobar bronchus to a model of its segments.

After Tschirren et al. (2005), who match a tree to a model tree, simplified to what a lobe needs:
the bronchi below a lobar stem (a "forest": its divisions) are cut at every antichain down to
:data:`MAX_DEPTH` levels that has as many members as a variant of the lobe's model has segments
(textbook variants: merged LB7+8 and RB9+10, absent RB7, one missing segment at a price). For each
such cut, each member's direction (from the centroid of the whole forest to the centroid of the
member's subtree, in the patient frame) is matched to the segments' textbook directions by
``scipy.optimize.linear_sum_assignment`` (cost 1 - cos angle). The cheapest (cut, variant,
assignment) names the segments. A member's confidence comes from the margin between that
solution's cost and the cheapest solution that names the member otherwise; under
:data:`ABSTAIN_MARGIN` it is left unnamed. A trifurcation parsed as two bifurcations joined by a
short branch needs nothing special: the cut passes below the short branch.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from core.anatomy.branches import Chain, TreeGeometry

Vec = tuple[float, float, float]  # (lateral, anterior, superior) in the patient frame
FloatArray = npt.NDArray[np.float64]

MAX_DEPTH = 4  # levels below the lobar stem a segmental bronchus may start (RB9, RB10: 3-4)
MAX_CUTS = 20000  # cuts per forest before the depth is reduced (speed)
ABSTAIN_MARGIN = 0.01  # mean (1 - cos) between the best naming and the best other one
MISSING_COST = 0.5  # a segment the model expects and the tree lacks (not segmented, cut off)
CONF_SCALE = 0.05
# A cut may hold up to MAX_EXTRA bronchi more than the model has segments (an extra division, a
# parse artefact): they stay unnamed, at a price that grows with the share of the lobe they hold.
MAX_EXTRA = 2
EXTRA_COST = 0.15
EXTRA_SHARE_COST = 2.0
# A member holding more than OVERSIZE x an even share of the lobe's airway pays for the excess.
OVERSIZE = 1.6
OVERSIZE_COST = 1.0


@dataclass(frozen=True)
class Variant:
    segments: tuple[tuple[str, Vec], ...]
    cost: float  # prior: 0 for the textbook pattern


# Directions of each segment's territory from the centre of its lobe's (or division's) bronchi.
_RUL = (("RB1", (0.0, 0.0, 1.0)), ("RB2", (0.3, -1.0, 0.2)), ("RB3", (0.3, 1.0, -0.2)))
_RML = (("RB4", (1.0, -0.3, 0.2)), ("RB5", (-1.0, 0.3, -0.3)))
_RB6 = ("RB6", (0.0, -0.6, 1.0))
_RB7 = ("RB7", (-1.0, 0.3, -0.3))
_RB8 = ("RB8", (0.4, 1.0, -0.4))
_RB9 = ("RB9", (1.0, 0.0, -0.5))
_RB10 = ("RB10", (0.0, -1.0, -0.5))
_RB910 = ("RB9+10", (0.6, -0.6, -0.6))
_LUP = (("LB1+2", (0.0, -0.5, 1.0)), ("LB3", (0.0, 1.0, -0.3)))
_LING = (("LB4", (1.0, 0.3, 0.0)), ("LB5", (-0.3, 0.5, -1.0)))
_LB6 = ("LB6", (0.0, -0.6, 1.0))
_LB78 = ("LB7+8", (-0.2, 1.0, -0.4))
_LB7 = ("LB7", (-1.0, 0.3, -0.3))
_LB8 = ("LB8", (0.4, 1.0, -0.4))
_LB9 = ("LB9", (1.0, 0.0, -0.5))
_LB10 = ("LB10", (0.0, -1.0, -0.5))
_LB910 = ("LB9+10", (0.6, -0.6, -0.6))

MODELS: dict[str, tuple[Variant, ...]] = {
    "RUL": (Variant(_RUL, 0.0),),
    "RML": (Variant(_RML, 0.0),),
    "RLL": (
        Variant((_RB6, _RB7, _RB8, _RB9, _RB10), 0.0),
        Variant((_RB6, _RB8, _RB9, _RB10), 0.02),  # RB7 absent (or too small to segment)
        Variant((_RB6, _RB7, _RB8, _RB910), 0.04),
        Variant((_RB6, _RB8, _RB910), 0.06),
    ),
    # the basal trunk alone, where the superior segment is named already
    "RLLbasal": (
        Variant((_RB7, _RB8, _RB9, _RB10), 0.0),
        Variant((_RB8, _RB9, _RB10), 0.02),
        Variant((_RB7, _RB8, _RB910), 0.04),
        Variant((_RB8, _RB910), 0.06),
    ),
    "LLLbasal": (
        Variant((_LB78, _LB9, _LB10), 0.0),
        Variant((_LB7, _LB8, _LB9, _LB10), 0.02),
        Variant((_LB78, _LB910), 0.05),
    ),
    "LULupper": (Variant(_LUP, 0.0),),
    "Lingula": (Variant(_LING, 0.0),),
    "LLL": (
        Variant((_LB6, _LB78, _LB9, _LB10), 0.0),
        Variant((_LB6, _LB7, _LB8, _LB9, _LB10), 0.02),
        Variant((_LB6, _LB78, _LB910), 0.05),
    ),
}


def _unit(v: FloatArray) -> FloatArray:
    out: FloatArray = v / max(float(np.linalg.norm(v)), 1e-9)
    return out


class SegmentSolver:
    def __init__(self, g: TreeGeometry) -> None:
        self.g = g
        self.stems: dict[str, list[Chain]] = {}

    def _frame(self, v: FloatArray, side: str) -> FloatArray:
        """LPS world vector -> (lateral, anterior, superior)."""
        lat = -v[0] if side == "R" else v[0]
        return np.array([lat, -v[1], v[2]])

    def solve(self, key: str, roots: list[Chain]) -> list[tuple[Chain, str | None, float]]:
        variants = MODELS.get(key)
        if not variants or not roots:
            return []
        side = "R" if key.startswith("R") else "L"  # "Lingula", "LULupper", "LLLbasal": left
        kmax = max(len(v.segments) for v in variants) + MAX_EXTRA
        depth = MAX_DEPTH
        while True:
            cuts = _forest_cuts(roots, depth, kmax)
            if len(cuts) <= MAX_CUTS or depth == 1:
                break
            depth -= 1
        centre = self.g.centroid_of([r.head for r in roots])
        dirs: dict[int, FloatArray] = {}
        models = [
            (v, np.array([_unit(np.asarray(d, dtype=np.float64)) for _, d in v.segments]), [n for n, _ in v.segments])
            for v in variants
        ]
        total_volume = max(sum(self.g.chain_volume(r) for r in roots), 1e-9)
        extra_cost: dict[int, float] = {}
        solutions: list[tuple[float, dict[int, str]]] = []
        from scipy.optimize import linear_sum_assignment

        for cut in cuts:
            for ch in cut:
                if ch.head not in dirs:
                    dirs[ch.head] = _unit(self._frame(self.g.centroid(ch.head) - centre, side))
                    share = self.g.chain_volume(ch) / total_volume
                    extra_cost[ch.head] = EXTRA_COST + EXTRA_SHARE_COST * share
            u = np.array([dirs[ch.head] for ch in cut])
            shares = np.array([self.g.chain_volume(ch) / total_volume for ch in cut])
            for variant, d, names in models:
                full = len(names)
                extra = len(cut) - full
                if extra > MAX_EXTRA or extra < -1 or len(cut) < 2:
                    continue
                cost = 1.0 - u @ d.T
                if extra > 0:
                    dummy = np.array([[extra_cost[ch.head]] * extra for ch in cut])
                    cost = np.concatenate([cost, dummy], axis=1)
                # a segment holding far more of the lobe than its share (a whole basal trunk
                # named as one segment) is implausible
                big = np.maximum(0.0, shares - OVERSIZE * (1.0 / full)) * OVERSIZE_COST
                cost[:, :full] += big[:, None]
                rows, cols = linear_sum_assignment(cost)
                total = float(cost[rows, cols].sum()) + MISSING_COST * max(-extra, 0)
                total = total / full + variant.cost
                named = {cut[r].head: names[c] for r, c in zip(rows, cols) if c < full}
                solutions.append((total, named))
        if not solutions:
            return []
        solutions.sort(key=lambda s: s[0])
        best_cost, best = solutions[0]
        by_head = {ch.head: ch for ch in _all_chains(roots)}
        out: list[tuple[Chain, str | None, float]] = []
        related = _lineages(roots)
        for head, name in best.items():
            # the best solution that names this bronchus otherwise; one that gives the same name
            # to a bronchus above or below it (a cut one level deeper or shallower) agrees with it
            near = related[head]
            alt = next(
                (c for c, m in solutions[1:] if not any(h in near and n == name for h, n in m.items())),
                best_cost + 1.0,
            )
            margin = alt - best_cost
            conf = 1.0 - math.exp(-margin / CONF_SCALE)
            out.append((by_head[head], name if margin >= ABSTAIN_MARGIN else None, conf))
        self._stems(key, roots, best)
        return out

    def _stems(self, key: str, roots: list[Chain], best: dict[int, str]) -> None:
        """The lower lobes' basal trunk: the stem whose divisions are all basal segments."""
        if key not in ("RLL", "LLL"):
            return
        superior = "RB6" if key == "RLL" else "LB6"
        for r in roots:
            if r.head in best:
                continue
            below = [best[h] for h in (c.head for c in _all_chains([r])) if h in best]
            if len(below) >= 2 and superior not in below:
                self.stems.setdefault(f"{key}basal", []).append(r)


def _all_chains(roots: list[Chain]) -> list[Chain]:
    out: list[Chain] = []
    stack = list(roots)
    while stack:
        ch = stack.pop()
        out.append(ch)
        stack.extend(ch.children)
    return out


def _lineages(roots: list[Chain]) -> dict[int, set[int]]:
    """Chain head -> heads of the chain itself, its ancestors and its descendants in the forest."""
    out: dict[int, set[int]] = {}

    def walk(ch: Chain, above: list[int]) -> set[int]:
        below: set[int] = set()
        for c in ch.children:
            below |= walk(c, [*above, ch.head])
        out[ch.head] = {ch.head, *above, *below}
        return {ch.head, *below}

    for r in roots:
        walk(r, [])
    return out


def _cuts(ch: Chain, depth: int, kmax: int) -> list[tuple[Chain, ...]]:
    res: list[tuple[Chain, ...]] = [(ch,)]
    if depth > 0 and ch.children:
        res.extend(_forest_cuts(ch.children, depth - 1, kmax))
    return res


def _forest_cuts(roots: list[Chain], depth: int, kmax: int) -> list[tuple[Chain, ...]]:
    combos: list[tuple[Chain, ...]] = [()]
    for r in roots:
        options = _cuts(r, depth, kmax)
        combos = [a + b for a, b in itertools.product(combos, options) if len(a) + len(b) <= kmax]
    return combos
