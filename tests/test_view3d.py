"""The 3D view: surfaces coloured by class, picking moves the crosshair, regions, camera, screenshot.

Runs under Xvfb (pytest-xvfb starts it when DISPLAY is unset): pyvistaqt's
QtInteractor needs xcb, not the offscreen platform.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pyvistaqt")

from PySide6.QtCore import Qt  # noqa: E402

from app.review.case import Case, PredictionEntry  # noqa: E402
from app.review.view3d import (  # noqa: E402
    SceneInput,
    View3D,
    branch_detection,
    build_scene,
    overlay_colours,
    region_voxels,
    three_d_supported,
)
from core.surfaces import FN, FP, TP  # noqa: E402
from core.volume import Geometry, IntensityVolume, LabelVolume  # noqa: E402

SHAPE = (24, 32, 32)
GEO = Geometry((0.8, 0.7, 1.25), (-10.0, 5.0, 100.0))


def _masks() -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros(SHAPE, bool)
    ref[4:20, 12:20, 6:22] = True  # reference box
    pred = np.zeros(SHAPE, bool)
    pred[4:20, 12:20, 10:28] = True  # shifted in x: x 6..9 FN, 10..21 TP, 22..27 FP
    return pred, ref


def _case() -> Case:
    case = Case(auto_analyse=False)
    ct = IntensityVolume(np.full(SHAPE, -800, np.int16), GEO, name="ct")
    case.set_ct(ct, name="ct")
    pred, ref = _masks()
    case.set_reference(LabelVolume(ref, GEO, name="reference"))
    case.add_prediction(PredictionEntry("model", LabelVolume(pred, GEO, name="model")))
    return case


@pytest.fixture
def view(qtbot):
    if not three_d_supported():
        pytest.skip("needs an X display (Xvfb), not the offscreen platform")
    case = _case()
    v = View3D(case)
    qtbot.addWidget(v)
    v.resize(500, 420)
    with qtbot.waitSignal(v.sceneReady, timeout=20000):
        v.show()
        v.schedule_rebuild()
    assert v.plotter is not None
    return v


def test_build_scene_outcome_colours_match_the_preset():
    pred, ref = _masks()
    scene = build_scene(SceneInput(GEO, "outcome", pred, ref))
    labels = np.asarray(scene.surface.cell_data["label"])
    assert set(np.unique(labels)) == {TP, FP, FN}
    rgb = scene.face_rgb()
    colours = overlay_colours()
    assert tuple(rgb[labels == FP][0]) == colours["FP"]
    assert tuple(rgb[labels == FN][0]) == colours["FN"]
    assert tuple(rgb[labels == TP][0]) == colours["TP"]
    # FP faces sit over the FP voxels (x index >= 21.5), in world mm
    idx = GEO.world_to_index(np.asarray(scene.surface.cell_centers().points))
    assert idx[labels == FP, 2].min() >= 21.5 - 1e-6
    assert idx[labels == FN, 2].max() <= 9.5 + 1e-6


def test_build_scene_generation_and_detection_modes():
    pred, ref = _masks()
    bmap = np.zeros(SHAPE, np.int32)
    bmap[ref] = 1
    bmap[4:20, 12:20, 14:22] = 2  # branch 2 = right half of the reference
    gens = {1: 0, 2: 3}
    scene = build_scene(SceneInput(GEO, "generation", pred, ref, bmap, gens))
    assert scene.mode == "generation"
    assert set(np.unique(scene.surface.cell_data["label"])) == {1, 4}  # generation + 1
    scene = build_scene(SceneInput(GEO, "detection", pred, ref, bmap, gens, {1: False, 2: True}))
    labels = np.asarray(scene.surface.cell_data["label"])
    idx = GEO.world_to_index(np.asarray(scene.surface.cell_centers().points))
    assert set(np.unique(labels)) == {1, 2}
    assert idx[labels == 1, 2].min() >= 13.5 - 1e-6  # detected branch 2 lies at x >= 14
    # no detection table yet: falls back and says so
    scene = build_scene(SceneInput(GEO, "detection", pred, ref, bmap, gens, None))
    assert scene.mode == "generation" and scene.note


def test_branch_detection_is_the_metrics_own():
    """The 3D view shows core.metrics' own decision (its detection threshold), no second rule."""
    from core.metrics import evaluate
    from core.tree import parse_tree

    ref = np.zeros((40, 40, 40), bool)
    ref[20:38, 19:22, 19:22] = True  # trachea
    for k in range(1, 14):
        ref[20 - k, 19:22, 19 - k : 22 - k] = True
        ref[20 - k, 19:22, 19 + k : 22 + k] = True
    tree = parse_tree(ref, (1.0, 1.0, 1.0))
    pred = ref.copy()
    pred[:14, :, 20:] = False  # most of one bronchus missed
    m = evaluate(pred, ref, (1.0, 1.0, 1.0), tree=tree)
    assert branch_detection(m) == {b.id: b.detected for b in m.branches}
    assert sorted(branch_detection(m).values()) == [False, True, True]
    assert branch_detection(None) is None


def test_pick_on_the_fp_surface_moves_the_crosshair(view, qtbot):
    case = view.case
    view.camera_preset("superior")
    scene = view.scene
    labels = np.asarray(scene.surface.cell_data["label"])
    centres = np.asarray(scene.surface.cell_centers().points)
    normals = np.asarray(scene.surface.compute_normals(cell_normals=True, point_normals=False).cell_data["Normals"])
    # an FP face on the top (superior, +z) cap, well inside it, facing the camera
    top = (labels == FP) & (normals[:, 2] > 0.9)
    target = centres[top][
        np.argmin(np.abs(centres[top, 0] - centres[top, 0].mean()) + np.abs(centres[top, 1] - centres[top, 1].mean()))
    ]
    x, y = view.display_of_world(target)
    with qtbot.waitSignal(view.picked, timeout=5000):
        voxel = view.pick_display(x, y)
    assert voxel is not None and case.cursor == voxel
    pred, ref = _masks()
    assert pred[voxel] and not ref[voxel], "the pick must land in the FP voxels under the point"
    expected = GEO.world_to_index(target)
    assert np.all(np.abs(np.asarray(voxel) - expected) <= 1.0)


def test_pick_world_snaps_to_the_airway(view):
    # a point half a voxel outside the reference's first FN voxel column
    point = GEO.index_to_world((10.0, 15.0, 5.5))
    voxel = view.pick_world(point)
    assert voxel == (10, 15, 6) and view.case.cursor == (10, 15, 6)


def test_region_focus_and_camera_presets(view, qtbot):
    case = view.case
    pred, ref = _masks()
    entry = case.active
    from airway_shapes import error_region

    fp, fn = np.argwhere(pred & ~ref), np.argwhere(ref & ~pred)
    entry.regions = [
        error_region("fp", "FP", voxels=len(fp), focus=(12, 16, 25), bbox=((4, 20), (12, 20), (22, 28))),
        error_region("fn", "FN", voxels=len(fn), focus=(12, 16, 8), bbox=((4, 20), (12, 20), (6, 10))),
    ]
    entry.regions[0].coords, entry.regions[1].coords = fp, fn
    case.go_to_region(1)
    qtbot.waitUntil(lambda: view._region_actor is not None, timeout=5000)
    focal = np.asarray(view.plotter.camera.focal_point)
    fn_centre = GEO.index_to_world(((4 + 19) / 2, (12 + 19) / 2, (6 + 9) / 2))
    assert np.linalg.norm(focal - fn_centre) < 1e-6
    assert case.cursor == (12, 16, 8)
    view.camera_preset("left")
    cam = view.plotter.camera
    assert cam.position[0] > cam.focal_point[0] + 1  # patient's left is +x in LPS
    view.camera_preset("anterior")
    cam = view.plotter.camera
    assert cam.position[1] < cam.focal_point[1] - 1  # anterior is -y


def test_colour_mode_cycle_and_screenshot(view, qtbot, tmp_path):
    case = view.case
    case.branch_map = np.where(case.reference.mask, 1, 0).astype(np.int32)
    case.generations = {1: 0}
    with qtbot.waitSignal(view.sceneReady, timeout=20000) as blocker:
        view.cycle_colour_mode()
    assert blocker.args == ["generation"] and view.mode_combo.currentData() == "generation"
    out = view.save_screenshot(tmp_path / "shot.png")
    from PySide6.QtGui import QImage

    img = QImage(str(out))
    assert not img.isNull() and img.width() > 100
    # at least the view's own resolution (twice by default), with the legend drawn in
    inter = view.plotter.interactor
    assert img.width() >= inter.width() and img.height() >= inter.height()
    plain = QImage(str(view.save_screenshot(tmp_path / "plain.png", legend=False)))
    assert plain.size() == img.size() and plain != img
    # the airway is drawn: the image is not one flat colour
    arr = np.frombuffer(img.convertToFormat(QImage.Format.Format_RGB888).constBits(), np.uint8)
    assert len(np.unique(arr)) > 10


def test_region_voxels_of_engine_regions_match_their_size_and_kind():
    from tests.test_regions_panel import _engine_case

    case = _engine_case()
    pred, ref = case.active.mask, case.reference.mask
    for r in case.active.regions:
        box, m = region_voxels(r, case.ct.shape, pred, ref)
        assert int(m.sum()) == r.voxels
        sub_p, sub_r = pred[box.slices], ref[box.slices]
        kind_map = (sub_p & ~sub_r) if r.kind == "FP" else (sub_r & ~sub_p)
        assert np.all(kind_map[m])


def test_rendered_scene_shows_fp_green_and_fn_red(view, tmp_path):
    from PySide6.QtGui import QImage

    view.camera_preset("anterior")
    # without the legend: its colour squares would count as surface pixels here
    img = QImage(str(view.save_screenshot(tmp_path / "a.png", legend=False))).convertToFormat(
        QImage.Format.Format_RGB888
    )
    arr = np.frombuffer(img.constBits(), np.uint8).reshape(img.height(), img.bytesPerLine())[:, : img.width() * 3]
    rgb = arr.reshape(img.height(), img.width(), 3).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    green = (g > r + 60) & (g > b + 60)
    red = (r > g + 80) & (r > b + 80)
    assert green.sum() > 200 and red.sum() > 200
    # patient's left (+x, the FP end) is on the screen's right when seen from the front
    assert np.argwhere(green)[:, 1].mean() > np.argwhere(red)[:, 1].mean()


@pytest.mark.slow
def test_panels_install_into_the_main_window(qtbot, tmp_path):
    if not three_d_supported():
        pytest.skip("needs an X display (Xvfb)")
    from app import shortcuts
    from app.main_window import MainWindow
    from app.settings import Settings

    case = _case()
    pred, ref = _masks()
    from airway_shapes import error_region

    fp = np.argwhere(pred & ~ref)
    case.active.regions = [
        error_region("fp", "FP", voxels=len(fp), focus=(12, 16, 25), bbox=((4, 20), (12, 20), (22, 28)))
    ]
    case.active.regions[0].coords = fp
    window = MainWindow(case=case, settings=Settings(ephemeral=True), training_tab=False)
    qtbot.addWidget(window)
    window.resize(1200, 800)
    window.show()
    panels = window.panels
    assert window.view3d is panels.view3d and panels.view3d.parent() is not None
    assert {d.objectName() for d in panels.docks.values()} == {"regionsDock", "metricsDock", "segmentDock"}
    for name in ("camera_anterior", "colour_mode_next", "segment", "export_metrics", "screenshot_3d"):
        assert name in window.action_table
    assert shortcuts.conflicts() == []
    qtbot.waitUntil(lambda: panels.view3d.scene is not None and not panels.view3d.busy, timeout=20000)
    # N (the window's action) goes to the region; the 3D camera focuses it
    window.action_table["next_region"].trigger()
    qtbot.waitUntil(lambda: panels.view3d._region_actor is not None, timeout=5000)
    assert case.active_region == 0 and case.cursor == (12, 16, 25)
    focal = np.asarray(panels.view3d.plotter.camera.focal_point)
    assert np.linalg.norm(focal - GEO.index_to_world(((4 + 19) / 2, (12 + 19) / 2, (22 + 27) / 2))) < 1e-6
    # a pick in 3D moves the crosshair the slice views show
    voxel = panels.view3d.pick_world(GEO.index_to_world((8.0, 14.0, 12.0)))
    assert case.cursor == voxel == (8, 14, 12)
    window.action_table["camera_left"].trigger()
    cam = panels.view3d.plotter.camera
    assert cam.position[0] > cam.focal_point[0]
    out = window.save_screenshot(tmp_path / "window.png")
    assert out.exists() and out.stat().st_size > 10000


def click_on_world_point(view, qtbot, point) -> None:
    """A real left click (press + release, no drag) at the widget position showing ``point``."""
    from PySide6.QtCore import QPoint

    x, y = view.display_of_world(point)  # device pixels, origin bottom-left
    widget = view.plotter.interactor
    dpr = widget.devicePixelRatioF()
    pos = QPoint(round(x / dpr), round(widget.height() - 1 - y / dpr))
    qtbot.mousePress(widget, Qt.MouseButton.LeftButton, pos=pos)
    qtbot.mouseRelease(widget, Qt.MouseButton.LeftButton, pos=pos)


def test_mouse_click_on_the_surface_picks_through_qt_events(view, qtbot):
    view.camera_preset("anterior")
    scene = view.scene
    labels = np.asarray(scene.surface.cell_data["label"])
    normals = np.asarray(scene.surface.compute_normals(cell_normals=True, point_normals=False).cell_data["Normals"])
    centres = np.asarray(scene.surface.cell_centers().points)
    front = (labels == FN) & (normals[:, 1] < -0.9)  # FN faces looking at the camera (-y)
    target = centres[front][len(centres[front]) // 2]
    with qtbot.waitSignal(view.picked, timeout=5000) as blocker:
        click_on_world_point(view, qtbot, target)
    voxel = blocker.args[0]
    pred, ref = _masks()
    assert ref[voxel] and not pred[voxel]
    assert np.all(np.abs(np.asarray(voxel) - GEO.world_to_index(target)) <= 1.0)


def _hidpi_child() -> int:
    """Run in a child with QT_SCALE_FACTOR=2: a click at logical coordinates picks the right voxel."""
    import time

    from PySide6.QtCore import QPoint
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    app = QApplication([])
    view = View3D(_case())
    view.resize(400, 360)
    view.show()
    view.rebuild()
    deadline = time.monotonic() + 30
    while (view.scene is None or view.busy) and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)
    widget = view.plotter.interactor
    dpr = widget.devicePixelRatioF()
    view.camera_preset("anterior")
    scene = view.scene
    labels = np.asarray(scene.surface.cell_data["label"])
    normals = np.asarray(scene.surface.compute_normals(cell_normals=True, point_normals=False).cell_data["Normals"])
    centres = np.asarray(scene.surface.cell_centers().points)
    front = (labels == FP) & (normals[:, 1] < -0.9)
    target = centres[front][len(centres[front]) // 2]
    x, y = view.display_of_world(target)
    pos = QPoint(round(x / dpr), round(widget.height() - 1 - y / dpr))
    QTest.mousePress(widget, Qt.MouseButton.LeftButton, pos=pos)
    QTest.mouseRelease(widget, Qt.MouseButton.LeftButton, pos=pos)
    app.processEvents()
    voxel = view.case.cursor
    pred, ref = _masks()
    ok = (
        dpr == 2.0
        and bool(pred[voxel] and not ref[voxel])
        and bool(np.all(np.abs(np.asarray(voxel) - GEO.world_to_index(target)) <= 1.0))
    )
    print(f"dpr={dpr} voxel={voxel} ok={ok}", flush=True)
    view.close()
    return 0 if ok else 1


@pytest.mark.slow
def test_picking_is_right_on_a_hidpi_screen(qtbot):
    import os
    import subprocess
    import sys
    from pathlib import Path

    if not three_d_supported() or not os.environ.get("DISPLAY"):
        pytest.skip("needs an X display (Xvfb)")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "QT_SCALE_FACTOR": "2", "PYTHONPATH": str(root)}
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, tests.test_view3d as t; sys.exit(t._hidpi_child())"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert "dpr=2.0" in proc.stdout


def test_errors_are_their_own_actors_and_tp_can_be_see_through(view):
    names = set(view.plotter.actors)
    assert {"airway_tp", "airway_errors"} <= names
    err = view.plotter.actors["airway_errors"].GetMapper().GetInput()
    assert set(np.unique(np.asarray(err.GetCellData().GetArray("label")))) == {FP, FN}
    view.see_through.setChecked(True)
    assert view.plotter.actors["airway_tp"].GetProperty().GetOpacity() == pytest.approx(0.25)
    assert view.plotter.actors["airway_errors"].GetProperty().GetOpacity() == pytest.approx(1.0)
    # picking still reaches the TP skin
    voxel = view.pick_display(*view.display_of_world(GEO.index_to_world((12.0, 11.5, 15.0))))
    assert voxel is not None


def test_flipping_between_predictions_reuses_built_scenes(view, qtbot):
    case = view.case
    pred, ref = _masks()
    other = pred.copy()
    other[:, :, 10:14] = False
    first_scene = view.scene
    with qtbot.waitSignal(view.sceneReady, timeout=20000):
        case.add_prediction(PredictionEntry("other", LabelVolume(other, GEO, name="other")))
    assert view.scene is not first_scene
    job = view._job
    with qtbot.waitSignal(view.sceneReady, timeout=5000):
        case.set_active(0)
    assert view.scene is first_scene and view._job is job  # shown from the cache, no new job


def test_real_cip_airway_surface_lies_in_the_ct_and_picks_back(shared_data):
    """A real COPDGene label (bits:8:2) through the same path the app uses: canonical grid, surface, pick."""
    from core.io import read_ct, read_label
    from core.surfaces import world_to_voxel
    from core.volume import to_canonical

    ct, _ = to_canonical(read_ct(shared_data / "cip" / "ct-64.nrrd"))
    label, _ = to_canonical(read_label(shared_data / "cip" / "lm-64.nrrd", "bits:8:2"))
    mask = label.mask
    assert mask.sum() == 555
    scene = build_scene(SceneInput(ct.geometry, "outcome", None, mask))
    assert scene.surface.n_cells > 0 and scene.legend[0][0] == "reference"
    corners = ct.geometry.index_to_world(np.array([(0, 0, 0), np.asarray(ct.shape) - 1], float))
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    pts = np.asarray(scene.surface.points)
    half = np.asarray(ct.geometry.spacing) / 2 + 1e-6
    assert np.all(pts >= lo - half) and np.all(pts <= hi + half)
    # every surface point picks back to an airway voxel next to it
    for p in pts[:: max(1, len(pts) // 40)]:
        v = world_to_voxel(p, ct.geometry, ct.shape, mask=mask)
        assert mask[v]
    # the trachea is the top of the tree: its highest surface point is superior (+z in LPS)
    top = pts[np.argmax(pts[:, 2])]
    assert world_to_voxel(top, ct.geometry, ct.shape, mask=mask)[0] == int(np.argwhere(mask)[:, 0].max())


# -- following an item; superseded rebuilds (issue 22) ---------------------------------------------


def _hidden_region_case() -> tuple[Case, np.ndarray]:
    """An FP blob at y 20..24 behind a reference slab at y 8..12 (seen from the front, -y,
    the slab hides it); the prediction holds both."""
    from airway_shapes import error_region

    ref = np.zeros(SHAPE, bool)
    ref[2:22, 8:12, 2:30] = True  # the slab in front
    pred = ref.copy()
    pred[10:14, 20:24, 14:18] = True  # the FP blob behind it
    case = Case(auto_analyse=False)
    case.set_ct(IntensityVolume(np.full(SHAPE, -800, np.int16), GEO, name="ct"), name="ct")
    case.set_reference(LabelVolume(ref, GEO, name="reference"))
    case.add_prediction(PredictionEntry("model", LabelVolume(pred, GEO, name="model")))
    coords = np.argwhere(pred & ~ref)
    r = error_region("FP-0001", "FP", voxels=len(coords), focus=(11, 21, 15), bbox=((10, 14), (20, 24), (14, 18)))
    r.coords, r.key = coords, "FP:blob"
    case.active.regions = [r]
    return case, coords


def test_clear_view_direction_avoids_the_branch_in_front():
    from app.review.view3d import VIEW_DIRECTIONS, clear_view_direction, occluders

    case, _ = _hidden_region_case()
    region = case.regions()[0]
    masks = [case.reference.mask, case.active.mask]
    front = VIEW_DIRECTIONS[0]  # anterior: camera at -y
    assert occluders(region.focus_zyx, front, masks, GEO, region) == 1
    d = clear_view_direction(region, masks, GEO, current=front)
    assert occluders(region.focus_zyx, d, masks, GEO, region) == 0
    # a clear current direction is kept (the camera does not jump between items)
    back = -front
    assert np.allclose(clear_view_direction(region, masks, GEO, current=back), back)


def test_following_an_item_in_3d_leaves_it_unhidden(qtbot):
    """The camera kept its direction when it followed an item, which could leave the item
    behind another branch; it now looks from a side where nothing hides it."""
    from app.review.view3d import occluders

    if not three_d_supported():
        pytest.skip("needs an X display (Xvfb), not the offscreen platform")
    case, _ = _hidden_region_case()
    v = View3D(case)
    qtbot.addWidget(v)
    v.resize(500, 420)
    with qtbot.waitSignal(v.sceneReady, timeout=20000):
        v.show()
        v.schedule_rebuild()
    v.camera_preset("anterior")
    case.go_to_region(0)
    qtbot.waitUntil(lambda: v._region_actor is not None, timeout=10000)
    region = case.regions()[0]
    d = v.view_direction()
    assert d is not None
    assert occluders(region.focus_zyx, d, [case.reference.mask, case.active.mask], GEO, region) == 0
    focal = np.asarray(v.plotter.camera.focal_point)
    assert np.linalg.norm(focal - GEO.index_to_world((11.5, 21.5, 15.5))) < 1e-6


@pytest.mark.slow
def test_a_superseded_3d_rebuild_is_not_reported_as_cancelled(qtbot, monkeypatch):
    """Edits start a new 3D rebuild and stop the running one: the status bar said "3D surfaces:
    cancelled" after edits, a cancel nobody asked for."""
    import threading

    from app.main_window import MainWindow
    from app.review import view3d
    from app.settings import Settings

    if not three_d_supported():
        pytest.skip("needs an X display (Xvfb), not the offscreen platform")
    shape = (40, 64, 64)
    geo = Geometry((0.7, 0.7, 0.8))
    ref = np.zeros(shape, bool)
    ref[5:35, 24:40, 24:40] = True
    pred = np.roll(ref, 3, axis=2)
    case = Case(auto_analyse=False)
    case.set_ct(IntensityVolume(np.full(shape, -800, np.int16), geo, name="ct"), name="ct")
    case.set_reference(LabelVolume(ref, geo, name="reference"))
    case.add_prediction(PredictionEntry("model", LabelVolume(pred, geo, name="model")))
    w = MainWindow(case=case, settings=Settings(ephemeral=True), training_tab=False)
    qtbot.addWidget(w)
    messages: list[str] = []
    w.statusBar().messageChanged.connect(messages.append)
    w.resize(1280, 800)
    w.show()
    v = w.panels.view3d
    qtbot.waitUntil(lambda: v.scene is not None and not v.busy, timeout=30000)

    # the first rebuild after the edit holds until it is stopped, so the next edit always finds it
    # running (the test once relied on a rebuild being slow enough, and a loaded machine decided)
    entered, real = threading.Event(), view3d.build_scene

    def held_once(inp, *, progress=None, cancel=None):  # noqa: ANN001, ANN202 - build_scene's signature
        if not entered.is_set():
            entered.set()
            cancel.wait(60)  # set when a newer rebuild supersedes this one
        return real(inp, progress=progress, cancel=cancel)

    monkeypatch.setattr(view3d, "build_scene", held_once)
    prev = v._job
    case.session.brush("reference", (20, 10, 50), 3, True, form="sphere")  # beside the box
    qtbot.waitUntil(lambda: v._job is not prev and entered.is_set(), timeout=30000)
    held = v._job
    with qtbot.waitSignal(held.finished, timeout=60000):
        case.session.brush("reference", (20, 32, 32), 3, False, form="sphere")  # into it
    qtbot.waitUntil(lambda: v._job is not held and not v.busy and v.scene is not None, timeout=60000)
    assert held.state == "cancelled"  # stopped by the newer rebuild
    assert not [m for m in messages if "cancelled" in m], messages


def test_large_surfaces_are_drawn_coarsened_with_their_labels():
    """A real tree's 251,000 faces cost 100-900 ms a frame in a software renderer (issue 22)."""
    from app.review.view3d import coarsen
    from core.surfaces import labels_surface

    zz, yy, xx = np.mgrid[:60, :60, :60]
    labels = (((zz - 30) ** 2 + (yy - 30) ** 2 + (xx - 30) ** 2) < 25**2).astype(np.uint8)
    labels[30:] *= 2  # two labels, as TP and FN faces
    geo = Geometry((0.7, 0.7, 0.8))
    surf = labels_surface(labels, geo)
    assert surf.n_cells > 20000
    small = coarsen(surf, 0.7, budget=8000)
    assert 0 < small.n_cells <= 8000
    assert set(np.unique(small.cell_data["label"])) == {1, 2}
    b0, b1 = np.asarray(surf.bounds), np.asarray(small.bounds)
    assert np.abs(b0 - b1).max() < 2.0  # the shape stays (within a bin)
    assert coarsen(surf, 0.7, budget=surf.n_cells) is surf  # within budget: untouched


def test_scene_threads_run_at_the_process_priority(qtbot, monkeypatch):
    """A niced scene thread held the GIL while the kernel kept it off a loaded machine's CPU, and
    the GUI thread waited 300-450 ms for it (priority inversion; see ``scene_pool``)."""
    import os
    import threading

    from app.review import view3d

    if not hasattr(os, "getpriority"):
        pytest.skip("no per-thread priority here")
    if not three_d_supported():
        pytest.skip("needs an X display (Xvfb), not the offscreen platform")
    seen: list[tuple[int, bool]] = []

    def spy(*args, **kwargs):
        on_gui_thread = threading.current_thread() is threading.main_thread()
        seen.append((os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), on_gui_thread))
        return build_scene(*args, **kwargs)

    monkeypatch.setattr(view3d, "build_scene", spy)
    v = View3D(_case())
    qtbot.addWidget(v)
    v.resize(500, 420)
    with qtbot.waitSignal(v.sceneReady, timeout=20000):
        v.show()
        v.schedule_rebuild()
    # built where the view builds scenes (a pool thread), at the priority the user gave the app
    assert seen == [(os.getpriority(os.PRIO_PROCESS, os.getpid()), False)]
