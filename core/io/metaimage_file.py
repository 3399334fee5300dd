"""MetaImage (``.mha`` with the data inside, ``.mhd`` + a data file), ITK's format.

A text header of ``Key = value`` lines ends with ``ElementDataFile``: ``LOCAL``
(the data follows in the same file) or the name of a file beside the header.
No well-kept pure-Python reader exists, and the format is small, so it is read
and written here; the tests hold it to SimpleITK's reading of the same files.
Not supported, with a message: slice lists (``LIST``, file patterns) and
``.mhd`` headers pointing at several files.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.io.decoded import Decoded, truncated, unreadable

COMPRESS_LEVEL = 1  # as core.io.nifti_file: fast saves of large volumes
_TYPES = {
    "MET_CHAR": np.int8,
    "MET_UCHAR": np.uint8,
    "MET_SHORT": np.int16,
    "MET_USHORT": np.uint16,
    "MET_INT": np.int32,
    "MET_UINT": np.uint32,
    "MET_LONG": np.int32,
    "MET_ULONG": np.uint32,
    "MET_LONG_LONG": np.int64,
    "MET_ULONG_LONG": np.uint64,
    "MET_FLOAT": np.float32,
    "MET_DOUBLE": np.float64,
}
_NAMES = {np.dtype(t): name for name, t in reversed(list(_TYPES.items()))}
_MAX_HEADER = 1 << 16


def _parse_header(blob: bytes, path: Path) -> tuple[dict[str, str], int]:
    """Header fields and the offset where the data starts (after the ElementDataFile line)."""
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(blob):
        end = blob.find(b"\n", pos)
        if end < 0:
            end = len(blob)
        line = blob[pos:end].decode("latin-1").strip()
        pos = end + 1
        if not line:
            continue
        if "=" not in line:
            raise unreadable(path, f"not a MetaImage header line: {line[:60]!r}")
        key, value = (part.strip() for part in line.split("=", 1))
        fields[key] = value
        if key == "ElementDataFile":
            return fields, pos
    raise unreadable(path, "no ElementDataFile line in the MetaImage header")


def _floats(fields: dict[str, str], keys: tuple[str, ...], n: int, default: float, path: Path) -> list[float]:
    for key in keys:
        if key in fields:
            try:
                values = [float(v) for v in fields[key].split()]
            except ValueError:
                raise unreadable(path, f"{key} is not a list of numbers: {fields[key][:60]!r}") from None
            return values[:n] + [default] * (n - len(values[:n]))
    return [default] * n


def _inflate_into(f, target: memoryview, path: Path) -> int:
    """Decompress the zlib stream from ``f`` into ``target``; the number of bytes filled."""
    inflater = zlib.decompressobj()
    pos = 0
    while pos < len(target):
        chunk = f.read(16 << 20)
        if not chunk:
            break
        try:
            piece = inflater.decompress(chunk, len(target) - pos)
            while True:
                target[pos : pos + len(piece)] = piece
                pos += len(piece)
                if not inflater.unconsumed_tail or pos >= len(target):
                    break
                piece = inflater.decompress(inflater.unconsumed_tail, len(target) - pos)
        except zlib.error:
            raise truncated(path) from None
    return pos


def read(path: Path) -> Decoded:
    with open(path, "rb") as f:
        head = f.read(_MAX_HEADER)
    if not head.lstrip().startswith((b"ObjectType", b"NDims", b"Comment", b"ObjectSubType", b"TransformType")):
        raise unreadable(path, "no MetaImage header (it starts with ObjectType or NDims)")
    fields, data_start = _parse_header(head, path)
    try:
        ndims = int(fields["NDims"])
        sizes = [int(v) for v in fields["DimSize"].split()][:ndims]
        dtype = np.dtype(_TYPES[fields["ElementType"].upper()])
    except (KeyError, ValueError):
        missing = [k for k in ("NDims", "DimSize", "ElementType") if k not in fields]
        what = f"missing {', '.join(missing)}" if missing else f"unsupported ElementType {fields.get('ElementType')}"
        raise unreadable(path, f"MetaImage header {what}") from None
    if len(sizes) != ndims or min(sizes, default=0) < 1:
        raise unreadable(path, f"DimSize {fields['DimSize']!r} does not give {ndims} sizes")
    components = int(fields.get("ElementNumberOfChannels", "1"))
    if fields.get("BinaryDataByteOrderMSB", fields.get("ElementByteOrderMSB", "False")).lower() == "true":
        dtype = dtype.newbyteorder(">")
    else:
        dtype = dtype.newbyteorder("<")
    count = int(np.prod(sizes, dtype=np.int64)) * components
    nbytes = count * dtype.itemsize
    data_file = fields["ElementDataFile"]
    if data_file.upper() == "LOCAL":
        source = path
        offset = data_start
    elif data_file.upper().startswith("LIST") or "%" in data_file or len(data_file.split()) > 1:
        raise InputError(
            "This MetaImage header lists one data file per slice, which is not supported.",
            "Save the volume as one .mha (or .nii.gz) file, e.g. in 3D Slicer or with SimpleITK.",
            path=path,
        )
    else:
        source = (path.parent / data_file) if not Path(data_file).is_absolute() else Path(data_file)
        offset = 0
        if not source.is_file():
            raise InputError(
                f"The data file '{data_file}' named by this MetaImage header is missing.",
                "Keep the .mhd header and its data file together in one folder.",
                path=path,
            )
    header_size = int(fields.get("HeaderSize", "0"))
    compressed = fields.get("CompressedData", "False").lower() == "true"
    # decoded straight into the array: one copy of the volume in memory, not three
    data = np.empty(count, dtype=dtype)
    target = memoryview(data).cast("B")
    with open(source, "rb") as f:
        if header_size == -1 and not compressed:
            f.seek(0, 2)
            offset = f.tell() - nbytes
        else:
            offset += max(header_size, 0)
        if offset < 0:
            raise truncated(path)
        f.seek(offset)
        filled = _inflate_into(f, target, path) if compressed else f.readinto(target)
    if filled < nbytes:
        raise truncated(path)
    if not dtype.isnative:
        data = data.byteswap().view(dtype.newbyteorder("="))
    shape = sizes[::-1] + ([components] if components > 1 else [])
    array = data.reshape(shape)
    if components > 1:
        array = np.moveaxis(array, -1, 0)
    spacing = _floats(fields, ("ElementSpacing", "ElementSize"), ndims, 1.0, path)
    origin = _floats(fields, ("Offset", "Position", "Origin"), ndims, 0.0, path)
    matrix = _floats(fields, ("TransformMatrix", "Rotation", "Orientation"), ndims * ndims, 0.0, path)
    # the matrix lists the direction of index axis i as its i-th row
    rows = np.asarray(matrix).reshape(ndims, ndims) if any(matrix) else np.eye(ndims)
    direction = np.eye(3)
    n = min(ndims, 3)
    direction[:n, :n] = rows[:n, :n].T
    spacing3 = tuple(spacing[:n]) + (1.0,) * (3 - n)
    origin3 = tuple(origin[:n]) + (0.0,) * (3 - n)
    return Decoded(array, spacing3, origin3, direction, components)


def write(array: np.ndarray, spacing, origin, direction: np.ndarray, path: Path, compress: bool) -> None:
    """A ``.mhd`` path gets its data in ``<name>.raw`` / ``.zraw`` beside it (as pynrrd does for ``.nhdr``)."""
    detached = path.suffix.lower() == ".mhd"
    array = np.ascontiguousarray(array)
    dtype = array.dtype.newbyteorder("<")
    if dtype.newbyteorder("=") not in _NAMES:
        raise InputError(f"MetaImage cannot store {array.dtype} voxels.", "Save as NIfTI or NRRD instead.", path=path)
    data = array.astype(dtype, copy=False)
    if compress:
        # slab by slab from the array's own memory: no second copy of the volume as bytes
        packer = zlib.compressobj(COMPRESS_LEVEL)
        step = max(1, (64 << 20) // max(data[:1].nbytes, 1))
        payload = [packer.compress(memoryview(data[z : z + step]).cast("B")) for z in range(0, data.shape[0], step)]
        payload.append(packer.flush())
    else:
        payload = [memoryview(data).cast("B")]
    size = sum(len(chunk) for chunk in payload)
    matrix = np.asarray(direction, float).T.ravel()
    data_name = path.with_suffix(".zraw" if compress else ".raw").name if detached else "LOCAL"

    def nums(values) -> str:
        return " ".join(repr(float(v)) for v in values)

    lines = [
        "ObjectType = Image",
        "NDims = 3",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        f"CompressedData = {compress}",
        *([f"CompressedDataSize = {size}"] if compress else []),
        f"TransformMatrix = {nums(matrix)}",
        f"Offset = {nums(origin)}",
        "CenterOfRotation = 0 0 0",
        f"ElementSpacing = {nums(spacing)}",
        f"DimSize = {' '.join(str(s) for s in array.shape[::-1])}",
        f"ElementType = {_NAMES[dtype.newbyteorder('=')]}",
        f"ElementDataFile = {data_name}",
    ]
    header = ("\n".join(lines) + "\n").encode("ascii")
    if detached:
        with open(path.parent / data_name, "wb") as f:
            f.writelines(payload)
        path.write_bytes(header)
    else:
        with open(path, "wb") as f:
            f.write(header)
            f.writelines(payload)
