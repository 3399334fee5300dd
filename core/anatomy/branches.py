"""Where each branch of a parsed tree lies in the patient, and which branches are one bronchus.

Everything is in world millimetres, LPS as ITK (+x patient left, +y posterior, +z superior), so
the rules of the labeller read the same on any grid: a flipped or RAS-stored volume gives the same
world points. The parse splits one anatomical bronchus into several branches wherever a small
side twig (a skeleton spur, a leak, a cut airway) leaves it; a :class:`Chain` joins them again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from core.errors import InputError
from core.tree import AirwayTree
from core.volume import Geometry

FloatArray = npt.NDArray[np.float64]

# A child whose subtree holds less than this share of its largest sibling's airway volume is a twig
# of the bronchus it leaves, not a branch of the anatomy (the smallest real segmental bronchi,
# RB7 beside the basal trunk, hold about a tenth).
MINOR_FRACTION = 0.04


@dataclass
class Chain:
    """One anatomical bronchus: parsed branches ``ids`` (proximal first) and the twigs that leave it."""

    ids: list[int]
    twigs: list[int] = field(default_factory=list)
    children: list[Chain] = field(default_factory=list)

    @property
    def head(self) -> int:
        return self.ids[0]

    @property
    def end(self) -> int:
        return self.ids[-1]


class TreeGeometry:
    """Per-branch world points, subtree centroids and sizes, and the chains, of one tree."""

    def __init__(self, tree: AirwayTree, geometry: Geometry | None = None) -> None:
        if geometry is None:
            sz, sy, sx = tree.spacing_zyx
            geometry = Geometry(spacing=(sx, sy, sz))
        elif not np.allclose(geometry.spacing_zyx, tree.spacing_zyx, rtol=1e-3):
            raise InputError(
                f"The tree was parsed with spacing {tuple(tree.spacing_zyx)} (z y x) but the geometry given has "
                f"{tuple(geometry.spacing_zyx)}.",
                "Pass the geometry of the volume the tree was parsed from.",
            )
        self.tree = tree
        self.geometry = geometry
        n = tree.n_branches
        self.n = n
        self.points = np.asarray(geometry.index_to_world(tree.centreline_zyx), dtype=np.float64).reshape(-1, 3)
        self.point_branch = np.asarray(tree.centreline_branch, dtype=np.int64)
        self.root = self._top_branch()
        self.parent = np.zeros(n + 1, dtype=np.int64)
        self.children: list[list[int]] = [[] for _ in range(n + 1)]
        self._reroot()
        cnt = np.bincount(self.point_branch, minlength=n + 1).astype(np.float64)[: n + 1]
        sums = np.stack(
            [np.bincount(self.point_branch, weights=self.points[:, k], minlength=n + 1)[: n + 1] for k in range(3)],
            axis=1,
        )
        vol = np.zeros(n + 1)
        for b in tree.branches:
            vol[b.id] = b.volume_mm3
        self.sub_count = cnt.copy()
        self.sub_sum = sums.copy()
        self.sub_volume = vol.copy()
        for k in reversed(self.order):
            p = int(self.parent[k])
            if p:
                self.sub_count[p] += self.sub_count[k]
                self.sub_sum[p] += self.sub_sum[k]
                self.sub_volume[p] += self.sub_volume[k]
        self.own_count = cnt
        self.own_sum = sums
        self._proximal: dict[int, FloatArray] = {}

    def _top_branch(self) -> int:
        """The trachea: the branch with most airway in the top 10 mm of the airway (patient superior).

        The parse calls the largest region the trachea; on coarse grids a blob of the central
        bronchi can outgrow a short trachea, while the trachea always runs up to the top of the
        airway in a chest CT. Voxels, not centrelines, decide: thinning shortens the trachea's
        centreline by about its radius, so an apical bronchus's can reach higher.
        """
        bm = self.tree.branch_map
        idx = np.nonzero(bm)
        if len(idx[0]) == 0:
            return self.tree.trachea
        g = self.geometry
        # world z of each voxel: row 2 of (direction * spacing) applied to (x, y, z) indices
        row = g.direction_matrix[2] * np.asarray(g.spacing)
        start = self.tree.box.start
        z = g.origin[2] + row[0] * (idx[2] + start[2]) + row[1] * (idx[1] + start[1]) + row[2] * (idx[0] + start[0])
        top = z >= float(z.max()) - 10.0
        counts = np.bincount(bm[idx][top].astype(np.int64), minlength=self.n + 1)
        best = int(np.argmax(counts))
        if counts[self.tree.trachea] >= 0.5 * counts[best]:
            return self.tree.trachea
        return best

    def _reroot(self) -> None:
        """Parents and children seen from :attr:`root` (the parse's own where its trachea is the root)."""
        adj: list[list[int]] = [[] for _ in range(self.n + 1)]
        for br in self.tree.branches:
            if br.parent:
                adj[br.id].append(br.parent)
                adj[br.parent].append(br.id)
        order: list[int] = []
        seen = np.zeros(self.n + 1, dtype=bool)
        roots = [self.root] + [b.id for b in self.tree.branches if not b.parent and b.id != self.root]
        for r in roots:
            if seen[r]:
                continue
            seen[r] = True
            k = len(order)
            order.append(r)
            while k < len(order):
                b = order[k]
                k += 1
                for c in sorted(adj[b]):
                    if not seen[c]:
                        seen[c] = True
                        self.parent[c] = b
                        self.children[b].append(c)
                        order.append(c)
        self.order = order

    def parents(self) -> dict[int, int | None]:
        return {b: (int(self.parent[b]) or None) for b in range(1, self.n + 1)}

    # -- positions --------------------------------------------------------------
    def branch_points(self, b: int) -> FloatArray:
        pts: FloatArray = self.points[self.point_branch == b]
        return pts

    def centroid(self, b: int) -> FloatArray:
        """Mean world point of the centrelines of ``b`` and all its descendants."""
        c: FloatArray = self.sub_sum[b] / max(self.sub_count[b], 1.0)
        return c

    def centroid_of(self, ids: list[int]) -> FloatArray:
        s = np.sum([self.sub_sum[b] for b in ids], axis=0)
        c = float(np.sum([self.sub_count[b] for b in ids]))
        out: FloatArray = np.asarray(s, dtype=np.float64) / max(c, 1.0)
        return out

    def proximal(self, b: int) -> FloatArray:
        """Centreline point of ``b`` nearest its parent's centreline (the trachea: its most superior point)."""
        if b in self._proximal:
            return self._proximal[b]
        pts = self.branch_points(b)
        if len(pts) == 0:
            out = self.centroid(b)
        else:
            p = int(self.parent[b])
            ppts = self.branch_points(p) if p else np.zeros((0, 3))
            if len(ppts) == 0:
                out = pts[int(np.argmax(pts[:, 2]))]
            else:
                from scipy.spatial import cKDTree

                d, _ = cKDTree(ppts).query(pts)
                out = pts[int(np.argmin(d))]
        self._proximal[b] = np.asarray(out, dtype=np.float64)
        return self._proximal[b]

    def distal(self, b: int) -> FloatArray:
        """Where ``b`` ends: the mean of its children's proximal points, or its point farthest from its start."""
        kids = self.children[b]
        if kids:
            out: FloatArray = np.mean([self.proximal(c) for c in kids], axis=0)
            return out
        pts = self.branch_points(b)
        if len(pts) == 0:
            return self.centroid(b)
        start = self.proximal(b)
        far: FloatArray = pts[int(np.argmax(np.linalg.norm(pts - start, axis=1)))]
        return far

    def subtree(self, b: int) -> list[int]:
        out = [b]
        k = 0
        while k < len(out):
            out.extend(self.children[out[k]])
            k += 1
        return out

    # -- chains -------------------------------------------------------------------
    def major_children(self, b: int) -> list[int]:
        kids = self.children[b]
        if len(kids) < 2:
            return list(kids)
        biggest = max(self.sub_volume[c] for c in kids)
        return [c for c in kids if self.sub_volume[c] >= MINOR_FRACTION * biggest]

    def chain(self, b: int, depth: int = 64) -> Chain:
        """The bronchus that starts at ``b``, its sub-bronchi to ``depth`` levels below."""
        ch = Chain([b])
        while True:
            major = self.major_children(ch.end)
            ch.twigs.extend(c for c in self.children[ch.end] if c not in major)
            if len(major) != 1:
                break
            ch.ids.append(major[0])
        if depth > 0:
            ch.children = [self.chain(c, depth - 1) for c in self.major_children(ch.end)]
        return ch

    def chain_volume(self, ch: Chain) -> float:
        return float(self.sub_volume[ch.head])
