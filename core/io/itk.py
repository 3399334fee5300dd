"""SimpleITK: the one library that reads, writes and resamples images.

ITK is the field's reference reader (3D Slicer and ITK-SNAP agree with it), and
its geometry is ours: LPS world, spacing and origin ``(x, y, z)``, direction
columns the world directions of the index axes (see :mod:`core.volume`). This
module converts between ``sitk.Image`` and our arrays plus
:class:`~core.volume.Geometry` in one place, reads a header before any voxel
(``ImageFileReader.ReadImageInformation``) so a hostile header is refused
before it allocates, and maps ITK's exceptions to messages a user can act on.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import SimpleITK

from core.errors import InputError
from core.io.decoded import (
    Decoded,
    check_direction,
    check_spacing,
    components_refused,
    direction_refused,
    truncated,
    unreadable,
)
from core.volume import Geometry, mat3, vec3

#: SimpleITK itself. Its SWIG bindings carry no annotations, so the module is typed ``Any`` here,
#: the one boundary; the Protocols below say what core.io uses of its objects.
sitk: Any = SimpleITK


class Spatial(Protocol):
    """What ``sitk.Image`` and a reader after ``ReadImageInformation`` both tell."""

    def GetSpacing(self) -> tuple[float, ...]: ...
    def GetOrigin(self) -> tuple[float, ...]: ...
    def GetDirection(self) -> tuple[float, ...]: ...
    def GetSize(self) -> tuple[int, ...]: ...


class Image(Spatial, Protocol):
    def GetNumberOfComponentsPerPixel(self) -> int: ...


class HeaderReader(Spatial, Protocol):
    """``sitk.ImageFileReader`` once its header is read."""

    def GetNumberOfComponents(self) -> int: ...
    def GetPixelID(self) -> int: ...
    def HasMetaDataKey(self, key: str) -> bool: ...
    def GetMetaData(self, key: str) -> str: ...
    def GetFileName(self) -> str: ...
    def Execute(self) -> Image: ...


# ITK picks an ImageIO from the file name; naming it stops a .nrrd full of junk
# from being tried as every other format
IMAGE_IO = {
    ".nii": "NiftiImageIO",
    ".nii.gz": "NiftiImageIO",
    ".nrrd": "NrrdImageIO",
    ".nhdr": "NrrdImageIO",
    ".mha": "MetaImageIO",
    ".mhd": "MetaImageIO",
}
# zlib level 1: a 600-slice CT saves in seconds; the files are ~10 % larger than at ITK's default
COMPRESS_LEVEL = 1
# deflate cannot expand more than 1032:1, so a compressed file this many times smaller than
# its header's voxels cannot hold them
_DEFLATE_MAX_RATIO = 1032
# reading holds ITK's buffer and its numpy copy at once
_READ_COPIES = 2

_BYTES: dict[int, int] = {}
for _name, _size in (
    ("UInt8", 1),
    ("Int8", 1),
    ("UInt16", 2),
    ("Int16", 2),
    ("UInt32", 4),
    ("Int32", 4),
    ("UInt64", 8),
    ("Int64", 8),
    ("Float32", 4),
    ("Float64", 8),
):
    for _prefix in ("sitk", "sitkVector"):
        if hasattr(sitk, _prefix + _name):
            _BYTES[int(getattr(sitk, _prefix + _name))] = _size


def pixel_name(pixel_id: int) -> str:
    """ITK's name of a pixel type ("16-bit signed integer")."""
    return str(sitk.GetPixelIDValueAsString(int(pixel_id)))


def component_bytes(pixel_id: int) -> int:
    """Bytes of one component of ``pixel_id`` (8, the widest, for a type not listed)."""
    return _BYTES.get(int(pixel_id), 8)


def short_message(exc: BaseException) -> str:
    """ITK's exception text without its source paths and object addresses: the last line that says something."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for line in reversed(lines):
        line = re.sub(r"^(sitk::ERROR|ITK ERROR|itk::ERROR):\s*", "", line)
        line = re.sub(r"^\w+ImageIO\(0x[0-9a-f]+\):\s*", "", line)
        line = re.sub(r"^\[nrrd\]\s*", "", line)
        if line and not line.startswith("Exception thrown in SimpleITK") and not line.startswith("/"):
            return line
    return lines[-1] if lines else type(exc).__name__


# -- geometry ------------------------------------------------------------------


def geometry_of(image: Spatial) -> tuple[tuple[float, ...], tuple[float, ...], np.ndarray]:
    """Spacing, origin and direction (``d x d``, columns the axis directions) of an image or a read header."""
    dim = len(image.GetSpacing())
    spacing = tuple(float(v) for v in image.GetSpacing())
    origin = tuple(float(v) for v in image.GetOrigin())
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(dim, dim)
    return spacing, origin, direction


def to_image(array: np.ndarray, geometry: Geometry) -> Image:
    """A scalar ``(z, y, x)`` array on ``geometry`` as an ``sitk.Image`` (a copy; bool becomes uint8)."""
    data = array.view(np.uint8) if array.dtype == bool else array
    if data.dtype == np.float16:
        data = data.astype(np.float32)
    image: Any = sitk.GetImageFromArray(np.ascontiguousarray(data), isVector=False)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    made: Image = image
    return made


def from_image(image: Image) -> Decoded:
    """What a format reader hands back: the voxels (file axes reversed) and the geometry, as ITK read them.

    A negative spacing (GDCM gives one for an enhanced multi-frame file stored top down) is
    turned positive by reversing that axis, so every volume steps forward along its direction.
    """
    spacing, origin, direction = geometry_of(image)
    components = int(image.GetNumberOfComponentsPerPixel())
    array: np.ndarray = sitk.GetArrayFromImage(image)
    dim = len(spacing)
    if any(s < 0 for s in spacing):
        sizes = image.GetSize()
        spacing_list, origin_v = list(spacing), np.asarray(origin, dtype=float)
        for axis in range(dim):
            if spacing_list[axis] < 0:
                origin_v = origin_v + direction[:, axis] * spacing_list[axis] * (sizes[axis] - 1)
                spacing_list[axis] = -spacing_list[axis]
                array = np.flip(array, axis=dim - 1 - axis)
        spacing, origin = tuple(spacing_list), tuple(float(v) for v in origin_v)
        array = np.ascontiguousarray(array)
    full = np.eye(max(dim, 3))
    full[:dim, :dim] = direction
    return Decoded(array, spacing, origin, full[:3, :3], components)


# -- reading -------------------------------------------------------------------


@dataclass(frozen=True)
class _Stored:
    """Where a file's voxel data lie and how they are encoded (what the size check needs)."""

    nbytes: int  # bytes of voxel data on disk
    encoding: str  # "raw", "deflate", "text", "hex" or "unknown" (no bound)


def _text_header(path: Path, limit: int = 1 << 16) -> list[str]:
    with open(path, "rb") as f:
        head = f.read(limit)
    return head.decode("latin-1").splitlines()


def _nrrd_header(path: Path) -> tuple[dict[str, str], int]:
    """NRRD's ``key: value`` fields (keys lower case) and the header's length in bytes."""
    header_bytes = 0
    fields: dict[str, str] = {}
    for line in _text_header(path):
        header_bytes += len(line) + 1
        if not line.strip():
            break
        if ":" in line and not line.startswith("#"):
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip().lstrip("=").strip()
    return fields, header_bytes


def _nrrd_fields(path: Path) -> dict[str, str]:
    return _nrrd_header(path)[0]


def _nrrd_stored(path: Path) -> _Stored:
    fields, header_bytes = _nrrd_header(path)
    encoding = fields.get("encoding", "raw").lower()
    kind = {"raw": "raw", "gzip": "deflate", "gz": "deflate", "ascii": "text", "text": "text", "txt": "text"}.get(
        encoding, "hex" if encoding == "hex" else "unknown"
    )
    data = fields.get("data file", fields.get("datafile"))
    if data is None:
        return _Stored(path.stat().st_size - header_bytes, kind)
    if data.upper().startswith("LIST") or "%" in data or len(data.split()) > 1:
        return _Stored(0, "unknown")  # one file per slice: leave the bound to the memory check
    data_path = path.parent / data
    return _Stored(data_path.stat().st_size if data_path.is_file() else 0, kind)


def _metaimage_stored(path: Path) -> _Stored:
    header_bytes = 0
    fields: dict[str, str] = {}
    for line in _text_header(path):
        header_bytes += len(line) + 1
        key, _, value = line.partition("=")
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            break
    kind = "deflate" if fields.get("CompressedData", "False").lower() == "true" else "raw"
    data = fields.get("ElementDataFile", "LOCAL")
    if data.upper() == "LOCAL":
        return _Stored(path.stat().st_size - header_bytes, kind)
    if data.upper().startswith("LIST") or "%" in data or len(data.split()) > 1:
        return _Stored(0, "unknown")
    data_path = path.parent / data
    return _Stored(data_path.stat().st_size if data_path.is_file() else 0, kind)


def _nifti_stored(path: Path, reader: HeaderReader) -> _Stored:
    with open(path, "rb") as f:
        compressed = f.read(2) == b"\x1f\x8b"
    if compressed:
        return _Stored(path.stat().st_size, "deflate")
    offset = int(float(reader.GetMetaData("vox_offset"))) if reader.HasMetaDataKey("vox_offset") else 352
    return _Stored(path.stat().st_size - offset, "raw")


def _stored(path: Path, suffix: str, reader: HeaderReader) -> _Stored:
    if suffix in (".nii", ".nii.gz"):
        return _nifti_stored(path, reader)
    if suffix in (".nrrd", ".nhdr"):
        return _nrrd_stored(path)
    if suffix in (".mha", ".mhd"):
        return _metaimage_stored(path)
    return _Stored(0, "unknown")


def _fmt_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def check_allocation(nbytes: int, size: tuple[int, ...], pixel: str, path: Path | str) -> None:
    """Refuse, before any allocation, a volume that would not fit in the free memory."""
    import psutil

    free = int(psutil.virtual_memory().available)
    if nbytes * _READ_COPIES > free:
        raise InputError(
            f"The header declares {' x '.join(str(s) for s in size)} voxels of {pixel} ({_fmt_bytes(nbytes)}); "
            f"reading them needs about {_fmt_bytes(nbytes * _READ_COPIES)} but only {_fmt_bytes(free)} of memory is free.",
            "Close other programs, or crop or downsample the volume (e.g. in 3D Slicer) before opening it.",
            path=path,
        )


def check_header_geometry(reader: HeaderReader, path: Path, suffix: str) -> None:
    """A spacing that is not positive or a direction that is no rotation, refused before ITK reads voxels onto it."""
    spacing, _, direction = geometry_of(reader)
    check_spacing(spacing[:3], path)
    if suffix in (".nrrd", ".nhdr"):
        # ITK reads a NaN axis of NRRD's "space directions" as the identity: look at what the header says
        written = _nrrd_fields(path).get("space directions", "").lower()
        if "nan" in written or "inf" in written:
            raise direction_refused(f"space directions: {written[:120]}", path)
    full = np.eye(max(len(spacing), 3))
    full[: len(spacing), : len(spacing)] = direction
    check_direction(full[:3, :3], path)


def check_header(reader: HeaderReader, path: Path, suffix: str, stored_bytes: int | None = None) -> None:
    """What a header promises, checked against the file and the memory before a voxel is read.

    ``stored_bytes``: bytes per voxel in the file when they differ from what ITK hands back
    (NIfTI's scl_slope makes float32 of stored integers).
    """
    components = int(reader.GetNumberOfComponents())
    if components != 1:
        raise components_refused(components, path)
    check_header_geometry(reader, path, suffix)
    size = tuple(int(s) for s in reader.GetSize())
    voxels = int(np.prod(size, dtype=np.int64))
    nbytes = voxels * component_bytes(reader.GetPixelID())
    pixel = pixel_name(reader.GetPixelID())
    stored = _stored(path, suffix, reader)
    on_disk = nbytes if stored_bytes is None else voxels * stored_bytes
    needed = {"raw": on_disk, "hex": 2 * on_disk, "text": voxels, "deflate": -(-on_disk // _DEFLATE_MAX_RATIO)}
    if stored.encoding in needed and stored.nbytes < needed[stored.encoding]:
        raise InputError(
            f"The file is truncated or its header is wrong: the header declares {' x '.join(str(s) for s in size)} "
            f"voxels of {pixel} ({_fmt_bytes(on_disk)}), but the file holds only {_fmt_bytes(max(stored.nbytes, 0))} "
            "of voxel data.",
            "Copy or download it again; if it was made by a tool, check the size it wrote in the header.",
            path=path,
        )
    check_allocation(nbytes, size, pixel, path)


def read_header(path: Path, suffix: str) -> HeaderReader:
    """A reader with the header of ``path`` read (no voxels yet); unreadable headers raise ``InputError``."""
    reader: Any = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    if suffix in IMAGE_IO:
        reader.SetImageIO(IMAGE_IO[suffix])
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        if "orthonormal" in str(exc):  # ITK's NIfTI reader refuses a degenerate sform/qform itself
            raise direction_refused("neither the sform nor the qform is a rotation", path) from None
        raise unreadable(path, short_message(exc)) from None
    header: HeaderReader = reader
    return header


def read_pixels(reader: HeaderReader, path: Path) -> Decoded:
    """The voxels of a header read (and checked) by ``reader``."""
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(
            f"The file is truncated or damaged: its voxel data could not be read ({short_message(exc)[:160]}).",
            "Copy or download it again; the file on disk is incomplete or corrupt.",
            path=path,
        ) from None
    return from_image(image)


def read_file(path: Path, suffix: str) -> Decoded:
    """Header read and checked, then the voxels."""
    reader = read_header(path, suffix)
    check_header(reader, path, suffix)
    return read_pixels(reader, path)


def check_gzip_length(path: Path, expected: int) -> None:
    """Refuse a gzip file that inflates to fewer than ``expected`` bytes.

    ITK's NIfTI reader fills a truncated ``.nii.gz`` silently, so this checks the length
    gzip's trailer records (mod 2**32); only when it disagrees (a truncated file, or several
    gzip members) is the stream inflated to count, which then tells the two apart.
    """
    size = path.stat().st_size
    if size >= 18:
        with open(path, "rb") as f:
            f.seek(-4, 2)
            recorded = int.from_bytes(f.read(4), "little")
        if recorded == expected % (1 << 32):
            return
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                total += len(chunk)
                if total >= expected:
                    return
    except (EOFError, OSError, gzip.BadGzipFile):
        raise truncated(path) from None
    if total < expected:
        raise truncated(path)


# -- writing -------------------------------------------------------------------


def write_file(
    array: np.ndarray,
    spacing: tuple[float, ...],
    origin: tuple[float, ...],
    direction: np.ndarray,
    path: Path,
    compress: bool,
) -> None:
    """Write a scalar ``(z, y, x)`` array with its geometry; the format follows the suffix of ``path``.

    Raises ``OSError`` with the operating system's reason when the write fails (a full disk, a
    file size limit, a read-only folder): the caller names the output.
    """
    geometry = Geometry(vec3(spacing[:3]), vec3(origin[:3]), mat3(direction))
    image = to_image(array, geometry)
    name = path.name.lower()
    if name.endswith(".nii.gz") and compress:
        # ITK's NIfTI writer deflates at zlib's default level whatever level it is given: a 600-slice
        # CT took 38 s where zlib level 1 takes 5 (benchmarks/bench_io.py). ITK writes the plain .nii
        # into a staged file beside the target, and zlib level 1 packs it into ``path``.
        from core.staging import new_staged_file

        plain = new_staged_file(path, ".nii")
        try:
            _itk_write(image, plain, False, int(array.nbytes))
            _gzip_file(plain, path)
        finally:
            plain.unlink(missing_ok=True)
        return
    _itk_write(image, path, compress, int(array.nbytes))


def _itk_write(image: Image, path: Path, compress: bool, nbytes: int) -> None:
    writer: Any = sitk.ImageFileWriter()
    writer.SetFileName(str(path))
    writer.SetUseCompression(compress)
    writer.SetCompressionLevel(COMPRESS_LEVEL)
    try:
        writer.Execute(image)
    except RuntimeError as exc:
        raise _write_error(path, short_message(exc)) from None
    if path.name.lower().endswith((".nii", ".nii.gz")) and not _nifti_complete(path, nbytes):
        # ITK's NIfTI writer reports nothing when the file system refuses a write (it prints to
        # stderr and leaves a short file): the file is checked here
        raise _write_error(path, "the file was written only in part")


def _gzip_file(source: Path, target: Path) -> None:
    """``source`` deflated at ``COMPRESS_LEVEL`` into ``target`` (OSError, with the system's reason, on failure)."""
    import shutil

    with open(source, "rb") as raw, open(target, "wb") as out:
        with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=COMPRESS_LEVEL, mtime=0) as gz:
            shutil.copyfileobj(raw, gz, 1 << 22)


def _nifti_complete(path: Path, nbytes: int) -> bool:
    """Whether a NIfTI file just written holds its header and all ``nbytes`` of voxels."""
    try:
        with open(path, "rb") as f:
            compressed = f.read(2) == b"\x1f\x8b"
        with gzip.open(path, "rb") if compressed else open(path, "rb") as f:
            header = f.read(352)
        if len(header) < 352:
            return False
        order = "<" if int.from_bytes(header[:4], "little") == 348 else ">"
        expected = int(np.frombuffer(header[108:112], dtype=order + "f4")[0]) + nbytes
        if not compressed:
            return path.stat().st_size >= expected
        check_gzip_length(path, expected)
    except (OSError, EOFError, InputError):
        return False
    return True


def _write_error(path: Path, detail: str) -> OSError:
    """The operating system's reason a write into ``path``'s folder fails, found by a small write of our own.

    ITK's messages seldom carry it ("failed to flush pending data"); a user needs "No space left on
    device" or "File too large". Without an error from the probe, ITK's own words are the reason.
    """
    import os
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
    except OSError as exc:
        return OSError(exc.errno, exc.strerror) if exc.errno else OSError(detail)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(bytes(1 << 16))
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        if exc.errno:
            return OSError(exc.errno, exc.strerror)
    finally:
        os.unlink(probe)
    return OSError(detail)
