"""Finding a dataset's cases: which files are one case's CT, reference and predictions.

One naming rule (:mod:`core.casenames`) matches every layout:

- nnU-Net v2: ``imagesTr/CASE_0000.nii.gz`` + ``labelsTr/CASE.nii.gz``, ``imagesTs/`` (+ ``labelsTs/``),
  ``dataset.json`` (its ``file_ending``, ``channel_names`` and ``labels``; the airway label must be named);
- ATM'22: the same folders without ``dataset.json``; its labels keep the image's ``_0000``
  (``labelsTr/ATM_001_0000.nii.gz``), which :func:`core.casenames.case_id` drops; ``imagesVal/`` holds
  the validation images;
- a folder: ``CASE_0000.*`` images beside ``CASE.*`` labels, or ``images/`` + ``labels/``;
- a CSV manifest: ``case,ct,reference,<model>...`` (paths relative to the CSV's folder).

Any other folder of masks under the dataset folder, or given as ``predictions``, is one model
(named after the folder). What matches no case is kept in :attr:`Dataset.unmatched`, so a user
sees which names did not fit instead of cases silently missing.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.casenames import case_id, is_volume_file, list_predictions, stem, volume_files
from core.errors import InputError

STATE_FILE = "airway_dataset.json"
REVIEWED_DIR = "labelsReviewed"
LAYOUTS = ("nnunet", "atm22", "folder", "csv")
SPLIT_PARTS = ("train", "validation", "test")
LABEL_VERSIONS = ("best", "reviewed", "original")

# (images, labels, subset): nnU-Net's and ATM'22's folders; "Ts" cases are held out (pinned to the test split)
NNUNET_FOLDERS: tuple[tuple[str, str, str], ...] = (
    ("imagesTr", "labelsTr", "Tr"),
    ("imagesTs", "labelsTs", "Ts"),
    ("imagesVal", "labelsVal", "Ts"),
)
FOLDER_PAIR = ("images", "labels")
# folders that hold a dataset's own files: never a model's predictions
ROLE_FOLDERS = frozenset([name for pair in NNUNET_FOLDERS for name in pair[:2]] + list(FOLDER_PAIR) + [REVIEWED_DIR])

EXPECTED = (
    "Give a dataset folder: nnU-Net v2 (imagesTr/ + labelsTr/ [+ imagesTs/, dataset.json]), ATM'22 "
    "(imagesTr/ATM_001_0000.nii.gz + labelsTr/ATM_001_0000.nii.gz), a folder of CASE_0000.nii.gz images "
    "beside CASE.nii.gz labels (or images/ + labels/), or a CSV manifest with the columns case,ct,reference"
)


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """``ATM_2`` before ``ATM_10``: digit runs compare as numbers."""
    return tuple((1, int(p)) if p.isdigit() else (0, p) for p in re.split(r"(\d+)", text) if p)


@dataclass(frozen=True)
class DatasetCase:
    """One case: its files (absolute paths) and its frozen split part."""

    case_id: str
    image: Path | None  # CT (CASE_0000.*); None for label-only datasets
    reference: Path | None  # the original label; never written by Airway Studio
    reviewed: Path | None  # labelsReviewed/CASE.nii.gz when it exists
    predictions: dict[str, Path] = field(default_factory=dict)  # model (folder name) -> mask file
    split: str | None = None  # "train" | "validation" | "test" | None (not frozen, or not in it)
    subset: str = ""  # "Tr" / "Ts" for nnU-Net and ATM'22 folders ("Ts" cases are held out), "" otherwise

    def __hash__(self) -> int:  # predictions is a dict: hash what identifies the case and its files
        return hash((self.case_id, self.image, self.reference, self.reviewed, self.split))

    def label(self, version: str = "best") -> Path | None:
        """The label file of ``version``: ``best`` (reviewed if there is one, else the original),
        ``reviewed`` or ``original``."""
        if version == "best":
            return self.reviewed if self.reviewed is not None else self.reference
        if version == "reviewed":
            return self.reviewed
        if version in ("original", "reference"):
            return self.reference
        raise InputError(f"Unknown label version '{version}'.", f"Use one of {', '.join(LABEL_VERSIONS)}.", path=None)

    @property
    def label_version(self) -> str:
        """Which version :meth:`label` ("best") gives: ``reviewed``, ``original`` or ``none``."""
        if self.reviewed is not None:
            return "reviewed"
        return "original" if self.reference is not None else "none"


@dataclass
class Dataset:
    """A dataset's cases, in case-id order, and the files that matched none."""

    root: Path  # the dataset folder (for a CSV manifest: its folder); the state file lives here
    layout: str  # one of LAYOUTS
    cases: list[DatasetCase]
    unmatched: list[Path] = field(default_factory=list)
    source: Path | None = None  # what was opened (the folder, or the CSV file)
    label_selector: str | None = None  # which label values are airway (core.volume.LabelSelector text); None: nonzero
    channels: dict[str, str] = field(default_factory=dict)  # nnU-Net channel_names ({"0": "CT"})
    file_ending: str | None = None  # nnU-Net dataset.json file_ending
    missing: list[str] = field(default_factory=list)  # files a CSV manifest names that do not exist, one line each
    notes: list[str] = field(default_factory=list)  # things a user should read (damaged state set aside, ...)
    prediction_folders: dict[str, Path] = field(default_factory=dict)  # model -> its folder (CSV: empty)
    explicit_predictions: tuple[str, ...] = ()  # the `predictions` argument, so reload() sees the same models

    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

    @property
    def reviewed_dir(self) -> Path:
        return self.root / REVIEWED_DIR

    @property
    def case_ids(self) -> list[str]:
        return [c.case_id for c in self.cases]

    @property
    def models(self) -> list[str]:
        """Every model that has a prediction for at least one case, in name order."""
        names = {m for c in self.cases for m in c.predictions}
        return sorted(names, key=natural_key)

    def case(self, case_id: str) -> DatasetCase:
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise InputError(
            f"No case '{case_id}' in the dataset ({len(self.cases)} case(s)).",
            "Check the case name (the file name without _0000 and the suffix).",
            path=self.source or self.root,
        )

    def reviewed_path(self, case_id: str) -> Path:
        """Where the reviewed label of ``case_id`` is (or will be) written."""
        return self.reviewed_dir / f"{case_id}.nii.gz"

    def replace_case(self, case: DatasetCase) -> None:
        """Put a changed :class:`DatasetCase` in place (after a reviewed label was written, ...)."""
        for i, c in enumerate(self.cases):
            if c.case_id == case.case_id:
                self.cases[i] = case
                return
        raise KeyError(case.case_id)

    def reload(self) -> Dataset:
        """Open the same dataset again (new files, the frozen split, reviewed labels)."""
        return open_dataset(self.source or self.root, predictions=self.explicit_predictions)


# -- discovery -----------------------------------------------------------------------------------------------


def open_dataset(path: str | Path, *, predictions: Sequence[str | Path] = ()) -> Dataset:
    """Open a dataset folder or CSV manifest (see the module doc).

    ``predictions``: more prediction folders, each one model named after the folder (or ``NAME=FOLDER``).
    Raises :class:`~core.errors.InputError` for a missing path, an unrecognised or empty folder, a
    dataset.json without an airway label, or a malformed manifest.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError("No such dataset folder or manifest.", "Check the path.", path=path)
    path = path.resolve()
    extra = [_parse_prediction_arg(p) for p in predictions]
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise InputError("A dataset is a folder or a CSV manifest, not a single file.", EXPECTED, path=path)
        ds = _open_csv(path)
    else:
        ds = _open_folder(path)
    _add_predictions(ds, extra)
    if not ds.cases:
        found = ", ".join(p.name for p in ds.unmatched[:6]) or "no volume files"
        raise InputError(f"No case found in this dataset (found: {found}).", EXPECTED, path=path)
    ds.source = ds.source or path
    ds.explicit_predictions = tuple(str(p) for p in predictions)
    _attach_reviewed_and_split(ds)
    return ds


def _parse_prediction_arg(arg: str | Path) -> tuple[str, Path]:
    text = str(arg)
    if "=" in text and not Path(text).exists():
        name, _, folder = text.partition("=")
        if name.strip():
            return name.strip(), Path(os.path.abspath(Path(folder).expanduser()))
    p = Path(os.path.abspath(Path(text).expanduser()))
    return p.name, p


def _open_folder(root: Path) -> Dataset:
    parent = root.parent
    if (
        root.name in ROLE_FOLDERS
        and root.name != REVIEWED_DIR
        and ((parent / "dataset.json").is_file() or root.name in ("imagesTr", "labelsTr"))
    ):
        # opened one level too deep: the state file would land among the images
        raise InputError(
            f"This is the {root.name} folder of a dataset, not the dataset.",
            f"Open its parent folder {parent}.",
            path=root,
        )
    if (root / "dataset.json").is_file() or _has_nnunet_folders(root):
        return _open_nnunet(root)
    batches = [
        d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".") and _has_nnunet_folders(d)
    ]
    if batches:
        return _open_nnunet(root, batches)
    if any((root / name).is_dir() for name in FOLDER_PAIR):
        ds = _empty(root, "folder")
        _pair_folders(ds, root / "images", root / "labels", "", ending=None)
        _scan_model_folders(ds, root, skip=set(FOLDER_PAIR))
        return ds
    if any(is_volume_file(p) for p in root.iterdir()):
        ds = _empty(root, "folder")
        _flat_folder(ds, root)
        _scan_model_folders(ds, root, skip=set())
        return ds
    manifests = [p for p in sorted(root.glob("*.csv")) if _is_manifest(p)]
    if len(manifests) == 1:  # a folder holding its manifest (and the files it names)
        return _open_csv(manifests[0])
    if len(manifests) > 1:
        raise InputError(
            f"This folder holds {len(manifests)} manifests ({', '.join(p.name for p in manifests[:4])}).",
            "Open one of them.",
            path=root,
        )
    # a folder of prediction folders only is no dataset: say what was expected
    raise InputError("Not a dataset folder: no images, labels or manifest found here.", EXPECTED, path=root)


def _empty(root: Path, layout: str) -> Dataset:
    return Dataset(root=root, layout=layout, cases=[])


def _files(folder: Path, ending: str | None) -> tuple[list[Path], list[Path]]:
    """(volume files of ``folder`` with ``ending``, the other visible files) when it exists."""
    if not folder.is_dir():
        return [], []
    vols = volume_files(folder)
    if ending is None:
        return vols, []
    low = ending.lower()
    return [p for p in vols if p.name.lower().endswith(low)], [p for p in vols if not p.name.lower().endswith(low)]


def _cases_of(ds: Dataset) -> dict[str, DatasetCase]:
    return {c.case_id: c for c in ds.cases}


def _pair_folders(
    ds: Dataset, images: Path, labels: Path, subset: str, ending: str | None, extra_channels: Iterable[str] = ()
) -> None:
    """Cases of an images folder and its labels folder (label-only when there are no images)."""
    image_files, wrong_images = _files(images, ending)
    label_files, wrong_labels = _files(labels, ending)
    ds.unmatched.extend(wrong_images + wrong_labels)
    known = _cases_of(ds)
    channel_tags = tuple(f"_{int(k):04d}" for k in extra_channels if str(k).isdigit() and int(k) != 0)
    found: dict[str, DatasetCase] = {}
    pending_channels: list[tuple[str, Path]] = []
    for p in image_files:
        s = stem(p)
        tag = next((t for t in channel_tags if s.endswith(t)), None)
        if tag is not None:  # a further channel (dataset.json names it): belongs to its case, not a case
            pending_channels.append((s[: -len(tag)], p))
            continue
        cid = case_id(p)
        if not s.endswith("_0000") or cid in found or cid in known:
            ds.unmatched.append(p)  # an image must be CASE_0000 (channel 0); duplicates are listed
            continue
        found[cid] = DatasetCase(cid, p, None, None, {}, None, subset)
    for cid, p in pending_channels:
        if cid not in found:
            ds.unmatched.append(p)
    label_only = not image_files
    for p in label_files:
        cid = case_id(p)
        case = found.get(cid)
        if case is None and label_only and cid not in known:
            found[cid] = DatasetCase(cid, None, p, None, {}, None, subset)
        elif case is not None and case.reference is None:
            found[cid] = replace(case, reference=p)
        else:
            ds.unmatched.append(p)
    ds.cases.extend(found.values())


def _flat_folder(ds: Dataset, root: Path) -> None:
    """Images ``CASE_0000.*`` and labels ``CASE.*`` side by side."""
    files = volume_files(root)
    images = [p for p in files if stem(p).endswith("_0000")]
    labels = [p for p in files if not stem(p).endswith("_0000")]
    found: dict[str, DatasetCase] = {}
    for p in images:
        cid = case_id(p)
        if cid in found:
            ds.unmatched.append(p)
        else:
            found[cid] = DatasetCase(cid, p, None, None)
    for p in labels:
        cid = case_id(p)
        case = found.get(cid)
        if case is None and not images:
            found[cid] = DatasetCase(cid, None, p, None)
        elif case is not None and case.reference is None:
            found[cid] = replace(case, reference=p)
        else:
            ds.unmatched.append(p)
    ds.cases.extend(found.values())


def _has_nnunet_folders(folder: Path) -> bool:
    return any((folder / name).is_dir() for pair in NNUNET_FOLDERS for name in pair[:2])


def _open_nnunet(root: Path, batches: Sequence[Path] = ()) -> Dataset:
    """``batches``: subfolders that each hold imagesTr/labelsTr (ATM'22 ships TrainBatch1/, TrainBatch2/)."""
    meta_path = root / "dataset.json"
    has_meta = meta_path.is_file()
    ds = _empty(root, "nnunet")
    if has_meta:
        _read_dataset_json(ds, meta_path)
    for folder in batches or [root]:
        for images, labels, subset in NNUNET_FOLDERS:
            _pair_folders(ds, folder / images, folder / labels, subset, ds.file_ending, ds.channels)
    if batches:
        ds.notes.append(f"read {len(batches)} batch folders as one dataset: {', '.join(b.name for b in batches)}")
    if not has_meta:
        atm = any(c.case_id.upper().startswith("ATM_") for c in ds.cases) or any(
            c.reference is not None and stem(c.reference).endswith("_0000") for c in ds.cases
        )
        if atm:
            ds.layout = "atm22"
        else:
            ds.notes.append("no dataset.json: read as nnU-Net v2 with any volume suffix and nonzero labels as airway")
    _scan_model_folders(ds, root, skip={b.name for b in batches})
    return ds


def _read_dataset_json(ds: Dataset, path: Path) -> None:
    fix = 'Fix dataset.json (nnU-Net v2: {"channel_names": {"0": "CT"}, "labels": {"background": 0, "airway": 1}, ...})'
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"dataset.json cannot be read ({exc}).", fix, path=path) from None
    if not isinstance(meta, dict):
        raise InputError("dataset.json is not a JSON object.", fix, path=path)
    ending = meta.get("file_ending")
    if ending is not None:
        if not isinstance(ending, str) or not ending.startswith("."):
            raise InputError(f"dataset.json's file_ending must be text like '.nii.gz', got {ending!r}.", fix, path=path)
        ds.file_ending = ending
    channels = meta.get("channel_names", meta.get("modality"))
    if isinstance(channels, dict):
        ds.channels = {str(k): str(v) for k, v in channels.items()}
    labels = meta.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise InputError("dataset.json has no 'labels' object.", fix, path=path)
    if all(str(k).isdigit() and isinstance(v, str) for k, v in labels.items()):
        labels = {v: int(k) for k, v in labels.items()}  # nnU-Net v1 wrote {"0": "background", "1": "airway"}
    ds.label_selector = _airway_selector(labels, path)


def _airway_selector(labels: dict[str, Any], path: Path) -> str | None:
    """The label selector of the airway label named in dataset.json's ``labels`` (name -> value)."""
    names = [k for k in labels if "airway" in str(k).lower()]
    if not names:
        shown = ", ".join(f"{k}: {v}" for k, v in labels.items())
        raise InputError(
            f"dataset.json names no airway label (its labels are {{{shown}}}).",
            'Name the airway label in dataset.json, e.g. "labels": {"background": 0, "airway": 1}.',
            path=path,
        )
    value = labels[names[0]]
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InputError(
            f"dataset.json's airway label '{names[0]}' must be one positive whole number, got {value!r}.",
            'Give it one value, e.g. "airway": 1.',
            path=path,
        )
    foreground = [k for k, v in labels.items() if k != names[0] and v not in (0, [0])]
    return f"value:{value}" if foreground or value != 1 else None


def _scan_model_folders(ds: Dataset, root: Path, skip: set[str]) -> None:
    """Every other folder of masks under ``root`` is one model; a folder of such folders holds several."""
    folders: list[tuple[str, Path]] = []
    for child in sorted(root.iterdir()):
        if not child.is_dir() or child.name.startswith((".", "_")) or child.name in ROLE_FOLDERS or child.name in skip:
            continue
        if any(is_volume_file(p) for p in child.iterdir()):
            folders.append((child.name, child))
            continue
        for sub in sorted(child.iterdir()):  # predictions/modelA/, predictions/modelB/
            if sub.is_dir() and not sub.name.startswith(".") and any(is_volume_file(p) for p in sub.iterdir()):
                folders.append((sub.name, sub))
    _add_predictions(ds, folders)


def _add_predictions(ds: Dataset, folders: Sequence[tuple[str, Path]]) -> None:
    known = _cases_of(ds)
    for name, folder in folders:
        if not folder.is_dir():
            raise InputError("The prediction folder does not exist.", "Check the path.", path=folder)
        model = name
        k = 2
        while model in ds.prediction_folders and ds.prediction_folders[model] != folder:
            model = f"{name} ({k})"  # two folders of one name (runs/a/preds, runs/b/preds)
            k += 1
        if ds.prediction_folders.get(model) == folder:
            continue
        ds.prediction_folders[model] = folder
        preds = list_predictions(folder)
        used = set()
        for cid, p in preds.items():
            case = known.get(cid)
            if case is None:
                continue
            used.add(p)
            known[cid] = replace(case, predictions={**case.predictions, model: p})
        for p in volume_files(folder):
            if p not in used and not stem(p).endswith("_probabilities"):
                ds.unmatched.append(p)
    ds.cases = list(known.values())


def _is_manifest(path: Path) -> bool:
    """A CSV whose header has a ``case`` column and a ``ct`` or ``reference`` one."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    low = {h.strip().lower() for h in header}
    return "case" in low and bool({"ct", "reference"} & low)


def _open_csv(path: Path) -> Dataset:
    fix = "A manifest has the header case,ct,reference then one column per model; paths may be relative to it."
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"The manifest cannot be read ({exc}).", fix, path=path) from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise InputError("The manifest is empty.", fix, path=path)
    header = [h.strip() for h in rows[0]]
    low = [h.lower() for h in header]
    if "case" not in low or not ({"ct", "reference"} & set(low)):
        raise InputError(
            f"The manifest's header is {','.join(header)}: no 'case' and 'ct'/'reference' columns.", fix, path=path
        )
    if len(set(low)) != len(low):
        raise InputError(f"The manifest's header names a column twice: {','.join(header)}.", fix, path=path)
    i_case = low.index("case")
    i_ct = low.index("ct") if "ct" in low else None
    i_ref = low.index("reference") if "reference" in low else None
    model_cols = [(i, header[i]) for i in range(len(header)) if i not in (i_case, i_ct, i_ref) and header[i]]
    ds = _empty(path.parent, "csv")
    ds.source = path
    base = path.parent
    cases: dict[str, DatasetCase] = {}
    for line, row in enumerate(rows[1:], start=2):
        cells = row + [""] * (len(header) - len(row))

        def cell(i: int | None, role: str, line: int = line, cells: list[str] = cells) -> Path | None:
            if i is None or not cells[i].strip():
                return None
            p = Path(cells[i].strip()).expanduser()
            p = p if p.is_absolute() else base / p
            if not p.exists():
                ds.missing.append(f"line {line}: {role} {p} does not exist")
                return None
            return Path(os.path.abspath(p))  # not resolve(): a symlinked file keeps its own name

        cid = cells[i_case].strip()
        ct = cell(i_ct, "ct")
        if not cid and ct is not None:
            cid = case_id(ct)
        if not cid:
            raise InputError(f"Line {line} of the manifest has no case name.", fix, path=path)
        if cid in cases:
            raise InputError(f"Case '{cid}' is listed twice in the manifest (line {line}).", fix, path=path)
        if cid.startswith(".") or any(ch in cid for ch in '/\\:*?"<>|') or cid.strip() != cid:
            # the name becomes labelsReviewed/CASE.nii.gz: it must be one plain file name
            raise InputError(
                f"Line {line} of the manifest names the case '{cid}', which cannot be a file name.",
                "Use letters, digits, '_' and '-' (e.g. ATM_001).",
                path=path,
            )
        ref = cell(i_ref, "reference")
        preds = {name: p for i, name in model_cols if (p := cell(i, f"{name} prediction")) is not None}
        cases[cid] = DatasetCase(cid, ct, ref, None, preds)
    ds.cases = list(cases.values())
    return ds


def _attach_reviewed_and_split(ds: Dataset) -> None:
    from core.dataset.state import DamagedStateError, read_state

    split: dict[str, list[str]] | None = None
    try:
        split = read_state(ds, fill=False).split
    except DamagedStateError as exc:
        ds.notes.append(str(exc))
    except InputError as exc:  # a newer version's file: left alone, the split unknown
        ds.notes.append(str(exc))
    part_of = {cid: part for part, ids in (split or {}).items() for cid in ids}
    out = []
    for c in sorted(ds.cases, key=lambda c: natural_key(c.case_id)):
        reviewed = ds.reviewed_path(c.case_id)
        out.append(replace(c, reviewed=reviewed if reviewed.is_file() else None, split=part_of.get(c.case_id)))
    ds.cases = out
    ds.unmatched = sorted(set(ds.unmatched), key=lambda p: (str(p.parent), natural_key(p.name)))
