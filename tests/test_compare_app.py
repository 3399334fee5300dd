"""The Compare tab: panes side by side with linked slices, zoom and 3D cameras, difference
overlays (A only / B only / both and vs the reference), metrics and plots from an
`airway compare` folder, exports, and the main window's hook."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPointF

from app.compare import CompareTab, PaneEntry
from app.review.slice_view import extract_slice
from app.review.view3d import three_d_supported
from core.io import write_volume
from core.volume import Geometry, IntensityVolume, LabelVolume

SHAPE = (24, 32, 32)
GEO = Geometry((0.8, 0.7, 1.25), (-10.0, 5.0, 100.0))


def _masks():
    ref = np.zeros(SHAPE, bool)
    ref[4:20, 12:20, 6:22] = True
    a = np.zeros(SHAPE, bool)
    a[4:20, 12:20, 10:28] = True  # x 10..21 with ref, 22..27 A only
    b = np.zeros(SHAPE, bool)
    b[4:20, 12:20, 2:16] = True  # x 2..9 B only (vs A), 10..15 both
    c = ref.copy()
    return ref, {"A": a, "B": b, "C": c}


def _entries(preds):
    return [PaneEntry(n, LabelVolume(m, GEO, name=n)) for n, m in preds.items()]


@pytest.fixture
def tab(qtbot):
    t = CompareTab(with_3d=three_d_supported())
    qtbot.addWidget(t)
    t.resize(1200, 800)
    t.show()
    qtbot.waitExposed(t)
    return t


def _pixel(view, zyx):
    """RGB of the displayed slice at a voxel (axial: rows y, columns x)."""
    rgb = view.current_rgb()
    return tuple(int(v) for v in rgb[zyx[1], zyx[2]])


def test_panes_are_linked_and_show_differences(tab, qtbot):
    ref, preds = _masks()
    ct = IntensityVolume(np.full(SHAPE, -800, np.int16), GEO, name="ct")
    tab.set_case("case", _entries(preds), LabelVolume(ref, GEO, name="reference"), ct)
    lay = tab.layout_view
    assert len(lay.panes) == 3
    assert lay.orientation == "coronal"  # the default: the whole tree in one slice
    lay.set_orientation("axial")
    views = lay.slice_views()
    # linked slices and crosshair: one cursor
    lay.state.set_cursor((7, 15, 12))
    assert {v.index for v in views} == {7} and all(v.case.cursor == (7, 15, 12) for v in views)
    views[2].step(3)
    assert lay.state.cursor[0] == 10 and {v.index for v in views} == {10}
    lay.set_orientation("coronal")
    assert {v.orientation for v in views} == {"coronal"} and {v.index for v in views} == {15}
    lay.set_orientation("axial")
    # linked zoom and pan (from the whole slice: the panes open zoomed to the airway)
    views[1].reset_view()
    views[0].zoom_by(2.0, QPointF(50, 60))
    assert {v.zoom for v in views} == {2.0} and len({(v.pan.x(), v.pan.y()) for v in views}) == 1
    views[1].reset_view()
    assert {v.zoom for v in views} == {1.0}

    # difference A vs B: both / A only / B only differ; against the reference: TP/FP/FN
    pa = lay.panes[0]
    pa.against.setCurrentIndex(pa.against.findData("1"))
    assert pa.case.reference is lay.state.predictions[1].label
    assert "A only" in pa.legend.text() and "Dice" in pa.legend.text()
    z = lay.state.cursor[0]
    both, a_only, b_only, none = (z, 15, 12), (z, 15, 25), (z, 15, 4), (z, 4, 4)
    px = {k: _pixel(views[0], v) for k, v in {"both": both, "a": a_only, "b": b_only, "none": none}.items()}
    assert len(set(px.values())) == 4
    pa.against.setCurrentIndex(pa.against.findData("reference"))
    px_ref = {k: _pixel(views[0], v) for k, v in {"tp": (z, 15, 12), "fp": a_only, "fn": (z, 15, 7)}.items()}
    assert px_ref["tp"] == px["both"] and px_ref["fp"] == px["a"] and px_ref["fn"] == px["b"]
    pa.against.setCurrentIndex(pa.against.findData("none"))
    assert pa.case.reference is None and _pixel(views[0], a_only) == _pixel(views[0], both)
    # every view draws its own prediction
    assert _pixel(views[2], a_only) == px["none"] and _pixel(views[1], b_only) != px["none"]
    np.testing.assert_array_equal(extract_slice(lay.state.predictions[1].mask, "axial", z), preds["B"][z])


@pytest.mark.skipif(not three_d_supported(), reason="needs an X display (Xvfb)")
def test_3d_cameras_are_one(tab, qtbot):
    ref, preds = _masks()
    tab.set_case("case", _entries(dict(list(preds.items())[:2])), LabelVolume(ref, GEO))
    v3 = tab.layout_view.view3ds()
    assert len(v3) == 2
    qtbot.waitUntil(lambda: all(v.scene is not None and not v.busy for v in v3), timeout=30000)
    cams = [v.plotter.renderer.GetActiveCamera() for v in v3]
    assert cams[0].GetAddressAsString("vtkCamera") == cams[1].GetAddressAsString("vtkCamera")
    tab.layout_view.camera_preset("left")
    assert cams[1].GetPosition()[0] > cams[1].GetFocalPoint()[0]


def test_no_reference_and_no_ct_compares_predictions(tab):
    _, preds = _masks()
    tab.set_case("pair", _entries({"A": preds["A"], "B": preds["B"]}))
    lay = tab.layout_view
    assert [p.case.against for p in lay.panes] == ["1", "0"]
    assert "no reference" in lay.info.text() and "no CT" in lay.info.text()
    assert lay.redraw_all() >= 0 and lay.slice_views()[0].current_rgb() is not None


def _compare_folder(tmp_path):
    from core.compare import compare_folders, write_outputs

    ref, preds = _masks()
    for d in ("ref", "A", "B"):
        (tmp_path / d).mkdir()
    for i in range(3):
        shift = np.roll(ref, i, axis=2)
        write_volume(LabelVolume(shift.astype(np.uint8), GEO), tmp_path / "ref" / f"c{i}.nii.gz")
        write_volume(LabelVolume(np.roll(preds["A"], i, axis=2), GEO), tmp_path / "A" / f"c{i}_0000.nii.gz")
        write_volume(LabelVolume(np.roll(preds["C"], i, axis=2), GEO), tmp_path / "B" / f"c{i}.nii.gz")
    res = compare_folders(tmp_path / "ref", {"A": tmp_path / "A", "B": tmp_path / "B"})
    write_outputs(res, tmp_path / "out", snapshots=False)
    return tmp_path / "out"


@pytest.mark.slow
def test_opening_a_compare_folder_restores_it_and_exports(tab, qtbot, tmp_path):
    out = _compare_folder(tmp_path)
    tab.open_folder(out)
    m = tab.metrics
    assert m.summary.rowCount() == 2 and m.per_case.rowCount() == 6 and m.tests.rowCount() > 0
    assert "\u00b1" in m.summary.item(0, 2).text()
    assert tab.case_combo.count() == 3 and tab.selected_models() == ["A", "B"]
    qtbot.waitUntil(lambda: len(tab.layout_view.panes) == 2 and tab.layout_view.state.case_name == "c0", timeout=20000)
    assert tab.layout_view.state.reference is not None
    assert np.isfinite(m.plot_view.series["dsc:A"]).any() and np.isfinite(m.plot_view.series["bd:B"]).any()
    files = m.export_csv(tmp_path / "csv")
    assert {p.name for p in files} >= {"metrics.csv", "summary.csv", "tests.csv"}
    png = m.export_png(tmp_path / "fig.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    html = m.export_report(tmp_path / "r.html").read_text()
    assert "data:image/png;base64," in html
    tab.case_combo.setCurrentIndex(2)
    tab.show_selected()
    qtbot.waitUntil(lambda: tab.layout_view.state.case_name == "c2", timeout=20000)


def test_main_window_hook(qtbot, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    from app.main_window import MainWindow
    from app.review.case import Case, PredictionEntry
    from app.settings import Settings

    monkeypatch.setattr(QMessageBox, "exec", lambda box: QMessageBox.StandardButton.Ok)
    ref, preds = _masks()
    case = Case(auto_analyse=False)
    case.set_ct(IntensityVolume(np.full(SHAPE, -800, np.int16), GEO, name="ct"), name="ct")
    case.set_reference(LabelVolume(ref, GEO, name="reference"))
    for n in ("A", "B"):
        case.add_prediction(PredictionEntry(n, LabelVolume(preds[n], GEO, name=n)))
    w = MainWindow(case=case, settings=Settings(ephemeral=True), training_tab=False)
    qtbot.addWidget(w)
    assert w.tabs.indexOf(w.compare_tab) >= 0
    assert "compareCasePredictions" in {a.objectName() for a in w.tools_menu.actions()}
    w.compare_actions["case"].trigger()
    assert w.tabs.currentWidget() is w.compare_tab
    state = w.compare_tab.layout_view.state
    # the panes show the case once it is prepared, in a job
    qtbot.waitUntil(lambda: [p.name for p in state.predictions] == ["A", "B"], timeout=30000)
    w.cancel_jobs()


def test_sagittal_mask_reads_equal_the_plain_array():
    from app.compare.state import SagittalMask

    rng = np.random.default_rng(1)
    m = np.zeros((30, 40, 50), bool)
    m[5:25, 8:30, 10:40] = rng.random((20, 22, 30)) > 0.5
    s = SagittalMask.wrap(m)
    for key in [
        (slice(0, 30), slice(0, 40), 20),
        (slice(3, 27), slice(10, 35), 10),
        (slice(0, 30), slice(0, 40), 5),
        (slice(6, 9), slice(0, 12), 39),
        (slice(0, 30), slice(0, 40), 45),
        (slice(None), slice(None), -11),
        (4, slice(2, 30), slice(0, 50)),
        (slice(0, 30), 12, slice(3, 44)),
    ]:
        np.testing.assert_array_equal(s[key], m[key])
    np.testing.assert_array_equal(s[slice(0, 30, 2), slice(0, 40), 20], m[0:30:2, :, 20])
    assert s.sum() == m.sum() and np.array_equal(np.asarray(s), m)
