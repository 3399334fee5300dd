"""The Compare tab's plots, drawn live with pyqtgraph so they resize with their panel
(fixed-size images were cut off in a ~230 px panel): DSC per airway diameter
(Zheng et al. 2021, Fig. 6; mean and sd over cases per model) and branches
detected per generation (grouped bars). The report keeps matplotlib's PNGs."""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets  # imported first so pyqtgraph binds to PySide6

from app.training.qt_workarounds import install_refcount_guard

install_refcount_guard()  # PySide6 leaks references through pyqtgraph without it (see the module)

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _finite(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else math.nan


class ComparePlots(QtWidgets.QWidget):
    """Two plots side by side (stacked when the panel is narrow); ``set_tables(tables, models)``."""

    NARROW_PX = 700

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("comparePlots")
        pal = self.palette()
        bg = pal.color(pal.ColorRole.Base)
        fg = pal.color(pal.ColorRole.Text)
        self.view = pg.GraphicsLayoutWidget()
        self.view.setBackground(bg)
        self.view.setMinimumSize(0, 0)
        self.view.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Ignored)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.view, 1)
        # one key for both plots, outside them: legends inside covered the data in a small panel
        self.key = QtWidgets.QLabel(self)
        self.key.setObjectName("comparePlotKey")
        self.key.setWordWrap(True)
        self.key.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
        lay.addWidget(self.key)
        self.dsc_plot = pg.PlotItem(title="DSC per airway diameter")
        self.bd_plot = pg.PlotItem(title="Branches detected per generation")
        for p, ylabel in ((self.dsc_plot, "DSC (%)"), (self.bd_plot, "BD (%)")):
            p.setLabel("left", ylabel, color=fg.name())
            p.showGrid(x=False, y=True, alpha=0.3)
            p.setYRange(0, 105)
            p.setMouseEnabled(x=False, y=False)
            p.hideButtons()
            for side in ("bottom", "left"):
                p.getAxis(side).enableAutoSIPrefix(False)
        self.dsc_plot.setLabel("bottom", "airway diameter")
        self.bd_plot.setLabel("bottom", "generation (trachea 0)")
        self._stacked: bool | None = None
        self._place()
        self.series: dict[str, np.ndarray] = {}  # what is drawn, for tests and exports

    def _place(self) -> None:
        stacked = self.width() < self.NARROW_PX
        if stacked == self._stacked:
            return
        self._stacked = stacked
        self.view.ci.clear()
        self.view.addItem(self.dsc_plot, row=0, col=0)
        if stacked:
            self.view.addItem(self.bd_plot, row=1, col=0)
        else:
            self.view.addItem(self.bd_plot, row=0, col=1)

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 - Qt name
        super().resizeEvent(event)
        self._place()

    def clear(self) -> None:
        for p in (self.dsc_plot, self.bd_plot):
            p.clear()
        self.series = {}
        self.key.setText("")

    def set_tables(self, tables: dict[str, list[dict[str, Any]]], models: list[str]) -> None:
        self.clear()
        dia = tables.get("dsc_by_diameter_summary", [])
        labels: list[str] = []
        for r in dia:
            if r["interval"] not in labels:
                labels.append(r["interval"])
        x = np.arange(len(labels), dtype=float)
        n = max(len(models), 1)
        for k, model in enumerate(models):
            colour = COLOURS[k % len(COLOURS)]
            rows = {r["interval"]: r for r in dia if r["model"] == model}
            y = np.array([_finite(rows[lab]["dsc_mean"]) if lab in rows else math.nan for lab in labels])
            e = np.array([_finite(rows[lab]["dsc_sd"]) if lab in rows else math.nan for lab in labels])
            xs = x + (k - (n - 1) / 2) * 0.05
            ok = np.isfinite(y)
            if ok.any():
                self.dsc_plot.plot(xs[ok], y[ok], pen=pg.mkPen(colour, width=1), symbol="o", symbolBrush=colour)
                bars = ok & np.isfinite(e)
                if bars.any():
                    self.dsc_plot.addItem(
                        pg.ErrorBarItem(x=xs[bars], y=y[bars], height=2 * e[bars], beam=0.08, pen=pg.mkPen(colour))
                    )
            self.series[f"dsc:{model}"] = y
        self.dsc_plot.getAxis("bottom").setTicks([list(enumerate(labels))])
        self.dsc_plot.setXRange(-0.5, max(len(labels) - 0.5, 0.5))

        gen_rows = tables.get("bd_by_generation_summary", [])
        gens = sorted({int(r["generation"]) for r in gen_rows})
        gx = np.arange(len(gens), dtype=float)
        width = 0.8 / n
        for k, model in enumerate(models):
            colour = COLOURS[k % len(COLOURS)]
            rows_g = {int(r["generation"]): r for r in gen_rows if r["model"] == model}
            y = np.array([_finite(rows_g[g]["bd_mean"]) if g in rows_g else math.nan for g in gens])
            xs = gx + (k - (n - 1) / 2) * width
            self.bd_plot.addItem(
                pg.BarGraphItem(x=xs, height=np.nan_to_num(y), width=width * 0.95, brush=colour, pen=pg.mkPen(None))
            )
            self.series[f"bd:{model}"] = y
        self.bd_plot.getAxis("bottom").setTicks([[(i, str(g)) for i, g in enumerate(gens)]])
        self.bd_plot.setXRange(-0.6, max(len(gens) - 0.4, 0.6))
        self.key.setText(
            "  ".join(
                f"<span style='color:{COLOURS[k % len(COLOURS)]}'>&#9632;</span> {html.escape(m)}"
                for k, m in enumerate(models)
            )
            + "  (DSC: mean &plusmn; sd over cases; BD: mean over cases)"
        )

    def sizeHint(self) -> QtCore.QSize:  # noqa: N802 - Qt name
        return QtCore.QSize(400, 220)
