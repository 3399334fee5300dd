"""NIfTI-1/2 (``.nii``, ``.nii.gz``) through nibabel.

NIfTI stores a RAS affine; the project's world is LPS (as ITK, DICOM and the
other formats), so x and y flip on the way in and out. Which affine to trust
follows ITK, so a file opens where 3D Slicer and ITK-SNAP put it: the sform
when it is set and free of shear, else the qform, else the voxel sizes alone.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from core.io.decoded import Decoded, rescaled, split_spacing, truncated, unreadable

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
# zlib level 1: a 600-slice CT saves in seconds; the files are ~10 % larger than at 6
COMPRESS_LEVEL = 1


def _lps_affine(header) -> np.ndarray:
    """The 3 x 4 voxel-to-LPS matrix ITK would use for this header."""
    sform_code = int(header["sform_code"])
    qform_code = int(header["qform_code"])
    if sform_code > 0:
        sform = header.get_sform()
        _, unit = split_spacing(sform[:3, :3])
        if np.allclose(unit.T @ unit, np.eye(3), atol=1e-4) or qform_code == 0:
            return _RAS_TO_LPS @ sform[:3]
    if qform_code > 0:
        return _RAS_TO_LPS @ header.get_qform()[:3]
    zooms = [float(z) if z > 0 else 1.0 for z in header.get_zooms()[:3]]
    zooms += [1.0] * (3 - len(zooms))
    # no transform at all: ITK takes the voxel sizes along its own (LPS) axes, origin 0
    affine = np.zeros((3, 4))
    affine[:3, :3] = np.diag(zooms)
    return affine


def read(path: Path) -> Decoded:
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        image = nib.load(str(path), mmap=False)
    except (ImageFileError, ValueError, OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, (EOFError, zlib.error)):
            raise truncated(path) from None
        raise unreadable(path, str(exc)) from None
    header = image.header
    try:
        raw = np.asanyarray(image.dataobj.get_unscaled())
    except (EOFError, zlib.error, gzip.BadGzipFile):
        raise truncated(path) from None
    except (OSError, ValueError) as exc:
        text = str(exc)
        if "bytes" in text or "mmap" in text or "length" in text or "buffer" in text:
            raise truncated(path) from None
        raise unreadable(path, text) from None
    # nibabel moves scl_slope/scl_inter from the header into the array proxy on loading
    slope, inter = float(image.dataobj.slope), float(image.dataobj.inter)
    data = rescaled(np.asarray(raw), slope, inter)
    affine = _lps_affine(header)
    spacing, direction = split_spacing(affine[:, :3])
    components = 1
    if data.ndim >= 5 and data.shape[4] > 1:  # NIfTI keeps vector components on the 5th axis
        components = int(data.shape[4])
    return Decoded(data.T, spacing, tuple(float(v) for v in affine[:, 3]), direction, components)


def write(array: np.ndarray, spacing, origin, direction: np.ndarray, path: Path, compress: bool) -> None:
    import nibabel as nib

    affine = np.eye(4)
    affine[:3, :3] = _RAS_TO_LPS @ (np.asarray(direction, float) * np.asarray(spacing, float))
    affine[:3, 3] = _RAS_TO_LPS @ np.asarray(origin, float)
    image = nib.Nifti1Image(array.T, affine, dtype=array.dtype)
    # both transforms "scanner", as ITK writes them: every reader agrees on them
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    with open(path, "wb") as raw:
        if compress:
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=COMPRESS_LEVEL, mtime=0) as gz:
                image.to_file_map({"image": nib.FileHolder(fileobj=gz), "header": nib.FileHolder(fileobj=gz)})
        else:
            image.to_file_map({"image": nib.FileHolder(fileobj=raw), "header": nib.FileHolder(fileobj=raw)})
