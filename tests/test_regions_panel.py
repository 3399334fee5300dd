"""Error-region navigator: rows, sorting, going to a region, statuses and the counter."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from app.case import Case, PredictionEntry
from app.regions_panel import COLUMNS, FILTERS, RegionsPanel, region_kind, region_volume_mm3
from core.volume import Geometry, IntensityVolume, LabelVolume
from airway_shapes import error_region

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
    p = RegionsPanel(case)
    qtbot.addWidget(p)
    p.show()
    return p


def _column(panel: RegionsPanel, name: str) -> list[str]:
    c = COLUMNS.index(name)
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
    pred[:12, :, 26:] = False           # FN: the tip of one bronchus
    pred[28:32, 20:30, 20:23] = True    # FP: a leak off the trachea
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
    assert p.proxy.rowCount() == len(regions) >= 2
    kinds = _column(p, "Kind")
    assert "FN" in kinds and "FP" in kinds
    assert _column(p, "ID") == [r.id for r in regions]
    assert _column(p, "Voxels") == [str(r.voxels) for r in regions]
    assert _column(p, "Size (mm³)") == [f"{r.volume_mm3:.1f}" for r in regions]
    assert _column(p, "Category")[0] == regions[0].category.replace("_", " ")
    case.step_region(1)
    assert p.table.selectionModel().selectedRows()[0].row() == 0 and case.active_region == 0
