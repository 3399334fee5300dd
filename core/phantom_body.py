"""The chest around the airways, in Hounsfield units: body, fat, spine, heart, textured lungs.

Filled slab by slab (a few slices at a time) so peak memory stays near one
float32 copy of the volume. HU values are the usual textbook ones: air -1000,
fat -100, soft tissue and blood +40, lung parenchyma -850, bone +500.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from core.phantom_raster import Grid
from core.phantom_tree import Chest

AIR_HU = -1000.0
FAT_HU = -100.0
SOFT_HU = 40.0
LUNG_HU = -850.0
BONE_HU = 500.0
TEXTURE_HU = 25.0      # std of the smoothed parenchyma texture
GRAVITY_HU = 30.0      # dependent (posterior) lung is denser: +30 HU across the lung's depth
TEXTURE_CELL_MM = 4.0  # correlation length of the texture


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
        return self._xy[i0] * (1 - w)[:, None, None] + self._xy[i1] * w[:, None, None]


def fill_body(grid: Grid, chest: Chest, rng: np.random.Generator, slab: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """CT of the chest without airways or vessels (float32 HU) and the lung mask (bool)."""
    nz, ny, nx = grid.shape
    x = grid.axis_mm(0, 0, nx)[None, :]
    y = grid.axis_mm(1, 0, ny)[:, None]
    a, b = chest.body_semi
    body = (x / a) ** 2 + (y / b) ** 2 <= 1.0
    inner = (x / (a - chest.fat_mm)) ** 2 + (y / (b - chest.fat_mm)) ** 2 <= 1.0
    sx, sy = chest.spine_centre
    spine = (x - sx) ** 2 + (y - sy) ** 2 <= chest.spine_radius ** 2
    plane = np.where(body, np.where(inner, SOFT_HU, FAT_HU), AIR_HU).astype(np.float32)
    plane[spine & inner] = BONE_HU
    texture = Texture(grid, rng)
    ct = np.empty(grid.shape, dtype=np.float32)
    lungs = np.zeros(grid.shape, dtype=bool)
    x3, y3 = x[None], y[None]
    hc, hs = np.asarray(chest.heart.centre, np.float32), np.asarray(chest.heart.semi, np.float32)
    for z0 in range(0, nz, slab):
        z1 = min(nz, z0 + slab)
        z3 = grid.axis_mm(2, z0, z1)[:, None, None]
        heart = ((x3 - hc[0]) / hs[0]) ** 2 + ((y3 - hc[1]) / hs[1]) ** 2 + ((z3 - hc[2]) / hs[2]) ** 2 <= 1.0
        lung = np.zeros((z1 - z0, ny, nx), dtype=bool)
        depth = np.zeros((1, ny, 1), dtype=np.float32)
        for e in chest.lungs:
            c, s = np.asarray(e.centre, np.float32), np.asarray(e.semi, np.float32)
            lung |= ((x3 - c[0]) / s[0]) ** 2 + ((y3 - c[1]) / s[1]) ** 2 + ((z3 - c[2]) / s[2]) ** 2 <= 1.0
            depth = (y3 - c[1]) / s[1]  # -1 anterior .. +1 posterior (both lungs share y)
        lung &= ~heart
        lung &= inner[None]
        block = np.broadcast_to(plane, lung.shape).copy()
        paren = LUNG_HU + TEXTURE_HU * texture.slab(z0, z1) + np.float32(0.5 * GRAVITY_HU) * depth
        block[lung] = paren[lung]
        ct[z0:z1] = block
        lungs[z0:z1] = lung
    return ct, lungs
