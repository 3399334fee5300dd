"""Read and write volumes with their geometry.

Formats: NIfTI (``.nii``, ``.nii.gz``), MetaImage (``.mha``, ``.mhd``), NRRD
(``.nrrd``, ``.nhdr``) and DICOM series (a folder; several series in one
folder: pick one by UID, by default the one with the most slices). SimpleITK
reads and writes every one of them (:mod:`core.io.itk` holds the conversion
between ``sitk.Image`` and our volumes); one module per format adds what ITK
leaves to its users, and this package the checks and messages users need:
headers checked against the file size and the free memory before any voxel is
read, direction matrices that are no rotation refused, NaN refused, DICOM
series that make no regular grid refused.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol

import numpy as np

from core.errors import GeometryError, InputError
from core.io.decoded import FIX_FORMATS as _FIX_FORMATS
from core.io.decoded import Decoded, DicomSeries, nonfinite_refused, to_volume_parts
from core.volume import Geometry, IntensityVolume, LabelSelector, LabelVolume, check_same_grid

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


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


def list_dicom_series(folder: str | Path) -> list[DicomSeries]:
    """The DICOM image series in ``folder`` (not its subfolders), largest first, files in slice order."""
    from core.io import dicom_series

    return dicom_series.list_dicom_series(folder)


def _read_dicom(folder: Path, series_uid: str | None) -> Decoded:
    from core.io.dicom_series import read_series

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
            raise InputError(
                f"No DICOM series with UID {series_uid} here; found {listed}.", "Pass one of these UIDs.", path=folder
            )
        chosen = match[0]
    return read_series(chosen, folder)


# -- reading -------------------------------------------------------------------


class _FormatModule(Protocol):
    def read(self, path: Path) -> Decoded: ...

    def write(
        self,
        array: np.ndarray,
        spacing: tuple[float, ...],
        origin: tuple[float, ...],
        direction: np.ndarray,
        path: Path,
        compress: bool,
    ) -> None: ...


def _format_module(suffix: str) -> _FormatModule | None:
    """The module that reads and writes ``suffix`` (None for DICOM and unknown suffixes)."""
    # imported on first use: `airway --help` never loads SimpleITK
    module: _FormatModule
    if suffix in (".nii", ".nii.gz"):
        from core.io import nifti_file as module
    elif suffix in (".nrrd", ".nhdr"):
        from core.io import nrrd_file as module
    elif suffix in (".mha", ".mhd"):
        from core.io import metaimage_file as module
    else:
        return None
    return module


def _read_image(path: str | Path, series_uid: str | None = None) -> Decoded:
    p = Path(path)
    if not p.exists():
        raise InputError("File or folder not found.", "Check the path and spelling.", path=p)
    if p.is_dir():
        return _read_dicom(p, series_uid)
    if p.stat().st_size == 0:
        raise InputError("The file is empty (0 bytes).", "Copy it again from its source.", path=p)
    module = _format_module(volume_suffix(p))
    if module is None:
        raise InputError(f"Unknown volume format '{volume_suffix(p) or p.name}'.", _FIX_FORMATS, path=p)
    return module.read(p)


def _to_volume_parts(image: Decoded, path: str | Path) -> tuple[np.ndarray, Geometry]:
    arr, geo = to_volume_parts(image, path)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise nonfinite_refused(int((~np.isfinite(arr)).sum()), path)
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
    if arr.dtype.kind not in "iuf":
        raise InputError(
            f"Unsupported voxel type {arr.dtype}.", "Save the CT as integer or float HU values.", path=path
        )
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
    if arr.dtype.kind == "f" and sel.mode == "bits":
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
    from core.resample import resample_array

    mask = resample_array(label.mask, label.geometry, reference.shape, reference.geometry, linear=False)
    return LabelVolume(mask, reference.geometry, name=label.name)


# -- writing -------------------------------------------------------------------


def _storable(volume: IntensityVolume | LabelVolume) -> np.ndarray:
    arr = volume.array
    if arr.dtype == bool:
        return arr.view(np.uint8)
    if arr.dtype == np.float16:
        return arr.astype(np.float32)
    return arr


def write_volume_file(
    volume: IntensityVolume | LabelVolume, path: str | Path, suffix: str | None = None, compress: bool = True
) -> None:
    """Encode ``volume`` into exactly ``path`` (no atomicity; :func:`write_volume` and core.outputs add it).

    ``.nii`` is never compressed (its name says so); the detached formats write
    their data file beside ``path``.
    """
    path = Path(path)
    suffix = suffix or volume_suffix(path)
    module = _format_module(suffix)
    if module is None:
        raise InputError(f"Cannot write '{path.name}': unknown volume format.", _FIX_FORMATS, path=path)
    g = volume.geometry
    try:
        module.write(_storable(volume), g.spacing, g.origin, g.direction_matrix, path, compress and suffix != ".nii")
    except OSError as exc:
        raise InputError(
            f"Could not write the volume: {exc.strerror or exc}",
            "Check the folder is writable and the disk has space.",
            path=path,
        ) from None


def write_volume(volume: IntensityVolume | LabelVolume, path: str | Path, compress: bool = True) -> Path:
    """Write atomically: a temporary file in the same folder, then a rename.

    A crash or a full disk never leaves a half-written file under ``path``; the
    file gets the user's umask permissions (mkstemp alone would make it 0600).
    """
    from core.staging import atomic_write

    path = Path(path)
    suffix = volume_suffix(path)
    if suffix not in VOLUME_SUFFIXES:
        raise InputError(f"Cannot write '{path.name}': unknown volume format.", _FIX_FORMATS, path=path)
    if suffix in (".mhd", ".nhdr"):
        # header + data file pairs cannot be renamed as one unit; write them in
        # a temporary folder and move the data file first, the header last
        return _write_pair(volume, path, suffix, compress)
    # core.staging: a pid-tagged hidden file (a killed writer's is cleaned later), errors name ``path``
    return atomic_write(path, lambda tmp: write_volume_file(volume, tmp, suffix, compress), suffix)


def _write_pair(volume: IntensityVolume | LabelVolume, path: Path, suffix: str, compress: bool) -> Path:
    from core.filemodes import apply_umask

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmpdir:
        tmp_header = Path(tmpdir) / path.name
        write_volume_file(volume, tmp_header, suffix, compress)
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
    "volume_suffix",
    "write_volume",
    "write_volume_file",
]
