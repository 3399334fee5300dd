"""Shapes of the editing tools, as (box, box-local mask) pairs for :meth:`LabelLayer.write`.

Qt-free so that the brush a view paints and the brush a test checks are one
function. Sizes are radii in voxels (in-plane for the disc).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.box import Box
from core.errors import InputError

AXES = {"axial": 0, "coronal": 1, "sagittal": 2}


def brush(
    shape: Sequence[int],
    centre: Sequence[int],
    radius: float,
    *,
    form: str = "disc",
    orientation: str = "axial",
    spacing_zyx: Sequence[float] | None = None,
    ct: np.ndarray | None = None,
    hu_range: tuple[float, float] | None = None,
) -> tuple[Box, np.ndarray] | None:
    """The voxels a brush covers: a disc in the slice of ``orientation`` or a sphere.

    ``radius`` is in voxels of the finest axis; with ``spacing_zyx`` the shape
    is round in millimetres. ``hu_range`` (with ``ct``) keeps only voxels whose
    HU lies in [low, high]. None when the brush lies outside the volume.
    """
    if form not in ("disc", "sphere"):
        raise InputError(f"Unknown brush form '{form}'.", "Use 'disc' or 'sphere'.")
    r = max(float(radius), 0.5)
    sp = np.ones(3) if spacing_zyx is None else np.asarray(spacing_zyx, float) / float(min(spacing_zyx))
    reach = np.floor(r / sp).astype(int)
    if form == "disc":
        reach[AXES[orientation]] = 0
    c = np.asarray(centre, dtype=int)
    box = Box(tuple(int(a - k) for a, k in zip(c, reach)), tuple(int(a + k + 1) for a, k in zip(c, reach))).clipped(
        shape
    )
    if box is None:
        return None
    grids = np.ogrid[box.shifted([-int(a) for a in c]).slices]
    d2 = sum((g * s) ** 2 for g, s in zip(grids, sp))
    mask = d2 <= r * r
    if hu_range is not None and ct is not None:
        sub = ct[box.slices]
        mask &= (sub >= hu_range[0]) & (sub <= hu_range[1])
    return box, mask


def flood_fill(
    ct: np.ndarray,
    seed: Sequence[int],
    hu_range: tuple[float, float],
    *,
    max_voxels: int = 200_000,
    max_radius: int = 40,
) -> tuple[Box, np.ndarray]:
    """The 6-connected region around ``seed`` whose HU lies in ``hu_range``.

    Bounded twice so a click in a leaking lumen cannot flood the lung: only a
    cube of ``max_radius`` voxels around the seed is searched, and a region
    larger than ``max_voxels`` is refused with an InputError that says so.
    """
    import cc3d

    c = np.asarray(seed, dtype=int)
    box = Box(tuple(int(a - max_radius) for a in c), tuple(int(a + max_radius + 1) for a in c)).clipped(ct.shape)
    if box is None or not all(0 <= a < n for a, n in zip(c, ct.shape)):
        raise InputError("The fill seed lies outside the volume.", "Click inside the image.")
    sub = ct[box.slices]
    inside = (sub >= hu_range[0]) & (sub <= hu_range[1])
    local = tuple(int(a - lo) for a, lo in zip(c, box.start))
    if not inside[local]:
        raise InputError(
            f"The clicked voxel ({int(sub[local])} HU) is outside the fill range {hu_range[0]:g}..{hu_range[1]:g} HU.",
            "Click inside the lumen, or widen the HU range.",
        )
    labels = cc3d.connected_components(inside, connectivity=6)
    mask = labels == labels[local]
    n = int(mask.sum())
    if n > max_voxels:
        raise InputError(
            f"The fill would cover {n} voxels (limit {max_voxels}).",
            "Lower the HU threshold (the lumen leaks into the lung) or paint with the brush.",
        )
    return box, mask
