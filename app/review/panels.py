"""Install the review panels into the main window.

``install_panels(window)`` (called by :class:`app.main_window.MainWindow` at
the end of its construction) puts the 3D view into ``window.view3d_slot`` and
adds three docks, error regions, metrics and segmentation, with their toggles
in ``window.panels_menu``. It owns the QActions of the 3D keys (``camera_*``,
``colour_mode_next``, ``focus_cursor_3d``, ``screenshot_3d``) and of
``segment`` and ``export_metrics``; every other key belongs to the window
(``window.action_table``) and is never bound twice.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QDockWidget, QFileDialog, QFrame, QMainWindow, QScrollArea, QWidget

from app import shortcuts
from app.review.metrics_panel import MetricsPanel
from app.review.regions_panel import RegionsPanel
from app.review.segment_panel import SegmentPanel
from app.review.view3d import View3D


class MainWindow(Protocol):
    """What the panels use of app.main_window.MainWindow, which installs them (importing it
    here would close an import circle)."""

    case: Any
    settings: Any
    action_table: dict[str, QAction]
    jobs: list[Any]
    job_status: Any
    panels: Any
    panels_menu: Any
    view_menu: Any
    tools_menu: Any
    segmentationFinished: Any
    error_handler: Callable[..., Any]

    def track_job(self, job: Any, on_error: Callable[[BaseException], bool] | None = None) -> None: ...
    def set_view3d(self, widget: QWidget) -> None: ...
    def addDockWidget(self, area: Qt.DockWidgetArea, dock: QDockWidget) -> None: ...  # noqa: N802 - Qt's name
    def tabifyDockWidget(self, a: QDockWidget, b: QDockWidget) -> None: ...  # noqa: N802 - Qt's name
    def addAction(self, action: QAction) -> None: ...  # noqa: N802 - Qt's name


CAMERA_ACTIONS = (
    ("camera_reset", "reset", "Reset 3D camera"),
    ("camera_anterior", "anterior", "3D: from the front"),
    ("camera_posterior", "posterior", "3D: from the back"),
    ("camera_left", "left", "3D: from the patient's left"),
    ("camera_right", "right", "3D: from the patient's right"),
    ("camera_superior", "superior", "3D: from above"),
)


@dataclass
class Panels:
    view3d: View3D
    regions: RegionsPanel
    metrics: MetricsPanel
    segment: SegmentPanel
    docks: dict[str, QDockWidget]
    actions: dict[str, QAction]


def _error_reporter(window: MainWindow) -> Callable[[BaseException], None]:
    """Errors go through the window's handler (a dialog, or stderr in --screenshot runs)."""

    def report(exc: BaseException) -> None:
        window.error_handler(window, exc, None, title="Airway Studio")

    return report


def writable_folder(preferred: str | None) -> str:
    """``preferred`` when it is a folder we may write to (data folders often are not), else
    Pictures, else home."""
    from PySide6.QtCore import QStandardPaths

    candidates = [preferred] if preferred else []
    candidates.append(QStandardPaths.writableLocation(QStandardPaths.StandardLocation.PicturesLocation))
    candidates.append(os.path.expanduser("~"))
    for c in candidates:
        if not c:
            continue
        folder = c if os.path.isdir(c) else os.path.dirname(c)
        if folder and os.path.isdir(folder) and os.access(folder, os.W_OK):
            return folder
    return os.path.expanduser("~")


def _qt(window: MainWindow) -> QMainWindow:
    """The window as the QMainWindow it is (parent of docks, dialogs and actions)."""
    assert isinstance(window, QMainWindow)
    return window


def _dock(window: MainWindow, name: str, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
    dock = QDockWidget(title, _qt(window))
    dock.setObjectName(name)  # saveState/restoreState key
    # a panel wider than its dock scrolls instead of widening the dock (and squeezing the slice views)
    scroll = QScrollArea(dock)
    scroll.setObjectName(f"{name}Scroll")
    scroll.setWidget(widget)
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    dock.setWidget(scroll)
    dock.setMinimumWidth(220)
    dock.setAllowedAreas(
        Qt.DockWidgetArea.LeftDockWidgetArea
        | Qt.DockWidgetArea.RightDockWidgetArea
        | Qt.DockWidgetArea.BottomDockWidgetArea
    )
    window.addDockWidget(area, dock)
    window.panels_menu.addAction(dock.toggleViewAction())
    return dock


def install_panels(window: MainWindow) -> Panels:
    case = window.case
    report = _error_reporter(window)

    view3d = View3D(case, track_job=window.track_job)
    window.set_view3d(view3d)

    regions = RegionsPanel(case)
    metrics = MetricsPanel(case)
    segment = SegmentPanel(case, settings=window.settings, show_error=report)
    right = Qt.DockWidgetArea.RightDockWidgetArea
    docks = {
        "regions": _dock(window, "regionsDock", "Error regions", regions, right),
        "metrics": _dock(window, "metricsDock", "Metrics", metrics, right),
        "segment": _dock(window, "segmentDock", "Segment", segment, right),
    }
    # one column of tabs: a panel stacked under the navigator got 150 px of height at 1024 x 700
    # and showed its first rows only (issue 22: "the Segment panel is clipped")
    window.tabifyDockWidget(docks["regions"], docks["metrics"])
    window.tabifyDockWidget(docks["metrics"], docks["segment"])
    docks["regions"].raise_()

    def show_run(run: Any) -> None:
        # like the window's own jobs: progress and Cancel in the status bar,
        # Esc cancels it, and the window counts as busy while it runs
        window.job_status.add(run, ended=run.ended, label=f"Segmenting with {run.name}")
        jobs = window.jobs
        jobs.append(run)
        run.ended.connect(lambda r=run: jobs.remove(r) if r in jobs else None)

    segment.runStarted.connect(show_run)

    segment.segmentationFinished.connect(window.segmentationFinished.emit)

    existing: dict[str, QAction] = window.action_table
    actions: dict[str, QAction] = {}

    def act(name: str, text: str, slot: Callable[..., Any]) -> QAction | None:
        if name in existing:  # the window already binds it: never two actions on one key
            return None
        a = shortcuts.make_action(_qt(window), name, text, slot)
        a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        window.addAction(a)
        actions[name] = a
        existing[name] = a
        return a

    for name, preset, text in CAMERA_ACTIONS:
        act(name, text, lambda _=False, p=preset: view3d.camera_preset(p))
    act("colour_mode_next", "3D colouring: next mode", view3d.cycle_colour_mode)
    act("focus_cursor_3d", "3D: focus on the crosshair", view3d.focus_cursor)

    def screenshot_3d() -> None:
        start = os.path.join(writable_folder(window.settings.last_dir()), "airway_3d.png")
        path, _ = QFileDialog.getSaveFileName(_qt(window), "Save the 3D view", start, "PNG image (*.png)")
        if path:
            try:
                view3d.save_screenshot(path)
            except Exception as exc:  # noqa: BLE001 - shown, never raised into Qt
                report(exc)

    act("screenshot_3d", "Save the 3D view as PNG...", screenshot_3d)

    def segment_now() -> None:
        docks["segment"].show()
        docks["segment"].raise_()
        segment.start()

    act("segment", "&Segment with a model...", segment_now)
    act("export_metrics", "&Export metrics...", metrics.export_dialog)

    view_menu = window.view_menu
    if view_menu is not None:
        m3d = view_menu.addMenu("&3D view")
        for name in [n for n, _, _ in CAMERA_ACTIONS] + ["colour_mode_next", "focus_cursor_3d", "screenshot_3d"]:
            if name in existing:
                m3d.addAction(existing[name])
    tools = window.tools_menu
    if tools is not None:
        first = tools.actions()[0] if tools.actions() else None
        for name in ("segment", "export_metrics"):
            if name in actions:
                tools.insertAction(first, actions[name])

    panels = Panels(view3d, regions, metrics, segment, docks, actions)
    window.panels = panels
    freeze_startup_objects()
    return panels


def freeze_startup_objects() -> None:
    """Move every object alive now (Qt, VTK, numpy modules...) out of the cyclic GC's reach.

    A full collection walks every tracked object: with VTK and pyvista loaded
    that is about 300,000 objects and 0.2-0.5 s on the GUI thread, a visible
    freeze at random moments. Startup objects live for the whole session, so
    freezing them (``gc.freeze``, as large Python services do after start-up)
    loses nothing and keeps each collection to what the session allocates.
    """
    import gc

    gc.collect()
    gc.freeze()
