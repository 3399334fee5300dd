"""What the comparison layout shows, and the per-pane adapters that let the review's
SliceView and View3D draw one prediction each.

:class:`CompareState` holds one case: a CT (or a blank stand-in on the masks'
grid when the compare has no CT), the reference (may be None) and 2-4
predictions, and the one cursor every pane follows. :class:`PaneCase` looks
like ``app.review.case.Case`` to the views: its ``active`` prediction is the pane's
own, its ``reference`` is what the pane is compared against (the reference,
another prediction, or nothing), so the views' TP/FP/FN colours read
"both / this only / the other only" for a prediction-vs-prediction difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from core.box import Box, bounding_box, union
from core.volume import Geometry, LabelVolume

MAX_PANES = 4
AGAINST_REFERENCE = "reference"
AGAINST_NOTHING = "none"


@dataclass
class PaneEntry:
    """A prediction as the views read it (``app.review.case.PredictionEntry``'s fields they use)."""

    name: str
    label: LabelVolume
    probabilities: Any = None
    metrics: Any = None
    regions: Any = None
    path: str | None = None
    note: str = ""  # shown in the pane's title, e.g. "changed since the comparison: rerun"

    @property
    def mask(self) -> np.ndarray:
        return self.label.mask


class SagittalMask(np.ndarray):
    """A bool mask whose sagittal cuts (``mask[z0:z1, y0:y1, x]``, what the slice views read)
    come from an x-major copy of its bounding box: the plain read strides 512 bytes a voxel,
    ~2 ms a mask on a 512 x 512 x 400 case, and four panes read eight masks per slice change.
    Every other use is the plain array (views and slices of it drop the copy)."""

    _by_x: np.ndarray | None = None
    _box: Box | None = None

    @classmethod
    def wrap(cls, mask: np.ndarray) -> SagittalMask:
        out = np.asarray(mask).view(cls)
        box = bounding_box(np.asarray(mask))
        if box is not None:
            sub = np.asarray(mask)[box.slices]
            out._by_x = np.ascontiguousarray(np.moveaxis(sub, 2, 0))
            out._box = box
        return out

    def __array_finalize__(self, obj: Any) -> None:
        self._by_x = None
        self._box = None

    def __getitem__(self, key: Any) -> Any:
        bx = self._by_x
        if (
            bx is not None
            and isinstance(key, tuple)
            and len(key) == 3
            and isinstance(key[0], slice)
            and isinstance(key[1], slice)
            and isinstance(key[2], (int, np.integer))
        ):
            z0, z1, zs = key[0].indices(self.shape[0])
            y0, y1, ys = key[1].indices(self.shape[1])
            if zs == 1 and ys == 1 and self._box is not None:
                (bz0, by0, bx0), (bz1, by1, bx1) = self._box.start, self._box.stop
                x = int(key[2]) % self.shape[2]
                out = np.zeros((max(z1 - z0, 0), max(y1 - y0, 0)), bool)
                if bx0 <= x < bx1:
                    a0, a1 = max(z0, bz0), min(z1, bz1)
                    c0, c1 = max(y0, by0), min(y1, by1)
                    if a0 < a1 and c0 < c1:
                        out[a0 - z0 : a1 - z0, c0 - y0 : c1 - y0] = bx[
                            x - bx0, a0 - bz0 : a1 - bz0, c0 - by0 : c1 - by0
                        ]
                return out
        return np.asarray(self).__getitem__(key)


def fast_label(label: LabelVolume) -> LabelVolume:
    """The label with a :class:`SagittalMask` for large volumes (as the review's x-major CT copy)."""
    import dataclasses

    if label.array.size < 32e6 or isinstance(label.array, SagittalMask):
        return label
    return dataclasses.replace(label, array=SagittalMask.wrap(label.mask))


@dataclass(frozen=True)
class ReferenceTree:
    """The reference's parsed tree as the review has it: what the 3D view colours by generation,
    detection, lobe or segment."""

    branch_map: np.ndarray
    generations: dict[int, int]
    names: Any = None  # core.anatomy's names of the branches (NamesLayer.names), or None


def mask_box(mask: np.ndarray) -> Box | None:
    """The mask's bounding box; a :class:`SagittalMask` knows its own (one pass over a 512 x 512 x 400
    mask costs 30-100 ms, and the layout asks for every pane's)."""
    if isinstance(mask, SagittalMask) and mask._by_x is not None:
        return mask._box
    return bounding_box(np.asarray(mask))


@dataclass
class PreparedCase:
    """A case ready to show: masks wrapped for fast sagittal reads, the CT's x-major copy and the
    first cursor, all made where :func:`prepare_case` runs (a loading job, off the GUI thread)."""

    name: str
    ct: Any
    reference: LabelVolume | None
    predictions: list[PaneEntry]
    ct_by_x: np.ndarray | None
    cursor: tuple[int, int, int]
    tree: ReferenceTree | None = None


def prepare_case(
    name: str,
    predictions: list[PaneEntry],
    reference: LabelVolume | None = None,
    ct: Any = None,
    tree: ReferenceTree | None = None,
) -> PreparedCase:
    """Check the case's grids and do the volume-sized work of showing it (a second or more on a real
    chest CT): run it in the loading job where one exists."""
    from core.errors import InputError

    if not predictions:
        raise InputError("No prediction to compare.", "Give 2 to 4 predictions of the case.")
    grid = ct if ct is not None else (reference if reference is not None else predictions[0].label)
    shape = tuple(grid.shape)
    for p in predictions:
        if tuple(p.label.shape) != shape:
            raise InputError(
                f"Prediction '{p.name}' is {p.label.shape}, the case is {shape}.",
                "Compare predictions made on the same CT grid.",
            )
    shown_ct = ct if ct is not None else BlankCT(shape, grid.geometry)
    ref = None if reference is None else fast_label(reference)
    preds = [
        PaneEntry(p.name, fast_label(p.label), p.probabilities, p.metrics, p.regions, p.path, p.note)
        for p in predictions[:MAX_PANES]
    ]
    # sagittal slices of a large CT are strided reads; an x-major copy makes them contiguous
    arr = getattr(shown_ct, "array", None)
    by_x = np.ascontiguousarray(np.moveaxis(arr, 2, 0)) if arr is not None and arr.size >= 32e6 else None
    src = ref.mask if ref is not None else preds[0].mask
    box = mask_box(src)
    if box is None:
        cursor = (shape[0] // 2, shape[1] // 2, shape[2] // 2)
    else:
        sub = np.asarray(src)[box.slices]  # the airway's box only: the same answer, a twentieth of the work
        nz = np.flatnonzero(sub.any(axis=(1, 2)))
        # the middle airway slice, and the coronal and sagittal slices holding the most airway: they cut
        # the trachea and main bronchi
        zc = int(nz[len(nz) // 2])
        yc, xc = int(np.argmax(sub.sum(axis=(0, 2)))), int(np.argmax(sub.sum(axis=(0, 1))))
        cursor = (box.start[0] + zc, box.start[1] + yc, box.start[2] + xc)
    return PreparedCase(name, shown_ct, ref, preds, by_x, cursor, tree)


class BlankCT:
    """Stand-in CT (air everywhere) on the masks' grid when the compare has no CT: no volume-sized memory."""

    def __init__(self, shape: Sequence[int], geometry: Geometry):
        self.shape = tuple(int(s) for s in shape)
        self.geometry = geometry
        self.spacing_zyx = geometry.spacing_zyx
        self.array = None
        self.name = "no CT"

    def slice(self, orientation: str) -> np.ndarray:
        from app.review.slice_view import display_shape

        return np.full(display_shape(orientation, self.shape), -1000, np.int16)


class CompareState(QObject):
    """One case of the comparison; emits ``caseChanged`` on new data and ``cursorChanged`` when it moves."""

    caseChanged = Signal()
    cursorChanged = Signal(object)
    treeChanged = Signal()  # the reference's tree arrived (set_tree) after the case was shown

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.case_name = ""
        self.ct: Any = None
        self.reference: LabelVolume | None = None
        self.predictions: list[PaneEntry] = []
        # the reference's tree, when the compare comes from the review (which parsed and named it):
        # branch id per voxel, generation per branch, and the names (core.anatomy), for the 3D colourings
        self.branch_map: np.ndarray | None = None
        self.generations: dict[int, int] = {}
        self.names: Any = None
        self.cursor: tuple[int, int, int] = (0, 0, 0)
        self._ct_by_x: np.ndarray | None = None
        self._blank: dict[str, np.ndarray] = {}

    def set_case(
        self,
        name: str,
        predictions: list[PaneEntry],
        reference: LabelVolume | None = None,
        ct: Any = None,
        tree: ReferenceTree | None = None,
    ) -> None:
        """``tree``: the reference's branch map, generations and names, where known (the review's)."""
        self.show(prepare_case(name, predictions, reference, ct, tree))

    def show(self, case: PreparedCase) -> None:
        """Show a case :func:`prepare_case` made (cheap: the volume-sized work is done)."""
        self.case_name = case.name
        self.ct = case.ct
        self.reference = case.reference
        self._take_tree(case.tree)
        self.predictions = list(case.predictions)
        self._blank = {}
        self._ct_by_x = case.ct_by_x
        self.cursor = case.cursor
        self.caseChanged.emit()

    def set_tree(self, tree: ReferenceTree | None) -> None:
        """The shown reference's tree, parsed after the case was shown (a compare folder's case)."""
        self._take_tree(tree)
        self.treeChanged.emit()

    def _take_tree(self, tree: ReferenceTree | None) -> None:
        """Kept only for a reference on the case's grid: a tree of another grid would colour the wrong voxels."""
        if tree is None or self.reference is None or tuple(tree.branch_map.shape) != tuple(self.ct.shape):
            self.branch_map, self.generations, self.names = None, {}, None
        else:
            self.branch_map, self.generations, self.names = tree.branch_map, dict(tree.generations), tree.names

    def airway_box(self) -> Box | None:
        """Box of the reference and every prediction together; None when all are empty."""
        box: Box | None = None
        for m in [None if self.reference is None else self.reference.mask, *(p.mask for p in self.predictions)]:
            if m is not None:
                box = union(box, mask_box(m))
        return box

    def set_cursor(self, zyx: Sequence[float]) -> None:
        if self.ct is None:
            return
        c = tuple(int(np.clip(round(float(v)), 0, s - 1)) for v, s in zip(zyx, self.ct.shape))
        if c != self.cursor:
            self.cursor = c  # type: ignore[assignment]
            self.cursorChanged.emit(c)

    def ct_slice(self, orientation: str, index: int) -> np.ndarray:
        from app.review.slice_view import extract_slice

        if isinstance(self.ct, BlankCT):
            if orientation not in self._blank:
                self._blank[orientation] = self.ct.slice(orientation)
            return self._blank[orientation]
        if orientation == "sagittal" and self._ct_by_x is not None:
            return self._ct_by_x[index, ::-1, :]
        return extract_slice(self.ct.array, orientation, index)

    def against_choices(self, pane: int) -> list[tuple[str, str]]:
        """(key, text) of what pane ``pane`` can be compared with."""
        out = []
        if self.reference is not None:
            out.append((AGAINST_REFERENCE, "reference"))
        out += [(str(i), p.name) for i, p in enumerate(self.predictions) if i != pane]
        out.append((AGAINST_NOTHING, "nothing"))
        return out

    def default_against(self, pane: int) -> str:
        if self.reference is not None:
            return AGAINST_REFERENCE
        if len(self.predictions) > 1:
            return str((pane + 1) % len(self.predictions))
        return AGAINST_NOTHING


class PaneCase(QObject):
    """One pane's view of the :class:`CompareState`, a :class:`app.review.case_view.CaseView` like ``Case``."""

    ctChanged = Signal()
    referenceChanged = Signal()
    treeChanged = Signal()
    predictionsChanged = Signal()
    activePredictionChanged = Signal(int)
    cursorChanged = Signal(object)
    metricsChanged = Signal(int)
    regionsChanged = Signal(int)
    activeRegionChanged = Signal(int)
    # the review's edit signal: the views connect to it; compared labels are never edited, so it never fires
    labelChanged = Signal(str, object)

    def __init__(self, state: CompareState, index: int, parent: QObject | None = None):
        super().__init__(parent)
        self.state = state
        self.index = index
        self.against: str | None = None  # chosen on the first case; kept across cases while valid
        self.active_index = 0
        self.active_region = -1
        self.tree = None
        self._boxes: dict[int, tuple[np.ndarray, Box | None]] = {}
        state.cursorChanged.connect(self.cursorChanged)
        state.caseChanged.connect(self._on_case)
        state.treeChanged.connect(self.treeChanged)

    def _on_case(self) -> None:
        self._boxes.clear()
        if self.against is None or self.against not in {k for k, _ in self.state.against_choices(self.index)}:
            self.against = self.state.default_against(self.index)
        self.ctChanged.emit()

    # -- what the views read ----------------------------------------------------------
    @property
    def branch_map(self) -> np.ndarray | None:
        """The reference's branch map, for a pane compared with the reference (another prediction
        has no parsed tree)."""
        return self.state.branch_map if self.against == AGAINST_REFERENCE else None

    @property
    def generations(self) -> dict[int, int]:
        return self.state.generations if self.against == AGAINST_REFERENCE else {}

    @property
    def names(self) -> Any:
        """What the 3D view's ``names_source`` gives: the reference's names, as ``branch_map``."""
        return self.state.names if self.against == AGAINST_REFERENCE else None

    def revision(self, layer: str = "reference") -> int:
        """Edit counter of a layer (app.review.case.Case): compared labels are read-only, always 0."""
        return 0

    @property
    def ct(self) -> Any:
        return self.state.ct if self.index < len(self.state.predictions) else None

    @property
    def cursor(self) -> tuple[int, int, int]:
        return self.state.cursor

    @property
    def active(self) -> PaneEntry | None:
        p = self.state.predictions
        return p[self.index] if self.index < len(p) else None

    @property
    def predictions(self) -> list[PaneEntry]:
        a = self.active
        return [] if a is None else [a]

    @property
    def reference(self) -> LabelVolume | None:
        if self.against == AGAINST_REFERENCE:
            return self.state.reference
        if self.against is None or self.against == AGAINST_NOTHING:
            return None
        i = int(self.against)
        p = self.state.predictions
        return p[i].label if 0 <= i < len(p) and i != self.index else None

    def against_name(self) -> str:
        if self.against == AGAINST_REFERENCE:
            return "reference"
        ref = self.reference
        if ref is None or self.against is None:
            return ""
        return self.state.predictions[int(self.against)].name

    def set_against(self, key: str) -> None:
        if key != self.against:
            self.against = key
            self.referenceChanged.emit()

    def set_cursor(self, zyx: Sequence[float]) -> None:
        self.state.set_cursor(zyx)

    def ct_slice(self, orientation: str, index: int) -> np.ndarray:
        return self.state.ct_slice(orientation, index)

    def regions(self, index: int | None = None) -> list[Any]:
        return []

    def _box(self, mask: np.ndarray | None) -> Box | None:
        if mask is None:
            return None
        hit = self._boxes.get(id(mask))
        if hit is None or hit[0] is not mask:
            hit = (mask, mask_box(mask))
            self._boxes[id(mask)] = hit
        return hit[1]

    def overlay_box(self, index: int | None = None) -> Box | None:
        ref, act = self.reference, self.active
        box = union(self._box(None if ref is None else ref.mask), self._box(None if act is None else act.mask))
        return Box((0, 0, 0), (0, 0, 0)) if box is None else box


def pair_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice (percent) of two masks, on their joint bounding box only."""
    box = union(bounding_box(a), bounding_box(b))
    if box is None:
        return 100.0
    sa, sb = a[box.slices], b[box.slices]
    na, nb = int(np.count_nonzero(sa)), int(np.count_nonzero(sb))
    return 200.0 * int(np.count_nonzero(sa & sb)) / (na + nb) if na + nb else 100.0
