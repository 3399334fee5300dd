"""An annotator's edits through the keys and the mouse, end to end: open, N, A, R, a brush
stroke, Ctrl+Z, Ctrl+Shift+Z, Ctrl+Alt+S, reopen, and the saved file equals what was
shown voxel for voxel; and a crash (the window dropped without saving) recovered at the
next start, saved, equal, with its recovery file gone. For a CT case and a label-only
case (which failed: "The recovery file names no CT")."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QMessageBox
from window_keys import type_key, wait_analysed

from app.settings import Settings
from core.box import Box
from core.review.loading import read_label_canonical

KINDS = ("ct", "label_only")


@pytest.fixture()
def files(tmp_path, tiny_demo, monkeypatch):
    from core.io import write_volume
    from core.volume import LabelVolume

    monkeypatch.setenv("AIRWAY_STUDIO_RECOVERY_DIR", str(tmp_path / "recovery"))
    ph = tiny_demo.phantom
    write_volume(ph.ct, tmp_path / "ct.nii.gz")
    write_volume(LabelVolume(tiny_demo.reference.mask.astype(np.uint8), ph.ct.geometry), tmp_path / "ref.nii.gz")
    write_volume(LabelVolume(tiny_demo.prediction.mask.astype(np.uint8), ph.ct.geometry), tmp_path / "pred.nii.gz")
    return tmp_path


def _open(qtbot, files, kind, errors):
    from app.main_window import MainWindow

    w = MainWindow(settings=Settings(ephemeral=True), training_tab=False)
    qtbot.addWidget(w)
    w.error_handler = lambda _p, exc, *_a, **_k: errors.append(str(exc))
    w.resize(1280, 800)
    w.show()
    qtbot.waitExposed(w)
    ct = str(files / "ct.nii.gz") if kind == "ct" else None
    with qtbot.waitSignal(w.caseLoaded, timeout=120000):
        w.open_files(ct, str(files / "ref.nii.gz"), [str(files / "pred.nii.gz")])
    wait_analysed(qtbot, w)
    _activate(qtbot, w)
    return w


def _activate(qtbot, w):
    """Keys go to the active window, as a user's do (window shortcuts need it)."""
    w.activateWindow()
    w.views["axial"].setFocus()
    qtbot.waitUntil(w.isActiveWindow, timeout=5000)


def _select_kind(qtbot, w, kind: str) -> bool:
    """N until the selected item is of ``kind`` (FP for A, FN for R)."""
    for _ in range(3 * len(w.case.regions()) + 2):
        type_key(w, Qt.Key.Key_N)
        regs = w.case.regions()
        if 0 <= w.case.active_region < len(regs) and regs[w.case.active_region].kind == kind:
            return True
    return False


def _brush_stroke(qtbot, w):
    """B, then a drag across the crosshair in the axial view, then B back to the crosshair."""
    axial = w.views["axial"]
    type_key(w, Qt.Key.Key_B)
    c = w.case.cursor
    a = axial.voxel_to_widget(c)
    b = axial.voxel_to_widget((c[0], c[1] + 3, c[2] + 3))
    pa, pb = QPoint(int(a.x()), int(a.y())), QPoint(int(b.x()), int(b.y()))
    QTest.mousePress(axial, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, pa)
    QTest.mouseMove(axial, pb)
    QTest.mouseRelease(axial, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, pb)
    QApplication.processEvents()
    type_key(w, Qt.Key.Key_B)


def _edit_like_a_user(qtbot, w) -> None:
    case = w.case
    before = case.session.reference.array.copy()
    assert _select_kind(qtbot, w, "FP")
    type_key(w, Qt.Key.Key_A)
    after_a = case.session.reference.array.copy()
    assert (after_a & ~before).any()
    assert "Added to the reference" in w.statusBar().currentMessage()
    parts = w.readout.text().split("   ")
    assert "TP" in parts and "FP" not in parts, parts  # the crosshair readout says what is there now
    wait_analysed(qtbot, w)
    assert _select_kind(qtbot, w, "FN")
    type_key(w, Qt.Key.Key_R)
    after_r = case.session.reference.array.copy()
    assert (after_a & ~after_r).any()
    _brush_stroke(qtbot, w)
    stroked = case.session.reference.array.copy()
    assert (stroked != after_r).any(), "the brush stroke changed nothing"
    type_key(w, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert np.array_equal(case.session.reference.array, after_r)
    type_key(w, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert np.array_equal(case.session.reference.array, stroked)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_edits_saved_with_ctrl_alt_s_reopen_voxel_for_voxel(qtbot, files, kind, monkeypatch):
    errors: list[str] = []
    monkeypatch.setattr(QMessageBox, "exec", lambda box: errors.append(box.text()) or QMessageBox.StandardButton.Ok)
    w = _open(qtbot, files, kind, errors)
    _edit_like_a_user(qtbot, w)
    shown = w.case.session.reference.array.copy()
    with qtbot.waitSignal(w.labelSaved, timeout=60000):  # the save runs in a job
        type_key(w, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier)
    assert not errors, errors
    assert (files / "ref.orig.nii.gz").exists()  # the original kept once
    w2 = _open(qtbot, files, kind, errors)
    assert np.array_equal(w2.case.session.reference.array, shown)
    assert np.array_equal(read_label_canonical(files / "ref.nii.gz", None)[0].array, shown)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_a_crash_is_recovered_at_the_next_start_saved_and_forgotten(qtbot, files, kind, monkeypatch):
    from core.review.persist import scan_recoveries

    errors: list[str] = []
    monkeypatch.setattr(QMessageBox, "exec", lambda box: errors.append(box.text()) or QMessageBox.StandardButton.Ok)
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.StandardButton.Yes))
    original = (files / "ref.nii.gz").read_bytes()
    w = _open(qtbot, files, kind, errors)
    _edit_like_a_user(qtbot, w)
    shown = w.case.session.reference.array.copy()
    w._autosave_timer.setInterval(20)  # the timer that writes the recovery file now and then
    qtbot.waitUntil(lambda: bool(scan_recoveries(set_aside=False)[0]), timeout=10000)
    (recovery,) = [p for p, _ in scan_recoveries(set_aside=False)[0]]
    # the crash: the window goes without a close, a save or a discard
    w._autosave_timer.stop()
    w.case.cancel_jobs()
    w.hide()
    assert (files / "ref.nii.gz").read_bytes() == original and recovery.exists()

    from app.main_window import MainWindow

    w2 = MainWindow(settings=Settings(ephemeral=True), training_tab=False)
    qtbot.addWidget(w2)
    w2.error_handler = lambda _p, exc, *_a, **_k: errors.append(str(exc))
    w2.show()
    with qtbot.waitSignal(w2.caseLoaded, timeout=120000):
        w2.offer_recovery()  # what the window does at its first show (not in test sessions)
    qtbot.waitUntil(lambda: w2.case.session.reference is not None and w2.case.session.reference.modified)
    assert not errors, errors
    assert np.array_equal(w2.case.session.reference.array, shown)
    wait_analysed(qtbot, w2)
    _activate(qtbot, w2)
    with qtbot.waitSignal(w2.labelSaved, timeout=60000):
        type_key(w2, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier)
    assert not errors, errors
    assert np.array_equal(read_label_canonical(files / "ref.nii.gz", None)[0].array, shown)
    assert not recovery.exists()
    assert not scan_recoveries(set_aside=False)[0]  # not offered again


@pytest.mark.slow
def test_declined_recovery_is_deleted_and_damaged_files_are_set_aside(qtbot, files, monkeypatch):
    from core.review.persist import RECOVERY_SUFFIX, scan_recoveries

    errors: list[str] = []
    monkeypatch.setattr(QMessageBox, "exec", lambda box: errors.append(box.text()) or QMessageBox.StandardButton.Ok)
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.StandardButton.Discard))
    w = _open(qtbot, files, "label_only", errors)
    w.case.session.paint("reference", Box((0, 0, 0), (2, 2, 2)), np.ones((2, 2, 2), bool), True)
    recovery = w.case.autosave()
    w.hide()
    rec_dir = recovery.parent
    (rec_dir / f"empty{RECOVERY_SUFFIX}").write_bytes(b"")
    shutil.copyfile(recovery, rec_dir / f"cut{RECOVERY_SUFFIX}")
    (rec_dir / f"cut{RECOVERY_SUFFIX}").write_bytes(recovery.read_bytes()[:64])

    from app.main_window import MainWindow

    w2 = MainWindow(settings=Settings(ephemeral=True), training_tab=False)
    qtbot.addWidget(w2)
    w2.error_handler = lambda _p, exc, *_a, **_k: errors.append(str(exc))
    w2.offer_recovery()  # no traceback, no dialog for the damaged ones: a status message names them
    assert not errors
    assert "damaged" in w2.statusBar().currentMessage() or "Discarded" in w2.statusBar().currentMessage()
    assert not recovery.exists()  # declined: deleted, never offered again
    assert sorted(p.name for p in rec_dir.iterdir()) == sorted(
        [f"cut{RECOVERY_SUFFIX}.damaged", f"empty{RECOVERY_SUFFIX}.damaged"]
    )
    assert scan_recoveries(rec_dir) == ([], [])


@pytest.mark.slow
def test_a_recovery_whose_files_changed_is_refused_once_and_set_aside(qtbot, files, monkeypatch):
    from core.review.persist import scan_recoveries

    errors: list[str] = []
    monkeypatch.setattr(QMessageBox, "exec", lambda box: errors.append(box.text()) or QMessageBox.StandardButton.Ok)
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.StandardButton.Yes))
    w = _open(qtbot, files, "ct", errors)
    w.case.session.paint("reference", Box((0, 0, 0), (2, 2, 2)), np.ones((2, 2, 2), bool), True)
    recovery = w.case.autosave()
    w.hide()
    with open(files / "ref.nii.gz", "ab") as f:  # someone replaced the reference since
        f.write(b"\0")

    from app.main_window import MainWindow

    w2 = MainWindow(settings=Settings(ephemeral=True), training_tab=False)
    qtbot.addWidget(w2)
    w2.error_handler = lambda _p, exc, *_a, **_k: errors.append(str(exc))
    w2.offer_recovery()
    assert len(errors) == 1 and "changed" in errors[0] and "set aside" in errors[0]
    assert not recovery.exists() and recovery.with_name(recovery.name + ".damaged").exists()
    assert scan_recoveries(recovery.parent) == ([], [])  # never offered again
