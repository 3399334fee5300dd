"""What a format reader hands back, and the checks every format shares.

Readers return the voxel array with the file's axes reversed, so a 3D volume is
indexed ``(z, y, x)`` like every array in the project, plus the geometry of the
first three file axes in ITK's convention (LPS world, direction columns are the
axis directions). A voxel with several components (colour, vectors) is refused
here, singleton extra axes (a 4D file with one time point) are dropped, and a
direction that is no rotation or a spacing that is not positive is refused with
the file's name, before a volume is made of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.volume import Geometry, mat3, vec3

FIX_FORMATS = "Use a NIfTI (.nii/.nii.gz), MetaImage (.mha/.mhd), NRRD (.nrrd/.nhdr) file or a DICOM series folder."
#: how far ``D^T D`` may be from the identity (cosines written with 4-6 decimals pass; a shear does not)
ORTHONORMAL_TOL = 1e-3


@dataclass(frozen=True)
class Decoded:
    array: np.ndarray  # file axes reversed: (..., z, y, x)
    spacing: tuple[float, ...]  # per file axis, x first
    origin: tuple[float, ...]
    direction: np.ndarray  # columns: world directions of the file axes (3 x 3)
    components: int = 1


@dataclass(frozen=True)
class DicomSeries:
    """One DICOM series in a folder: its UID (``''`` when blank) and its files in slice order."""

    uid: str
    files: tuple[str, ...]

    @property
    def n_slices(self) -> int:
        return len(self.files)


def truncated(path: Path | str) -> InputError:
    return InputError(
        "The file is truncated: its voxel data ends before the size its header declares.",
        "Copy or download it again; the file on disk is incomplete.",
        path=path,
    )


def unreadable(path: Path | str, detail: str) -> InputError:
    return InputError(
        f"Could not read this file as an image: {detail[:200]}",
        f"The file may be corrupt or truncated, or of an unsupported format. {FIX_FORMATS}",
        path=path,
    )


def components_refused(components: int, path: Path | str) -> InputError:
    return InputError(
        f"The image has {components} components per voxel (colour or vector image).",
        "Give a scalar (grey-value) CT or label volume.",
        path=path,
    )


def nonfinite_refused(count: int, path: Path | str) -> InputError:
    return InputError(
        f"The image has {count} NaN or infinite voxels.",
        "Replace them (for example with -1024 HU for a CT, 0 for a label) in the file and load it again.",
        path=path,
    )


def check_spacing(spacing: tuple[float, ...], path: Path | str) -> None:
    if any(not np.isfinite(s) or s <= 0 for s in spacing):
        shown = ", ".join(f"{s:g}" for s in spacing)
        raise InputError(
            f"The voxel spacing ({shown}) is not positive, so the voxels have no size.",
            "Fix the voxel size in the header (pixel spacing) with the tool that wrote it, or export the image again.",
            path=path,
        )


def check_direction(direction: np.ndarray, path: Path | str) -> None:
    """Refuse a direction matrix that is not finite and orthonormal (within ``ORTHONORMAL_TOL``)."""
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    if np.isfinite(d).all() and np.abs(d.T @ d - np.eye(3)).max() <= ORTHONORMAL_TOL:
        return
    raise direction_refused(", ".join(f"{v:.4g}" for v in d.ravel()), path)


def direction_refused(shown: str, path: Path | str) -> InputError:
    return InputError(
        f"The image's orientation is not a rotation ({shown}): a direction matrix must be finite, "
        "with orthogonal unit axes, or the voxels have no place in space.",
        "Fix the orientation in the header (NIfTI sform/qform, NRRD space directions, MetaImage TransformMatrix) "
        "with the tool that wrote it, or export the image again.",
        path=path,
    )


def to_volume_parts(image: Decoded, path: Path | str) -> tuple[np.ndarray, Geometry]:
    if image.components != 1:
        raise components_refused(image.components, path)
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
    spacing = tuple(float(s) for s in image.spacing[:3])
    check_spacing(spacing, path)
    direction = np.asarray(image.direction, dtype=float)[:3, :3]
    check_direction(direction, path)
    geometry = Geometry(vec3(spacing), vec3(image.origin[:3]), mat3(direction))
    return np.ascontiguousarray(arr), geometry


def smallest_integers(array: np.ndarray) -> np.ndarray:
    """Whole-numbered voxels in the smallest signed type that holds them (int16, int32, int64).

    ITK widens rescaled stored integers (GDCM: int32 for a 16-bit CT with intercept -1024;
    NIfTI: float32 for a whole scl_slope/scl_inter); a CT whose values fit stays int16,
    half the memory of int32, a quarter of float. Float input must hold whole numbers.
    """
    lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    for t in (np.int16, np.int32, np.int64):
        info = np.iinfo(t)
        if info.min <= lo and hi <= info.max:
            return array if array.dtype == t else array.astype(t)
    return array
