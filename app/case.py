"""The open case: CT, reference, predictions, analysis results and review state.

Plain Python plus Qt signals, no widgets. Views read from the case and never
compute: the case asks core (io, tree, metrics, regions) in background jobs
(:mod:`app.workers`) and announces results through signals. Every volume is
held in canonical LPS orientation (:func:`core.volume.to_canonical`), so array
axis 0 runs inferior->superior, axis 1 anterior->posterior, axis 2
right->left whatever the file's direction cosines.

Loading and analysis functions are module-level and Qt-free (``load_*``,
``analyse_*``) so scripts and tests can run them synchronously.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PySide6.QtCore import QObject, Signal

from core.errors import Cancelled, InputError
from core.volume import IntensityVolume, LabelVolume, Reorientation, check_same_grid, to_canonical
from core.outputs import apply_umask, refuse_input_as_output

PROJECT_FORMAT = "airway-studio-project"
PROJECT_VERSION = 1

# Review statuses of an error region: (key, label). Keys are what project
# files store; shortcuts map "status_<key>" actions to them.
STATUSES: tuple[tuple[str, str], ...] = (
    ("unreviewed", "Unreviewed"),
    ("confirmed", "Confirmed error"),
    ("reference_error", "Reference error"),
    ("flagged", "Flagged"),
)
STATUS_KEYS = tuple(k for k, _ in STATUSES)
STATUS_LABELS = dict(STATUSES)

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
    label: LabelVolume                      # canonical, bool mask
    probabilities: IntensityVolume | None = None  # canonical, float in [0, 1]
    path: str | None = None                 # file it came from (None: made in the app)
    source: str = "file"                    # "file", "model:<checkpoint>", "simulated"
    metrics: Any = None                     # core.metrics.AirwayMetrics
    regions: list | None = None             # list[core.regions.ErrorRegion]
    statuses: dict[int, str] = field(default_factory=dict)  # region index -> status key
    analysis_error: str | None = None
    warnings: list[str] = field(default_factory=list)  # e.g. core.gate: the mask does not look like this CT's airway

    @property
    def mask(self) -> np.ndarray:
        return self.label.mask

    def status(self, region_index: int) -> str:
        return self.statuses.get(region_index, "unreviewed")

    def reviewed_count(self) -> int:
        n = len(self.regions or [])
        return sum(1 for i in range(n) if self.status(i) != "unreviewed")


@dataclass
class LoadedCase:
    """What a loading job hands back to the GUI thread (all canonical)."""

    ct: IntensityVolume | None = None
    ct_path: str | None = None
    reorientation: Reorientation | None = None
    reference: LabelVolume | None = None
    reference_path: str | None = None
    reference_selector: str | None = None
    predictions: list[PredictionEntry] = field(default_factory=list)
    name: str = ""
    demo: bool = False


# -- loading (worker side, Qt-free) ------------------------------------------------

def load_ct(path: str | os.PathLike) -> tuple[IntensityVolume, Reorientation]:
    """A CT in canonical orientation; 32/64-bit integer HU that fit are stored as int16
    (half the memory, and the slice views' 16-bit lookup table applies)."""
    from core.io import read_ct

    ct = read_ct(path)
    from core.sanity import check_ct, raise_errors

    raise_errors(check_ct(ct, path, lungs=False))  # a CT without air or body: one dialog, nothing shown
    arr = ct.array
    if arr.dtype.kind in "iu" and arr.dtype.itemsize > 2:
        lo, hi = int(arr.min()), int(arr.max())
        if -32768 <= lo and hi <= 32767:
            ct = ct.with_array(arr.astype(np.int16))
    canon, reo = to_canonical(ct)
    return canon, reo  # type: ignore[return-value]


def as_bool_mask(arr: np.ndarray) -> np.ndarray:
    """Non-zero voxels as bool; 0/1 bytes are reinterpreted in place (no copy, no pass
    over a 150 MB volume but the max), everything else is compared."""
    if arr.dtype == bool:
        return arr
    if arr.dtype.itemsize == 1 and arr.dtype.kind in "iu" and arr.size and int(arr.max()) <= 1 and int(arr.min()) >= 0:
        return arr.view(np.bool_)
    return arr != 0


def _on_ct_grid(label: LabelVolume, ct: IntensityVolume | None, resample: bool) -> LabelVolume:
    """``label`` (canonical) on the CT's grid: checked, or resampled (nearest neighbour) when asked."""
    if ct is None:
        return label
    if resample and (label.shape != ct.shape or not label.geometry.matches(ct.geometry, 1e-3)):
        from core.io import resample_label_to

        return resample_label_to(label, ct)
    check_same_grid(ct, label)
    return label


def load_label(path: str | os.PathLike, ct: IntensityVolume | None, what: str = "label",
               selector: str | None = None, resample: bool = False) -> LabelVolume:
    """A label in canonical orientation on ``ct``'s grid.

    Labels are compared with the CT *after* both are made canonical, so a
    label stored with other (but equivalent) direction cosines still fits.
    ``selector`` picks the airway from a label map (core.volume.LabelSelector
    text, e.g. ``bits:8:2`` for CIP maps); default: every non-zero voxel.
    """
    from core.io import case_name, read_label, read_volume
    from core.volume import LabelSelector

    from core.sanity import check_label, raise_errors

    if selector and str(LabelSelector.parse(selector)) != "nonzero":
        canon, _ = to_canonical(read_label(path, selector))
        canon = _on_ct_grid(canon, ct, resample)  # type: ignore[arg-type]
        if what == "reference":
            raise_errors(check_label(canon, what, path))
        return canon  # type: ignore[return-value]

    # read_volume + as_bool_mask rather than read_label: the same 'nonzero' rule
    # without a full-volume comparison for the usual 0/1 uint8 files
    vol = read_volume(path)
    if vol.array.dtype.kind == "f" and not np.isin(np.unique(vol.array[:: max(1, vol.shape[0] // 8)]), (0.0, 1.0)).all():
        raise InputError(f"The {what} has fractional values, not a label.",
                         "Give an integer label map (airway voxels non-zero).", path=path)
    label = LabelVolume(np.ascontiguousarray(as_bool_mask(vol.array)), vol.geometry, name=case_name(path))
    canon, _ = to_canonical(label)
    canon.name = canon.name or what
    canon = _on_ct_grid(canon, ct, resample)  # type: ignore[arg-type]
    if what == "reference":
        raise_errors(check_label(canon, what, path))
    return canon  # type: ignore[return-value]


def load_prediction(path: str | os.PathLike, ct: IntensityVolume | None, resample: bool = False) -> PredictionEntry:
    """A prediction file: a mask, or a probability map (floats in [0, 1], thresholded at 0.5)."""
    from core.io import case_name, read_volume

    vol = read_volume(path)
    canon, _ = to_canonical(vol)
    arr = canon.array
    probs = None
    if arr.dtype.kind == "f":
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(
                f"The prediction has float values from {lo:.3g} to {hi:.3g}, neither a mask nor probabilities.",
                "Give a binary mask or a probability map with values in [0, 1].",
                path=path,
            )
        if not np.isin(np.unique(arr[:: max(1, arr.shape[0] // 8)]), (0.0, 1.0)).all():
            probs = IntensityVolume(arr.astype(np.float32, copy=False), canon.geometry, name=canon.name)
        mask = arr >= 0.5
    else:
        mask = as_bool_mask(arr)
    label = LabelVolume(np.ascontiguousarray(mask), canon.geometry, name=case_name(path))
    if resample and ct is not None and (label.shape != ct.shape or not label.geometry.matches(ct.geometry, 1e-3)):
        # probabilities cannot be resampled as a label; the mask is what the metrics use
        label, probs = _on_ct_grid(label, ct, True), None
    label = _on_ct_grid(label, ct, False)
    return PredictionEntry(name=case_name(path), label=label, probabilities=probs, path=str(path))


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
        grid = load_label(first, None, "reference" if reference_path is not None else "prediction",
                          reference_selector if reference_path is not None else None)
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
        out.reference = load_label(reference_path, ct, "reference", reference_selector, resample=resample_to_ct)
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
    generations: dict[int, int]     # branch id -> generation


# Volumes at least this large are analysed in a child process (see
# app.workers.call_in_process): the engine's GIL-holding steps would otherwise
# stall the window for 0.2-0.6 s each on a 512 x 512 x 600 case.
PROCESS_ANALYSIS_MIN_VOXELS = 32_000_000


def _generations(tree: Any) -> dict[int, int]:
    gens: dict[int, int] = {}
    for b in getattr(tree, "branches", []) or []:
        bid = getattr(b, "id", getattr(b, "index", None))
        gen = getattr(b, "generation", None)
        if bid is not None and gen is not None:
            gens[int(bid)] = int(gen)
    return gens


def _parse_tree(mask: np.ndarray, spacing: Sequence[float], progress: Progress = _noop, cancel: Any = None) -> Any:
    from core.tree import parse_tree

    return _call_flexibly(parse_tree, mask, tuple(spacing), progress=progress, cancel=cancel)


def _metrics_and_regions(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], tree: Any,
                         progress: Progress = _noop, cancel: Any = None, name: str = "prediction") -> tuple[Any, list]:
    from core.metrics import evaluate
    from core.regions import find_error_regions

    progress(0, 2, f"Metrics of {name}")
    metrics = _call_flexibly(evaluate, pred, ref, tuple(spacing), tree=tree)
    _check_cancel(cancel)
    progress(1, 2, f"Error regions of {name}")
    regions = list(_call_flexibly(find_error_regions, pred, ref, tree, tuple(spacing)))
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


def analyse_reference(reference: LabelVolume, *, in_process: bool | None = None,
                      progress: Progress = _noop, cancel: Any = None) -> TreeResult:
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
    bmap = None
    if hasattr(tree, "branch_label_map"):
        bmap = np.asarray(tree.branch_label_map())
        if bmap.shape != reference.shape:
            bmap = None
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


def _call_flexibly(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Pass optional keywords only when ``fn`` accepts them (engine signatures grow)."""
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(*args)
    accepts_var = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kw = {k: v for k, v in kwargs.items() if accepts_var or k in params}
    return fn(*args, **kw)


def segment_case(
    ct: IntensityVolume,
    checkpoint: str | os.PathLike,
    device: str = "auto",
    *,
    name: str | None = None,
    predictor_options: dict[str, Any] | None = None,
    progress: Progress = _noop,
    cancel: Any = None,
) -> PredictionEntry:
    """Run a checkpoint over the (canonical) CT with core.inference.Predictor.

    torch is imported here only, when the user segments. Probabilities stay
    uint8 (255 = 1.0) as the predictor returns them.
    """
    from core.inference import Predictor

    _check_cancel(cancel)
    progress(0, 1, f"Loading model {Path(checkpoint).name}")
    # the app's default is the measured fastest that agrees with the paper (issue 17); "exact" on request
    predictor = Predictor(str(checkpoint), device=device, **{"mode": "fast", **(predictor_options or {})})
    _check_cancel(cancel)
    result = predictor.predict(ct, progress=progress, cancel=cancel)
    label = LabelVolume(np.ascontiguousarray(result.mask.mask), ct.geometry, name=name or Path(checkpoint).stem)
    return PredictionEntry(
        name=name or Path(checkpoint).stem,
        label=label,
        probabilities=result.probabilities,
        path=None,
        source=f"model:{checkpoint}",
    )


# -- region helpers ----------------------------------------------------------------

def region_attr(region: Any, *names: str, default: Any = None) -> Any:
    """First present attribute (or mapping key) of an ErrorRegion-like object."""
    for n in names:
        if isinstance(region, dict) and n in region:
            return region[n]
        if hasattr(region, n):
            return getattr(region, n)
    return default


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


def region_box(region: Any) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """Half-open (start, stop) voxel box of a region, from ``bbox`` as per-axis
    ``((z0, z1), (y0, y1), (x0, x1))`` (core.regions) or ``(start, stop)`` triples."""
    bbox = region_attr(region, "bbox", "box")
    if bbox is None:
        return None
    if hasattr(bbox, "start") and hasattr(bbox, "stop"):
        return tuple(int(v) for v in bbox.start), tuple(int(v) for v in bbox.stop)  # type: ignore[return-value]
    arr = np.asarray(bbox, dtype=int)
    if arr.shape == (3, 2):
        return tuple(arr[:, 0].tolist()), tuple(arr[:, 1].tolist())  # type: ignore[return-value]
    if arr.shape == (2, 3):
        return tuple(arr[0].tolist()), tuple(arr[1].tolist())  # type: ignore[return-value]
    return None


def region_centre(region: Any) -> tuple[int, int, int] | None:
    """Voxel (z, y, x) to jump to without the masks: a given focus voxel, else the
    rounded centroid, else the middle of the box."""
    for name in ("focus", "seed", "representative", "centroid_zyx", "centre", "center", "centroid"):
        v = region_attr(region, name)
        if v is not None:
            arr = np.asarray(v, dtype=float).ravel()
            if arr.size == 3:
                return tuple(int(round(c)) for c in arr)  # type: ignore[return-value]
    box = region_box(region)
    if box is not None:
        return tuple(int((a + b - 1) // 2) for a, b in zip(*box))  # type: ignore[return-value]
    return None


def region_voxel(region: Any, prediction: np.ndarray, reference: np.ndarray) -> tuple[int, int, int] | None:
    """A voxel *of* the region nearest its centroid: a shell's or a curved branch's
    centroid often lies outside it (in the lumen), where the overlay shows nothing."""
    centre = region_centre(region)
    box = region_box(region)
    kind = str(region_attr(region, "kind", default="")).upper()
    if centre is None or box is None or kind not in ("FP", "FN"):
        return centre
    sl = tuple(slice(a, b) for a, b in zip(*box))
    err = (prediction[sl] & ~reference[sl]) if kind == "FP" else (reference[sl] & ~prediction[sl])
    pts = np.argwhere(err)
    if len(pts) == 0:
        return centre
    rel = np.asarray(centre) - np.asarray(box[0])
    best = pts[np.argmin(((pts - rel) ** 2).sum(axis=1))]
    return tuple(int(v) for v in best + np.asarray(box[0]))  # type: ignore[return-value]


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
    focusBoxRequested = Signal(object)   # ((z0, y0, x0), (z1, y1, x1)): slice views zoom to fit it
    jobStarted = Signal(object)
    modifiedChanged = Signal(bool)

    def __init__(self, parent: QObject | None = None, auto_analyse: bool = True):
        super().__init__(parent)
        self.auto_analyse = auto_analyse
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

    def set_ct(self, ct: IntensityVolume, path: str | None = None, reorientation: Reorientation | None = None,
               name: str = "") -> None:
        """A new CT starts a new case: labels of another grid are dropped."""
        self.cancel_jobs()
        self._clear_state()
        self.ct, self.ct_path, self.reorientation = ct, path, reorientation
        self.name = name or ct.name or (Path(path).name if path else "case")
        self.cursor = tuple(int(s // 2) for s in ct.shape)  # type: ignore[assignment]
        if ct.array.nbytes >= SAGITTAL_COPY_MIN_BYTES and not is_blank_ct(ct):
            from app.workers import Job, guarded

            job = Job(x_major_copy, ct.array, name="Sagittal copy")
            job.result.connect(guarded(self, lambda arr, c=ct: setattr(self, "_ct_by_x", arr) if self.ct is c else None))
            self._start(job, silent=True)
        self.ctChanged.emit()
        self.referenceChanged.emit()
        self.predictionsChanged.emit()
        self.activePredictionChanged.emit(-1)
        self.cursorChanged.emit(self.cursor)

    def set_reference(self, reference: LabelVolume | None, path: str | None = None) -> None:
        if reference is not None and reference.array.dtype != bool:
            reference = LabelVolume(reference.mask, reference.geometry, reference.name)
        if reference is not None and self.ct is not None:
            check_same_grid(self.ct, reference)
        self.reference, self.reference_path = reference, path
        if reference is not None:
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
        if self.auto_analyse and reference is not None:
            self.start_reference_analysis()

    def add_prediction(self, entry: PredictionEntry, make_active: bool = True) -> int:
        if entry.label.array.dtype != bool:  # views and boxes rely on one bool array per mask
            entry.label = LabelVolume(entry.label.mask, entry.label.geometry, entry.label.name)
        if self.ct is not None:
            check_same_grid(self.ct, entry.label)
        names = {p.name for p in self.predictions}
        base, k = entry.name or "prediction", 2
        entry.name = base
        while entry.name in names:
            entry.name, k = f"{base} ({k})", k + 1
        self.predictions.append(entry)
        self._start_box_job(entry.mask)
        index = len(self.predictions) - 1
        self.predictionsChanged.emit()
        if make_active or self.active_index < 0:
            self.set_active(index)
        self._set_modified()
        if self.auto_analyse:
            self.start_prediction_analysis(index)
        return index

    def remove_prediction(self, index: int) -> None:
        del self.predictions[index]
        self.predictionsChanged.emit()
        new = min(self.active_index, len(self.predictions) - 1)
        self.active_index = -2  # force the signal
        self.set_active(new)
        self._set_modified()

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
            self.set_reference(loaded.reference, loaded.reference_path)
            self.reference_selector = loaded.reference_selector
        for entry in loaded.predictions:
            self.add_prediction(entry, make_active=False)
        self._set_modified(False if loaded.ct is not None else True)

    def ct_slice(self, orientation: str, index: int) -> np.ndarray:
        """A CT slice as displayed (see app.slice_view.extract_slice)."""
        from app.slice_view import extract_slice

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
        if status == "unreviewed":
            entry.statuses.pop(region_index, None)
        else:
            entry.statuses[region_index] = status
        self.regionStatusChanged.emit(i, region_index, status)
        self._set_modified()

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
        """The voxel N / Shift+N jump to for a region (see :func:`region_voxel`)."""
        i = self.active_index if prediction_index is None else prediction_index
        regs = self.regions(i)
        if not 0 <= region_index < len(regs):
            return None
        if self.reference is None:
            return region_centre(regs[region_index])
        return region_voxel(regs[region_index], self.predictions[i].mask, self.reference.mask)

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
        from app.workers import Job, guarded

        ref = self.reference
        if ref is None:
            return None
        job = Job(analyse_reference, ref, name="Reference tree")

        def done(res: TreeResult) -> None:
            if self.reference is not ref:  # superseded
                return
            self.tree, self.branch_map, self.generations = res.tree, res.branch_map, res.generations
            self.treeChanged.emit()
            if self.auto_analyse:
                for i in range(len(self.predictions)):
                    self.start_prediction_analysis(i)

        def failed(exc: BaseException, _tb: str) -> None:
            self.tree_error = str(exc)
            self.treeChanged.emit()

        job.result.connect(guarded(self, done))
        job.error.connect(guarded(self, failed))
        return self._start(job)

    def start_prediction_analysis(self, index: int) -> Any:
        """Metrics and regions of prediction ``index`` (needs the reference tree)."""
        from app.workers import Job, guarded

        if self.reference is None or not 0 <= index < len(self.predictions):
            return None
        if self.tree is None:
            return None  # the reference job starts this when the tree is ready
        entry, ref, tree = self.predictions[index], self.reference, self.tree
        job = Job(analyse_prediction, entry.label, ref, tree, name=f"Analysis of {entry.name}")

        def done(res: tuple[Any, list]) -> None:
            if self.reference is not ref or entry not in self.predictions:
                return
            i = self.predictions.index(entry)
            entry.metrics, entry.regions = res
            entry.statuses = {k: v for k, v in entry.statuses.items() if k < len(entry.regions)}
            entry.analysis_error = None
            self.metricsChanged.emit(i)
            self.regionsChanged.emit(i)

        def failed(exc: BaseException, _tb: str) -> None:
            entry.analysis_error = str(exc)
            if entry in self.predictions:
                self.metricsChanged.emit(self.predictions.index(entry))

        job.result.connect(guarded(self, done))
        job.error.connect(guarded(self, failed))
        return self._start(job)

    def open_files(self, ct_path: str | None, reference_path: str | None = None,
                   prediction_paths: Sequence[str] = (), reference_selector: str | None = None) -> Any:
        """Load files in a job; the result is applied on the GUI thread."""
        from app.workers import Job, guarded

        job = Job(load_case, ct_path, reference_path, list(prediction_paths),
                  current_ct=None if ct_path else self.ct, reference_selector=reference_selector, name="Loading")
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
            preds.append({
                "name": p.name,
                "path": rel(p.path),
                "source": p.source,
                "statuses": {str(k): v for k, v in sorted(p.statuses.items())},
            })
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
        data = self.to_project(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2)
            apply_umask(tmp)  # mkstemp makes 0600 files
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.project_path = str(path)
        self._set_modified(False)
        return path


def read_project(path: str | os.PathLike) -> dict[str, Any]:
    """Parse and check a project file; paths come back absolute."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise InputError("The project file does not exist.", "Check the path.", path=path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"The project file is not valid JSON ({exc}).", "Open an Airway Studio project (.json).", path=path) from None
    if not isinstance(data, dict) or data.get("format") != PROJECT_FORMAT:
        raise InputError("This JSON file is not an Airway Studio project.", "Open a project saved by Airway Studio.", path=path)
    if int(data.get("version", 0)) > PROJECT_VERSION:
        raise InputError(f"The project was saved by a newer Airway Studio (format {data.get('version')}).",
                         "Update Airway Studio to open it.", path=path)
    base = path.resolve().parent

    def absolute(p: str | None) -> str | None:
        if p is None:
            return None
        q = Path(p)
        return str(q if q.is_absolute() else (base / q).resolve())

    data["ct"] = absolute(data.get("ct"))
    data["reference"] = absolute(data.get("reference"))
    for p in data.get("predictions", []):
        p["path"] = absolute(p.get("path"))
    return data


def load_project(path: str | os.PathLike, *, progress: Progress = _noop, cancel: Any = None) -> tuple[LoadedCase, dict]:
    """Read a project and every file it names (worker side)."""
    data = read_project(path)
    if data.get("demo"):
        from app.demo import load_demo_case

        loaded = load_demo_case(progress=progress, cancel=cancel)
        return loaded, data
    if not data.get("ct"):
        raise InputError("The project names no CT.", "Open the CT and save the project again.", path=path)
    paths = [p["path"] for p in data.get("predictions", []) if p.get("path")]
    loaded = load_case(data["ct"], data.get("reference"), paths, reference_selector=data.get("reference_selector"),
                       progress=progress, cancel=cancel)
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
        entry.statuses = {int(k): v for k, v in (meta.get("statuses") or {}).items() if v in STATUS_KEYS}
    if case.predictions:
        case.set_active(int(data.get("active_prediction", 0)))
    cur = data.get("cursor")
    if cur and len(cur) == 3:
        case.set_cursor(cur)
    case.view_state = dict(data.get("view") or {})
    case.project_path = None if project_path is None else str(project_path)
    case._set_modified(False)
