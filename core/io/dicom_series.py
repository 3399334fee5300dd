"""DICOM series (a folder of slice files, or one multi-frame file) through pydicom.

Files are grouped by SeriesInstanceUID and ordered along the slice normal, as
GDCM and ITK do, so the origin, spacing and direction equal what ITK reads.
Unlike ITK, a series that cannot make one regular grid is refused with a
message instead of read onto a wrong one: slices of different sizes or
orientations, two slices at one position (several acquisitions in one series),
or uneven gaps (a missing slice). Compressed transfer syntaxes (JPEG baseline
and lossless, JPEG-LS, JPEG 2000, RLE) are decoded by GDCM through pydicom's
plugin (python-gdcm, Apache-2.0); pylibjpeg-libjpeg would do the same but is
GPL-3.0, which the installers could not ship.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.io.decoded import Decoded, rescaled, split_spacing

# the tags a file needs to be placed in a series; reading only these keeps the
# listing of a 600-file folder well under a second
_LISTING_TAGS = [
    "SeriesInstanceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "InstanceNumber",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SOPClassUID",
]
_GAP_TOLERANCE = 0.1  # a gap this far (relative) from the mean step means a missing or extra slice


@dataclass(frozen=True)
class DicomSeries:
    uid: str
    files: tuple[str, ...]

    @property
    def n_slices(self) -> int:
        return len(self.files)


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    if head[128:132] == b"DICM":
        return True
    # files without the Part 10 preamble: accept the usual names only, then let pydicom judge
    return path.suffix.lower() in (".dcm", ".ima", ".dicom") and len(head) >= 8


def _normal(orientation) -> np.ndarray:
    o = np.asarray([float(v) for v in orientation], dtype=float)
    return np.cross(o[:3], o[3:])


def list_dicom_series(folder: str | Path) -> list[DicomSeries]:
    """The DICOM image series in ``folder`` (not its subfolders), largest first, files in slice order."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    folder = Path(folder)
    if not folder.is_dir():
        return []
    groups: dict[str, list[tuple[float, int, str]]] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not entry.is_file() or entry.name.startswith(".") or not _is_dicom_file(Path(entry.path)):
            continue
        try:
            ds = pydicom.dcmread(entry.path, stop_before_pixels=True, specific_tags=_LISTING_TAGS, force=True)
        except (InvalidDicomError, OSError, ValueError, EOFError, TypeError, AttributeError):
            continue
        if "Rows" not in ds or "Columns" not in ds:
            continue  # not an image (a DICOMDIR, a report) or not DICOM at all
        # anonymisers sometimes blank the UID; GDCM then calls the series '' too
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        position = ds.get("ImagePositionPatient")
        orientation = ds.get("ImageOrientationPatient")
        try:
            along = (
                float(np.dot(_normal(orientation), [float(v) for v in position])) if position and orientation else 0.0
            )
        except (TypeError, ValueError):
            along = 0.0
        number = ds.get("InstanceNumber")
        try:
            number = int(number) if number is not None else 0
        except (TypeError, ValueError):
            number = 0
        groups.setdefault(uid, []).append((along, number, entry.path))
    series = [DicomSeries(uid, tuple(p for _, _, p in sorted(items))) for uid, items in groups.items()]
    return sorted(series, key=lambda s: (-s.n_slices, s.uid))


@dataclass
class _Slice:
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]
    slope: float
    intercept: float
    pixels: np.ndarray
    source: str


def _first(group, sequence: str, tag: str, default=None):
    """``group.<sequence>[0].<tag>``: where enhanced images keep per-frame and shared values."""
    seq = group.get(sequence) if group is not None else None
    if seq:
        value = seq[0].get(tag)
        if value is not None:
            return value
    return default


def _frames(ds, path: str) -> list[_Slice]:
    """The slices of one file: itself, or each frame of an enhanced (multi-frame) image."""
    pixels = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise InputError(
            f"The series has {ds.SamplesPerPixel} samples per pixel (a colour image).",
            "Give a grey-value CT series.",
            path=path,
        )
    if frames == 1:
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            raise _no_geometry(path)
        return [
            _Slice(
                np.asarray(ds.ImagePositionPatient, float),
                np.asarray(ds.ImageOrientationPatient, float),
                _pixel_spacing(ds.get("PixelSpacing"), path),
                float(ds.get("RescaleSlope", 1) or 1),
                float(ds.get("RescaleIntercept", 0) or 0),
                pixels,
                path,
            )
        ]
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or [None] * frames
    out = []
    for i in range(frames):
        own = per_frame[i]

        def look(sequence: str, tag: str, default=None):
            value = _first(own, sequence, tag)  # noqa: B023 - called in this iteration
            return value if value is not None else _first(shared, sequence, tag, default)

        position = look("PlanePositionSequence", "ImagePositionPatient")
        orientation = look("PlaneOrientationSequence", "ImageOrientationPatient")
        if position is None or orientation is None:
            raise _no_geometry(path)
        out.append(
            _Slice(
                np.asarray(position, float),
                np.asarray(orientation, float),
                _pixel_spacing(look("PixelMeasuresSequence", "PixelSpacing"), path),
                float(look("PixelValueTransformationSequence", "RescaleSlope", 1) or 1),
                float(look("PixelValueTransformationSequence", "RescaleIntercept", 0) or 0),
                pixels[i],
                f"{path} (frame {i + 1})",
            )
        )
    return out


def _no_geometry(path: str) -> InputError:
    return InputError(
        "A DICOM file of this series has no image position or orientation, so the slices cannot "
        "be placed in space (a screenshot or a secondary capture).",
        "Export the original CT series from the scanner or PACS.",
        path=path,
    )


def _pixel_spacing(value, path: str) -> tuple[float, float]:
    if value is None or len(value) < 2:
        raise InputError(
            "A DICOM file of this series has no PixelSpacing.",
            "Export the original CT series from the scanner or PACS.",
            path=path,
        )
    return float(value[0]), float(value[1])


def read_series(series: DicomSeries, folder: Path) -> Decoded:
    import pydicom

    slices: list[_Slice] = []
    for path in series.files:
        try:
            ds = pydicom.dcmread(path, force=True)
            slices.extend(_frames(ds, path))
        except InputError:
            raise
        except Exception as exc:  # pydicom raises many types for a broken or undecodable file
            hint = (
                "Install GDCM's Python package (pip install python-gdcm), or export the series uncompressed."
                if "decod" in str(exc).lower() or "plugin" in str(exc).lower()
                else "Check that the slices are complete and not truncated."
            )
            raise InputError(
                f"Could not read DICOM series {series.uid}: {str(exc).splitlines()[0][:200]}", hint, path=path
            ) from None
    return _stack(slices, series.uid, folder)


def _stack(slices: list[_Slice], uid: str, folder: Path) -> Decoded:
    first = slices[0]
    shape = first.pixels.shape
    for s in slices[1:]:
        if s.pixels.shape != shape:
            raise InputError(
                f"DICOM series {uid} mixes slice sizes ({shape[1]}x{shape[0]} and "
                f"{s.pixels.shape[1]}x{s.pixels.shape[0]} pixels).",
                "Select one series of one acquisition (e.g. with --series-uid) or re-export it.",
                path=s.source,
            )
        if not np.allclose(s.orientation, first.orientation, atol=1e-3):
            raise InputError(
                f"DICOM series {uid} mixes slice orientations (a localizer or several stacks in one series).",
                "Remove the scout/localizer images or export the axial stack alone.",
                path=s.source,
            )
    normal = _normal(first.orientation)
    along = np.array([float(np.dot(normal, s.position)) for s in slices])
    order = np.argsort(along, kind="stable")
    slices = [slices[i] for i in order]
    along = along[order]
    row, col = first.orientation[:3], first.orientation[3:]
    # DICOM's PixelSpacing is (between rows, between columns) = (y, x)
    dy, dx = first.pixel_spacing
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
        # the third axis runs from the first slice to the last, as ITK reads it (a tilted gantry stays tilted)
        third = slices[-1].position - slices[0].position
        spacing, direction = split_spacing(np.column_stack([row * dx, col * dy, third / (len(slices) - 1)]))
    else:
        spacing, direction = split_spacing(np.column_stack([row * dx, col * dy, normal]))
        spacing = (spacing[0], spacing[1], 1.0)
    # per slice (DICOM lets each slice have its own rescale); stacking promotes to the type all fit in
    array = np.stack([rescaled(s.pixels, s.slope, s.intercept) for s in slices])
    return Decoded(array, spacing, tuple(float(v) for v in slices[0].position), direction)
