"""Metrics over cases and models (mean +- sd, per case, paired tests) and the paper's
plots, with exports: the CSV tables, the plots as PNG, the HTML report.

The plots are live pyqtgraph items that resize with the panel (app.compare.plots);
a click on a per-case row asks the tab to open that case (``caseActivated``).
Figures of files that changed since the comparison are never shown beside the
new masks: their cells read "changed since the comparison: rerun"."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.compare.plots import ComparePlots
from core.compare.batch import METRIC_COLUMNS, STAT_METRICS, CompareResult, finite

PLOTS = ("dsc_by_diameter", "bd_by_generation")
STALE_TEXT = "changed since the comparison: rerun"


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 0.01 and v else f"{v:.2f}"
    return str(v)


def _mean_sd(mean: Any, sd: Any) -> str:
    if not finite(mean):
        return "-"
    return f"{_fmt(mean)} \u00b1 {_fmt(sd) if finite(sd) else 'n/a'}"


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

    caseActivated = Signal(str)  # a per-case row was clicked: open that case in the panes

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("compareMetrics")
        self.result: CompareResult | None = None
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self.plots: dict[str, bytes] = {}
        self.stale: set[tuple[str, str]] = set()
        self._case_of_row: list[str] = []
        self._pair_of_row: list[tuple[str, str]] = []
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.banner = QLabel(self)
        self.banner.setObjectName("compareBanner")
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet("QLabel{background:#5a1e1e;color:#ffd8d8;padding:4px;border-radius:3px}")
        self.banner.hide()
        lay.addWidget(self.banner)
        self.tabs = QTabWidget(self)
        self.summary = QTableWidget(self)
        self.summary.setObjectName("compareSummary")
        self.per_case = QTableWidget(self)
        self.per_case.setObjectName("comparePerCase")
        self.per_case.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.per_case.setToolTip("Click a row to open that case in the panes")
        self.per_case.cellClicked.connect(self._row_clicked)
        self.tests = QTableWidget(self)
        self.tests.setObjectName("compareTests")
        self.tabs.addTab(self.summary, "Mean \u00b1 sd")
        self.tabs.addTab(self.per_case, "Per case")
        self.tabs.addTab(self.tests, "Wilcoxon tests")
        self.plot_view = ComparePlots(self)
        self.tabs.addTab(self.plot_view, "Plots")
        # TD/BD per lobe of the reference's named branches: the means, or the clicked case/model's
        self.lobes_page = QWidget(self)
        lobes_lay = QVBoxLayout(self.lobes_page)
        lobes_lay.setContentsMargins(0, 0, 0, 0)
        self.lobes_title = QLabel(self.lobes_page)
        self.lobes_title.setObjectName("compareLobesTitle")
        self.lobes_title.setWordWrap(True)
        self.lobes = QTableWidget(self.lobes_page)
        self.lobes.setObjectName("compareLobes")
        lobes_lay.addWidget(self.lobes_title)
        lobes_lay.addWidget(self.lobes, 1)
        self.tabs.addTab(self.lobes_page, "Per lobe")
        self.lobes_pair: tuple[str, str] | None = None
        self.note = QLabel(self)
        self.note.setObjectName("compareNote")
        self.note.setWordWrap(True)
        lay.addWidget(self.tabs, 1)
        lay.addWidget(self.note)

    def _row_clicked(self, row: int, _col: int) -> None:
        if 0 <= row < len(self._pair_of_row):
            self.show_lobes(*self._pair_of_row[row])
        if 0 <= row < len(self._case_of_row):
            self.caseActivated.emit(self._case_of_row[row])

    def show_lobes(self, case: str | None = None, model: str | None = None) -> None:
        """The per-lobe table: of one case and model, or (None) the mean of each model over cases."""
        from core.anatomy.metrics import ROWS
        from core.compare.anatomy import has_anatomy, scores_of

        result = self.result
        self.lobes_pair = (case, model) if case is not None and model is not None else None
        if result is None or not has_anatomy(result):
            self.lobes_title.setText("No per-lobe figures: compared with --no-anatomy, or by an earlier version.")
            _fill(self.lobes, [], [])
            return
        row = result.row(case, model) if case is not None and model is not None else None
        if row is None:
            by = {(r["model"], r["lobe"]): r for r in self.tables.get("metrics_lobes_summary", [])}
            self.lobes_title.setText(
                "Mean TD / BD (percent) per lobe over cases; n/a: no reference has the lobe. "
                "Click a row of 'Per case' for one case."
            )
            cells: list[list[Any]] = []
            for lobe in ROWS:
                line: list[Any] = [lobe]
                for m in result.models:
                    r = by.get((m, lobe))
                    line.append(f"{_fmt(r['td_mean'])} / {_fmt(r['bd_mean'])} (n {r['n']})" if r and r["n"] else "n/a")
                cells.append(line)
            _fill(self.lobes, ["lobe"] + [f"{m} TD / BD" for m in result.models], cells)
            return
        scores = scores_of(row)
        if (case, model) in self.stale or scores is None:
            self.lobes_title.setText(f"{case} / {model}: {STALE_TEXT if scores else 'no per-lobe figures'}")
            _fill(self.lobes, [], [])
            return
        self.lobes_title.setText(f"{case} / {model}: {scores.sentence()}")
        rows = [
            [x.lobe, x.td if x.found else "n/a", x.bd if x.found else "n/a", x.branches, x.detected]
            for x in scores.lobes
        ]
        _fill(self.lobes, ["lobe", "TD %", "BD %", "branches", "detected"], rows)

    def set_result(self, result: CompareResult, tables: dict[str, list[dict[str, Any]]] | None = None) -> None:
        """``tables``: core.compare.output.tables(result), when a job made them (else made here)."""
        from core.compare.output import tables as make_tables

        self.result = result
        self.stale = set()
        self.tables = make_tables(result) if tables is None else tables
        self.plots = {}
        self.lobes_pair = None
        self._fill_tables()
        self.plot_view.set_tables(self.tables, result.models)
        self._refresh_banner()

    def _fill_tables(self) -> None:
        result = self.result
        if result is None:
            return
        header = ["model", "n"] + [k for k in STAT_METRICS]
        if result.gate:
            header.insert(2, "output gate")
        rows = []
        for r in self.tables["summary"]:
            row: list[Any] = [r["model"], r["n"]]
            if result.gate:
                per = result.gate.get(r["model"], {})
                row.append(f"passed {sum(1 for g in per.values() if g.get('passed'))} of {len(per)}" if per else "-")
            row += [_mean_sd(r[f"{k}_mean"], r[f"{k}_sd"]) for k in STAT_METRICS]
            rows.append(row)
        _fill(self.summary, header, rows)
        cols = [c for c, _ in METRIC_COLUMNS]
        gate_col = ["gate"] if result.gate else []
        case_rows = []
        self._case_of_row = []
        self._pair_of_row = []
        for r in self.tables["metrics"]:
            if (r["case"], r["model"]) in self.stale:
                values: list[Any] = [STALE_TEXT] + ["" for _ in cols[1:]]
            else:
                values = [r[c] for c in cols]
            case_rows.append([r["case"], r["model"]] + [r.get(g, "") for g in gate_col] + values)
            self._case_of_row.append(r["case"])
            self._pair_of_row.append((r["case"], r["model"]))
        _fill(self.per_case, ["case", "model"] + gate_col + cols, case_rows)
        tcols = [
            "model_a",
            "model_b",
            "metric",
            "n",
            "mean_a",
            "mean_b",
            "mean_difference",
            "p_value",
            "p_holm",
            "significant",
            "note",
        ]
        _fill(self.tests, tcols, [[r[c] for c in tcols] for r in self.tables["tests"]])
        self.show_lobes(*(self.lobes_pair or (None, None)))

    def set_stale(self, pairs: set[tuple[str, str]]) -> None:
        """(case, model) pairs whose files changed since the comparison: their figures are withdrawn."""
        if pairs == self.stale:
            return
        self.stale = set(pairs)
        self._fill_tables()
        self._refresh_banner()

    def _refresh_banner(self) -> None:
        result = self.result
        lines = []
        if result is not None:
            for m in result.gate_failed_everywhere():
                lines.append(f"{m}: every mask failed the output gate (it does not look like the CT's airway).")
        if self.stale:
            names = ", ".join(f"{c}/{m}" for c, m in sorted(self.stale))
            lines.append(
                f"{names}: {STALE_TEXT} (`airway compare` again). Their figures are withdrawn; "
                "the means, tests and plots still describe the files as they were compared."
            )
        self.banner.setText("\n".join(lines))
        self.banner.setVisible(bool(lines))
        notes = []
        if result is not None:
            notes += list(result.notes)
            if result.failures:
                notes.append(
                    f"{len(result.failures)} case/model pair(s) failed: "
                    + "; ".join(f"{f.case}/{f.model}: {f.message}" for f in result.failures[:3])
                )
        self.note.setText("\n".join(notes))

    def figures_png(self) -> dict[str, bytes]:
        """The plots as PNG (matplotlib, as the report draws them): made on first export only."""
        from core.compare import figures

        if not self.plots and self.result is not None and figures.available():
            self.plots["dsc_by_diameter"] = figures.dsc_by_diameter_png(
                self.tables["dsc_by_diameter_summary"], self.result.models
            )
            self.plots["bd_by_generation"] = figures.bd_by_generation_png(
                self.tables["bd_by_generation_summary"], self.result.models
            )
        return self.plots

    # -- exports ------------------------------------------------------------------------
    def export_csv(self, folder: str | Path) -> list[Path]:
        """Every table as CSV into ``folder``."""
        from core.compare.output import EMPTY_COLUMNS, _csv
        from core.outputs import atomic_write_bytes as atomic_write

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        for stem, rows in self.tables.items():
            p = folder / f"{stem}.csv"
            atomic_write(p, _csv(rows, EMPTY_COLUMNS.get(stem)))
            out.append(p)
        return out

    def export_png(self, path: str | Path, which: str = "dsc_by_diameter") -> Path:
        from core.errors import InputError
        from core.outputs import atomic_write_bytes as atomic_write

        plots = self.figures_png()
        if which not in plots:
            raise InputError("This plot is not available.", "Install matplotlib, or open a compare result first.")
        path = Path(path)
        atomic_write(path, plots[which])
        return path

    def export_report(self, path: str | Path, snapshots_dir: str | Path | None = None) -> Path:
        """The HTML report (with the compare folder's 3D snapshots when given)."""
        from core.compare.output import snapshot_name
        from core.compare.report import build_report
        from core.errors import InputError
        from core.outputs import atomic_write_bytes as atomic_write

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
