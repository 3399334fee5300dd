"""The open case as the window shows it: a thin Qt adapter over a :class:`core.review.Session`.

The session (``case.session``) is the one source of truth: the CT, the reference and
prediction layers with their voxels, edits (undo/redo), analysis results (tree,
metrics, error regions), review statuses keyed by region content keys, saves and
recovery. The case adds what only a window needs: Qt signals for the session's
events, the cursor, the active prediction and region, a blank background for a
label-only case, overlay bounds, and background jobs. Everything else it shows it
reads from the session when asked (``case.reference``, ``entry.metrics``,
``entry.regions``, ``entry.statuses`` are views, never copies).

Every volume is canonical LPS (:func:`core.volume.to_canonical`): axis 0 runs
inferior->superior, axis 1 anterior->posterior, axis 2 right->left whatever the
file's direction cosines. Loading is core's (:meth:`core.review.Session.load`, in a
job); the analysis runner is :mod:`app.review.analysis_runner`; project files are
:mod:`core.review.project`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal

from app.review.analysis_runner import TreeResult, run_review_analysis, tree_result
from core.box import Box, bounding_box, union
from core.errors import InputError
from core.outputs import refuse_input_as_output
from core.progress import Progress
from core.region_groups import RegionGroup
from core.regions import ErrorRegion
from core.review import STATUS_KEYS, STATUSES, AnalysisResult, Edit, LabelLayer, PendingSave, Session
from core.review.loading import Source, load_ct
from core.review.project import PROJECT_FORMAT, PROJECT_VERSION, read_project, side_file_targets, write_project
from core.volume import IntensityVolume, LabelVolume, Reorientation

__all__ = [
    "BLANK_CT_HU",
    "Case",
    "LoadedCase",
    "PredictionEntry",
    "STATUS_KEYS",
    "STATUS_LABELS",
    "TreeResult",
    "apply_project",
    "blank_ct",
    "is_blank_ct",
    "load_case",
    "load_ct",
    "load_demo_case",
    "load_project",
    "read_project",
    "region_centre",
    "run_review_analysis",
]

STATUS_LABELS = dict(STATUSES)
# Edits wait this long for the next stroke before metrics and regions are recomputed.
REANALYSIS_DELAY_MS = 700


def _noop(*_a: Any, **_k: Any) -> None:
    return None


# -- a prediction as the window shows it ------------------------------------------------


class PredictionEntry:
    """One prediction: before it joins a case, what it is made of; once added, a view
    over its session layer (name, voxels, probabilities, file) and the session's
    results for it (``metrics``, ``regions``, ``statuses``). It keeps only what the
    session does not know: where it came from (``source``: ``file``,
    ``model:<checkpoint>``, ``simulated``, ``region-growing``), the output gate's
    ``warnings`` and the last ``analysis_error``."""

    def __init__(
        self,
        name: str,
        label: LabelVolume,
        probabilities: IntensityVolume | None = None,
        path: str | None = None,
        source: str = "file",
        warnings: Sequence[str] = (),
        origin: Source | None = None,
    ):
        self._name = name
        self._label = label
        self._probabilities = probabilities
        self._path = path
        self.source = source
        self.warnings = list(warnings)
        self.origin = origin  # file geometry/orientation, for saving edits back
        self.analysis_error: str | None = None
        self.layer: LabelLayer | None = None
        self.session: Session | None = None

    @classmethod
    def of_layer(cls, layer: LabelLayer, source: str = "file") -> PredictionEntry:
        entry = cls(layer.name, layer.volume, layer.probabilities, layer.path, source, origin=layer.source)
        entry.layer = layer
        return entry

    def bind(self, session: Session, layer: LabelLayer) -> None:
        self.session, self.layer = session, layer

    @property
    def index(self) -> int:
        """Position in the session's predictions (-1 before it joins one)."""
        if self.session is None or self.layer is None:
            return -1
        for i, p in enumerate(self.session.predictions):
            if p is self.layer:
                return i
        return -1

    @property
    def name(self) -> str:
        return self.layer.name if self.layer is not None else self._name

    @name.setter
    def name(self, value: str) -> None:
        if self.layer is not None and self.session is not None and self.index >= 0:
            self.session.rename_layer(self.layer, value)
        elif self.layer is not None:
            self.layer.name = self.layer.base_name = value
        self._name = value

    @property
    def label(self) -> LabelVolume:
        return self.layer.volume if self.layer is not None else self._label

    @label.setter
    def label(self, value: LabelVolume) -> None:
        if self.layer is not None:
            self.layer.volume = value
        self._label = value

    @property
    def mask(self) -> np.ndarray:
        return self.label.array if self.label.array.dtype == bool else self.label.mask

    @property
    def probabilities(self) -> IntensityVolume | None:
        return self.layer.probabilities if self.layer is not None else self._probabilities

    @property
    def path(self) -> str | None:
        return self.layer.path if self.layer is not None else self._path

    @path.setter
    def path(self, value: str | None) -> None:
        import dataclasses

        if self.layer is not None:
            self.layer.source = dataclasses.replace(self.layer.source, path=value, disk_key=None)
        self._path = value

    def _result(self) -> Any:
        i = self.index
        return None if i < 0 or self.session is None else self.session.result(i)

    @property
    def metrics(self) -> Any:
        """core.metrics.AirwayMetrics of the last analysis (None before the first)."""
        r = self._result()
        return None if r is None else r.metrics

    @metrics.setter
    def metrics(self, value: Any) -> None:
        if self.session is not None and self.index >= 0:
            self.session.put_analysis(self.index, metrics=value)

    @property
    def regions(self) -> list[ErrorRegion] | None:
        """The error regions of the last analysis (the same list object until the next one)."""
        r = self._result()
        return None if r is None else r.regions

    @regions.setter
    def regions(self, value: list[ErrorRegion]) -> None:
        if self.session is not None and self.index >= 0:
            self.session.put_analysis(self.index, regions=list(value))

    @property
    def statuses(self) -> dict[str, str]:
        """{region key: status} (the session's live table)."""
        if self.session is None or self.index < 0:
            return {}
        return self.session.status_table(self.index)

    def status(self, region_index: int) -> str:
        regions = self.regions or []
        if not 0 <= region_index < len(regions):
            return "unreviewed"
        return self.statuses.get(regions[region_index].key, "unreviewed")

    def reviewed_count(self) -> int:
        table = self.statuses
        return sum(1 for g in self.regions or [] if table.get(g.key, "unreviewed") != "unreviewed")


# -- loading (worker side, Qt-free) ------------------------------------------------------

BLANK_CT_HU = -1000  # air: a neutral dark grey under every window preset


def blank_ct(like: Any, name: str = "") -> IntensityVolume:
    """The neutral background of a label-only case: air on the label's grid, without
    memory (one broadcast value), flagged ``blank`` so no HU, no segmentation is offered."""
    arr = np.broadcast_to(np.int16(BLANK_CT_HU), tuple(like.shape))
    ct = IntensityVolume(arr, like.geometry, name=name or "no CT")
    ct.blank = True  # type: ignore[attr-defined]  # a flag the views read; IntensityVolume has no slot for it
    return ct


def is_blank_ct(ct: Any) -> bool:
    return ct is not None and bool(getattr(ct, "blank", False))


@dataclass
class LoadedCase:
    """What a loading job hands to the GUI thread: a session read by core
    (:meth:`core.review.Session.load`), and whether it is a case of its own
    (``new_case``) or layers that join the open one."""

    session: Session
    ct: IntensityVolume | None = None  # shown: the CT, a blank one for labels only; None when joining
    name: str = ""
    demo: bool = False
    new_case: bool = True
    prediction_sources: tuple[str, ...] = ()  # per prediction; "file" when not given
    # the views' branch map of the session's tree, when the session comes back from memory with it
    # (a dataset's previous case): made again on the GUI thread it cost 175-500 ms on a real tree
    tree_view: TreeResult | None = None

    @property
    def reference(self) -> LabelVolume | None:
        return None if self.session.reference is None else self.session.reference.volume

    @property
    def reference_path(self) -> str | None:
        return None if self.session.reference is None else self.session.reference.path

    @property
    def ct_path(self) -> str | None:
        return self.session.ct_path

    @property
    def reorientation(self) -> Reorientation | None:
        reo: Reorientation | None = self.session.ct_reorientation
        return reo

    @property
    def predictions(self) -> list[PredictionEntry]:
        sources = list(self.prediction_sources) + ["file"] * len(self.session.predictions)
        return [PredictionEntry.of_layer(p, s) for p, s in zip(self.session.predictions, sources)]


def load_case(
    ct_path: str | os.PathLike[str] | None,
    reference_path: str | os.PathLike[str] | None = None,
    prediction_paths: Sequence[str | os.PathLike[str]] = (),
    *,
    current_ct: IntensityVolume | None = None,
    reference_selector: str | None = None,
    progress: Progress = _noop,
    cancel: Any = None,
    resample_to_ct: bool = False,
) -> LoadedCase:
    """Read whatever is given through :meth:`core.review.Session.load`.

    Without ``ct_path`` the labels join an open case on ``current_ct``'s grid; without
    either they open as a label-only case over a blank CT (:func:`blank_ct`).
    ``resample_to_ct``: labels on another grid are resampled onto the CT's
    (nearest neighbour) instead of refused with a GeometryError."""
    from core.io import case_name

    session = Session.load(
        ct_path,
        reference_path,
        list(prediction_paths),
        reference_selector=reference_selector,
        grid=None if ct_path is not None else current_ct,
        resample_to_ct=resample_to_ct,
        progress=progress,
        cancel=cancel,
    )
    joining = ct_path is None and current_ct is not None
    out = LoadedCase(session, new_case=not joining)
    if session.ct is not None:
        out.ct, out.name = session.ct, case_name(str(ct_path))
    elif not joining:
        layers = session.layers()
        if layers:
            first = reference_path if reference_path is not None else prediction_paths[0]
            out.name = case_name(str(first))
            out.ct = blank_ct(layers[0].volume, f"{out.name} (labels only)")
    return out


def load_demo_case(params: Any = None, *, progress: Progress | None = None, cancel: Any = None) -> LoadedCase:
    """The demo (app.demo) as a :class:`LoadedCase` (a job function)."""
    from app.demo import DEMO_NAME, SIMULATED_NAME, DemoParams, make_demo

    demo = make_demo(params or DemoParams(), progress=progress, cancel=cancel)
    ct = demo.phantom.ct
    ct.name = DEMO_NAME
    session = Session(ct, demo.reference)
    session.add_prediction(demo.prediction, name=SIMULATED_NAME)
    return LoadedCase(
        session,
        ct=ct,
        name=DEMO_NAME,
        demo=True,
        prediction_sources=("simulated",),
    )


# -- region helpers ----------------------------------------------------------------


def mask_box(mask: np.ndarray, *, progress: Progress = _noop, cancel: Any = None) -> Box | None:
    """:func:`core.box.bounding_box` as a job (jobs are called with progress and cancel)."""
    return bounding_box(mask)


SAGITTAL_COPY_MIN_BYTES = 32 << 20


def x_major_copy(array: np.ndarray, *, progress: Progress = _noop, cancel: Any = None) -> np.ndarray:
    """The volume with x as the slowest axis, (x, z, y): a sagittal slice is then one
    contiguous block instead of one element per cache line (6-20 ms -> <1 ms at 512^2 x 600)."""
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def region_centre(region: ErrorRegion) -> tuple[int, int, int]:
    """The voxel to jump to: the region's own voxel nearest its centroid (a shell's or
    a curved branch's centroid often lies outside it, where the overlay shows nothing)."""
    if region.focus_zyx is not None:
        z, y, x = region.focus_zyx
        return int(z), int(y), int(x)
    cz, cy, cx = region.centroid_zyx
    return int(round(cz)), int(round(cy)), int(round(cx))


# -- the case ----------------------------------------------------------------------


class Case(QObject):
    """The open case, shared by every view: the session's events as signals, plus the
    cursor, the active prediction and region.

    Signals: ``ctChanged``, ``referenceChanged``, ``treeChanged``,
    ``predictionsChanged``, ``activePredictionChanged(int)``,
    ``cursorChanged(object)`` (a (z, y, x) tuple), ``metricsChanged(int)``,
    ``regionsChanged(int)``, ``regionStatusChanged(int, int, str)``
    (prediction, region (-1: several, e.g. a group corrected whole), status), ``activeRegionChanged(int)``,
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
    focusBoxRequested = Signal(object)  # a core.box.Box: slice views zoom to fit it
    jobStarted = Signal(object)
    modifiedChanged = Signal(bool)
    labelChanged = Signal(str, object)
    historyChanged = Signal()
    staleChanged = Signal(bool)
    # a file of the case is open in another live window (or a dead one's lock was taken over): say so
    lockNotice = Signal(str)
    # the reference tree's branch names changed (a new tree, a correction, its undo): session.names
    namesChanged = Signal()
    # a sentence for the status bar: corrections no branch of a changed tree took
    namesNotice = Signal(str)

    def __init__(self, parent: QObject | None = None, auto_analyse: bool = True):
        super().__init__(parent)
        self.auto_analyse = auto_analyse
        self._analysis_timer = QTimer(self)
        self._analysis_timer.setSingleShot(True)
        self._analysis_timer.timeout.connect(self.start_analysis)
        self._unsubscribe: Callable[[], None] | None = None
        self._jobs: list[Any] = []
        self._clear_state()

    def _clear_state(self) -> None:
        self.name = ""
        self._blank: IntensityVolume | None = None  # the background of a label-only case
        self._tree_view: TreeResult | None = None  # the branch map of session.tree, for the views
        self._announced_tree: Any = None  # the tree treeChanged last announced
        self._key_index: tuple[list[ErrorRegion], dict[str, int]] | None = None
        self.tree_error: str | None = None
        self.predictions: list[PredictionEntry] = []
        self.active_index = -1
        # the selected region by content key: it stays selected when a re-analysis reorders the list
        self._active_key: str | None = None
        self._active_cache: tuple[list[ErrorRegion], str, int] | None = None
        self.cursor: tuple[int, int, int] = (0, 0, 0)
        self.view_state: dict[str, Any] = {}
        self.project_path: str | None = None
        self.demo = False
        self.modified = False
        self._jobs = []
        # bounding boxes of masks (keyed by id, the array kept alive beside its box):
        # slice views draw overlays only inside them
        self._boxes: dict[int, tuple[np.ndarray, Box | None]] = {}
        self._ct_by_x: np.ndarray | None = None  # x-major CT copy for sagittal slices (large CTs)
        self._analysis_job: Any = None
        self._analysis_again = False
        self._stale = False
        self._pending_index_statuses: dict[str, dict[int, str]] = {}  # v1 projects: by position
        self._lock_reported: set[tuple[Path, str]] = set()
        # prediction name -> ((names revision, metrics id), metrics, core.anatomy.metrics.AnatomyScores)
        self.anatomy: dict[str, tuple[tuple[int, int], Any, Any]] = {}
        self._use_session(Session())

    def _use_session(self, session: Session) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        old = getattr(self, "session", None)
        if old is not None and old is not session:
            old.release_locks()
        self._analysis_timer.stop()
        self.session = session
        self._unsubscribe = session.subscribe(self._on_session)

    # -- what the session holds, as the views read it ---------------------------------
    @property
    def ct(self) -> IntensityVolume | None:
        """The CT, or the blank background of a label-only case (:func:`is_blank_ct`)."""
        return self.session.ct if self.session.ct is not None else self._blank

    @property
    def ct_path(self) -> str | None:
        return self.session.ct_path

    @property
    def reorientation(self) -> Reorientation | None:
        reo: Reorientation | None = self.session.ct_reorientation
        return reo

    @property
    def reference(self) -> LabelVolume | None:
        layer = self.session.reference
        return None if layer is None else layer.volume

    @property
    def reference_path(self) -> str | None:
        layer = self.session.reference
        return None if layer is None else layer.path

    @property
    def reference_selector(self) -> str | None:
        layer = self.session.reference
        return None if layer is None else layer.source.selector

    @property
    def tree(self) -> Any:
        return self.session.tree

    @tree.setter
    def tree(self, tree: Any) -> None:
        """A tree parsed elsewhere (a script, a benchmark) becomes the session's."""
        self.session.put_tree(tree)

    def _tree_result(self) -> TreeResult | None:
        tree = self.session.tree
        if tree is None:  # a branch map given without a tree (see the setters below), or nothing
            return self._tree_view if self._tree_view is not None and self._tree_view.tree is None else None
        tv = self._tree_view
        if tv is None or tv.tree is not tree:
            # a tree that came without its branch map (Case.tree = ...): made once, here
            tv = self._tree_view = tree_result(tree)
        return tv

    def as_loaded(self, name: str) -> LoadedCase:
        """The open case as a loading job hands one over (a dataset keeps the case it leaves in
        memory for Ctrl+[), with the branch map the views already have: made again on the GUI
        thread it cost 175-500 ms on a real tree."""
        return LoadedCase(self.session, ct=self.ct, name=name, new_case=True, tree_view=self._tree_view)

    @property
    def branch_map(self) -> np.ndarray | None:
        tv = self._tree_result()
        return None if tv is None else tv.branch_map

    @branch_map.setter
    def branch_map(self, value: np.ndarray | None) -> None:
        """A branch map made elsewhere (a script, a view test), kept with the session's tree."""
        tv = self._tree_result()
        self._tree_view = TreeResult(self.session.tree, value, {} if tv is None else tv.generations)

    @property
    def generations(self) -> dict[int, int]:
        tv = self._tree_result()
        return {} if tv is None else tv.generations

    @generations.setter
    def generations(self, value: dict[int, int]) -> None:
        tv = self._tree_result()
        self._tree_view = TreeResult(self.session.tree, None if tv is None else tv.branch_map, dict(value))

    # -- session events ------------------------------------------------------------
    def _on_session(self, kind: str, payload: Any) -> None:
        if kind == "change":
            layer = self.session.layer(payload.layer)
            hit = self._boxes.get(id(layer.array))
            if hit is not None and hit[0] is layer.array and payload.box is not None:
                # grow only: an eraser leaves the box a little loose, never too small
                self._boxes[id(layer.array)] = (layer.array, union(hit[1], payload.box))
            self.labelChanged.emit(payload.layer, payload.box)
            if self.session.lock_on_edit and layer.path is not None:
                self.lock_files()  # the first edit took the file's lock (or found another holder)
            self._set_modified()
            self._set_stale(True)
            if self.auto_analyse and self.reference is not None:
                self._analysis_timer.start(REANALYSIS_DELAY_MS)
        elif kind == "history":
            self.historyChanged.emit()
        elif kind == "names":
            if payload is not None:  # a correction (or its undo), not a new tree's names
                self._set_modified()
            lost, self.session.names.lost = self.session.names.lost, []
            if lost:
                said = ", ".join(c.name or "unnamed" for c in lost)
                self.namesNotice.emit(
                    f"{len(lost)} branch name(s) you gave ({said}) found no branch of the changed reference tree; "
                    "name them again."
                )
            self.namesChanged.emit()
        elif kind == "status":
            pred, key, status = payload
            i = self.region_index(key, pred)
            if i >= 0:
                self.regionStatusChanged.emit(pred, i, status)
            self._set_modified()
        elif kind == "statuses":
            # a group's parts: one signal per prediction, region -1 = "several" (views refresh once)
            for pred in dict.fromkeys(p for p, _, _ in payload):
                self.regionStatusChanged.emit(pred, -1, next(st for p, _, st in payload if p == pred))
            self._set_modified()
        elif kind == "analysis":
            if self.session.tree is not self._announced_tree:
                self._announced_tree = self.session.tree
                self.treeChanged.emit()
            for i in payload:
                if 0 <= i < len(self.predictions):
                    self.predictions[i].analysis_error = None
                    self._apply_pending_statuses(i)
            for i in payload:
                if 0 <= i < len(self.predictions):
                    self.metricsChanged.emit(i)
                    self.regionsChanged.emit(i)

    def lock_files(self) -> None:
        """Look at the lock files beside the case's label files (its own are written at the first edit):
        another live holder, or a dead one's lock taken over, is told through ``lockNotice``, once."""
        self.session.lock_on_edit = True
        for lock in self.session.lock_files(take=False):
            for what, text in (
                (
                    "other",
                    None
                    if lock.other is None
                    else f"{lock.path.name} is open in another window: {lock.other.describe()}. "
                    "Your saves are checked against theirs (nothing is overwritten without asking).",
                ),
                ("note", None if lock.note is None else f"{lock.path.name}: {lock.note}."),
            ):
                if text is not None and (lock.path, what) not in self._lock_reported:
                    self._lock_reported.add((lock.path, what))
                    self.lockNotice.emit(text)

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
        ct = self.ct
        return None if ct is None else ct.shape

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
        session = Session(None if is_blank_ct(ct) else ct)
        session.ct_path, session.ct_reorientation = path, reorientation
        self._start_case(session, ct, name or ct.name or (Path(path).name if path else "case"))

    def _start_case(
        self,
        session: Session,
        shown_ct: IntensityVolume,
        name: str,
        demo: bool = False,
        tree_view: TreeResult | None = None,
    ) -> None:
        self.cancel_jobs()
        self._clear_state()
        self._use_session(session)
        if tree_view is not None and tree_view.tree is session.tree:
            self._tree_view = tree_view  # before the signals below: the views ask for the branch map
        self._blank = shown_ct if is_blank_ct(shown_ct) else None
        self.name, self.demo = name, demo
        nz, ny, nx = shown_ct.shape
        self.cursor = (nz // 2, ny // 2, nx // 2)
        if shown_ct.array.nbytes >= SAGITTAL_COPY_MIN_BYTES and not is_blank_ct(shown_ct):
            from app.workers import Job, guarded

            job = Job(x_major_copy, shown_ct.array, name="Sagittal copy")
            job.result.connect(
                guarded(self, lambda arr, c=shown_ct: setattr(self, "_ct_by_x", arr) if self.ct is c else None)
            )
            self._start(job, silent=True)
        self.ctChanged.emit()
        self.referenceChanged.emit()
        self.predictionsChanged.emit()
        self.activePredictionChanged.emit(-1)
        self.cursorChanged.emit(self.cursor)

    def set_reference(
        self, reference: LabelVolume | LabelLayer | None, path: str | None = None, source: Source | None = None
    ) -> None:
        """Make ``reference`` (a volume, or a layer read by core) the reference; None removes it."""
        import dataclasses

        if self._analysis_job is not None:
            self._analysis_job.cancel()
        if reference is None:
            self.session.clear_reference()
        else:
            if isinstance(reference, LabelLayer):
                layer = reference
            else:
                vol = reference if reference.array.dtype == bool else LabelVolume(reference.mask, reference.geometry)
                if source is None:
                    from core.review.loading import in_memory_source

                    source = dataclasses.replace(in_memory_source(vol), path=None if path is None else str(path))
                layer = LabelLayer("reference", vol, source, role="reference")
            self.session.set_reference(layer)
            if layer.path is not None:
                from core.review.persist import default_recovery_dir, recovery_name

                self.session.recovery_path = default_recovery_dir() / recovery_name(layer.path)
            self._start_box_job(layer.array)
        self._tree_view, self.tree_error, self._announced_tree = None, None, None
        for p in self.predictions:
            p.analysis_error = None
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
        layer = entry.layer
        if layer is None:
            label = entry.label
            if label.array.dtype != bool:  # views and boxes rely on one bool array per mask
                label = LabelVolume(label.mask, label.geometry, label.name)
            layer = LabelLayer(entry.name or "prediction", label, entry.origin, probabilities=entry.probabilities)
            if entry.path is not None and layer.path is None:
                import dataclasses

                layer.source = dataclasses.replace(layer.source, path=entry.path)
        grid = self.ct
        if grid is not None and not self.session.layers() and self.session.ct is None:
            from core.volume import check_same_grid

            check_same_grid(grid, layer.volume)  # a label-only case: the blank background's grid
        self.session.add_prediction(layer)
        entry.bind(self.session, layer)
        self.predictions.append(entry)
        self._start_box_job(layer.array)
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
        shape = self.shape
        if shape is None:
            return
        z, y, x = (int(np.clip(round(float(v)), 0, s - 1)) for v, s in zip(zyx, shape))
        c = (z, y, x)
        if c != self.cursor:
            self.cursor = c
            self.cursorChanged.emit(c)

    def apply_loaded(self, loaded: LoadedCase) -> None:
        """Put what a loading job read into the case (GUI thread): a case of its own, or
        layers that join the open one."""
        if loaded.new_case and loaded.ct is not None:
            session = loaded.session
            self._start_case(session, loaded.ct, loaded.name, loaded.demo, loaded.tree_view)
            if session.reference is not None:
                self._start_box_job(session.reference.array)
            sources = list(loaded.prediction_sources)
            for i, layer in enumerate(session.predictions):
                entry = PredictionEntry.of_layer(layer, sources[i] if i < len(sources) else "file")
                entry.bind(session, layer)
                self.predictions.append(entry)
                self._start_box_job(layer.array)
            if session.reference is not None:
                self.referenceChanged.emit()
            if self.predictions:
                self.predictionsChanged.emit()
                self.set_active(0)
            self.historyChanged.emit()
            self.lock_files()
            if self.auto_analyse and session.reference is not None:
                self.start_analysis()
            self._set_modified(False)
            return
        layers = loaded.session.release_layers()
        for layer in layers:
            if layer.role == "reference":
                self.set_reference(layer)
            else:
                self.add_prediction(PredictionEntry.of_layer(layer), make_active=False)
        self.lock_files()
        self._set_modified(True)

    def ct_slice(self, orientation: str, index: int) -> np.ndarray:
        """A CT slice as displayed (see app.review.slice_view.extract_slice)."""
        from app.review.slice_view import extract_slice

        if orientation == "sagittal" and self._ct_by_x is not None:
            return self._ct_by_x[index, ::-1, :]
        ct = self.ct
        assert ct is not None
        return extract_slice(ct.array, orientation, index)

    # -- overlay bounds ----------------------------------------------------------------
    def _box_of(self, mask: np.ndarray | None) -> tuple[bool, Box | None]:
        if mask is None:
            return True, None
        hit = self._boxes.get(id(mask))
        if hit is not None and hit[0] is mask:
            return True, hit[1]
        return False, None

    def overlay_box(self, index: int | None = None) -> Box | None:
        """Box holding every reference and prediction voxel of the active (or given)
        prediction; None while not computed yet (views then draw the whole slice)."""
        i = self.active_index if index is None else index
        ref_mask = None if self.session.reference is None else self.session.reference.array
        pred_mask = self.predictions[i].mask if 0 <= i < len(self.predictions) else None
        ok_r, box_r = self._box_of(ref_mask)
        ok_p, box_p = self._box_of(pred_mask)
        if not (ok_r and ok_p):
            return None
        if box_r is None and box_p is None:
            return Box((0, 0, 0), (0, 0, 0))  # nothing to overlay anywhere
        return union(box_r, box_p)

    def _start_box_job(self, mask: np.ndarray) -> None:
        from app.workers import Job, guarded

        if self._box_of(mask)[0]:
            return
        job = Job(mask_box, mask, name="Overlay bounds")

        def done(box: Box | None) -> None:
            self._boxes[id(mask)] = (mask, box)

        job.result.connect(guarded(self, done))
        self._start(job, silent=True)

    # -- values under a voxel --------------------------------------------------------
    def probe(self, zyx: Sequence[int]) -> dict[str, Any]:
        """Everything the status bar shows about one voxel (read from the layers now)."""
        ct = self.ct
        if ct is None:
            return {}
        z, y, x = (int(v) for v in zyx)
        if not all(0 <= v < s for v, s in zip((z, y, x), ct.shape)):
            return {}
        out: dict[str, Any] = {
            "voxel": (z, y, x),
            "world": tuple(float(v) for v in ct.geometry.index_to_world((z, y, x))),
            "hu": None if is_blank_ct(ct) else ct.array[z, y, x].item(),
        }
        ref_layer = self.session.reference
        ref = None if ref_layer is None else bool(ref_layer.array[z, y, x])
        out["reference"] = ref
        act = self.active
        if act is not None:
            pred = bool(act.mask[z, y, x])
            out["prediction"] = pred
            probs = act.probabilities
            if probs is not None:
                v = probs.array[z, y, x]
                out["probability"] = float(v) / 255.0 if probs.array.dtype == np.uint8 else float(v)
            if ref is not None:
                out["class"] = "TP" if pred and ref else "FP" if pred else "FN" if ref else "TN"
        bmap = self.branch_map
        if bmap is not None:
            bid = int(bmap[z, y, x])
            if bid > 0:
                out["branch"] = bid
                gens = self.generations
                if bid in gens:
                    out["generation"] = gens[bid]
                named = self.session.names.name(bid)
                if named is not None:
                    out["name"] = self.session.names.label_text(bid)
                    out["name_confidence"] = float(named.confidence)
                    out["name_source"] = named.source
        return out

    # -- branch names (session.names: computed in the analysis job, corrected here) --------------
    def branch_at(self, zyx: Sequence[int]) -> int:
        """The reference branch holding voxel ``zyx`` (0: none, or no tree yet)."""
        bmap = self.branch_map
        if bmap is None:
            return 0
        z, y, x = (int(v) for v in zyx)
        if not all(0 <= v < s for v, s in zip((z, y, x), bmap.shape)):
            return 0
        return int(bmap[z, y, x])

    def name_branch(self, branch_id: int, name: str | None, automatic: bool = False) -> Edit:
        """Name a reference branch (None: unnamed; ``automatic``: the labeller's name again): one undo step."""
        return self.session.name_branch(branch_id, name, automatic=automatic)

    def region_branch(self, region_index: int, prediction_index: int | None = None) -> int | None:
        """The reference branch a region lies in (0: outside the tree; None: not known)."""
        i = self.active_index if prediction_index is None else prediction_index
        regs = self.regions(i)
        if not 0 <= region_index < len(regs):
            return None
        return self.session.region_branch(i, regs[region_index].key)

    def place_text(self, branch_id: int | None) -> str:
        """Where an item lies, as the navigator says it: "RB6", "RLL (unnamed)", "outside", "" (unknown)."""
        from core.review.names import OUTSIDE

        if branch_id is None or self.session.names.names is None:
            return ""
        return OUTSIDE if branch_id <= 0 else self.session.names.label_text(branch_id)

    def anatomy_scores(self, index: int | None = None) -> Any:
        """Per-lobe figures of a prediction (core.anatomy.metrics.AnatomyScores) under the current names,
        or None before its analysis and the names. Made from the analysis' per-branch metrics (a pass
        over the branches, no voxels), cached by the names' revision and the metrics object."""
        i = self.active_index if index is None else index
        if not 0 <= i < len(self.predictions) or not self.session.analysed(i):
            return None
        layer = self.session.names
        metrics = self.session.metrics_result(i)
        if layer.names is None or layer.tree is None or layer.tree is not self.session.tree or metrics is None:
            return None
        key = (layer.revision, id(metrics))
        hit = self.anatomy.get(self.predictions[i].name)
        if hit is not None and hit[0] == key and hit[1] is metrics:
            return hit[2]
        from core.anatomy.metrics import anatomy_scores

        scores = anatomy_scores(layer.tree, layer.names, metrics)
        self.anatomy[self.predictions[i].name] = (key, metrics, scores)
        return scores

    # -- regions (addressed by index in the active list, or by content key) ------------------
    def regions(self, index: int | None = None) -> list[ErrorRegion]:
        i = self.active_index if index is None else index
        if 0 <= i < len(self.predictions):
            return self.predictions[i].regions or []
        return []

    def region_index(self, key: str, prediction_index: int | None = None) -> int:
        """Position of the region with content key ``key`` in the (active) prediction's list, or -1."""
        regs = self.regions(prediction_index)
        cache = self._key_index
        if cache is None or cache[0] is not regs:
            # one dict per regions list (a real pair has thousands; a group's statuses ask hundreds of times)
            cache = self._key_index = (regs, {g.key: i for i, g in enumerate(regs)})
        return cache[1].get(key, -1)

    @property
    def active_region(self) -> int:
        """Index of the selected region in the active prediction's list (-1: none, or corrected away).
        Held as the region's content key, so a re-analysis never moves the selection to another region."""
        key = self._active_key
        if key is None:
            return -1
        regs = self.regions()
        cache = self._active_cache
        if cache is not None and cache[0] is regs and cache[1] == key:
            return cache[2]
        index = self.region_index(key)
        self._active_cache = (regs, key, index)
        return index

    @active_region.setter
    def active_region(self, index: int) -> None:
        regs = self.regions()
        self._active_key = regs[index].key if 0 <= index < len(regs) else None

    @property
    def active_region_key(self) -> str | None:
        return self._active_key if self.active_region >= 0 else None

    def groups(self, prediction_index: int | None = None) -> list[RegionGroup]:
        """The review groups of the (active) prediction's regions (core.region_groups), made with its
        analysis; their region ids are the stable ones the navigator shows."""
        i = self.active_index if prediction_index is None else prediction_index
        if not 0 <= i < len(self.predictions) or not self.session.analysed(i):
            return []
        groups: list[RegionGroup] = self.session.groups(i)
        regs = self.regions(i)
        for g in groups:  # ids are given after the analysis (core.region_groups.StableIds), in place
            g.regions = [str(regs[k].id) for k in g.indices]
        return groups

    def group_of(self, region_index: int, prediction_index: int | None = None) -> list[int]:
        """Indices of every region in the review group of ``region_index`` (core.region_groups:
        boundary fragments of one kind at one branch form a group; other regions stand alone)."""
        from core.region_groups import group_of_region

        regs = self.regions(prediction_index)
        if not 0 <= region_index < len(regs):
            return []
        groups = self.groups(prediction_index)
        gi = group_of_region(groups, region_index)
        return [region_index] if gi is None else list(groups[gi].indices)

    def set_region_status(self, region_index: int, status: str, prediction_index: int | None = None) -> None:
        if status not in STATUS_KEYS:
            raise InputError(f"Unknown region status '{status}'.", f"Use one of {', '.join(STATUS_KEYS)}.")
        i = self.active_index if prediction_index is None else prediction_index
        regs = self.regions(i)
        if not 0 <= region_index < len(regs):
            return
        self.session.set_status(i, regs[region_index].key, status)

    def set_region_statuses(self, region_indices: Sequence[int], status: str) -> None:
        """The status of several regions of the active prediction (a group's parts) as one change."""
        regs = self.regions()
        i = self.active_index
        self.session.set_statuses([(i, regs[k].key, status) for k in region_indices if 0 <= k < len(regs)])

    def go_to_region(self, region_index: int, box: Box | None = None) -> None:
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
        self.focusBoxRequested.emit(box if box is not None else regs[region_index].box)

    def region_focus(self, region_index: int, prediction_index: int | None = None) -> tuple[int, int, int] | None:
        """The voxel N / Shift+N jump to for a region (see :func:`region_centre`)."""
        regs = self.regions(prediction_index)
        if not 0 <= region_index < len(regs):
            return None
        return region_centre(regs[region_index])

    def region_at(self, zyx: Sequence[int]) -> int:
        """Index of the active prediction's region holding voxel ``zyx``, or -1."""
        v = np.asarray(zyx, dtype=np.int64)
        for i, g in enumerate(self.regions()):
            if g.box.contains(zyx) and g.coords is not None:
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
        for job in list(self._jobs):
            job.cancel()

    @property
    def busy(self) -> bool:
        """A job is running, or its result has not been applied yet (jobs leave the list on ``finished``)."""
        return bool(self._jobs)

    def start_analysis(self) -> Any:
        """Analyse, in a job, what changed since the last analysis; a run already going
        is followed by another when edits came meanwhile (results stay marked stale)."""
        from app.workers import Job, guarded

        self._analysis_timer.stop()
        if self.session.reference is None:
            return None
        if self._analysis_job is not None:
            self._analysis_again = True
            return self._analysis_job
        # the live arrays: the worker copies them (a 100 MB copy here froze the window ~0.1-1.4 s)
        job_input = self.session.analysis_job(copy=False)
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
                self._tree_view, self.tree_error = tree, None
            session.apply_analysis(result)  # -> "analysis": treeChanged, metricsChanged, regionsChanged

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
        regions = entry.regions
        if pending and regions:
            for k, status in pending.items():
                if 0 <= k < len(regions) and status in STATUS_KEYS and status != "unreviewed":
                    entry.statuses[regions[k].key] = status

    # -- edits (through the session; every one undoable) ---------------------------------
    def accept_region(self, region_index: int | None = None, kind: str | None = None) -> bool:
        """Correct the reference by a region of the active prediction: an FP is added
        ("add to reference"), an FN removed ("remove from reference"). ``kind`` limits
        the action to regions of that kind; False when nothing was done."""
        i = self.active_region if region_index is None else region_index
        regs = self.regions()
        if not 0 <= i < len(regs) or self.session.reference is None:
            return False
        if kind is not None and regs[i].kind != kind:
            return False
        return self.session.accept(regs[i].key, self.active_index) is not None

    def accept_regions(self, region_indices: Sequence[int], kind: str) -> Edit | None:
        """Accept every region of ``kind`` among ``region_indices`` (a review group) as ONE undo step."""
        regs = self.regions()
        keys = [regs[i].key for i in region_indices if 0 <= i < len(regs) and regs[i].kind == kind]
        if not keys or self.session.reference is None:
            return None
        return self.session.accept_many(keys, self.active_index)

    def edit_layer_name(self, target: str) -> str:
        """``"reference"`` or ``"prediction"`` (the active one) as a session layer name."""
        if target == "reference":
            if self.session.reference is None:
                raise InputError("There is no reference to edit.", "Open a reference label first.")
            return "reference"
        act = self.active
        if act is None:
            raise InputError("There is no prediction to edit.", "Open or make a prediction first.")
        return act.name

    def undo(self) -> bool:
        return self.session.undo() is not None

    def redo(self) -> bool:
        return self.session.redo() is not None

    def _layer_of(self, which: str | int) -> LabelLayer:
        if which == "reference":
            if self.session.reference is None:
                raise InputError("There is no reference to save.", "Open a reference label first.")
            return self.session.reference
        i = self.active_index if which == "prediction" else int(which)
        if not 0 <= i < len(self.session.predictions):
            raise InputError("There is no prediction to save.", "Open or make a prediction first.")
        return self.session.predictions[i]

    def begin_save(
        self, which: str | int, path: str | os.PathLike[str] | None = None, on_conflict: str = "raise"
    ) -> PendingSave:
        """The checks and snapshot of a save of ``"reference"``, ``"prediction"`` (the active one) or a
        prediction index (GUI thread, quick); ``pending.write()`` in a job, then :meth:`finish_save`."""
        return self.session.begin_save(self._layer_of(which), path, on_conflict=on_conflict)

    def finish_save(self, pending: PendingSave) -> Path:
        out = self.session.end_save(pending)
        self.lock_files()  # the layer may belong to another file now (save as)
        if pending.layer.role == "reference":
            self.referenceChanged.emit()
        else:
            self.predictionsChanged.emit()
        return out

    def save_reference(self, path: str | os.PathLike[str] | None = None, on_conflict: str = "raise") -> Path:
        """Write the edited reference (atomic, one backup of the original, edit log beside it);
        :class:`core.review.persist.SaveConflictError` when another save changed the file."""
        return self.finish_save(self.begin_save("reference", path, on_conflict).write())

    def save_prediction(
        self, index: int | None = None, path: str | os.PathLike[str] | None = None, on_conflict: str = "raise"
    ) -> Path:
        """Write a prediction (default: the active one) as a 0/1 label on its source's grid."""
        which: str | int = "prediction" if index is None else index
        return self.finish_save(self.begin_save(which, path, on_conflict).write())

    def use_prediction_as_reference(self, index: int | None = None) -> Edit | None:
        """The (active) prediction becomes the reference: one undo step when a reference is
        open (its file stays as it is until saved); a new reference layer otherwise."""
        i = self.active_index if index is None else index
        if not 0 <= i < len(self.predictions):
            raise InputError("There is no prediction to use.", "Open or make a prediction first.")
        if self.session.reference is None:
            import dataclasses

            layer = self.session.predictions[i]
            vol = LabelVolume(layer.array.copy(), layer.geometry, name="reference")
            # saved later on the prediction file's own grid and orientation, under a name the user gives
            self.set_reference(vol, source=dataclasses.replace(layer.source, path=None, disk_key=None))
            return None
        return self.session.use_prediction_as_reference(i)

    def autosave(self) -> Path | None:
        return self.session.autosave()

    # -- project files ---------------------------------------------------------------
    def to_project(self, project_path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
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
            "names": self.session.names.to_json(),
        }

    def _input_paths(self) -> list[str]:
        """Files this case was opened from: a save never writes over them (core.outputs)."""
        return [p for p in (self.ct_path, self.reference_path, *(e.path for e in self.predictions)) if p]

    def save_project(self, path: str | os.PathLike[str]) -> Path:
        """Write the project JSON atomically; predictions made in the app are
        written next to it first (a project only stores paths)."""
        path = Path(path)
        if path.suffix.lower() != ".json":
            path = path.with_suffix(".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.demo:
            unsaved = [i for i, p in enumerate(self.predictions) if p.path is None]
            # all checked before any is written: never over a file already there, never an input
            outs = side_file_targets(path, [self.predictions[i].name for i in unsaved], self._input_paths())
            for i, out in zip(unsaved, outs):
                self.session.save_prediction(i, out)
        refuse_input_as_output(path, self._input_paths(), "project file")
        write_project(path, self.to_project(path))
        self.project_path = str(path)
        self._set_modified(False)
        return path


def load_project(
    path: str | os.PathLike[str], *, progress: Progress = _noop, cancel: Any = None
) -> tuple[LoadedCase, dict[str, Any]]:
    """Read a project and every file it names (worker side)."""
    data = read_project(path)
    if data.get("demo"):
        loaded = load_demo_case(progress=progress, cancel=cancel)
        return loaded, data
    paths = [p["path"] for p in data.get("predictions", []) if p.get("path")]
    if not data.get("ct") and not data.get("reference") and not paths:
        raise InputError("The project names no file.", "Open the files and save the project again.", path=str(path))
    loaded = load_case(
        data.get("ct"),
        data.get("reference"),
        paths,
        reference_selector=data.get("reference_selector"),
        progress=progress,
        cancel=cancel,
    )
    named = [p for p in data.get("predictions", []) if p.get("path")]
    loaded.prediction_sources = tuple(str(meta.get("source", "file")) for meta in named)
    for layer, meta in zip(loaded.session.predictions, named):
        if meta.get("name") and meta["name"] != layer.name:
            loaded.session.rename_layer(layer, str(meta["name"]))
    return loaded, data


def apply_project(case: Case, loaded: LoadedCase, data: dict[str, Any], project_path: str | None = None) -> None:
    """Put a loaded project into ``case``: files, statuses, cursor and view state."""
    case.apply_loaded(loaded)
    metas = [p for p in data.get("predictions", []) if p.get("path") or data.get("demo")]
    for i, (entry, meta) in enumerate(zip(case.predictions, metas)):
        table = {k: v for k, v in (meta.get("statuses") or {}).items() if v in STATUS_KEYS}
        if int(data.get("version", 1)) < 2:
            # by position in the region list of that time: the same files give the same order
            case._pending_index_statuses[entry.name] = {int(k): v for k, v in table.items()}
            if entry.regions:
                case._apply_pending_statuses(i)
        else:
            live = case.session.status_table(i)
            live.clear()
            live.update(table)
    if case.predictions:
        case.set_active(int(data.get("active_prediction", 0)))
    cur = data.get("cursor")
    if cur and len(cur) == 3:
        case.set_cursor(cur)
    case.view_state = dict(data.get("view") or {})
    case.session.names.load_json(data.get("names"))  # placed on the tree when the analysis names it
    case.project_path = None if project_path is None else str(project_path)
    case._set_modified(False)
