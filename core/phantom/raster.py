"""Voxels from tubes: capsule distances inside bounding boxes, and thin centrelines.

Grids here are axis-aligned (identity direction), as the phantom makes them:
voxel ``(k, j, i)`` has its centre at ``origin + (i, j, k) * spacing`` (x, y, z mm).
Each shape is evaluated only in its own bounding box, vectorised, so the cost
follows the tube's size and not the volume's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    shape: tuple[int, int, int]  # (z, y, x)
    spacing: tuple[float, float, float]  # (x, y, z) mm
    origin: tuple[float, float, float]  # (x, y, z) mm, centre of voxel (0, 0, 0)

    def axis_mm(self, axis_xyz: int, lo: int, hi: int) -> np.ndarray:
        """World coordinates (float32) of voxel centres ``lo..hi-1`` along x (0), y (1) or z (2)."""
        return (self.origin[axis_xyz] + np.arange(lo, hi, dtype=np.float64) * self.spacing[axis_xyz]).astype(np.float32)

    def to_index(self, p_xyz: np.ndarray) -> np.ndarray:
        """World points (x, y, z) -> continuous (z, y, x) indices."""
        return ((np.asarray(p_xyz, dtype=float) - self.origin) / self.spacing)[..., ::-1]

    def box(self, lo_xyz: np.ndarray, hi_xyz: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Index slices (z, y, x) of the voxels whose centres may lie in the world box; None if empty."""
        lo = np.floor((np.asarray(lo_xyz) - self.origin) / self.spacing).astype(int)
        hi = np.ceil((np.asarray(hi_xyz) - self.origin) / self.spacing).astype(int) + 1
        sl = []
        for axis_xyz in (2, 1, 0):
            n = self.shape[2 - axis_xyz]
            a, b = max(0, lo[axis_xyz]), min(n, hi[axis_xyz])
            if a >= b:
                return None
            sl.append(slice(a, b))
        return tuple(sl)  # type: ignore[return-value]


def segment_distance(
    grid: Grid, a: np.ndarray, b: np.ndarray, reach: float
) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """Distance (mm, float32) from voxel centres to segment ``a``-``b``, in the box ``reach`` mm around it.

    Returns the box's slices and the distances, or None when the box misses the grid.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    sl = grid.box(np.minimum(a, b) - reach, np.maximum(a, b) + reach)
    if sl is None:
        return None
    x = grid.axis_mm(0, sl[2].start, sl[2].stop)[None, None, :] - np.float32(a[0])
    y = grid.axis_mm(1, sl[1].start, sl[1].stop)[None, :, None] - np.float32(a[1])
    z = grid.axis_mm(2, sl[0].start, sl[0].stop)[:, None, None] - np.float32(a[2])
    d = (b - a).astype(np.float32)
    dd = float(np.dot(d, d))
    if dd < 1e-12:
        return sl, np.sqrt(x * x + y * y + z * z)
    t = (x * d[0] + y * d[1] + z * d[2]) / np.float32(dd)
    np.clip(t, 0.0, 1.0, out=t)
    ex = x - t * d[0]
    ex *= ex
    ey = y - t * d[1]
    ey *= ey
    ex += ey
    del ey
    ez = z - t * d[2]
    ez *= ez
    ex += ez
    return sl, np.sqrt(ex, out=ex)


def point_segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from points ``p`` (..., 3) to segment ``a``-``b`` (all world mm)."""
    p = np.asarray(p, dtype=float)
    a = np.asarray(a, dtype=float)
    d = np.asarray(b, dtype=float) - a
    dd = float(np.dot(d, d))
    t = np.zeros(p.shape[:-1]) if dd < 1e-12 else np.clip(((p - a) @ d) / dd, 0.0, 1.0)
    out: np.ndarray = np.linalg.norm(p - a - t[..., None] * d, axis=-1)
    return out


def coverage(distance: np.ndarray, radius: float, ramp_mm: float) -> np.ndarray:
    """Fraction of each voxel inside a surface at ``radius`` (linear partial-volume ramp ``ramp_mm`` wide).

    Exactly 0.5 on the surface, so every voxel whose centre is inside is at least half covered.
    """
    f = (np.float32(radius + 0.5 * ramp_mm) - distance) / np.float32(ramp_mm)
    return np.clip(f, 0.0, 1.0, out=f)


def centreline_voxels(grid: Grid, a: np.ndarray, b: np.ndarray, radius: float) -> np.ndarray:
    """(n, 3) int (z, y, x) voxels of a one-voxel-thin, 26-connected path along segment ``a``-``b``.

    A digital line (DDA): one voxel per step of the dominant axis, taken where
    the segment crosses that axis's voxel centres; the offset along the other
    two axes is then at most half a voxel each, so the voxel lies within
    ``0.5 * hypot`` of those spacings of the axis (inside any tube at least that
    wide). End voxels are added only when their centres lie in the capsule.
    Voxels outside the grid are dropped.
    """
    ia, ib = grid.to_index(a), grid.to_index(b)
    delta = ib - ia
    k = int(np.argmax(np.abs(delta)))
    pts = []
    if abs(delta[k]) > 1e-9:
        lo, hi = sorted((ia[k], ib[k]))
        n = np.arange(math.ceil(lo), math.floor(hi) + 1, dtype=float)
        t = (n - ia[k]) / delta[k]
        pts.append(np.rint(ia[None, :] + t[:, None] * delta[None, :]))
    for end in (ia, ib):
        v = np.rint(end)
        centre = np.asarray(grid.origin) + v[::-1] * np.asarray(grid.spacing)
        if float(point_segment_distance(centre, a, b)) <= radius:
            pts.append(v[None, :])
    if not pts:
        return np.zeros((0, 3), dtype=np.int64)
    v = np.concatenate(pts).astype(np.int64)
    ok = np.all((v >= 0) & (v < np.asarray(grid.shape)), axis=1)
    return v[ok]
