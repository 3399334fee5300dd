"""Saves that know what is on disk, group corrections, a prediction made the reference,
and names that tell predictions of one file name apart (core.review, headless)."""

from __future__ import annotations

import numpy as np
import pytest
from test_regions import make_case

from core.box import Box
from core.errors import InputError
from core.io import write_volume
from core.review import Session
from core.review.loading import read_label_canonical
from core.review.naming import distinct_names
from core.review.persist import SaveConflictError, backup_path
from core.volume import Geometry, LabelVolume

GEO = Geometry(spacing=(0.8, 0.8, 1.0))


@pytest.fixture()
def files(tmp_path):
    ref, pred, _, _ = make_case()
    write_volume(LabelVolume(ref.astype(np.uint8), GEO), tmp_path / "ref.nii.gz")
    write_volume(LabelVolume(pred.astype(np.uint8), GEO), tmp_path / "pred.nii.gz")
    return tmp_path


def _open(files, tmp_path, name="a") -> Session:
    s = Session.load(
        reference=files / "ref.nii.gz", predictions=[files / "pred.nii.gz"], recovery_dir=tmp_path / f"rec_{name}"
    )
    s.analyse()
    return s


def _on_disk(path) -> np.ndarray:
    return read_label_canonical(path, None)[0].array


def _two_edits(a: Session, b: Session) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """A paints one voxel, B another, far apart, both outside the reference."""
    free = np.argwhere(~a.reference.array)
    va, vb = tuple(int(v) for v in free[0]), tuple(int(v) for v in free[-1])
    box_a = Box(va, tuple(c + 1 for c in va))
    box_b = Box(vb, tuple(c + 1 for c in vb))
    a.paint("reference", box_a, np.ones((1, 1, 1), bool), True)
    b.paint("reference", box_b, np.ones((1, 1, 1), bool), True)
    return va, vb


@pytest.mark.parametrize("first", ["a", "b"])
def test_two_sessions_on_one_reference_never_lose_an_edit_silently(files, tmp_path, first):
    a, b = _open(files, tmp_path, "a"), _open(files, tmp_path, "b")
    va, vb = _two_edits(a, b)
    ref = files / "ref.nii.gz"
    one, two = (a, b) if first == "a" else (b, a)
    one.save_reference()
    before = ref.read_bytes()
    with pytest.raises(SaveConflictError) as err:
        two.save_reference()
    assert "changed on disk" in str(err.value) and "new file" in str(err.value)
    assert ref.read_bytes() == before  # nothing written
    # the user's choices: a new file keeps both versions apart
    other = two.save_reference(files / "mine.nii.gz")
    assert _on_disk(other)[va if two is a else vb]
    # ... or merge: both edits are in the file
    two2 = _open(files, tmp_path, "c")  # opened after the first save: no conflict for it
    assert not two2.changed_on_disk(two2.reference)


def test_merge_keeps_both_edits_and_overwrite_keeps_the_other_version(files, tmp_path):
    a, b = _open(files, tmp_path, "a"), _open(files, tmp_path, "b")
    va, vb = _two_edits(a, b)
    ref = files / "ref.nii.gz"
    b.save_reference()
    with pytest.raises(SaveConflictError):
        a.save_reference()
    a.save_reference(on_conflict="merge")
    saved = _on_disk(ref)
    assert saved[va] and saved[vb]  # nobody's edit lost
    assert a.reference.array[vb]  # what A shows is what it saved
    a.undo()  # the merge is one undo step
    assert not a.reference.array[vb] and a.reference.array[va]

    # B saves again: it conflicts with A's merge; overwriting keeps A's version aside
    b.paint("reference", Box(va, tuple(c + 1 for c in va)), np.ones((1, 1, 1), bool), False)
    with pytest.raises(SaveConflictError):
        b.save_reference()
    b.save_reference(on_conflict="overwrite")
    kept = sorted(files.glob("ref.other-*.nii.gz"))
    assert len(kept) == 1 and _on_disk(kept[0])[va] and _on_disk(kept[0])[vb]
    assert backup_path(ref).exists()  # the pristine original, kept once
    assert not _on_disk(ref)[va]


def test_save_as_moves_the_layer_to_the_new_file(files, tmp_path):
    a = _open(files, tmp_path)
    va, _ = _two_edits(a, _open(files, tmp_path, "b"))
    out = a.save_reference(files / "copy.nii.gz")
    assert a.reference.path == str(out) and not a.reference.modified
    a.paint("reference", Box(va, tuple(c + 1 for c in va)), np.ones((1, 1, 1), bool), False)
    assert a.save_reference() == out  # the next plain save goes to the file saved as
    assert not _on_disk(out)[va]


def test_a_prediction_saves_atomically_on_its_own_grid(files, tmp_path):
    a = _open(files, tmp_path)
    a.paint(0, Box((0, 0, 0), (2, 2, 2)), np.ones((2, 2, 2), bool), True)
    out = a.save_prediction(0, files / "pred_edited.nii.gz")
    assert np.array_equal(_on_disk(out), a.predictions[0].array)


def test_group_accept_is_one_edit_over_every_part(files, tmp_path):
    s = _open(files, tmp_path)
    fn = [g for g in s.regions(0) if g.kind == "FN"]
    assert len(fn) >= 2
    before = s.reference.array.copy()
    edit = s.accept_many([g.key for g in fn], 0)
    assert edit is not None and edit.regions == len(fn)
    for g in fn:
        assert not s.reference.array[tuple(g.voxels.T)].any()
        assert s.status(0, g.key) == "reference_error"
    assert edit.removed == sum(int(before[tuple(g.voxels.T)].sum()) for g in fn)
    assert len(s.history.undo_stack) == 1
    s.undo()
    assert np.array_equal(s.reference.array, before)
    assert all(s.status(0, g.key) == "unreviewed" for g in fn)
    with pytest.raises(InputError):
        s.accept_many([fn[0].key, next(g.key for g in s.regions(0) if g.kind == "FP")], 0)


def test_use_prediction_as_reference_is_one_undo_step_and_the_file_stays(files, tmp_path):
    s = _open(files, tmp_path)
    ref_bytes = (files / "ref.nii.gz").read_bytes()
    before = s.reference.array.copy()
    edit = s.use_prediction_as_reference(0)
    assert edit is not None and np.array_equal(s.reference.array, s.predictions[0].array)
    assert (files / "ref.nii.gz").read_bytes() == ref_bytes
    s.undo()
    assert np.array_equal(s.reference.array, before)
    s.redo()
    assert np.array_equal(s.reference.array, s.predictions[0].array)


def test_predictions_of_one_file_name_are_named_by_their_folder(files, tmp_path):
    for team in ("preds_YangLab", "preds_timi"):
        (files / team).mkdir()
        write_volume(
            LabelVolume(_on_disk(files / "pred.nii.gz").astype(np.uint8), GEO), files / team / "ATM_305_0000.nii.gz"
        )
    s = Session.load(
        reference=files / "ref.nii.gz",
        predictions=[files / "preds_YangLab" / "ATM_305_0000.nii.gz", files / "preds_timi" / "ATM_305_0000.nii.gz"],
        recovery_dir=tmp_path / "rec",
    )
    assert [p.name for p in s.predictions] == ["preds_YangLab/ATM_305_0000", "preds_timi/ATM_305_0000"]
    assert distinct_names([("x", "/a/b/x.nii"), ("x", "/c/b/x.nii"), ("y", None), ("y", None)]) == [
        "a/b/x",
        "c/b/x",
        "y",
        "y (2)",
    ]
    assert distinct_names([("reference", "/a/reference.nii")], taken=("reference",)) == ["a/reference"]


def test_the_cli_names_predictions_of_one_file_name_by_their_folder(files, capsys):
    import json

    from core.cli import main

    preds = []
    for team in ("preds_YangLab", "preds_timi"):
        (files / team).mkdir()
        preds.append(files / team / "ATM_305_0000.nii.gz")
        write_volume(LabelVolume(_on_disk(files / "pred.nii.gz").astype(np.uint8), GEO), preds[-1])
    out = files / "eval.json"
    rc = main(
        ["evaluate", "--reference", str(files / "ref.nii.gz"), "--prediction", *map(str, preds), "--json", str(out)]
    )
    assert rc == 0
    err = capsys.readouterr().err
    assert "evaluating preds_YangLab/ATM_305_0000" in err and "evaluating preds_timi/ATM_305_0000" in err
    assert "preds_timi/ATM_305_0000" in json.dumps(json.loads(out.read_text()))


def test_a_save_never_writes_over_another_open_file(files, tmp_path):
    a = _open(files, tmp_path)
    before = (files / "ref.nii.gz").read_bytes()
    with pytest.raises(InputError, match="file of the reference"):
        a.save_prediction(0, files / "ref.nii.gz")
    with pytest.raises(InputError, match="file of the pred"):
        a.save_reference(files / "pred.nii.gz")
    assert (files / "ref.nii.gz").read_bytes() == before


def _write_lock(path, pid):
    import json
    import socket
    import time

    from core.review.persist import lock_path

    lock_path(path).write_text(
        json.dumps({"user": "bea", "host": socket.gethostname(), "pid": pid, "since": time.time()})
    )


def test_a_lock_file_names_who_edits_a_reference_and_a_dead_holder_is_taken_over(files, tmp_path):
    import os
    import subprocess
    import sys

    from core.review.persist import lock_path, read_lock

    ref = files / "ref.nii.gz"
    _write_lock(ref, os.getppid())  # a live process of someone else
    s = _open(files, tmp_path)
    (lock,) = [lk for lk in s.lock_files() if lk.path == ref]
    assert lock.other is not None and "bea" in lock.other.describe() and not lock.held
    s.release_locks()
    assert read_lock(ref).user == "bea"  # theirs stays

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _write_lock(ref, gone.pid)  # its process has ended (a crash)
    s2 = _open(files, tmp_path, "b")
    s2.lock_on_edit = True  # as the app does: the first edit takes the file
    assert read_lock(ref).pid == gone.pid  # opening wrote nothing
    s2.paint("reference", Box((0, 0, 0), (1, 1, 1)), np.ones((1, 1, 1), bool), True)
    (lock,) = [lk for lk in s2.lock_files(take=False) if lk.path == ref]
    assert lock.other is None and lock.held and "took over the lock of bea" in lock.note
    assert read_lock(ref).pid == os.getpid()
    s2.release_locks()
    assert not lock_path(ref).exists()
