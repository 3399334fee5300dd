"""Metrics of every prediction against the reference, side by side, and the per-branch table.

The summary table has one row per metric (core.metrics ``AirwayMetrics.as_dict()``)
and one column per prediction, so models compare at a glance. The per-branch
table of the active prediction joins the reference tree's branches (core.tree:
generation, length, diameter) with the prediction's per-branch detection
(core.metrics); clicking a branch puts the crosshair on the middle of its
centreline. Both export to CSV and JSON (atomic writes).

Table building and export are plain functions (``summary_table``,
``branch_rows``, ``export_metrics``) so scripts and tests use them without Qt.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    QTimer,
)
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from core.errors import InputError
from core.metrics import AirwayMetrics, BranchResult
from core.tree import AirwayTree

if TYPE_CHECKING:
    from app.review.case import Case

# Rows shown first, in this order (ATM'22 four, then the paper's extras);
# any other scalar the engine reports follows alphabetically.
PREFERRED = (
    "td",
    "bd",
    "dsc",
    "precision",
    "sensitivity",
    "specificity",
    "atm_score",
    "td_mm",
    "tree_length_mm",
    "leakage",
    "missing_ratio",
    "breakages",
    "n_branches",
    "n_detected",
)
LABELS = {
    "td": "TD (%)",
    "bd": "BD (%)",
    "dsc": "DSC (%)",
    "precision": "Precision (%)",
    "sensitivity": "Sensitivity (%)",
    "specificity": "Specificity (%)",
    "atm_score": "ATM'22 score",
    "td_mm": "Length detected (mm)",
    "tree_length_mm": "Tree length (mm)",
    "leakage": "Leakage (%)",
    "missing_ratio": "Missing ratio (%)",
    "breakages": "Breakages",
    "n_branches": "Branches",
    "n_detected": "Branches detected",
}
TOOLTIPS = {
    "td": "Tree length detected: share of reference centreline voxels inside the prediction (ATM'22)",
    "bd": (
        f"Branches detected: share of branches with at least {AirwayMetrics.detection_threshold:.0%} "
        "of their centreline inside (ATM'22)"
    ),
    "atm_score": "Mean of TD, BD, DSC and precision (ATM'22 challenge score)",
    "leakage": "|prediction minus reference| / |reference|",
    "missing_ratio": "|reference minus prediction| / |reference|",
    "breakages": "Prediction components touching the reference tree outside the largest component",
}
BRANCH_COLUMNS = ("branch", "generation", "parent", "length_mm", "mean_diameter_mm", "detected_share", "detected")
# detected_share is in percent of the branch's centreline voxels (core.metrics)


# -- tables (Qt-free) -------------------------------------------------------------------------


def metrics_dict(metrics: Any) -> dict[str, Any]:
    """Scalar metrics as a flat dict (nested dicts become ``outer.inner``; lists are per-row tables, left out)."""
    if metrics is None:
        return {}
    if isinstance(metrics, AirwayMetrics):
        d = metrics.as_dict(branches=False)  # the per-branch table is no scalar: not copied on every refresh
    elif hasattr(metrics, "as_dict"):
        d = metrics.as_dict()
    elif isinstance(metrics, dict):
        d = metrics
    else:
        d = dict(vars(metrics))
    out: dict[str, Any] = {}

    def put(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                put(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, (bool, int, float, str, np.integer, np.floating, np.bool_)) or value is None:
            out[prefix] = value.item() if isinstance(value, np.generic) else value
        # lists/arrays are tables (per branch, per diameter bin): shown elsewhere

    put("", d)
    # two tables read as rows of the summary: DSC per diameter interval (paper
    # Fig. 6) and detected branches per generation
    for b in d.get("dsc_by_diameter") or []:
        if isinstance(b, dict) and "dsc" in b:
            label = b.get("label") or f"{b.get('low_mm')}-{b.get('high_mm')} mm"
            out[f"DSC {label} (%)"] = b["dsc"]
    for g in d.get("per_generation") or []:
        if isinstance(g, dict) and "generation" in g:
            out[f"Generation {g['generation']} detected"] = f"{g.get('detected')}/{g.get('branches')}"
    return out


def summary_table(predictions: Sequence[Any]) -> tuple[list[str], list[str], list[list[Any]]]:
    """(row keys, column names, values[row][col]) of the predictions' metrics."""
    dicts = [metrics_dict(p.metrics) for p in predictions]
    keys: list[str] = [k for k in PREFERRED if any(k in d for d in dicts)]
    others = sorted({k for d in dicts for k in d} - set(keys))
    # scalars first, then the per-diameter and per-generation rows in their own order
    table_rows = [k for k in dict.fromkeys(k for d in dicts for k in d) if k.startswith(("DSC ", "Generation "))]
    others = [k for k in others if k not in table_rows]
    keys += others + table_rows
    cols = [p.name for p in predictions]
    values = [[d.get(k) for d in dicts] for k in keys]
    return keys, cols, values


def format_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.2f}" if abs(v) < 1e5 else f"{v:.4g}"
    return str(v)


BranchRow = dict[str, Any]


def branch_rows(tree: AirwayTree | None, metrics: AirwayMetrics | None) -> list[BranchRow]:
    """One row per reference branch: tree facts joined with the prediction's detection.

    Detection is the metrics' own (``BranchResult.detected``, decided by
    core.metrics with its ``detection_threshold``): the panel never re-decides it."""
    results: dict[int, BranchResult] = {b.id: b for b in metrics.branches} if metrics is not None else {}
    rows: list[BranchRow] = []
    if tree is not None and tree.branches:
        for b in tree.branches:
            r = results.get(b.id)
            rows.append(
                {
                    "branch": b.id,
                    "generation": b.generation,
                    "parent": b.parent,
                    "length_mm": b.length_mm,
                    "mean_diameter_mm": b.mean_diameter_mm,
                    "detected_share": None if r is None else float(r.detected_share),
                    "detected": None if r is None else bool(r.detected),
                }
            )
        return rows
    # no tree object (e.g. loaded results only): the metrics rows alone
    for r in results.values():
        rows.append(
            {
                "branch": r.id,
                "generation": r.generation,
                "parent": r.parent,
                "length_mm": r.length_mm,
                "mean_diameter_mm": r.mean_diameter_mm,
                "detected_share": float(r.detected_share),
                "detected": bool(r.detected),
            }
        )
    return rows


def branch_centre(tree: AirwayTree, branch_id: int) -> tuple[int, int, int] | None:
    """Middle voxel (z, y, x) of a branch's centreline, in full-volume indices."""
    pts = np.asarray(tree.centreline_zyx)[np.asarray(tree.centreline_branch) == branch_id]
    if len(pts) == 0:
        return None
    z, y, x = (int(v) for v in pts[len(pts) // 2])
    return z, y, x


def _atomic_write_text(path: Path, text: str) -> None:
    from core.outputs import atomic_write_text

    atomic_write_text(path, text)


def export_metrics(case: Case, path: str | os.PathLike[str]) -> list[Path]:
    """Write the metrics of every prediction (and per-branch tables) as CSV or JSON, by suffix.

    CSV: ``path`` holds the summary (metric per row, prediction per column)
    and ``<stem>_branches.csv`` the per-branch rows of every prediction.
    JSON: one file with both. Returns the files written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise InputError(f"Cannot export metrics as '{path.suffix or path.name}'.", "Use a .csv or .json file name.")
    preds = [p for p in case.predictions if p.metrics is not None]
    if not preds:
        raise InputError(
            "No metrics to export yet.",
            "Open a reference and at least one prediction, and wait for the analysis to finish.",
        )
    keys, cols, values = summary_table(preds)
    per_branch = {p.name: branch_rows(case.tree, p.metrics) for p in preds}
    if suffix == ".json":
        data = {
            "case": case.name,
            "reference": case.reference_path,
            "predictions": {
                p.name: {"source": p.source, "path": p.path, "metrics": metrics_dict(p.metrics)} for p in preds
            },
            "branches": per_branch,
        }
        _atomic_write_text(path, json.dumps(data, indent=2, default=_json_default))
        return [path]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["metric", *cols])
    for k, row in zip(keys, values):
        w.writerow([k, *["" if v is None else v for v in row]])
    _atomic_write_text(path, buf.getvalue())
    bpath = path.with_name(f"{path.stem}_branches.csv")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["prediction", *BRANCH_COLUMNS])
    for name, rows in per_branch.items():
        for r in rows:
            w.writerow([name, *["" if r.get(c) is None else r.get(c) for c in BRANCH_COLUMNS]])
    _atomic_write_text(bpath, buf.getvalue())
    return [path, bpath]


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# -- the widget -------------------------------------------------------------------------------

SORT_ROLE = Qt.ItemDataRole.UserRole + 1
VALUE_ROLE = Qt.ItemDataRole.UserRole + 2
BRANCH_HEADERS = ("Branch", "Gen.", "Parent", "Length (mm)", "Diameter (mm)", "Detected (%)", "Detected")
Index = QModelIndex | QPersistentModelIndex


def _sort_key(v: Any) -> tuple[int, float, str]:
    """Numbers by value, empty first, text after numbers."""
    if v is None:
        return (0, 0.0, "")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (1, float(v), "")
    return (2, 0.0, str(v))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class SummaryModel(QAbstractTableModel):
    """Metric per row, prediction per column; updated in place (``dataChanged``) while the
    rows and columns stay the same, reset only when they change."""

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.keys: list[str] = []
        self.cols: list[str] = []
        self.values: list[list[Any]] = []
        self.col_tips: list[str] = []
        self.resets = 0  # times the rows or columns really changed (tests, benchmarks)

    def set_table(self, keys: list[str], cols: list[str], values: list[list[Any]], col_tips: list[str]) -> None:
        if keys != self.keys or cols != self.cols:
            self.beginResetModel()
            self.keys, self.cols, self.values, self.col_tips = keys, cols, values, col_tips
            self.resets += 1
            self.endResetModel()
            return
        changed = [r for r in range(len(keys)) if values[r] != self.values[r]]
        self.values = values
        if col_tips != self.col_tips:
            self.col_tips = col_tips
            self.headerDataChanged.emit(Qt.Orientation.Horizontal, 0, max(len(cols) - 1, 0))
        if changed and cols:
            self.dataChanged.emit(self.index(changed[0], 0), self.index(changed[-1], len(cols) - 1))

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: N802, B008 - Qt's names
        return 0 if parent.isValid() else len(self.keys)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: N802, B008 - Qt's names
        return 0 if parent.isValid() else len(self.cols)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and 0 <= section < len(self.cols):
            if role == Qt.ItemDataRole.DisplayRole:
                return self.cols[section]
            if role == Qt.ItemDataRole.ToolTipRole:
                return self.col_tips[section] if section < len(self.col_tips) else self.cols[section]
        if orientation == Qt.Orientation.Vertical and 0 <= section < len(self.keys):
            k = self.keys[section]
            if role == Qt.ItemDataRole.DisplayRole:
                return LABELS.get(k, k)
            if role == Qt.ItemDataRole.ToolTipRole:
                return TOOLTIPS.get(k, k)
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        v = self.values[index.row()][index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return format_value(v)
        if role == VALUE_ROLE:
            return v
        if role == Qt.ItemDataRole.TextAlignmentRole and _is_number(v):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class BranchModel(QAbstractTableModel):
    """One row per reference branch (:func:`branch_rows`). A new analysis of the same
    tree changes cells in place; only another tree (other branch ids) resets the model."""

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.rows: list[tuple[Any, ...]] = []
        self.resets = 0

    def set_rows(self, rows: list[BranchRow]) -> None:
        new = [tuple(r.get(c) for c in BRANCH_COLUMNS) for r in rows]
        if [r[0] for r in new] != [r[0] for r in self.rows]:
            self.beginResetModel()
            self.rows = new
            self.resets += 1
            self.endResetModel()
            return
        changed = [i for i, (a, b) in enumerate(zip(new, self.rows)) if a != b]
        self.rows = new
        if changed:
            self.dataChanged.emit(self.index(changed[0], 0), self.index(changed[-1], len(BRANCH_COLUMNS) - 1))

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: N802, B008 - Qt's names
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: N802, B008 - Qt's names
        return 0 if parent.isValid() else len(BRANCH_COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return BRANCH_HEADERS[section]
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        v = self.rows[index.row()][index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return format_value(v)
        if role == SORT_ROLE:
            return _sort_key(v)
        if role == VALUE_ROLE:
            return v
        if role == Qt.ItemDataRole.TextAlignmentRole and _is_number(v):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class _SortProxy(QSortFilterProxyModel):
    def lessThan(self, a: Index, b: Index) -> bool:  # noqa: N802 - Qt's name
        ka, kb = a.data(SORT_ROLE), b.data(SORT_ROLE)
        return bool(ka < kb)


class Cell:
    """What ``SummaryView.item()`` gives: one cell's text, value and tooltip, read from the model."""

    def __init__(self, text: str, value: Any = None, tooltip: str = ""):
        self._text, self.value, self._tip = text, value, tooltip

    def text(self) -> str:
        return self._text

    def toolTip(self) -> str:  # noqa: N802 - read like a QTableWidgetItem
        return self._tip


class ReadableTableView(QTableView):
    """A table view that scripts and tests read like a QTableWidget (``item``, header items,
    ``rowCount``), through its model."""

    def rowCount(self) -> int:  # noqa: N802 - QTableWidget's name
        return self.model().rowCount()

    def columnCount(self) -> int:  # noqa: N802 - QTableWidget's name
        return self.model().columnCount()

    def item(self, row: int, col: int) -> Cell | None:
        ix = self.model().index(row, col)
        if not ix.isValid():
            return None
        return Cell(str(ix.data() or ""), ix.data(VALUE_ROLE), str(ix.data(Qt.ItemDataRole.ToolTipRole) or ""))

    def _header(self, section: int, orientation: Qt.Orientation) -> Cell:
        m = self.model()
        text = m.headerData(section, orientation, Qt.ItemDataRole.DisplayRole)
        tip = m.headerData(section, orientation, Qt.ItemDataRole.ToolTipRole)
        return Cell(str(text or ""), None, str(tip or ""))

    def horizontalHeaderItem(self, col: int) -> Cell:  # noqa: N802 - QTableWidget's name
        return self._header(col, Qt.Orientation.Horizontal)

    def verticalHeaderItem(self, row: int) -> Cell:  # noqa: N802 - QTableWidget's name
        return self._header(row, Qt.Orientation.Vertical)


LOBE_HEADERS = ("Lobe", "TD (%)", "BD (%)", "Branches detected")


def _lobe_cell(text: str, value: Any = None) -> QStandardItem:
    item = QStandardItem(text)
    item.setData(text if value is None else value, VALUE_ROLE)
    return item


class MetricsPanel(QWidget):
    """Summary table (one column per prediction) over the per-branch table of the active one.

    Both are item models updated in place. The summary is small and follows every
    change at once; the per-branch table is filled only while the panel is shown
    (a hidden tab costs nothing; it catches up when shown), once per burst of
    signals (a re-analysis sends several)."""

    def __init__(self, case: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("metricsPanel")
        self.case = case
        self._branches_dirty = True
        self.branch_fills = 0  # how often the per-branch rows were computed (tests, benchmarks)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        top = QHBoxLayout()
        self.status = QLabel("", self)
        self.status.setObjectName("metricsStatus")
        self.status.setWordWrap(True)
        top.addWidget(self.status, 1)
        self.export_button = QPushButton("Export...", self)
        self.export_button.setObjectName("exportMetrics")
        self.export_button.clicked.connect(self.export_dialog)
        top.addWidget(self.export_button)
        lay.addLayout(top)

        split = QSplitter(Qt.Orientation.Vertical, self)
        self.summary_model = SummaryModel(self)
        self.summary = ReadableTableView(self)
        self.summary.setObjectName("metricsSummary")
        self.summary.setModel(self.summary_model)
        self.summary.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        # several models side by side: columns share the width, long names are
        # elided (full name in the header's tooltip)
        self.summary.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.summary.horizontalHeader().setMinimumSectionSize(60)
        self.summary.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        # headers elide too (a centred, clipped name read "ted prediction (not a")
        self.summary.horizontalHeader().setTextElideMode(Qt.TextElideMode.ElideMiddle)
        split.addWidget(self.summary)
        # per lobe of the active prediction (core.anatomy.metrics), under the reference's branch names
        lobes = QWidget(self)
        ll = QVBoxLayout(lobes)
        ll.setContentsMargins(0, 0, 0, 0)
        self.anatomy_line = QLabel("", lobes)
        self.anatomy_line.setObjectName("anatomyLine")
        self.anatomy_line.setWordWrap(True)
        ll.addWidget(self.anatomy_line)
        self.lobe_model = QStandardItemModel(0, len(LOBE_HEADERS), self)
        self.lobe_model.setHorizontalHeaderLabels(list(LOBE_HEADERS))
        self.lobe_table = ReadableTableView(lobes)
        self.lobe_table.setObjectName("lobeTable")
        self.lobe_table.setModel(self.lobe_model)
        self.lobe_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.lobe_table.verticalHeader().setVisible(False)
        self.lobe_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        ll.addWidget(self.lobe_table, 1)
        split.addWidget(lobes)
        bottom = QWidget(self)
        bl = QVBoxLayout(bottom)
        bl.setContentsMargins(0, 0, 0, 0)
        self.branch_title = QLabel("Branches", bottom)
        bl.addWidget(self.branch_title)
        self.branch_model = BranchModel(self)
        self.branch_proxy = _SortProxy(self)
        self.branch_proxy.setSourceModel(self.branch_model)
        self.branches = ReadableTableView(bottom)
        self.branches.setObjectName("branchTable")
        self.branches.setModel(self.branch_proxy)
        self.branches.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.branches.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.branches.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.branches.verticalHeader().setVisible(False)
        self.branches.setSortingEnabled(True)
        self.branches.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.branches.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        # widths from the header texts, once: ResizeToContents measured every cell on every
        # change (1,519 setItem calls, 5.9 s on a 211-branch tree)
        header = self.branches.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        fm = self.branches.fontMetrics()
        for c, text in enumerate(BRANCH_HEADERS):
            header.resizeSection(c, max(fm.horizontalAdvance(text), fm.horizontalAdvance("000.00")) + 20)
        header.setStretchLastSection(True)
        self.branches.clicked.connect(self._on_branch_clicked)
        bl.addWidget(self.branches, 1)
        split.addWidget(bottom)
        lay.addWidget(split, 1)

        # a burst of signals (a re-analysis sends several) fills the branch table once
        self._branch_timer = QTimer(self)
        self._branch_timer.setSingleShot(True)
        self._branch_timer.setInterval(0)
        self._branch_timer.timeout.connect(self._fill_branches)

        for sig in (case.metricsChanged, case.activePredictionChanged):
            sig.connect(lambda *_: self.refresh())
        from app.review.case import Case

        if isinstance(case, Case):
            case.namesChanged.connect(lambda *_: self._fill_lobes())
        for sig in (
            case.predictionsChanged,
            case.treeChanged,
            case.referenceChanged,
            case.ctChanged,
            case.staleChanged,
        ):
            sig.connect(self.refresh)
        self.refresh()

    def refresh(self, *_: Any) -> None:
        case = self.case
        preds = list(case.predictions)
        keys, cols, values = summary_table(preds)
        warned = {p.name: list(getattr(p, "warnings", None) or []) for p in preds}
        tips = [name + "".join(f"\n\u26a0 {w}" for w in warned.get(name) or []) for name in cols]
        self.summary_model.set_table(keys, cols, values, tips)
        status = self._status_text(preds)
        # a gate warning (core.gate) stays visible next to that prediction's numbers
        warnings = [f"\u26a0 {name}: {w[0]}" for name, w in warned.items() if w]
        self.status.setText("\n".join(warnings + ([status] if status else [])))
        self.export_button.setEnabled(any(p.metrics is not None for p in preds))
        self._fill_lobes()
        self._branches_dirty = True
        if self.isVisible():
            self._branch_timer.start()

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        if self._branches_dirty:
            self._branch_timer.start()

    def _status_text(self, preds: list[Any]) -> str:
        case = self.case
        if case.reference is None:
            return "Open a reference label to compute metrics."
        if not preds:
            return "Open or compute a prediction to compare with the reference."
        if case.tree_error:
            return f"Reference tree: {case.tree_error}"
        pending = [p.name for p in preds if p.metrics is None and not p.analysis_error]
        failed = [f"{p.name}: {p.analysis_error}" for p in preds if p.analysis_error]
        parts = ["Stale: the labels were edited, updating..."] if case.stale else []
        if pending:
            parts.append("Computing: " + ", ".join(pending))
        parts += failed
        return "; ".join(parts)

    def _fill_lobes(self) -> None:
        """The active prediction's per-lobe rows and its segmental sentence (a pass over the branches)."""
        from app.review.case import Case

        scores = self.case.anatomy_scores() if isinstance(self.case, Case) else None
        self.lobe_model.setRowCount(0)
        if scores is None:
            self.anatomy_line.setText("")
            return
        for r in scores.lobes:
            cells = [
                _lobe_cell(r.lobe),
                _lobe_cell(format_value(r.td), r.td),
                _lobe_cell(format_value(r.bd), r.bd),
                _lobe_cell(f"{r.detected} / {r.branches}", r.branches),
            ]
            self.lobe_model.appendRow(cells)
        act = self.case.active
        self.anatomy_line.setText(f"{act.name if act is not None else ''}: {scores.sentence()}")

    def _fill_branches(self) -> None:
        if not self.isVisible():
            return  # caught up by showEvent
        self._branches_dirty = False
        self.branch_fills += 1
        act = self.case.active
        metrics = act.metrics if act is not None and isinstance(act.metrics, AirwayMetrics) else None
        rows = branch_rows(self.case.tree, metrics)
        self.branch_model.set_rows(rows)
        name = act.name if act is not None else ""
        self.branch_title.setText(
            f"Branches of the reference ({len(rows)}){' vs ' + name if name else ''}: click to go"
        )

    def _on_branch_clicked(self, index: QModelIndex) -> None:
        bid = index.siblingAtColumn(0).data(VALUE_ROLE)
        if bid is None or self.case.tree is None:
            return
        centre = branch_centre(self.case.tree, int(bid))
        if centre is not None:
            self.case.set_cursor(centre)

    def export_dialog(self) -> list[Path] | None:
        from app.dialogs import show_error

        start = os.path.join(os.path.expanduser("~"), f"{self.case.name or 'case'}_metrics.csv")
        path, _ = QFileDialog.getSaveFileName(self, "Export metrics", start, "CSV (*.csv);;JSON (*.json)")
        if not path:
            return None
        try:
            return export_metrics(self.case, path)
        except InputError as exc:
            show_error(self, exc)
            return None
