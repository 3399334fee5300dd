"""The network's input: the CT checked, the lung crop found fast, windowed and scaled (the checkpoint's
own preprocessing); and a crop box carried between grids."""

from __future__ import annotations

from typing import Any

import numpy as np

from core.box import Box, bounding_box
from core.errors import InputError
from core.preprocess import CropBox, Preprocessing, lung_mask, prepare_input, window_hu
from core.volume import Geometry, IntensityVolume


def check_ct(ct: Any) -> IntensityVolume:
    """``ct`` when it is a 3D CT the network can read; InputError saying what is wrong otherwise."""
    if not isinstance(ct, IntensityVolume):
        raise InputError(
            f"Expected a CT volume (IntensityVolume), got {type(ct).__name__}.",
            "Read the CT with core.io.read_ct first.",
        )
    if ct.array.ndim != 3:
        raise InputError(
            f"Expected a 3D CT, got an array of shape {ct.array.shape}.",
            "Give a 3D volume or a whole DICOM series, not a single slice.",
        )
    if min(ct.shape) < 2:
        raise InputError(
            f"The CT has shape {ct.shape}: a single slice, not a volume.",
            "Give a 3D volume or a whole DICOM series, not a single slice.",
        )
    if ct.array.dtype.kind == "f" and not np.isfinite(ct.array).all():
        bad = int((~np.isfinite(ct.array)).sum())
        raise InputError(
            f"The CT has {bad} NaN or infinite voxels.", "Replace them (e.g. with -1024 HU) and try again."
        )
    if ct.array.dtype.kind not in "iuf":
        raise InputError(f"Unsupported CT voxel type {ct.array.dtype}.", "Give integer or float HU values.")
    return ct


def fast_crop_box(ct: np.ndarray, prep: Preprocessing, stride: int = 4, min_side: int = 256) -> CropBox:
    """The lung crop with the lung mask computed on every ``stride``-th row and column (about 20x faster).

    Only the box matters, not the mask: the coarse mask, grown by one coarse
    voxel in-plane and brought back to full resolution, selects the full-resolution
    air voxels (below the lung threshold) whose bounding box, plus the margin,
    is the crop. That is the exact box up to a voxel or two; a loose box would
    cost whole extra rows of windows. Volumes under ``min_side`` in-plane use
    the exact mask.
    """
    if prep.crop == "none":
        return CropBox.full(ct.shape)
    if min(ct.shape[1:]) < min_side or stride <= 1:
        return CropBox.from_mask(lung_mask(ct, prep.lung_threshold), prep.margin)
    from scipy import ndimage

    small = lung_mask(ct[:, ::stride, ::stride], prep.lung_threshold)
    grown = ndimage.binary_dilation(small, structure=np.ones((1, 3, 3), bool))
    coarse = bounding_box(grown)
    if coarse is None:
        return CropBox.full(ct.shape)
    # full-resolution window of the grown coarse box
    lo = (coarse.start[0], coarse.start[1] * stride, coarse.start[2] * stride)
    hi = (coarse.stop[0], min(coarse.stop[1] * stride, ct.shape[1]), min(coarse.stop[2] * stride, ct.shape[2]))
    up = np.repeat(np.repeat(grown[coarse.slices], stride, axis=1), stride, axis=2)[:, : hi[1] - lo[1], : hi[2] - lo[2]]
    air = ct[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] < prep.lung_threshold
    inner = bounding_box(up & air)
    if inner is None:
        return CropBox.full(ct.shape)
    return CropBox.from_box(inner.shifted(lo).grown(prep.margin, ct.shape), ct.shape)


def prepare(ct: IntensityVolume, prep: Preprocessing, fast_crop: bool = True) -> tuple[np.ndarray, CropBox]:
    """Network input: :func:`core.preprocess.prepare_input`, or with the subsampled lung crop."""
    if not fast_crop:
        return prepare_input(ct, prep)
    box = fast_crop_box(ct.array, prep)
    return window_hu(box.crop(ct.array), prep.window, prep.scale), box


def map_box(box: CropBox, geometry: Geometry, ct: IntensityVolume) -> CropBox:
    """A crop box on a resampled grid (``geometry``), expressed on the CT's own grid (rounded outwards, clamped)."""
    corners = np.array(
        [
            [z, y, x]
            for z in (box.start[0], box.stop[0] - 1)
            for y in (box.start[1], box.stop[1] - 1)
            for x in (box.start[2], box.stop[2] - 1)
        ],
        float,
    )
    idx = ct.geometry.world_to_index(geometry.index_to_world(corners))
    lo = np.clip(np.floor(idx.min(axis=0)), 0, np.asarray(ct.shape) - 1).astype(int)
    hi = np.clip(np.ceil(idx.max(axis=0)) + 1, 1, np.asarray(ct.shape)).astype(int)
    return CropBox.from_box(Box(tuple(int(v) for v in lo), tuple(int(v) for v in hi)), ct.shape)
