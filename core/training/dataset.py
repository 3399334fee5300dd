"""Finding training cases in the layouts users already have, and splitting them.

- ``DATA/imagesTr`` + ``DATA/labelsTr`` (ATM'22, nnU-Net): an image
  ``ATM_001_0000.nii.gz`` matches a label of the same name or, nnU-Net style,
  the name without the ``_0000`` channel suffix (``ATM_001.nii.gz``).
- a CSV file of ``image,label`` pairs (header optional, paths relative to the
  CSV's folder), given as DATA itself or as ``DATA/dataset.csv``.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

from core.casenames import case_id
from core.errors import ConfigError, InputError


@dataclass(frozen=True)
class CaseFiles:
    name: str
    image: Path
    label: Path | None  # None: no label found (a bad case)


def _volume_files(folder: Path) -> list[Path]:
    from core.io import VOLUME_SUFFIXES, volume_suffix

    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file() and volume_suffix(p) in VOLUME_SUFFIXES:
            out.append(p)
        elif p.is_dir():  # a DICOM series folder
            out.append(p)
    return out


def _from_folders(root: Path) -> list[CaseFiles]:
    from core.io import case_name

    images = _volume_files(root / "imagesTr")
    labels_dir = root / "labelsTr"
    labels = {case_name(p): p for p in _volume_files(labels_dir)} if labels_dir.is_dir() else {}
    cases = []
    for img in images:
        name = case_name(img)
        # the one naming rule of `airway` (core.casenames): CASE_0000 image -> CASE label
        label = labels.get(name) or labels.get(case_id(name))
        cases.append(CaseFiles(case_id(name), img, label))
    return cases


def _from_csv(path: Path) -> list[CaseFiles]:
    from core.io import case_name

    base = path.parent
    cases = []
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if rows and rows[0][0].strip().lower() in ("image", "img", "ct"):
        rows = rows[1:]
    for i, row in enumerate(rows, 1):
        if len(row) < 2:
            raise InputError(
                f"Row {i} of {path.name} has {len(row)} column(s): {row}.",
                "Write one 'image,label' pair per line.",
                path=path,
            )
        img = (base / row[0].strip()).resolve()
        lab = (base / row[1].strip()).resolve() if row[1].strip() else None
        cases.append(CaseFiles(case_id(case_name(img)), img, lab if lab is None or lab.exists() else None))
    return cases


def discover_cases(data: str | Path) -> list[CaseFiles]:
    """The cases of a dataset folder or CSV file, sorted by name; raises if there are none."""
    data = Path(data)
    if not data.exists():
        raise InputError(
            f"Dataset {data} does not exist.",
            "Give a folder with imagesTr/ and labelsTr/, or a CSV of image,label pairs.",
        )
    if data.is_file():
        if data.suffix.lower() != ".csv":
            raise InputError(
                f"Dataset {data} is a file but not a CSV.",
                "Give a .csv of image,label pairs, or a folder with imagesTr/ and labelsTr/.",
            )
        cases = _from_csv(data)
    elif (data / "imagesTr").is_dir():
        cases = _from_folders(data)
    elif (data / "dataset.csv").is_file():
        cases = _from_csv(data / "dataset.csv")
    else:
        raise InputError(
            f"Dataset folder {data} has no imagesTr/ folder and no dataset.csv.",
            "Use the ATM'22/nnU-Net layout (imagesTr/ + labelsTr/) or a CSV of image,label pairs.",
        )
    if not cases:
        raise InputError(f"Dataset {data} holds no images.", "Put .nii.gz/.mha/.nrrd images in imagesTr/.")
    names = [c.name for c in cases]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(
            f"Dataset {data} has several images named {', '.join(dup)}.", "Give every case a unique file name."
        )
    return sorted(cases, key=lambda c: c.name)


def split_cases(
    names: list[str], val_fraction: float = 0.2, seed: int = 0, val_cases: list[str] | None = None
) -> tuple[list[str], list[str]]:
    """(train, validation) names: the user's list, or a seeded shuffle (same seed, same split).

    At least one case stays in training; with two or more cases and a
    fraction above 0, at least one goes to validation.
    """
    names = sorted(names)
    if val_cases:
        unknown = sorted(set(val_cases) - set(names))
        if unknown:
            raise ConfigError(
                f"Validation case(s) {', '.join(unknown)} are not in the dataset.",
                f"Use names from: {', '.join(names[:10])}{' ...' if len(names) > 10 else ''}.",
            )
        val = sorted(set(val_cases))
        train = [n for n in names if n not in val]
        if not train:
            raise ConfigError("Every case is a validation case; none is left to train on.", "Shorten data.val_cases.")
        return train, val
    order = list(names)
    random.Random(seed).shuffle(order)
    n_val = int(round(val_fraction * len(names)))
    if val_fraction > 0 and len(names) >= 2:
        n_val = min(max(n_val, 1), len(names) - 1)
    else:
        n_val = 0
    val = sorted(order[:n_val])
    return [n for n in names if n not in val], val
