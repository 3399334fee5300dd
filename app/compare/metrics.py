"""Metrics over cases and models (mean +- sd, per case, paired tests) and the paper's
plots, with exports: the CSV tables, the plots as PNG, the HTML report."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from core.compare.batch import METRIC_COLUMNS, STAT_METRICS, CompareResult

PLOTS = ("dsc_by_diameter", "bd_by_generation")


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 0.01 and v else f"{v:.2f}"
    return str(v)


def _fill(table: QTableWidget, header: list[str], rows: list[list[Any]]) -> None:
    table.clear()
    table.setColumnCount(len(header))
    table.setRowCount(len(rows))
    table.setHorizontalHeaderLabels(header)
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            item = QTableWidgetItem(v if isinstance(v, str) else _fmt(v))
            if not isinstance(v, str):
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
            table.setItem(i, j, item)
    table.resizeColumnsToContents()


class CompareMetrics(QWidget):
    """Tables and plots of a :class:`CompareResult`."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("compareMetrics")
        self.result: CompareResult | None = None
        self.tables: dict[str, list[dict]] = {}
        self.plots: dict[str, bytes] = {}
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.tabs = QTabWidget(self)
        self.summary = QTableWidget(self)
        self.summary.setObjectName("compareSummary")
        self.per_case = QTableWidget(self)
        self.per_case.setObjectName("comparePerCase")
        self.tests = QTableWidget(self)
        self.tests.setObjectName("compareTests")
        self.tabs.addTab(self.summary, "Mean \u00b1 sd")
        self.tabs.addTab(self.per_case, "Per case")
        self.tabs.addTab(self.tests, "Wilcoxon tests")
        plots = QWidget(self)
        pl = QHBoxLayout(plots)
        self.plot_labels: dict[str, QLabel] = {}
        for key in PLOTS:
            lab = QLabel(plots)
            lab.setObjectName(f"plot_{key}")
            lab.setAlignment(Qt.AlignmentFlag.AlignCenter)
            pl.addWidget(lab)
            self.plot_labels[key] = lab
        scroll = QScrollArea(self)
        scroll.setWidget(plots)
        scroll.setWidgetResizable(True)
        self.tabs.addTab(scroll, "Plots")
        self.note = QLabel(self)
        self.note.setObjectName("compareNote")
        self.note.setWordWrap(True)
        lay.addWidget(self.tabs, 1)
        lay.addWidget(self.note)

    def set_result(self, result: CompareResult) -> None:
        from core.compare import figures
        from core.compare.output import tables

        self.result = result
        self.tables = tables(result)
        header = ["model", "cases"] + [k for k in STAT_METRICS]
        rows = [
            [r["model"], r["cases"]] + [f"{_fmt(r[f'{k}_mean'])} \u00b1 {_fmt(r[f'{k}_sd'])}" for k in STAT_METRICS]
            for r in self.tables["summary"]
        ]
        _fill(self.summary, header, rows)
        cols = [c for c, _ in METRIC_COLUMNS]
        _fill(
            self.per_case,
            ["case", "model"] + cols,
            [[r["case"], r["model"]] + [r[c] for c in cols] for r in self.tables["metrics"]],
        )
        tcols = ["model_a", "model_b", "metric", "cases", "mean_a", "mean_b", "mean_difference", "p_value", "note"]
        _fill(self.tests, tcols, [[r[c] for c in tcols] for r in self.tables["tests"]])
        self.plots = {}
        if figures.available():
            self.plots["dsc_by_diameter"] = figures.dsc_by_diameter_png(
                self.tables["dsc_by_diameter_summary"], result.models
            )
            self.plots["bd_by_generation"] = figures.bd_by_generation_png(
                self.tables["bd_by_generation_summary"], result.models
            )
            self.note.setText("")
        else:
            self.note.setText("Plots need matplotlib (pip install matplotlib).")
        for key, lab in self.plot_labels.items():
            pm = QPixmap()
            if key in self.plots:
                pm.loadFromData(self.plots[key], "PNG")
            lab.setPixmap(pm)
        if result.failures:
            self.note.setText(
                f"{len(result.failures)} case/model pair(s) failed: "
                + "; ".join(f"{f.case}/{f.model}: {f.message}" for f in result.failures[:3])
            )

    # -- exports ------------------------------------------------------------------------
    def export_csv(self, folder: str | Path) -> list[Path]:
        """Every table as CSV into ``folder``."""
        from core.compare.cache import atomic_write
        from core.compare.output import _csv

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        for stem, rows in self.tables.items():
            p = folder / f"{stem}.csv"
            atomic_write(p, _csv(rows, ["case", "model", "message"] if stem == "failures" else None))
            out.append(p)
        return out

    def export_png(self, path: str | Path, which: str = "dsc_by_diameter") -> Path:
        from core.compare.cache import atomic_write
        from core.errors import InputError

        if which not in self.plots:
            raise InputError("This plot is not available.", "Install matplotlib, or open a compare result first.")
        path = Path(path)
        atomic_write(path, self.plots[which])
        return path

    def export_report(self, path: str | Path, snapshots_dir: str | Path | None = None) -> Path:
        """The HTML report (with the compare folder's 3D snapshots when given)."""
        from core.compare.cache import atomic_write
        from core.compare.output import snapshot_name
        from core.compare.report import build_report
        from core.errors import InputError

        if self.result is None:
            raise InputError("Nothing to export yet.", "Open a compare output folder first.")
        shots = {}
        note = "3D snapshots are in the folder written by `airway compare`."
        if snapshots_dir is not None:
            for r in self.result.rows:
                p = Path(snapshots_dir) / snapshot_name(r.case, r.model)
                if p.exists():
                    shots[(r.case, r.model)] = p
            note = "" if shots else note
        html, _ = build_report(self.result, self.tables, shots, note)
        path = Path(path)
        atomic_write(path, html.encode())
        return path
