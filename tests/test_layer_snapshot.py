"""A save's snapshot costs the editing thread nothing and still shows exactly its revision.

``LabelLayer.snapshot`` is O(1); the copy happens where the save writes (a worker), racing
with edits made meanwhile, and every such edit hands back its old values first.
"""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest
from test_review_session import _canonical_label, _session, files  # noqa: F401 - the module fixture

from core.box import Box
from core.review.layers import LabelLayer
from core.volume import Geometry, LabelVolume, Reorientation


def _layer(shape=(20, 24, 28)) -> LabelLayer:
    rng = np.random.default_rng(3)
    return LabelLayer("ref", LabelVolume(rng.random(shape) < 0.3, Geometry((1.0, 1.0, 1.0))), role="reference")


def _paint(layer: LabelLayer, start, size, value: bool):
    box = Box(tuple(start), tuple(s + n for s, n in zip(start, size)))
    return layer.write(box, np.ones(tuple(size), bool), value)


def test_edits_after_the_snapshot_are_not_in_it_in_any_orientation():
    reo = Reorientation((2, 0, 1), (True, False, True))
    layer = _layer()
    before = layer.array.copy()
    snap = layer.snapshot()
    d1 = _paint(layer, (2, 3, 4), (5, 5, 5), True)
    _paint(layer, (4, 4, 4), (6, 6, 6), False)  # overlaps the first: the earliest old value must win
    layer.apply_swap(d1, "undo")
    layer.apply_swap(d1, "redo")
    flat = np.array([0, 17, layer.array.size - 1])
    layer.restore_touched(flat, ~layer.array.reshape(-1)[flat])
    assert not np.array_equal(layer.array, before)
    out = snap.take(reo, np.uint8)
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.array_equal(out, reo.invert(before).astype(np.uint8))
    with pytest.raises(RuntimeError):
        snap.take()


def test_a_snapshot_nobody_takes_stops_recording():
    layer = _layer()
    snap = layer.snapshot()
    del snap
    gc.collect()
    _paint(layer, (0, 0, 0), (4, 4, 4), True)
    assert layer._snapshots == []
    released = layer.snapshot()
    released.release()
    _paint(layer, (5, 5, 5), (4, 4, 4), True)
    assert layer._snapshots == []


def test_a_save_written_on_a_worker_while_editing_holds_what_was_there_at_begin_save(files, tmp_path):  # noqa: F811
    s = _session(files, tmp_path)
    fp = [g for g in s.regions(0) if g.kind == "FP"]
    s.accept(fp[0].key)
    expected = s.reference.array.copy()
    pending = s.begin_save(s.reference, tmp_path / "saved.nii.gz")
    edit = s.accept(fp[1].key)  # made after the snapshot: stays unsaved
    assert edit is not None and edit.added > 0
    worker = threading.Thread(target=pending.write)
    worker.start()
    s.accept(fp[2].key)
    worker.join()
    s.end_save(pending)
    assert np.array_equal(_canonical_label(tmp_path / "saved.nii.gz"), expected)
    assert s.reference.modified  # the two later edits are not in the file
    s.save_reference(tmp_path / "saved.nii.gz")
    assert np.array_equal(_canonical_label(tmp_path / "saved.nii.gz"), s.reference.array)
    assert not s.reference.modified
