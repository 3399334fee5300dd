"""The review session: a case's label layers, their analysis, and every edit.

Headless (no Qt): the app adapts it to signals, scripts and tests drive it
directly. Arrays are canonical LPS ``(z, y, x)`` (see :mod:`core.review.loading`);
saves write them back on the input file's own grid.

Analysis comes from core.tree, core.metrics and core.regions. Results are
tagged with the layer revisions they were computed from, so "stale" is a
comparison of integers, and a background run (``analysis_job()`` in the
caller's thread of choice, then ``apply_analysis()``) never needs a lock: the
job works on copies taken when it was made.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from core.box import Box, union
from core.errors import Cancelled, InputError
from core.progress import Progress
from core.region_groups import group_regions
from core.review import persist
from core.review.layers import Change, Edit, History, LabelLayer, LayerSnapshot
from core.review.loading import load_ct, read_label_canonical, read_prediction_canonical
from core.review.names import NamedTree, NamesLayer, correction_json, correction_of_json, name_tree, region_branches
from core.review.persist import PathArg
from core.volume import IntensityVolume, LabelVolume, check_same_grid

# Review statuses of an error region: (key, label). Project files store the keys.
STATUSES: tuple[tuple[str, str], ...] = (
    ("unreviewed", "Unreviewed"),
    ("confirmed", "Confirmed error"),
    ("reference_error", "Reference error"),
    ("flagged", "Flagged"),
)
STATUS_KEYS = tuple(k for k, _ in STATUSES)
METRIC_KEYS = ("td", "bd", "dsc", "precision")


@dataclass
class ReviewRegion:
    """An error region of one prediction, with its own voxels.

    ``voxels``: (n, 3) zyx indices (C order) on the session's canonical grid;
    ``count`` their number; ``error`` the full core.regions.ErrorRegion.
    """

    error: Any  # core.regions.ErrorRegion
    prediction: int

    @property
    def key(self) -> str:
        return str(self.error.key)

    @property
    def id(self) -> str:
        return str(self.error.id)

    @property
    def kind(self) -> str:
        return str(self.error.kind)

    @property
    def category(self) -> str:
        return str(self.error.category)

    @property
    def voxels(self) -> np.ndarray:
        return np.asarray(self.error.coords, dtype=np.intp)

    @property
    def count(self) -> int:
        return int(self.error.voxels)

    @property
    def box(self) -> Box:
        return Box.from_ranges(self.error.bbox)

    @property
    def focus(self) -> tuple[int, int, int]:
        z, y, x = self.error.focus_zyx
        return int(z), int(y), int(x)

    def mask(self) -> np.ndarray:
        """Box-local bool mask over :attr:`box`."""
        return np.asarray(self.error.mask(), dtype=bool)


@dataclass
class PredictionAnalysis:
    ref_revision: int
    revision: int
    metrics: Any  # core.metrics.AirwayMetrics
    regions: list[Any]  # core.regions.ErrorRegion
    branches: dict[str, int] = field(default_factory=dict)  # region key -> reference branch (core.review.names)
    # core.region_groups.RegionGroup of ``regions``, made with them where the analysis runs (a worker):
    # grouping 3,500 regions is tens of ms that the GUI thread would otherwise spend on every re-analysis
    groups: list[Any] | None = None


@dataclass
class AnalysisJob:
    """What an analysis needs; :meth:`run` is safe in any thread or process once the arrays are
    copies (``detached``; see :meth:`detach`)."""

    reference: np.ndarray
    ref_revision: int
    geometry: Any
    tree: Any  # reused when the reference did not change
    predictions: list[tuple[str, np.ndarray, int]]  # (layer name, mask, revision)
    detached: bool = True  # False: the arrays are the live layers' (Session.analysis_job(copy=False))

    def detach(self) -> AnalysisJob:
        """Copy the live arrays, in the worker that runs the job: the GUI thread never copies a
        100 MB volume. An edit made while the copy runs is safe: it raises its layer's revision
        past the one this job is tagged with, so the result counts as stale and is computed again."""
        if not self.detached:
            self.reference = self.reference.copy()
            self.predictions = [(n, a.copy(), r) for n, a, r in self.predictions]
            self.detached = True
        return self

    def run(self, progress: Progress | None = None, cancel: Any = None) -> AnalysisResult:
        from core.metrics import evaluate
        from core.regions import find_error_regions
        from core.tree import parse_tree

        sp = self.geometry.spacing_zyx
        steps = 2 + 2 * len(self.predictions)

        def report(k: int, what: str) -> None:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            if progress is not None:
                progress(k, steps, what)

        tree = self.tree
        if tree is None:
            report(0, "Parsing the reference tree")
            tree = parse_tree(self.reference, sp, cancel=cancel)
        named = None
        if self.tree is None:
            report(1, "Naming the reference's branches")
            named = name_tree(tree, self.reference, self.geometry)
        out: dict[str, PredictionAnalysis] = {}
        for n, (name, mask, rev) in enumerate(self.predictions):
            report(2 + 2 * n, f"Metrics of {name}")
            metrics = evaluate(mask, self.reference, sp, tree=tree, cancel=cancel)
            report(3 + 2 * n, f"Error regions of {name}")
            regions = find_error_regions(mask, self.reference, tree, sp, geometry=self.geometry, cancel=cancel)
            out[name] = PredictionAnalysis(
                self.ref_revision, rev, metrics, regions, region_branches(regions, tree), group_regions(regions)
            )
        if progress is not None:
            progress(steps, steps, "Analysis ready")
        return AnalysisResult(self.ref_revision, tree, out, named)


@dataclass
class AnalysisResult:
    ref_revision: int
    tree: Any
    predictions: dict[str, PredictionAnalysis] = field(default_factory=dict)
    named: NamedTree | None = None  # the names of a newly parsed tree


@dataclass
class PendingSave:
    """A save taken apart (:meth:`Session.begin_save`): the snapshot to write, where, and what to log."""

    layer: LabelLayer
    target: Path
    snapshot: LayerSnapshot  # the layer at begin_save, copied where the write runs
    revision: int  # the layer's revision the snapshot shows
    entries: list[dict[str, Any]]  # edit-log entries it saves
    backup: bool
    keep_other: bool  # the user chose to overwrite a file changed on disk: keep that version aside first
    disk_key: persist.FileKey | None = None  # of the written file (set by write)
    _volume: LabelVolume | None = None

    @property
    def volume(self) -> LabelVolume:
        """The snapshot on the file's grid and orientation, uint8 0/1: copied on first use, on
        the thread that writes (the GUI thread only took the O(1) snapshot)."""
        if self._volume is None:
            src = self.layer.source
            self._volume = LabelVolume(
                self.snapshot.take(src.reorientation, np.uint8), src.geometry, name=self.layer.name
            )
        return self._volume

    def write(self, progress: Progress | None = None, cancel: Any = None) -> PendingSave:
        """The slow part (compressing, writing): safe in any thread; the file appears atomically."""
        from core.io import write_volume

        if self.keep_other:
            persist.keep_other_version(self.target)
        if self.backup:
            persist.backup_once(self.target)
        write_volume(self.volume, self.target)
        if self.entries:
            persist.append_edit_log(persist.edit_log_path(self.target), self.entries, self.target)
        self.disk_key = persist.file_key(self.target)
        return self


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Session:
    """CT (optional), reference and predictions as editable label layers.

    ``undo_depth`` bounds the undo steps, ``undo_bytes`` (optional) their memory;
    ``history.nbytes`` states what they hold. ``recovery_path``: where
    :meth:`autosave` writes (None: no recovery file); ``autosave_interval_s``:
    after an edit, autosave when at least this long passed since the last one
    (0: after every edit; None: only when :meth:`autosave` is called).
    """

    def __init__(
        self,
        ct: IntensityVolume | None = None,
        reference: LabelVolume | LabelLayer | None = None,
        predictions: Sequence[LabelVolume | LabelLayer] = (),
        *,
        undo_depth: int = 100,
        undo_bytes: int | None = None,
        recovery_path: PathArg | None = None,
        autosave_interval_s: float | None = None,
    ):
        self.ct = ct
        self.history = History(undo_depth, undo_bytes)
        self.edit_log: list[dict[str, Any]] = []
        self.recovery_path = Path(recovery_path) if recovery_path is not None else None
        self.autosave_interval_s = autosave_interval_s
        self._last_autosave = 0.0
        self._recovery_dirty = False
        self._subscribers: list[Callable[[str, Any], None]] = []
        self._stroke: list[Edit] | None = None  # open stroke: its dabs make one undo step
        self.reference: LabelLayer | None = None
        self.predictions: list[LabelLayer] = []
        self.tree = None
        self.tree_revision: int | None = None
        self.names = NamesLayer()  # the reference tree's branch names and the user's corrections
        self._analysis: dict[str, PredictionAnalysis] = {}
        self._statuses: dict[str, dict[str, str]] = {}
        self._locks: dict[str, persist.EditLock] = {}
        # the app sets it: a layer's file gets a lock file at its first edit (scripts leave none behind)
        self.lock_on_edit = False
        if reference is not None:
            self.set_reference(reference)
        for p in predictions:
            self.add_prediction(p)

    # -- building ------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        ct: PathArg | None = None,
        reference: PathArg | None = None,
        predictions: Sequence[PathArg] = (),
        *,
        reference_selector: str | None = None,
        recovery_dir: PathArg | None = None,
        grid: IntensityVolume | LabelVolume | None = None,
        resample_to_ct: bool = False,
        progress: Progress | None = None,
        cancel: Any = None,
        **options: Any,
    ) -> Session:
        """Read the files (canonical orientation; labels must lie on the CT's grid).

        Without a CT the labels are read on their own grid (a label-only case), or on
        ``grid`` when given (the grid of a case already open, whose layers these join).
        ``resample_to_ct``: labels on another grid are resampled onto the CT's / ``grid``
        (nearest neighbour) instead of refused with a GeometryError.
        With a reference file, autosave goes to a recovery file named after it
        in ``recovery_dir`` (default :func:`core.review.persist.default_recovery_dir`)
        unless ``recovery_path`` is given in ``options``."""
        steps = int(ct is not None) + int(reference is not None) + len(predictions)
        done = 0

        def step(what: str) -> None:
            nonlocal done
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            if progress is not None:
                progress(done, steps, what)
            done += 1

        ct_vol = None
        ct_source = None
        reo = None
        if ct is not None:
            step(f"Reading CT {Path(ct).name}")
            ct_vol, reo = load_ct(ct)
            ct_source = str(ct)
        on: Any = ct_vol if ct_vol is not None else grid
        ref_layer = None
        if reference is not None:
            step(f"Reading reference {Path(reference).name}")
            vol, src = read_label_canonical(reference, on, "reference", reference_selector, resample=resample_to_ct)
            ref_layer = LabelLayer("reference", vol, src, role="reference")
        layers = []
        for p in predictions:
            step(f"Reading prediction {Path(p).name}")
            pvol, probs, src = read_prediction_canonical(p, on, resample=resample_to_ct)
            layers.append(LabelLayer(pvol.name or Path(p).name, pvol, src, probabilities=probs))
        if "recovery_path" not in options and reference is not None:
            options["recovery_path"] = Path(recovery_dir or persist.default_recovery_dir()) / persist.recovery_name(
                reference
            )
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        s = cls(ct_vol, ref_layer, layers, **options)
        s.ct_path = ct_source
        s.ct_reorientation = reo
        if progress is not None:
            progress(steps, steps, "Loaded")
        return s

    def release_layers(self) -> list[LabelLayer]:
        """Hand this session's layers (reference first) to another session: they stop
        reporting here and this session is left empty."""
        out = self.layers()
        for layer in out:
            layer.unsubscribe_all()
        self.reference, self.predictions = None, []
        self._analysis.clear()
        self._statuses.clear()
        self.history.clear()
        return out

    def put_tree(self, tree: Any) -> None:
        """Take a reference tree parsed elsewhere, as of the reference's current revision."""
        if self.reference is None:
            raise InputError("There is no reference the tree could be of.", "Load a reference label first.")
        self.tree, self.tree_revision = tree, self.reference.revision

    def lock_files(self, *, take: bool = True) -> list[persist.EditLock]:
        """Lock files beside this session's layer files (see :class:`core.review.persist.EditLock`),
        each saying whether another live session holds its file (``other``). ``take=False`` only
        looks (opening writes nothing); with ``lock_on_edit`` a layer's file is taken at its first edit."""
        out = []
        for layer in self.layers():
            if not layer.path:
                continue
            lock = self._locks.get(layer.path)
            if lock is None or (take and not lock.held and lock.other is None):
                lock = persist.EditLock(layer.path)
                lock = lock.acquire() if take else lock.check()
                self._locks[layer.path] = lock
            out.append(lock)
        return out

    def release_locks(self) -> None:
        for lock in self._locks.values():
            lock.release()
        self._locks.clear()

    def result(self, index: int) -> PredictionAnalysis | None:
        """The last analysis of prediction ``index`` (possibly stale), or None."""
        return self._analysis.get(self.predictions[index].name)

    def put_analysis(self, index: int, metrics: Any = None, regions: list[Any] | None = None) -> None:
        """Take metrics and/or regions computed elsewhere (a script, a cache) for prediction
        ``index``, as of the current revisions."""
        if self.reference is None:
            raise InputError("There is no reference the results could be against.", "Load a reference label first.")
        p = self.predictions[index]
        old = self._analysis.get(p.name)
        self._analysis[p.name] = PredictionAnalysis(
            self.reference.revision,
            p.revision,
            metrics if metrics is not None else (old.metrics if old else None),
            regions if regions is not None else (old.regions if old else []),
        )

    ct_path: str | None = None
    ct_reorientation: Any = None  # core.volume.Reorientation of the CT file (None: no CT read)

    def _check_grid(self, volume: LabelVolume) -> None:
        layers = self.layers()
        other = self.ct if self.ct is not None else (layers[0].volume if layers else None)
        if other is not None:
            check_same_grid(other, volume)

    def set_reference(self, reference: LabelVolume | LabelLayer) -> LabelLayer:
        layer = (
            reference
            if isinstance(reference, LabelLayer)
            else LabelLayer("reference", _as_bool(reference), role="reference")
        )
        layer.name, layer.role = "reference", "reference"
        if self.ct is not None:
            check_same_grid(self.ct, layer.volume)
        for p in self.predictions:
            check_same_grid(p.volume, layer.volume)
        self.reference = layer
        layer.subscribe(self._forward)
        self.tree, self.tree_revision = None, None
        self.names.forget_tree()
        self._analysis.clear()
        self.history.clear()
        self._emit("reference", layer)
        return layer

    def clear_reference(self) -> None:
        """Close the reference (its edits can no longer be undone; nothing is analysed)."""
        if self.reference is not None:
            self.reference.unsubscribe_all()
        self.reference = None
        self.tree, self.tree_revision = None, None
        self.names.forget_tree()
        self._analysis.clear()
        self.history.clear()
        self._emit("reference", None)

    def add_prediction(self, prediction: LabelVolume | LabelLayer, name: str | None = None) -> int:
        layer = (
            prediction
            if isinstance(prediction, LabelLayer)
            else LabelLayer(name or prediction.name or "prediction", _as_bool(prediction))
        )
        self._check_grid(layer.volume)
        self.predictions.append(layer)
        self._rename_distinct()
        self._statuses.setdefault(layer.name, {})
        layer.subscribe(self._forward)
        self._emit("predictions", len(self.predictions) - 1)
        return len(self.predictions) - 1

    def _rename_distinct(self) -> None:
        """Predictions of one file name get their folders as a prefix
        (:func:`core.review.naming.distinct_names`); statuses, results and undo steps follow."""
        from core.review.naming import distinct_names

        names = distinct_names([(p.base_name, p.path) for p in self.predictions], taken=("reference",))
        for layer, name in zip(self.predictions, names):
            if layer.name != name:
                self.rename_layer(layer, name)

    def rename_layer(self, layer: LabelLayer, name: str) -> None:
        """Give a prediction layer another name; everything keyed by its name follows."""
        old = layer.name
        if old == name:
            return
        if any(p is not layer and p.name == name for p in self.layers()):
            raise InputError(f"A layer is already named '{name}'.", "Choose another name.")
        layer.name = name
        if old in self._statuses:
            self._statuses[name] = self._statuses.pop(old)
        if old in self._analysis:
            self._analysis[name] = self._analysis.pop(old)
        for stack in (self.history.undo_stack, self.history.redo_stack):
            for edit in stack:
                for d in edit.deltas:
                    if d.layer == old:
                        d.layer = name
        for entry in self.edit_log:
            if entry.get("layer") == old:
                entry["layer"] = name

    def remove_prediction(self, index: int) -> None:
        layer = self.predictions.pop(index)
        self._analysis.pop(layer.name, None)
        self._statuses.pop(layer.name, None)
        # its deltas cannot be undone any more; drop only those
        for stack in (self.history.undo_stack, self.history.redo_stack):
            stack[:] = [e for e in stack if all(d.layer != layer.name for d in e.deltas)]
        self._emit("predictions", index)

    def layers(self) -> list[LabelLayer]:
        return ([self.reference] if self.reference is not None else []) + list(self.predictions)

    def layer(self, name_or_index: str | int) -> LabelLayer:
        """``"reference"``, a prediction's name, or a prediction index."""
        if isinstance(name_or_index, int):
            return self.predictions[name_or_index]
        for layer in self.layers():
            if layer.name == name_or_index:
                return layer
        raise InputError(
            f"No layer '{name_or_index}' in the session.", "Choose the reference or one of the predictions."
        )

    # -- events --------------------------------------------------------------------

    def subscribe(self, fn: Callable[[str, Any], None]) -> Callable[[], None]:
        """``fn(kind, payload)``: ``("change", Change)`` after every voxel change,
        ``("analysis", [prediction indices])``, ``("status", (pred, key, status))``,
        ``("statuses", [(pred, key, status), ...])`` (several at once: a group's parts, their undo),
        ``("reference", layer)``, ``("predictions", index)``, ``("history", None)``,
        ``("names", branch id or None)`` (the reference tree's names changed: a new tree or a correction)."""
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn) if fn in self._subscribers else None

    def _emit(self, kind: str, payload: Any) -> None:
        for fn in list(self._subscribers):
            fn(kind, payload)

    def _forward(self, change: Change) -> None:
        self._recovery_dirty = True
        if self.lock_on_edit:
            path = next((lyr.path for lyr in self.layers() if lyr.name == change.layer), None)
            held = self._locks.get(path) if path else None
            if path and (held is None or not (held.held or held.other is not None)):
                self._locks[path] = persist.EditLock(path).acquire()
        self._emit("change", change)

    # -- analysis ------------------------------------------------------------------

    def analysis_job(self, *, copy: bool = True, only_stale: bool = True) -> AnalysisJob:
        """What a (background) analysis needs. ``copy=False`` shares the live arrays: run it at once,
        or call ``job.detach()`` first in the worker (app.review.analysis_runner does)."""
        if self.reference is None:
            raise InputError("There is no reference to analyse against.", "Load a reference label first.")
        ref = self.reference
        reuse = self.tree is not None and self.tree_revision == ref.revision
        preds = []
        for p in self.predictions:
            a = self._analysis.get(p.name)
            if only_stale and a is not None and a.ref_revision == ref.revision and a.revision == p.revision:
                continue
            preds.append((p.name, p.array.copy() if copy else p.array, p.revision))
        return AnalysisJob(
            ref.array.copy() if copy and (preds or not reuse) else ref.array,
            ref.revision,
            ref.geometry,
            self.tree if reuse else None,
            preds,
            detached=copy,
        )

    def apply_analysis(self, result: AnalysisResult) -> list[int]:
        """Take a finished job's results (also when edits came since: they stay marked stale)."""
        if self.reference is None:
            return []
        self.tree, self.tree_revision = result.tree, result.ref_revision
        if result.named is not None:
            self.names.set_tree(result.tree, result.named.names, result.named.reference_key)
            self.names.error = result.named.error
            self._emit("names", None)
        updated = []
        for i, p in enumerate(self.predictions):
            a = result.predictions.get(p.name)
            if a is not None:
                self._analysis[p.name] = a
                updated.append(i)
        self._emit("analysis", updated)
        return updated

    def analyse(self, progress: Progress | None = None, cancel: Any = None) -> list[int]:
        """Tree, metrics and regions of every prediction that changed since its last analysis (blocking)."""
        return self.apply_analysis(self.analysis_job(copy=False).run(progress, cancel))

    def is_stale(self, index: int | None = None) -> bool:
        """True when the prediction (any, for None) has edits after its last analysis, or none yet."""
        if self.reference is None:
            return False
        idx = range(len(self.predictions)) if index is None else [index]
        for i in idx:
            p = self.predictions[i]
            a = self._analysis.get(p.name)
            if a is None or a.ref_revision != self.reference.revision or a.revision != p.revision:
                return True
        return False

    def analysed(self, index: int) -> bool:
        return self.predictions[index].name in self._analysis

    def _result(self, index: int) -> PredictionAnalysis:
        a = self._analysis.get(self.predictions[index].name)
        if a is None:
            raise InputError(f"Prediction {index} has not been analysed.", "Call analyse() first.")
        return a

    def metrics_result(self, index: int) -> Any:
        """The full core.metrics.AirwayMetrics of the last analysis."""
        return self._result(index).metrics

    def metrics(self, index: int) -> dict[str, Any]:
        """td, bd, dsc, precision (percent) and the other scalar metrics of the last analysis."""
        return dict(self._result(index).metrics.summary())

    def regions(self, index: int) -> list[ReviewRegion]:
        return [ReviewRegion(g, index) for g in self._result(index).regions]

    def groups(self, index: int) -> list[Any]:
        """The review groups (core.region_groups.RegionGroup) of prediction ``index``'s regions, in review
        order; made once per analysis (by the analysis itself, or here for regions put from elsewhere)."""
        a = self._result(index)
        if a.groups is None:
            a.groups = group_regions(a.regions) if a.regions else []
        return a.groups

    def region_branches(self, index: int) -> dict[str, int]:
        """{region key: the reference branch it lies in} of prediction ``index``'s last analysis (the
        analysis' own table, not a copy; empty before one)."""
        a = self._analysis.get(self.predictions[index].name) if 0 <= index < len(self.predictions) else None
        return {} if a is None else a.branches

    def region_branch(self, index: int, key: str) -> int | None:
        """The reference branch region ``key`` of prediction ``index`` lies in (0: outside the tree;
        None: not known)."""
        a = self._analysis.get(self.predictions[index].name)
        return None if a is None else a.branches.get(key)

    def find_region(self, key: str, prediction: int | None = None) -> ReviewRegion:
        idx = range(len(self.predictions)) if prediction is None else [prediction]
        for i in idx:
            a = self._analysis.get(self.predictions[i].name)
            for g in a.regions if a is not None else []:
                if g.key == key:
                    return ReviewRegion(g, i)
        raise InputError(f"No error region with key {key}.", "Analyse again; the region may have been corrected.")

    # -- statuses --------------------------------------------------------------------

    def status(self, prediction: int, key: str) -> str:
        return self._statuses.get(self.predictions[prediction].name, {}).get(key, "unreviewed")

    def statuses(self, prediction: int) -> dict[str, str]:
        return dict(self._statuses.get(self.predictions[prediction].name, {}))

    def status_table(self, prediction: int) -> dict[str, str]:
        """The live {region key: status} dict of a prediction (shared, not a copy: the app shows it)."""
        return self._statuses.setdefault(self.predictions[prediction].name, {})

    def set_status(self, prediction: int, key: str, status: str) -> None:
        if status not in STATUS_KEYS:
            raise InputError(f"Unknown review status '{status}'.", f"Use one of {', '.join(STATUS_KEYS)}.")
        table = self._statuses.setdefault(self.predictions[prediction].name, {})
        if status == "unreviewed":
            table.pop(key, None)
        else:
            table[key] = status
        self._recovery_dirty = True
        self._emit("status", (prediction, key, status))

    # -- edits ---------------------------------------------------------------------

    def accept(self, key: str, prediction: int | None = None) -> Edit | None:
        """Correct the reference by a region: FP voxels are added to it (the annotators
        missed an airway), FN voxels removed (the reference holds no airway there).
        The region's status becomes ``reference_error``. None when nothing changed."""
        return self.accept_many([key], prediction)

    def accept_many(self, keys: Sequence[str], prediction: int | None = None) -> Edit | None:
        """:meth:`accept` for several regions of one kind (a review group: "FN br. 25, 72 parts")
        as ONE undoable edit; every region's status becomes ``reference_error``.
        ``edit.regions`` counts the regions whose voxels changed. None when nothing changed."""
        if self.reference is None:
            raise InputError("There is no reference to correct.", "Load a reference label first.")
        regions = [self.find_region(k, prediction) for k in dict.fromkeys(keys)]
        if not regions:
            return None
        kinds = {r.kind for r in regions}
        if len(kinds) > 1:
            raise InputError(
                "The regions to accept are of different kinds (FP and FN).",
                "Accept the FP regions (add) and the FN regions (remove) separately.",
            )
        value = regions[0].kind == "FP"
        box: Box | None = None
        for r in regions:
            box = union(box, r.box)
        assert box is not None
        mask = np.zeros(box.shape, dtype=bool)
        changed = 0
        current = self.reference.array[box.slices]
        for r in regions:
            sl = r.box.shifted([-a for a in box.start]).slices
            m = r.mask()
            if (m & (current[sl] != value)).any():
                changed += 1
            mask[sl] |= m
        before = [(r.prediction, r.key, self.status(r.prediction, r.key)) for r in regions]
        edit = self._write(
            self.reference,
            box,
            mask,
            value,
            tool="add_to_reference" if value else "remove_from_reference",
            region_key=regions[0].key if len(regions) == 1 else None,
            **({} if len(regions) == 1 else {"region_keys": [r.key for r in regions]}),
        )
        if edit is not None:
            edit.regions = changed
            edit.statuses = [(p, k, b, "reference_error") for p, k, b in before]
            self.set_statuses([(p, k, "reference_error") for p, k, _ in before])
        return edit

    def paint(
        self,
        layer: str | int | LabelLayer,
        box: Box,
        mask: np.ndarray,
        value: bool,
        *,
        tool: str = "brush",
        region_key: str | None = None,
        **extra: Any,
    ) -> Edit | None:
        """Set the voxels of ``mask`` (box-local) on a layer, as one undoable edit."""
        target = layer if isinstance(layer, LabelLayer) else self.layer(layer)
        return self._write(target, box, mask, bool(value), tool=tool, region_key=region_key, **extra)

    def brush(
        self,
        layer: str | int | LabelLayer,
        centre: Sequence[int],
        radius: float,
        value: bool = True,
        *,
        form: str = "disc",
        orientation: str = "axial",
        hu_range: tuple[float, float] | None = None,
    ) -> Edit | None:
        from core.review.tools import brush

        target = layer if isinstance(layer, LabelLayer) else self.layer(layer)
        if hu_range is not None and self.ct is None:
            raise InputError("An HU range needs the CT.", "Load the CT, or paint without the HU range.")
        shaped = brush(
            target.shape,
            centre,
            radius,
            form=form,
            orientation=orientation,
            spacing_zyx=target.geometry.spacing_zyx,
            ct=None if self.ct is None else self.ct.array,
            hu_range=hu_range,
        )
        if shaped is None:
            return None
        return self._write(target, shaped[0], shaped[1], value, tool="brush" if value else "eraser")

    def flood_fill(
        self,
        layer: str | int | LabelLayer,
        seed: Sequence[int],
        hu_range: tuple[float, float],
        *,
        max_voxels: int = 200_000,
        max_radius: int = 40,
    ) -> Edit | None:
        from core.review.tools import flood_fill

        if self.ct is None:
            raise InputError("The flood fill grows within an HU range of the CT.", "Load the CT first.")
        target = layer if isinstance(layer, LabelLayer) else self.layer(layer)
        box, mask = flood_fill(self.ct.array, seed, hu_range, max_voxels=max_voxels, max_radius=max_radius)
        return self._write(target, box, mask, True, tool="fill", seed=[int(v) for v in seed], hu_range=list(hu_range))

    @property
    def stroke_open(self) -> bool:
        return self._stroke is not None

    def begin_stroke(self) -> None:
        """Until :meth:`end_stroke`, writes of the same layer and tool join one undo step
        (a brush drag is one edit, however many dabs it took)."""
        self._stroke = []

    def end_stroke(self) -> Edit | None:
        stroke, self._stroke = self._stroke, None
        if not stroke:
            return None
        for edit in stroke:
            self._log(edit, edit.deltas[0].layer, edit.tool)
        self._emit("history", None)
        self._maybe_autosave()
        return stroke[-1]

    def _write(
        self,
        layer: LabelLayer,
        box: Box,
        mask: np.ndarray,
        value: bool,
        *,
        tool: str,
        region_key: str | None = None,
        **extra: Any,
    ) -> Edit | None:
        delta = layer.write(box, mask, value)
        if delta is None:
            return None
        n = delta.count
        if self._stroke is not None:
            last = self._stroke[-1] if self._stroke else None
            if (
                last is not None
                and last.tool == tool
                and last.deltas[0].layer == layer.name
                and self.history.undo_stack
                and self.history.undo_stack[-1] is last
            ):
                last.deltas.append(delta)
                last.added += n if value else 0
                last.removed += 0 if value else n
                return last
            edit = Edit(
                tool,
                [delta],
                region_key,
                added=n if value else 0,
                removed=0 if value else n,
                time=time.time(),
                extra=dict(extra),
            )
            self.history.push(edit)
            self._stroke.append(edit)
            return edit
        edit = Edit(
            tool,
            [delta],
            region_key,
            added=n if value else 0,
            removed=0 if value else n,
            time=time.time(),
            extra=dict(extra),
        )
        self.history.push(edit)
        self._log(edit, layer.name, tool)
        self._emit("history", None)
        self._maybe_autosave()
        return edit

    def name_branch(self, branch_id: int, name: str | None, *, automatic: bool = False) -> Edit:
        """Name a branch of the reference tree (None: "unnamed"; ``automatic``: drop the correction, the
        labeller's name again); its descendants follow. One undoable step, logged and kept for recovery."""
        bid = int(branch_id)
        before = self.names.corrections.get(bid)
        if automatic:
            self.names.check_branch(bid)
            self.names.restore(bid, None)
            after = None
        else:
            before, after = self.names.correct(bid, name)
        edit = Edit(
            "name",
            [],
            None,
            time=time.time(),
            extra={"branch": bid, "name": name, "before": correction_json(before), "after": correction_json(after)},
        )
        self.history.push(edit)
        self._log(edit, "names", "name")
        self._recovery_dirty = True
        self._emit("names", bid)
        self._emit("history", None)
        self._maybe_autosave()
        return edit

    def _log(self, edit: Edit, layer: str, tool: str, added: int | None = None, removed: int | None = None) -> None:
        entry = {
            "time": _now(),
            "tool": tool,
            "layer": layer,
            "region_key": edit.region_key,
            "added": edit.added if added is None else added,
            "removed": edit.removed if removed is None else removed,
        }
        entry.update(edit.extra)
        self.edit_log.append(entry)

    def can_undo(self) -> bool:
        return self.history.can_undo()

    def can_redo(self) -> bool:
        return self.history.can_redo()

    def undo(self) -> Edit | None:
        if not self.history.undo_stack:
            return None
        edit = self.history.undo_stack.pop()
        self._swap(edit, "undo")
        self.history.redo_stack.append(edit)
        self.set_statuses([(pred, key, before) for pred, key, before, _after in reversed(edit.statuses)])
        layer = edit.deltas[0].layer if edit.deltas else "names"
        self._log(edit, layer, f"undo {edit.tool}", added=edit.removed, removed=edit.added)
        self._emit("history", None)
        self._maybe_autosave()
        return edit

    def redo(self) -> Edit | None:
        if not self.history.redo_stack:
            return None
        edit = self.history.redo_stack.pop()
        self._swap(edit, "redo")
        self.history.undo_stack.append(edit)
        self.set_statuses([(pred, key, after) for pred, key, _before, after in edit.statuses])
        self._log(edit, edit.deltas[0].layer if edit.deltas else "names", f"redo {edit.tool}")
        self._emit("history", None)
        self._maybe_autosave()
        return edit

    def set_statuses(self, changes: Sequence[tuple[int, str, str]]) -> None:
        """Several statuses (a group's parts) as ONE ``("statuses", changes)`` event: a listener
        refreshes once, not once per part (hundreds on a real pair); one change is a plain ``status``."""
        changes = [c for c in changes if c[0] < len(self.predictions)]
        if len(changes) == 1:
            self.set_status(*changes[0])
            return
        for prediction, key, status in changes:
            if status not in STATUS_KEYS:
                raise InputError(f"Unknown review status '{status}'.", f"Use one of {', '.join(STATUS_KEYS)}.")
            table = self._statuses.setdefault(self.predictions[prediction].name, {})
            if status == "unreviewed":
                table.pop(key, None)
            else:
                table[key] = status
        if changes:
            self._recovery_dirty = True
            self._emit("statuses", changes)

    def _swap(self, edit: Edit, reason: str) -> None:
        for d in reversed(edit.deltas) if reason == "undo" else edit.deltas:
            self.layer(d.layer).apply_swap(d, reason)
        if edit.tool == "name":
            after = edit.extra["before" if reason == "undo" else "after"]
            self.names.restore(int(edit.extra["branch"]), correction_of_json(after))
            self._recovery_dirty = True
            self._emit("names", int(edit.extra["branch"]))

    # -- saving --------------------------------------------------------------------

    def save_reference(
        self,
        path: PathArg | None = None,
        *,
        backup: bool = True,
        log: bool = True,
        on_conflict: str = "raise",
    ) -> Path:
        """Write the reference atomically on the input's grid and orientation (uint8 0/1).

        An existing file at ``path`` is first kept once as ``<name>.orig<suffix>``;
        the edit log is appended to ``<name>.edits.json``. Default path: the input.
        ``on_conflict``: see :meth:`save_layer`."""
        if self.reference is None:
            raise InputError("There is no reference to save.", "Load a reference label first.")
        return self.save_layer(self.reference, path, backup=backup, log=log, on_conflict=on_conflict)

    def save_prediction(
        self, index: int, path: PathArg | None = None, *, backup: bool = True, on_conflict: str = "raise"
    ) -> Path:
        """Write prediction ``index`` as a 0/1 label on its source's grid (atomic, like the reference)."""
        return self.save_layer(self.predictions[index], path, backup=backup, on_conflict=on_conflict)

    def changed_on_disk(self, layer: LabelLayer, path: PathArg | None = None) -> bool:
        """True when the file ``layer`` was read from (or last saved to) holds other bytes now:
        another window, person or program saved it since. Other paths never conflict."""
        target = Path(path) if path is not None else (Path(layer.path) if layer.path else None)
        if target is None or layer.path is None or layer.source.disk_key is None:
            return False
        if target.resolve() != Path(layer.path).resolve():
            return False
        return persist.file_key(target) != layer.source.disk_key

    def save_layer(
        self,
        layer: LabelLayer,
        path: PathArg | None = None,
        *,
        backup: bool = True,
        log: bool = True,
        on_conflict: str = "raise",
    ) -> Path:
        """Write ``layer`` atomically on its source's grid (uint8 0/1); the layer belongs to the written
        file afterwards (the next save without a path goes there).

        When the file is no longer what this session read (:meth:`changed_on_disk`),
        ``on_conflict`` decides: ``"raise"`` (:class:`core.review.persist.SaveConflictError`,
        nothing written), ``"overwrite"`` (the other version is first copied aside as
        ``<name>.other-<time><suffix>``) or ``"merge"`` (the file is read again and this
        session's edited voxels are applied over it, as one undoable edit, then written).
        In three steps for a GUI: :meth:`begin_save` (checks, a snapshot), ``pending.write()``
        (in a worker: the slow part), :meth:`end_save`."""
        pending = self.begin_save(layer, path, backup=backup, log=log, on_conflict=on_conflict)
        pending.write()
        return self.end_save(pending)

    def begin_save(
        self,
        layer: LabelLayer,
        path: PathArg | None = None,
        *,
        backup: bool = True,
        log: bool = True,
        on_conflict: str = "raise",
    ) -> PendingSave:
        """The checks of a save and a snapshot of the layer on its file's grid, on the thread that
        edits; ``write()`` the result anywhere, then :meth:`end_save` it here."""
        if on_conflict not in ("raise", "overwrite", "merge"):
            raise ValueError(f"on_conflict must be raise, overwrite or merge, not {on_conflict!r}")
        target = Path(path) if path is not None else (Path(layer.path) if layer.path else None)
        if target is None:
            raise InputError(f"The layer '{layer.name}' has no file yet.", "Choose a file name to save it to.")
        others = [(lyr.name, lyr.path) for lyr in self.layers() if lyr is not layer] + [("CT", self.ct_path)]
        for name, other in others:
            if other is not None and Path(other).exists() and target.exists() and target.samefile(other):
                raise InputError(
                    f"{target.name} is the file of the {name} layer." if name != "CT" else f"{target.name} is the CT.",
                    "Choose another file name: a save never writes over another open file.",
                    path=str(target),
                )
        keep_other = False
        if self.changed_on_disk(layer, target):
            if on_conflict == "raise":
                raise persist.SaveConflictError(target, layer.name)
            if on_conflict == "overwrite":
                keep_other = True
            else:
                self.merge_from_disk(layer)
        entries = [e for e in self.edit_log if e["layer"] == layer.name and not e.get("saved")] if log else []
        return PendingSave(layer, target, layer.snapshot(), layer.revision, entries, backup, keep_other)

    def end_save(self, pending: PendingSave) -> Path:
        """After ``pending.write()``: the layer belongs to the written file, its edits up to the
        snapshot count as saved (edits made while it was written stay unsaved), and the recovery
        file goes when nothing is left unsaved."""
        layer = pending.layer
        for e in pending.entries:
            e["saved"] = True
        layer.source = dataclasses.replace(layer.source, path=str(pending.target), disk_key=pending.disk_key)
        layer.saved_revision = pending.revision
        if not any(lyr.modified for lyr in self.layers()):
            self.discard_recovery()
        return pending.target

    def merge_from_disk(self, layer: LabelLayer) -> Edit | None:
        """Read ``layer``'s file again and put this session's edited voxels over it: the other
        version's edits and these both survive (a voxel both changed keeps this session's value).
        One undoable edit; the layer then counts as read from the file as it is now."""
        from core.review.loading import read_label_canonical

        if layer.path is None:
            raise InputError(f"The layer '{layer.name}' has no file to merge with.", "Save it to a file first.")
        disk, src = read_label_canonical(layer.path, None, "label", layer.source.selector)
        if disk.shape != layer.shape:
            raise InputError(
                f"{Path(layer.path).name} on disk now has another size than the one opened here.",
                "Save your version to a new file instead.",
                path=layer.path,
            )
        merged = np.array(disk.array, dtype=bool, copy=True)
        flat = layer.touched
        if flat.size:
            merged.reshape(-1)[flat] = layer.array.reshape(-1)[flat]
        edit = self.replace_voxels(layer, merged, tool="merge", source=str(layer.path))
        layer.source = dataclasses.replace(layer.source, disk_key=src.disk_key)
        return edit

    def replace_voxels(self, layer: LabelLayer, array: np.ndarray, *, tool: str, **extra: Any) -> Edit | None:
        """Make ``layer`` hold ``array`` (bool, same shape) as ONE undoable edit
        (two deltas: voxels set, voxels cleared); None when they are equal."""
        if array.shape != layer.shape:
            raise InputError(
                f"A {array.shape} mask cannot replace the {layer.shape} layer '{layer.name}'.",
                "Use a mask on the same grid.",
            )
        current = layer.array
        diff = np.argwhere(current != array)
        box = Box.around(diff)
        if box is None:
            return None
        sl = box.slices
        new = np.asarray(array[sl], dtype=bool)
        old = current[sl]
        deltas = []
        added = removed = 0
        d = layer.write(box, new & ~old, True)
        if d is not None:
            deltas.append(d)
            added = d.count
        d = layer.write(box, ~new & layer.array[sl], False)
        if d is not None:
            deltas.append(d)
            removed = d.count
        if not deltas:
            return None
        edit = Edit(tool, deltas, None, added=added, removed=removed, time=time.time(), extra=dict(extra))
        self.history.push(edit)
        self._log(edit, layer.name, tool)
        self._emit("history", None)
        self._maybe_autosave()
        return edit

    def use_prediction_as_reference(self, index: int) -> Edit | None:
        """Make prediction ``index`` the reference (e.g. region growing's mask as the starting
        reference). With a reference open this is ONE undoable edit of the reference layer:
        its file on disk is untouched until it is saved (and then kept once as ``.orig``).
        Without one, the prediction's copy becomes a new reference with no file (saving asks
        for a name); that cannot be undone. None when the reference already equals it."""
        pred = self.predictions[index]
        if self.reference is None:
            vol = LabelVolume(pred.array.copy(), pred.geometry, name="reference")
            src = dataclasses.replace(pred.source, path=None, disk_key=None)
            self.set_reference(LabelLayer("reference", vol, src, role="reference"))
            return None
        return self.replace_voxels(self.reference, pred.array, tool="use_prediction", prediction=pred.name)

    @property
    def modified(self) -> bool:
        return any(lyr.modified for lyr in self.layers())

    # -- recovery ------------------------------------------------------------------

    def _maybe_autosave(self) -> None:
        if self.recovery_path is None or self.autosave_interval_s is None:
            return
        if time.monotonic() - self._last_autosave >= self.autosave_interval_s:
            self.autosave()

    def autosave(self) -> Path | None:
        """Write the recovery file (edited voxels only) if anything changed since the last one."""
        if self.recovery_path is None or not self._recovery_dirty:
            return None
        meta = {
            "ct": persist.file_identity(self.ct_path),
            "layers": [
                {
                    "name": lyr.name,
                    "role": lyr.role,
                    "selector": lyr.source.selector,
                    "file": persist.file_identity(lyr.path),
                    "revision": lyr.revision,
                }
                for lyr in self.layers()
            ],
            "statuses": self._statuses,
            "edit_log": self.edit_log,
            "names": self.names.to_json(),
        }
        arrays = {}
        for n, lyr in enumerate(self.layers()):
            arrays[f"index_{n}"] = lyr.touched
            arrays[f"values_{n}"] = lyr.touched_values()
        persist.write_recovery(self.recovery_path, meta, arrays)
        self._last_autosave = time.monotonic()
        self._recovery_dirty = False
        return self.recovery_path

    def discard_recovery(self) -> None:
        if self.recovery_path is not None and self.recovery_path.exists():
            self.recovery_path.unlink()
        self._recovery_dirty = False

    @classmethod
    def recover(cls, recovery_path: PathArg, **options: Any) -> Session:
        """Reopen the files a recovery file was written for and replay its edits.

        Refuses (InputError) when an input file changed since: the stored voxel
        indices would land on other data. The recovered edits cannot be undone
        one by one (the history was in the killed process); the next save
        records them in the edit log as they were logged."""
        meta, arrays = check_recovery(recovery_path)
        inputs = recovery_inputs(meta)
        options.setdefault("recovery_path", recovery_path)
        s = cls.load(
            inputs["ct"],
            inputs["reference"],
            inputs["predictions"],
            reference_selector=inputs["reference_selector"],
            **options,
        )
        s.apply_recovery(meta, arrays)
        return s

    def apply_recovery(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Replay a recovery file's voxels, statuses and edit log on the same inputs, loaded afresh."""
        layers = self.layers()
        if len(layers) != len(meta["layers"]):
            raise InputError(
                "The open case has other layers than the recovery file.",
                "Open the same reference and predictions, then recover.",
            )
        for n, (lyr, m) in enumerate(zip(layers, meta["layers"])):
            if m["role"] != "reference" and lyr.name != m["name"]:
                self._statuses[m["name"]] = self._statuses.pop(lyr.name, {})
                lyr.name = m["name"]
            lyr.restore_touched(arrays[f"index_{n}"], arrays[f"values_{n}"])
        for name, table in meta.get("statuses", {}).items():
            self._statuses.setdefault(name, {}).clear()
            self._statuses[name].update(table)
        self.edit_log = list(meta.get("edit_log", []))
        self.names.load_json(meta.get("names"))
        self._recovery_dirty = False


def check_recovery(recovery_path: PathArg) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a recovery file and check its inputs are unchanged (InputError otherwise)."""
    meta, arrays = persist.read_recovery(recovery_path)
    files = [m["file"] for m in meta["layers"] if m.get("file")] + ([meta["ct"]] if meta.get("ct") else [])
    for f in files:
        now = persist.file_identity(f["path"]) or {}
        if now.get("size") != f["size"] or now.get("mtime_ns") != f["mtime_ns"]:
            raise InputError(
                f"{Path(f['path']).name} changed (or vanished) after the recovery file was written.",
                "The edits cannot be replayed on other data; delete the recovery file.",
                path=str(recovery_path),
            )
    return meta, arrays


def recovery_inputs(meta: dict[str, Any]) -> dict[str, Any]:
    """The files to open before :meth:`Session.apply_recovery`: ct, reference, predictions, reference_selector."""
    ref = next((m for m in meta["layers"] if m["role"] == "reference"), None)
    preds = [m for m in meta["layers"] if m["role"] != "reference"]
    if ref is None or ref.get("file") is None or any(m.get("file") is None for m in preds):
        raise InputError(
            "The recovery file names layers that were never saved to a file.",
            "Only edits on layers loaded from files can be recovered.",
        )
    return {
        "ct": meta["ct"]["path"] if meta.get("ct") else None,
        "reference": ref["file"]["path"],
        "predictions": [m["file"]["path"] for m in preds],
        "reference_selector": ref.get("selector"),
    }


def _as_bool(volume: LabelVolume) -> LabelVolume:
    if volume.array.dtype == bool and volume.array.flags.c_contiguous:
        return volume
    out = volume.with_array(np.ascontiguousarray(volume.mask))
    assert isinstance(out, LabelVolume)
    return out
