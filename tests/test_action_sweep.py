"""Every action of the keymap, as a user reaches it: its keys on the window, and its menu
entry, on four kinds of case (the demo; a CT alone; labels only; a CT with a reference
and two predictions). Nothing may raise, no error dialog may open, Qt may not call a
shortcut ambiguous, and where an action does not apply the status bar says why.

File dialogs answer "cancel" and message boxes "no" at once, so nothing blocks.
"""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QtMsgType, qInstallMessageHandler
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QDialog, QFileDialog, QMenu, QMessageBox
from window_keys import wait_not_busy

from app import shortcuts
from app.settings import Settings
from core.box import Box

KINDS = ("demo", "ct_only", "label_only", "ct_two_predictions")
# keys a slice view handles itself (no window action, so no menu entry: the view under the mouse scrolls)
VIEW_KEYS = {"slice_next", "slice_previous", "slice_page_next", "slice_page_previous"}
# actions that run the segmentation engine (its own tests cover it; here it is cancelled or fails cleanly)
ENGINE_ACTIONS = {"segment", "segment_demo"}
ENGINE_OK = "[user error] "
# actions that end or replace the case: swept last
LAST = ("open_demo", "quit")
# what the status bar must say where an action does not apply, per case kind
NOT_APPLICABLE = {
    "ct_only": {
        "add_to_reference": "No region selected",
        "remove_from_reference": "No region selected",
        "status_confirmed": "No region selected",
        "next_region": "No error regions",
        "save_reference": "no reference to save",
        "save_reference_as": "no reference to save",
        "save_prediction_as": "no prediction",
        "use_prediction_as_reference": "no prediction",
        "next_prediction": "No prediction",
        "cancel_job": "No background job",
    },
    "label_only": {
        "tool_fill": "needs a CT",
        "brush_hu_limit": "needs a CT",
        "segment_demo": "Open a CT",
        "cancel_job": "No background job",
        "next_prediction": "Only one prediction",
    },
    "demo": {"cancel_job": "No background job", "next_prediction": "Only one prediction"},
    "ct_two_predictions": {"cancel_job": "No background job"},
}
# no dataset is open in any kind: the dataset's navigation says so (app/dataset)
for _expected in NOT_APPLICABLE.values():
    _expected.update(dict.fromkeys(("save_next_case", "save_previous_case", "case_done"), "No dataset open"))


@pytest.fixture(scope="module")
def case_files(tmp_path_factory, tiny_demo):
    from scipy import ndimage

    from core.io import write_volume
    from core.volume import LabelVolume

    d = tmp_path_factory.mktemp("sweep")
    ph = tiny_demo.phantom
    ref = tiny_demo.reference.mask
    write_volume(ph.ct, d / "ct.nii.gz")
    write_volume(LabelVolume(ref.astype(np.uint8), ph.ct.geometry), d / "reference.nii.gz")
    write_volume(LabelVolume(tiny_demo.prediction.mask.astype(np.uint8), ph.ct.geometry), d / "pred_a.nii.gz")
    grown = ndimage.binary_dilation(ref, iterations=1)
    write_volume(LabelVolume(grown.astype(np.uint8), ph.ct.geometry), d / "pred_b.nii.gz")
    return d


class Watch:
    """Dialogs, status messages and Qt warnings seen while the sweep runs."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.boxes: list[str] = []
        self.messages: list[str] = []
        self.qt_warnings: list[str] = []

    def handler(self, mode: QtMsgType, _context: object, message: str) -> None:
        if mode in (QtMsgType.QtWarningMsg, QtMsgType.QtCriticalMsg, QtMsgType.QtFatalMsg):
            self.qt_warnings.append(message)


@pytest.fixture
def watch(monkeypatch):
    w = Watch()
    for name in ("getOpenFileName", "getSaveFileName"):
        monkeypatch.setattr(QFileDialog, name, staticmethod(lambda *a, **k: ("", "")))
    monkeypatch.setattr(QFileDialog, "getOpenFileNames", staticmethod(lambda *a, **k: ([], "")))
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: ""))

    def box_exec(box):
        w.boxes.append(box.text())
        return QMessageBox.StandardButton.Discard

    monkeypatch.setattr(QMessageBox, "exec", box_exec)
    for name in ("question", "warning", "critical", "information"):
        monkeypatch.setattr(
            QMessageBox,
            name,
            staticmethod(
                lambda *a, **k: w.boxes.append(str(a[2] if len(a) > 2 else "")) or QMessageBox.StandardButton.No
            ),
        )
    monkeypatch.setattr(QDialog, "exec", lambda self: 0)  # Help: shortcuts, About
    previous = qInstallMessageHandler(w.handler)
    yield w
    qInstallMessageHandler(previous)


def _window(qtbot, watch, kind, files):
    from app.main_window import MainWindow

    w = MainWindow(settings=Settings(ephemeral=True), training_tab=False)
    qtbot.addWidget(w)

    def record(_parent, exc, details=None, **_k):
        from core.errors import AirwayError

        # an engine's own user error (AirwayError, no traceback) is marked as such
        watch.errors.append((ENGINE_OK if isinstance(exc, AirwayError) and not details else "") + str(exc))

    w.error_handler = record
    w.statusBar().messageChanged.connect(lambda text: text and watch.messages.append(text))
    w.resize(1280, 800)
    w.show()
    qtbot.waitExposed(w)
    with qtbot.waitSignal(w.caseLoaded, timeout=120000):
        if kind == "demo":
            from app.demo import TEST_PARAMS

            w.open_demo(TEST_PARAMS)
        elif kind == "ct_only":
            w.open_files(str(files / "ct.nii.gz"))
        elif kind == "label_only":
            w.open_files(None, str(files / "reference.nii.gz"), [str(files / "pred_a.nii.gz")])
        else:
            w.open_files(
                str(files / "ct.nii.gz"),
                str(files / "reference.nii.gz"),
                [str(files / "pred_a.nii.gz"), str(files / "pred_b.nii.gz")],
            )
    if w.case.reference is not None and w.case.predictions:
        qtbot.waitUntil(lambda: w.case.active is not None and w.case.active.regions is not None, timeout=120000)
    w.activateWindow()
    w.views["axial"].setFocus()
    qtbot.waitUntil(w.isActiveWindow, timeout=5000)
    return w


def _menu_actions(w) -> dict[str, QAction]:
    found: dict[str, QAction] = {}

    def walk(menu: QMenu) -> None:
        for a in menu.actions():
            if a.menu() is not None:
                walk(a.menu())
            elif a.objectName().startswith("action_"):
                found[a.objectName()[len("action_") :]] = a

    for top in w.menuBar().actions():
        if top.menu() is not None:
            walk(top.menu())
    return found


def _settle(qtbot, w) -> None:
    """Let what an action started finish (or cancel it: a segmentation is not the point here)."""
    QApplication.processEvents()
    if w.busy:
        for job in list(w.jobs):
            job.cancel()
    wait_not_busy(qtbot, w, 120000)
    QApplication.processEvents()


def _press(w, seq: QKeySequence) -> None:
    combo = seq[0]
    QTest.keyClick(w.views["axial"], combo.key(), combo.keyboardModifiers())


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_every_action_through_its_keys_and_its_menu(qtbot, watch, case_files, kind):
    w = _window(qtbot, watch, kind, case_files)
    menu = _menu_actions(w)
    bindings = [b for b in shortcuts.KEYMAP if not b.mouse]
    ordered = [b for b in bindings if b.action not in LAST] + [b for b in bindings if b.action in LAST]
    expected = NOT_APPLICABLE.get(kind, {})
    for b in ordered:
        if b.action == "quit":
            break  # below, once everything else ran
        if b.action == "open_demo" and kind != "demo":
            continue  # replaces the case: the demo kind covers it
        if b.action in VIEW_KEYS:
            before = w.views["axial"].index
            for k in b.keys:
                _press(w, QKeySequence(k))
            assert w.views["axial"].index != before or b.action in ("slice_previous", "slice_page_previous"), b.action
            continue
        assert b.action in menu, f"{b.action} has no menu entry"
        action = menu[b.action]
        if b.action in ("next_region", "add_to_reference", "remove_from_reference", "status_confirmed"):
            # A / R / 2 act on the selected item: select one first where there is one
            if w.case.regions():
                w.step_review(1)
        watch.messages.clear()
        fired = []
        action.triggered.connect(lambda *_, f=fired: f.append(1))
        for k in b.keys:  # through the keys
            if action.isEnabled():
                w.statusBar().clearMessage()  # the same message twice is signalled once
                n = len(fired)
                _press(w, QKeySequence(k))
                assert len(fired) == n + 1, f"{kind}: {k} did not reach {b.action}"
                _settle(qtbot, w)
        if action.isEnabled():  # through the menu entry
            w.statusBar().clearMessage()
            action.trigger()
            _settle(qtbot, w)
        if b.action in ENGINE_ACTIONS:
            # a segmentation may fail on a small phantom (e.g. region growing finds no trachea):
            # that is one clear message of the engine, never a traceback
            watch.errors = [e for e in watch.errors if not e.startswith(ENGINE_OK)]
        assert not watch.errors, f"{kind}: {b.action} showed an error: {watch.errors}"
        assert not watch.boxes, f"{kind}: {b.action} opened a message box: {watch.boxes}"
        if b.action in expected:
            assert any(expected[b.action].lower() in m.lower() for m in watch.messages), (
                f"{kind}: {b.action} should say '{expected[b.action]}', said {watch.messages}"
            )
    ambiguous = [m for m in watch.qt_warnings if "mbiguous" in m]
    assert not ambiguous, ambiguous
    # Ctrl+Q last: the window closes without a question (nothing to save in an ephemeral session)
    _press(w, QKeySequence("Ctrl+Q"))
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=10000)
    assert not watch.errors and not watch.boxes


@pytest.mark.slow
def test_alt_h_limits_the_brush_and_no_shortcut_is_ambiguous(qtbot, watch, case_files):
    """Alt+H used to do nothing: the &Help menu's mnemonic made Qt call it ambiguous."""
    w = _window(qtbot, watch, "ct_only", case_files)
    assert not w.edit_tools.hu_limit
    _press(w, QKeySequence("Alt+H"))
    QApplication.processEvents()
    assert w.edit_tools.hu_limit, watch.qt_warnings
    assert not [m for m in watch.qt_warnings if "mbiguous" in m]
    mnemonics = {a.text()[a.text().index("&") + 1].upper() for a in w.menuBar().actions() if "&" in a.text()}
    alt_keys = {k.split("+")[-1].upper() for b in shortcuts.KEYMAP for k in b.keys if k.startswith("Alt+")}
    assert not mnemonics & alt_keys


@pytest.mark.slow
def test_ctrl_alt_s_and_the_menu_entry_save_the_reference(qtbot, watch, case_files, tmp_path):
    """Ctrl+Alt+S used to fail with "expected str, bytes or os.PathLike object, not bool":
    Qt's ``checked`` flag reached ``save_reference(path)``."""
    import shutil

    from core.review.loading import read_label_canonical

    for f in case_files.glob("*.nii.gz"):
        shutil.copy(f, tmp_path / f.name)
    w = _window(qtbot, watch, "ct_two_predictions", tmp_path)
    w.case.session.paint("reference", Box((0, 0, 0), (2, 2, 2)), np.ones((2, 2, 2), bool), True)
    with qtbot.waitSignal(w.labelSaved, timeout=60000):
        _press(w, QKeySequence("Ctrl+Alt+S"))
    assert not watch.errors and not w.case.session.reference.modified
    saved = read_label_canonical(tmp_path / "reference.nii.gz", None)[0].array
    assert np.array_equal(saved, w.case.session.reference.array) and saved[:2, :2, :2].all()
    w.case.session.paint("reference", Box((0, 0, 0), (2, 2, 2)), np.ones((2, 2, 2), bool), False)
    with qtbot.waitSignal(w.labelSaved, timeout=60000):
        w.action_table["save_reference"].trigger()
    assert not watch.errors and not w.case.session.reference.modified
    assert not read_label_canonical(tmp_path / "reference.nii.gz", None)[0].array[:2, :2, :2].any()
    assert any("Saved the reference" in m for m in watch.messages)
    # the window's own actions() is Qt's again (the action table no longer hides it)
    assert callable(w.actions) and w.action_table["save_reference"] in w.actions()
