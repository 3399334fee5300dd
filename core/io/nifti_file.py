"""NIfTI-1/2 (``.nii``, ``.nii.gz``) through SimpleITK's NiftiImageIO.

ITK chooses the transform (the sform when it is set and free of shear, else the
qform, else the voxel sizes alone), turns NIfTI's RAS into LPS and applies
scl_slope/scl_inter, so a file opens where 3D Slicer and ITK-SNAP put it. On top:
stored integers scaled by whole numbers stay integers (ITK gives float32; a CT
stays int16), a vector image (NIfTI keeps components on its 5th axis) is
refused, and a truncated ``.nii.gz``, which ITK would fill silently, is refused.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from core.io import itk
from core.io.decoded import Decoded, components_refused, nonfinite_refused, smallest_integers, truncated

# NIfTI datatype codes of integer and float voxels
_INTEGER_TYPES = {2, 4, 8, 256, 512, 768, 1024, 1280}
_FLOAT_TYPES = {16: "f4", 64: "f8"}
_CHUNK_VOXELS = 1 << 22


def _check_finite(path: Path, compressed: bool, offset: int, voxels: int, kind: str) -> None:
    """Refuse NaN or infinite voxels, streaming through the file (no volume-sized allocation).

    Also proves a ``.nii.gz`` holds all its voxels (a truncated one ends the stream early).
    """
    opener = gzip.open if compressed else open
    bad = seen = 0
    try:
        with opener(path, "rb") as f:
            header = f.read(offset)
            # sizeof_hdr (348 for NIfTI-1, 540 for NIfTI-2) tells the byte order
            order = "<" if int.from_bytes(header[:4], "little") in (348, 540) else ">"
            dtype = np.dtype(order + kind)
            while seen < voxels:
                chunk = f.read(min(_CHUNK_VOXELS, voxels - seen) * dtype.itemsize)
                if len(chunk) < dtype.itemsize:
                    break
                values = np.frombuffer(chunk[: len(chunk) - len(chunk) % dtype.itemsize], dtype=dtype)
                bad += int(values.size - np.count_nonzero(np.isfinite(values)))
                seen += values.size
    except (EOFError, OSError, gzip.BadGzipFile, zlib.error):
        raise truncated(path) from None
    if seen < voxels:
        raise truncated(path)
    if bad:
        raise nonfinite_refused(bad, path)


def _meta(reader: itk.HeaderReader, key: str, default: str) -> str:
    return str(reader.GetMetaData(key)) if reader.HasMetaDataKey(key) else default


def read(path: Path) -> Decoded:
    suffix = ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"
    reader = itk.read_header(path, suffix)
    size = tuple(int(s) for s in reader.GetSize())
    if len(size) >= 5 and size[4] > 1:
        # the 5th NIfTI axis holds vector components; ITK reads them as a 5D scalar image
        raise components_refused(size[4], path)
    bitpix = int(_meta(reader, "bitpix", "8"))
    itk.check_header(reader, path, suffix, max(bitpix // 8, 1))
    with open(path, "rb") as f:
        compressed = f.read(2) == b"\x1f\x8b"
    offset = int(float(_meta(reader, "vox_offset", "352")))
    voxels = int(np.prod(size, dtype=np.int64))
    datatype = int(_meta(reader, "datatype", "0"))
    if datatype in _FLOAT_TYPES:
        # ITK's NIfTI library turns NaN into 0 without a word: count them in the file itself
        _check_finite(path, compressed, offset, voxels, _FLOAT_TYPES[datatype])
    elif compressed:
        itk.check_gzip_length(path, offset + voxels * bitpix // 8)
    decoded = itk.read_pixels(reader, path)
    slope = float(_meta(reader, "scl_slope", "1"))
    inter = float(_meta(reader, "scl_inter", "0"))
    scaled = slope != 0 and (slope, inter) != (1.0, 0.0)
    if (
        scaled
        and decoded.array.dtype.kind == "f"
        and int(_meta(reader, "datatype", "0")) in _INTEGER_TYPES
        and slope.is_integer()
        and inter.is_integer()
    ):
        decoded = Decoded(
            smallest_integers(decoded.array), decoded.spacing, decoded.origin, decoded.direction, decoded.components
        )
    return decoded


# ITK writes both transforms "scanner" (qform and sform codes 1): every reader agrees on them
write = itk.write_file
