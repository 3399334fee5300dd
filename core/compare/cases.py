"""Which files are the same case: names matched without the volume suffix and a
trailing nnU-Net channel ``_0000`` (``ATM_305_0000.nii.gz`` = ``ATM_305.nii.gz``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


def case_key(name: str) -> str:
    return name[:-5] if name.endswith("_0000") else name


def list_cases(folder: str | Path) -> dict[str, Path]:
    """``{case key: file}`` of the volume files in ``folder`` (hidden files skipped).

    When a folder holds both ``case.nii.gz`` and ``case_0000.nii.gz`` the first in
    name order wins; :func:`duplicates` names the others.
    """
    from core.errors import InputError
    from core.io import VOLUME_SUFFIXES, case_name

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("Not a folder of cases.", "Give a folder holding .nii.gz/.mha/.nrrd files.", path=folder)
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES) and not p.name.startswith("."):
            out.setdefault(case_key(case_name(p)), p)
    return out


@dataclass
class CaseFiles:
    name: str
    reference: Path | None
    predictions: dict[str, Path | None] = field(default_factory=dict)


def match_cases(reference_dir: str | Path | None, predictions: dict[str, Path]) -> list[CaseFiles]:
    """Every reference case with each model's file (None where a model has none).

    Without a reference folder the cases are those any model has.
    """
    per_model = {m: list_cases(d) for m, d in predictions.items()}
    if reference_dir is not None:
        refs = list_cases(reference_dir)
        names = list(refs)
    else:
        refs = {}
        names = sorted({n for files in per_model.values() for n in files})
    return [CaseFiles(n, refs.get(n), {m: files.get(n) for m, files in per_model.items()}) for n in names]
