"""DICOM series (a folder of slice files, or one multi-frame file) through SimpleITK and GDCM.

GDCM (inside SimpleITK) groups the files by SeriesInstanceUID (a blank UID, as
anonymisers leave it, is the series ``''``), orders them along the slice normal
and decodes every transfer syntax a CT archive uses (JPEG baseline and
lossless, JPEG-LS, JPEG 2000, RLE); ``ImageSeriesReader`` stacks the slices onto
ITK's grid. Before any pixel is read, each file's header (read by ITK too) is
checked, because ITK reads a series that cannot make one regular grid onto a
wrong one: slices of different sizes or orientations, two slices at one
position (several acquisitions in one series), uneven gaps (a missing slice) and
slices without a position are refused with a message instead.

No pydicom here: every tag these checks need is in ITK's header dictionary. The
one thing ITK does not expose is the per-frame positions of an enhanced
multi-frame file (a sequence), so such a file is read as GDCM places it, without
the gap check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InputError
from core.io import itk
from core.io.decoded import Decoded, DicomSeries, check_direction, components_refused, smallest_integers
from core.io.itk import sitk

_GAP_TOLERANCE = 0.1  # a gap this far (relative) from the mean step means a missing or extra slice
_POSITION = "0020|0032"  # ImagePositionPatient
_ORIENTATION = "0020|0037"  # ImageOrientationPatient
_PIXEL_SPACING = "0028|0030"


def list_dicom_series(folder: str | Path) -> list[DicomSeries]:
    """The DICOM image series in ``folder`` (not its subfolders), largest first, files in slice order."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    series = []
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
        files = tuple(str(f) for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        if files:
            series.append(DicomSeries(str(uid), files))
    return sorted(series, key=lambda s: (-s.n_slices, s.uid))


@dataclass(frozen=True)
class _Slice:
    path: str
    size: tuple[int, ...]  # columns, rows, frames
    position: np.ndarray
    orientation: np.ndarray  # row direction, then column direction
    pixel_id: int


def _floats(reader: itk.HeaderReader, key: str) -> np.ndarray | None:
    if not reader.HasMetaDataKey(key):
        return None
    try:
        values = np.asarray([float(v) for v in str(reader.GetMetaData(key)).strip().split("\\")], dtype=float)
    except ValueError:
        return None
    return values if values.size and np.isfinite(values).all() else None


def _no_geometry(path: str) -> InputError:
    return InputError(
        "A DICOM file of this series has no image position or orientation, so the slices cannot "
        "be placed in space (a screenshot or a secondary capture).",
        "Export the original CT series from the scanner or PACS.",
        path=path,
    )


def _header(reader: Any, path: str, uid: str) -> _Slice:
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(
            f"Could not read DICOM series {uid}: {itk.short_message(exc)[:200]}",
            "Check that the slices are complete and not truncated.",
            path=path,
        ) from None
    components = int(reader.GetNumberOfComponents())
    if components != 1:
        raise components_refused(components, path)
    size = tuple(int(s) for s in reader.GetSize())
    size = size + (1,) * (3 - len(size))
    if size[2] > 1:  # enhanced multi-frame: positions live in per-frame sequences, GDCM reads them
        _, origin, direction = itk.geometry_of(reader)
        position = np.asarray(origin, dtype=float)
        orientation = np.r_[direction[:, 0], direction[:, 1]]
    else:
        found_position, found_orientation = _floats(reader, _POSITION), _floats(reader, _ORIENTATION)
        if found_position is None or found_orientation is None or found_position.size != 3:
            raise _no_geometry(path)
        if found_orientation.size != 6:
            raise _no_geometry(path)
        spacing = _floats(reader, _PIXEL_SPACING)
        if spacing is None or spacing.size < 2:
            raise InputError(
                "A DICOM file of this series has no PixelSpacing.",
                "Export the original CT series from the scanner or PACS.",
                path=path,
            )
        position, orientation = found_position, found_orientation
    return _Slice(path, size, position, orientation, int(reader.GetPixelID()))


def _normal(orientation: np.ndarray) -> np.ndarray:
    return np.cross(orientation[:3], orientation[3:])


def _check_grid(slices: list[_Slice], uid: str, folder: Path) -> list[_Slice]:
    """The slices in order along the normal, or a refusal naming what breaks the regular grid."""
    first = slices[0]
    row, col = first.orientation[:3], first.orientation[3:]
    check_direction(np.column_stack([row, col, np.cross(row, col)]), first.path)
    for s in slices[1:]:
        if s.size[:2] != first.size[:2]:
            raise InputError(
                f"DICOM series {uid} mixes slice sizes ({first.size[0]}x{first.size[1]} and "
                f"{s.size[0]}x{s.size[1]} pixels).",
                "Select one series of one acquisition (e.g. with --series-uid) or re-export it.",
                path=s.path,
            )
        if not np.allclose(s.orientation, first.orientation, atol=1e-3):
            raise InputError(
                f"DICOM series {uid} mixes slice orientations (a localizer or several stacks in one series).",
                "Remove the scout/localizer images or export the axial stack alone.",
                path=s.path,
            )
    if len(slices) > 1 and any(s.size[2] > 1 for s in slices):
        raise InputError(
            f"DICOM series {uid} holds {len(slices)} files of which some are multi-frame images.",
            "Open one multi-frame file alone (move it to a folder of its own) or export the series as single slices.",
            path=folder,
        )
    normal = _normal(first.orientation)
    along = np.array([float(np.dot(normal, s.position)) for s in slices])
    order = np.argsort(along, kind="stable")
    slices = [slices[i] for i in order]
    along = along[order]
    if len(slices) > 1:
        steps = np.diff(along)
        mean = (along[-1] - along[0]) / (len(slices) - 1)
        if steps.min() < 1e-3 * max(mean, 1e-3):
            z = along[int(np.argmin(steps))]
            raise InputError(
                f"DICOM series {uid} has two slices at the same position ({z:.2f} mm along the slice normal): "
                "it holds several acquisitions or reconstructions.",
                "Export one reconstruction alone, or split the series by acquisition in a DICOM tool.",
                path=folder,
            )
        worst = int(np.argmax(np.abs(steps - mean)))
        if abs(steps[worst] - mean) > _GAP_TOLERANCE * mean:
            raise InputError(
                f"DICOM series {uid} is not evenly spaced: the gap after slice {worst + 1} of {len(slices)} is "
                f"{steps[worst]:.3g} mm where the others average {mean:.3g} mm (a missing or extra slice).",
                "Check that the whole series was copied, or export it again.",
                path=folder,
            )
    return slices


def read_series(series: DicomSeries, folder: Path) -> Decoded:
    reader: Any = sitk.ImageFileReader()  # an untyped SWIG object (see core.io.itk)
    reader.SetImageIO("GDCMImageIO")
    slices = _check_grid([_header(reader, f, series.uid) for f in series.files], series.uid, folder)
    size = (slices[0].size[0], slices[0].size[1], slices[0].size[2] * len(slices))
    nbytes = int(np.prod(size, dtype=np.int64)) * max(itk.component_bytes(s.pixel_id) for s in slices)
    itk.check_allocation(nbytes, size, itk.pixel_name(slices[0].pixel_id), folder)
    paths = [s.path for s in slices]
    try:
        if slices[0].size[2] > 1:  # one multi-frame file: a 3D image of its own (the series reader adds an axis)
            file_reader: Any = sitk.ImageFileReader()
            file_reader.SetImageIO("GDCMImageIO")
            file_reader.SetFileName(paths[0])
            image: itk.Image = file_reader.Execute()
        else:
            series_reader: Any = sitk.ImageSeriesReader()
            series_reader.SetImageIO("GDCMImageIO")
            series_reader.SetFileNames(paths)
            image = series_reader.Execute()
    except RuntimeError as exc:
        raise InputError(
            f"Could not read DICOM series {series.uid}: {itk.short_message(exc)[:200]}",
            "Check that the slices are complete and not truncated.",
            path=folder,
        ) from None
    decoded = itk.from_image(image)
    del image
    array, origin, direction = decoded.array, decoded.origin, decoded.direction
    if float(np.dot(direction[:, 2], np.cross(direction[:, 0], direction[:, 1]))) < 0:
        # frames stored against the slice normal (an enhanced file written top down): ITK flips the
        # third axis; reverse it so every series steps along the normal, as its single-slice twin
        last = np.asarray(origin) + direction[:, 2] * decoded.spacing[2] * (array.shape[0] - 1)
        origin = tuple(float(v) for v in last)
        direction = direction.copy()
        direction[:, 2] = -direction[:, 2]
        array = np.ascontiguousarray(array[::-1])
    # GDCM widens a rescaled 16-bit CT to int32 and a fractional slope to float64
    if array.dtype.kind in "iu" and array.dtype.itemsize > 2:
        array = smallest_integers(array)
    elif array.dtype == np.float64:
        array = array.astype(np.float32)
    return Decoded(array, decoded.spacing, origin, direction, decoded.components)
