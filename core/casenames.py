"""The one naming rule for cases, shared by ``segment``, ``evaluate``, ``compare`` and the app.

nnU-Net / ATM'22 style: an image ``CASE_0000.nii.gz`` (channel 0) has the label
or prediction ``CASE.nii.gz``; the case id is ``CASE``. ``airway segment``
writes ``CASE.nii.gz`` for a folder of images, so its output folder can be
compared at once.

Prediction folders are matched more loosely, so that files written by earlier
versions and by ATM'22 teams keep working: for a case ``CASE`` the prediction
is the first of ``CASE``, ``CASE_airway`` (``airway segment`` before this rule)
and ``CASE_0000`` (what ATM'22 teams submitted, e.g. ``ATM_305_0000.nii.gz``),
with any volume suffix. Probability maps (``CASE_probabilities``) are never a
prediction.

When a model folder matches fewer cases than the reference holds,
:func:`missing_message` says which names were expected and which were found.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import InputError

CHANNEL_SUFFIX = "_0000"
LEGACY_MASK_SUFFIX = "_airway"  # airway segment wrote CASE_airway.nii.gz for folders until this rule
PROBABILITIES_SUFFIX = "_probabilities"
# how a prediction of CASE may be named, best first
PREDICTION_STEMS: tuple[str, ...] = ("", LEGACY_MASK_SUFFIX, CHANNEL_SUFFIX)
VOLUME_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
MASK_EXTENSION = ".nii.gz"


def stem(path: str | Path) -> str:
    """File name without its volume suffix (``ATM_001_0000.nii.gz`` -> ``ATM_001_0000``)."""
    name = Path(path).name
    low = name.lower()
    for s in VOLUME_SUFFIXES:
        if low.endswith(s):
            return name[: -len(s)]
    return name


def is_volume_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.name.lower().endswith(VOLUME_SUFFIXES)


def case_id(name: str | Path) -> str:
    """The case a file (or a bare name) belongs to: suffix and a trailing image channel ``_0000`` dropped."""
    s = stem(name)
    return s[: -len(CHANNEL_SUFFIX)] if s.endswith(CHANNEL_SUFFIX) else s


def prediction_case_id(name: str | Path) -> str:
    """The case a prediction file belongs to: also the legacy ``_airway`` suffix dropped."""
    s = stem(name)
    for suffix in (LEGACY_MASK_SUFFIX, CHANNEL_SUFFIX):
        if suffix and s.endswith(suffix):
            return s[: -len(suffix)]
    return s


def mask_name(image: str | Path, extension: str = MASK_EXTENSION) -> str:
    """What ``airway segment`` names the mask of an image in a folder: ``CASE_0000.nii.gz`` -> ``CASE.nii.gz``."""
    return f"{case_id(image)}{extension}"


def probabilities_name(image: str | Path, extension: str = MASK_EXTENSION) -> str:
    return f"{case_id(image)}{PROBABILITIES_SUFFIX}{extension}"


def volume_files(folder: str | Path) -> list[Path]:
    """Volume files of ``folder`` in name order (hidden files skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("Not a folder of cases.", "Give a folder holding .nii.gz/.mha/.nrrd files.", path=folder)
    return [p for p in sorted(folder.iterdir()) if is_volume_file(p)]


def list_references(folder: str | Path) -> dict[str, Path]:
    """``{case id: file}`` of a folder of labels or images (``CASE`` and ``CASE_0000`` are one case;
    the first in name order wins)."""
    out: dict[str, Path] = {}
    for p in volume_files(folder):
        out.setdefault(case_id(p), p)
    return out


def list_predictions(folder: str | Path) -> dict[str, Path]:
    """``{case id: file}`` of a folder of predictions: ``CASE``, else ``CASE_airway``, else ``CASE_0000``."""
    ranked: dict[str, tuple[int, Path]] = {}
    for p in volume_files(folder):
        s = stem(p)
        if s.endswith(PROBABILITIES_SUFFIX):
            continue
        cid = prediction_case_id(p)
        rest = s[len(cid) :]
        rank = PREDICTION_STEMS.index(rest) if rest in PREDICTION_STEMS else len(PREDICTION_STEMS)
        if cid not in ranked or rank < ranked[cid][0]:
            ranked[cid] = (rank, p)
    return {cid: p for cid, (_, p) in sorted(ranked.items())}


def expected_names(case: str, extension: str = MASK_EXTENSION) -> list[str]:
    return [f"{case}{suffix}{extension}" for suffix in PREDICTION_STEMS]


@dataclass
class Match:
    """How one model's folder matched the reference cases."""

    model: str
    folder: Path
    files: dict[str, Path]  # case id -> prediction file, for the matched cases
    missing: list[str] = field(default_factory=list)  # reference case ids without a prediction
    found: list[str] = field(default_factory=list)  # file names in the folder
    expected: int = 0  # reference cases

    @property
    def matched(self) -> int:
        return len(self.files)


def match_folder(model: str, folder: str | Path, cases: Iterable[str]) -> Match:
    """Which of ``cases`` the prediction folder holds, by :func:`list_predictions`."""
    folder = Path(folder)
    preds = list_predictions(folder)
    cases = list(cases)
    files = {c: preds[c] for c in cases if c in preds}
    return Match(
        model,
        folder,
        files,
        [c for c in cases if c not in preds],
        [p.name for p in volume_files(folder)],
        len(cases),
    )


def _names(names: list[str], limit: int = 6) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def missing_message(m: Match) -> str:
    """One line naming what was expected and what was found; empty when every case matched."""
    if not m.missing:
        return ""
    shown = m.missing[:3]
    expected = "; ".join(" or ".join(expected_names(c)) for c in shown)
    if len(m.missing) > len(shown):
        expected += f"; and {len(m.missing) - len(shown)} more case(s)"
    return (
        f"model '{m.model}' has a prediction for {m.matched} of {m.expected} reference case(s) in {m.folder}: "
        f"expected {expected}; found {_names(m.found)}"
    )


def no_match_error(m: Match) -> InputError:
    return InputError(
        missing_message(m) + ".",
        "Name each prediction like its case (CASE.nii.gz for the image CASE_0000.nii.gz, as `airway segment` "
        "writes), or pass --allow-missing to go on without this model's cases.",
        path=m.folder,
    )


def find_images(folder: str | Path) -> list[tuple[str, Path]]:
    """``(file stem or folder name, path)`` of each CT in ``folder``: volume files and DICOM series folders."""
    from core.io import list_dicom_series

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("--cts must be a folder of CTs.", "Give a folder holding the cases' CT files.", path=folder)
    found: list[tuple[str, Path]] = []
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            continue
        if is_volume_file(child):
            found.append((stem(child), child))
        elif child.is_dir() and list_dicom_series(child):
            found.append((child.name, child))
    if not found:
        raise InputError(
            "No CT found in this folder (no volume files, no DICOM series).",
            "Give a folder holding the cases' CT files.",
            path=folder,
        )
    return found
