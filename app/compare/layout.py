"""2-4 predictions side by side: per pane a slice view and a 3D view, all linked.

The slice (and crosshair) follow the shared cursor of :class:`CompareState`;
zoom and pan of one slice view are copied to the others; the 3D views share
one VTK camera, and moving it in one redraws the others. Window/level and the
overlay look are one :class:`DisplayState` for all panes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtWidgets import QComboBox, QGridLayout, QHBoxLayout, QLabel, QSplitter, QVBoxLayout, QWidget

from app.compare.state import MAX_PANES, CompareState, PaneCase, pair_dice
from app.review.slice_view import ORIENTATIONS, DisplayState, SliceRenderer, SliceView


class LinkedSliceView(SliceView):
    """A SliceView whose zoom and pan are copied to its peers."""

    smooth_downscale = False  # four views redraw per slice change (30 ms budget)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.peers: list[LinkedSliceView] = []

    def _sync(self) -> None:
        for p in self.peers:
            if p is not self and (p.zoom != self.zoom or p.pan != self.pan):
                p.zoom, p.pan = self.zoom, QPointF(self.pan)
                p.update()

    def zoom_by(self, factor: float, anchor: QPointF | None = None) -> None:
        super().zoom_by(factor, anchor)
        self._sync()

    def reset_view(self) -> None:
        super().reset_view()
        self._sync()

    def centre_on_cursor(self) -> None:
        super().centre_on_cursor()
        self._sync()

    def mouseMoveEvent(self, event: Any) -> None:  # noqa: N802 - Qt name
        super().mouseMoveEvent(event)
        if self._drag is not None and self._drag[0] == "pan":
            self._sync()


class ComparePane(QWidget):
    """One prediction: title, 'compared with' choice, slice view, 3D view."""

    def __init__(
        self,
        state: CompareState,
        index: int,
        display: DisplayState,
        renderer: SliceRenderer,
        orientation: str,
        with_3d: bool,
        track_job: Callable[[Any], None] | None,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.setObjectName(f"comparePane{index}")
        self.state = state
        self.index = index
        self.case = PaneCase(state, index, self)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.setSpacing(2)
        bar = QHBoxLayout()
        self.title = QLabel(self)
        self.title.setObjectName("paneTitle")
        bar.addWidget(self.title, 1)
        bar.addWidget(QLabel("vs", self))
        self.against = QComboBox(self)
        self.against.setObjectName("paneAgainst")
        self.against.setToolTip("Difference overlay: this prediction against the reference or another prediction")
        self.against.currentIndexChanged.connect(self._against_chosen)
        bar.addWidget(self.against)
        lay.addLayout(bar)
        self.legend = QLabel(self)
        self.legend.setObjectName("paneLegend")
        lay.addWidget(self.legend)
        split = QSplitter(Qt.Orientation.Vertical, self)
        self.slice_view = LinkedSliceView(self.case, orientation, display, renderer)
        split.addWidget(self.slice_view)
        self.view3d = None
        if with_3d:
            from app.review.view3d import View3D

            self.view3d = View3D(self.case, track_job=track_job)
            # lobe and segment colourings: the reference's names, when the pane is compared with it
            self.view3d.names_source = lambda: self.case
            split.addWidget(self.view3d)
        lay.addWidget(split, 1)
        self.case.referenceChanged.connect(self.refresh_text)
        self.case.ctChanged.connect(self.refresh)

    def set_orientation(self, orientation: str) -> None:
        self.slice_view.orientation = orientation
        self.slice_view.setObjectName(f"slice_{orientation}")
        self.slice_view.invalidate()

    def refresh(self) -> None:
        self.against.blockSignals(True)
        self.against.clear()
        for key, text in self.state.against_choices(self.index):
            self.against.addItem(text, key)
        i = self.against.findData(self.case.against)
        self.against.setCurrentIndex(max(i, 0))
        self.against.blockSignals(False)
        self.refresh_text()

    def _against_chosen(self, i: int) -> None:
        key = self.against.itemData(i)
        if key is not None:
            self.case.set_against(key)

    def refresh_text(self) -> None:
        act = self.case.active
        note = f" <span style='color:#ff6060'>{act.note}</span>" if act is not None and act.note else ""
        self.title.setText(f"<b>{act.name}</b>{note}" if act is not None else "")
        other = self.case.against_name()
        if not other:
            self.legend.setText("prediction only")
        elif other == "reference":
            self.legend.setText(
                "<span style='color:#f0e4aa'>&#9632;</span> TP  "
                "<span style='color:#28c83c'>&#9632;</span> FP  "
                "<span style='color:#e62828'>&#9632;</span> FN"
            )
        else:
            against = self.case.reference
            d = pair_dice(act.mask, against.mask) if act is not None and against is not None else float("nan")
            self.legend.setText(
                f"<span style='color:#f0e4aa'>&#9632;</span> both  "
                f"<span style='color:#28c83c'>&#9632;</span> {act.name if act is not None else ''} only  "
                f"<span style='color:#e62828'>&#9632;</span> {other} only  (Dice {d:.2f}%)"
            )


class CompareLayout(QWidget):
    """Grid of 2-4 :class:`ComparePane`; ``orientation`` is shared by all slice views."""

    orientationChanged = Signal(str)

    def __init__(
        self,
        state: CompareState | None = None,
        with_3d: bool = True,
        track_job: Callable[[Any], None] | None = None,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.setObjectName("compareLayout")
        self.state = state or CompareState(self)
        self.display = DisplayState(parent=self)
        self.renderer = SliceRenderer()
        self.with_3d = with_3d
        self.track_job = track_job
        # coronal first: through the airway's middle it shows the trachea and the bronchi of both
        # lungs in one slice, where an axial slice shows one cross-section of the trachea
        self.orientation = "coronal"
        self.panes: list[ComparePane] = []
        self._camera_linked = False
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Slices:", self))
        self.orientation_combo = QComboBox(self)
        self.orientation_combo.setObjectName("compareOrientation")
        for o in ORIENTATIONS:
            self.orientation_combo.addItem(o.capitalize(), o)
        self.orientation_combo.setCurrentIndex(self.orientation_combo.findData(self.orientation))
        self.orientation_combo.currentIndexChanged.connect(
            lambda i: self.set_orientation(self.orientation_combo.itemData(i))
        )
        bar.addWidget(self.orientation_combo)
        self.info = QLabel(self)
        self.info.setObjectName("compareInfo")
        bar.addWidget(self.info, 1)
        lay.addLayout(bar)
        self.grid_host = QWidget(self)
        self.grid = QGridLayout(self.grid_host)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(3)
        lay.addWidget(self.grid_host, 1)
        self.state.caseChanged.connect(self._on_case)

    # -- panes --------------------------------------------------------------------------
    def _on_case(self) -> None:
        n = len(self.state.predictions)
        if n != len(self.panes):
            self._build_panes(n)
        self.info.setText(
            f"{self.state.case_name}: {n} prediction(s)"
            + ("" if self.state.reference is not None else " (no reference: differences between predictions)")
            + ("" if getattr(self.state.ct, "array", None) is not None else "; no CT")
        )

    def _build_panes(self, n: int) -> None:
        for p in self.panes:
            self.grid.removeWidget(p)
            if p.view3d is not None:
                p.view3d.close()
            p.deleteLater()
        self.panes = []
        self._camera_linked = False
        cols = n if n <= 3 else 2
        for i in range(min(n, MAX_PANES)):
            pane = ComparePane(
                self.state,
                i,
                self.display,
                self.renderer,
                self.orientation,
                self.with_3d,
                self.track_job,
                self.grid_host,
            )
            self.grid.addWidget(pane, i // cols, i % cols)
            pane.show()  # a child added to a shown widget is shown only at the next event loop turn
            self.panes.append(pane)
            pane.case._on_case()  # built after caseChanged: take the case now
            pane.refresh()
        views = [p.slice_view for p in self.panes]
        for v in views:
            v.peers = views
        self.grid.activate()  # their geometry now, so the first zoom to the airway fits the real size
        self._link_cameras()

    def set_orientation(self, orientation: str) -> None:
        if orientation == self.orientation:
            return
        self.orientation = orientation
        for p in self.panes:
            p.set_orientation(orientation)
        i = self.orientation_combo.findData(orientation)
        if i >= 0 and i != self.orientation_combo.currentIndex():
            self.orientation_combo.setCurrentIndex(i)
        self.orientationChanged.emit(orientation)

    def zoom_to_airway(self, margin: float = 0.15) -> None:
        """Zoom every slice view (they are linked) to the airway: the reference and predictions' box."""
        from PySide6.QtCore import QTimer

        box = self.state.airway_box()
        views = self.slice_views()
        if box is None or not views:
            return
        v = views[0]
        if v.width() < 2 or v.height() < 2:  # not laid out yet: once it is
            QTimer.singleShot(0, lambda: self.zoom_to_airway(margin) if self.slice_views() else None)
            return
        v.fit_box(box, margin=margin)
        v._sync()

    def slice_views(self) -> list[LinkedSliceView]:
        return [p.slice_view for p in self.panes]

    def view3ds(self) -> list[Any]:
        return [p.view3d for p in self.panes if p.view3d is not None and p.view3d.plotter is not None]

    # -- 3D cameras ---------------------------------------------------------------------
    def _link_cameras(self) -> None:
        """One vtkCamera for all 3D views; an interaction in one redraws the others."""
        views = self.view3ds()
        if len(views) < 2:
            return
        cam = views[0].plotter.renderer.GetActiveCamera()
        for v in views[1:]:
            v.plotter.renderer.SetActiveCamera(cam)
        for v in views:
            iren = v.plotter.iren
            if iren is not None:
                iren.add_observer("InteractionEvent", lambda *_a, src=v: self._render_others(src))
                iren.add_observer("EndInteractionEvent", lambda *_a, src=v: self._render_others(src))
        self._camera_linked = True

    def _render_others(self, src: Any) -> None:
        for v in self.view3ds():
            if v is not src:
                v.plotter.reset_camera_clipping_range()
                v.plotter.render()

    def camera_preset(self, name: str) -> None:
        views = self.view3ds()
        if views:
            views[0].camera_preset(name)
            self._render_others(views[0])

    # -- measuring ------------------------------------------------------------------------
    def redraw_all(self) -> float:
        """Repaint every slice view now; milliseconds taken (the benchmark's figure)."""
        t0 = time.perf_counter()
        for v in self.slice_views():
            v.repaint()
        return (time.perf_counter() - t0) * 1000.0
