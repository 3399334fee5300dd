"""Label layers: an array with its geometry, a revision counter and change notifications.

Every write goes through :meth:`LabelLayer.write`, which records a
:class:`Delta` (the box, the flat indices of the voxels that really changed
inside it, and their old values) and tells subscribers which box changed.
Views key their caches by ``(layer.name, layer.revision)`` and repaint only the
box; undo swaps the stored values back, so no full-volume copy is ever made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.box import Box
from core.review.loading import Source, in_memory_source
from core.volume import Geometry, IntensityVolume, LabelVolume

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

    @property
    def array(self) -> np.ndarray:
        return self.volume.array

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
        sub[where] = value
        self._touch(delta)
        self._notify(box, "edit")
        return delta

    def apply_swap(self, delta: Delta, reason: str) -> None:
        delta.swap(self.array)
        self._touch(delta)
        self._notify(delta.box, reason)

    def _touch(self, delta: Delta) -> None:
        local = np.unravel_index(delta.index.astype(np.intp), delta.box.shape)
        full = tuple(c + lo for c, lo in zip(local, delta.box.start))
        self._touched.append(np.ravel_multi_index(full, self.shape).astype(np.int64))

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
        self.array[coords] = values.astype(self.array.dtype, copy=False)
        self._touched.append(flat.astype(np.int64))
        self._notify(Box.around(np.stack(coords, axis=1)), "replace")

    def touched_values(self) -> np.ndarray:
        flat = self.touched
        return self.array.reshape(-1)[flat] if flat.size else np.zeros(0, self.array.dtype)


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
