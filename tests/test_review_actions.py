"""Review actions on what users really open: a review group corrected whole, two windows
saving one reference, predictions that share a file name (ATM'22 teams)."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QMessageBox
from test_regions import make_case, tube

from app.settings import Settings
from core.box import Box
from core.io import write_volume
from core.review.loading import read_label_canonical
from core.volume import Geometry, LabelVolume

# 1 mm voxels: the 40-voxel group (40 mm³) is above the navigator's boundary threshold, so it is listed
GEO = Geometry(spacing=(1.0, 1.0, 1.0))


@pytest.fixture()
def group_files(tmp_path, monkeypatch):
    """A reference and a prediction missing four separate patches of the trachea's wall:
    one review group "FN boundary, 4 parts" (40 voxels)."""
    monkeypatch.setenv("AIRWAY_STUDIO_RECOVERY_DIR", str(tmp_path / "recovery"))
    ref, _, _, _ = make_case()
    z, _y, x = np.indices(ref.shape)
    core_ = tube(ref.shape, [((0, 40, 40), (30, 40, 40), 3.0)])
    pred = ref.copy()
    for z0 in (4, 10, 16, 22):
        pred &= ~(ref & ~core_ & (z >= z0) & (z < z0 + 2) & (x > 42))
    write_volume(LabelVolume(ref.astype(np.uint8), GEO), tmp_path / "ref.nii.gz")
    write_volume(LabelVolume(pred.astype(np.uint8), GEO), tmp_path / "pred.nii.gz")
    return tmp_path


def _window(qtbot, errors, ref, preds):
    from app.main_window import MainWindow

    w = MainWindow(settings=Settings(ephemeral=True), training_tab=False)
    qtbot.addWidget(w)
    w.error_handler = lambda _p, exc, *_a, **_k: errors.append(str(exc))
    w.resize(1280, 800)
    w.show()
    qtbot.waitExposed(w)
    with qtbot.waitSignal(w.caseLoaded, timeout=120000):
        w.open_files(None, str(ref), [str(p) for p in preds])
    qtbot.waitUntil(
        lambda: w.case.active is not None and w.case.active.regions is not None and not w.case.busy, timeout=120000
    )
    w.activateWindow()
    w.views["axial"].setFocus()
    qtbot.waitUntil(w.isActiveWindow, timeout=5000)
    return w


def _key(w, key, mods=Qt.KeyboardModifier.NoModifier):
    QTest.keyClick(w.views["axial"], key, mods)
    QApplication.processEvents()


@pytest.mark.slow
def test_r_on_a_group_removes_every_part_in_one_undo_step(qtbot, group_files):
    errors: list[str] = []
    w = _window(qtbot, errors, group_files / "ref.nii.gz", [group_files / "pred.nii.gz"])
    case = w.case
    regs = case.regions()
    assert len(regs) == 4 and {r.kind for r in regs} == {"FN"}
    before = case.session.reference.array.copy()
    _key(w, Qt.Key.Key_N)
    assert w.panels.regions.grouped and len(w.selected_regions()) == 4
    signalled: list[tuple[int, int, str]] = []
    case.regionStatusChanged.connect(lambda *a: signalled.append(a))
    _key(w, Qt.Key.Key_R)
    assert signalled == [(0, -1, "reference_error")]  # one refresh for the group, not one per part
    after = case.session.reference.array
    for r in regs:  # every part, not only the largest
        assert not after[tuple(r.coords.T)].any()
    assert int((before & ~after).sum()) == sum(int(r.voxels) for r in regs) == 40
    assert "4 parts, 40 voxels" in w.statusBar().currentMessage()
    assert all(case.active.statuses.get(r.key) == "reference_error" for r in regs)
    _key(w, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # one step undoes the whole group
    assert np.array_equal(case.session.reference.array, before)
    signalled.clear()
    _key(w, Qt.Key.Key_2)  # status keys too: every part, one refresh
    assert all(case.active.statuses.get(r.key) == "confirmed" for r in regs)
    assert signalled == [(0, -1, "confirmed")] and "(4 parts)" in w.statusBar().currentMessage()
    assert not errors


@pytest.mark.slow
def test_a_second_window_saving_the_same_reference_asks_and_loses_nothing(qtbot, group_files, monkeypatch):
    errors: list[str] = []
    ref = group_files / "ref.nii.gz"
    a = _window(qtbot, errors, ref, [group_files / "pred.nii.gz"])
    b = _window(qtbot, errors, ref, [group_files / "pred.nii.gz"])
    free = np.argwhere(~a.case.session.reference.array)
    va, vb = tuple(int(v) for v in free[0]), tuple(int(v) for v in free[-1])
    one = np.ones((1, 1, 1), bool)
    a.case.session.paint("reference", Box(va, tuple(c + 1 for c in va)), one, True)
    b.case.session.paint("reference", Box(vb, tuple(c + 1 for c in vb)), one, True)
    assert b.wait_for(b.save_reference())  # B first (a save runs in a job)

    asked: list[str] = []

    def answer(choice_text):
        def exec_(box):
            asked.append(box.text())
            for button in box.buttons():
                if button.text().startswith(choice_text):
                    button.click()
            return 0

        return exec_

    monkeypatch.setattr(QMessageBox, "exec", answer("Cancel"))
    before = ref.read_bytes()
    assert a.save_reference() is None  # cancelled: nothing written
    assert ref.read_bytes() == before and "changed on disk" in asked[-1]
    monkeypatch.setattr(QMessageBox, "exec", answer("Merge"))
    assert a.wait_for(a.save_reference())
    saved = read_label_canonical(ref, None)[0].array
    assert saved[va] and saved[vb] and np.array_equal(saved, a.case.session.reference.array)
    assert not errors and len(asked) == 2


@pytest.mark.slow
def test_predictions_with_one_file_name_are_told_apart_by_their_folder(qtbot, group_files):
    import shutil

    paths = []
    for team in ("preds_YangLab", "preds_timi"):
        (group_files / team).mkdir()
        paths.append(shutil.copy(group_files / "pred.nii.gz", group_files / team / "ATM_305_0000.nii.gz"))
    errors: list[str] = []
    w = _window(qtbot, errors, group_files / "ref.nii.gz", paths)
    names = [w.prediction_combo.itemText(i) for i in range(w.prediction_combo.count())]
    assert names == ["preds_YangLab/ATM_305_0000", "preds_timi/ATM_305_0000"]
    assert [p.name for p in w.case.predictions] == names
    assert not errors


@pytest.mark.slow
def test_use_this_prediction_as_the_reference_from_the_edit_menu(qtbot, group_files):
    errors: list[str] = []
    ref = group_files / "ref.nii.gz"
    w = _window(qtbot, errors, ref, [group_files / "pred.nii.gz"])
    before, on_disk = w.case.session.reference.array.copy(), ref.read_bytes()
    action = next(a for a in w.edit_menu.actions() if a.objectName() == "action_use_prediction_as_reference")
    action.trigger()
    assert np.array_equal(w.case.session.reference.array, w.case.active.mask)
    assert "is now the reference: 0 voxels added, 40 removed" in w.statusBar().currentMessage()
    assert ref.read_bytes() == on_disk  # the original stays on disk until a save
    _key(w, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # one undo step
    assert np.array_equal(w.case.session.reference.array, before)
    assert not errors


@pytest.mark.slow
def test_a_prediction_becomes_the_reference_of_a_case_without_one(qtbot, group_files, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    errors: list[str] = []
    from app.main_window import MainWindow

    w = MainWindow(settings=Settings(ephemeral=True), training_tab=False)
    qtbot.addWidget(w)
    w.error_handler = lambda _p, exc, *_a, **_k: errors.append(str(exc))
    with qtbot.waitSignal(w.caseLoaded, timeout=60000):
        w.open_files(None, None, [str(group_files / "pred.nii.gz")])
    w.use_prediction_as_reference()
    assert w.case.reference is not None and w.case.reference_path is None
    qtbot.waitUntil(lambda: w.case.active.regions is not None, timeout=60000)
    assert w.case.active.regions == []  # the same voxels: nothing to review
    out = group_files / "new_reference.nii.gz"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(out), "")))
    assert w.wait_for(w.save_reference())  # no file yet: asks for a name
    assert np.array_equal(read_label_canonical(out, None)[0].array, w.case.active.mask)
    assert w.case.reference_path == str(out) and not errors


@pytest.mark.slow
def test_a_second_window_is_told_who_holds_the_reference(qtbot, group_files):
    import json
    import os
    import socket
    import time

    from core.review.persist import lock_path

    ref = group_files / "ref.nii.gz"
    lock_path(ref).write_text(
        json.dumps({"user": "bea", "host": socket.gethostname(), "pid": os.getppid(), "since": time.time()})
    )
    errors: list[str] = []
    messages: list[str] = []
    from app.main_window import MainWindow

    w = MainWindow(settings=Settings(ephemeral=True), training_tab=False)
    qtbot.addWidget(w)
    w.error_handler = lambda _p, exc, *_a, **_k: errors.append(str(exc))
    w.statusBar().messageChanged.connect(lambda text: text and messages.append(text))
    with qtbot.waitSignal(w.caseLoaded, timeout=60000):
        w.open_files(None, str(ref), [str(group_files / "pred.nii.gz")])
    assert any("ref.nii.gz is open in another window: bea" in m for m in messages), messages
    w.close()
    assert json.loads(lock_path(ref).read_text())["user"] == "bea"  # never removed by another window
    assert not errors


@pytest.mark.slow
def test_the_first_edit_locks_the_reference_and_closing_frees_it(qtbot, group_files):
    import os

    from core.review.persist import lock_path, read_lock

    errors: list[str] = []
    ref = group_files / "ref.nii.gz"
    w = _window(qtbot, errors, ref, [group_files / "pred.nii.gz"])
    assert not lock_path(ref).exists()  # opening writes nothing
    _key(w, Qt.Key.Key_N)
    _key(w, Qt.Key.Key_R)
    assert read_lock(ref).pid == os.getpid()
    w.close()  # a test session asks nothing at close
    assert not lock_path(ref).exists() and not errors


@pytest.mark.slow
def test_closing_with_an_edited_reference_saves_it_when_asked(qtbot, group_files, monkeypatch):
    errors: list[str] = []
    ref = group_files / "ref.nii.gz"
    w = _window(qtbot, errors, ref, [group_files / "pred.nii.gz"])
    w.ephemeral = False  # a user's window asks before closing
    _key(w, Qt.Key.Key_N)
    _key(w, Qt.Key.Key_R)
    shown = w.case.session.reference.array.copy()
    answers = iter([QMessageBox.StandardButton.Save, QMessageBox.StandardButton.Discard])
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: next(answers)))
    w.close()  # "Save the edited reference?" Save (in a job, waited for); "Save the review?" Discard
    assert not w.isVisible() and not errors
    assert np.array_equal(read_label_canonical(ref, None)[0].array, shown)
