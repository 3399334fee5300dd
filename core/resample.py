"""Resampling an array from one grid to another, in world space, by SimpleITK's ``ResampleImageFilter``.

A target voxel takes the value of the source at the same world point (LPS, mm),
by ITK's rules: a point is inside the source when its continuous index lies in
``[-0.5, n - 0.5)`` on every axis, linear interpolation clamps to the edge voxel
inside that half-voxel border, and points outside get ``default``. Nearest
neighbour for labels and masks, linear for CT and probabilities; ITK threads the
filter over every core.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.io.itk import sitk, to_image
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
    rounded and clipped to the dtype's range (ITK would truncate them). A bool
    array stays bool (linear: a voxel is set where the interpolated value is >= 0.5).
    """
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"resample_array needs a 3D array, got shape {array.shape}")
    dtype = array.dtype
    image = to_image(array, geometry)
    # interpolate integers in float32, so rounding (not ITK's truncation) makes the result
    out_type = sitk.sitkFloat32 if linear and dtype.kind in "iub" else sitk.sitkUnknown
    result = sitk.Resample(
        image,
        [int(s) for s in target_shape[::-1]],
        sitk.Transform(),
        sitk.sitkLinear if linear else sitk.sitkNearestNeighbor,
        target_geometry.origin,
        target_geometry.spacing,
        target_geometry.direction,
        float(default),
        out_type,
    )
    out: np.ndarray = sitk.GetArrayFromImage(result)
    return _cast(out, dtype)


def _cast(out: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if out.dtype == dtype:
        return out
    if dtype == bool:
        return out >= 0.5 if out.dtype.kind == "f" else out.astype(bool)
    if dtype.kind in "iu" and out.dtype.kind == "f":
        info = np.iinfo(dtype)
        rounded: np.ndarray = np.clip(np.rint(out), info.min, info.max)
        return rounded.astype(dtype)
    return out.astype(dtype)


__all__ = ["index_map", "resample_array"]
