"""Patch extraction with rotation (method.md sec. 5).

The paper rotates a 150^3 crop by up to 15 degrees in a random plane and takes
the central 128^3. Here the same result is computed in one resampling: every
output voxel ``x`` of the ``P^3`` patch reads the volume at
``start + c + R (x - c)`` (``c`` the patch centre), trilinear for the image and
for the label as a float, which is then thresholded at the stage's value
(paper 0.8 / 0.9; authors' code 0.7 / 0.9). Only the bounding box of the
rotated patch is read from the (memory-mapped) volume; voxels outside the
volume are padded (image 0 = air after windowing, label 0, weight 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


def rotation_matrix(plane: tuple[int, int], degrees: float) -> np.ndarray:
    """3x3 rotation by ``degrees`` in the plane of array axes ``plane`` (z=0, y=1, x=2)."""
    a, b = plane
    t = np.deg2rad(degrees)
    r = np.eye(3)
    r[a, a] = np.cos(t)
    r[a, b] = -np.sin(t)
    r[b, a] = np.sin(t)
    r[b, b] = np.cos(t)
    return r


def random_rotation(rng: np.random.Generator, max_degrees: float, prob: float = 1.0) -> np.ndarray:
    """Identity, or with probability ``prob`` a rotation by U(-max, max) degrees in a random axis plane."""
    if max_degrees <= 0 or rng.random() >= prob:
        return np.eye(3)
    planes = ((0, 1), (0, 2), (1, 2))
    plane = planes[int(rng.integers(3))]
    return rotation_matrix(plane, float(rng.uniform(-max_degrees, max_degrees)))


@dataclass(frozen=True)
class Channel:
    """One array to cut a patch from: ``order`` 0/1 interpolation, ``cval`` outside the volume."""

    array: np.ndarray
    order: int = 1
    cval: float = 0.0


def _read_box(array: np.ndarray, lo: np.ndarray, hi: np.ndarray, cval: float) -> np.ndarray:
    """``array[lo:hi]`` as float32, padded with ``cval`` where the box leaves the volume."""
    shape = np.asarray(array.shape)
    src_lo = np.clip(lo, 0, shape)
    src_hi = np.clip(hi, 0, shape)
    out = np.full(tuple(hi - lo), cval, dtype=np.float32)
    if np.all(src_hi > src_lo):
        dst_lo = src_lo - lo
        dst_hi = dst_lo + (src_hi - src_lo)
        out[tuple(slice(a, b) for a, b in zip(dst_lo, dst_hi))] = array[
            tuple(slice(a, b) for a, b in zip(src_lo, src_hi))
        ]
    return out


def extract_patch(
    channels: list[Channel], start: np.ndarray, size: int, rotation: np.ndarray | None = None
) -> list[np.ndarray]:
    """Cut a ``size^3`` patch whose unrotated corner is ``start`` (integer zyx) from every channel.

    With ``rotation`` (3x3), the patch is turned about its centre. Identity (or
    None) is an exact copy, so labels stay binary and thresholds change nothing.
    """
    start = np.asarray(start, dtype=np.int64)
    if rotation is None or np.allclose(rotation, np.eye(3)):
        lo, hi = start, start + size
        return [_read_box(ch.array, lo, hi, ch.cval) for ch in channels]
    c = (size - 1) / 2.0
    half_extent = np.abs(rotation).sum(axis=1) * c  # reach of the rotated patch's corners per axis
    centre = start + c
    lo = np.floor(centre - half_extent).astype(np.int64) - 1
    hi = np.ceil(centre + half_extent).astype(np.int64) + 2
    # input = R @ x + offset, in the coordinates of the box read at ``lo``
    offset = centre - lo - rotation @ np.full(3, c)
    out = []
    for ch in channels:
        box = _read_box(ch.array, lo, hi, ch.cval)
        out.append(
            ndimage.affine_transform(
                box,
                rotation,
                offset=offset,
                output_shape=(size,) * 3,
                order=ch.order,
                mode="constant",
                cval=ch.cval,
                prefilter=False,
            )
        )
    return out


def start_containing(
    voxel: np.ndarray, size: int, rotation: np.ndarray, rng: np.random.Generator, margin: int = 1
) -> np.ndarray:
    """An integer patch corner such that ``voxel`` lands inside the (rotated) patch, at a random place.

    A target position ``x`` is drawn uniformly in the patch (``margin`` voxels
    from its faces), then the corner is solved from ``voxel = start + c + R (x - c)``
    and rounded; rounding moves ``x`` by at most sqrt(3)/2 < 1 voxel, which the
    margin absorbs.
    """
    c = (size - 1) / 2.0
    lo, hi = margin, size - 1 - margin
    if hi < lo:
        lo = hi = int(c)
    x = rng.uniform(lo, hi, size=3) if hi > lo else np.full(3, float(lo))
    start = np.asarray(voxel, float) - c - rotation @ (x - c)
    out: np.ndarray = np.rint(start).astype(np.int64)
    return out


def position_in_patch(voxel: np.ndarray, start: np.ndarray, size: int, rotation: np.ndarray) -> np.ndarray:
    """Where ``voxel`` of the volume lies in the patch cut at ``start`` with ``rotation`` (continuous zyx)."""
    c = (size - 1) / 2.0
    out: np.ndarray = c + rotation.T @ (np.asarray(voxel, float) - np.asarray(start, float) - c)
    return out
