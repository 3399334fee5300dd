"""What a format reader hands back, and the checks every format shares.

Readers return the voxel array with the file's axes reversed, so a 3D volume is
indexed ``(z, y, x)`` like every array in the project, plus the geometry of the
first three file axes in ITK's convention (LPS world, direction columns are the
axis directions). A voxel with several components (colour, vectors) is refused
here, and singleton extra axes (a 4D file with one time point) are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import InputError
from core.volume import Geometry

FIX_FORMATS = "Use a NIfTI (.nii/.nii.gz), MetaImage (.mha/.mhd), NRRD (.nrrd/.nhdr) file or a DICOM series folder."


@dataclass(frozen=True)
class Decoded:
    array: np.ndarray  # file axes reversed: (..., z, y, x)
    spacing: tuple[float, ...]  # per file axis, x first
    origin: tuple[float, ...]
    direction: np.ndarray  # columns: world directions of the file axes (3 x 3 once 3D)
    components: int = 1


def truncated(path) -> InputError:
    return InputError(
        "The file is truncated: its voxel data ends before the size its header declares.",
        "Copy or download it again; the file on disk is incomplete.",
        path=path,
    )


def unreadable(path, detail: str) -> InputError:
    return InputError(
        f"Could not read this file as an image: {detail[:200]}",
        f"The file may be corrupt or truncated, or of an unsupported format. {FIX_FORMATS}",
        path=path,
    )


def to_volume_parts(image: Decoded, path) -> tuple[np.ndarray, Geometry]:
    if image.components != 1:
        raise InputError(
            f"The image has {image.components} components per voxel (colour or vector image).",
            "Give a scalar (grey-value) CT or label volume.",
            path=path,
        )
    arr = image.array
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3 or min(arr.shape) < 1:
        size = tuple(int(s) for s in arr.shape[::-1])
        raise InputError(
            f"Expected a 3D volume, got a {arr.ndim}D image of size {size}.",
            "Give a 3D volume (a NIfTI/MHA/NRRD volume or a whole DICOM series folder), not a single slice.",
            path=path,
        )
    direction = np.asarray(image.direction, dtype=float)[:3, :3]
    geometry = Geometry(tuple(image.spacing[:3]), tuple(image.origin[:3]), tuple(direction.ravel()))
    return np.ascontiguousarray(arr), geometry


def split_spacing(vectors: np.ndarray) -> tuple[tuple[float, ...], np.ndarray]:
    """Axis vectors as *columns* of ``vectors`` (mm per voxel step) -> spacings and unit directions."""
    vectors = np.asarray(vectors, dtype=float)
    spacing = np.linalg.norm(vectors, axis=0)
    spacing = np.where(spacing > 0, spacing, 1.0)
    return tuple(float(s) for s in spacing), vectors / spacing


def rescaled(array: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """``array * slope + intercept`` in a type that holds it.

    Integers stay integers when slope and intercept are whole (a CT stored as
    unsigned with intercept -1024 becomes int16, not a float volume twice the
    size); the signed type is chosen to hold the stored values, every product
    and every result, so no step wraps around.
    """
    if slope == 1 and intercept == 0:
        return array
    if float(slope).is_integer() and float(intercept).is_integer() and array.dtype.kind in "iub":
        lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
        values = [lo, hi, lo * slope, hi * slope, lo * slope + intercept, hi * slope + intercept]
        for t in (np.int16, np.int32, np.int64):
            info = np.iinfo(t)
            if info.min <= min(values) and max(values) <= info.max:
                out = array.astype(t)
                if slope != 1:
                    out *= t(slope)
                if intercept != 0:
                    out += t(intercept)
                return out
    return array.astype(np.float32) * np.float32(slope) + np.float32(intercept)
