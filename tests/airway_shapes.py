"""Hand-built airway trees shared by the tree, metrics and regions tests.

Round tubes only: 3D thinning handles them, unlike thin even-width boxes.
"""

from __future__ import annotations

import numpy as np

# Y tree in voxel coords (z, y, x): trachea (gen 0) -> 2 main bronchi (gen 1)
# -> 4 terminal branches (gen 2); 7 branches. The first terminal branch ("A")
# is the one the tests cut.
Y_SEGMENTS = [
    ((4, 40, 40), (26, 40, 40), 4.0),
    ((26, 40, 40), (44, 40, 22), 3.0),
    ((26, 40, 40), (44, 40, 58), 3.0),
    ((44, 40, 22), (68, 24, 14), 2.5),
    ((44, 40, 22), (68, 56, 14), 2.5),
    ((44, 40, 58), (68, 24, 66), 2.5),
    ((44, 40, 58), (68, 56, 66), 2.5),
]
Y_SHAPE = (74, 80, 80)
SPACING = (0.5, 0.6, 0.6)


def tube(shape, segments) -> np.ndarray:
    """Union of round tubes, each segment ``(p0, p1, radius)`` in voxel coords (z, y, x)."""
    grid = np.stack(np.indices(shape), axis=-1).astype(float)
    out = np.zeros(shape, dtype=bool)
    for p0, p1, r in segments:
        p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
        d = p1 - p0
        t = np.clip(((grid - p0) @ d) / (d @ d), 0.0, 1.0)
        out |= np.linalg.norm(grid - (p0 + t[..., None] * d), axis=-1) <= r
    return out


def error_region(
    key: str,
    kind: str = "FP",
    category: str = "leakage",
    voxels: int = 1,
    *,
    voxel_mm3: float = 1.0,
    generation: int | None = None,
    centroid=(1.0, 1.0, 1.0),
    focus=None,
    bbox=((0, 3), (0, 3), (0, 3)),
):
    """A hand-made core.regions.ErrorRegion (for views and panels that only read its fields)."""
    from core.regions import ErrorRegion

    return ErrorRegion(
        id=key,
        kind=kind,
        category=category,
        voxels=voxels,
        volume_mm3=voxels * voxel_mm3,
        centroid_zyx=tuple(float(v) for v in centroid),
        centroid_mm=(0.0, 0.0, 0.0),
        bbox=bbox,
        nearest_branch=None,
        nearest_generation=generation,
        max_distance_mm=0.0,
        length_mm=1.0,
        elongation=1.0,
        centreline_voxels=0,
        key=key,
        focus_zyx=focus,
    )
