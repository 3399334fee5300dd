"""Label layers: an array with its geometry, a revision counter and change notifications.

Every write goes through :meth:`LabelLayer.write`, which records a
:class:`Delta` (the box, the flat indices of the voxels that really changed
inside it, and their old values) and tells subscribers which box changed.
Views key their caches by ``(layer.name, layer.revision)`` and repaint only the
box; undo swaps the stored values back, so no full-volume copy is ever made.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from core.box import Box
from core.review.loading import Source, in_memory_source
from core.volume import Geometry, IntensityVolume, LabelVolume, Reorientation

# Bookkeeping per delta beyond its two arrays (object headers, box, tuple): a
# fixed, stated figure so that memory accounting stays deterministic.
DELTA_OVERHEAD_BYTES = 256


@dataclass
class Delta:
    """One layer's change: inside ``box``, voxels at flat (box-local, C order) ``index``
    held ``values`` before the change. :meth:`swap` undoes and redoes it."""

    layer: str
    box: Box
    index: np.ndarray  # uint32 box-local flat indices
    values: np.ndarray  # the layer's dtype

    @property
    def nbytes(self) -> int:
        return int(self.index.nbytes + self.values.nbytes) + DELTA_OVERHEAD_BYTES

    @property
    def count(self) -> int:
        return int(self.index.size)

    def swap(self, array: np.ndarray) -> None:
        """Exchange the stored values with the array's: undo becomes redo and back."""
        sub = array[self.box.slices]
        # a box view of a C-contiguous volume is not contiguous: index by unravelled coords
        where = np.unravel_index(self.index.astype(np.intp), sub.shape)
        current = sub[where].copy()
        sub[where] = self.values
        self.values = current


@dataclass
class Change:
    """What subscribers receive: which layer, which box, its revision now, and why."""

    layer: str
    box: Box | None
    revision: int
    reason: str  # "edit", "undo", "redo", "replace"


class LabelLayer:
    """A label volume (canonical orientation) that can be edited with undo."""

    def __init__(
        self,
        name: str,
        volume: LabelVolume,
        source: Source | None = None,
        role: str = "prediction",
        probabilities: IntensityVolume | None = None,
    ):
        self.name = name
        # the name before the session made it distinct (e.g. a folder prefix for two files of one name)
        self.base_name = name
        self.role = role  # "reference" or "prediction"
        self.volume = volume
        self.source = source or in_memory_source(volume)
        self.probabilities = probabilities
        self.revision = 0
        self.saved_revision = 0
        self._subscribers: list[Callable[[Change], None]] = []
        # flat indices ever written, merged lazily (sorting on every stroke would
        # cost more than the stroke): the recovery file stores their values
        self._touched: list[np.ndarray] = []
        # saves in flight (weak: a snapshot nobody takes must not keep recording)
        self._snapshots: list[weakref.ref[LayerSnapshot]] = []

    @property
    def array(self) -> np.ndarray:
        return self.volume.array

    def snapshot(self) -> LayerSnapshot:
        """This revision's voxels, to be copied later on any thread (:meth:`LayerSnapshot.take`)
        while edits go on here: O(1) now, where a copy of a 388 x 512 x 512 label costs the
        editing (GUI) thread 250-500 ms of page faults on a loaded machine."""
        snap = LayerSnapshot(self)
        self._snapshots.append(weakref.ref(snap))
        return snap

    def _before_write(self, flat: Callable[[], np.ndarray]) -> None:
        """Tell the snapshots in flight which voxels are about to change (``flat``: their
        full-volume flat indices, computed only when a snapshot is listening)."""
        live = [s for s in (ref() for ref in self._snapshots) if s is not None and s.open]
        self._snapshots = [weakref.ref(s) for s in live]
        if live:
            idx = flat()
            values = self.array.reshape(-1)[idx]
            for s in live:
                s.remember(idx, values)

    def _full_flat(self, box: Box, index: np.ndarray) -> np.ndarray:
        local = np.unravel_index(index.astype(np.intp), box.shape)
        full = tuple(c + lo for c, lo in zip(local, box.start))
        return np.asarray(np.ravel_multi_index(full, self.shape), dtype=np.int64)

    @property
    def geometry(self) -> Geometry:
        return self.volume.geometry

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.volume.shape

    @property
    def path(self) -> str | None:
        return self.source.path

    @property
    def modified(self) -> bool:
        return self.revision != self.saved_revision

    def subscribe(self, fn: Callable[[Change], None]) -> Callable[[], None]:
        """Call ``fn(Change)`` after every change; returns a function that unsubscribes."""
        if fn not in self._subscribers:  # a layer handed to a session twice reports once
            self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn) if fn in self._subscribers else None

    def unsubscribe_all(self) -> None:
        self._subscribers.clear()

    def _notify(self, box: Box | None, reason: str) -> None:
        self.revision += 1
        change = Change(self.name, box, self.revision, reason)
        for fn in list(self._subscribers):
            fn(change)

    def write(self, box: Box, mask: np.ndarray, value: bool) -> Delta | None:
        """Set the voxels of ``mask`` (box-local bool) to ``value``; the delta, or None if nothing changed."""
        sub = self.array[box.slices]
        if mask.shape != sub.shape:
            raise ValueError(f"mask {mask.shape} does not fit box {box}")
        change = mask & (sub != value)
        index = np.flatnonzero(change).astype(np.uint32)
        if index.size == 0:
            return None
        where = np.unravel_index(index.astype(np.intp), sub.shape)
        delta = Delta(self.name, box, index, sub[where].copy())
        self._before_write(lambda: self._full_flat(box, index))
        sub[where] = value
        self._touch(delta)
        self._notify(box, "edit")
        return delta

    def apply_swap(self, delta: Delta, reason: str) -> None:
        self._before_write(lambda: self._full_flat(delta.box, delta.index))
        delta.swap(self.array)
        self._touch(delta)
        self._notify(delta.box, reason)

    def _touch(self, delta: Delta) -> None:
        self._touched.append(self._full_flat(delta.box, delta.index))

    @property
    def touched(self) -> np.ndarray:
        """Sorted unique flat indices of every voxel ever written."""
        if not self._touched:
            return np.zeros(0, dtype=np.int64)
        if len(self._touched) > 1:
            a = np.sort(np.concatenate(self._touched))
            self._touched = [a[np.concatenate(([True], a[1:] != a[:-1]))]]
        return self._touched[0]

    def restore_touched(self, flat: np.ndarray, values: np.ndarray) -> None:
        """Put back recovered values (recovery file); counts as one change of their box."""
        if flat.size == 0:
            return
        coords = np.unravel_index(flat.astype(np.intp), self.shape)
        self._before_write(lambda: flat.astype(np.int64))
        self.array[coords] = values.astype(self.array.dtype, copy=False)
        self._touched.append(flat.astype(np.int64))
        self._notify(Box.around(np.stack(coords, axis=1)), "replace")

    def touched_values(self) -> np.ndarray:
        flat = self.touched
        return self.array.reshape(-1)[flat] if flat.size else np.zeros(0, self.array.dtype)


class LayerSnapshot:
    """A layer's voxels at one revision, copied on whatever thread calls :meth:`take`.

    The copy races with edits made meanwhile on the editing thread; every such edit first hands
    its voxels' old values here (:meth:`remember`), and :meth:`take` puts the earliest of them
    back over the copy, so the result is exactly the layer as it was when the snapshot was made.
    """

    def __init__(self, layer: LabelLayer):
        # the array itself, not the layer: a layer given a new volume leaves this one as it was
        self._array: np.ndarray | None = layer.array
        self._lock = threading.Lock()
        self._flat: list[np.ndarray] = []
        self._values: list[np.ndarray] = []
        self.open = True

    def remember(self, flat: np.ndarray, values: np.ndarray) -> None:
        """Called by the layer before these voxels change (values: what they hold now)."""
        with self._lock:
            if self.open:
                self._flat.append(np.array(flat, dtype=np.int64))
                self._values.append(np.array(values))

    def take(self, reorientation: Reorientation | None = None, dtype: npt.DTypeLike | None = None) -> np.ndarray:
        """The voxels as they were when the snapshot was made, as a new C-ordered array, once (a second call raises).
        ``reorientation``: the layer's canonical -> file move, undone in the same pass (the
        file's orientation); ``dtype``: cast in the same pass too."""
        src = self._array
        if src is None:
            raise RuntimeError("a snapshot is taken once")
        self._array = None
        out = np.array(reorientation.invert(src) if reorientation else src, dtype=dtype, order="C")
        with self._lock:
            self.open = False
            flats, values = self._flat, self._values
            self._flat, self._values = [], []
        if flats:
            canon = reorientation.apply(out) if reorientation else out  # a view: writes land in out
            # latest first, so that the earliest remembered value (the one at our revision) wins
            for f, v in zip(reversed(flats), reversed(values)):
                canon[np.unravel_index(f.astype(np.intp), src.shape)] = v
        return out

    def release(self) -> None:
        """Stop recording without taking (a save given up before it wrote)."""
        with self._lock:
            self.open = False
            self._flat, self._values = [], []
        self._array = None


@dataclass
class Edit:
    """One undoable step: its deltas plus what the edit log records."""

    tool: str
    deltas: list[Delta]
    region_key: str | None = None
    added: int = 0
    removed: int = 0
    # (prediction index, region key, status before, status after) of every status the edit set
    statuses: list[tuple[int, str, str, str]] = field(default_factory=list)
    regions: int = 0  # error regions whose voxels the edit changed (accept_many)
    time: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(d.nbytes for d in self.deltas)


class History:
    """Undo/redo stacks of edits, bounded by ``depth`` steps and optionally ``max_bytes``."""

    def __init__(self, depth: int = 100, max_bytes: int | None = None):
        if depth < 1:
            raise ValueError("undo depth must be at least 1")
        self.depth = depth
        self.max_bytes = max_bytes
        self.undo_stack: list[Edit] = []
        self.redo_stack: list[Edit] = []

    @property
    def nbytes(self) -> int:
        """Memory held by the stored deltas (both stacks), in bytes."""
        return sum(e.nbytes for e in self.undo_stack) + sum(e.nbytes for e in self.redo_stack)

    def push(self, edit: Edit) -> None:
        self.undo_stack.append(edit)
        self.redo_stack.clear()
        while len(self.undo_stack) > self.depth or (
            self.max_bytes is not None and len(self.undo_stack) > 1 and self.nbytes > self.max_bytes
        ):
            self.undo_stack.pop(0)

    def can_undo(self) -> bool:
        return bool(self.undo_stack)

    def can_redo(self) -> bool:
        return bool(self.redo_stack)

    def clear(self) -> None:
        self.undo_stack.clear()
        self.redo_stack.clear()
