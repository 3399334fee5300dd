"""Editing in the app: region corrections, undo/redo, brush strokes, stale panels and caches.

Edits change label arrays in place, so these tests check that no slice image
or 3D scene input from before an edit is ever shown after it.
"""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt

from app.review.case import Case, PredictionEntry
from app.review.slice_view import DisplayState, SliceView, voxel_to_display
from core.box import Box
from core.metrics import evaluate
from core.volume import LabelVolume


def _case(qtbot, tiny_demo) -> Case:
    case = Case(auto_analyse=True)
    ph = tiny_demo.phantom
    case.set_ct(ph.ct, name="ct")
    case.set_reference(LabelVolume(tiny_demo.reference.mask.copy(), ph.ct.geometry, name="reference"))
    case.add_prediction(
        PredictionEntry("model", LabelVolume(tiny_demo.prediction.mask.copy(), ph.ct.geometry, name="model"))
    )
    qtbot.waitUntil(lambda: bool(case.active.regions) and not case.busy, timeout=60000)
    return case


def _view(qtbot, case, orientation="axial") -> SliceView:
    v = SliceView(case, orientation, DisplayState())
    qtbot.addWidget(v)
    v.resize(300, 300)
    v.show()
    return v


@pytest.mark.slow
def test_accepting_a_region_never_shows_a_stale_slice(qtbot, tiny_demo):
    case = _case(qtbot, tiny_demo)
    fp = next(i for i, g in enumerate(case.regions()) if g.kind == "FP")
    case.go_to_region(fp)
    view = _view(qtbot, case)
    from app.review.metrics_panel import MetricsPanel

    panel = MetricsPanel(case)
    qtbot.addWidget(panel)
    before = view.current_rgb().copy()
    region = case.regions()[fp]
    with qtbot.waitSignal(case.labelChanged) as sig:
        assert case.accept_region(fp, "FP")
    assert sig.args[0] == "reference"
    after = view.current_rgb()
    assert not np.array_equal(before, after)
    fresh = _view(qtbot, case)  # no cache at all: what the edited arrays look like
    assert np.array_equal(after, fresh.current_rgb())
    assert case.reference.mask[tuple(region.coords.astype(int).T)].all()
    assert case.stale  # metrics and regions lag until the debounced re-analysis
    assert "Stale" in panel.status.text()
    qtbot.waitUntil(lambda: not case.stale and not case.busy, timeout=60000)
    assert "Stale" not in panel.status.text()
    scratch = evaluate(case.active.mask, case.reference.mask, case.reference.spacing_zyx)
    assert case.active.metrics.summary() == scratch.summary()
    assert region.key not in {g.key for g in case.regions()}
    assert case.session.status(0, region.key) == "reference_error"


def test_undo_redo_restore_bytes_and_refresh_views(qtbot, tiny_demo):
    case = _case(qtbot, tiny_demo)
    original = case.reference.mask.tobytes()
    fn = next(i for i, g in enumerate(case.regions()) if g.kind == "FN")
    case.go_to_region(fn)
    view = _view(qtbot, case)
    shown = view.current_rgb().copy()
    assert case.accept_region(fn, "FN")
    edited = case.reference.mask.tobytes()
    assert edited != original
    assert not case.accept_region(fn, "FP")  # A on an FN region does nothing
    with qtbot.waitSignal(case.historyChanged):
        assert case.undo()
    assert case.reference.mask.tobytes() == original
    assert np.array_equal(view.current_rgb(), shown)
    case.redo()
    assert case.reference.mask.tobytes() == edited


def test_scene_input_changes_with_every_edit(qtbot, tiny_demo):
    from app.review.view3d import View3D, _same_input

    case = _case(qtbot, tiny_demo)
    view = View3D(case)
    qtbot.addWidget(view)
    first = view.scene_input()
    case.session.brush("reference", case.cursor, 2, True, form="sphere")
    second = view.scene_input()
    assert second.reference is first.reference  # edited in place...
    assert not _same_input(first, second)  # ...yet never taken for the cached scene
    assert view._rebuild_timer.isActive() or view.busy
    qtbot.waitUntil(lambda: not view.busy, timeout=60000)


def test_brush_stroke_in_a_slice_view_is_one_undo_step(qtbot, tiny_demo):
    from app.review.edit_tools import EditTools

    case = _case(qtbot, tiny_demo)
    view = _view(qtbot, case)
    tools = EditTools(case)
    view.tools = tools
    tools.set_mode("brush")
    z = case.cursor[0]
    before = case.reference.mask.copy()
    rect = view.image_rect()

    def widget_point(y, x):
        row, col = voxel_to_display("axial", (z, y, x), case.ct.shape)
        h, w = before.shape[1], before.shape[2]
        return QPointF(rect.left() + (col + 0.5) * rect.width() / w, rect.top() + (row + 0.5) * rect.height() / h)

    start, end = widget_point(10, 10), widget_point(10, 30)
    qtbot.mousePress(view, Qt.MouseButton.LeftButton, pos=start.toPoint())
    for t in np.linspace(0, 1, 6)[1:]:
        p = start + (end - start) * float(t)
        qtbot.mouseMove(view, pos=p.toPoint())
    qtbot.mouseRelease(view, Qt.MouseButton.LeftButton, pos=end.toPoint())
    painted = case.reference.mask & ~before
    assert painted.any() and set(np.argwhere(painted)[:, 0]) == {z}  # a disc stays in its slice
    assert len(case.session.history.undo_stack) == 1
    assert case.session.edit_log[-1]["tool"] == "brush"
    case.undo()
    assert np.array_equal(case.reference.mask, before)
    tools.set_mode("brush")  # the same tool again: back to the crosshair
    assert tools.mode == "navigate"


@pytest.mark.slow
def test_statuses_follow_regions_through_reanalysis(qtbot, tiny_demo):
    case = _case(qtbot, tiny_demo)
    regs = case.regions()
    assert len(regs) >= 3
    case.set_region_status(len(regs) - 1, "confirmed")
    kept = regs[-1].key
    fp = next(i for i, g in enumerate(regs) if g.kind == "FP" and g.key != kept)
    case.accept_region(fp, "FP")
    qtbot.waitUntil(lambda: not case.stale and not case.busy, timeout=60000)
    new = case.regions()
    i = [g.key for g in new].index(kept)
    assert case.active.status(i) == "confirmed"
    assert case.active.reviewed_count() == 1


def test_the_window_replays_a_recovery_file(qtbot, tmp_path, tiny_demo):
    from app.main_window import MainWindow
    from app.settings import Settings
    from core.io import write_volume
    from core.review import Session

    ph = tiny_demo.phantom
    ct = write_volume(ph.ct, tmp_path / "ct.nii.gz")
    ref = write_volume(LabelVolume(tiny_demo.reference.mask.astype(np.uint8), ph.ct.geometry), tmp_path / "ref.nii.gz")
    pred = write_volume(
        LabelVolume(tiny_demo.prediction.mask.astype(np.uint8), ph.ct.geometry), tmp_path / "pred.nii.gz"
    )
    s = Session.load(ct, ref, [pred], recovery_dir=tmp_path / "rec")
    s.analyse()
    first = s.regions(0)[0]
    key = first.key
    s.accept(key)
    s.brush("reference", tuple(n // 2 for n in ph.ct.shape), 3, True, form="sphere")
    path = s.autosave()
    edited = s.reference.array.copy()

    w = MainWindow(settings=Settings(ephemeral=True), install_panels=False, training_tab=False)
    qtbot.addWidget(w)
    w.recover_edits(path)
    qtbot.waitUntil(lambda: w.case.reference is not None and w.case.session.modified, timeout=60000)
    assert np.array_equal(w.case.reference.mask, edited)
    tool = "add_to_reference" if first.kind == "FP" else "remove_from_reference"
    assert [e["tool"] for e in w.case.session.edit_log] == [tool, "brush"]
    qtbot.waitUntil(lambda: bool(w.case.regions()) and not w.case.stale and not w.case.busy, timeout=60000)
    assert w.case.session.status(0, key) == "reference_error"
    with qtbot.waitSignal(w.labelSaved, timeout=60000) as saved:
        w.save_reference()  # in a job: the window stays live while it compresses
    assert saved.args[0] == ref and not path.exists() and (tmp_path / "ref.orig.nii.gz").exists()


@pytest.mark.parametrize("orientation", ["axial", "coronal", "sagittal"])
@pytest.mark.parametrize("outline", [False, True])
def test_a_patched_slice_equals_a_full_render(qtbot, tiny_demo, orientation, outline):
    case = _case(qtbot, tiny_demo)
    display = DisplayState()
    display.update(outline=outline)
    view = SliceView(case, orientation, display)
    qtbot.addWidget(view)
    view.current_rgb()
    centre = case.cursor
    for k, (layer, value) in enumerate([("reference", True), ("model", True), ("reference", False), ("model", False)]):
        case.session.brush(layer, tuple(c + k for c in centre), 3, value, form="sphere")
        assert view._key() in view._cache  # patched in place of a full render
        fresh = SliceView(case, orientation, display)
        qtbot.addWidget(fresh)
        assert np.array_equal(view.current_rgb(), fresh.current_rgb())


def test_a_format_1_project_maps_statuses_by_position_once(qtbot, tmp_path, tiny_demo):
    import json

    from app.review.case import apply_project, load_project
    from app.workers import run_sync
    from core.io import write_volume

    ph = tiny_demo.phantom
    write_volume(ph.ct, tmp_path / "ct.nii.gz")
    write_volume(LabelVolume(tiny_demo.reference.mask.astype(np.uint8), ph.ct.geometry), tmp_path / "ref.nii.gz")
    write_volume(LabelVolume(tiny_demo.prediction.mask.astype(np.uint8), ph.ct.geometry), tmp_path / "pred.nii.gz")
    (tmp_path / "old.json").write_text(
        json.dumps(
            {
                "format": "airway-studio-project",
                "version": 1,
                "ct": "ct.nii.gz",
                "reference": "ref.nii.gz",
                "predictions": [{"name": "pred", "path": "pred.nii.gz", "statuses": {"1": "flagged"}}],
            }
        )
    )
    loaded, data = run_sync(load_project, tmp_path / "old.json")
    case = Case(auto_analyse=True)
    apply_project(case, loaded, data, str(tmp_path / "old.json"))
    qtbot.waitUntil(lambda: bool(case.regions()) and not case.busy, timeout=60000)
    assert [case.active.status(i) for i in range(3)] == ["unreviewed", "flagged", "unreviewed"]
    assert case.active.statuses == {case.regions()[1].key: "flagged"}


@pytest.mark.slow
def test_review_analysis_in_a_child_process_equals_in_process(tiny_demo):
    from app.review.case import run_review_analysis
    from core.review import Session

    g = tiny_demo.phantom.ct.geometry
    s = Session(
        reference=LabelVolume(tiny_demo.reference.mask.copy(), g),
        predictions=[LabelVolume(tiny_demo.prediction.mask.copy(), g, name="p")],
    )
    here, tree_here = run_review_analysis(s.analysis_job(copy=True), in_process=False)
    there, tree_there = run_review_analysis(s.analysis_job(copy=True), in_process=True)
    assert here.predictions["p"].metrics.summary() == there.predictions["p"].metrics.summary()
    assert [r.key for r in here.predictions["p"].regions] == [r.key for r in there.predictions["p"].regions]
    assert np.array_equal(tree_here.branch_map, tree_there.branch_map)


def test_the_worker_copies_a_live_analysis_job_and_an_edit_meanwhile_leaves_it_stale(tiny_demo):
    from app.review.analysis_runner import run_review_analysis
    from core.review import Session

    ref = tiny_demo.reference.with_array(tiny_demo.reference.mask.copy())  # edited below: not the shared one
    s = Session(tiny_demo.phantom.ct, ref, [tiny_demo.prediction])
    job = s.analysis_job(copy=False)  # what the window makes: no 100 MB copy on the GUI thread
    assert not job.detached and job.reference is s.reference.array
    s.paint("reference", Box((0, 0, 0), (2, 2, 2)), np.ones((2, 2, 2), bool), True)  # before the worker ran
    result, tree = run_review_analysis(job, in_process=False)
    assert job.detached and job.reference is not s.reference.array and tree is not None
    s.apply_analysis(result)
    assert s.is_stale(0)  # tagged with the revision before the edit: it is computed again
    s.analyse()
    assert not s.is_stale(0)
