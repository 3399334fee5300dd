"""Reading a case for review: every volume in canonical LPS orientation.

Moved down from the app so that the headless session, scripts and the GUI read
files by the same rules. Each reader also returns the
:class:`~core.volume.Reorientation` and the file's own geometry, so an edited
label can be written back exactly as it came (see :mod:`core.review.persist`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from core.errors import InputError
from core.review.persist import FileKey, PathArg, file_key
from core.volume import (
    Geometry,
    IntensityVolume,
    LabelSelector,
    LabelVolume,
    Reorientation,
    check_same_grid,
    to_canonical,
)


@dataclass
class Source:
    """Where a layer came from: enough to write it back on the file's own grid."""

    path: str | None
    geometry: Geometry  # the file's geometry (before canonical reorientation)
    reorientation: Reorientation  # file array -> canonical array
    selector: str | None = None
    # size + hash of the file when it was read: a save checks the file still holds it
    # (core.review.persist.SaveConflictError otherwise)
    disk_key: FileKey | None = None

    def to_file_array(self, canonical: np.ndarray, dtype: npt.DTypeLike | None = None) -> np.ndarray:
        """A C-ordered copy in the file's orientation, cast to ``dtype`` in the same pass: a save's
        snapshot runs on the GUI thread, and copy-then-cast of a flipped 388 x 512 x 512 label took
        500 ms against 90 ms for one pass."""
        return np.array(self.reorientation.invert(canonical), dtype=dtype, order="C")


def _identity() -> Reorientation:
    return Reorientation((0, 1, 2), (False, False, False))


def load_ct(path: PathArg) -> tuple[IntensityVolume, Reorientation]:
    """A CT in canonical orientation; 32/64-bit integer HU that fit are stored as int16
    (half the memory, and the slice views' 16-bit lookup table applies)."""
    from core.io import read_ct
    from core.sanity import check_ct, raise_errors

    ct = read_ct(Path(path))
    raise_errors(check_ct(ct, Path(path), lungs=False))  # a CT without air or body: one clear error, nothing shown
    arr = ct.array
    if arr.dtype.kind in "iu" and arr.dtype.itemsize > 2:
        lo, hi = int(arr.min()), int(arr.max())
        if -32768 <= lo and hi <= 32767:
            ct = ct.with_array(arr.astype(np.int16))
    canon, reo = to_canonical(ct)
    assert isinstance(canon, IntensityVolume)  # to_canonical keeps the volume's class
    return canon, reo


def as_bool_mask(arr: np.ndarray) -> np.ndarray:
    """Non-zero voxels as bool; 0/1 bytes are reinterpreted in place (no copy, no pass
    over a 150 MB volume but the max), everything else is compared."""
    if arr.dtype == bool:
        return arr
    if arr.dtype.itemsize == 1 and arr.dtype.kind in "iu" and arr.size and int(arr.max()) <= 1 and int(arr.min()) >= 0:
        return arr.view(np.bool_)
    out: np.ndarray = arr != 0
    return out


def _resampled(label: LabelVolume, ct: IntensityVolume) -> LabelVolume | None:
    """``label`` resampled onto the CT's grid (nearest neighbour) when the grids differ, else None."""
    if label.shape == ct.shape and label.geometry.matches(ct.geometry, 1e-3):
        return None
    from core.io import resample_label_to

    moved = resample_label_to(label, ct)
    assert isinstance(moved, LabelVolume)  # a label resampled stays a label
    return moved


def read_label_canonical(
    path: PathArg,
    ct: IntensityVolume | None,
    what: str = "label",
    selector: str | None = None,
    resample: bool = False,
) -> tuple[LabelVolume, Source]:
    """A label in canonical orientation on ``ct``'s grid, and where it came from.

    Labels are compared with the CT *after* both are made canonical, so a
    label stored with other (but equivalent) direction cosines still fits.
    ``selector`` picks the airway from a label map (core.volume.LabelSelector
    text, e.g. ``bits:8:2`` for CIP maps); default: every non-zero voxel.
    """
    from core.io import case_name, read_label, read_volume

    path = Path(path)
    key = file_key(path)
    if selector and str(LabelSelector.parse(selector)) != "nonzero":
        raw = read_label(path, selector)
    else:
        # read_volume + as_bool_mask rather than read_label: the same 'nonzero' rule
        # without a full-volume comparison for the usual 0/1 uint8 files
        vol = read_volume(path)
        if (
            vol.array.dtype.kind == "f"
            and not np.isin(np.unique(vol.array[:: max(1, vol.shape[0] // 8)]), (0.0, 1.0)).all()
        ):
            raise InputError(
                f"The {what} has fractional values, not a label.",
                "Give an integer label map (airway voxels non-zero).",
                path=path,
            )
        raw = LabelVolume(np.ascontiguousarray(as_bool_mask(vol.array)), vol.geometry, name=case_name(path))
    canon, reo = to_canonical(raw)
    canon.name = canon.name or what
    assert isinstance(canon, LabelVolume)  # to_canonical keeps the volume's class
    source = Source(str(path), raw.geometry, reo, selector, key)
    if ct is not None:
        moved = _resampled(canon, ct) if resample else None
        if moved is not None:
            # edits of a resampled label are saved on the CT's grid: the file's own grid is gone
            canon, source = moved, Source(str(path), moved.geometry, _identity(), selector, key)
        check_same_grid(ct, canon)
    if what == "reference":
        from core.sanity import check_label, raise_errors

        raise_errors(check_label(canon, what, path))
    return canon, source


def read_prediction_canonical(
    path: PathArg, ct: IntensityVolume | None, resample: bool = False
) -> tuple[LabelVolume, IntensityVolume | None, Source]:
    """A prediction file: a mask, or a probability map (floats in [0, 1], thresholded at 0.5).

    Returns the mask, the probabilities (None for a mask) and the source."""
    from core.io import case_name, read_volume

    path = Path(path)
    key = file_key(path)
    vol = read_volume(path)
    canon, reo = to_canonical(vol)
    arr = canon.array
    probs = None
    if arr.dtype.kind == "f":
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(
                f"The prediction has float values from {lo:.3g} to {hi:.3g}, neither a mask nor probabilities.",
                "Give a binary mask or a probability map with values in [0, 1].",
                path=path,
            )
        if not np.isin(np.unique(arr[:: max(1, arr.shape[0] // 8)]), (0.0, 1.0)).all():
            probs = IntensityVolume(arr.astype(np.float32, copy=False), canon.geometry, name=canon.name)
        mask = arr >= 0.5
    else:
        mask = as_bool_mask(arr)
    label = LabelVolume(np.ascontiguousarray(mask), canon.geometry, name=case_name(path))
    source = Source(str(path), vol.geometry, reo, None, key)
    if ct is not None:
        moved = _resampled(label, ct) if resample else None
        if moved is not None:
            # probabilities cannot be resampled as a label; the mask is what the metrics use
            label, probs, source = moved, None, Source(str(path), moved.geometry, _identity(), None, key)
        check_same_grid(ct, label)
    return label, probs, source


def in_memory_source(volume: LabelVolume) -> Source:
    """The source of a label made in memory (already canonical)."""
    return Source(None, volume.geometry, _identity())
