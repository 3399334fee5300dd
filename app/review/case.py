"""The open case: CT, reference, predictions, analysis results and review state.

Plain Python plus Qt signals, no widgets. Views read from the case and never
compute: the case asks core (io, tree, metrics, regions) in background jobs
(:mod:`app.workers`) and announces results through signals. Every volume is
held in canonical LPS orientation (:func:`core.volume.to_canonical`), so array
axis 0 runs inferior->superior, axis 1 anterior->posterior, axis 2
right->left whatever the file's direction cosines.

The voxels, their edits (undo/redo), region keys and review statuses live in a
headless :class:`core.review.Session` (``case.session``); the case adapts its
events to signals, runs its analysis in background jobs (debounced after
edits) and keeps what only views need (cursor, active prediction, overlay
bounds). Loading lives in :mod:`core.review.loading`; the analysis functions
here are module-level and Qt-free so scripts and tests can run them synchronously.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as dataclasses_replace
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal

from core.errors import Cancelled, InputError
from core.outputs import refuse_input_as_output
from core.regions import ErrorRegion
from core.review import STATUS_KEYS, STATUSES, AnalysisJob, AnalysisResult, LabelLayer, Session
from core.review.loading import Source, as_bool_mask, load_ct, read_label_canonical, read_prediction_canonical  # noqa: F401
from core.review.project import PROJECT_FORMAT, PROJECT_VERSION, read_project, write_project  # noqa: F401
from core.volume import IntensityVolume, LabelVolume, Reorientation, check_same_grid

STATUS_LABELS = dict(STATUSES)
# Edits wait this long for the next stroke before metrics and regions are recomputed.
REANALYSIS_DELAY_MS = 700

Progress = Callable[..., None]


def _noop(*_a: Any, **_k: Any) -> None:
    return None


def _check_cancel(cancel: Any) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled()


# -- data records ----------------------------------------------------------------


@dataclass
class PredictionEntry:
    """One prediction of the case and what was computed from it."""

    name: str
    label: LabelVolume  # canonical, bool mask
    probabilities: IntensityVolume | None = None  # canonical, float in [0, 1]
    path: str | None = None  # file it came from (None: made in the app)
    source: str = "file"  # "file", "model:<checkpoint>", "simulated"
    metrics: Any = None  # core.metrics.AirwayMetrics
    regions: list[ErrorRegion] | None = None
    statuses: dict[str, str] = field(default_factory=dict)  # region key -> status key (the session's table)
    analysis_error: str | None = None
    warnings: list[str] = field(default_factory=list)  # e.g. core.gate: the mask does not look like this CT's airway
    origin: Source | None = None  # file geometry/orientation, for saving edits back
    layer: LabelLayer | None = None  # set when the case adds it to its session

    @property
    def mask(self) -> np.ndarray:
        return self.label.mask

    def status(self, region_index: int) -> str:
        regions = self.regions or []
        if not 0 <= region_index < len(regions):
            return "unreviewed"
        return self.statuses.get(regions[region_index].key, "unreviewed")

    def reviewed_count(self) -> int:
        return sum(1 for g in self.regions or [] if self.statuses.get(g.key, "unreviewed") != "unreviewed")


@dataclass
class LoadedCase:
    """What a loading job hands back to the GUI thread (all canonical)."""

    ct: IntensityVolume | None = None
    ct_path: str | None = None
    reorientation: Reorientation | None = None
    reference: LabelVolume | None = None
    reference_path: str | None = None
    reference_selector: str | None = None
    reference_source: Source | None = None
    predictions: list[PredictionEntry] = field(default_factory=list)
    name: str = ""
    demo: bool = False


# -- loading (worker side, Qt-free) ------------------------------------------------


def load_label(
    path: str | os.PathLike,
    ct: IntensityVolume | None,
    what: str = "label",
    selector: str | None = None,
    resample: bool = False,
) -> LabelVolume:
    """A label in canonical orientation on ``ct``'s grid (see core.review.loading)."""
    return read_label_canonical(path, ct, what, selector, resample)[0]


def load_prediction(path: str | os.PathLike, ct: IntensityVolume | None, resample: bool = False) -> PredictionEntry:
    """A prediction file: a mask, or a probability map (floats in [0, 1], thresholded at 0.5)."""
    label, probs, src = read_prediction_canonical(path, ct, resample)
    return PredictionEntry(name=label.name, label=label, probabilities=probs, path=str(path), origin=src)


BLANK_CT_HU = -1000  # air: a neutral dark grey under every window preset


def blank_ct(like: Any, name: str = "") -> IntensityVolume:
    """The neutral background of a label-only case: air on the label's grid, without
    memory (one broadcast value), flagged ``blank`` so no HU, no segmentation is offered."""
    arr = np.broadcast_to(np.int16(BLANK_CT_HU), tuple(like.shape))
    ct = IntensityVolume(arr, like.geometry, name=name or "no CT")
    ct.blank = True  # type: ignore[attr-defined]
    return ct


def is_blank_ct(ct: Any) -> bool:
    return ct is not None and bool(getattr(ct, "blank", False))


def load_case(
    ct_path: str | os.PathLike | None,
    reference_path: str | os.PathLike | None = None,
    prediction_paths: Sequence[str | os.PathLike] = (),
    *,
    current_ct: IntensityVolume | None = None,
    reference_selector: str | None = None,
    progress: Progress = _noop,
    cancel: Any = None,
    resample_to_ct: bool = False,
) -> LoadedCase:
    """Read whatever is given; without ``ct_path`` labels are checked against ``current_ct``,
    and without either they open as a label-only case over a blank CT (:func:`blank_ct`).

    ``resample_to_ct``: labels on another grid are resampled onto the CT's
    (nearest neighbour) instead of refused with a GeometryError.
    """
    steps = int(ct_path is not None) + int(reference_path is not None) + len(prediction_paths)
    done = 0
    out = LoadedCase()
    ct = current_ct
    if ct_path is None and ct is None and (reference_path is not None or prediction_paths):
        from core.io import case_name

        first = reference_path if reference_path is not None else prediction_paths[0]
        # the first label gives the grid; it is read again below like any other
        grid = load_label(
            first,
            None,
            "reference" if reference_path is not None else "prediction",
            reference_selector if reference_path is not None else None,
        )
        out.name = case_name(first)
        ct = out.ct = blank_ct(grid, f"{out.name} (labels only)")
        del grid
    if ct_path is not None:
        progress(done, steps, f"Reading CT {Path(ct_path).name}")
        ct, reo = load_ct(ct_path)
        out.ct, out.ct_path, out.reorientation = ct, str(ct_path), reo
        from core.io import case_name

        out.name = case_name(ct_path)
        done += 1
        _check_cancel(cancel)
    if reference_path is not None:
        progress(done, steps, f"Reading reference {Path(reference_path).name}")
        out.reference, out.reference_source = read_label_canonical(
            reference_path, ct, "reference", reference_selector, resample=resample_to_ct
        )
        out.reference_path = str(reference_path)
        out.reference_selector = reference_selector
        done += 1
        _check_cancel(cancel)
    for p in prediction_paths:
        progress(done, steps, f"Reading prediction {Path(p).name}")
        out.predictions.append(load_prediction(p, ct, resample=resample_to_ct))
        done += 1
        _check_cancel(cancel)
    progress(steps, steps, "Loaded")
    return out


# -- analysis (worker side, Qt-free) ------------------------------------------------


@dataclass
class TreeResult:
    tree: Any
    branch_map: np.ndarray | None  # int32 branch id per voxel (0 outside), canonical grid
    generations: dict[int, int]  # branch id -> generation


# Volumes at least this large are analysed in a child process (see
# app.workers.call_in_process): the engine's GIL-holding steps would otherwise
# stall the window for 0.2-0.6 s each on a 512 x 512 x 600 case.
PROCESS_ANALYSIS_MIN_VOXELS = 32_000_000


def _generations(tree: Any) -> dict[int, int]:
    return {int(b.id): int(b.generation) for b in tree.branches}


def _parse_tree(mask: np.ndarray, spacing: Sequence[float], progress: Progress = _noop, cancel: Any = None) -> Any:
    from core.tree import parse_tree

    return parse_tree(mask, tuple(spacing), progress=progress, cancel=cancel)


def _metrics_and_regions(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    tree: Any,
    progress: Progress = _noop,
    cancel: Any = None,
    name: str = "prediction",
) -> tuple[Any, list]:
    from core.metrics import evaluate
    from core.regions import find_error_regions

    progress(0, 2, f"Metrics of {name}")
    metrics = evaluate(pred, ref, tuple(spacing), tree=tree, cancel=cancel)
    _check_cancel(cancel)
    progress(1, 2, f"Error regions of {name}")
    regions = find_error_regions(pred, ref, tree, tuple(spacing), cancel=cancel)
    return metrics, regions


def _tree_in_child(ref_spec: tuple, spacing: Sequence[float]) -> Any:
    from app.workers import attach_shared

    shm, ref = attach_shared(ref_spec)
    try:
        return _parse_tree(ref, spacing)
    finally:
        del ref
        shm.close()


def _analysis_in_child(pred_spec: tuple, ref_spec: tuple, spacing: Sequence[float], tree: Any) -> tuple[Any, list]:
    from app.workers import attach_shared

    shm_p, pred = attach_shared(pred_spec)
    shm_r, ref = attach_shared(ref_spec)
    try:
        return _metrics_and_regions(pred, ref, spacing, tree)
    finally:
        del pred, ref
        shm_p.close()
        shm_r.close()


def _use_process(volume: Any, in_process: bool | None) -> bool:
    import sys

    if in_process is not None:
        return bool(in_process)
    # a frozen build would need multiprocessing.freeze_support() in its entry point
    # before a spawned child could run anything but the GUI again: threads there
    return not getattr(sys, "frozen", False) and volume.array.size >= PROCESS_ANALYSIS_MIN_VOXELS


def analyse_reference(
    reference: LabelVolume, *, in_process: bool | None = None, progress: Progress = _noop, cancel: Any = None
) -> TreeResult:
    """Parse the reference tree (core.tree) and its branch label map.

    ``in_process``: parse in the child process (default: for large volumes)."""
    from app.workers import SharedArray, call_in_process

    progress(0, 2, "Parsing the reference tree")
    if _use_process(reference, in_process):
        with SharedArray(reference.mask) as shared:
            tree = call_in_process(_tree_in_child, shared.spec, reference.spacing_zyx, cancel=cancel)
    else:
        tree = _parse_tree(reference.mask, reference.spacing_zyx, progress, cancel)
    _check_cancel(cancel)
    progress(1, 2, "Labelling branches")
    bmap = np.asarray(tree.branch_label_map())
    progress(2, 2, "Tree ready")
    return TreeResult(tree, bmap, _generations(tree))


def analyse_prediction(
    prediction: LabelVolume,
    reference: LabelVolume,
    tree: Any,
    *,
    in_process: bool | None = None,
    progress: Progress = _noop,
    cancel: Any = None,
) -> tuple[Any, list]:
    """Metrics (core.metrics) and FP/FN regions (core.regions) of one prediction.

    ``in_process``: compute in the child process (default: for large volumes)."""
    from app.workers import SharedArray, call_in_process

    name = prediction.name or "prediction"
    if _use_process(reference, in_process):
        progress(0, 1, f"Metrics and error regions of {name}")
        with SharedArray(prediction.mask) as p, SharedArray(reference.mask) as r:
            out = call_in_process(_analysis_in_child, p.spec, r.spec, reference.spacing_zyx, tree, cancel=cancel)
    else:
        out = _metrics_and_regions(prediction.mask, reference.mask, reference.spacing_zyx, tree, progress, cancel, name)
    progress(2, 2, "Analysis ready")
    return out


def _job_in_child(job: AnalysisJob, ref_spec: tuple, pred_specs: list) -> AnalysisResult:
    from app.workers import attach_shared

    held = []
    try:
        shm, job.reference = attach_shared(ref_spec)
        held.append(shm)
        preds = []
        for (name, _, rev), spec in zip(job.predictions, pred_specs):
            shm, arr = attach_shared(spec)
            held.append(shm)
            preds.append((name, arr, rev))
        job.predictions = preds
        return job.run()
    finally:
        job.reference, job.predictions = None, []  # type: ignore[assignment]
        for shm in held:
            shm.close()


def run_review_analysis(
    job: AnalysisJob, *, in_process: bool | None = None, progress: Progress = _noop, cancel: Any = None
) -> tuple[AnalysisResult, TreeResult | None]:
    """A session's analysis job (its arrays are copies: edits may go on meanwhile),
    in a child process for large volumes; with the branch map when the tree is new."""
    from contextlib import ExitStack

    from app.workers import SharedArray, call_in_process

    if _use_process(LabelVolume(job.reference), in_process) and (job.predictions or job.tree is None):
        with ExitStack() as stack:
            ref = stack.enter_context(SharedArray(job.reference))
            preds = [stack.enter_context(SharedArray(a)) for _, a, _ in job.predictions]
            light = AnalysisJob(
                None,
                job.ref_revision,
                job.geometry,
                job.tree,  # type: ignore[arg-type]
                [(n, None, r) for n, _, r in job.predictions],
            )  # type: ignore[misc]
            result = call_in_process(_job_in_child, light, ref.spec, [p.spec for p in preds], cancel=cancel)
    else:
        result = job.run(progress, cancel)
    tree = None
    if job.tree is None:
        tree = TreeResult(result.tree, np.asarray(result.tree.branch_label_map()), _generations(result.tree))
    return result, tree


# -- region helpers ----------------------------------------------------------------


def mask_box(mask: np.ndarray, *, progress: Progress = _noop, cancel: Any = None) -> tuple | None:
    """Per-axis half-open (start, stop) of a mask's non-zero voxels, or None when empty."""
    from core.surfaces import bounding_box

    box = bounding_box(mask)
    return None if box is None else tuple(zip(box.start, box.stop))


SAGITTAL_COPY_MIN_BYTES = 32 << 20


def x_major_copy(array: np.ndarray, *, progress: Progress = _noop, cancel: Any = None) -> np.ndarray:
    """The volume with x as the slowest axis, (x, z, y): a sagittal slice is then one
    contiguous block instead of one element per cache line (6-20 ms -> <1 ms at 512^2 x 600)."""
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def union_box(a: tuple | None, b: tuple | None) -> tuple | None:
    if a is None:
        return b
    if b is None:
        return a
    return tuple((min(p[0], q[0]), max(p[1], q[1])) for p, q in zip(a, b))


def region_box(region: ErrorRegion) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Half-open (start, stop) voxel box of a region (``bbox`` is per-axis pairs)."""
    return tuple(lo for lo, _ in region.bbox), tuple(hi for _, hi in region.bbox)  # type: ignore[return-value]


def region_centre(region: ErrorRegion) -> tuple[int, int, int]:
    """The voxel to jump to: the region's own voxel nearest its centroid (a shell's or
    a curved branch's centroid often lies outside it, where the overlay shows nothing)."""
    if region.focus_zyx is not None:
        return tuple(int(v) for v in region.focus_zyx)  # type: ignore[return-value]
    return tuple(int(round(c)) for c in region.centroid_zyx)  # type: ignore[return-value]


# -- the case ----------------------------------------------------------------------


class Case(QObject):
    """State of the open case, shared by every view.

    Signals: ``ctChanged``, ``referenceChanged``, ``treeChanged``,
    ``predictionsChanged``, ``activePredictionChanged(int)``,
    ``cursorChanged(object)`` (a (z, y, x) tuple), ``metricsChanged(int)``,
    ``regionsChanged(int)``, ``regionStatusChanged(int, int, str)``
    (prediction, region, status), ``activeRegionChanged(int)``,
    ``jobStarted(object)`` (an :class:`app.workers.Job`, for the window to
    track) and ``modifiedChanged(bool)``.

    Editing (through ``case.session``): ``labelChanged(str layer, object box)``
    after every voxel change (box: half-open (z, y, x) pairs), with the layer's
    new revision in ``case.revision(layer)``: views key their caches by it;
    ``historyChanged()`` (undo/redo availability); ``staleChanged(bool)``
    (metrics/regions lag behind the edits until the debounced re-analysis).
    """

    ctChanged = Signal()
    referenceChanged = Signal()
    treeChanged = Signal()
    predictionsChanged = Signal()
    activePredictionChanged = Signal(int)
    cursorChanged = Signal(object)
    metricsChanged = Signal(int)
    regionsChanged = Signal(int)
    regionStatusChanged = Signal(int, int, str)
    activeRegionChanged = Signal(int)
    focusBoxRequested = Signal(object)  # ((z0, y0, x0), (z1, y1, x1)): slice views zoom to fit it
    jobStarted = Signal(object)
    modifiedChanged = Signal(bool)
    labelChanged = Signal(str, object)
    historyChanged = Signal()
    staleChanged = Signal(bool)

    def __init__(self, parent: QObject | None = None, auto_analyse: bool = True):
        super().__init__(parent)
        self.auto_analyse = auto_analyse
        self._analysis_timer = QTimer(self)
        self._analysis_timer.setSingleShot(True)
        self._analysis_timer.timeout.connect(self.start_analysis)
        self._unsubscribe: Any = None
        self._clear_state()

    def _clear_state(self) -> None:
        self.name = ""
        self.ct: IntensityVolume | None = None
        self.ct_path: str | None = None
        self.reorientation: Reorientation | None = None
        self.reference: LabelVolume | None = None
        self.reference_path: str | None = None
        self.reference_selector: str | None = None
        self.tree: Any = None
        self.branch_map: np.ndarray | None = None
        self.generations: dict[int, int] = {}
        self.tree_error: str | None = None
        self.predictions: list[PredictionEntry] = []
        self.active_index = -1
        self.active_region = -1
        self.cursor: tuple[int, int, int] = (0, 0, 0)
        self.view_state: dict[str, Any] = {}
        self.project_path: str | None = None
        self.demo = False
        self.modified = False
        self._jobs: list[Any] = []
        # bounding boxes of masks (keyed by id, the array kept alive beside its box):
        # slice views draw overlays only inside them
        self._boxes: dict[int, tuple[np.ndarray, tuple | None]] = {}
        self._ct_by_x: np.ndarray | None = None  # x-major CT copy for sagittal slices (large CTs)
        self._analysis_job: Any = None
        self._analysis_again = False
        self._stale = False
        self._pending_index_statuses: dict[str, dict[int, str]] = {}  # v1 projects: by position
        self._new_session(None)

    def _new_session(self, ct: IntensityVolume | None, **options: Any) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._analysis_timer.stop()
        self.session = Session(ct, **options)
        self._unsubscribe = self.session.subscribe(self._on_session)

    # -- session events ------------------------------------------------------------
    def _on_session(self, kind: str, payload: Any) -> None:
        if kind == "change":
            layer = self.session.layer(payload.layer)
            hit = self._boxes.get(id(layer.array))
            if hit is not None and hit[0] is layer.array and payload.box is not None:
                # grow only: an eraser leaves the box a little loose, never too small
                self._boxes[id(layer.array)] = (layer.array, union_box(hit[1], payload.box))
            self.labelChanged.emit(payload.layer, payload.box)
            self._set_modified()
            self._set_stale(True)
            if self.auto_analyse and self.reference is not None:
                self._analysis_timer.start(REANALYSIS_DELAY_MS)
        elif kind == "history":
            self.historyChanged.emit()
        elif kind == "status":
            pred, key, status = payload
            regs = self.predictions[pred].regions or []
            for i, g in enumerate(regs):
                if g.key == key:
                    self.regionStatusChanged.emit(pred, i, status)
            self._set_modified()

    def _set_stale(self, value: bool) -> None:
        if value != self._stale:
            self._stale = value
            self.staleChanged.emit(value)

    @property
    def stale(self) -> bool:
        """Metrics and regions lag behind edits (a re-analysis is pending or running)."""
        return self._stale

    def revision(self, layer: str = "reference") -> int:
        """Edit counter of ``"reference"`` or a prediction's name (0 when absent)."""
        try:
            return self.session.layer(layer).revision
        except InputError:
            return 0

    # -- simple accessors -------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int] | None:
        return None if self.ct is None else self.ct.shape

    @property
    def is_empty(self) -> bool:
        return self.ct is None

    @property
    def active(self) -> PredictionEntry | None:
        if 0 <= self.active_index < len(self.predictions):
            return self.predictions[self.active_index]
        return None

    def prediction(self, index: int) -> PredictionEntry:
        return self.predictions[index]

    def _set_modified(self, value: bool = True) -> None:
        if self.modified != value:
            self.modified = value
            self.modifiedChanged.emit(value)

    # -- changing the case (GUI thread) ----------------------------------------------
    def clear(self) -> None:
        self.cancel_jobs()
        self._clear_state()
        self.ctChanged.emit()
        self.referenceChanged.emit()
        self.predictionsChanged.emit()
        self.activePredictionChanged.emit(-1)
        self.cursorChanged.emit(self.cursor)

    def set_ct(
        self, ct: IntensityVolume, path: str | None = None, reorientation: Reorientation | None = None, name: str = ""
    ) -> None:
        """A new CT starts a new case: labels of another grid are dropped."""
        self.cancel_jobs()
        self._clear_state()
        self.ct, self.ct_path, self.reorientation = ct, path, reorientation
        self._new_session(ct)
        self.session.ct_path = path
        self.name = name or ct.name or (Path(path).name if path else "case")
        self.cursor = tuple(int(s // 2) for s in ct.shape)  # type: ignore[assignment]
        if ct.array.nbytes >= SAGITTAL_COPY_MIN_BYTES and not is_blank_ct(ct):
            from app.workers import Job, guarded

            job = Job(x_major_copy, ct.array, name="Sagittal copy")
            job.result.connect(
                guarded(self, lambda arr, c=ct: setattr(self, "_ct_by_x", arr) if self.ct is c else None)
            )
            self._start(job, silent=True)
        self.ctChanged.emit()
        self.referenceChanged.emit()
        self.predictionsChanged.emit()
        self.activePredictionChanged.emit(-1)
        self.cursorChanged.emit(self.cursor)

    def set_reference(
        self, reference: LabelVolume | None, path: str | None = None, source: Source | None = None
    ) -> None:
        if reference is not None and reference.array.dtype != bool:
            reference = LabelVolume(reference.mask, reference.geometry, reference.name)
        if reference is not None and self.ct is not None:
            check_same_grid(self.ct, reference)
        if self._analysis_job is not None:
            self._analysis_job.cancel()
        self.reference, self.reference_path = reference, path
        if reference is not None:
            if source is None and path is not None:
                from core.review.loading import in_memory_source

                source = dataclasses_replace(in_memory_source(reference), path=str(path))
            self.session.set_reference(LabelLayer("reference", reference, source, role="reference"))
            if path is not None:
                from core.review.persist import default_recovery_dir, recovery_name

                self.session.recovery_path = default_recovery_dir() / recovery_name(path)
            self._start_box_job(reference.mask)
        self.tree, self.branch_map, self.generations, self.tree_error = None, None, {}, None
        for p in self.predictions:
            p.metrics, p.regions, p.analysis_error = None, None, None
        self.referenceChanged.emit()
        self.treeChanged.emit()
        for i in range(len(self.predictions)):
            self.metricsChanged.emit(i)
            self.regionsChanged.emit(i)
        self._set_modified()
        self.historyChanged.emit()
        if self.auto_analyse and reference is not None:
            self.start_analysis()

    def add_prediction(self, entry: PredictionEntry, make_active: bool = True) -> int:
        if entry.label.array.dtype != bool:  # views and boxes rely on one bool array per mask
            entry.label = LabelVolume(entry.label.mask, entry.label.geometry, entry.label.name)
        if self.ct is not None:
            check_same_grid(self.ct, entry.label)
        entry.layer = LabelLayer(
            entry.name or "prediction", entry.label, entry.origin, probabilities=entry.probabilities
        )
        self.session.add_prediction(entry.layer)
        entry.name = entry.layer.name  # made unique by the session
        entry.statuses = self.session.status_table(len(self.session.predictions) - 1)
        self.predictions.append(entry)
        self._start_box_job(entry.mask)
        index = len(self.predictions) - 1
        self.predictionsChanged.emit()
        if make_active or self.active_index < 0:
            self.set_active(index)
        self._set_modified()
        if self.auto_analyse:
            self.start_analysis()
        return index

    def remove_prediction(self, index: int) -> None:
        del self.predictions[index]
        self.session.remove_prediction(index)
        self.predictionsChanged.emit()
        new = min(self.active_index, len(self.predictions) - 1)
        self.active_index = -2  # force the signal
        self.set_active(new)
        self._set_modified()
        self.historyChanged.emit()

    def set_active(self, index: int) -> None:
        index = int(index) if self.predictions else -1
        if self.predictions:
            index = max(0, min(index, len(self.predictions) - 1))
        if index != self.active_index:
            self.active_index = index
            self.active_region = -1
            self.activePredictionChanged.emit(index)

    def set_cursor(self, zyx: Sequence[float]) -> None:
        if self.ct is None:
            return
        c = tuple(int(np.clip(round(float(v)), 0, s - 1)) for v, s in zip(zyx, self.ct.shape))
        if c != self.cursor:
            self.cursor = c  # type: ignore[assignment]
            self.cursorChanged.emit(c)

    def apply_loaded(self, loaded: LoadedCase) -> None:
        """Put a :class:`LoadedCase` into the case (GUI thread)."""
        if loaded.ct is not None:
            self.set_ct(loaded.ct, loaded.ct_path, loaded.reorientation, loaded.name)
            self.demo = loaded.demo
        if loaded.reference is not None:
            self.set_reference(loaded.reference, loaded.reference_path, loaded.reference_source)
            self.reference_selector = loaded.reference_selector
        for entry in loaded.predictions:
            self.add_prediction(entry, make_active=False)
        self._set_modified(False if loaded.ct is not None else True)

    def ct_slice(self, orientation: str, index: int) -> np.ndarray:
        """A CT slice as displayed (see app.review.slice_view.extract_slice)."""
        from app.review.slice_view import extract_slice

        if orientation == "sagittal" and self._ct_by_x is not None:
            return self._ct_by_x[index, ::-1, :]
        return extract_slice(self.ct.array, orientation, index)

    # -- overlay bounds ----------------------------------------------------------------
    def _box_of(self, mask: np.ndarray | None) -> tuple[bool, tuple | None]:
        if mask is None:
            return True, None
        hit = self._boxes.get(id(mask))
        if hit is not None and hit[0] is mask:
            return True, hit[1]
        return False, None

    def overlay_box(self, index: int | None = None) -> tuple | None:
        """Box holding every reference and prediction voxel of the active (or given)
        prediction; None while not computed yet (views then draw the whole slice)."""
        i = self.active_index if index is None else index
        ref_mask = None if self.reference is None else self.reference.mask
        pred_mask = self.predictions[i].mask if 0 <= i < len(self.predictions) else None
        ok_r, box_r = self._box_of(ref_mask)
        ok_p, box_p = self._box_of(pred_mask)
        if not (ok_r and ok_p):
            return None
        if box_r is None and box_p is None:
            return ((0, 0), (0, 0), (0, 0))  # nothing to overlay anywhere
        return union_box(box_r, box_p)

    def _start_box_job(self, mask: np.ndarray) -> None:
        from app.workers import Job, guarded

        if self._box_of(mask)[0]:
            return
        job = Job(mask_box, mask, name="Overlay bounds")

        def done(box: tuple | None) -> None:
            self._boxes[id(mask)] = (mask, box)

        job.result.connect(guarded(self, done))
        self._start(job, silent=True)

    # -- values under a voxel --------------------------------------------------------
    def probe(self, zyx: Sequence[int]) -> dict[str, Any]:
        """Everything the status bar shows about one voxel."""
        if self.ct is None:
            return {}
        z, y, x = (int(v) for v in zyx)
        if not all(0 <= v < s for v, s in zip((z, y, x), self.ct.shape)):
            return {}
        out: dict[str, Any] = {
            "voxel": (z, y, x),
            "world": tuple(float(v) for v in self.ct.geometry.index_to_world((z, y, x))),
            "hu": None if is_blank_ct(self.ct) else self.ct.array[z, y, x].item(),
        }
        ref = None if self.reference is None else bool(self.reference.mask[z, y, x])
        out["reference"] = ref
        act = self.active
        if act is not None:
            pred = bool(act.mask[z, y, x])
            out["prediction"] = pred
            if act.probabilities is not None:
                v = act.probabilities.array[z, y, x]
                out["probability"] = float(v) / 255.0 if act.probabilities.array.dtype == np.uint8 else float(v)
            if ref is not None:
                out["class"] = "TP" if pred and ref else "FP" if pred else "FN" if ref else "TN"
        if self.branch_map is not None:
            bid = int(self.branch_map[z, y, x])
            if bid > 0:
                out["branch"] = bid
                if bid in self.generations:
                    out["generation"] = self.generations[bid]
        return out

    # -- regions ---------------------------------------------------------------------
    def regions(self, index: int | None = None) -> list:
        i = self.active_index if index is None else index
        if 0 <= i < len(self.predictions):
            return self.predictions[i].regions or []
        return []

    def set_region_status(self, region_index: int, status: str, prediction_index: int | None = None) -> None:
        if status not in STATUS_KEYS:
            raise InputError(f"Unknown region status '{status}'.", f"Use one of {', '.join(STATUS_KEYS)}.")
        i = self.active_index if prediction_index is None else prediction_index
        entry = self.predictions[i]
        if not 0 <= region_index < len(entry.regions or []):
            return
        self.session.set_status(i, entry.regions[region_index].key, status)  # type: ignore[index]

    def go_to_region(self, region_index: int, box: Any = None) -> None:
        """Cursor on the region; views zoom to ``box`` (a review group's) or the region's own box."""
        regs = self.regions()
        if not regs:
            return
        region_index %= len(regs)
        self.active_region = region_index
        centre = self.region_focus(region_index)
        self.activeRegionChanged.emit(region_index)
        if centre is not None:
            self.set_cursor(centre)
        box = box if box is not None else region_box(regs[region_index])
        if box is not None:
            self.focusBoxRequested.emit(box)

    def region_focus(self, region_index: int, prediction_index: int | None = None) -> tuple[int, int, int] | None:
        """The voxel N / Shift+N jump to for a region (see :func:`region_centre`)."""
        i = self.active_index if prediction_index is None else prediction_index
        regs = self.regions(i)
        if not 0 <= region_index < len(regs):
            return None
        return region_centre(regs[region_index])

    def region_at(self, zyx: Sequence[int]) -> int:
        """Index of the active prediction's region holding voxel ``zyx``, or -1."""
        v = np.asarray(zyx, dtype=np.int64)
        for i, g in enumerate(self.regions()):
            if all(lo <= c < hi for c, (lo, hi) in zip(v, g.bbox)) and g.coords is not None:
                if (g.coords.astype(np.int64) == v).all(axis=1).any():
                    return i
        return -1

    def step_region(self, step: int) -> int:
        """Next (+1) / previous (-1) region of the active prediction, wrapping."""
        regs = self.regions()
        if not regs:
            return -1
        if self.active_region < 0:
            target = 0 if step > 0 else len(regs) - 1
        else:
            target = (self.active_region + step) % len(regs)
        self.go_to_region(target)
        return target

    # -- background analysis ---------------------------------------------------------
    def _start(self, job: Any, silent: bool = False) -> Any:
        """Start a job; ``silent`` ones (quick bookkeeping) are not shown in the status bar."""
        from app.workers import guarded

        self._jobs.append(job)
        job.finished.connect(guarded(self, lambda: self._jobs.remove(job) if job in self._jobs else None))
        if not silent:
            self.jobStarted.emit(job)
        return job.start()

    def cancel_jobs(self) -> None:
        for job in list(getattr(self, "_jobs", [])):
            job.cancel()

    @property
    def busy(self) -> bool:
        """A job is running, or its result has not been applied yet (jobs leave the list on ``finished``)."""
        return bool(self._jobs)

    def start_reference_analysis(self) -> Any:
        """Tree, metrics and regions of whatever changed (one job for everything)."""
        return self.start_analysis()

    def start_prediction_analysis(self, index: int) -> Any:
        return self.start_analysis()

    def start_analysis(self) -> Any:
        """Analyse, in a job, what changed since the last analysis; a run already going
        is followed by another when edits came meanwhile (results stay marked stale)."""
        from app.workers import Job, guarded

        self._analysis_timer.stop()
        if self.reference is None:
            return None
        if self._analysis_job is not None:
            self._analysis_again = True
            return self._analysis_job
        job_input = self.session.analysis_job(copy=True)
        if job_input.tree is not None and not job_input.predictions:
            self._set_stale(False)
            return None
        session = self.session
        job = Job(run_review_analysis, job_input, name="Analysis")
        self._analysis_job = job
        self._analysis_again = False

        def done(res: tuple[AnalysisResult, TreeResult | None]) -> None:
            if self.session is not session:
                return
            result, tree = res
            if tree is not None:
                self.tree, self.branch_map, self.generations, self.tree_error = (
                    tree.tree,
                    tree.branch_map,
                    tree.generations,
                    None,
                )
            session.apply_analysis(result)
            for i, entry in enumerate(self.predictions):
                if entry.name in result.predictions:
                    a = result.predictions[entry.name]
                    entry.metrics, entry.regions, entry.analysis_error = a.metrics, a.regions, None
                    self._apply_pending_statuses(i)
            if tree is not None:
                self.treeChanged.emit()
            for i, entry in enumerate(self.predictions):
                if entry.name in result.predictions:
                    self.metricsChanged.emit(i)
                    self.regionsChanged.emit(i)

        def failed(exc: BaseException, _tb: str) -> None:
            if self.session is not session:
                return
            if self.tree is None:
                self.tree_error = str(exc)
                self.treeChanged.emit()
            for i, entry in enumerate(self.predictions):
                if entry.metrics is None or session.is_stale(i):
                    entry.analysis_error = str(exc)
                    self.metricsChanged.emit(i)

        def finished() -> None:
            if self._analysis_job is not job:
                return
            self._analysis_job = None
            if self.session is not session:
                return
            if self._analysis_again or (job.state == "done" and session.is_stale()):
                self.start_analysis()
            else:
                self._set_stale(False)

        job.result.connect(guarded(self, done))
        job.error.connect(guarded(self, failed))
        job.finished.connect(guarded(self, finished))
        return self._start(job)

    def _apply_pending_statuses(self, index: int) -> None:
        entry = self.predictions[index]
        pending = self._pending_index_statuses.pop(entry.name, None)
        if pending and entry.regions:
            for k, status in pending.items():
                if 0 <= k < len(entry.regions) and status in STATUS_KEYS and status != "unreviewed":
                    entry.statuses[entry.regions[k].key] = status

    # -- edits (through the session; every one undoable) ---------------------------------
    def accept_region(self, region_index: int | None = None, kind: str | None = None) -> bool:
        """Correct the reference by a region of the active prediction: an FP is added
        ("add to reference"), an FN removed ("remove from reference"). ``kind`` limits
        the action to regions of that kind; False when nothing was done."""
        i = self.active_region if region_index is None else region_index
        regs = self.regions()
        if not 0 <= i < len(regs) or self.reference is None:
            return False
        if kind is not None and regs[i].kind != kind:
            return False
        return self.session.accept(regs[i].key, self.active_index) is not None

    def edit_layer_name(self, target: str) -> str:
        """``"reference"`` or ``"prediction"`` (the active one) as a session layer name."""
        if target == "reference":
            if self.reference is None:
                raise InputError("There is no reference to edit.", "Open a reference label first.")
            return "reference"
        if self.active is None:
            raise InputError("There is no prediction to edit.", "Open or make a prediction first.")
        return self.active.name

    def undo(self) -> bool:
        return self.session.undo() is not None

    def redo(self) -> bool:
        return self.session.redo() is not None

    def save_reference(self, path: str | os.PathLike | None = None) -> Path:
        """Write the edited reference (atomic, one backup of the original, edit log beside it)."""
        out = self.session.save_reference(path)
        if path is not None:
            self.reference_path = str(out)
        return out

    def autosave(self) -> Path | None:
        return self.session.autosave()

    def open_files(
        self,
        ct_path: str | None,
        reference_path: str | None = None,
        prediction_paths: Sequence[str] = (),
        reference_selector: str | None = None,
    ) -> Any:
        """Load files in a job; the result is applied on the GUI thread."""
        from app.workers import Job, guarded

        job = Job(
            load_case,
            ct_path,
            reference_path,
            list(prediction_paths),
            current_ct=None if ct_path else self.ct,
            reference_selector=reference_selector,
            name="Loading",
        )
        job.result.connect(guarded(self, self.apply_loaded))
        return self._start(job)

    # -- project files ---------------------------------------------------------------
    def to_project(self, project_path: str | os.PathLike | None = None) -> dict[str, Any]:
        """The case as a JSON-able dict; paths relative to the project file when given."""
        base = Path(project_path).resolve().parent if project_path else None

        def rel(p: str | None) -> str | None:
            if p is None:
                return None
            if base is not None:
                try:
                    return os.path.relpath(Path(p).resolve(), base)
                except ValueError:  # other drive on Windows
                    return str(Path(p).resolve())
            return str(p)

        preds = []
        for p in self.predictions:
            preds.append(
                {
                    "name": p.name,
                    "path": rel(p.path),
                    "source": p.source,
                    "statuses": dict(sorted(p.statuses.items())),
                }
            )
        return {
            "format": PROJECT_FORMAT,
            "version": PROJECT_VERSION,
            "name": self.name,
            "demo": self.demo,
            "ct": rel(self.ct_path),
            "reference": rel(self.reference_path),
            "reference_selector": self.reference_selector,
            "predictions": preds,
            "active_prediction": self.active_index,
            "cursor": list(self.cursor),
            "view": self.view_state,
        }

    def _input_paths(self) -> list[str]:
        """Files this case was opened from: a save never writes over them (core.outputs)."""
        return [p for p in (self.ct_path, self.reference_path, *(e.path for e in self.predictions)) if p]

    def save_project(self, path: str | os.PathLike) -> Path:
        """Write the project JSON atomically; predictions made in the app are
        written next to it first (a project only stores paths)."""
        path = Path(path)
        if path.suffix.lower() != ".json":
            path = path.with_suffix(".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.demo:
            for p in self.predictions:
                if p.path is None:
                    from core.io import write_volume

                    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in p.name)
                    out = path.with_name(f"{path.stem}_{safe}.nii.gz")
                    refuse_input_as_output(out, self._input_paths(), "prediction file")
                    write_volume(LabelVolume(p.mask.astype(np.uint8), p.label.geometry, p.name), out)
                    p.path = str(out)
        refuse_input_as_output(path, self._input_paths(), "project file")
        write_project(path, self.to_project(path))
        self.project_path = str(path)
        self._set_modified(False)
        return path


def load_demo_case(params: Any = None, *, progress: Progress | None = None, cancel: Any = None):
    """The demo (app.demo) as a :class:`LoadedCase` (a job function)."""
    from app.demo import DEMO_NAME, SIMULATED_NAME, DemoParams, make_demo

    demo = make_demo(params or DemoParams(), progress=progress, cancel=cancel)
    ct = demo.phantom.ct
    ct.name = DEMO_NAME
    entry = PredictionEntry(name=SIMULATED_NAME, label=demo.prediction, source="simulated")
    out = LoadedCase(ct=ct, reference=demo.reference, predictions=[entry], name=DEMO_NAME, demo=True)
    out.reorientation = None
    out.description = demo.describe()  # type: ignore[attr-defined]
    out.demo_case = demo  # type: ignore[attr-defined]
    return out


def load_project(path: str | os.PathLike, *, progress: Progress = _noop, cancel: Any = None) -> tuple[LoadedCase, dict]:
    """Read a project and every file it names (worker side)."""
    data = read_project(path)
    if data.get("demo"):
        loaded = load_demo_case(progress=progress, cancel=cancel)
        return loaded, data
    if not data.get("ct"):
        raise InputError("The project names no CT.", "Open the CT and save the project again.", path=path)
    paths = [p["path"] for p in data.get("predictions", []) if p.get("path")]
    loaded = load_case(
        data["ct"],
        data.get("reference"),
        paths,
        reference_selector=data.get("reference_selector"),
        progress=progress,
        cancel=cancel,
    )
    named = [p for p in data.get("predictions", []) if p.get("path")]
    for entry, meta in zip(loaded.predictions, named):
        entry.name = meta.get("name") or entry.name
        entry.source = meta.get("source", entry.source)
    return loaded, data


def apply_project(case: Case, loaded: LoadedCase, data: dict, project_path: str | None = None) -> None:
    """Put a loaded project into ``case``: files, statuses, cursor and view state."""
    case.apply_loaded(loaded)
    metas = [p for p in data.get("predictions", []) if p.get("path") or data.get("demo")]
    for entry, meta in zip(case.predictions, metas):
        table = {k: v for k, v in (meta.get("statuses") or {}).items() if v in STATUS_KEYS}
        if int(data.get("version", 1)) < 2:
            # by position in the region list of that time: the same files give the same order
            case._pending_index_statuses[entry.name] = {int(k): v for k, v in table.items()}
            if entry.regions:
                case._apply_pending_statuses(case.predictions.index(entry))
        else:
            entry.statuses.clear()
            entry.statuses.update(table)
    if case.predictions:
        case.set_active(int(data.get("active_prediction", 0)))
    cur = data.get("cursor")
    if cur and len(cur) == 3:
        case.set_cursor(cur)
    case.view_state = dict(data.get("view") or {})
    case.project_path = None if project_path is None else str(project_path)
    case._set_modified(False)
