"""Resampling an array from one grid to another, in world space.

A target voxel takes the value of the source at the same world point (LPS, mm).
The rules follow ITK's ``ResampleImageFilter`` so results do not change with the
library behind them: a point is inside the source when its continuous index lies
in ``[-0.5, n - 0.5)`` on every axis, nearest neighbour rounds halves up, linear
interpolation clamps to the edge voxel inside that half-voxel border, and points
outside get ``default``.

When both grids share their direction (a CT resampled to another spacing, the
common case) the index map is a per-axis affine, so the work is separable:
gathers and weighted sums along one axis at a time, each a numpy pass over the
data. Other pairs go through ``scipy.ndimage.affine_transform``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from core.volume import Geometry

Shape3 = Sequence[int]


def index_map(source: Geometry, target: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """``(A, b)`` with continuous source index = ``A @ target index + b``, both in (x, y, z) order."""
    ds = source.direction_matrix * np.asarray(source.spacing)
    dt = target.direction_matrix * np.asarray(target.spacing)
    inv = np.linalg.inv(ds)
    return inv @ dt, inv @ (np.asarray(target.origin) - np.asarray(source.origin))


def resample_array(
    array: np.ndarray,
    geometry: Geometry,
    target_shape: Shape3,
    target_geometry: Geometry,
    linear: bool = True,
    default: float = 0.0,
) -> np.ndarray:
    """``array`` on ``geometry`` -> an array of ``target_shape`` (z, y, x) on ``target_geometry``.

    The result has the input's dtype; linear results for integer inputs are
    rounded and clipped to the dtype's range. A bool array stays bool.
    """
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"resample_array needs a 3D array, got shape {array.shape}")
    out_shape = tuple(int(s) for s in target_shape)
    dtype = array.dtype
    work = array.view(np.uint8) if dtype == bool else array
    a, b = index_map(geometry, target_geometry)
    off_diagonal = np.abs(a - np.diag(np.diag(a))).max()
    if off_diagonal <= 1e-9 * max(np.abs(np.diag(a)).max(), 1.0):
        out = _separable(work, out_shape, np.diag(a)[::-1], b[::-1], linear, default)
    else:
        out = _general(work, out_shape, a[::-1, ::-1], b[::-1], linear, default)
    return _cast(out, dtype)


def _cast(out: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if out.dtype == dtype:
        return out
    if dtype == bool:
        return out >= 0.5 if out.dtype.kind == "f" else out.astype(bool)
    if dtype.kind in "iu" and out.dtype.kind == "f":
        info = np.iinfo(dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(dtype)
    return out.astype(dtype)


def _axis_positions(n_src: int, n_out: int, scale: float, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Continuous source indices of the target's indices along one axis, and which lie inside."""
    c = scale * np.arange(n_out, dtype=np.float64) + shift
    return c, (c >= -0.5) & (c < n_src - 0.5)


def _separable(
    array: np.ndarray, out_shape: tuple[int, ...], scale: np.ndarray, shift: np.ndarray, linear: bool, default: float
) -> np.ndarray:
    pos = [_axis_positions(array.shape[ax], out_shape[ax], scale[ax], shift[ax]) for ax in range(3)]
    if not linear:
        idx = [np.clip(np.floor(c + 0.5), 0, array.shape[ax] - 1).astype(np.intp) for ax, (c, _) in enumerate(pos)]
        out = array[np.ix_(*idx)]
    else:
        out = array if array.dtype.kind == "f" else array.astype(np.float32)
        # shrink first: the later passes then run over less data
        order = sorted(range(3), key=lambda ax: out_shape[ax] / max(array.shape[ax], 1))
        for ax in order:
            out = _linear_along(out, ax, pos[ax][0])
    inside = [p[1] for p in pos]
    if not all(m.all() for m in inside):
        fill = np.asarray(default).astype(out.dtype) if out.dtype.kind != "f" else default
        out[~inside[0], :, :] = fill
        out[:, ~inside[1], :] = fill
        out[:, :, ~inside[2]] = fill
    return out


def _linear_along(array: np.ndarray, axis: int, c: np.ndarray) -> np.ndarray:
    n = array.shape[axis]
    f = np.floor(c)
    i0 = np.clip(f, 0, n - 1).astype(np.intp)
    i1 = np.clip(f + 1, 0, n - 1).astype(np.intp)
    shape = [1, 1, 1]
    shape[axis] = c.size
    w = (c - f).astype(array.dtype).reshape(shape)
    a0 = np.take(array, i0, axis=axis)
    a1 = np.take(array, i1, axis=axis)
    a1 -= a0
    a1 *= w
    a0 += a1
    return a0


def _affine(
    array: np.ndarray,
    matrix: np.ndarray,
    offset: np.ndarray,
    out_shape: tuple[int, ...],
    order: int,
    mode: str,
    cval: float = 0.0,
) -> np.ndarray:
    """``scipy.ndimage.affine_transform`` over slabs of the output in threads (it releases the GIL:
    2 cores give 2x, the way ITK's filter is threaded)."""
    from concurrent.futures import ThreadPoolExecutor

    from scipy import ndimage

    out = np.empty(out_shape, dtype=array.dtype)
    n = max(1, min(os.cpu_count() or 1, 8, out_shape[0]))
    bounds = np.linspace(0, out_shape[0], n + 1).astype(int)

    def slab(i: int) -> None:
        z0, z1 = bounds[i], bounds[i + 1]
        ndimage.affine_transform(
            array,
            matrix,
            offset + matrix @ np.array([z0, 0.0, 0.0]),
            output_shape=(z1 - z0, *out_shape[1:]),
            output=out[z0:z1],
            order=order,
            mode=mode,
            cval=cval,
        )

    with ThreadPoolExecutor(n) as pool:
        list(pool.map(slab, range(n)))
    return out


def _general(
    array: np.ndarray, out_shape: tuple[int, ...], matrix: np.ndarray, offset: np.ndarray, linear: bool, default: float
) -> np.ndarray:
    # 'grid-constant' at order 0 is ITK's rule exactly: the rounded index must lie in the array, i.e.
    # the point within the half-voxel border ('constant' would cut the border off)
    if not linear:
        return _affine(
            array, matrix, offset, out_shape, 0, "grid-constant", np.asarray(default).astype(array.dtype).item()
        )
    # linear: 'nearest' extends the edge voxel into the half-voxel border as ITK's interpolator does,
    # and the points beyond the border get `default`
    src = array if array.dtype.kind == "f" else array.astype(np.float32)
    out = _affine(src, matrix, offset, out_shape, 1, "nearest")
    inside = _affine(np.ones(array.shape, np.uint8), matrix, offset, out_shape, 0, "grid-constant", 0)
    out[inside == 0] = default
    return out


__all__ = ["index_map", "resample_array"]
