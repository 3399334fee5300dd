"""Small hostile volume files for the IO tests and the bad-input table (issue 27, items 7 and 10)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def hostile_direction_file(folder: Path, kind: str) -> Path:
    """A 2 x 2 x 2 volume whose direction is no rotation, in the format and flavour ``kind`` names."""
    import struct

    matrices = {
        "zero": np.zeros((3, 3)),
        "nan": np.full((3, 3), np.nan),
        "shear": np.array([[1, 0.5, 0], [0, 1, 0], [0, 0, 1.0]]),
    }
    what, suffix = kind.split(".", 1)
    m = matrices[what]
    path = folder / f"{what}_direction.{suffix}"
    if suffix == "mha":
        header = (
            "ObjectType = Image\nNDims = 3\nBinaryData = True\nCompressedData = False\n"
            f"TransformMatrix = {' '.join(str(v) for v in m.T.ravel())}\nOffset = 0 0 0\nElementSpacing = 1 1 1\n"
            "DimSize = 2 2 2\nElementType = MET_SHORT\nElementDataFile = LOCAL\n"
        )
        path.write_bytes(header.encode() + bytes(16))
    elif suffix == "nrrd":
        vectors = " ".join("({},{},{})".format(*m[:, i]) for i in range(3))
        header = (
            "NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: 2 2 2\n"
            f"space directions: {vectors}\nendian: little\nencoding: raw\nspace origin: (0,0,0)\n\n"
        )
        path.write_bytes(header.encode() + bytes(16))
    else:  # NIfTI: a valid file whose sform rows are then overwritten (nibabel refuses to write NaN)
        import nibabel as nib

        image = nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4))
        image.set_qform(None, code=0)
        image.set_sform(np.eye(4), code=1)
        nib.save(image, str(path))
        blob = bytearray(path.read_bytes())
        for r in range(3):
            blob[280 + 16 * r : 296 + 16 * r] = struct.pack("<4f", *m[r], 0.0)
        path.write_bytes(bytes(blob))
    return path


def huge_header_file(folder: Path, suffix: str) -> Path:
    """A header that declares 1000^3 int16 voxels (2 GB) over about 2 KB of data."""
    import gzip
    import zlib

    data = np.random.default_rng(0).integers(0, 255, 2048, dtype=np.uint8).tobytes()
    path = folder / f"huge{suffix}"
    if suffix in (".nii", ".nii.gz"):
        import nibabel as nib

        header = nib.Nifti1Header()
        header.set_data_shape((1000, 1000, 1000))
        header.set_data_dtype(np.int16)
        header.set_sform(np.eye(4), code=1)
        blob = header.binaryblock + bytes(4) + data
        path.write_bytes(gzip.compress(blob) if suffix == ".nii.gz" else blob)
    elif suffix in (".nrrd", ".nrrd-gzip"):
        path = folder / "huge.nrrd"
        encoding = "gzip" if suffix == ".nrrd-gzip" else "raw"
        header = f"NRRD0004\ntype: short\ndimension: 3\nsizes: 1000 1000 1000\nendian: little\nencoding: {encoding}\n\n"
        path.write_bytes(header.encode() + (gzip.compress(data) if encoding == "gzip" else data))
    else:
        compressed = suffix == ".mha-zlib"
        path = folder / "huge.mha"
        body = zlib.compress(data) if compressed else data
        header = (
            f"ObjectType = Image\nNDims = 3\nBinaryData = True\nCompressedData = {compressed}\n"
            + (f"CompressedDataSize = {len(body)}\n" if compressed else "")
            + "DimSize = 1000 1000 1000\nElementType = MET_SHORT\nElementDataFile = LOCAL\n"
        )
        path.write_bytes(header.encode() + body)
    assert path.stat().st_size < 3000
    return path
