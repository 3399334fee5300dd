"""The application shell: demo case, regions navigation, segmentation in a worker,
errors as one dialog, projects, drag and drop, keymap, Help/About, --screenshot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from jobs import run_job_and_wait
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QMessageBox
from watchdog import Watchdog
from window_keys import wait_not_busy

from app import shortcuts
from app.demo import TEST_PARAMS
from app.main_window import MainWindow
from app.settings import Settings
from core.volume import LabelVolume


@pytest.fixture
def dialogs(monkeypatch):
    """Every QMessageBox is recorded and dismissed instead of blocking."""
    shown: list[QMessageBox] = []

    def fake_exec(box):
        shown.append(box)
        return QMessageBox.StandardButton.Ok

    monkeypatch.setattr(QMessageBox, "exec", fake_exec)
    return shown


@pytest.fixture
def window(qtbot, dialogs):
    # not qtbot.addWidget: pytest-qt would delete the window before this fixture's teardown
    w = MainWindow(settings=Settings(ephemeral=True), install_panels=False, training_tab=False)
    w.resize(1100, 760)
    w.show()
    qtbot.waitExposed(w)
    w.activateWindow()
    qtbot.waitUntil(w.isActiveWindow)  # window shortcuts need an active window
    yield w
    _settle(qtbot, w)


def _settle(qtbot, w):
    """Cancel and finish every job before the window goes, so no signal outlives it."""
    w.cancel_jobs()
    w.case.cancel_jobs()
    wait_not_busy(qtbot, w, 30000)
    w.close()
    w.deleteLater()
    qtbot.wait(20)


def _open_demo(qtbot, w):
    with qtbot.waitSignal(w.caseLoaded, timeout=30000):
        w.open_demo(TEST_PARAMS)


def _wait_analysis(qtbot, w, index=0):
    pytest.importorskip("core.metrics")
    pytest.importorskip("core.regions")
    qtbot.waitUntil(
        lambda: w.case.predictions[index].regions is not None or w.case.predictions[index].analysis_error is not None,
        timeout=60000,
    )
    assert w.case.predictions[index].analysis_error is None


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_demo):
    from core.io import write_volume

    d = tmp_path_factory.mktemp("shell")
    g = tiny_demo.phantom.ct.geometry
    return {
        "ct": str(write_volume(tiny_demo.phantom.ct, d / "case_ct.nii.gz")),
        "ref": str(write_volume(LabelVolume(tiny_demo.reference.mask.astype(np.uint8), g), d / "case_label.nii.gz")),
        "pred": str(write_volume(LabelVolume(tiny_demo.prediction.mask.astype(np.uint8), g), d / "case_pred.nii.gz")),
    }


def test_open_demo_case(window, qtbot):
    _open_demo(qtbot, window)
    c = window.case
    assert c.ct.shape == TEST_PARAMS.shape and c.demo
    assert len(c.predictions) == 1 and c.predictions[0].source == "simulated"
    assert "Phantom demo" in window.windowTitle()
    assert c.cursor == tuple(s // 2 for s in c.ct.shape)
    for v in window.views.values():
        rgb = v.current_rgb()
        assert rgb is not None and rgb.std() > 0  # a real image, not a blank


def test_scrolling_a_view_moves_the_shared_cursor(window, qtbot):
    _open_demo(qtbot, window)
    v = window.views["coronal"]
    y0 = window.case.cursor[1]
    v.setFocus()
    qtbot.keyClick(v, Qt.Key.Key_Up)
    qtbot.keyClick(v, Qt.Key.Key_Up)
    assert window.case.cursor[1] == y0 + 2
    assert window.views["axial"].index == window.case.cursor[0]


def test_status_bar_readout_names_the_class(window, qtbot):
    _open_demo(qtbot, window)
    c = window.case
    fp = np.argwhere(c.active.mask & ~c.reference.mask)[0]
    window._on_hover(tuple(fp))
    text = window.readout.text()
    assert "FP" in text and "HU" in text and "mm" in text and f"z {fp[0]}" in text


def test_next_previous_region_moves_the_crosshair(window, qtbot):
    _open_demo(qtbot, window)
    _wait_analysis(qtbot, window)
    regs = window.case.regions()
    assert len(regs) >= 2
    window.views["axial"].setFocus()
    c = window.case
    ref, pred = c.reference.mask, c.active.mask

    def on_region(i):
        # the crosshair sits on a voxel of region i: inside its box and of its kind
        z, y, x = c.cursor
        (z0, y0, x0), (z1, y1, x1) = regs[i].box.start, regs[i].box.stop
        assert z0 <= z < z1 and y0 <= y < y1 and x0 <= x < x1
        err = pred & ~ref if regs[i].kind == "FP" else ref & ~pred
        assert err[c.cursor]

    qtbot.keyClick(window, Qt.Key.Key_N)
    assert c.active_region == 0
    on_region(0)
    qtbot.keyClick(window, Qt.Key.Key_N)
    assert c.active_region == 1
    on_region(1)
    qtbot.keyClick(window, Qt.Key.Key_N, Qt.KeyboardModifier.ShiftModifier)
    assert c.active_region == 0
    on_region(0)
    # the slice shows the region's class colour at the crosshair (FP green, FN red)
    from app.review.slice_view import window_slice

    z, y, x = c.cursor
    s = window.display.settings
    code = 2 if regs[0].kind == "FP" else 3
    grey = int(window_slice(c.ct.array[z, y, x][None, None], s.window, s.level)[0, 0])
    want = np.floor(grey * (1 - s.opacity) + window.renderer.rgb[code] * s.opacity + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(window.views["axial"].current_rgb()[y, x], want)
    # over the reference the status bar names the branch and its generation
    vox = tuple(np.argwhere(c.branch_map > 0)[0])
    bid = int(c.branch_map[vox])
    window._on_hover(vox)
    assert f"branch {bid}, generation {c.generations[bid]}" in window.readout.text()
    qtbot.keyClick(window, Qt.Key.Key_2)  # confirmed error
    assert window.case.active.status(0) == "confirmed"
    assert window.review_counter.text().startswith("Reviewed 1/")


def test_bad_file_shows_one_error_dialog_and_the_app_goes_on(window, qtbot, dialogs, tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"this is not a nifti file")
    job = window.open_files(str(bad))
    # a condition, not job.finished: a signal connected after start() misses a fast job's
    qtbot.waitUntil(lambda: not job.running and len(dialogs) >= 1, timeout=10000)
    assert len(dialogs) == 1
    assert "broken.nii.gz" in dialogs[0].text() and not dialogs[0].detailedText()
    assert window.case.is_empty
    _open_demo(qtbot, window)  # still usable
    assert not window.case.is_empty


def test_unexpected_errors_keep_the_traceback_under_details(window, dialogs):
    from app.dialogs import show_error

    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError as exc:
        import traceback

        show_error(window, exc, traceback.format_exc())
    box = dialogs[-1]
    assert box.text().startswith("Unexpected error (ZeroDivisionError)")
    assert "Traceback" in box.detailedText() and "Traceback" not in box.text()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from core.models.checkpoint import save_checkpoint
    from core.models.registry import build_model
    from core.preprocess import Preprocessing

    torch.manual_seed(0)
    model = build_model("wingsnet", width=0.25)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    prep = Preprocessing(crop="none")
    save_checkpoint(path, model, {"preprocessing": prep.to_dict()})
    return path


@pytest.mark.slow
def test_segmentation_in_a_worker_adds_a_prediction_and_never_stalls_the_gui(window, qtbot, tiny_checkpoint):
    _open_demo(qtbot, window)
    if _has_engine():
        _wait_analysis(qtbot, window)
    # the GUI thread's gaps less its own wait for a CPU (tests/watchdog.py): a one-second idle
    # calibration before the run could not foresee a load that came during it (a clean-clone run
    # beside another suite saw a 111 ms gap against a 105 ms budget)
    dog = Watchdog().start()
    try:
        with dog.phase("segment") as ph, qtbot.waitSignal(window.segmentationFinished, timeout=120000) as sig:
            window.segment_with(tiny_checkpoint, "cpu", window=16, step=16, backend="torch")
    finally:
        dog.stop()
    index = sig.args[0]
    c = window.case
    assert index == 1 and len(c.predictions) == 2 and c.active_index == 1
    new = c.predictions[1]
    assert new.source.startswith("model:") and new.probabilities is not None
    assert new.mask.shape == c.ct.shape
    assert len(ph.gaps) > 5
    assert ph.longest_own_ms < 100, f"event loop stalled {ph.longest_own_ms:.0f} ms of its own\n{dog.report()}"
    if _has_engine():
        _wait_analysis(qtbot, window, 1)
        assert new.metrics is not None


def _has_engine() -> bool:
    import importlib.util

    return importlib.util.find_spec("core.metrics") is not None and importlib.util.find_spec("core.regions") is not None


@pytest.mark.slow
def test_cancelled_segmentation_leaves_the_case_as_it_was(window, qtbot, tiny_checkpoint):
    _open_demo(qtbot, window)
    c = window.case
    before = (len(c.predictions), c.active_index, c.cursor, c.modified)
    job = window.segment_with(tiny_checkpoint, "cpu", window=16, step=8, backend="torch")
    qtbot.waitUntil(lambda: job.state == "running", timeout=60000)  # the child process segments
    ended = getattr(job, "ended", None) or job.finished  # a child-process run, or a worker-thread job
    run_job_and_wait(qtbot, window.action_table["cancel_job"].trigger, until=ended, timeout=60000)
    assert job.state == "cancelled"
    assert (len(c.predictions), c.active_index, c.cursor, c.modified) == before


def test_project_save_and_reopen_restores_review_state(window, qtbot, files, tmp_path, dialogs):
    with qtbot.waitSignal(window.caseLoaded, timeout=30000):
        window.open_files(files["ct"], files["ref"], [files["pred"]])
    c = window.case
    c.set_cursor((10, 20, 30))
    window.display.apply_preset("bone")
    window.action_table["toggle_outline"].trigger()
    qtbot.waitUntil(lambda: bool(c.predictions[0].regions), timeout=60000)
    c.set_region_status(0, "flagged")
    key = c.predictions[0].regions[0].key
    out = window.save_project_to(tmp_path / "review.json")
    assert out is not None and out.exists() and not dialogs

    w2 = MainWindow(settings=Settings(ephemeral=True), install_panels=False, training_tab=False)
    with qtbot.waitSignal(w2.caseLoaded, timeout=30000):
        w2.open_project(str(out))
    assert w2.case.cursor == (10, 20, 30)
    assert w2.case.predictions[0].statuses == {key: "flagged"}  # by content key: survives re-sorting
    s = w2.display.settings
    assert (s.window, s.level, s.outline) == (2000, 300, True)
    assert w2.action_table["toggle_outline"].isChecked()
    assert str(out) in w2.settings.recent()
    _settle(qtbot, w2)


def test_dropped_files_are_sorted_into_ct_reference_and_prediction(window, qtbot, files):
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(files[k]) for k in ("pred", "ref", "ct")])
    event = QDropEvent(
        QPointF(100, 100), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    )
    with qtbot.waitSignal(window.caseLoaded, timeout=30000):
        window.dropEvent(event)
    c = window.case
    assert Path(c.ct_path).name == "case_ct.nii.gz"
    assert Path(c.reference_path).name == "case_label.nii.gz"
    assert [Path(p.path).name for p in c.predictions] == ["case_pred.nii.gz"]


def test_keymap_is_one_table_without_conflicts(window):
    assert shortcuts.conflicts() == []
    for name, action in window.action_table.items():
        assert [k.toString() for k in action.shortcuts()] == [k.toString() for k in shortcuts.keys(name)]
    for needed in (
        "next_region",
        "previous_region",
        "status_unreviewed",
        "status_confirmed",
        "status_reference_error",
        "status_flagged",
        "camera_reset",
        "segment",
    ):
        shortcuts.binding(needed)
    assert shortcuts.key_text("next_region") == "N" and shortcuts.key_text("previous_region") == "Shift+N"


def test_help_lists_every_binding_and_about_names_licences(window):
    from app.dialogs import AboutDialog, ShortcutsDialog, about_html

    d = ShortcutsDialog(window)
    assert d.table.rowCount() == len(shortcuts.KEYMAP)
    descriptions = {d.table.item(r, 2).text() for r in range(d.table.rowCount())}
    assert all(b.description in descriptions for b in shortcuts.KEYMAP)
    html = about_html()
    import PySide6

    import core

    for text in (
        core.__version__,
        "VTK",
        "PyTorch",
        "Apache-2.0",
        "LGPL-3.0-or-later",
        f"<tr><td>PySide6 (Qt for Python)</td><td>{PySide6.__version__}</td><td>LGPL-3.0</td></tr>",
    ):
        assert text in html
    AboutDialog(window).close()


@pytest.mark.slow
def test_screenshot_option_writes_a_png_of_the_window(qtbot, files, tmp_path, dialogs):
    from app.__main__ import main

    out = tmp_path / "shot.png"
    rc = main(
        [
            files["ct"],
            "--reference",
            files["ref"],
            "--prediction",
            files["pred"],
            "--screenshot",
            str(out),
            "--size",
            "1000x700",
        ]
    )
    assert rc == 0 and out.exists()
    img = QImage(str(out))
    assert img.width() >= 1000 * 0.9 and img.height() >= 700 * 0.9
    assert not dialogs


@pytest.mark.slow
def test_screenshot_of_a_missing_file_fails_cleanly(qtbot, tmp_path, capsys, dialogs):
    from app.__main__ import main

    rc = main([str(tmp_path / "missing.nii.gz"), "--screenshot", str(tmp_path / "x.png")])
    assert rc == 2 and not (tmp_path / "x.png").exists()
    assert "missing.nii.gz" in capsys.readouterr().err
    assert not dialogs


def test_settings_are_remembered_between_runs(qtbot, tmp_path, dialogs):
    ini = str(tmp_path / "settings.ini")
    w = MainWindow(settings=Settings(path=ini), install_panels=False, training_tab=False)
    qtbot.addWidget(w)
    w.display.apply_preset("mediastinum")
    w._set_opacity(0.8)
    w.settings.add_recent(str(tmp_path / "a.nii.gz"))
    w.close()
    w2 = MainWindow(settings=Settings(path=ini), install_panels=False, training_tab=False)
    qtbot.addWidget(w2)
    s = w2.display.settings
    assert (s.window, s.level, s.preset, s.opacity) == (350, 40, "mediastinum", 0.8)
    assert w2.preset_combo.currentData() == "mediastinum" and w2.opacity_slider.value() == 80
    assert w2.settings.recent() == [str(tmp_path / "a.nii.gz")]


def test_overlay_keys_toggle_the_display(window, qtbot):
    _open_demo(qtbot, window)
    s = window.display.settings
    qtbot.keyClick(window, Qt.Key.Key_O, Qt.KeyboardModifier.ShiftModifier)
    assert s.outline
    qtbot.keyClick(window, Qt.Key.Key_2, Qt.KeyboardModifier.ControlModifier)
    assert not s.visible["FP"] and not window.class_boxes["FP"].isChecked()
    qtbot.keyClick(window, Qt.Key.Key_3, Qt.KeyboardModifier.AltModifier)
    assert (s.window, s.level) == (2000, 300) and window.preset_combo.currentData() == "bone"
    fp = tuple(np.argwhere(window.case.active.mask & ~window.case.reference.mask)[0])
    window.case.set_cursor(fp)
    grey = window.views["axial"].current_rgb()[fp[1], fp[2]]
    assert grey[0] == grey[1] == grey[2]  # FP hidden: plain grey under the crosshair


@pytest.mark.slow
def test_a_dropped_dicom_slice_opens_its_series(window, qtbot, shared_data):
    folder = shared_data / "chest_ct_dicom"
    some = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".dcm")[:3]
    with qtbot.waitSignal(window.caseLoaded, timeout=60000):
        window.open_dropped([str(p) for p in some])
    assert window.case.ct.shape == (141, 512, 512)
    assert window.case.ct.geometry.orientation_code() == "LPS"
