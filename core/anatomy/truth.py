"""True names on a parsed tree: the names of a phantom's (or a textbook tree's) tubes, by position.

A parsed branch takes the name of the tube most of its centreline points lie nearest to (world mm,
distance from the point to the tube's axis segment). Tubes without a name inherit nothing here: a
branch whose majority tube is unnamed has no true name, but keeps the true lobe and segment of
the named tube above it (``truth_lobes``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from core.anatomy.names import is_segmental, lobe_of_name
from core.tree import AirwayTree
from core.volume import Geometry

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TruthName:
    name: str | None  # the majority tube's own name
    lobe: str | None  # that tube's lobe, or its nearest named ancestor's
    segment: str | None  # that tube's segmental ancestor (itself included)
    tube: int  # row index of the majority tube
    share: float  # share of the branch's centreline points nearest that tube


def _row_points(rows: Sequence[Mapping[str, Any]]) -> tuple[FloatArray, FloatArray]:
    a = np.array([[float(r[f"start_{k}_mm"]) for k in "xyz"] for r in rows], dtype=np.float64)
    b = np.array([[float(r[f"end_{k}_mm"]) for k in "xyz"] for r in rows], dtype=np.float64)
    return a, b


def nearest_tube(points: FloatArray, a: FloatArray, b: FloatArray, chunk: int = 4096) -> npt.NDArray[np.int64]:
    """Index of the segment ``a[i]``-``b[i]`` nearest each point (world mm)."""
    out = np.zeros(len(points), dtype=np.int64)
    d = b - a
    dd = np.maximum((d * d).sum(axis=1), 1e-12)
    for s in range(0, len(points), chunk):
        p = points[s : s + chunk, None, :] - a[None, :, :]
        t = np.clip((p * d[None]).sum(axis=2) / dd[None], 0.0, 1.0)
        dist = np.linalg.norm(p - t[..., None] * d[None], axis=2)
        out[s : s + chunk] = np.argmin(dist, axis=1)
    return out


def tube_lineage(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str | None, str | None]]:
    """(lobe, segment) of each tube from its own name or its nearest named ancestor's."""
    by_id = {int(r["id"]): k for k, r in enumerate(rows)}
    out: list[tuple[str | None, str | None]] = []
    for r in rows:
        lobe = segment = None
        cur: Mapping[str, Any] | None = r
        while cur is not None:
            nm = str(cur.get("name") or "")
            if nm and lobe is None:
                lobe = lobe_of_name(nm)
            if nm and segment is None and is_segmental(nm):
                segment = nm
            if lobe is not None and segment is not None:
                break
            k = by_id.get(int(cur.get("parent", -1)))
            cur = rows[k] if k is not None else None
        out.append((lobe, segment))
    return out


def truth_names(
    tree: AirwayTree, rows: Sequence[Mapping[str, Any]], geometry: Geometry | None = None
) -> dict[int, TruthName]:
    """Branch id -> the true name of the tube it lies along (rows: a phantom's branch table)."""
    if geometry is None:
        sz, sy, sx = tree.spacing_zyx
        geometry = Geometry(spacing=(sx, sy, sz))
    rows = [r for r in rows if not r.get("omitted")]
    pts = np.asarray(geometry.index_to_world(tree.centreline_zyx), dtype=np.float64).reshape(-1, 3)
    a, b = _row_points(rows)
    near = nearest_tube(pts, a, b)
    lineage = tube_lineage(rows)
    out: dict[int, TruthName] = {}
    cb = np.asarray(tree.centreline_branch)
    for br in tree.branches:
        mine = near[cb == br.id]
        if len(mine) == 0:
            continue
        counts = np.bincount(mine)
        k = int(np.argmax(counts))
        nm = str(rows[k].get("name") or "") or None
        lobe, segment = lineage[k]
        out[br.id] = TruthName(nm, lobe, segment, k, float(counts[k] / len(mine)))
    return out
