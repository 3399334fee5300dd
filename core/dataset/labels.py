"""Label versions: a reviewed reference goes to ``labelsReviewed/CASE.nii.gz``; the original is never touched.

Each save is atomic (:func:`core.io.write_volume`), keeps the grid of the case's original label
(or CT), keeps the first earlier reviewed version once as ``CASE.orig.nii.gz``, and appends to
the case's edit log ``CASE.edits.jsonl`` (one JSON object a line: time, reviewer, tool, voxels
added and removed), which a crash mid-append cannot make unreadable (a broken last line is
skipped on reading).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from core.dataset.layout import Dataset, DatasetCase
from core.dataset.state import DatasetState, _user, now_iso, update_state
from core.errors import GeometryError, InputError
from core.review.persist import FileKey, SaveConflictError, file_key
from core.volume import Geometry, LabelVolume, mat3, vec3

EDIT_LOG_SUFFIX = ".edits.jsonl"
ANY_VERSION = "any"  # write_reviewed_label(expected=...): no check of what the reviewed file holds


def edit_log_path(dataset: Dataset, case_id: str) -> Path:
    return dataset.reviewed_dir / f"{case_id}{EDIT_LOG_SUFFIX}"


def _file_grid(path: Path) -> tuple[tuple[int, int, int], Geometry]:
    """Shape (z, y, x) and geometry of a volume file from its header only."""
    from core.io import volume_suffix
    from core.io.itk import read_header

    if path.is_dir():  # a DICOM series: read it whole (rare for a dataset's CT)
        from core.io import read_volume

        vol = read_volume(path)
        return vol.shape, vol.geometry
    reader = read_header(path, volume_suffix(path))
    size = tuple(int(s) for s in reader.GetSize())
    if len(size) != 3:
        raise InputError(f"Expected a 3D volume, the file holds {len(size)} dimensions.", path=path)
    geo = Geometry(vec3(reader.GetSpacing()), vec3(reader.GetOrigin()), mat3(reader.GetDirection()))
    return (size[2], size[1], size[0]), geo


def grid_source(case: DatasetCase) -> Path | None:
    """The file whose grid a reviewed label must share: the original label, else the CT."""
    return case.reference or case.image or case.reviewed


def check_grid(case: DatasetCase, mask: LabelVolume) -> None:
    source = grid_source(case)
    if source is None:
        return
    shape, geo = _file_grid(source)
    if tuple(mask.shape) != shape or not mask.geometry.matches(geo):
        raise GeometryError(
            f"The reviewed label of {case.case_id} is not on the grid of {source.name}: it has shape {mask.shape}, "
            f"{mask.geometry.describe()}; {source.name} has shape {shape}, {geo.describe()}.",
            "Save the mask on the original label's grid (in the file's own orientation), as the review session "
            "does when it saves.",
        )


def _previous_mask(dataset: Dataset, case: DatasetCase, shape: tuple[int, ...]) -> np.ndarray | None:
    from core.io import read_label

    prev = case.reviewed if case.reviewed is not None else case.reference
    if prev is None:
        return None
    selector = None if case.reviewed is not None else dataset.label_selector
    try:
        vol = read_label(prev, selector)
    except InputError:
        return None  # an unreadable earlier version: the log counts nothing for this save
    return vol.mask if vol.shape == shape else None


def append_edit_log(path: Path, entries: list[dict[str, Any]]) -> Path:
    """Append JSON lines in one write (O_APPEND: concurrent appends do not interleave within a line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def read_edit_log(dataset: Dataset, case_id: str) -> list[dict[str, Any]]:
    """The case's edit log, oldest first; lines that cannot be read (a crash mid-append) are skipped."""
    path = edit_log_path(dataset, case_id)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


def write_reviewed_label(
    dataset: Dataset,
    case_id: str,
    mask: LabelVolume,
    edits: list[dict[str, Any]] | None = None,
    *,
    reviewer: str | None = None,
    tool: str = "save",
    expected: FileKey | None | str = ANY_VERSION,
) -> Path:
    """Write the reviewed label of ``case_id`` (see the module doc); the state's ``label_version`` becomes
    ``reviewed`` and its ``keys["reviewed"]`` the mask's content key. ``edits``: the session's edit entries
    (each gets ``time`` and ``reviewer`` when it has none). Returns the written path.

    ``expected``: what the reviewed file held when this reviewer opened the case (its
    :func:`core.review.persist.file_key`, or None: there was none). When the file on disk is no longer
    that (another annotator saved a review meanwhile), :class:`core.review.persist.SaveConflictError` is
    raised and nothing is written. The default writes whatever is there (its first version kept once)."""
    from core.io import write_volume
    from core.outputs import content_key
    from core.review.persist import backup_once

    case = dataset.case(case_id)
    check_grid(case, mask)
    target = dataset.reviewed_path(case_id)
    if expected != ANY_VERSION and file_key(target) != expected:
        raise SaveConflictError(target, "reviewed label")
    binary = mask.mask
    previous = _previous_mask(dataset, case, binary.shape)
    target.parent.mkdir(parents=True, exist_ok=True)
    backup_once(target)
    out = LabelVolume(np.ascontiguousarray(binary, dtype=np.uint8), mask.geometry, name=case_id)
    write_volume(out, target)
    who = reviewer or _user()
    stamp = now_iso()
    entries = [{**e, "time": e.get("time", stamp), "reviewer": e.get("reviewer", who)} for e in (edits or [])]
    summary: dict[str, Any] = {
        "time": stamp,
        "reviewer": who,
        "tool": tool,
        "file": target.name,
        "voxels": int(np.count_nonzero(binary)),
        "from": "reviewed" if case.reviewed is not None else "original",
    }
    if previous is not None:
        summary["added"] = int(np.count_nonzero(binary & ~previous))
        summary["removed"] = int(np.count_nonzero(previous & ~binary))
    append_edit_log(edit_log_path(dataset, case_id), [*entries, summary])
    key = content_key(LabelVolume(binary, mask.geometry))

    def change(state: DatasetState) -> None:
        c = state.case(case_id)
        c.label_version = "reviewed"
        c.keys["reviewed"] = key
        if reviewer:
            c.reviewer = reviewer
        c.updated = stamp

    update_state(dataset, change)
    dataset.replace_case(replace(case, reviewed=target))
    return target
