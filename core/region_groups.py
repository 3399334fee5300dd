"""Review items: error regions grouped so a real case is reviewable.

On a real pair most error regions are one- to three-voxel fragments along the
reference surface (thousands on an ATM'22 case). Boundary fragments
(``boundary_dilation``, ``boundary_miss``) of one kind that touch the same
reference branch form one group ("boundary of branch 57: 14 fragments,
9.1 mm³"); every missed branch, candidate branch and leakage stays an item of
its own, because each changes the tree. Every region lands in exactly one
group.

``review`` marks the items shown by default: every single item, and boundary
groups of at least ``boundary_review_min_mm3`` (``resources/presets/
review_groups.json``). Groups come in review priority: missed branch,
candidate branch, leakage, then boundary groups by size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SINGLE_CATEGORIES = ("missed_branch", "candidate_branch", "leakage")
BOUNDARY_CATEGORIES = ("boundary_dilation", "boundary_miss")
PRIORITY = {c: i for i, c in enumerate(SINGLE_CATEGORIES)}
CATEGORY_TEXT = {
    "missed_branch": "missed branch",
    "candidate_branch": "candidate branch",
    "leakage": "leakage",
    "boundary_dilation": "boundary",
    "boundary_miss": "boundary",
}


@dataclass
class RegionGroup:
    key: str
    kind: str
    category: str
    voxels: int
    volume_mm3: float
    branch: int | None
    generation: int | None
    regions: list[str]  # region ids, largest first
    review: bool
    bbox: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # union, half-open (z, y, x)
    centroid_zyx: tuple[float, float, float]  # voxel-weighted
    indices: list[int] = field(default_factory=list)  # positions in the regions list

    @property
    def is_single(self) -> bool:
        return self.category not in BOUNDARY_CATEGORIES

    def title(self) -> str:
        what = CATEGORY_TEXT.get(self.category, self.category.replace("_", " "))
        where = f"branch {self.branch}" if self.branch is not None else "no branch"
        if self.is_single:
            return f"{what} at {where} ({self.regions[0]}): {self.volume_mm3:.1f} mm³"
        n = len(self.regions)
        return f"{self.kind} {what} of {where}: {n} fragment{'s' if n != 1 else ''}, {self.volume_mm3:.1f} mm³"

    def label(self) -> str:
        """Short text for a table cell (the title is the long form)."""
        where = f"br. {self.branch}" if self.branch is not None else "no branch"
        if self.is_single:
            return f"{self.regions[0]} · {where}"
        return f"{self.kind} {where} · {len(self.regions)} part{'s' if len(self.regions) != 1 else ''}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "category": self.category,
            "voxels": self.voxels,
            "volume_mm3": self.volume_mm3,
            "branch": self.branch,
            "generation": self.generation,
            "regions": list(self.regions),
            "review": self.review,
            "title": self.title(),
            "bbox": [list(b) for b in self.bbox],
            "centroid_zyx": list(self.centroid_zyx),
        }


def review_settings() -> dict[str, Any]:
    from core.resources import load_json_resource

    return load_json_resource("presets", "review_groups.json")


def _attr(region: Any, name: str, default: Any = None) -> Any:
    if isinstance(region, dict):
        return region.get(name, default)
    return getattr(region, name, default)


def _region_key(region: Any) -> str:
    # issue 12 gives regions a stable ``key``; the id is the fallback
    return str(_attr(region, "key") or _attr(region, "id"))


def group_regions(regions: Sequence[Any], boundary_review_min_mm3: float | None = None) -> list[RegionGroup]:
    """Groups over ``regions`` (core.regions.ErrorRegion or their dicts), in review order."""
    if boundary_review_min_mm3 is None:
        boundary_review_min_mm3 = float(review_settings()["boundary_review_min_mm3"])
    buckets: dict[tuple[Any, ...], list[int]] = {}
    for i, r in enumerate(regions):
        cat = str(_attr(r, "category"))
        k: tuple[Any, ...]
        if cat in BOUNDARY_CATEGORIES:
            k = (str(_attr(r, "kind")), cat, _attr(r, "nearest_branch"))
        else:
            k = ("single", i)
        buckets.setdefault(k, []).append(i)
    groups = []
    for idx in buckets.values():
        members = sorted(idx, key=lambda i: -int(_attr(regions[i], "voxels")))
        rs = [regions[i] for i in members]
        first = rs[0]
        kind, cat = str(_attr(first, "kind")), str(_attr(first, "category"))
        vox = np.array([int(_attr(r, "voxels")) for r in rs], dtype=float)
        vol = float(sum(float(_attr(r, "volume_mm3")) for r in rs))
        boxes = np.array([[list(b) for b in _attr(r, "bbox")] for r in rs], dtype=np.int64)
        lo, hi = boxes[:, :, 0].min(axis=0), boxes[:, :, 1].max(axis=0)
        box = ((int(lo[0]), int(hi[0])), (int(lo[1]), int(hi[1])), (int(lo[2]), int(hi[2])))
        cents = np.array([list(_attr(r, "centroid_zyx")) for r in rs], dtype=float)
        cz, cy, cx = (float(v) for v in (cents * vox[:, None]).sum(axis=0) / max(vox.sum(), 1.0))
        centroid = (cz, cy, cx)
        branch = _attr(first, "nearest_branch")
        gens = [g for g in (_attr(r, "nearest_generation") for r in rs) if g is not None]
        single = cat not in BOUNDARY_CATEGORIES  # unknown categories are shown, never merged
        key = (
            f"{kind}:{cat}:{_region_key(first)}"
            if single
            else f"{kind}:{cat}:branch-{branch if branch is not None else 'none'}"
        )
        groups.append(
            RegionGroup(
                key=key,
                kind=kind,
                category=cat,
                voxels=int(vox.sum()),
                volume_mm3=vol,
                branch=None if branch is None else int(branch),
                generation=min(gens) if gens else None,
                regions=[str(_attr(r, "id")) for r in rs],
                review=single or vol >= boundary_review_min_mm3,
                bbox=box,
                centroid_zyx=centroid,
                indices=members,
            )
        )
    return sort_groups(groups)


def sort_groups(groups: list[RegionGroup]) -> list[RegionGroup]:
    """Review priority: missed branch, candidate branch, leakage, then boundary; larger first, then key."""
    return sorted(groups, key=lambda g: (PRIORITY.get(g.category, len(PRIORITY)), -g.volume_mm3, g.key))


def group_of_region(groups: Sequence[RegionGroup], region_index: int) -> int | None:
    for gi, g in enumerate(groups):
        if region_index in g.indices:
            return gi
    return None


def review_counts(groups: Sequence[RegionGroup]) -> dict[str, int]:
    return {
        "groups": len(groups),
        "review": sum(g.review for g in groups),
        "regions": sum(len(g.regions) for g in groups),
    }


class StableIds:
    """Region ids that survive re-analyses: ``FN-0003`` stays ``FN-0003``.

    core.regions numbers the regions of one analysis by size; after an edit the
    next analysis numbers them again, so an id named another region ("after R,
    FN-0003 becomes FN-0002"). Here an id belongs to a region's content key: a
    key seen before keeps its id, a new key takes the next free number of its
    kind. The first analysis keeps core's numbering (ids in list order).
    One instance per prediction and session.
    """

    def __init__(self) -> None:
        self._ids: dict[str, str] = {}  # content key -> id
        self._next: dict[str, int] = {}  # kind -> next number

    def __len__(self) -> int:
        return len(self._ids)

    def id_of(self, key: str, kind: str) -> str:
        known = self._ids.get(key)
        if known is not None:
            return known
        n = self._next.get(kind, 1)
        self._next[kind] = n + 1
        new = f"{kind}-{n:04d}"
        self._ids[key] = new
        return new

    def assign(self, regions: Sequence[Any]) -> None:
        """Set each region's ``id`` (ErrorRegion, or a dict) to its stable id, in place."""
        for r in regions:
            key = str(_attr(r, "key") or "")
            if not key:
                continue  # no content key: nothing to keep an id by
            new = self.id_of(key, str(_attr(r, "kind")))
            if isinstance(r, dict):
                r["id"] = new
            else:
                r.id = new
