"""Metrics panel: one column per prediction, per-branch table (click to go), CSV/JSON export."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage

from app.review.case import Case, PredictionEntry
from app.review.metrics_panel import (
    MetricsPanel,
    branch_centre,
    branch_rows,
    export_metrics,
    metrics_dict,
    summary_table,
)
from core.errors import InputError
from core.metrics import AirwayMetrics, BranchResult
from core.tree import parse_tree
from core.volume import Geometry, IntensityVolume, LabelVolume

SHAPE = (40, 40, 40)
GEO = Geometry((0.7, 0.7, 1.0))


def _y_mask() -> np.ndarray:
    """Trachea (z 20..37) splitting into two bronchi: three branches for the ATM'22 parse."""
    c = np.zeros(SHAPE, bool)
    c[20:38, 20, 20] = True
    for k in range(1, 14):
        c[20 - k, 20, 20 - k] = True
        c[20 - k, 20, 20 + k] = True
    return ndimage.binary_dilation(c, iterations=2)


def _metrics(tree, td: float, bd: float, dsc: float, precision: float, shares: dict[int, float]) -> AirwayMetrics:
    """Engine result types with chosen numbers: the per-branch rows are core.metrics.BranchResult."""
    rows = [
        BranchResult(
            id=b.id,
            parent=b.parent,
            generation=b.generation,
            length_mm=b.length_mm,
            mean_diameter_mm=b.mean_diameter_mm,
            min_diameter_mm=b.min_diameter_mm,
            centreline_voxels=b.centreline_voxels,
            detected_voxels=round(b.centreline_voxels * shares[b.id] / 100),
            detected_share=shares[b.id],
            detected=shares[b.id] >= 100 * AirwayMetrics.detection_threshold,
        )
        for b in tree.branches
    ]
    return AirwayMetrics(
        td=td,
        bd=bd,
        dsc=dsc,
        precision=precision,
        sensitivity=90.0,
        specificity=99.9,
        atm_score=(td + bd + dsc + precision) / 4,
        td_mm=10.0,
        tree_length_mm=12.0,
        leakage=1.0,
        missing_ratio=2.0,
        breakages=0,
        n_branches=len(rows),
        n_detected=sum(r.detected for r in rows),
        counts={"tp": 5},
        branches=rows,
    )


def _case() -> Case:
    ref = _y_mask()
    case = Case(auto_analyse=False)
    case.set_ct(IntensityVolume(np.zeros(SHAPE, np.int16), GEO, name="ct"), name="ycase")
    case.set_reference(LabelVolume(ref, GEO, name="reference"))
    case.tree = parse_tree(ref, GEO.spacing_zyx)
    ids = [b.id for b in case.tree.branches]
    a = PredictionEntry("model A", LabelVolume(ref.copy(), GEO, name="a"))
    b = PredictionEntry("model B", LabelVolume(ref.copy(), GEO, name="b"))
    case.add_prediction(a)
    case.add_prediction(b)
    a.metrics = _metrics(case.tree, 100.0, 100.0, 99.5, 98.25, {i: 100.0 for i in ids})
    b.metrics = _metrics(case.tree, 61.3, 2 / 3 * 100, 80.0, 90.0, {i: 50.0 if i == ids[0] else 90.0 for i in ids})
    case.set_active(0)
    case.metricsChanged.emit(0)
    case.metricsChanged.emit(1)
    return case


@pytest.fixture
def panel(qtbot):
    p = MetricsPanel(_case())
    qtbot.addWidget(p)
    p.show()
    return p


def test_summary_has_one_column_per_prediction(panel):
    s = panel.summary
    assert [s.horizontalHeaderItem(c).text() for c in range(s.columnCount())] == ["model A", "model B"]
    rows = [s.verticalHeaderItem(r).text() for r in range(s.rowCount())]
    assert rows[:4] == ["TD (%)", "BD (%)", "DSC (%)", "Precision (%)"]
    assert s.item(0, 1).text() == "61.30" and s.item(1, 1).text() == "66.67" and s.item(3, 0).text() == "98.25"
    assert "counts.tp" in rows and "branches" not in rows  # tables are not scalars


def test_branch_table_joins_tree_and_detection(panel, qtbot):
    case = panel.case
    t = panel.branches
    qtbot.waitUntil(lambda: t.rowCount() == case.tree.n_branches == 3)
    case.set_active(1)
    rows = branch_rows(case.tree, case.active.metrics)
    first = case.tree.branches[0].id
    det = {r["branch"]: r["detected"] for r in rows}
    assert det[first] is False and all(v for k, v in det.items() if k != first)  # 80% rule
    gens = {r["branch"]: r["generation"] for r in rows}
    assert sorted(gens.values()) == [0, 1, 1]


def test_click_on_a_branch_moves_the_cursor_to_its_centreline(panel, qtbot):
    case = panel.case
    t = panel.branches
    qtbot.waitUntil(lambda: t.rowCount() == 3)
    for row in range(t.rowCount()):
        bid = int(t.item(row, 0).value)
        t.clicked.emit(t.model().index(row, 1))
        expected = branch_centre(case.tree, bid)
        assert case.cursor == expected
        assert case.tree.centreline_mask()[expected]
        assert int(case.tree.branch_label_map()[expected]) == bid


def test_export_csv_and_json_round_trip(panel, tmp_path):
    case = panel.case
    files = export_metrics(case, tmp_path / "m.csv")
    assert [f.name for f in files] == ["m.csv", "m_branches.csv"]
    with open(files[0], newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["metric", "model A", "model B"]
    by = {r[0]: r[1:] for r in rows[1:]}
    assert float(by["td"][1]) == pytest.approx(61.3) and float(by["precision"][0]) == pytest.approx(98.25)
    with open(files[1], newline="") as f:
        brows = list(csv.DictReader(f))
    assert len(brows) == 6 and {r["prediction"] for r in brows} == {"model A", "model B"}
    out = export_metrics(case, tmp_path / "m.json")[0]
    data = json.loads(out.read_text())
    assert data["predictions"]["model B"]["metrics"]["bd"] == pytest.approx(200 / 3)
    assert len(data["branches"]["model A"]) == 3
    with pytest.raises(InputError):
        export_metrics(case, tmp_path / "m.xlsx")


def test_no_metrics_yet_says_so(qtbot):
    case = Case(auto_analyse=False)
    p = MetricsPanel(case)
    qtbot.addWidget(p)
    assert "reference" in p.status.text()
    with pytest.raises(InputError):
        export_metrics(case, "/tmp/never.csv")
    assert not p.export_button.isEnabled()


def test_metrics_dict_flattens_and_summary_orders():
    m = SimpleNamespace(as_dict=lambda: {"zeta": 1, "dsc": np.float32(2.5), "td": 3.0, "nested": {"a": 1}, "rows": [1]})
    assert metrics_dict(m) == {"zeta": 1, "dsc": 2.5, "td": 3.0, "nested.a": 1}
    keys, cols, values = summary_table([SimpleNamespace(name="p", metrics=m)])
    assert keys == ["td", "dsc", "nested.a", "zeta"] and cols == ["p"] and values[0] == [3.0]


def test_real_engine_metrics_fill_the_tables(qtbot):
    from core.metrics import evaluate

    case = _case()
    ref = case.reference.mask
    pred = ref.copy()
    pred[:20, :, 20 + 4 :] = False  # drop most of one bronchus
    entry = case.predictions[1]
    entry.label = LabelVolume(pred, GEO, name="b")
    entry.metrics = evaluate(pred, ref, GEO.spacing_zyx, tree=case.tree)
    p = MetricsPanel(case)
    qtbot.addWidget(p)
    rows = [p.summary.verticalHeaderItem(r).text() for r in range(p.summary.rowCount())]
    m = entry.metrics
    for key, label in (("td", "TD (%)"), ("bd", "BD (%)"), ("atm_score", "ATM'22 score")):
        assert p.summary.item(rows.index(label), 1).text() == f"{getattr(m, key):.2f}"
    assert any(r.startswith("DSC ") for r in rows) and any(r.startswith("Generation 1") for r in rows)
    assert m.bd == pytest.approx(200 / 3)
    case.set_active(1)
    det = {r["branch"]: r["detected"] for r in branch_rows(case.tree, m)}
    assert sorted(det.values()) == [False, True, True]


def _count_model_signals(view) -> dict[str, int]:
    counts = {"reset": 0, "changed": 0, "rows": 0}
    m = view.model()
    m.modelReset.connect(lambda: counts.__setitem__("reset", counts["reset"] + 1))
    m.dataChanged.connect(lambda *_: counts.__setitem__("changed", counts["changed"] + 1))
    m.rowsInserted.connect(lambda *_: counts.__setitem__("rows", counts["rows"] + 1))
    return counts


def test_hidden_branch_table_is_not_rebuilt_until_shown(qtbot):
    """Issue 22: the branch table was rebuilt on every edit while its tab was hidden (5.9 s on ATM'22)."""
    from PySide6.QtWidgets import QLabel, QTabWidget

    case = _case()
    tabs = QTabWidget()
    qtbot.addWidget(tabs)
    tabs.addTab(QLabel("navigator"), "Regions")
    panel = MetricsPanel(case)
    tabs.addTab(panel, "Metrics")
    tabs.show()
    qtbot.waitExposed(tabs)
    counts = _count_model_signals(panel.branches)
    for _ in range(5):  # what each edit and re-analysis sends
        case.staleChanged.emit(True)
        case.metricsChanged.emit(0)
        case.staleChanged.emit(False)
    qtbot.wait(20)
    assert counts == {"reset": 0, "changed": 0, "rows": 0}
    tabs.setCurrentWidget(panel)  # shown: it catches up, once
    qtbot.waitUntil(lambda: panel.branches.rowCount() == 3)
    assert counts["reset"] + counts["rows"] + counts["changed"] >= 1


def test_reanalysis_updates_branch_cells_in_place_and_keeps_the_selection(panel, qtbot):
    case = panel.case
    t = panel.branches
    qtbot.waitUntil(lambda: t.rowCount() == 3)
    t.selectRow(1)
    selected = t.item(1, 0).value
    counts = _count_model_signals(t)
    ids = [b.id for b in case.tree.branches]
    # a re-analysis of the same tree: one branch's detection changes
    case.predictions[0].metrics = _metrics(
        case.tree, 90.0, 66.7, 99.0, 98.0, {i: 10.0 if i == ids[2] else 100.0 for i in ids}
    )
    case.metricsChanged.emit(0)
    qtbot.waitUntil(lambda: counts["changed"] > 0)
    assert counts["reset"] == 0 and counts["rows"] == 0
    rows = t.selectionModel().selectedRows()
    assert len(rows) == 1 and t.item(rows[0].row(), 0).value == selected
    shown = {t.item(r, 0).value: t.item(r, 6).text() for r in range(t.rowCount())}
    assert shown[ids[2]] == "no" and shown[ids[0]] == "yes"
