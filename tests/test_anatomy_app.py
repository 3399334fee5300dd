"""Branch names in the app, driven as a user does: right click > Name... in a slice view and in the 3D view,
the navigator's items, the metrics panel's per-lobe table, the 3D view's lobe colouring with its legend,
and the status bar's readout under the mouse (issue 26)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from anatomy_case import SPACING_XYZ, reference
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QDialogButtonBox

from app.settings import Settings
from core.io import write_volume
from core.volume import Geometry, LabelVolume

GEOMETRY = Geometry(spacing=SPACING_XYZ)


def _files(tmp_path: Path) -> tuple[Path, Path]:
    """The hand-built tree, and a prediction that misses the right upper lobe's stem and leaks beside the trachea."""
    from core.tree import parse_tree

    ref = reference()
    tree = parse_tree(ref, GEOMETRY.spacing_zyx)
    bmap = tree.branch_label_map()
    from core.anatomy import label_tree

    (rul,) = label_tree(tree, geometry=GEOMETRY).branches_named("RUL")
    pred = ref.copy()
    pred[bmap == rul] = False
    pred[66:70, 40:44, 52:56] = True
    write_volume(LabelVolume(ref.astype(np.uint8), GEOMETRY), tmp_path / "ref.nii.gz")
    write_volume(LabelVolume(pred.astype(np.uint8), GEOMETRY), tmp_path / "model.nii.gz")
    return tmp_path / "ref.nii.gz", tmp_path / "model.nii.gz"


def _idle(qtbot, w) -> None:
    qtbot.waitUntil(
        lambda: (
            w.case.active is not None
            and w.case.active.regions is not None
            and w.case.session.names.names is not None
            and not w.case.stale
            and not w.case.busy
            and not w.busy
        ),
        timeout=120000,
    )


def _open(qtbot, files: tuple[Path, Path], project: Path | None = None):
    from app.main_window import MainWindow

    w = MainWindow(settings=Settings(ephemeral=True), training_tab=False)
    qtbot.addWidget(w)
    w.resize(1280, 800)
    w.show()
    qtbot.waitExposed(w)
    with qtbot.waitSignal(w.caseLoaded, timeout=120000):
        if project is None:
            w.open_files(None, str(files[0]), [str(files[1])])
        else:
            w.open_project(str(project))
    _idle(qtbot, w)
    w.activateWindow()
    w.views["axial"].setFocus()
    qtbot.waitUntil(w.isActiveWindow, timeout=5000)
    return w


@pytest.fixture
def window(qtbot, tmp_path):
    return _open(qtbot, _files(tmp_path))


def _named(w, name: str) -> int:
    ids = w.case.session.names.names.branches_named(name)
    assert len(ids) == 1, name
    return ids[0]


def _voxel_of(w, branch_id: int) -> tuple[int, int, int]:
    """A centreline voxel in the middle of the branch."""
    tree = w.case.tree
    pts = tree.centreline_zyx[tree.centreline_branch == branch_id]
    mid = pts[np.argmin(((pts - pts.mean(axis=0)) ** 2).sum(axis=1))]
    return int(mid[0]), int(mid[1]), int(mid[2])


def _right_click(w, qtbot, zyx: tuple[int, int, int]):
    view = w.views["axial"]
    w.case.set_cursor(zyx)  # the axial view shows that slice
    pos = view.voxel_to_widget((zyx[0], zyx[1] + 0.5, zyx[2] + 0.5)).toPoint()
    QTest.mouseClick(view, Qt.MouseButton.RightButton, Qt.KeyboardModifier.NoModifier, pos)
    qtbot.waitUntil(lambda: view.context_menu is not None and view.context_menu.isVisible(), timeout=5000)
    return view.context_menu


def _name_action(menu):
    action = next(a for a in menu.actions() if a.objectName() == "nameBranch")
    return action


def _answer(qtbot, w, name: str | None) -> None:
    qtbot.waitUntil(lambda: getattr(w, "naming_dialog", None) is not None and w.naming_dialog.isVisible(), timeout=5000)
    dialog = w.naming_dialog
    dialog.select(name)
    ok = dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok)
    QTest.mouseClick(ok, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not dialog.isVisible(), timeout=5000)


@pytest.mark.slow
def test_right_click_name_then_undo_then_project_reopens_with_it(window, qtbot, tmp_path):
    w = window
    rul = _named(w, "RUL")
    kids = w.case.tree.branch(rul).children
    menu = _right_click(w, qtbot, _voxel_of(w, rul))
    action = _name_action(menu)
    assert action.isEnabled() and "RUL" in action.text()
    menu.close()
    action.trigger()
    qtbot.waitUntil(lambda: getattr(w, "naming_dialog", None) is not None, timeout=5000)
    assert "RUL" in w.naming_dialog.current.text() and "confidence" in w.naming_dialog.current.text()
    _answer(qtbot, w, "RLL")
    names = w.case.session.names.names
    assert names.name_of(rul) == "RLL" and all(names.lobe_of(k) == "RLL" for k in kids)
    assert w.case.modified

    QTest.keyClick(w.views["axial"], Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # Ctrl+Z
    qtbot.waitUntil(lambda: w.case.session.names.names.name_of(rul) == "RUL", timeout=5000)
    shift_ctrl = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    QTest.keyClick(w.views["axial"], Qt.Key.Key_Z, shift_ctrl)  # redo
    qtbot.waitUntil(lambda: w.case.session.names.names.name_of(rul) == "RLL", timeout=5000)

    project = w.save_project_to(tmp_path / "case.json")
    assert project is not None
    w2 = _open(qtbot, (Path(), Path()), project)
    assert w2.case.session.names.names.name_of(rul) == "RLL"
    assert all(w2.case.session.names.names.lobe_of(k) == "RLL" for k in kids)


@pytest.mark.slow
def test_navigator_items_say_which_branch_they_lie_in(window, qtbot):
    w = window
    model = w.panels.regions.groups_model
    texts = [model.values(r)[1] for r in range(model.rowCount())]
    assert any(re.fullmatch(r"FN(-\d+)? - RUL - \d+ mm( \(\d+ parts\))?", t) for t in texts), texts
    assert any(re.match(r"FP(-\d+)? - Trachea - ", t) for t in texts), texts
    # a correction renames the items at once
    w.case.name_branch(_named(w, "RUL"), "RB1")
    texts = [model.values(r)[1] for r in range(model.rowCount())]
    assert any(re.match(r"FN(-\d+)? - RB1 - ", t) for t in texts), texts


@pytest.mark.slow
def test_metrics_panel_has_a_row_per_lobe_and_the_segmental_sentence(window, qtbot):
    w = window
    panel = w.panels.metrics
    qtbot.waitUntil(lambda: panel.lobe_table.rowCount() > 0, timeout=10000)
    rows = {panel.lobe_table.item(r, 0).text(): r for r in range(panel.lobe_table.rowCount())}
    assert {"RUL", "RML", "RLL", "LUL", "LLL"} <= set(rows)
    rul = rows["RUL"]
    # the prediction misses the RUL stem: its BD there is below the LUL's full 100
    assert panel.lobe_table.item(rul, 2).value < 100.0
    assert panel.lobe_table.item(rows["LUL"], 2).value == pytest.approx(100.0)
    assert "segmental bronchi detected" in panel.anatomy_line.text()


@pytest.mark.slow
def test_3d_view_colours_by_lobe_with_a_legend(window, qtbot):
    from app.review.view3d import three_d_supported
    from core.anatomy.colours import colour_of

    if not three_d_supported():
        pytest.skip("needs an X display (Xvfb)")
    w = window
    view = w.view3d
    combo = view.mode_combo
    with qtbot.waitSignal(view.sceneReady, timeout=60000, check_params_cb=lambda m: m == "lobe"):
        combo.setCurrentIndex(combo.findData("lobe"))  # as a pick in the combo's list does
    legend = dict(view.scene.legend)
    assert {"RUL", "RLL", "LUL", "LLL"} <= set(legend)
    assert legend["RUL"] == colour_of("RUL")  # the colour `airway label`'s tables give it
    assert "RUL" in view.legend.text()
    faces = set(map(tuple, view.scene.face_rgb().tolist()))
    assert colour_of("LLL") in faces
    # segments: one colour per segmental bronchus the reference has
    with qtbot.waitSignal(view.sceneReady, timeout=60000, check_params_cb=lambda m: m == "segment"):
        combo.setCurrentIndex(combo.findData("segment"))
    segs = dict(view.scene.legend)
    named = {n for n in w.case.session.names.names.named() if n.startswith(("RB", "LB"))}
    assert named and named <= set(segs) and all(segs[n] == colour_of(n) for n in named)
    with qtbot.waitSignal(view.sceneReady, timeout=60000, check_params_cb=lambda m: m == "lobe"):
        combo.setCurrentIndex(combo.findData("lobe"))
    # a correction recolours the lobes
    with qtbot.waitSignal(view.sceneReady, timeout=60000):
        w.case.name_branch(_named(w, "RUL"), "RLL")
    assert "RUL" not in dict(view.scene.legend)


@pytest.mark.slow
def test_right_click_in_3d_names_a_branch(window, qtbot):
    from app.review.view3d import three_d_supported

    if not three_d_supported():
        pytest.skip("needs an X display (Xvfb)")
    w = window
    view = w.view3d
    qtbot.waitUntil(lambda: view.scene is not None and not view.busy, timeout=60000)
    view.camera_preset("anterior")
    lll = _named(w, "LLL")
    target = w.case.ct.geometry.index_to_world(np.asarray(_voxel_of(w, lll), float))
    # the surface point in front of the branch's centreline, as seen from the camera (anterior: -y)
    x, y = view.display_of_world(target)
    menu = view.menu_at_display(x, y)
    assert menu is not None and view.context_menu is menu
    action = _name_action(menu)
    assert action.isEnabled()
    menu.close()
    action.trigger()
    _answer(qtbot, w, "LB6")
    bid = w.case.branch_at(w.case.cursor)
    assert w.case.session.names.names.name_of(bid) == "LB6"


@pytest.mark.slow
def test_readout_names_the_branch_under_the_mouse(window, qtbot):
    w = window
    lll = _named(w, "LLL")
    zyx = _voxel_of(w, lll)
    view = w.views["axial"]
    w.case.set_cursor(zyx)
    pos = view.voxel_to_widget((zyx[0], zyx[1] + 0.5, zyx[2] + 0.5)).toPoint()
    QTest.mouseMove(view, pos)
    conf = w.case.session.names.name(lll).confidence
    qtbot.waitUntil(lambda: f"LLL ({conf:.2f})" in w.readout.text(), timeout=5000)
    w.case.name_branch(lll, "LB10")
    QApplication.processEvents()
    qtbot.waitUntil(lambda: "LB10 (yours)" in w.readout.text(), timeout=5000)
    QTest.mouseMove(view, QPoint(2, 2))


@pytest.mark.slow
def test_navigator_names_a_missed_segmental_bronchus_on_an_anatomy_phantom(qtbot, tmp_path):
    """An anatomy phantom (core.phantom grows named bronchi); the prediction misses one bronchus the labeller
    names segmental: its navigator item names it."""
    from core.anatomy.names import is_segmental
    from core.phantom.maker import make_phantom
    from core.review import Session

    ph = make_phantom(64, spacing=(2.5, 2.5, 3.0), seed=3)
    ref_p, pred_p = tmp_path / "ref.nii.gz", tmp_path / "model.nii.gz"
    write_volume(LabelVolume(ph.label.mask.astype(np.uint8), ph.label.geometry), ref_p)
    s = Session.load(None, ref_p, recovery_dir=tmp_path)
    s.analyse()
    names = s.names.names
    bmap = s.tree.branch_label_map()
    # a named segmental bronchus with its subtree: a missed branch of a few mm
    seg = next(b for b in s.tree.branches if is_segmental(names.name_of(b.id)) and b.length_mm > 6)
    sub = [b.id for b in s.tree.branches if names.segment_of(b.id) == names.name_of(seg.id)]
    pred = s.reference.array & ~np.isin(bmap, sub)
    write_volume(LabelVolume(s.reference.source.to_file_array(pred).astype(np.uint8), ph.label.geometry), pred_p)

    w = _open(qtbot, (ref_p, pred_p))
    model = w.panels.regions.groups_model
    texts = [model.values(r)[1] for r in range(model.rowCount())]
    name = w.case.session.names.names.name_of(seg.id)
    assert name == names.name_of(seg.id)
    assert any(re.fullmatch(rf"FN(-\d+)? - {re.escape(name)} - \d+ mm( \(\d+ parts\))?", t) for t in texts), texts


@pytest.mark.slow
def test_the_status_bar_says_when_a_name_found_no_branch_after_an_edit(window, qtbot):
    w = window
    rul = _named(w, "RUL")
    w.case.name_branch(rul, "RB6")
    tree = w.case.tree
    gone = [rul, *tree.branch(rul).children]
    keep = w.case.session.reference.array & ~np.isin(tree.branch_label_map(), gone)
    with qtbot.waitSignal(w.case.namesNotice, timeout=120000):
        w.case.session.replace_voxels(w.case.session.reference, keep, tool="test")  # re-analysed after the edit
    qtbot.waitUntil(lambda: "found no branch" in w.statusBar().currentMessage(), timeout=5000)
    assert "RB6" in w.statusBar().currentMessage()
