"""The main window: menus, the Review and Training tabs, docks and the status bar.

The window owns the QActions of every key in :mod:`app.shortcuts` that acts on
the case (regions, overlay, window presets), so a key is bound exactly once;
panels look actions up in ``window.action_table`` (named so that it never hides
``QWidget.actions()``) instead of binding keys again.
Panels of the other parts are installed by ``app.review.panels.install_panels(window)``
when that module exists; they put the 3D view into ``window.view3d_slot`` (see
:meth:`MainWindow.set_view3d`) and add docks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QSlider,
    QSplitter,
    QTabWidget,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app import shortcuts
from app.dialogs import APP_NAME, AboutDialog, ShortcutsDialog, ask_resample, show_error
from app.progress_bar import show_progress
from app.review.case import STATUS_KEYS, STATUS_LABELS, Case, apply_project, is_blank_ct, load_project
from app.review.slice_view import ORIENTATIONS, DisplaySettings, DisplayState, SliceRenderer, SliceView
from app.settings import Settings
from app.workers import Job, guarded
from core.box import Box
from core.errors import InputError

VOLUME_FILTER = "Volumes (*.nii *.nii.gz *.mha *.mhd *.nrrd *.nhdr);;All files (*)"
PROJECT_FILTER = "Airway Studio project (*.json)"
REFERENCE_HINTS = ("label", "ref", "gt", "groundtruth", "ground_truth", "annotation", "lm-", "lm_")
PREDICTION_HINTS = ("pred", "seg", "mask", "prob", "output", "result", "airway")


def demo_model_path() -> Path | None:
    from core.resources import shipped_model_path

    return shipped_model_path()


class JobStatus(QWidget):
    """Progress of the running background jobs with a Cancel button (status bar)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.label = QLabel("")
        self.bar = QProgressBar()
        self.bar.setFixedWidth(180)
        self.bar.setTextVisible(True)
        self.cancel_button = QToolButton()
        self.cancel_button.setText("Cancel")
        self.cancel_button.setObjectName("cancelJobButton")
        lay.addWidget(self.label)
        lay.addWidget(self.bar)
        lay.addWidget(self.cancel_button)
        self.jobs: list[Any] = []
        self.labels: dict[int, str] = {}
        self.cancel_button.clicked.connect(self.cancel_all)
        self.setVisible(False)

    def add(self, job: Any, ended: Any = None, label: str | None = None) -> None:
        """Track anything with ``name``, ``cancel()``, a ``progress(int, int, str)`` signal
        and an end signal (``finished`` for a Job, ``ended`` for a segmentation run)."""
        self.jobs.append(job)
        job.progress.connect(guarded(self, lambda d, t, m, j=job: self._progress(j, d, t, m)))
        (ended or job.finished).connect(guarded(self, lambda *_, j=job: self._finished(j)))
        self.labels[id(job)] = label or job.name
        self.label.setText(self.labels[id(job)])
        show_progress(self.bar, 0, 0)
        self.setVisible(True)

    def _progress(self, job: Job, done: int, total: int, message: str) -> None:
        if self.jobs and job is not self.jobs[-1]:
            return
        show_progress(self.bar, done, total)
        name = self.labels.get(id(job), job.name)
        self.label.setText(f"{name}: {message}" if message else name)

    def _finished(self, job: Job) -> None:
        if job in self.jobs:
            self.jobs.remove(job)
        self.labels.pop(id(job), None)
        if self.jobs:
            self.label.setText(self.labels.get(id(self.jobs[-1]), self.jobs[-1].name))
            show_progress(self.bar, 0, 0)
        else:
            self.setVisible(False)

    def cancel_all(self) -> None:
        for job in list(self.jobs):
            job.cancel()


class MainWindow(QMainWindow):
    """Airway Studio's window over one :class:`Case`."""

    caseLoaded = Signal()  # a loading job's result was applied
    labelSaved = Signal(object)  # Path of a reference or prediction file written by a save
    segmentationFinished = Signal(int)  # index of the new prediction

    def __init__(
        self,
        case: Case | None = None,
        settings: Settings | None = None,
        install_panels: bool = True,
        training_tab: bool = True,
    ):
        super().__init__()
        self.case = case or Case(self)
        self.settings = settings or Settings()
        self.ephemeral = getattr(self.settings, "_tmp", None) is not None
        self.display = DisplayState(DisplaySettings(), self)
        self.renderer = SliceRenderer()
        self.action_table: dict[str, QAction] = {}
        self.panels: Any = None  # app.review.panels.Panels once installed (tests may run without)
        self.jobs: list[Any] = []  # Jobs and segmentation runs (both have name, cancel(), progress)
        self._hidden_docks: list[Any] | None = None  # docks hidden while another tab shows
        self._saving: set[str] = set()  # layers with a save running
        self.training_tab: Any = None
        self.last_error: BaseException | None = None
        # every error the window shows goes through here (one dialog); --screenshot swaps in a printer
        self.error_handler: Callable[..., Any] = show_error
        self.setObjectName("MainWindow")
        self.setAcceptDrops(True)
        self.resize(1440, 920)
        self.setMinimumSize(QSize(900, 600))

        self._recovery_offered = False
        self._build_views()
        self._build_actions()
        self._build_menus()
        self._build_toolbar()
        self._build_status()
        self._connect_case()
        if training_tab:
            self._add_training_tab()
        if install_panels:
            self._install_panels()
            self._install_compare()
        from app.dataset import install_dataset

        self.dataset = install_dataset(self)  # File > Open dataset, the worklist dock, Save and next case
        if self.training_tab is not None:  # 'Fine-tune on reviewed cases' works on the open dataset
            self.dataset.datasetOpened.connect(self._dataset_to_training)
            self.dataset.reviewSaved.connect(lambda *_: self.training_tab.refresh_dataset())
        self._restore_settings()
        self._update_title()
        self._refresh_predictions()

    # -- layout ------------------------------------------------------------------------
    def _build_views(self) -> None:
        self.tabs = QTabWidget(self)
        self.tabs.setObjectName("mainTabs")
        self.tabs.setDocumentMode(True)
        self.review = QWidget()
        self.review.setObjectName("reviewTab")
        self.views: dict[str, SliceView] = {
            o: SliceView(self.case, o, self.display, self.renderer) for o in ORIENTATIONS
        }
        from app.review.edit_tools import EditTools

        self.edit_tools = EditTools(self.case, self)
        from app.review.naming_dialog import branch_menu

        for v in self.views.values():
            v.hovered.connect(self._on_hover)
            v.tools = self.edit_tools
            v.branch_menu = lambda parent, zyx: branch_menu(self.case, parent, zyx)
        self.view3d_slot = QWidget()
        self.view3d_slot.setObjectName("view3dSlot")
        slot_lay = QVBoxLayout(self.view3d_slot)
        slot_lay.setContentsMargins(0, 0, 0, 0)
        self.view3d_placeholder = QLabel("3D view")
        self.view3d_placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.view3d_placeholder.setStyleSheet("background:#0c0c0e; color:#82828c;")
        slot_lay.addWidget(self.view3d_placeholder)

        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(self.views["axial"])
        top.addWidget(self.views["coronal"])
        bottom = QSplitter(Qt.Orientation.Horizontal)
        bottom.addWidget(self.views["sagittal"])
        bottom.addWidget(self.view3d_slot)
        self.grid = QSplitter(Qt.Orientation.Vertical)
        self.grid.addWidget(top)
        self.grid.addWidget(bottom)
        for s in (top, bottom, self.grid):
            s.setHandleWidth(3)
            s.setChildrenCollapsible(False)
            s.setSizes([1000, 1000])
        # keep the two columns aligned when either row's handle moves or the window resizes
        self._rows = (top, bottom)
        top.splitterMoved.connect(lambda *_: self._align_columns(top))
        bottom.splitterMoved.connect(lambda *_: self._align_columns(bottom))
        for w in (top, bottom, self.view3d_slot):
            w.installEventFilter(self)
        lay = QVBoxLayout(self.review)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.grid)
        self.tabs.addTab(self.review, "Review")
        self.setCentralWidget(self.tabs)
        self.setDockOptions(QMainWindow.DockOption.AnimatedDocks | QMainWindow.DockOption.AllowTabbedDocks)

    def _reset_view_state(self) -> None:
        """A new case starts unzoomed, and a custom window/level goes back to the default preset
        (a project's saved view is applied after this)."""
        for v in self.views.values():
            v.reset_view()
        if self.display.settings.preset == "custom":
            self.display.apply_preset(DisplaySettings().preset)
            self._sync_display_controls()

    def _fit_views(self, box: Box) -> None:
        for v in self.views.values():
            v.fit_box(box)

    def _align_columns(self, leader: QSplitter | None = None) -> None:
        """Give both rows the same column widths; a row whose widgets cannot shrink
        that far (e.g. the 3D view's toolbar) leads."""
        import shiboken6

        top, bottom = self._rows
        # a queued call can outlive the splitters (a window closed and deleted meanwhile)
        if not (shiboken6.isValid(top) and shiboken6.isValid(bottom)):
            return
        if leader is None:  # after a resize: the row with the wider minimum on the right leads
            leader = bottom if self._right_min_width(bottom) > self._right_min_width(top) else top
        other = bottom if leader is top else top
        other.setSizes(leader.sizes())
        if other.sizes() != leader.sizes():
            leader.setSizes(other.sizes())

    @staticmethod
    def _right_min_width(row: QSplitter) -> int:
        w = row.widget(1)
        return 0 if w is None else w.minimumSizeHint().width()

    def eventFilter(self, obj: Any, event: Any) -> bool:
        from PySide6.QtCore import QEvent

        if event.type() in (QEvent.Type.Resize, QEvent.Type.LayoutRequest) and obj in (*self._rows, self.view3d_slot):
            QTimer.singleShot(0, self, self._align_columns)
        return super().eventFilter(obj, event)

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        QTimer.singleShot(0, self, self._align_columns)
        QTimer.singleShot(0, self, self._fit_docks)

    def showEvent(self, event: Any) -> None:
        if not self._recovery_offered and not self.ephemeral:
            self._recovery_offered = True
            QTimer.singleShot(0, self.offer_recovery)
        super().showEvent(event)
        self._fit_to_screen()
        QTimer.singleShot(0, self, self._align_columns)
        first = not getattr(self, "_shown_once", False) and not getattr(self, "_state_restored", False)
        self._shown_once = True
        QTimer.singleShot(0, self, lambda: self._fit_docks(first=first))

    # side docks: a default share of the width, never so much that the slice views get less than half
    DOCK_SHARE, DOCK_MAX_SHARE, DOCK_MIN_PX = 0.27, 0.4, 330

    def _side_docks(self) -> list[Any]:
        from PySide6.QtWidgets import QDockWidget

        return [
            d
            for d in self.findChildren(QDockWidget)
            if d.isVisible()
            and not d.isFloating()
            and self.dockWidgetArea(d) in (Qt.DockWidgetArea.RightDockWidgetArea, Qt.DockWidgetArea.LeftDockWidgetArea)
        ]

    def _fit_docks(self, first: bool = False) -> None:
        docks = self._side_docks()
        if not docks:
            return
        w = max(self.width(), 1)
        widest = max(d.width() for d in docks)
        cap = max(int(w * self.DOCK_MAX_SHARE), self.DOCK_MIN_PX)
        if first or widest > cap:
            target = max(int(w * self.DOCK_SHARE), self.DOCK_MIN_PX) if first else cap
            self.resizeDocks(docks, [min(target, cap)] * len(docks), Qt.Orientation.Horizontal)

    def _fit_to_screen(self) -> None:
        """A restored or requested size never exceeds the screen's free area (the start hint stays visible)."""
        screen = self.screen() or QApplication.primaryScreen()
        if screen is None:
            return
        avail = screen.availableGeometry()
        frame = self.frameGeometry()
        extra_w, extra_h = frame.width() - self.width(), frame.height() - self.height()
        w = min(self.width(), avail.width() - extra_w)
        h = min(self.height(), avail.height() - extra_h)
        if (w, h) != (self.width(), self.height()):
            self.resize(max(w, self.minimumWidth()), max(h, self.minimumHeight()))
        if not avail.contains(self.frameGeometry().topLeft()):
            self.move(avail.topLeft())

    def set_view3d(self, widget: QWidget) -> None:
        """Put the 3D view in the bottom-right cell (replaces the placeholder)."""
        lay = self.view3d_slot.layout()
        assert lay is not None  # made in _build_views
        self.view3d_placeholder.hide()
        lay.removeWidget(self.view3d_placeholder)
        lay.addWidget(widget)
        self.view3d = widget
        # a pick on an error region selects it, so A / R correct it from the 3D view too
        picked = getattr(widget, "picked", None)
        if picked is not None:
            picked.connect(self._select_region_at)
        from app.review.view3d import View3D

        if isinstance(widget, View3D):
            from app.review.naming_dialog import branch_menu

            widget.names_source = lambda: self.case.session.names
            widget.branch_menu = lambda parent, zyx: branch_menu(self.case, parent, zyx)
            self.case.namesChanged.connect(widget.names_changed)

    def _select_region_at(self, voxel: Any) -> None:
        i = self.case.region_at(voxel)
        if i >= 0 and i != self.case.active_region:
            self.case.active_region = i
            self.case.activeRegionChanged.emit(i)

    def _dataset_to_training(self) -> None:
        ds = self.dataset.dataset
        self.training_tab.set_dataset(None if ds is None else (ds.source or ds.root))

    def _add_training_tab(self) -> None:
        try:
            from app.training.tab import TrainingTab

            self.training_tab = TrainingTab(self, settings=self.settings)
        except Exception as exc:  # noqa: BLE001 - a broken tab must not take the review down
            self.training_tab = None
            self.statusBar().showMessage(f"Training tab unavailable: {exc}", 10000)
            return
        self.tabs.addTab(self.training_tab, "Training")

        def ct_changed() -> None:
            self.training_tab.set_ct_available(self.case.ct is not None and not is_blank_ct(self.case.ct))

        self.case.ctChanged.connect(ct_changed)
        ct_changed()
        self.tabs.currentChanged.connect(self._on_tab_changed)
        self.training_tab.openCheckpointRequested.connect(self._segment_with_checkpoint_from_training)

    def _install_compare(self) -> None:
        try:
            from app.compare import install_compare

            install_compare(self)
        except Exception as exc:  # noqa: BLE001 - a broken tab must not take the review down
            import traceback

            self.report_error(exc, traceback.format_exc())

    def _on_tab_changed(self, _index: int) -> None:
        """The review docks belong to the Review tab: hidden on the others, back as they were."""
        from PySide6.QtWidgets import QDockWidget

        on_review = self.tabs.currentWidget() is self.review
        if not on_review:
            if getattr(self, "_hidden_docks", None) is None:
                self._hidden_docks = [d for d in self.findChildren(QDockWidget) if d.isVisible()]
                for d in self._hidden_docks:
                    d.hide()
        else:
            for d in getattr(self, "_hidden_docks", None) or []:
                d.show()
            self._hidden_docks = None

    def _install_panels(self) -> None:
        try:
            from app.review.panels import install_panels

            install_panels(self)
        except Exception as exc:  # noqa: BLE001
            import traceback

            self.report_error(exc, traceback.format_exc())

    # -- actions -------------------------------------------------------------------------
    def _act(
        self,
        name: str,
        text: str,
        slot: Callable[..., Any] | None = None,
        checkable: bool = False,
        checked: bool = False,
    ) -> QAction:
        a = shortcuts.make_action(self, name, text, slot, checkable)
        if checkable:
            a.setChecked(checked)
        a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        self.addAction(a)
        self.action_table[name] = a
        return a

    def _build_actions(self) -> None:
        A = self._act
        A("open_ct", "Open &CT...", self.open_ct_dialog)
        A("open_dicom", "Open DICOM &folder...", self.open_dicom_dialog)
        A("open_reference", "Open &reference label (CT optional)...", self.open_reference_dialog)
        A("open_prediction", "Open &prediction (CT optional)...", self.open_prediction_dialog)
        A("open_project", "Open pro&ject...", self.open_project_dialog)
        A("save_project", "&Save project", self.save_project)
        A("save_project_as", "Save project &as...", lambda: self.save_project(ask=True))
        A("open_demo", "Open &demo case", self.open_demo)
        A("screenshot", "Save screens&hot...", self.screenshot_dialog)
        A("quit", "&Quit", self.close)
        for key, label in (("preset_lung", "lung"), ("preset_mediastinum", "mediastinum"), ("preset_bone", "bone")):
            A(key, f"{label.capitalize()} window", lambda _=False, k=label: self.display.apply_preset(k))
        A("preset_next", "Next window preset", lambda: self.display.next_preset())
        A("reset_view", "&Fit views", self.reset_views)
        A("zoom_in", "Zoom in", lambda: self._zoom_views(1.25))
        A("zoom_out", "Zoom out", lambda: self._zoom_views(1 / 1.25))
        A("centre_cursor", "&Centre on crosshair", self._centre_views)
        A("toggle_crosshair", "Cross&hair", lambda on: self.display.update(crosshair=on), True, True)
        A("toggle_overlay", "&Overlay", lambda on: self.display.update(show_overlay=on), True, True)
        A("toggle_outline", "Overlay as out&lines", lambda on: self.display.update(outline=on), True, False)
        A("toggle_tp", "Show true positives", lambda on: self._set_visible("TP", on), True, True)
        A("toggle_fp", "Show false positives", lambda on: self._set_visible("FP", on), True, True)
        A("toggle_fn", "Show false negatives", lambda on: self._set_visible("FN", on), True, True)
        A("toggle_heatmap", "Probability &heat map", lambda on: self.display.update(heatmap=on), True, False)
        A("opacity_up", "More opacity", lambda: self._set_opacity(self.display.settings.opacity + 0.1))
        A("opacity_down", "Less opacity", lambda: self._set_opacity(self.display.settings.opacity - 0.1))
        A("next_prediction", "Next prediction", lambda: self._cycle_prediction(1))
        A("previous_prediction", "Previous prediction", lambda: self._cycle_prediction(-1))
        A("next_region", "&Next error region", lambda: self.step_review(1))
        A("previous_region", "&Previous error region", lambda: self.step_review(-1))
        for key in STATUS_KEYS:
            A(f"status_{key}", f"Mark region: {STATUS_LABELS[key]}", lambda _=False, k=key: self.mark_region(k))
        A("add_to_reference", "&Add region to the reference", lambda: self.correct_region("FP"))
        A("remove_from_reference", "Re&move region from the reference", lambda: self.correct_region("FN"))
        A("undo", "&Undo", lambda: self.case.undo())
        A("redo", "&Redo", lambda: self.case.redo())
        A("tool_brush", "&Brush", lambda: self.edit_tools.set_mode("brush"))
        A("tool_eraser", "&Eraser", lambda: self.edit_tools.set_mode("eraser"))
        A("tool_fill", "&Flood fill", lambda: self.edit_tools.set_mode("fill"))
        A("brush_larger", "Larger brush", lambda: self.edit_tools.resize(1))
        A("brush_smaller", "Smaller brush", lambda: self.edit_tools.resize(-1))
        A("brush_form", "Brush disc / sphere", lambda: self.edit_tools.toggle_form())
        A("brush_hu_limit", "Brush limited to its HU range", lambda: self.edit_tools.toggle_hu_limit())
        A("edit_target", "Edit reference / prediction", lambda: self.edit_tools.toggle_target())
        A("save_reference", "&Save edited reference", self.save_reference)
        A("save_reference_as", "Save reference &as...", self.save_reference_as)
        A("save_prediction_as", "Save &prediction as...", self.save_prediction_as)
        A("use_prediction_as_reference", "&Use this prediction as the reference", self.use_prediction_as_reference)
        A("segment_demo", "Segment with the &shipped model", self.segment_demo)
        A("cancel_job", "Cancel background jobs", self.cancel_jobs)
        A("help_shortcuts", "&Keyboard shortcuts", self.show_shortcuts)
        self.about_action = QAction(f"&About {APP_NAME}", self)
        self.about_action.triggered.connect(self.show_about)
        self.action_table["segment_demo"].setEnabled(demo_model_path() is not None)

    def _build_menus(self) -> None:
        mb = self.menuBar()
        a = self.action_table
        self.file_menu = mb.addMenu("&File")
        for n in ("open_ct", "open_dicom", "open_reference", "open_prediction"):
            self.file_menu.addAction(a[n])
        self.file_menu.addSeparator()
        for n in ("open_project", "save_project", "save_project_as"):
            self.file_menu.addAction(a[n])
        self.file_menu.addSeparator()
        for n in ("save_reference", "save_reference_as", "save_prediction_as"):
            self.file_menu.addAction(a[n])
        self.recent_menu = self.file_menu.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        self.file_menu.addSeparator()
        self.file_menu.addAction(a["open_demo"])
        self.file_menu.addAction(a["screenshot"])
        self.file_menu.addSeparator()
        self.file_menu.addAction(a["quit"])

        self.view_menu = mb.addMenu("&View")
        wl = self.view_menu.addMenu("&Window / level")
        for n in ("preset_lung", "preset_mediastinum", "preset_bone", "preset_next"):
            wl.addAction(a[n])
        ov = self.view_menu.addMenu("&Overlay")
        for n in (
            "toggle_overlay",
            "toggle_outline",
            "toggle_tp",
            "toggle_fp",
            "toggle_fn",
            "toggle_heatmap",
            "opacity_up",
            "opacity_down",
            "next_prediction",
            "previous_prediction",
        ):
            ov.addAction(a[n])
        self.view_menu.addSeparator()
        for n in ("toggle_crosshair", "centre_cursor", "zoom_in", "zoom_out", "reset_view"):
            self.view_menu.addAction(a[n])
        self.view_menu.addSeparator()
        self.panels_menu = self.view_menu.addMenu("&Panels")

        self.regions_menu = mb.addMenu("&Regions")
        for n in ("next_region", "previous_region"):
            self.regions_menu.addAction(a[n])
        self.regions_menu.addSeparator()
        for key in STATUS_KEYS:
            self.regions_menu.addAction(a[f"status_{key}"])

        self.edit_menu = mb.addMenu("&Edit")
        for entry in (
            "undo",
            "redo",
            None,
            "add_to_reference",
            "remove_from_reference",
            None,
            "tool_brush",
            "tool_eraser",
            "tool_fill",
            "brush_larger",
            "brush_smaller",
            "brush_form",
            "brush_hu_limit",
            "edit_target",
            None,
            "use_prediction_as_reference",
            "save_reference",
            "save_reference_as",
            "save_prediction_as",
        ):
            if entry is None:
                self.edit_menu.addSeparator()
            else:
                self.edit_menu.addAction(a[entry])

        self.tools_menu = mb.addMenu("&Tools")
        self.tools_menu.addAction(a["segment_demo"])
        self.tools_menu.addAction(a["cancel_job"])

        # "He&lp", not "&Help": Alt+H is the brush's HU limit (a menu-bar mnemonic on the same
        # keys makes Qt report an ambiguous shortcut and run neither)
        self.help_menu = mb.addMenu("He&lp")
        self.help_menu.addAction(a["help_shortcuts"])
        self.help_menu.addAction(self.about_action)

    def _build_toolbar(self) -> None:
        tb = QToolBar("Display", self)
        tb.setObjectName("displayToolbar")
        tb.setMovable(False)
        tb.setIconSize(QSize(16, 16))
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, tb)
        tb.addWidget(QLabel(" Prediction "))
        self.prediction_combo = QComboBox()
        self.prediction_combo.setObjectName("predictionCombo")
        # capped: folder-qualified names (preds_timi/ATM_305_0000) pushed the heat-map button into
        # the toolbar's overflow at 1024 px; the whole name is in the list and the tooltip
        self.prediction_combo.setMinimumWidth(180)
        self.prediction_combo.setMaximumWidth(200)
        self.prediction_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.prediction_combo.view().setTextElideMode(Qt.TextElideMode.ElideNone)
        self.prediction_combo.currentIndexChanged.connect(self._on_prediction_combo)
        self.prediction_combo.currentTextChanged.connect(self.prediction_combo.setToolTip)
        tb.addWidget(self.prediction_combo)
        tb.addSeparator()
        tb.addWidget(QLabel(" Window "))
        self.preset_combo = QComboBox()
        self.preset_combo.setObjectName("presetCombo")
        for p in self.display.presets:
            self.preset_combo.addItem(f"{p.name} (W{p.window:.0f} / L{p.level:.0f})", p.key)
        self.preset_combo.addItem("Custom", "custom")
        self.preset_combo.activated.connect(self._on_preset_combo)
        tb.addWidget(self.preset_combo)
        tb.addSeparator()
        tb.addWidget(QLabel(" Opacity "))
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setObjectName("opacitySlider")
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setFixedWidth(110)
        self.opacity_slider.setValue(int(self.display.settings.opacity * 100))
        self.opacity_slider.valueChanged.connect(lambda v: self._set_opacity(v / 100.0, from_slider=True))
        tb.addWidget(self.opacity_slider)
        self.class_boxes: dict[str, QCheckBox] = {}
        colors = self.renderer.colors["classes"]
        for key in ("TP", "FP", "FN"):
            box = QCheckBox(key)
            box.setObjectName(f"show{key}")
            r, g, b = colors[key]["rgb"]
            box.setStyleSheet(f"QCheckBox {{ color: rgb({r},{g},{b}); font-weight: bold; padding-left: 6px; }}")
            box.setChecked(True)
            box.setToolTip(f"{colors[key]['label']} ({shortcuts.key_text('toggle_' + key.lower())})")
            box.toggled.connect(lambda on, k=key: self._set_visible(k, on))
            self.class_boxes[key] = box
            tb.addWidget(box)
        tb.addSeparator()
        for n, label in (("toggle_outline", "Outline"), ("toggle_heatmap", "Heat map")):
            btn = QToolButton()
            btn.setDefaultAction(self.action_table[n])
            btn.setText(label)
            btn.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            tb.addWidget(btn)
        self.display_toolbar = tb
        self.display.changed.connect(self._sync_display_controls)

    def _build_status(self) -> None:
        sb = self.statusBar()
        self.readout = QLabel("")
        self.readout.setObjectName("readout")
        self.readout.setTextFormat(Qt.TextFormat.PlainText)
        self.readout.setMinimumWidth(200)
        sb.addWidget(self.readout, 1)
        self.edit_status = QLabel("")
        self.edit_status.setObjectName("editStatus")
        sb.addPermanentWidget(self.edit_status)
        self.review_counter = QLabel("")
        self.review_counter.setObjectName("reviewCounter")
        sb.addPermanentWidget(self.review_counter)
        self.job_status = JobStatus(self)
        sb.addPermanentWidget(self.job_status)

    def _connect_case(self) -> None:
        c = self.case
        c.jobStarted.connect(self.track_job)
        c.predictionsChanged.connect(self._refresh_predictions)
        c.activePredictionChanged.connect(self._refresh_predictions)
        for sig in (
            c.cursorChanged,
            c.referenceChanged,
            c.treeChanged,
            c.activePredictionChanged,
            c.predictionsChanged,
        ):
            sig.connect(lambda *_: self._show_readout(None))
        # the readout reads the layers: after A, R, a stroke, undo or a new analysis it says what is there now
        for sig in (c.labelChanged, c.historyChanged, c.metricsChanged, c.regionsChanged, c.namesChanged):
            sig.connect(lambda *_: self._refresh_readout())
        c.ctChanged.connect(self._update_title)
        c.focusBoxRequested.connect(self._fit_views)
        c.ctChanged.connect(self._reset_view_state)
        c.modifiedChanged.connect(lambda *_: self._update_title())
        for sig in (c.regionsChanged, c.regionStatusChanged, c.activePredictionChanged, c.staleChanged):
            sig.connect(lambda *_: self._update_review_counter())
        c.lockNotice.connect(lambda text: self._say(text, 20000))
        c.namesNotice.connect(lambda text: self._say(text, 20000))
        c.historyChanged.connect(self._update_edit_actions)
        c.referenceChanged.connect(self._update_edit_actions)
        self.edit_tools.changed.connect(self._update_edit_status)
        self.edit_tools.failed.connect(lambda text: self.statusBar().showMessage(text, 8000))
        self._update_edit_actions()
        # edits go to a recovery file now and then; a save or a clean close removes it
        self._autosave_timer = QTimer(self)
        self._autosave_timer.setInterval(int(self.edit_tools.presets.get("autosave_interval_s", 20) * 1000))
        self._autosave_timer.timeout.connect(self._autosave)
        self._autosave_timer.start()

    # -- jobs -------------------------------------------------------------------------------
    def report_error(self, exc: BaseException | str, details: str | None = None, title: str = APP_NAME) -> None:
        self.last_error = exc if isinstance(exc, BaseException) else None
        self.error_handler(self, exc, details, title=title)

    def track_job(self, job: Job, on_error: Callable[[BaseException], bool] | None = None) -> None:
        """Show a job's progress and its errors (one dialog each; ``on_error`` returning True handled it)."""
        self.jobs.append(job)
        self.job_status.add(job)

        def failed(exc: BaseException, tb: str, j: Job = job) -> None:
            if on_error is None or not on_error(exc):
                self._job_failed(j, exc, tb)

        job.error.connect(guarded(self, failed))
        job.cancelled.connect(guarded(self, lambda j=job: self.statusBar().showMessage(f"{j.name}: cancelled", 5000)))
        job.finished.connect(guarded(self, lambda j=job: self.jobs.remove(j) if j in self.jobs else None))

    def _job_failed(self, job: Job, exc: BaseException, tb: str) -> None:
        self.statusBar().showMessage(f"{job.name} failed", 8000)
        self.report_error(exc, tb, title=f"{APP_NAME}: {job.name}")

    def start_job(
        self,
        fn: Callable[..., Any],
        *args: Any,
        name: str,
        on_result: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], bool] | None = None,
        **kwargs: Any,
    ) -> Job:
        job = Job(fn, *args, name=name, **kwargs)
        if on_result is not None:
            job.result.connect(guarded(self, on_result))
        self.track_job(job, on_error)
        return job.start()

    def cancel_jobs(self) -> None:
        if not self.jobs:
            self.statusBar().showMessage("No background job to cancel.", 3000)
        for job in list(self.jobs):
            job.cancel()

    @property
    def busy(self) -> bool:
        """A job is running, or its result has not reached the GUI thread yet."""
        return bool(self.jobs)

    # -- opening files -----------------------------------------------------------------------
    def open_files(
        self,
        ct: str | None,
        reference: str | None = None,
        predictions: Sequence[str] = (),
        reference_selector: str | None = None,
        resample_to_ct: bool = False,
    ) -> Job | None:
        """Load files in the background; the case updates when they are read.

        A label on another grid than the CT is refused, and the user is offered
        to open it again resampled onto the CT's grid (nearest neighbour).
        """
        from app.review.case import load_case

        # a CT, or a reference over a label-only case, starts a new case
        new_case = bool(ct) or (is_blank_ct(self.case.ct) and reference is not None)
        if new_case and not self.maybe_save("opening another case"):
            return None
        for p in [ct, reference, *predictions]:
            if p:
                self.settings.set_last_dir(str(p))
        if ct:
            self.settings.add_recent(str(ct))

        def apply(loaded: Any) -> None:
            self.case.apply_loaded(loaded)
            self.caseLoaded.emit()

        current = None if new_case else self.case.ct

        # without a CT the labels open alone, over a neutral background (load_case)
        def offer_resampling(exc: BaseException) -> bool:
            from core.errors import GeometryError

            if resample_to_ct or not isinstance(exc, GeometryError) or not (reference or predictions):
                return False
            # the question shows the error itself: one dialog either way
            if ask_resample(self, exc):
                self.open_files(ct, reference, predictions, reference_selector, resample_to_ct=True)
            else:
                self.statusBar().showMessage("Not opened: the label is on another grid than the CT", 8000)
            return True

        return self.start_job(
            load_case,
            ct,
            reference,
            list(predictions),
            current_ct=current,
            reference_selector=reference_selector,
            resample_to_ct=resample_to_ct,
            name="Loading",
            on_result=apply,
            on_error=offer_resampling,
        )

    def open_project(self, path: str) -> Job | None:
        if not self.maybe_save("opening another case"):
            return None
        self.settings.add_recent(str(path))
        self.settings.set_last_dir(str(path))

        def apply(res: Any) -> None:
            loaded, data = res
            apply_project(self.case, loaded, data, path)
            view = data.get("view") or {}
            self.apply_view_state(view)
            self.caseLoaded.emit()

        return self.start_job(load_project, path, name="Opening project", on_result=apply)

    def open_demo(self, params: Any = None) -> Job | None:
        """The phantom demo (``params``: :class:`app.demo.DemoParams`, default full chest)."""
        from app.review.case import load_demo_case

        if not self.maybe_save("opening the demo"):
            return None

        def apply(loaded: Any) -> None:
            self.case.apply_loaded(loaded)
            self.caseLoaded.emit()

        return self.start_job(load_demo_case, params, name="Building the demo case", on_result=apply)

    def _ask_files(self, title: str, multi: bool = False) -> list[str]:
        d = self.settings.last_dir()
        if multi:
            files, _ = QFileDialog.getOpenFileNames(self, title, d, VOLUME_FILTER)
            return files
        f, _ = QFileDialog.getOpenFileName(self, title, d, VOLUME_FILTER)
        return [f] if f else []

    def open_ct_dialog(self) -> None:
        files = self._ask_files("Open CT (or pick a DICOM file inside a series folder)")
        if files:
            path = Path(files[0])
            # a DICOM slice stands for its series: read the folder
            self.open_files(str(path.parent if path.suffix.lower() == ".dcm" else path))

    def open_dicom_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a DICOM series folder", self.settings.last_dir())
        if folder:
            self.open_files(folder)

    def open_reference_dialog(self) -> None:
        files = self._ask_files("Open reference airway label")
        if files:
            self.open_files(None, files[0])

    def open_prediction_dialog(self) -> None:
        files = self._ask_files("Open predictions", multi=True)
        if files:
            self.open_files(None, None, files)

    def open_project_dialog(self) -> None:
        f, _ = QFileDialog.getOpenFileName(self, "Open project", self.settings.last_dir(), PROJECT_FILTER)
        if f:
            self.open_project(f)

    def save_project(self, ask: bool = False) -> Path | None:
        if self.case.is_empty:
            self._say("There is no case to save: open a CT, labels or the demo first.", 5000)
            return None
        path = self.case.project_path
        if ask or not path:
            start = os.path.join(self.settings.last_dir(), f"{self.case.name or 'case'}.json")
            path, _ = QFileDialog.getSaveFileName(self, "Save project", start, PROJECT_FILTER)
            if not path:
                return None
        return self.save_project_to(path)

    def save_project_to(self, path: str | os.PathLike[str]) -> Path | None:
        self.case.view_state = self.view_state()
        try:
            out = self.case.save_project(path)
        except Exception as exc:  # noqa: BLE001 - one dialog, the app goes on
            import traceback

            self.report_error(exc, traceback.format_exc())
            return None
        self.settings.add_recent(str(out))
        self.statusBar().showMessage(f"Saved {out}", 5000)
        return out

    def open_recent(self, path: str) -> None:
        if path.lower().endswith(".json"):
            self.open_project(path)
        else:
            self.open_files(path)

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        items = self.settings.recent()
        for p in items:
            act = self.recent_menu.addAction(p)
            act.triggered.connect(lambda _=False, q=p: self.open_recent(q))
        if not items:
            self.recent_menu.addAction("(none)").setEnabled(False)
        else:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear list", self.settings.clear_recent)

    # drag and drop
    def dragEnterEvent(self, event: Any) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: Any) -> None:
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.open_dropped(paths)

    def open_dropped(self, paths: Sequence[str]) -> Job | None:
        """Files dropped (or given) in any order: a project opens as such; otherwise
        the first file is the CT when none is open, a name like ``*label*``/``*ref*``/``*gt*``
        is the reference, the rest are predictions."""
        # DICOM slices stand for their series folder
        paths = list(dict.fromkeys(str(Path(p).parent) if p.lower().endswith(".dcm") else p for p in paths))
        projects = [p for p in paths if p.lower().endswith(".json")]
        if projects:
            return self.open_project(projects[0])
        ct = None
        if self.case.is_empty:
            # the CT: a DICOM folder, else the first name that hints at neither a label nor a prediction
            ranked = sorted(
                paths, key=lambda p: (not os.path.isdir(p), _looks_like_reference(p), _looks_like_prediction(p))
            )
            ct = ranked[0]
            paths.remove(ct)
        reference = None
        if self.case.reference is None:
            refs = [p for p in paths if _looks_like_reference(p)]
            if refs:
                reference = refs[0]
                paths.remove(reference)
        if ct is None and reference is None and not paths:
            return None
        return self.open_files(ct, reference, paths)

    # -- segmentation ------------------------------------------------------------------------
    def segment_with(
        self,
        checkpoint: str | os.PathLike[str],
        device: str = "auto",
        name: str | None = None,
        **predictor_options: Any,
    ) -> Any:
        """Run a checkpoint over the CT; the result becomes a prediction.

        The one route of the app (the Segment panel and the training tab's "Segment CT with best"
        take it too): app.review.segment_panel.SegmentationRun, a child process (torch never holds this
        process's GIL) that applies the output gate. ``predictor_options`` go to
        core.segmentation.PredictOptions (window, step, backend...)."""
        from app.review.segment_panel import SegmentationRun

        if self.case.ct is None or is_blank_ct(self.case.ct):
            what = "this case has labels only" if self.case.ct is not None else "no case is open"
            self._say(f"Open a CT to segment: {what}.", 6000)
            return None
        run = SegmentationRun(self.case, checkpoint, device, name=name, parent=self, **predictor_options)
        self.jobs.append(run)
        self.job_status.add(run, run.ended, f"Segmenting with {Path(checkpoint).name}")
        run.finished.connect(self.segmentationFinished)
        run.failed.connect(guarded(self, lambda exc: self.report_error(exc, title=f"{APP_NAME}: segmentation")))
        run.cancelled.connect(guarded(self, lambda: self.statusBar().showMessage("Segmentation cancelled", 5000)))
        run.ended.connect(guarded(self, lambda r=run: self.jobs.remove(r) if r in self.jobs else None))
        try:
            return run.start()
        except Exception as exc:  # noqa: BLE001 - e.g. a missing checkpoint: one dialog
            run.state = "failed"
            run.ended.emit()
            self.report_error(exc)
            return None

    def segment_demo(self) -> Any:
        path = demo_model_path()
        if path is None:
            from core.resources import SHIPPED_MODEL

            self.report_error(f"The shipped model resources/{'/'.join(SHIPPED_MODEL)} is not installed.")
            return None
        return self.segment_with(path, "cpu")

    def _segment_with_checkpoint_from_training(self, path: str) -> None:
        self.tabs.setCurrentWidget(self.review)
        self.segment_with(path)

    # -- review ------------------------------------------------------------------------------
    def _say(self, text: str, ms: int = 5000) -> None:
        self.statusBar().showMessage(text, ms)

    def selected_regions(self) -> list[int]:
        """The regions the selected navigator item stands for: every part of a review group
        (navigator in groups mode), or the one selected region."""
        i = self.case.active_region
        if not 0 <= i < len(self.case.regions()):
            return []
        nav = getattr(self.panels, "regions", None)
        if nav is not None and getattr(nav, "grouped", False):
            return self.case.group_of(i)
        return [i]

    def mark_region(self, status: str) -> None:
        """Keys 1-4: the status of the selected item (every part of a group)."""
        sel = self.selected_regions()
        if not sel or self.case.active is None:
            self._say("No region selected: press N to go to the next one.", 4000)
            return
        self.case.set_region_statuses(sel, status)  # one change (one table refresh) for a group
        parts = f" ({len(sel)} parts)" if len(sel) > 1 else ""
        self._say(f"Marked {STATUS_LABELS[status].lower()}{parts}.", 3000)

    def step_review(self, step: int) -> None:
        """N / Shift+N: the navigator's next item (a review group or a region) when it is there."""
        if not self.case.regions():
            if self.case.reference is None or self.case.active is None:
                self._say("No error regions: open a reference and a prediction to compare.", 5000)
            else:
                self._say("No error regions (yet): the analysis is running or found none.", 5000)
            return
        if self.panels is not None:
            self.panels.regions.step(step)
        else:
            self.case.step_region(step)

    def _update_review_counter(self) -> None:
        act = self.case.active
        if act is None or act.regions is None:
            self.review_counter.setText("")
            return
        n = len(act.regions)
        stale = " (stale: updating after edits)" if self.case.stale else ""
        self.review_counter.setText(f"Reviewed {act.reviewed_count()}/{n} regions{stale}")

    # -- corrections -------------------------------------------------------------------------
    def correct_region(self, kind: str) -> None:
        """A (FP: add to the reference) / R (FN: remove from it) on the selected item: every part
        of a review group, as one undo step; the status bar says how many parts and voxels."""
        regs = self.case.regions()
        sel = self.selected_regions()
        if not sel:
            self._say("No region selected: press N to go to the next one.", 4000)
            return
        if self.case.reference is None:
            self._say("There is no reference to correct: open one first.", 5000)
            return
        first = regs[self.case.active_region]
        of_kind = [i for i in sel if regs[i].kind == kind]
        if not of_kind:
            other = "A adds FP regions" if kind == "FN" else "R removes FN regions"
            self._say(f"{first.id} is an {first.kind} region: {other}.", 5000)
            return
        try:
            edit = self.case.accept_regions(of_kind, kind)
        except InputError as exc:
            self._say(str(exc), 8000)
            return
        verb = "Added to" if kind == "FP" else "Removed from"
        if edit is None:
            self._say(f"{first.id}: the reference already holds this correction.", 4000)
            return
        voxels = edit.added + edit.removed
        parts = f"{len(of_kind)} parts, " if len(of_kind) > 1 else ""
        self._say(f"{verb} the reference: {parts}{voxels} voxels (Ctrl+Z undoes it).", 8000)

    def _update_edit_actions(self) -> None:
        s = self.case.session
        self.action_table["undo"].setEnabled(s.can_undo())
        self.action_table["redo"].setEnabled(s.can_redo())

    def _update_edit_status(self) -> None:
        self.edit_status.setText(self.edit_tools.describe())

    def _autosave(self) -> None:
        try:
            self.case.autosave()
        except OSError as exc:
            self.statusBar().showMessage(f"Autosave failed: {exc}", 8000)

    # -- crash recovery ----------------------------------------------------------------------
    def offer_recovery(self) -> None:
        """After a crash: offer to reopen the files of a recovery file and replay its edits.

        Every recovery file is read one by one: a damaged one (empty, truncated) is set aside
        as ``*.damaged`` and named in the status bar, and never hides a valid one. Declined
        (Discard), a recovery file is deleted: it is not offered again."""
        from datetime import datetime

        from core.review.persist import scan_recoveries

        try:
            found, damaged = scan_recoveries()
        except OSError as exc:
            self._say(f"The recovery folder cannot be read: {exc}", 10000)
            return
        if damaged:
            names = ", ".join(p.name for p, _ in damaged)
            self._say(f"Set aside {len(damaged)} damaged recovery file(s) (the edits in them are lost): {names}", 15000)
        if not found:
            return
        path, meta = found[0]
        ref = next((m for m in meta["layers"] if m.get("role") == "reference"), None)
        name = Path(ref["file"]["path"]).name if ref and ref.get("file") else "a case"
        when = datetime.fromtimestamp(meta.get("written", 0)).strftime("%Y-%m-%d %H:%M")
        more = (
            f"\n\n({len(found) - 1} more recovery file(s) will be offered at the next start.)" if len(found) > 1 else ""
        )
        ans = QMessageBox.question(
            self,
            APP_NAME,
            f"Airway Studio stopped with unsaved edits of {name} ({when}).\n\nRecover them?{more}",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Discard,
        )
        if ans == QMessageBox.StandardButton.Yes:
            self.recover_edits(path)
        else:
            path.unlink(missing_ok=True)
            self._say(f"Discarded the unsaved edits of {name}.", 6000)

    def recover_edits(self, path: str | os.PathLike[str]) -> Job | None:
        """Open the recovery file's inputs (a CT case or labels only), then replay its voxels,
        statuses and edit log; saving afterwards removes the recovery file."""
        from core.review import check_recovery, recovery_inputs

        try:
            meta, arrays = check_recovery(path)
            inputs = recovery_inputs(meta)
        except InputError as exc:
            # it can never be replayed (its files changed, or it is damaged): set aside, never offered again
            from core.review.persist import DAMAGED_SUFFIX

            aside = Path(path).with_name(Path(path).name + DAMAGED_SUFFIX)
            try:
                os.replace(path, aside)
            except OSError:
                pass
            self.report_error(InputError(exc.what, f"It was set aside as {aside.name}.", path=exc.path))
            return None

        def replay() -> None:
            self.caseLoaded.disconnect(replay)
            try:
                self.case.session.apply_recovery(meta, arrays)
                self.case.session.recovery_path = Path(path)
            except InputError as exc:
                self.report_error(exc)
                return
            self._say("Recovered the unsaved edits; save the reference to keep them.", 8000)

        self.caseLoaded.connect(replay)
        job = self.open_files(inputs["ct"], inputs["reference"], inputs["predictions"], inputs["reference_selector"])
        if job is None:
            self.caseLoaded.disconnect(replay)
        return job

    # -- saving labels ---------------------------------------------------------------------
    LABEL_FILTER = "NIfTI (*.nii.gz *.nii);;MetaImage (*.mha);;NRRD (*.nrrd);;All files (*)"

    def _ask_label_path(self, title: str, suggestion: str | None) -> str | None:
        start = suggestion or os.path.join(self.settings.last_dir(), "label.nii.gz")
        path, _ = QFileDialog.getSaveFileName(self, title, start, self.LABEL_FILTER)
        if not path:
            return None
        from core.io import volume_suffix

        if not volume_suffix(Path(path)):
            path += ".nii.gz"
        return path

    def _save_label(self, what: str, which: str | int, path: str | None) -> Job | None:
        """A save in a job (compressing 100 MB takes seconds): the checks and a snapshot here, with the
        conflict dialog when another save changed the file; ``labelSaved(path)`` once it is written."""
        from app.dialogs import ask_save_conflict
        from core.review.persist import SaveConflictError

        key = str(which)
        if key in self._saving:
            self._say(f"Saving {what} already: wait for it to finish.", 4000)
            return None
        on_conflict = "raise"
        while True:
            try:
                pending = self.case.begin_save(which, path, on_conflict)
            except SaveConflictError as exc:
                choice = ask_save_conflict(self, exc)
                if choice is None:
                    self._say(f"Not saved: {Path(exc.path or '').name} changed on disk.", 8000)
                    return None
                if choice == "new":
                    path = self._ask_label_path(f"Save {what} as", None)
                    if path is None:
                        return None
                    on_conflict = "raise"
                else:
                    on_conflict = choice
                continue
            except Exception as exc:  # noqa: BLE001 - one dialog, the app goes on
                import traceback

                self.report_error(exc, traceback.format_exc())
                return None
            break
        self._saving.add(key)

        def written(done: Any) -> None:
            out = self.case.finish_save(done)
            self.settings.set_last_dir(str(out))
            self._say(f"Saved {what} to {out} (edit log beside it)", 6000)
            self._update_title()
            self.labelSaved.emit(out)

        job = self.start_job(_write_pending, pending, name=f"Saving {what}", on_result=written)
        job.finished.connect(guarded(self, lambda: self._saving.discard(key)))
        return job

    def wait_for(self, job: Job | None) -> bool:
        """Run the event loop until ``job`` ends (the window stays live); True when it succeeded."""
        from PySide6.QtCore import QEventLoop

        if job is None:
            return False
        loop = QEventLoop()
        job.finished.connect(loop.quit)
        if job.running:
            loop.exec()
        QApplication.processEvents()  # its result reaches the window
        return job.state == "done"

    def save_reference(self, path: str | os.PathLike[str] | None = None) -> Job | None:
        """Ctrl+Alt+S: write the edited reference over its file (the original kept once as
        *.orig.*, an edit log beside it) in a job; a reference without a file asks for a name."""
        if self.case.reference is None:
            self._say("There is no reference to save: open one (Ctrl+R) or use a prediction as the reference.", 6000)
            return None
        if path is None and self.dataset.owns_case():  # a dataset case: labelsReviewed/, never the original
            return self.dataset.save_reviewed()
        if path is None and not self.case.reference_path:
            return self.save_reference_as()
        return self._save_label("the reference", "reference", None if path is None else str(path))

    def save_reference_as(self) -> Job | None:
        """Save the reference to a file the user names; later saves go there."""
        if self.case.reference is None:
            self._say("There is no reference to save: open one (Ctrl+R) or use a prediction as the reference.", 6000)
            return None
        path = self._ask_label_path("Save reference as", self.case.reference_path)
        if path is None:
            return None
        return self.save_reference(path)

    def save_prediction_as(self) -> Job | None:
        """Save the active prediction (edited or made in the app) as a 0/1 label file."""
        act = self.case.active
        if act is None:
            self._say("There is no prediction to save: open or make one first.", 6000)
            return None
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in act.name)
        suggestion = os.path.join(self.settings.last_dir(), f"{safe}.nii.gz")
        path = self._ask_label_path("Save prediction as", act.path or suggestion)
        if path is None:
            return None
        return self._save_label(act.name, self.case.active_index, path)

    def use_prediction_as_reference(self) -> None:
        """The active prediction becomes the reference (one undo step; no file changes until saved)."""
        act = self.case.active
        if act is None:
            self._say("There is no prediction to use: open or make one first.", 6000)
            return
        had = self.case.reference is not None
        try:
            edit = self.case.use_prediction_as_reference()
        except InputError as exc:
            self._say(str(exc), 8000)
            return
        if had and edit is None:
            self._say(f"The reference already equals {act.name}.", 5000)
            return
        if edit is None:
            self._say(f"{act.name} is now the reference (no file yet: Ctrl+Alt+S asks for a name).", 8000)
        else:
            self._say(
                f"{act.name} is now the reference: {edit.added} voxels added, {edit.removed} removed "
                "(Ctrl+Z undoes it; the reference file changes only when you save).",
                10000,
            )

    # -- display -----------------------------------------------------------------------------
    def _set_visible(self, key: str, on: bool) -> None:
        vis = dict(self.display.settings.visible)
        if vis.get(key) == on:
            return
        vis[key] = on
        self.display.update(visible=vis)

    def _set_opacity(self, value: float, from_slider: bool = False) -> None:
        value = float(min(1.0, max(0.0, value)))
        if abs(value - self.display.settings.opacity) > 1e-6:
            self.display.update(opacity=value)

    def _sync_display_controls(self) -> None:
        s = self.display.settings
        for key, box in self.class_boxes.items():
            if box.isChecked() != s.visible.get(key, True):
                box.blockSignals(True)
                box.setChecked(s.visible.get(key, True))
                box.blockSignals(False)
        for key, name in (("TP", "toggle_tp"), ("FP", "toggle_fp"), ("FN", "toggle_fn")):
            self.action_table[name].setChecked(s.visible.get(key, True))
        for name, value in (
            ("toggle_overlay", s.show_overlay),
            ("toggle_outline", s.outline),
            ("toggle_heatmap", s.heatmap),
            ("toggle_crosshair", s.crosshair),
        ):
            a = self.action_table[name]
            if a.isChecked() != value:
                a.blockSignals(True)
                a.setChecked(value)
                a.blockSignals(False)
        v = int(round(s.opacity * 100))
        if self.opacity_slider.value() != v:
            self.opacity_slider.blockSignals(True)
            self.opacity_slider.setValue(v)
            self.opacity_slider.blockSignals(False)
        i = self.preset_combo.findData(s.preset)
        self.preset_combo.setCurrentIndex(i if i >= 0 else self.preset_combo.count() - 1)

    def _on_preset_combo(self, index: int) -> None:
        key = self.preset_combo.itemData(index)
        if key and key != "custom":
            self.display.apply_preset(key)

    def _zoom_views(self, factor: float) -> None:
        for v in self.views.values():
            v.zoom_by(factor)

    def _centre_views(self) -> None:
        for v in self.views.values():
            v.centre_on_cursor()

    def reset_views(self) -> None:
        for v in self.views.values():
            v.reset_view()

    def _cycle_prediction(self, step: int) -> None:
        n = len(self.case.predictions)
        if n > 1:
            self.case.set_active((self.case.active_index + step) % n)
            self._say(f"Active prediction: {self.case.predictions[self.case.active_index].name}", 3000)
        else:
            self._say("Only one prediction is open." if n else "No prediction is open.", 3000)

    def _refresh_predictions(self, *_: Any) -> None:
        combo = self.prediction_combo
        combo.blockSignals(True)
        combo.clear()
        for p in self.case.predictions:
            label = p.name + ("  [simulated]" if p.source == "simulated" and "simulated" not in p.name.lower() else "")
            combo.addItem(label)
        if not self.case.predictions:
            combo.addItem("(no prediction)")
        combo.setCurrentIndex(max(0, self.case.active_index))
        combo.setToolTip(combo.currentText())  # signals are blocked here
        combo.setEnabled(bool(self.case.predictions))
        combo.blockSignals(False)
        has_prob = self.case.active is not None and self.case.active.probabilities is not None
        self.action_table["toggle_heatmap"].setEnabled(has_prob)
        self._update_review_counter()

    def _on_prediction_combo(self, index: int) -> None:
        if self.case.predictions and index >= 0:
            self.case.set_active(index)

    def view_state(self) -> dict[str, Any]:
        return {
            "display": self.display.settings.to_dict(),
            "zoom": {o: v.zoom for o, v in self.views.items()},
            "tab": self.tabs.currentIndex(),
        }

    def apply_view_state(self, view: dict[str, Any]) -> None:
        if "display" in view:
            self.display.settings = DisplaySettings.from_dict(view["display"])
            self.display.changed.emit()
        for o, z in (view.get("zoom") or {}).items():
            if o in self.views:
                self.views[o].zoom = float(z)
                self.views[o].update()

    # -- status bar --------------------------------------------------------------------------
    def _on_hover(self, zyx: Any) -> None:
        self._show_readout(zyx)

    def _refresh_readout(self) -> None:
        self._show_readout(getattr(self, "_readout_zyx", None))

    def _show_readout(self, zyx: Any) -> None:
        self._readout_zyx = zyx
        self.readout.setText(
            format_probe(
                self.case.probe(zyx if zyx is not None else self.case.cursor),
                under="mouse" if zyx is not None else "crosshair",
            )
        )

    def _update_title(self, *_: Any) -> None:
        name = self.case.name if not self.case.is_empty else ""
        demo = " (demo)" if self.case.demo else ""
        self.setWindowTitle(f"{name}{demo}[*] - {APP_NAME}" if name else APP_NAME)
        self.setWindowModified(bool(self.case.modified and name))

    # -- dialogs, screenshots ------------------------------------------------------------------
    def show_shortcuts(self) -> None:
        ShortcutsDialog(self).exec()

    def show_about(self) -> None:
        AboutDialog(self).exec()

    def screenshot_dialog(self) -> None:
        f, _ = QFileDialog.getSaveFileName(
            self, "Save screenshot", os.path.join(self.settings.last_dir(), "airway_studio.png"), "PNG image (*.png)"
        )
        if f:
            self.save_screenshot(f)

    def save_screenshot(self, path: str | os.PathLike[str]) -> Path:
        """Render every view and save the whole window as PNG (atomic write)."""
        path = Path(path)
        if path.suffix.lower() != ".png":
            path = path.with_suffix(".png")
        QApplication.processEvents()
        for v in self.views.values():
            v.repaint()
        plotter = getattr(getattr(self, "view3d", None), "plotter", None)
        if plotter is not None:
            try:
                plotter.render()  # VTK draws on demand; make sure the scene is current
            except Exception:  # noqa: BLE001 - a screenshot without 3D beats none
                pass
        pixmap = self.grab()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.png")
        if not pixmap.save(str(tmp), "PNG"):
            from core.errors import InputError

            raise InputError(f"Could not write the screenshot {path}.", "Check the folder is writable.")
        os.replace(tmp, path)
        return path

    # -- settings -----------------------------------------------------------------------------
    def _restore_settings(self) -> None:
        geo, state = self.settings.window_state()
        if geo is not None:
            self.restoreGeometry(geo)
        if state is not None:
            self._state_restored = bool(self.restoreState(state))
        d = self.settings.get("display/settings")
        if isinstance(d, str):
            import json

            try:
                self.display.settings = DisplaySettings.from_dict(json.loads(d))
                self.display.changed.emit()
            except (ValueError, TypeError):
                pass
        self._sync_display_controls()

    def maybe_save(self, before: str = "closing") -> bool:
        """Ask to save an edited reference, then an edited review (the demo's too); False when the user cancels."""
        ref_layer = self.case.session.reference
        if ref_layer is not None and ref_layer.modified and not self.ephemeral:
            ans = QMessageBox.question(
                self,
                APP_NAME,
                f"Save the edited reference before {before}?",
                QMessageBox.StandardButton.Save
                | QMessageBox.StandardButton.Discard
                | QMessageBox.StandardButton.Cancel,
            )
            if ans == QMessageBox.StandardButton.Cancel or (
                ans == QMessageBox.StandardButton.Save and not self.wait_for(self.save_reference())
            ):
                return False
            if ans == QMessageBox.StandardButton.Discard:
                self.case.session.discard_recovery()
        if self.case.modified and not self.case.is_empty and not self.ephemeral:
            ans = QMessageBox.question(
                self,
                APP_NAME,
                f"Save the review (region statuses, view) before {before}?",
                QMessageBox.StandardButton.Save
                | QMessageBox.StandardButton.Discard
                | QMessageBox.StandardButton.Cancel,
            )
            if ans == QMessageBox.StandardButton.Cancel:
                return False
            if ans == QMessageBox.StandardButton.Save and self.save_project() is None:
                return False
        return True

    def closeEvent(self, event: Any) -> None:
        if not self.maybe_save():
            event.ignore()
            return
        import json

        for job in list(self.jobs):
            job.cancel()
        self.case.cancel_jobs()
        self.case.session.release_locks()  # another window may now take the files
        if not any(
            isinstance(w, MainWindow) and w is not self and w.isVisible() for w in QApplication.topLevelWidgets()
        ):
            from app.workers import shutdown_process_pool

            shutdown_process_pool()
        for d in getattr(self, "_hidden_docks", None) or []:  # saved as they are on the Review tab
            d.show()
        self._hidden_docks = None
        self.settings.set_window_state(self.saveGeometry(), self.saveState())
        self.settings.set("display/settings", json.dumps(self.display.settings.to_dict()))
        self.settings.sync()
        super().closeEvent(event)


def _write_pending(pending: Any, *, progress: Any = None, cancel: Any = None) -> Any:
    """Job function: the slow part of a save (core.review.PendingSave.write), off the GUI thread."""
    return pending.write()


def apply_theme(app: QApplication) -> None:
    """A dark Fusion palette: CT reads best on dark surroundings (as in ITK-SNAP and Slicer)."""
    from PySide6.QtGui import QColor, QPalette

    pal = QPalette()
    base, window, text = QColor(30, 31, 34), QColor(43, 45, 48), QColor(222, 222, 226)
    roles = {
        QPalette.ColorRole.Window: window,
        QPalette.ColorRole.WindowText: text,
        QPalette.ColorRole.Base: base,
        QPalette.ColorRole.AlternateBase: QColor(38, 39, 42),
        QPalette.ColorRole.ToolTipBase: QColor(50, 52, 56),
        QPalette.ColorRole.ToolTipText: text,
        QPalette.ColorRole.Text: text,
        QPalette.ColorRole.Button: window,
        QPalette.ColorRole.ButtonText: text,
        QPalette.ColorRole.BrightText: QColor(255, 80, 80),
        QPalette.ColorRole.Highlight: QColor(52, 120, 200),
        QPalette.ColorRole.HighlightedText: QColor(255, 255, 255),
        QPalette.ColorRole.Link: QColor(90, 160, 240),
        QPalette.ColorRole.PlaceholderText: QColor(130, 130, 136),
    }
    for role, color in roles.items():
        pal.setColor(role, color)
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
        pal.setColor(QPalette.ColorGroup.Disabled, role, QColor(120, 120, 126))
    app.setPalette(pal)
    # padding: with none, Qt places a toolbar's overflow button (">>") one pixel past the bar's
    # right edge, so at 1024 px the hidden heat-map button sat behind a clipped ">>"
    app.setStyleSheet(
        "QToolBar { spacing: 4px; padding: 1px; } QStatusBar QLabel { padding: 0 4px; }QSplitter::handle { background: #1a1b1d; }"
    )


def _looks_like_prediction(path: str) -> bool:
    name = Path(path).name.lower()
    return any(h in name for h in PREDICTION_HINTS)


def _looks_like_reference(path: str) -> bool:
    name = Path(path).name.lower()
    return any(h in name for h in REFERENCE_HINTS)


def format_probe(info: dict[str, Any], under: str = "mouse") -> str:
    """The status-bar line for one voxel (see :meth:`Case.probe`)."""
    if not info:
        return ""
    z, y, x = info["voxel"]
    wx, wy, wz = info["world"]
    parts = [f"voxel (x {x}, y {y}, z {z})", f"({wx:.1f}, {wy:.1f}, {wz:.1f}) mm"]
    if info.get("hu") is not None:  # a label-only case has no HU
        parts.append(f"{info['hu']:.0f} HU")
    if info.get("reference") is not None:
        parts.append(f"ref {int(info['reference'])}")
    if "prediction" in info:
        parts.append(f"pred {int(info['prediction'])}")
    if "probability" in info:
        parts.append(f"p {info['probability']:.2f}")
    if "class" in info:
        parts.append(info["class"])
    if "branch" in info:
        gen = f", generation {info['generation']}" if "generation" in info else ""
        parts.append(f"branch {info['branch']}{gen}")
    if info.get("name"):
        how = "yours" if info.get("name_source") == "user" else f"{info.get('name_confidence', 0.0):.2f}"
        parts.append(f"{info['name']} ({how})")
    return f"{under}: " + "   ".join(parts)
