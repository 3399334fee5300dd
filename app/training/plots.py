"""Live training curves with pyqtgraph: loss per group and total, learning rate,
throughput and validation metrics, several runs on the same axes.

Stays smooth over long runs: curves are set from views of the runs'
preallocated columns (no copies), items clip to the visible range and
downsample by peak, and redraws are throttled to a few per second however fast
events arrive. Pens are cosmetic (width 1): Qt's raster engine strokes wider
pens far more slowly, dashed ones by orders of magnitude (measured in
benchmarks/bench_training_tab.py: 0.03 s vs 94 s for three dashed 100k-point
curves at width 1 vs 1.5).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets  # imported first so pyqtgraph binds to PySide6

from app.training.qt_workarounds import install_refcount_guard
from app.training.runs import RunHistory

install_refcount_guard()  # PySide6 6.12 on Python 3.11 leaks references (see the module)

RUN_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_LOSS_STYLES = (
    ("loss", QtCore.Qt.PenStyle.SolidLine),
    ("loss_enc", QtCore.Qt.PenStyle.DashLine),
    ("loss_dec", QtCore.Qt.PenStyle.DotLine),
)
# TD and BD alone look like success for a model that marks everything as airway (both 100 %);
# DSC, precision and the share of the volume marked as airway beside them show it is not.
_METRIC_STYLES = (
    ("td", QtCore.Qt.PenStyle.SolidLine, "o"),
    ("bd", QtCore.Qt.PenStyle.DashLine, "t1"),
    ("dsc", QtCore.Qt.PenStyle.DotLine, "s"),
    ("precision", QtCore.Qt.PenStyle.DashDotLine, "d"),
    ("marked_percent", QtCore.Qt.PenStyle.DashDotDotLine, "x"),
)


@dataclass
class _RunItems:
    history: RunHistory
    colour: str
    curves: dict[str, pg.PlotDataItem] = field(default_factory=dict)
    stage_lines: list[tuple[int, list[pg.InfiniteLine]]] = field(default_factory=list)


class TrainingPlots(QtWidgets.QWidget):
    """Four linked plots (x = global step). ``show_run``/``hide_run`` pick the runs drawn."""

    REDRAW_MS = 250

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        # the app's theme: background and text from the palette (dark in Airway Studio)
        pal = self.palette()
        bg = pal.color(pal.ColorRole.Base)
        fg = pal.color(pal.ColorRole.Text)
        pg.setConfigOptions(antialias=False, background=bg, foreground=fg)
        self._layout = pg.GraphicsLayoutWidget()
        self._layout.setBackground(bg)
        # short titles: long ones set the plots' minimum width and clipped them on the right
        self._layout.setMinimumWidth(0)
        self._layout.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Expanding)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self._layout, 1)
        self.key_label = QtWidgets.QLabel(
            "Loss: total —, encoder – –, decoder ···, epoch mean ●.  Validation: TD ● —, BD ▲ – –, DSC ■ ···, "
            "precision ◆ –·, volume marked as airway ✕ –··.  Dashed vertical lines: stage starts."
        )
        self.key_label.setWordWrap(True)
        self.key_label.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
        lay.addWidget(self.key_label)
        # One legend entry per run; line styles are explained in the key below.
        self.loss_plot = self._add_plot("Loss", 0, 0)
        self.lr_plot = self._add_plot("Learning rate", 0, 1)
        self.lr_plot.setLogMode(y=True)
        self.speed_plot = self._add_plot("Patches / s", 1, 0)
        self.metric_plot = self._add_plot("Validation %", 1, 1)
        # percentages: a fixed 0-100 axis (all-zero validation read -0.4..0.4 when auto-ranged)
        self.metric_plot.setYRange(0, 100, padding=0.02)
        self.metric_plot.enableAutoRange(axis="y", enable=False)
        self.metric_plot.setLimits(yMin=-5, yMax=105)
        self.speed_plot.setLimits(yMin=0)
        for p in (self.lr_plot, self.speed_plot, self.metric_plot):
            p.setXLink(self.loss_plot)
        self.loss_legend = self.loss_plot.addLegend(offset=(-10, 10))
        self._runs: dict[str, _RunItems] = {}
        self._dirty: set[str] = set()
        self.redraws = 0  # how many throttled redraws ran (for tests and benchmarks)
        self._timer = QtCore.QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(self.REDRAW_MS)
        self._timer.timeout.connect(self.redraw)

    def _add_plot(self, title: str, row: int, col: int) -> pg.PlotItem:
        plot = self._layout.addPlot(row=row, col=col, title=title)
        plot.showGrid(x=True, y=True, alpha=0.2)
        plot.setLabel("bottom", "global step")
        plot.setClipToView(True)
        plot.setDownsampling(auto=True, mode="peak")
        return plot

    # -- which runs are drawn ---------------------------------------------------------
    def runs(self) -> list[str]:
        return list(self._runs)

    def history_of(self, key: str) -> RunHistory | None:
        items = self._runs.get(key)
        return None if items is None else items.history

    def show_run(self, key: str, history: RunHistory, label: str | None = None) -> None:
        if key in self._runs:
            return
        used = {r.colour for r in self._runs.values()}
        colour = next((c for c in RUN_COLOURS if c not in used), RUN_COLOURS[len(self._runs) % len(RUN_COLOURS)])
        items = _RunItems(history, colour)
        name = label or history.name or key
        for column, style in _LOSS_STYLES:
            items.curves[column] = self.loss_plot.plot(
                pen=pg.mkPen(colour, style=style), name=name if column == "loss" else None, connect="finite"
            )
        items.curves["epoch_loss"] = self.loss_plot.plot(
            pen=None, symbol="o", symbolSize=5, symbolBrush=colour, symbolPen=None
        )
        items.curves["lr"] = self.lr_plot.plot(pen=pg.mkPen(colour), connect="finite")
        items.curves["patches_per_s"] = self.speed_plot.plot(pen=pg.mkPen(colour), connect="finite")
        for column, style, symbol in _METRIC_STYLES:
            items.curves[column] = self.metric_plot.plot(
                pen=pg.mkPen(colour, style=style),
                symbol=symbol,
                symbolSize=6,
                symbolBrush=colour,
                symbolPen=None,
                connect="finite",
            )
        self._runs[key] = items
        self.mark_dirty(key)

    def hide_run(self, key: str) -> None:
        items = self._runs.pop(key, None)
        if items is None:
            return
        plots = (self.loss_plot, self.lr_plot, self.speed_plot, self.metric_plot)
        for curve in items.curves.values():
            for plot in plots:
                if curve in plot.items:
                    plot.removeItem(curve)  # also drops its legend entry
        for _, lines in items.stage_lines:
            for plot, line in zip(plots, lines):
                plot.removeItem(line)
        self._dirty.discard(key)

    # -- throttled redraw ---------------------------------------------------------------
    def mark_dirty(self, key: str) -> None:
        """Note that a run has new data; it is drawn within REDRAW_MS."""
        if key in self._runs:
            self._dirty.add(key)
            if not self._timer.isActive():
                self._timer.start()

    def redraw(self) -> None:
        for key in list(self._dirty):
            items = self._runs.get(key)
            if items is not None:
                self._draw(items)
        self._dirty.clear()
        self.redraws += 1

    def _draw(self, items: _RunItems) -> None:
        h = items.history
        x = h.steps.view("x")
        for column in ("loss", "loss_enc", "loss_dec", "lr", "patches_per_s"):
            y = h.steps.view(column)
            if column == "lr":
                # log axis: non-positive rates cannot be drawn
                y = y.copy()
                y[~(y > 0)] = float("nan")
            items.curves[column].setData(x, y)
        items.curves["epoch_loss"].setData(h.epochs.view("x"), h.epochs.view("loss"))
        vx = h.validations.view("x")
        for column, *_ in _METRIC_STYLES:
            items.curves[column].setData(vx, h.validations.view(column))
        drawn = {stage for stage, _ in items.stage_lines}
        for mark in h.stages:
            if mark.stage in drawn:
                continue
            if mark.x <= 0:  # the first stage starts at step 0: a line there marks nothing
                items.stage_lines.append((mark.stage, []))
                continue
            lines = []
            for plot in (self.loss_plot, self.lr_plot, self.speed_plot, self.metric_plot):
                line = pg.InfiniteLine(
                    pos=mark.x,
                    angle=90,
                    pen=pg.mkPen(items.colour, style=QtCore.Qt.PenStyle.DashLine),
                    label=f"stage {mark.stage}" if plot is self.loss_plot else None,
                    labelOpts={"position": 0.9, "color": items.colour},
                )
                plot.addItem(line)
                lines.append(line)
            items.stage_lines.append((mark.stage, lines))

    def stage_line_positions(self, key: str) -> dict[int, float]:
        """Where each stage boundary of a run is drawn (x = global step)."""
        items = self._runs.get(key)
        if items is None:
            return {}
        return {stage: lines[0].value() for stage, lines in items.stage_lines if lines}

    def curve_data(self, key: str, column: str) -> tuple[np.ndarray, np.ndarray]:
        """The (x, y) last given to a curve (before clipping and downsampling for display)."""
        curve = self._runs[key].curves[column]
        empty = np.zeros(0)
        return (empty if curve.xData is None else curve.xData), (empty if curve.yData is None else curve.yData)
