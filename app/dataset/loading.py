"""The dataset's background work: opening it, loading one case, writing a reviewed label.

Job functions (``fn(..., progress=, cancel=)``, :mod:`app.workers`), Qt-free: a case loads
through the app's one loading function (:func:`app.review.case.load_case`), so a dataset case
is opened exactly as ``open_files`` opens the same files; this module only chooses which files
(the best label: reviewed if there is one, else the original) and names the prediction layers
after their model folders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.review.case import LoadedCase, load_case
from core.dataset import CaseState, Dataset, DatasetCase, DatasetState, open_dataset, read_state, update_state
from core.progress import Progress

FileStamp = tuple[str, int, int]  # (path, size, mtime_ns): a prefetched case is used only while its files are these


def _noop(*_a: Any, **_k: Any) -> None:
    return None


def stamp(path: Path | None) -> FileStamp | None:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return (str(path), -1, -1)
    return (str(path), st.st_size, st.st_mtime_ns)


def best_label(dataset: Dataset, case: DatasetCase) -> tuple[Path | None, str]:
    """The label to open and its version: the reviewed one when it exists on disk now (another window
    may have written it after the dataset was opened), else the original."""
    reviewed = dataset.reviewed_path(case.case_id)
    if reviewed.is_file():
        return reviewed, "reviewed"
    if case.reference is not None:
        return case.reference, "original"
    return None, "none"


def case_stamps(dataset: Dataset, case: DatasetCase) -> tuple[FileStamp | None, ...]:
    label, _ = best_label(dataset, case)
    return (stamp(case.image), stamp(label), *(stamp(p) for p in case.predictions.values()))


@dataclass
class OpenedDataset:
    dataset: Dataset
    state: DatasetState


def open_dataset_job(path: str | os.PathLike[str], *, progress: Progress = _noop, cancel: Any = None) -> OpenedDataset:
    progress(0, 0, f"Reading {Path(path).name}")
    dataset = open_dataset(Path(path))
    return OpenedDataset(dataset, read_state(dataset))


@dataclass
class LoadedDatasetCase:
    """A case read for the window: the loaded session, which label it opened, and the files' stamps."""

    case_id: str
    loaded: LoadedCase
    label_path: Path | None
    label_version: str  # "reviewed" | "original" | "none"
    models: list[str]  # model name of each prediction layer, in layer order
    stamps: tuple[FileStamp | None, ...] = ()
    keys: dict[str, str] = field(default_factory=dict)  # role -> core.outputs.content_key of what was read
    # what labelsReviewed/CASE held when the case was read (None: nothing): a save checks nobody wrote it since
    reviewed_key: Any = None


def load_dataset_case(
    dataset: Dataset, case_id: str, *, progress: Progress = _noop, cancel: Any = None
) -> LoadedDatasetCase:
    """CT + best label + every prediction of ``case_id`` (a job function)."""
    case = dataset.case(case_id)
    label, version = best_label(dataset, case)
    stamps = case_stamps(dataset, case)
    models = list(case.predictions)
    loaded = load_case(
        case.image,
        label,
        [case.predictions[m] for m in models],
        reference_selector=dataset.label_selector if version == "original" else None,
        progress=progress,
        cancel=cancel,
    )
    session = loaded.session
    loaded.name = case_id
    if loaded.ct is not None and getattr(loaded.ct, "blank", False):
        loaded.ct.name = f"{case_id} (labels only)"
    # the layers carry their model's name (the prediction combo, the figures, the state file's keys)
    for layer, model in zip(list(session.predictions), models):
        if layer.name != model:
            session.rename_layer(layer, model)
    keys: dict[str, str] = {}
    if session.reference is not None:
        keys["reference" if version != "reviewed" else "reviewed"] = file_content_key(session.reference)
    for layer, model in zip(session.predictions, models):
        keys[model] = file_content_key(layer)
    from core.review.persist import file_key

    reviewed_key = file_key(dataset.reviewed_path(case_id))
    return LoadedDatasetCase(case_id, loaded, label, version, models, stamps, keys, reviewed_key)


def file_content_key(layer: Any) -> str:
    """The content key of a label layer as its file holds it (its source's grid and orientation, 0/1):
    the same key for what was read and for what a save of it writes."""
    import numpy as np

    from core.outputs import content_key
    from core.volume import LabelVolume

    src = layer.source
    # as core.dataset.write_reviewed_label keys what it writes: the 0/1 mask on the file's grid
    return content_key(LabelVolume(np.asarray(src.to_file_array(layer.array), dtype=bool), src.geometry))


@dataclass
class CaseRecord:
    """What leaving (or saving) a case writes to the state file; ``seconds`` is added, the rest replaces."""

    status: str | None = None
    reviewer: str | None = None
    seconds: float = 0.0
    figures: dict[str, dict[str, float]] | None = None
    open_items: int | None = None
    keys: dict[str, str] = field(default_factory=dict)
    label_version: str | None = None
    view: dict[str, Any] | None = None

    def apply(self, cs: CaseState, stamp: str = "") -> None:
        if self.status is not None and self.status != cs.status:
            # a status change goes into the case's history as core.dataset.set_case writes it
            who = self.reviewer or cs.reviewer or ""
            cs.history.append({"time": stamp, "from": cs.status, "to": self.status, "reviewer": who})
            cs.status = self.status
        if self.reviewer:
            cs.reviewer = self.reviewer
        cs.seconds_spent = float(cs.seconds_spent) + max(0.0, self.seconds)
        if self.figures is not None:
            cs.figures = dict(self.figures)
            if self.label_version is not None:
                # the masks they were measured on, as core.dataset.figures records them: `airway dataset
                # evaluate` takes them as current while neither file changes
                if self.keys:
                    cs.keys = {**cs.keys, **self.keys}
                label = cs.keys.get("reviewed" if self.label_version == "reviewed" else "reference")
                for model in self.figures:
                    pred = cs.keys.get(model)
                    if pred and label:
                        cs.figure_keys[model] = {"prediction": pred, "label": label, "version": self.label_version}
        if self.open_items is not None:
            cs.open_items = self.open_items
        if self.keys:
            cs.keys = {**cs.keys, **self.keys}
        if self.label_version is not None:
            cs.label_version = self.label_version
        if self.view is not None:
            cs.view = dict(self.view)


def record_case(dataset: Dataset, case_id: str, record: CaseRecord, who: str | None = None) -> DatasetState:
    """Add ``record`` to the case's state under the dataset's lock (re-read, change, write)."""
    from core.dataset.state import now_iso

    def change(state: DatasetState) -> None:
        cs = state.case(case_id)
        stamp = now_iso()
        record.apply(cs, stamp)
        cs.updated = stamp

    return update_state(dataset, change, who=who)


@dataclass
class SavedReview:
    case_id: str
    pending: Any  # core.review.PendingSave, written
    path: Path
    state: DatasetState


def write_review(
    dataset: Dataset,
    case_id: str,
    pending: Any,
    record: CaseRecord,
    reviewer: str | None,
    expected: Any = None,
    overwrite: bool = False,
    *,
    progress: Progress = _noop,
    cancel: Any = None,
) -> SavedReview:
    """Write the reviewed label through core.dataset (atomic, earlier version backed up, edit log with the
    reviewer), then record the case in the state file. ``pending``: the session's snapshot of the
    reference (:meth:`core.review.Session.begin_save`), taken on the GUI thread in O(1) and copied
    here. ``expected``: the reviewed
    file's key when the case was opened (None: there was none); a review saved by someone else since raises
    SaveConflictError. ``overwrite`` (the reviewer chose it): the version on disk is kept aside
    (CASE.other-TIME.nii.gz), then replaced."""
    from core.dataset import write_reviewed_label
    from core.review.persist import file_key, keep_other_version

    progress(0, 0, f"Writing labelsReviewed/{case_id}")
    if overwrite:
        keep_other_version(dataset.reviewed_path(case_id))
        expected = "any"  # core.dataset.labels.ANY_VERSION
    # it records label_version "reviewed" and keys["reviewed"] itself
    out = write_reviewed_label(
        dataset, case_id, pending.volume, [dict(e) for e in pending.entries], reviewer=reviewer, expected=expected
    )
    pending.disk_key = file_key(out)
    record.keys.pop("reviewed", None)  # the key of the label read before: write_reviewed_label set the new one
    state = record_case(dataset, case_id, record, who=reviewer)
    return SavedReview(case_id, pending, Path(out), state)


def record_job(
    dataset: Dataset,
    case_id: str,
    record: CaseRecord,
    who: str | None,
    *,
    progress: Progress = _noop,
    cancel: Any = None,
) -> DatasetState:
    return record_case(dataset, case_id, record, who)
