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
from typing import Any

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.errors import InputError

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
    "bd": "Branches detected: share of branches with at least 80% of their centreline inside (ATM'22)",
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
    if hasattr(metrics, "as_dict"):
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


def _get(row: Any, *names: str) -> Any:
    for n in names:
        if isinstance(row, dict) and n in row:
            return row[n]
        if not isinstance(row, dict) and hasattr(row, n):
            return getattr(row, n)
    return None


def per_branch_table(metrics: Any) -> list[Any] | None:
    """The metrics object's per-branch rows, whatever it names them."""
    if metrics is None:
        return None
    for name in ("branches", "per_branch", "branch_table", "branch_rows"):
        t = metrics.get(name) if isinstance(metrics, dict) else getattr(metrics, name, None)
        if t is not None:
            t = t() if callable(t) else t
            if isinstance(t, (list, tuple)):
                return list(t)
    return None


def branch_rows(tree: Any, metrics: Any) -> list[dict[str, Any]]:
    """One row per reference branch: tree facts joined with the prediction's detection."""
    detected: dict[int, dict[str, Any]] = {}
    for row in per_branch_table(metrics) or []:
        bid = _get(row, "branch_id", "id", "branch")
        if bid is None:
            continue
        share = _get(row, "detected_share", "detected_fraction", "share", "fraction")
        det = _get(row, "detected")
        if det is None and share is not None:  # core.metrics reports the share in percent
            det = float(share) >= 80.0
        detected[int(bid)] = {
            "detected_share": None if share is None else float(share),
            "detected": None if det is None else bool(det),
        }
    rows: list[dict[str, Any]] = []
    branches = list(getattr(tree, "branches", None) or [])
    if branches:
        for b in branches:
            bid = int(_get(b, "id"))
            rows.append(
                {
                    "branch": bid,
                    "generation": _get(b, "generation"),
                    "parent": _get(b, "parent"),
                    "length_mm": _get(b, "length_mm"),
                    "mean_diameter_mm": _get(b, "mean_diameter_mm"),
                    **detected.get(bid, {"detected_share": None, "detected": None}),
                }
            )
    else:  # no tree object (e.g. loaded results only): the metrics rows alone
        for row in per_branch_table(metrics) or []:
            bid = _get(row, "branch_id", "id", "branch")
            if bid is None:
                continue
            rows.append(
                {
                    "branch": int(bid),
                    "generation": _get(row, "generation"),
                    "parent": _get(row, "parent"),
                    "length_mm": _get(row, "length_mm"),
                    "mean_diameter_mm": _get(row, "mean_diameter_mm"),
                    **detected.get(int(bid), {}),
                }
            )
    return rows


def branch_centre(tree: Any, branch_id: int) -> tuple[int, int, int] | None:
    """Middle voxel (z, y, x) of a branch's centreline, in full-volume indices."""
    zyx = getattr(tree, "centreline_zyx", None)
    ids = getattr(tree, "centreline_branch", None)
    if zyx is None or ids is None:
        return None
    pts = np.asarray(zyx)[np.asarray(ids) == branch_id]
    if len(pts) == 0:
        return None
    return tuple(int(v) for v in pts[len(pts) // 2])  # type: ignore[return-value]


def _atomic_write_text(path: Path, text: str) -> None:
    from core.outputs import atomic_write_text

    atomic_write_text(path, text)


def export_metrics(case: Any, path: str | os.PathLike) -> list[Path]:
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
    tree = getattr(case, "tree", None)
    per_branch = {p.name: branch_rows(tree, p.metrics) for p in preds}
    if suffix == ".json":
        data = {
            "case": getattr(case, "name", ""),
            "reference": getattr(case, "reference_path", None),
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


class _NumItem(QTableWidgetItem):
    """Sorts by the number it shows (empty first)."""

    def __init__(self, value: Any):
        super().__init__(format_value(value))
        self.value = value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def __lt__(self, other: QTableWidgetItem) -> bool:  # type: ignore[override]
        a, b = self.value, getattr(other, "value", None)
        ka = (0, 0.0) if a is None else (1, float(a)) if isinstance(a, (int, float)) else (2, str(a))
        kb = (0, 0.0) if b is None else (1, float(b)) if isinstance(b, (int, float)) else (2, str(b))
        return ka < kb


class MetricsPanel(QWidget):
    """Summary table (one column per prediction) over the per-branch table of the active one."""

    def __init__(self, case: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("metricsPanel")
        self.case = case
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
        self.summary = QTableWidget(0, 0, self)
        self.summary.setObjectName("metricsSummary")
        self.summary.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        # several models side by side: columns share the width, long names are
        # elided (full name in the header's tooltip)
        self.summary.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.summary.horizontalHeader().setMinimumSectionSize(60)
        self.summary.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        # headers elide too (a centred, clipped name read "ted prediction (not a")
        self.summary.horizontalHeader().setTextElideMode(Qt.TextElideMode.ElideMiddle)
        split.addWidget(self.summary)
        bottom = QWidget(self)
        bl = QVBoxLayout(bottom)
        bl.setContentsMargins(0, 0, 0, 0)
        self.branch_title = QLabel("Branches", bottom)
        bl.addWidget(self.branch_title)
        self.branches = QTableWidget(0, len(BRANCH_COLUMNS), bottom)
        self.branches.setObjectName("branchTable")
        self.branches.setHorizontalHeaderLabels(
            ["Branch", "Gen.", "Parent", "Length (mm)", "Diameter (mm)", "Detected (%)", "Detected"]
        )
        self.branches.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.branches.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.branches.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.branches.verticalHeader().setVisible(False)
        self.branches.setSortingEnabled(True)
        self.branches.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.branches.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.branches.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.branches.cellClicked.connect(self._on_branch_clicked)
        bl.addWidget(self.branches, 1)
        split.addWidget(bottom)
        lay.addWidget(split, 1)

        for sig in (case.metricsChanged, case.activePredictionChanged):
            sig.connect(lambda *_: self.refresh())
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
        s = self.summary
        s.clear()
        s.setRowCount(len(keys))
        s.setColumnCount(len(cols))
        s.setHorizontalHeaderLabels(cols)
        warned = {p.name: list(getattr(p, "warnings", None) or []) for p in preds}
        for c, name in enumerate(cols):
            warn = warned.get(name) or []
            s.horizontalHeaderItem(c).setToolTip(name + "".join(f"\n\u26a0 {w}" for w in warn))
        s.setVerticalHeaderLabels([LABELS.get(k, k) for k in keys])
        for r, k in enumerate(keys):
            s.verticalHeaderItem(r).setToolTip(TOOLTIPS.get(k, k))
        for r, row in enumerate(values):
            for c, v in enumerate(row):
                s.setItem(r, c, _NumItem(v))
        status = self._status_text(preds)
        # a gate warning (core.gate) stays visible next to that prediction's numbers
        warnings = [f"\u26a0 {name}: {w[0]}" for name, w in warned.items() if w]
        self.status.setText("\n".join(warnings + ([status] if status else [])))
        self.export_button.setEnabled(any(p.metrics is not None for p in preds))
        self._fill_branches()

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

    def _fill_branches(self) -> None:
        act = self.case.active
        rows = (
            branch_rows(self.case.tree, act.metrics if act is not None else None)
            if self.case.tree is not None or act is not None
            else []
        )
        t = self.branches
        t.setSortingEnabled(False)
        t.clearContents()
        t.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, key in enumerate(BRANCH_COLUMNS):
                t.setItem(r, c, _NumItem(row.get(key)))
        t.setSortingEnabled(True)
        name = act.name if act is not None else ""
        self.branch_title.setText(
            f"Branches of the reference ({len(rows)}){' vs ' + name if name else ''}: click to go"
        )

    def _on_branch_clicked(self, row: int, _col: int) -> None:
        item = self.branches.item(row, 0)
        if item is None or self.case.tree is None:
            return
        centre = branch_centre(self.case.tree, int(item.value))
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
