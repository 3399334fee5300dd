"""Error-region navigator: rows, sorting, going to a region, statuses and the counter."""

from __future__ import annotations

import numpy as np
import pytest
from airway_shapes import error_region
from PySide6.QtCore import Qt

from app.review.case import STATUS_LABELS, Case, PredictionEntry
from app.review.regions_panel import CATEGORY_FILTERS, COLUMNS, FILTERS, RegionsPanel, region_kind, region_volume_mm3
from core.box import Box
from core.volume import Geometry, IntensityVolume, LabelVolume

SHAPE = (20, 24, 24)
GEO = Geometry((0.5, 0.5, 2.0))


def _case_with_regions() -> Case:
    case = Case(auto_analyse=False)
    case.set_ct(IntensityVolume(np.zeros(SHAPE, np.int16), GEO, name="ct"))
    ref = np.zeros(SHAPE, bool)
    ref[2:18, 10:14, 10:14] = True
    case.set_reference(LabelVolume(ref, GEO, name="reference"))
    case.add_prediction(PredictionEntry("model", LabelVolume(ref.copy(), GEO, name="model")))
    case.active.regions = [
        error_region("FN-a", "FN", "missed_branch", 40, voxel_mm3=0.5, generation=3, centroid=(5, 6, 7)),
        error_region("FP-b", "FP", "leakage", 200, voxel_mm3=0.5, centroid=(10, 11, 12)),
        error_region("FP-c", "FP", "false_branch", 8, voxel_mm3=0.5, generation=5, centroid=(15, 3, 4)),
    ]
    case.regionsChanged.emit(0)
    return case


@pytest.fixture
def panel(qtbot):
    case = _case_with_regions()
    p = RegionsPanel(case, grouped=False)  # raw regions: these tests are about the region table
    qtbot.addWidget(p)
    p.show()
    return p


def _column(panel: RegionsPanel, name: str) -> list[str]:
    c = panel.source.columns.index(name)
    return [panel.proxy.index(r, c).data() for r in range(panel.proxy.rowCount())]


def test_rows_show_kind_category_size_generation(panel):
    assert panel.proxy.rowCount() == 3
    assert _column(panel, "Kind") == ["FN", "FP", "FP"]
    assert _column(panel, "Category") == ["missed branch", "leakage", "false branch"]
    # mm3 = voxels x 0.5 x 0.5 x 2.0
    assert _column(panel, "Size (mm³)") == ["20.0", "100.0", "4.0"]
    assert _column(panel, "Gen.") == ["3", "", "5"]
    assert panel.counter.text().startswith("Reviewed 0 / 3")


def test_sorting_by_size_is_numeric(panel):
    panel.table.sortByColumn(COLUMNS.index("Size (mm³)"), Qt.SortOrder.DescendingOrder)
    assert _column(panel, "#") == ["2", "1", "3"]
    panel.table.sortByColumn(COLUMNS.index("Gen."), Qt.SortOrder.AscendingOrder)
    assert _column(panel, "#") == ["2", "1", "3"]  # no generation sorts first


def test_click_goes_to_region_and_next_previous_select_rows(panel, qtbot):
    case = panel.case
    panel.table.sortByColumn(COLUMNS.index("Size (mm³)"), Qt.SortOrder.AscendingOrder)  # rows: 3, 1, 2
    row = panel.region_row(0)
    rect = panel.table.visualRect(panel.proxy.index(row, 1))
    qtbot.mouseClick(panel.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert case.active_region == 0 and case.cursor == (5, 6, 7)
    case.step_region(1)  # N
    assert case.cursor == (10, 11, 12)
    assert panel.table.selectionModel().selectedRows()[0].row() == panel.region_row(1)
    case.step_region(-1)
    case.step_region(-1)  # Shift+N wraps to the last region
    assert case.active_region == 2 and case.cursor == (15, 3, 4)


def test_statuses_update_table_counter_and_filter(panel):
    case = panel.case
    case.go_to_region(1)
    panel.mark("confirmed")
    assert case.active.status(1) == "confirmed"
    assert _column(panel, "Status")[panel.region_row(1)] == "Confirmed error"
    assert panel.counter.text().startswith("Reviewed 1 / 3")
    case.set_region_status(2, "reference_error")  # as key 3 does through the main window
    assert panel.counter.text().startswith("Reviewed 2 / 3")
    panel.filter_combo.setCurrentIndex([k for k, _ in FILTERS].index("unreviewed"))
    assert _column(panel, "#") == ["1"]
    panel.filter_combo.setCurrentIndex(1)  # FP only
    assert sorted(_column(panel, "#")) == ["2", "3"]


def test_switching_prediction_reloads(panel):
    case = panel.case
    case.add_prediction(PredictionEntry("other", LabelVolume(case.reference.mask.copy(), GEO, name="other")))
    assert case.active_index == 1
    assert panel.proxy.rowCount() == 0
    assert "Computing" in panel.counter.text() or "Needs" in panel.counter.text()
    case.set_active(0)
    assert panel.proxy.rowCount() == 3


def test_region_helpers_read_core_regions():
    assert region_kind(error_region("x", "FN")) == "FN"
    assert region_volume_mm3(error_region("x", voxels=7, voxel_mm3=0.5), 2.0) == 3.5


def _engine_case() -> Case:
    """A Y-shaped tree, a prediction missing one bronchus's tip and with a leak: real core.regions output."""
    from scipy import ndimage

    from core.metrics import evaluate
    from core.regions import find_error_regions
    from core.tree import parse_tree

    shape, geo = (40, 40, 40), Geometry((0.7, 0.7, 1.0))
    c = np.zeros(shape, bool)
    c[20:38, 20, 20] = True
    for k in range(1, 14):
        c[20 - k, 20, 20 - k] = True
        c[20 - k, 20, 20 + k] = True
    ref = ndimage.binary_dilation(c, iterations=2)
    pred = ref.copy()
    pred[:12, :, 26:] = False  # FN: the tip of one bronchus
    pred[28:32, 20:30, 20:23] = True  # FP: a leak off the trachea
    case = Case(auto_analyse=False)
    case.set_ct(IntensityVolume(np.zeros(shape, np.int16), geo, name="ct"))
    case.set_reference(LabelVolume(ref, geo, name="reference"))
    case.tree = parse_tree(ref, geo.spacing_zyx)
    case.add_prediction(PredictionEntry("model", LabelVolume(pred, geo, name="model")))
    case.active.metrics = evaluate(pred, ref, geo.spacing_zyx, tree=case.tree)
    case.active.regions = find_error_regions(pred, ref, case.tree, geo.spacing_zyx, geometry=geo)
    case.regionsChanged.emit(0)
    return case


def test_real_engine_regions_are_listed(qtbot):
    case = _engine_case()
    p = RegionsPanel(case)
    qtbot.addWidget(p)
    regions = case.active.regions
    assert p.grouped and p.proxy.rowCount() >= 2  # review items by default
    p.raw_switch.setChecked(True)
    assert not p.grouped
    assert p.proxy.rowCount() == len(regions) >= 2
    kinds = _column(p, "Kind")
    assert "FN" in kinds and "FP" in kinds
    assert _column(p, "ID") == [r.id for r in regions]
    assert _column(p, "Voxels") == [str(r.voxels) for r in regions]
    assert _column(p, "Size (mm³)") == [f"{r.volume_mm3:.1f}" for r in regions]
    assert _column(p, "Category")[0] == regions[0].category.replace("_", " ")
    case.step_region(1)
    assert p.table.selectionModel().selectedRows()[0].row() == 0 and case.active_region == 0


def _fragment_case() -> Case:
    """One missed branch, one leak and many one-voxel boundary fragments along two branches."""
    from core.regions import ErrorRegion

    case = Case(auto_analyse=False)
    shape = (40, 40, 40)
    geo = Geometry((1.0, 1.0, 1.0))
    case.set_ct(IntensityVolume(np.zeros(shape, np.int16), geo, name="ct"))
    ref = np.zeros(shape, bool)
    ref[5:35, 18:22, 18:22] = True
    case.set_reference(LabelVolume(ref, geo, name="reference"))
    case.add_prediction(PredictionEntry("model", LabelVolume(ref.copy(), geo, name="model")))

    def reg(kind, cat, branch, voxels, at):
        box = tuple((a, a + 1) for a in at)
        c = tuple(float(a) for a in at)
        # statuses are kept by region key (core.review): every hand-made region gets its own
        return ErrorRegion(
            "", kind, cat, voxels, float(voxels), c, c, box, branch, branch, 1.0, 1.0, 1.0, 0, key=f"{kind}-{cat}-{at}"
        )

    regs = [reg("FN", "missed_branch", 3, 30, (30, 20, 20)), reg("FP", "leakage", 2, 50, (20, 25, 20))]
    regs += [reg("FP", "boundary_dilation", 1, 2, (6 + k, 17, 20)) for k in range(12)]  # 24 mm³: shown
    regs += [reg("FN", "boundary_miss", 2, 1, (10 + k, 18, 18)) for k in range(3)]  # 3 mm³: small
    from core.regions import sort_regions

    case.active.regions = sort_regions(regs)
    case.regionsChanged.emit(0)
    return case


def test_groups_by_default_in_review_priority_with_filters(qtbot):
    case = _fragment_case()
    p = RegionsPanel(case)
    qtbot.addWidget(p)
    assert p.grouped
    cats = _column(p, "Category")
    assert cats == ["missed branch", "leakage", "boundary dilation"]  # the small boundary group is hidden
    assert _column(p, "Parts") == ["1", "1", "12"]
    assert "12 parts" in _column(p, "Item")[2]
    p.small_switch.setChecked(True)
    assert p.proxy.rowCount() == 4
    p.category_combo.setCurrentIndex([k for k, _ in CATEGORY_FILTERS].index("boundary"))
    assert _column(p, "Category") == ["boundary dilation", "boundary miss"]
    p.min_size.setValue(10.0)
    assert _column(p, "Category") == ["boundary dilation"]
    p.category_combo.setCurrentIndex(0)
    p.min_size.setValue(0.0)
    p.max_gen.setValue(2)
    assert "missed branch" not in _column(p, "Category")  # its branch is generation 3
    p.max_gen.setValue(-1)
    p.raw_switch.setChecked(True)
    assert p.proxy.rowCount() == len(case.active.regions) == 17
    assert "FP" in p.counter.text()


def test_step_and_mark_go_through_items_and_mark_every_fragment(qtbot):
    case = _fragment_case()
    p = RegionsPanel(case)
    qtbot.addWidget(p)
    boxes = []
    case.focusBoxRequested.connect(boxes.append)
    p.step(1)
    assert case.regions()[case.active_region].category == "missed_branch"
    p.step(1)
    p.step(1)
    g = p.groups_model.groups[p._group_row]
    assert g.category == "boundary_dilation" and case.active_region in g.indices
    assert boxes[-1] == Box((6, 17, 20), (18, 18, 21))  # the whole group's box, not one fragment's
    p.mark("confirmed")
    assert all(case.active.status(i) == "confirmed" for i in g.indices)
    assert _column(p, "Status")[p.group_row(p._group_row)] == STATUS_LABELS["confirmed"]
    case.set_region_status(g.indices[0], "unreviewed")
    assert _column(p, "Status")[p.group_row(p._group_row)] == "Partly reviewed"
    p.step(1)  # wraps to the first item
    assert case.regions()[case.active_region].category == "missed_branch"
    p.step(-1)
    assert case.regions()[case.active_region].category == "boundary_dilation"


def test_n_in_the_window_zooms_every_slice_view_onto_the_item(qtbot, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    from app.main_window import MainWindow
    from app.settings import Settings

    monkeypatch.setattr(QMessageBox, "exec", lambda box: QMessageBox.StandardButton.Discard)
    case = _fragment_case()
    w = MainWindow(case, settings=Settings(ephemeral=True), training_tab=False)
    qtbot.addWidget(w)
    w.resize(1280, 800)
    w.show()
    qtbot.waitUntil(lambda: w.views["axial"].width() > 100, timeout=10000)
    w.action_table["next_region"].trigger()
    w.action_table["next_region"].trigger()
    reg = case.regions()[case.active_region]
    assert reg.category == "leakage"  # the navigator's order: missed branch, then leakage
    for o, v in w.views.items():
        assert v.zoom > 1.0, o
        centre = v.voxel_to_widget(reg.centroid_zyx)
        assert (
            abs(centre.x() - v.width() / 2) < v.width() * 0.1 and abs(centre.y() - v.height() / 2) < v.height() * 0.1
        ), o
    assert case.cursor == tuple(int(c) for c in reg.centroid_zyx)
    qtbot.waitUntil(lambda: not w.busy and not case.busy and not w.panels.view3d.busy, timeout=60000)
    case._set_modified(False)
    w.close()


# -- ids and selection across re-analyses (issue 22) ---------------------------------------------


def _three_cuts_window(qtbot):
    """A Y-shaped reference; the prediction misses three slabs of different sizes (three FN
    missed-branch items: the trachea's largest, then the left, then the right bronchus)."""
    from airway_shapes import Y_SEGMENTS, tube

    from app.main_window import MainWindow
    from app.settings import Settings

    shape = (48, 80, 80)
    geo = Geometry((0.6, 0.6, 0.5))
    ref = tube(shape, Y_SEGMENTS)
    pred = ref.copy()
    pred[10:14] = False  # trachea
    pred[33:36, :, :36] = False  # left bronchus
    pred[38:40, :, 45:] = False  # right bronchus
    case = Case()
    case.set_ct(IntensityVolume(np.full(shape, -900, np.int16), geo, name="ct"))
    case.set_reference(LabelVolume(ref, geo, name="reference"))
    case.add_prediction(PredictionEntry("model", LabelVolume(pred, geo, name="model")))
    w = MainWindow(case=case, settings=Settings(ephemeral=True), training_tab=False)
    qtbot.addWidget(w)
    w.resize(1280, 800)
    w.show()
    qtbot.waitExposed(w)
    w.activateWindow()
    qtbot.waitUntil(w.isActiveWindow)
    _wait_analysed(qtbot, w)
    return w


def _wait_analysed(qtbot, w):
    qtbot.waitUntil(lambda: w.case.active.regions is not None and not w.case.stale and not w.case.busy, timeout=60000)


def _fn_ids(case) -> list[str]:
    return sorted(r.id for r in case.regions() if r.kind == "FN" and r.category == "missed_branch")


def _selected_item(panel) -> str:
    rows = panel.table.selectionModel().selectedRows()
    if not rows:
        return ""
    return str(panel.proxy.index(rows[0].row(), panel.source.columns.index("Item")).data())


@pytest.mark.slow
def test_ids_and_the_selected_row_survive_a_re_analysis(qtbot):
    """After R, FN-0003 stayed FN-0003 (it became FN-0002, and the highlighted row was another item)."""
    from PySide6.QtCore import Qt

    w = _three_cuts_window(qtbot)
    case, panel = w.case, w.panels.regions
    assert _fn_ids(case) == ["FN-0001", "FN-0002", "FN-0003"]
    w.views["axial"].setFocus()
    qtbot.keyClick(w, Qt.Key.Key_N)
    qtbot.keyClick(w, Qt.Key.Key_N)
    assert case.regions()[case.active_region].id == "FN-0002"
    assert _selected_item(panel).startswith("FN-0002")
    qtbot.keyClick(w, Qt.Key.Key_R)  # remove it from the reference: the next analysis finds it no more
    qtbot.waitUntil(lambda: case.stale)
    assert "stale" in panel.counter.text()  # the rows are the last analysis's until the new one lands
    _wait_analysed(qtbot, w)
    assert "stale" not in panel.counter.text()
    assert _fn_ids(case) == ["FN-0001", "FN-0003"]
    assert _selected_item(panel) == "" and case.active_region == -1  # the corrected item is gone
    qtbot.keyClick(w, Qt.Key.Key_N)  # N goes on with the item after it
    assert case.regions()[case.active_region].id == "FN-0003"
    assert _selected_item(panel).startswith("FN-0003")
    qtbot.keyClick(w, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # undo: FN-0002 is back
    qtbot.waitUntil(lambda: case.stale)
    _wait_analysed(qtbot, w)
    assert _fn_ids(case) == ["FN-0001", "FN-0002", "FN-0003"]  # the same voxels, the same id
    assert _selected_item(panel).startswith("FN-0003")  # the highlighted row is still that item
    assert case.regions()[case.active_region].id == "FN-0003"  # and A / R / 1-4 act on it
    w.case.auto_analyse = False
    w.case.modified = False


def test_a_group_marked_at_once_shows_in_the_raw_table_too(qtbot):
    """A group's statuses change in one event (region -1): the raw table must not keep old ones."""
    case = Case(auto_analyse=False)
    case.set_ct(IntensityVolume(np.zeros(SHAPE, np.int16), GEO, name="ct"))
    ref = np.zeros(SHAPE, bool)
    ref[2:18, 10:14, 10:14] = True
    case.set_reference(LabelVolume(ref, GEO, name="reference"))
    case.add_prediction(PredictionEntry("model", LabelVolume(ref.copy(), GEO, name="model")))
    case.active.regions = [
        error_region("FN-1", "FN", "boundary_miss", 30, centroid=(5, 6, 7)),
        error_region("FN-2", "FN", "boundary_miss", 20, centroid=(9, 6, 7)),
    ]
    case.regionsChanged.emit(0)
    panel = RegionsPanel(case)
    qtbot.addWidget(panel)
    panel.small_switch.setChecked(True)
    panel.show()
    panel.set_grouped(False)
    assert _column(panel, "Status") == ["Unreviewed", "Unreviewed"]  # the raw rows were read once
    panel.set_grouped(True)
    assert panel.proxy.rowCount() == 1  # one boundary group of two parts
    panel.go_to_group(0)
    # what key 2 does in the window (MainWindow.mark_region): the whole group in one change
    case.set_region_statuses(list(panel.groups_model.groups[0].indices), "confirmed")
    assert _column(panel, "Status") == [STATUS_LABELS["confirmed"]]
    panel.set_grouped(False)
    assert _column(panel, "Status") == [STATUS_LABELS["confirmed"]] * 2
    panel.set_grouped(True)
    panel.mark("flagged")  # the panel's own buttons: the same one change
    panel.set_grouped(False)
    assert _column(panel, "Status") == [STATUS_LABELS["flagged"]] * 2
