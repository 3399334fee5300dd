"""Which files are the same case, by the one naming rule of :mod:`core.casenames`
(``CASE_0000.nii.gz`` image -> ``CASE.nii.gz`` label or prediction; predictions named
``CASE_airway`` or ``CASE_0000`` by earlier versions or ATM'22 teams match too)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.casenames import Match, case_id, list_predictions, list_references, match_folder

case_key = case_id  # the name this module exported before core.casenames


def list_cases(folder: str | Path) -> dict[str, Path]:
    """``{case id: file}`` of the volume files in ``folder`` (labels or CTs; hidden files skipped)."""
    return list_references(folder)


@dataclass
class CaseFiles:
    name: str
    reference: Path | None
    predictions: dict[str, Path | None] = field(default_factory=dict)


def match_models(reference_dir: str | Path, predictions: dict[str, Path]) -> dict[str, Match]:
    """How each model's folder matched the reference's cases (for the missing-case messages)."""
    names = list(list_references(reference_dir))
    return {m: match_folder(m, d, names) for m, d in predictions.items()}


def match_cases(reference_dir: str | Path | None, predictions: dict[str, Path]) -> list[CaseFiles]:
    """Every reference case with each model's file (None where a model has none).

    Without a reference folder the cases are those any model has.
    """
    per_model = {m: list_predictions(d) for m, d in predictions.items()}
    refs: dict[str, Path] = {}
    if reference_dir is not None:
        refs = list_references(reference_dir)
        names = list(refs)
    else:
        names = sorted({n for files in per_model.values() for n in files})
    return [CaseFiles(n, refs.get(n), {m: files.get(n) for m, files in per_model.items()}) for n in names]
