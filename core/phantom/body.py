"""The chest around the airways, in Hounsfield units: body, fat, spine, ribs, heart, textured lungs.

Filled slab by slab (a few slices at a time) so peak memory stays near one
float32 copy of the volume. HU values are the usual textbook ones: air -1000,
fat -100, soft tissue and blood +40, lung parenchyma -850, bone +400..+500.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from core.errors import Cancelled
from core.phantom.raster import Grid
from core.phantom.tree import Chest, Ellipsoid

AIR_HU = -1000.0
FAT_HU = -100.0
SOFT_HU = 40.0
LUNG_HU = -850.0
BONE_HU = 500.0
TEXTURE_HU = 25.0  # std of the smoothed parenchyma texture
GRAVITY_HU = 30.0  # dependent (posterior) lung is denser: +30 HU across the lung's depth
TEXTURE_CELL_MM = 4.0  # correlation length of the texture
RIB_PITCH_MM = 26.0  # rib to rib, along z
RIB_HEIGHT_MM = 9.0
RIB_DROP_MM = 90.0  # ribs run down from the spine to the sternum
RIB_HU = 400.0  # cortex and marrow, partial-volumed together


def _lerp_weights(n_out: int, n_in: int, cell: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights that linearly interpolate ``n_in`` coarse samples onto ``n_out`` fine ones."""
    pos = np.arange(n_out, dtype=np.float64) / cell
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, n_in - 2)
    w = (pos - i0).astype(np.float32)
    return i0, i0 + 1, np.clip(w, 0.0, 1.0)


class Texture:
    """Smoothed zero-mean noise of unit std: coarse Gaussian noise, linearly interpolated.

    Separable interpolation (x, y now; z per slab) uses elementwise gathers only,
    so the result is bit-identical on every machine.
    """

    def __init__(self, grid: Grid, rng: np.random.Generator, cell_mm: float = TEXTURE_CELL_MM):
        nz, ny, nx = grid.shape
        cells = [max(1.0, cell_mm / s) for s in grid.spacing]  # fine voxels per coarse cell, x y z
        cz, cy, cx = (int(np.ceil(n / c)) + 2 for n, c in zip((nz, ny, nx), cells[::-1]))
        coarse = rng.standard_normal((cz, cy, cx), dtype=np.float32)
        coarse = ndimage.gaussian_filter(coarse, 0.8, mode="wrap")
        coarse /= max(float(coarse.std()), 1e-6)
        i0, i1, w = _lerp_weights(nx, cx, cells[0])
        c = coarse[:, :, i0] * (1 - w) + coarse[:, :, i1] * w
        i0, i1, w = _lerp_weights(ny, cy, cells[1])
        self._xy = c[:, i0, :] * (1 - w)[:, None] + c[:, i1, :] * w[:, None]
        self._z = _lerp_weights(nz, cz, cells[2])

    def slab(self, z0: int, z1: int) -> np.ndarray:
        i0, i1, w = (v[z0:z1] for v in self._z)
        out: np.ndarray = self._xy[i0] * (1 - w)[:, None, None] + self._xy[i1] * w[:, None, None]
        return out


def body_box(grid: Grid, chest: Chest, pad_mm: float = 0.0) -> tuple[slice, slice, slice]:
    """Index box (z, y, x) outside which the chest CT is plain air (all slices: the body is a cylinder)."""
    a, b = chest.body_semi
    z_lo, z_hi = grid.origin[2], grid.origin[2] + (grid.shape[0] - 1) * grid.spacing[2]
    sl = grid.box(np.array([-a - pad_mm, -b - pad_mm, z_lo]), np.array([a + pad_mm, b + pad_mm, z_hi]))
    return sl if sl is not None else (slice(0, 0), slice(0, 0), slice(0, 0))


def _quadric(grid: Grid, e: Ellipsoid, sl: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray]:
    """An ellipsoid's (x, y) part (2D) and z part (1D) of sum(((p - c) / semi)^2) over box ``sl``."""
    c, s = e.centre, e.semi
    x = (grid.axis_mm(0, sl[2].start, sl[2].stop) - np.float32(c[0])) / np.float32(s[0])
    y = (grid.axis_mm(1, sl[1].start, sl[1].stop) - np.float32(c[1])) / np.float32(s[1])
    z = (grid.axis_mm(2, sl[0].start, sl[0].stop) - np.float32(c[2])) / np.float32(s[2])
    return x[None, :] ** 2 + y[:, None] ** 2, z * z


def _paint_ribs(
    ct: np.ndarray, grid: Grid, chest: Chest, x: np.ndarray, y: np.ndarray, z_range: tuple[float, float]
) -> None:
    """Ribs: bands in the chest wall just inside the fat, sloping down from back to front, over the lungs' height."""
    a, b = chest.body_semi
    q = np.sqrt((x / (a - chest.fat_mm)) ** 2 + (y / (b - chest.fat_mm)) ** 2)
    ring = (q >= 0.86) & (q <= 0.95)
    if not ring.any():
        return
    back = np.arccos(np.clip(y / np.maximum(np.hypot(x, y), 1e-6), -1.0, 1.0))  # 0 at the spine .. pi at the sternum
    offset = (np.float32(RIB_DROP_MM / np.pi) * back).astype(np.float32)
    iy, ix = np.nonzero(ring)
    off = offset[iy, ix]
    for k in range(grid.shape[0]):
        z = float(grid.origin[2] + k * grid.spacing[2])
        if not (z_range[0] <= z <= z_range[1] + RIB_DROP_MM):
            continue
        on = np.mod(z + off - z_range[1], RIB_PITCH_MM) < RIB_HEIGHT_MM
        ct[k, iy[on], ix[on]] = np.float32(RIB_HU)


def fill_body(
    grid: Grid, chest: Chest, rng: np.random.Generator, slab: int = 16, cancel: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """CT of the chest without airways or vessels (float32 HU) and the lung mask (bool).

    The body is an elliptic cylinder, so one slice of it serves all; lung work
    is confined to the lungs' bounding box and split into slabs of slices, with
    each ellipsoid test done as a 2D (x, y) part compared against a 1D z part.
    """
    nz, ny, nx = grid.shape
    x = grid.axis_mm(0, 0, nx)[None, :]
    y = grid.axis_mm(1, 0, ny)[:, None]
    a, b = chest.body_semi
    body = (x / a) ** 2 + (y / b) ** 2 <= 1.0
    inner = (x / (a - chest.fat_mm)) ** 2 + (y / (b - chest.fat_mm)) ** 2 <= 1.0
    sx, sy = chest.spine_centre
    spine = (x - sx) ** 2 + (y - sy) ** 2 <= chest.spine_radius**2
    plane = np.where(body, np.where(inner, SOFT_HU, FAT_HU), AIR_HU).astype(np.float32)
    plane[spine & inner] = BONE_HU
    ct = np.empty(grid.shape, dtype=np.float32)
    ct[...] = plane
    lungs = np.zeros(grid.shape, dtype=bool)
    lo = np.min([np.subtract(e.centre, e.semi) for e in chest.lungs], axis=0)
    hi = np.max([np.add(e.centre, e.semi) for e in chest.lungs], axis=0)
    _paint_ribs(ct, grid, chest, x, y, (float(lo[2]), float(hi[2])))
    box = grid.box(lo, hi)
    if box is None:
        return ct, lungs
    zs, ys, xs = box
    (ox, oy, oz), (dx, dy, dz) = grid.origin, grid.spacing
    sub = Grid(
        (zs.stop - zs.start, ys.stop - ys.start, xs.stop - xs.start),
        grid.spacing,
        (ox + xs.start * dx, oy + ys.start * dy, oz + zs.start * dz),
    )
    texture = Texture(sub, rng)
    quads = [_quadric(grid, e, box) for e in (*chest.lungs, chest.heart)]
    inner_box = inner[box[1], box[2]][None]
    c0 = chest.lungs[0]
    depth = ((grid.axis_mm(1, box[1].start, box[1].stop) - np.float32(c0.centre[1])) / np.float32(c0.semi[1]))[
        None, :, None
    ]
    gravity = np.float32(0.5 * GRAVITY_HU) * depth  # -1 anterior .. +1 posterior
    z_start = box[0].start
    for z0 in range(0, sub.shape[0], slab):
        z1 = min(sub.shape[0], z0 + slab)
        if cancel is not None and cancel.is_set():
            raise Cancelled("Phantom generation cancelled.")
        (rxy, rz), (lxy, lz), (hxy, hz) = quads
        lung = rxy[None] <= (1.0 - rz[z0:z1])[:, None, None]
        lung |= lxy[None] <= (1.0 - lz[z0:z1])[:, None, None]
        lung &= ~(hxy[None] <= (1.0 - hz[z0:z1])[:, None, None])
        lung &= inner_box
        paren = texture.slab(z0, z1)
        paren *= np.float32(TEXTURE_HU)
        paren += gravity
        paren += np.float32(LUNG_HU)
        zs = slice(z_start + z0, z_start + z1)
        np.copyto(ct[zs, box[1], box[2]], paren, where=lung)
        lungs[zs, box[1], box[2]] = lung
    return ct, lungs


def finish_ct(
    ct: np.ndarray,
    grid: Grid,
    chest: Chest,
    blur_mm: float,
    noise_hu: float,
    rng: np.random.Generator,
    slab: int = 16,
    cancel: Any = None,
) -> np.ndarray:
    """Partial-volume blur, then scanner noise, rounding and clipping to int16 HU.

    Outside the body the image is constant air, which a normalised blur leaves
    as it is, so only the body's box (plus the kernel's reach) is blurred, in
    place. Noise is added slab by slab to keep memory flat.
    """
    if blur_mm > 0:
        sigma = [blur_mm / s for s in grid.spacing[::-1]]
        body = ct[body_box(grid, chest, pad_mm=3.0 * blur_mm + 2.0 * max(grid.spacing))]
        ndimage.gaussian_filter(body, sigma, output=body, mode="nearest", truncate=3.0)
    out = np.empty(ct.shape, dtype=np.int16)
    for z0 in range(0, ct.shape[0], slab):
        if cancel is not None and cancel.is_set():
            raise Cancelled("Phantom generation cancelled.")
        block = ct[z0 : z0 + slab]
        if noise_hu > 0:
            block += rng.standard_normal(block.shape, dtype=np.float32) * np.float32(noise_hu)
        np.clip(np.rint(block), -1024, 3071, out=block)
        out[z0 : z0 + slab] = block
    return out
