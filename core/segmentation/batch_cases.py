"""The cases of a segmentation run: where each CT is, where its outputs go, reading and checking its inputs.

Shared by ``airway segment`` on one file and the batch runner (:mod:`core.segmentation.batch`), so a CT is
found, read and checked the same way whichever route segments it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.volume import IntensityVolume, LabelVolume

#: a case's CT, its reference (or None) and the warnings found reading them
CaseInputs = tuple["IntensityVolume", "LabelVolume | None", list[str]]


@dataclass(frozen=True)
class Case:
    name: str
    ct: Path
    output: Path
    probabilities: Path | None
    reference: Path | None


def find_cases(input_path: str | Path) -> list[tuple[str, Path]]:
    """``(name, path)`` of each CT: a file, a DICOM folder, or the volumes/DICOM folders inside a folder."""
    from core.errors import InputError
    from core.io import VOLUME_SUFFIXES, case_name, list_dicom_series, volume_suffix

    p = Path(input_path)
    if not p.exists():
        raise InputError("Input not found.", "Check the path given with --input.", path=p)
    if p.is_file():
        return [(case_name(p), p)]
    if list_dicom_series(p):
        return [(p.name, p)]
    found: list[tuple[str, Path]] = []
    for child in sorted(p.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_file() and volume_suffix(child) in VOLUME_SUFFIXES:
            found.append((case_name(child), child))
        elif child.is_dir() and list_dicom_series(child):
            found.append((child.name, child))
    if not found:
        raise InputError(
            "No CT found in this folder (no volume files, no DICOM series).",
            "Give a CT file, a DICOM series folder, or a folder holding such cases.",
            path=p,
        )
    return found


def read_case_inputs(case: Case, selector: str | None = None, resample: bool = False) -> CaseInputs:
    """The case's CT and reference, checked for sanity (core.sanity) before any segmentation.

    ``resample``: a reference on another grid is resampled onto the CT's (nearest
    neighbour, --resample-to-ct) instead of refused.
    """
    from core.io import read_ct, read_label, resample_label_to
    from core.sanity import check_ct, check_label, raise_errors
    from core.volume import check_same_grid

    ct = read_ct(case.ct)
    warnings = [f.message for f in raise_errors(check_ct(ct, case.ct))]
    reference = None
    if case.reference:
        reference = read_label(case.reference, selector, allow_empty=False)
        if resample and (reference.shape != ct.shape or not reference.geometry.matches(ct.geometry, 1e-3)):
            reference = resample_label_to(reference, ct)
            warnings.append(f"{case.reference}: resampled onto the CT's grid (nearest neighbour, --resample-to-ct).")
        check_same_grid(ct, reference)
        raise_errors(check_label(reference, "reference", case.reference, "--label-selector"))
    return ct, reference, warnings


def evaluate_mask(mask: Any, reference: Any, spacing_zyx: Any) -> dict[str, Any]:
    """The airway metrics of ``mask`` against ``reference`` (LabelVolumes), without the branch table."""
    from core.errors import InputError

    try:
        from core.metrics import evaluate
    except ImportError:
        raise InputError(
            "Metrics are not available in this installation (core.metrics is missing).",
            "Run without --reference, or update Airway Studio.",
        ) from None
    return evaluate(mask.mask, reference.mask, spacing_zyx).as_dict(branches=False)
