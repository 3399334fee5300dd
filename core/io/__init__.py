"""Read and write volumes with their geometry.

Formats: NIfTI (``.nii``, ``.nii.gz``), MetaImage (``.mha``, ``.mhd``), NRRD
(``.nrrd``, ``.nhdr``) and DICOM series (a folder; several series in one
folder: pick one by UID, by default the one with the most slices). SimpleITK
does the decoding; this module adds the checks and messages users need.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import GeometryError, InputError
from core.volume import Geometry, IntensityVolume, LabelSelector, LabelVolume, check_same_grid

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
_FIX_FORMATS = "Use a NIfTI (.nii/.nii.gz), MetaImage (.mha/.mhd), NRRD (.nrrd/.nhdr) file or a DICOM series folder."


def _sitk():
    import SimpleITK as sitk  # lazy: keeps `airway --help` fast

    return sitk


def volume_suffix(path: str | Path) -> str:
    name = str(path).lower()
    for s in VOLUME_SUFFIXES:
        if name.endswith(s):
            return s
    return Path(name).suffix


def case_name(path: str | Path) -> str:
    """File name without the volume suffix (``ATM_001_0000.nii.gz`` -> ``ATM_001_0000``)."""
    p = Path(path)
    s = volume_suffix(p)
    return p.name[: -len(s)] if s and p.name.lower().endswith(s) else p.name


# -- DICOM ---------------------------------------------------------------------

@dataclass(frozen=True)
class DicomSeries:
    uid: str
    files: tuple[str, ...]

    @property
    def n_slices(self) -> int:
        return len(self.files)


def list_dicom_series(folder: str | Path) -> list[DicomSeries]:
    """The DICOM series in ``folder``, largest first."""
    sitk = _sitk()
    folder = Path(folder)
    reader = sitk.ImageSeriesReader()
    uids = reader.GetGDCMSeriesIDs(str(folder)) or ()
    series = [DicomSeries(uid, tuple(reader.GetGDCMSeriesFileNames(str(folder), uid))) for uid in uids]
    return sorted(series, key=lambda s: (-s.n_slices, s.uid))


def _read_dicom(folder: Path, series_uid: str | None):
    sitk = _sitk()
    series = list_dicom_series(folder)
    if not series:
        raise InputError(
            "No DICOM series found in this folder.",
            "Choose the folder that holds the .dcm slice files (not its parent), or open a NIfTI/MHA/NRRD file.",
            path=folder,
        )
    if series_uid is None:
        chosen = series[0]
    else:
        match = [s for s in series if s.uid == series_uid]
        if not match:
            listed = ", ".join(f"{s.uid} ({s.n_slices} slices)" for s in series)
            raise InputError(f"No DICOM series with UID {series_uid} here; found {listed}.", "Pass one of these UIDs.", path=folder)
        chosen = match[0]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(chosen.files))
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise InputError(
            f"Could not read DICOM series {chosen.uid}: {_first_line(exc)}",
            "Check that the slices are complete and not truncated.",
            path=folder,
        ) from None


# -- reading -------------------------------------------------------------------

def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # ITK puts the useful description last
    useful = [ln for ln in lines if "Description" in ln or "ERROR" in ln.upper()]
    text = (useful or lines or [type(exc).__name__])[-1]
    return text.replace("Description:", "").strip()[:200]


def _read_image(path: str | Path, series_uid: str | None = None):
    sitk = _sitk()
    p = Path(path)
    if not p.exists():
        raise InputError("File or folder not found.", "Check the path and spelling.", path=p)
    if p.is_dir():
        return _read_dicom(p, series_uid)
    if p.stat().st_size == 0:
        raise InputError("The file is empty (0 bytes).", "Copy it again from its source.", path=p)
    try:
        image = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        raise InputError(
            f"Could not read this file as an image: {_first_line(exc)}",
            f"The file may be corrupt or truncated, or of an unsupported format. {_FIX_FORMATS}",
            path=p,
        ) from None
    if volume_suffix(p) in (".nii", ".nii.gz"):
        _check_nifti_file(p)
    return image


@dataclass(frozen=True)
class _NiftiLayout:
    data_start: int
    data_end: int
    float_dtype: str | None  # numpy dtype of float voxel data, None for integers


def _nifti_layout(header: bytes) -> _NiftiLayout | None:
    """Where a NIfTI-1/2 file's voxel data lies, from its header."""
    import struct

    for endian in "<>":
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            datatype = struct.unpack(endian + "h", header[70:72])[0]
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            vox_offset = int(struct.unpack(endian + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            dims = struct.unpack(endian + "8q", header[16:80])
            datatype = struct.unpack(endian + "h", header[12:14])[0]
            bitpix = struct.unpack(endian + "h", header[14:16])[0]
            vox_offset = struct.unpack(endian + "q", header[168:176])[0]
            break
    else:
        return None
    n = int(np.prod([max(int(d), 1) for d in dims[1 : dims[0] + 1]], dtype=np.int64))
    start = max(vox_offset, 348)
    floats = {16: endian + "f4", 64: endian + "f8"}
    return _NiftiLayout(start, start + n * bitpix // 8, floats.get(datatype))


def _check_nifti_file(path: Path) -> None:
    """Refuse truncated NIfTI files and float NIfTI files holding NaN/inf.

    ITK's NIfTI reader zero-fills missing data and turns NaN into 0 without a
    word: both would be silent wrong answers.
    """
    import gzip
    import zlib

    truncated = InputError(
        "The file is truncated: its voxel data ends before the size its header declares.",
        "Copy or download it again; the file on disk is incomplete.",
        path=path,
    )
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    try:
        with opener(path, "rb") as f:
            layout = _nifti_layout(f.read(544))
    except (OSError, EOFError):
        raise truncated from None
    if layout is None:
        return
    if layout.float_dtype is not None:
        # float data has to be read anyway to look for NaN; that also proves it complete
        try:
            with opener(path, "rb") as f:
                f.seek(layout.data_start)
                data = f.read(layout.data_end - layout.data_start)
        except (OSError, EOFError, zlib.error):
            raise truncated from None
        if len(data) < layout.data_end - layout.data_start:
            raise truncated
        bad = int((~np.isfinite(np.frombuffer(data, dtype=layout.float_dtype))).sum())
        if bad:
            raise InputError(
                f"The image has {bad} NaN or infinite voxels.",
                "Replace them (for example with -1024 HU for a CT, 0 for a label) in the file and load it again.",
                path=path,
            )
        return
    if not gz:
        if path.stat().st_size < layout.data_end:
            raise truncated
        return
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        isize = int.from_bytes(f.read(4), "little")
    if isize == layout.data_end % 2**32:
        return
    # The gzip trailer disagrees: decompress the stream to be sure.
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    total = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            total += len(d.decompress(chunk))
    if not d.eof or total < layout.data_end:
        raise truncated


def _to_volume_parts(image, path: str | Path) -> tuple[np.ndarray, Geometry]:
    sitk = _sitk()
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"The image has {image.GetNumberOfComponentsPerPixel()} components per voxel (colour or vector image).",
            "Give a scalar (grey-value) CT or label volume.",
            path=path,
        )
    dim = image.GetDimension()
    if dim == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
        dim = 3
    if dim != 3 or min(image.GetSize()) < 1:
        raise InputError(
            f"Expected a 3D volume, got a {dim}D image of size {tuple(image.GetSize())}.",
            "Give a 3D volume (a NIfTI/MHA/NRRD volume or a whole DICOM series folder), not a single slice.",
            path=path,
        )
    arr = sitk.GetArrayFromImage(image)
    geo = Geometry(image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    return arr, geo


def read_volume(path: str | Path, series_uid: str | None = None) -> IntensityVolume:
    """Any scalar 3D image in its native dtype."""
    img = _read_image(path, series_uid)
    arr, geo = _to_volume_parts(img, path)
    return IntensityVolume(arr, geo, name=case_name(path))


def read_ct(path: str | Path, series_uid: str | None = None) -> IntensityVolume:
    """A CT in HU. Float images with NaN/inf are refused (see IntensityVolume)."""
    img = _read_image(path, series_uid)
    arr, geo = _to_volume_parts(img, path)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise InputError(
            f"The CT has {bad} NaN or infinite voxels.",
            "Replace them (for example with -1024 HU) in the file and load it again.",
            path=path,
        )
    if arr.dtype.kind not in "iuf":
        raise InputError(f"Unsupported voxel type {arr.dtype}.", "Save the CT as integer or float HU values.", path=path)
    return IntensityVolume(arr, geo, name=case_name(path))


def read_label(
    path: str | Path,
    selector: str | LabelSelector | None = None,
    reference: IntensityVolume | LabelVolume | None = None,
    allow_empty: bool = True,
    tol: float = 1e-3,
) -> LabelVolume:
    """A binary airway mask (bool) chosen from a label map by ``selector``.

    With ``reference``, the label must share its grid (``GeometryError`` names
    both); resampling is never implicit, see :func:`resample_label_to`.
    """
    sel = selector if isinstance(selector, LabelSelector) else LabelSelector.parse(selector)
    img = _read_image(path)
    arr, geo = _to_volume_parts(img, path)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise InputError("The label has NaN values.", "Save labels as integers.", path=path)
        if sel.mode == "bits":
            arr = arr.astype(np.int64)
    mask = np.ascontiguousarray(sel.apply(arr))
    label = LabelVolume(mask, geo, name=case_name(path))
    if reference is not None:
        check_same_grid(reference, label, tol)
    if not allow_empty and not mask.any():
        raise InputError(
            f"The label is empty: no voxel matches the selector '{sel}'.",
            "Check the file, or choose another label selector (e.g. bits:8:2 for CIP label maps).",
            path=path,
        )
    return label


def resample_label_to(label: LabelVolume, reference: IntensityVolume | LabelVolume) -> LabelVolume:
    """Nearest-neighbour resampling of ``label`` onto ``reference``'s grid (explicit, opt-in)."""
    sitk = _sitk()
    src = to_sitk(LabelVolume(label.mask.astype(np.uint8), label.geometry))
    ref = to_sitk(IntensityVolume(np.zeros(reference.shape, np.uint8), reference.geometry))
    out = sitk.Resample(src, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return LabelVolume(sitk.GetArrayFromImage(out).astype(bool), reference.geometry, name=label.name)


# -- writing -------------------------------------------------------------------

def to_sitk(volume: IntensityVolume | LabelVolume):
    sitk = _sitk()
    arr = volume.array
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    elif arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    img.SetSpacing(volume.geometry.spacing)
    img.SetOrigin(volume.geometry.origin)
    img.SetDirection(volume.geometry.direction)
    return img


def write_volume_file(volume: IntensityVolume | LabelVolume, path: str | Path, suffix: str | None = None,
                      compress: bool = True) -> None:
    """Encode ``volume`` into exactly ``path`` (no atomicity; :func:`write_volume` and core.outputs add it)."""
    sitk = _sitk()
    suffix = suffix or volume_suffix(path)
    try:
        sitk.WriteImage(to_sitk(volume), str(path), useCompression=compress and suffix != ".nii")
    except RuntimeError as exc:
        raise InputError(f"Could not write the volume: {_first_line(exc)}", "Check the folder is writable and the disk has space.", path=path) from None


def write_volume(volume: IntensityVolume | LabelVolume, path: str | Path, compress: bool = True) -> Path:
    """Write atomically: a temporary file in the same folder, then a rename.

    A crash or a full disk never leaves a half-written file under ``path``; the
    file gets the user's umask permissions (mkstemp alone would make it 0600).
    """
    from core.filemodes import apply_umask

    path = Path(path)
    suffix = volume_suffix(path)
    if suffix not in VOLUME_SUFFIXES:
        raise InputError(f"Cannot write '{path.name}': unknown volume format.", _FIX_FORMATS, path=path)
    if suffix in (".mhd", ".nhdr"):
        # header + data file pairs cannot be renamed as one unit; write them in
        # a temporary folder and move the data file first, the header last
        return _write_pair(volume, path, suffix, compress)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    try:
        write_volume_file(volume, tmp, suffix, compress)
        apply_umask(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise InputError(f"Could not write the volume: {exc.strerror}", "Check the folder is writable and the disk has space.", path=path) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _write_pair(volume, path: Path, suffix: str, compress: bool) -> Path:
    from core.filemodes import apply_umask

    sitk = _sitk()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmpdir:
        tmp_header = Path(tmpdir) / path.name
        try:
            sitk.WriteImage(to_sitk(volume), str(tmp_header), useCompression=compress)
        except RuntimeError as exc:
            raise InputError(f"Could not write the volume: {_first_line(exc)}", "Check the folder is writable.", path=path) from None
        for f in Path(tmpdir).iterdir():
            apply_umask(f)
            if f.name != path.name:
                os.replace(f, path.parent / f.name)
        os.replace(tmp_header, path)
    return path


def check_case_geometry(ct: IntensityVolume, *others: LabelVolume, tol: float = 1e-3) -> None:
    """Every label/prediction must lie on the CT's grid."""
    for other in others:
        check_same_grid(ct, other, tol)


__all__ = [
    "DicomSeries",
    "GeometryError",
    "VOLUME_SUFFIXES",
    "case_name",
    "check_case_geometry",
    "list_dicom_series",
    "read_ct",
    "read_label",
    "read_volume",
    "resample_label_to",
    "to_sitk",
    "volume_suffix",
    "write_volume",
    "write_volume_file",
]
