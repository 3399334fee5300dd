"""The window's dataset: the worklist dock, opening cases, Save and next, the state file.

One controller per window (``window.dataset``). It opens a dataset in a job
(:func:`app.dataset.loading.open_dataset_job`), shows its cases in the worklist
(:mod:`app.dataset.worklist`), opens a case through the app's loading function with the best
label (reviewed if there is one, else the original), pre-loads the next case of the worklist
while the reviewer works, and records per case: status, reviewer, active time, the figures
the session already computed, open review items, content keys and the view state.

Saving a reviewed label takes ONE route: the session's save split in three
(:meth:`core.review.Session.begin_save` for the checks and an O(1) snapshot on the GUI thread,
:func:`core.dataset.write_reviewed_label` in a job, :meth:`core.review.Session.end_save`), so the
file lands where the dataset says (``labelsReviewed/CASE.nii.gz``, the earlier version backed
up, the edit log in the dataset's format with the reviewer) and the session still knows what
is saved (the unsaved-edits question, the recovery file, the conflict check when another
window saved the same label). Ctrl+Alt+S on a dataset case goes the same way: the original
label is never written.

Save and next marks the case "in review" (the reviewer looked at it and moved on); "done" is
the reviewer's call (Ctrl+Alt+D, the Done button), kept by later saves until reopened. A
flagged case stays flagged. With no edits, nothing is written but the status, time and view.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from PySide6.QtCore import QEvent, QFileSystemWatcher, QObject, QPointF, Qt, QTimer, Signal
from PySide6.QtWidgets import QDockWidget, QFileDialog, QInputDialog, QLabel, QMainWindow, QMessageBox

from app import shortcuts
from app.dataset.activity import ActiveTime
from app.dataset.loading import (
    CaseRecord,
    LoadedDatasetCase,
    OpenedDataset,
    SavedReview,
    case_stamps,
    load_dataset_case,
    open_dataset_job,
    record_job,
    write_review,
)
from app.dataset.worklist import STATUS_TEXT, WorklistPanel, worklist_progress
from app.workers import Job, guarded
from core.dataset import Dataset, DatasetState, read_state

if TYPE_CHECKING:
    from collections.abc import Callable

    from PySide6.QtGui import QAction
    from PySide6.QtWidgets import QMenu

    from app.review.case import Case
    from app.review.slice_view import SliceView
    from app.settings import Settings


class DatasetWindow(Protocol):
    """What the controller uses of app.main_window.MainWindow, which installs it (importing it here
    would close an import circle); the Qt side is the QMainWindow it is (:func:`_qt`)."""

    case: Case
    views: dict[str, SliceView]
    settings: Settings
    action_table: dict[str, QAction]
    file_menu: QMenu
    help_menu: QMenu
    panels_menu: QMenu
    caseLoaded: Any  # Signal()
    labelSaved: Any  # Signal(object)

    def start_job(
        self,
        fn: Callable[..., Any],
        *args: Any,
        name: str,
        on_result: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], bool] | None = None,
        **kwargs: Any,
    ) -> Job: ...
    def track_job(self, job: Job, on_error: Callable[[BaseException], bool] | None = None) -> None: ...
    def report_error(self, exc: BaseException | str, details: str | None = None, title: str = ...) -> None: ...
    def maybe_save(self, before: str = ...) -> bool: ...
    def wait_for(self, job: Job | None) -> bool: ...


def _qt(window: DatasetWindow) -> QMainWindow:
    assert isinstance(window, QMainWindow)
    return window


MANIFEST_FILTER = "Dataset manifest (*.csv);;All files (*)"
RELOAD_DELAY_MS = 150


@dataclass
class Prefetch:
    case_id: str
    job: Job
    result: LoadedDatasetCase | None = None


class DatasetController(QObject):
    """Signals: ``datasetOpened``, ``caseOpened(case_id)`` (the case is in the window),
    ``stateChanged`` (the state file was read or written), ``reviewSaved(case_id, path)``."""

    datasetOpened = Signal()
    caseOpened = Signal(str)
    stateChanged = Signal()
    reviewSaved = Signal(str, object)
    prefetched = Signal(str)

    def __init__(self, window: DatasetWindow):
        qwin = _qt(window)
        super().__init__(qwin)
        self.window = window
        self.qwin = qwin
        self.dataset: Dataset | None = None
        self.state: DatasetState | None = None
        self.current: str | None = None  # the dataset case open in the window
        self.info: LoadedDatasetCase | None = None
        self._session: Any = None  # the session of the dataset case (another file opened: not ours)
        self._wanted: str | None = None  # a case being loaded to show
        self._prefetch: Prefetch | None = None
        self._waiting: Prefetch | None = None  # a pre-load whose case the user asked for
        self._load_after_save: str | None = None  # a case to read once its reviewed label is written
        self._unsaved: dict[str, LoadedDatasetCase] = {}  # cases whose save failed: their edited sessions
        self._reviewed_keys: dict[str, Any] = {}  # case -> its reviewed file's key as this window last saw it
        self._previous: LoadedDatasetCase | None = None  # the case left last, kept in memory for Ctrl+[
        self._previous_stamps: tuple[Any, ...] = ()
        self._saving: dict[str, Job] = {}
        self._then: list[Any] = []
        self.prefetch_enabled = True

        self.panel = WorklistPanel()
        self.dock = QDockWidget("Dataset", qwin)
        self.dock.setObjectName("datasetDock")
        self.dock.setWidget(self.panel)
        self.dock.setMinimumWidth(240)
        qwin.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.dock)
        self.dock.hide()
        self.panel.openRequested.connect(self.open_case)
        self.panel.statusRequested.connect(self.set_status)
        self.panel.noteEdited.connect(self.set_note)
        self.panel.focused.connect(self.reload_state)
        # Ctrl+] follows the table's order: a new sort or filter pre-loads the new neighbour
        self.panel.proxy.layoutChanged.connect(self._order_changed)

        self.progress_label = QLabel("")
        self.progress_label.setObjectName("datasetProgress")
        self.label_label = QLabel("")
        self.label_label.setObjectName("datasetLabelVersion")
        sb = qwin.statusBar()
        sb.addPermanentWidget(self.label_label)
        sb.addPermanentWidget(self.progress_label)

        self.activity = ActiveTime(qwin)
        # a burst of changes (the lock file, the state file replaced) is read once
        self._reload_timer = QTimer(self)
        self._reload_timer.setSingleShot(True)
        self._reload_timer.setInterval(RELOAD_DELAY_MS)
        self._reload_timer.timeout.connect(self.reload_state)
        self.watcher = QFileSystemWatcher(self)
        self.watcher.fileChanged.connect(lambda *_: self._reload_timer.start())
        self.watcher.directoryChanged.connect(lambda *_: self._reload_timer.start())
        qwin.installEventFilter(self)
        window.case.regionsChanged.connect(lambda *_: self._restore_region())
        self._pending_region: tuple[str, str] | None = None  # (prediction name, region key) to select once analysed
        self._build_actions()

    # -- actions and menus --------------------------------------------------------------------
    def _build_actions(self) -> None:
        w = self.window

        def act(name: str, text: str, slot: Any) -> Any:
            a = shortcuts.make_action(self.qwin, name, text, slot)
            a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            self.qwin.addAction(a)
            w.action_table[name] = a
            return a

        self.actions = {
            "open_dataset": act("open_dataset", "Open &dataset...", self.open_dataset_dialog),
            "open_dataset_manifest": act(
                "open_dataset_manifest", "Open dataset &manifest (CSV)...", self.open_manifest_dialog
            ),
            "save_next_case": act("save_next_case", "Save and &next case", lambda: self.save_and_step(1)),
            "save_previous_case": act("save_previous_case", "Save and &previous case", lambda: self.save_and_step(-1)),
            "case_done": act("case_done", "Mark the case &done / reopen it", self.toggle_done),
        }
        fm = w.file_menu
        before = w.action_table["open_project"]
        fm.insertAction(before, self.actions["open_dataset"])
        fm.insertAction(before, self.actions["open_dataset_manifest"])
        fm.insertSeparator(before)
        menu = self.qwin.menuBar().addMenu("Data&set")
        menu.setObjectName("datasetMenu")
        for n in ("save_next_case", "save_previous_case", "case_done"):
            menu.addAction(self.actions[n])
        menu.addSeparator()
        menu.addAction(self.dock.toggleViewAction())
        # before Help, as menus read left to right
        self.qwin.menuBar().insertMenu(w.help_menu.menuAction(), menu)
        self.menu = menu
        w.panels_menu.addAction(self.dock.toggleViewAction())

    def _say(self, text: str, ms: int = 6000) -> None:
        self.qwin.statusBar().showMessage(text, ms)

    def _no_dataset(self) -> bool:
        if self.dataset is None:
            self._say(f"No dataset open: File > Open dataset... ({shortcuts.key_text('open_dataset')})")
            return True
        return False

    # -- the dataset -----------------------------------------------------------------------------
    def open_dataset_dialog(self) -> Job | None:
        folder = QFileDialog.getExistingDirectory(self.qwin, "Open a dataset folder", self.window.settings.last_dir())
        return self.open_dataset(folder) if folder else None

    def open_manifest_dialog(self) -> Job | None:
        f, _ = QFileDialog.getOpenFileName(
            self.qwin, "Open a dataset manifest", self.window.settings.last_dir(), MANIFEST_FILTER
        )
        return self.open_dataset(f) if f else None

    def open_dataset(self, path: str | os.PathLike[str]) -> Job:
        """Read the dataset (a folder or a CSV manifest) and its state in a job; the worklist shows it."""
        return self.window.start_job(open_dataset_job, str(path), name="Opening dataset", on_result=self._opened)

    def _opened(self, opened: OpenedDataset) -> None:
        self.leave_case()
        self.activity.stop()
        self._drop_prefetch()
        self._previous = None
        self.dataset, self.state = opened.dataset, opened.state
        self.current, self.info, self._session = None, None, None
        self.panel.set_data(self.dataset, self.state)
        self.dock.show()
        self.dock.raise_()
        self._watch()
        self._update_progress()
        self._update_label()
        src = self.dataset.source or self.dataset.root
        self.window.settings.set_last_dir(str(src))
        self._say(f"Opened the dataset {src.name}: {len(self.dataset.cases)} cases. Double-click a case to open it.")
        self._show_unmatched()
        self.datasetOpened.emit()

    def _show_unmatched(self) -> None:
        """Files that fit no case, in a note that does not block (the worklist is usable beside it)."""
        ds = self.dataset
        if ds is None:
            return
        lines = [str(_rel(p, ds.root)) for p in ds.unmatched]
        missing = list(getattr(ds, "missing", []) or [])
        notes = list(getattr(ds, "notes", []) or [])
        if not lines and not missing and not notes:
            return
        text = []
        if lines:
            text.append(f"{len(lines)} file(s) match no case of {ds.root.name} and are not in the worklist.")
        if missing:
            text.append(f"{len(missing)} file(s) named by the manifest do not exist.")
        text.extend(notes)
        box = QMessageBox(
            QMessageBox.Icon.Information, "Dataset", "\n".join(text), QMessageBox.StandardButton.Close, self.qwin
        )
        box.setObjectName("datasetUnmatchedNote")
        box.setInformativeText("Cases are matched by name: CASE_0000 for a CT, CASE for a label or a prediction.")
        box.setDetailedText("\n".join(lines[:500] + missing[:500]))
        box.setWindowModality(Qt.WindowModality.NonModal)
        box.setModal(False)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.unmatched_note = box
        box.show()

    def _watch(self) -> None:
        ds = self.dataset
        if ds is None:
            return
        old = self.watcher.files() + self.watcher.directories()
        if old:
            self.watcher.removePaths(old)
        # the state file is replaced on every write (atomic rename): its folder says so, the file may not
        self.watcher.addPath(str(ds.root))
        if ds.state_path.exists():
            self.watcher.addPath(str(ds.state_path))
        if ds.reviewed_dir.is_dir():
            self.watcher.addPath(str(ds.reviewed_dir))

    def reload_state(self) -> None:
        """Read the state file again (another window or annotator may have changed it)."""
        ds = self.dataset
        if ds is None:
            return
        try:
            state = read_state(ds)
        except Exception as exc:  # noqa: BLE001 - a state being replaced or locked: the next tick reads it
            self._say(f"The dataset state could not be read now: {exc}", 4000)
            return
        self._set_state(state)
        self._watch()

    def _set_state(self, state: DatasetState) -> None:
        self.state = state
        self.panel.update_state(state)
        self._update_progress()
        self._update_label()
        self.stateChanged.emit()

    def _update_progress(self) -> None:
        self.progress_label.setText(worklist_progress(self.dataset, self.state))

    def _update_label(self) -> None:
        """Which label version the window shows: the reviewed one or the original."""
        ds, info = self.dataset, self.info
        if ds is None or info is None or not self.owns_case():
            self.label_label.setText("")
            self.label_label.setToolTip("")
            return
        layer = self.window.case.session.reference
        path = Path(layer.path) if layer is not None and layer.path else info.label_path
        version = "reviewed" if path is not None and path.parent == ds.reviewed_dir else info.label_version
        where = f" ({_rel(path, ds.root)})" if path is not None else ""
        self.label_label.setText(f"{info.case_id} · reference: {version}{where}")
        self.label_label.setToolTip(str(path) if path else "This case has no reference label.")

    def owns_case(self) -> bool:
        """The window shows a case of this dataset (not a file opened on its own since)."""
        return self.current is not None and self._session is not None and self.window.case.session is self._session

    def case_state(self, case_id: str) -> Any:
        from core.dataset import CaseState

        if self.state is not None and case_id in self.state.cases:
            return self.state.cases[case_id]
        return CaseState()

    # -- the reviewer ----------------------------------------------------------------------------
    def reviewer(self, ask: bool = True) -> str | None:
        """The reviewer's name, asked once and kept in the app's settings."""
        name = self.window.settings.reviewer()
        if name or not ask:
            return name
        import getpass

        dialog = QInputDialog(self.qwin)
        dialog.setWindowTitle("Reviewer")
        dialog.setLabelText("Your name as the dataset records it (status, time, edit log):")
        try:
            dialog.setTextValue(getpass.getuser())
        except (KeyError, OSError):
            pass
        if not dialog.exec() or not dialog.textValue().strip():
            return None
        name = dialog.textValue().strip()
        self.window.settings.set_reviewer(name)
        return name

    # -- statuses and notes ----------------------------------------------------------------------
    def set_status(self, case_ids: list[str], status: str) -> None:
        """From the worklist (buttons, menu) or Ctrl+Alt+D: written at once through core.dataset.set_case
        (under the dataset's lock; the change goes into the case's history with the reviewer)."""
        from core.dataset import set_case

        ds = self.dataset
        if ds is None:
            return
        who = self.reviewer()
        fields: dict[str, Any] = {"status": status}
        if who and status != "todo":
            fields["reviewer"] = who
        try:
            for c in case_ids:
                set_case(ds, c, who=who, **fields)
        except Exception as exc:  # noqa: BLE001 - e.g. a lock held by a dead window: one message
            import traceback

            self.window.report_error(exc, None if _is_ours(exc) else traceback.format_exc())
        self.reload_state()
        n = len(case_ids)
        self._say(f"{case_ids[0] if n == 1 else f'{n} cases'}: {STATUS_TEXT[status].lower()}", 4000)

    def set_note(self, case_id: str, note: str) -> None:
        from core.dataset import set_case

        if self.dataset is None:
            return
        try:
            set_case(self.dataset, case_id, note=note)
        except Exception as exc:  # noqa: BLE001
            import traceback

            self.window.report_error(exc, None if _is_ours(exc) else traceback.format_exc())
        self.reload_state()
        self._say(f"Note of {case_id} kept.", 3000)

    def toggle_done(self) -> None:
        """Ctrl+Alt+D: the open case is done; again (or on a done case): reopened, in review."""
        if self._no_dataset():
            return
        if not self.owns_case() or self.current is None:
            self._say("No dataset case is open: double-click one in the worklist.", 5000)
            return
        done = self.case_state(self.current).status == "done"
        self.set_status([self.current], "in_review" if done else "done")

    # -- opening cases -----------------------------------------------------------------------------
    def open_case(self, case_id: str) -> Job | None:
        """Open a case of the worklist (double-click, Enter); edits of the open case are asked about first."""
        if self.dataset is None:
            return None
        if self._wanted is not None:
            self._say(f"Opening {self._wanted} already: wait for it.", 3000)
            return None
        if self.owns_case() and case_id == self.current:
            self.panel.select_case(case_id)
            return None
        ref = self.window.case.session.reference
        if self.owns_case() and ref is not None and ref.modified:
            ans = QMessageBox.question(
                self.qwin,
                "Airway Studio",
                f"Save the reviewed label of {self.current} before opening {case_id}?",
                QMessageBox.StandardButton.Save
                | QMessageBox.StandardButton.Discard
                | QMessageBox.StandardButton.Cancel,
            )
            if ans == QMessageBox.StandardButton.Cancel:
                return None
            if ans == QMessageBox.StandardButton.Save:
                return self._save_then_open(case_id, status=None)
            self.window.case.session.discard_recovery()
        elif not self.owns_case() and not self.window.maybe_save("opening another case"):
            return None
        self.leave_case()
        return self._load(case_id)

    def leave_case(self, status: str | None = None) -> None:
        """Record the open case's time, view, figures and review items (no label is written)."""
        if not self.owns_case() or self.current is None or self.dataset is None:
            return
        record = self._record(status)
        try:
            state = record_job(self.dataset, self.current, record, self.reviewer(ask=False), progress=_noop)
        except Exception as exc:  # noqa: BLE001
            self._say(f"The time and view of {self.current} were not recorded: {exc}", 8000)
            return
        self._set_state(state)
        # what the review showed (statuses, view) is now in the dataset: no project question on close
        self.window.case._set_modified(False)

    def _load(self, case_id: str) -> Job | None:
        ds = self.dataset
        assert ds is not None
        self._wanted = case_id
        self.panel.select_case(case_id)
        unsaved = self._unsaved.pop(case_id, None)
        if unsaved is not None:  # a save of it failed: its edits, from memory
            self._apply(unsaved)
            return None
        if self._previous is not None and self._previous.case_id == case_id and self._previous_is_current(ds):
            self._apply(self._previous)
            return None
        pre, self._prefetch = self._prefetch, None
        if pre is not None and pre.case_id == case_id:
            if pre.result is not None:
                self._apply_checked(pre.result)
                return None
            if pre.job.state in ("running", "done"):
                # the pre-load of this very case is under way (or its result is on its way to this thread):
                # its own result handler shows it; nothing is connected late, so nothing is missed
                self._waiting = pre
                self._say(f"Opening {case_id}...", 3000)
                return pre.job
        elif pre is not None and pre.job.running:
            pre.job.cancel()
        saving = self._saving.get(case_id)
        if saving is not None:
            # its reviewed label is being written: read once it is there (the save's own end handler starts it)
            self._load_after_save = case_id
            return saving
        return self._start_load(case_id)

    def _previous_is_current(self, ds: Dataset) -> bool:
        """The case left last, still in memory, shows what its files hold: saved (or never edited), no save of
        it under way, its reviewed label as this window left it, its CT and predictions unchanged."""
        from core.review.persist import file_key

        prev = self._previous
        assert prev is not None
        case_id = prev.case_id
        ref = prev.loaded.session.reference
        if case_id in self._saving or (ref is not None and ref.modified):
            return False
        if file_key(ds.reviewed_path(case_id)) != self._reviewed_keys.get(case_id):
            return False
        now, then = case_stamps(ds, ds.case(case_id)), self._previous_stamps
        return len(now) == len(then) and now[0] == then[0] and now[2:] == then[2:]  # all but the label

    def _start_load(self, case_id: str) -> Job:
        assert self.dataset is not None
        job = Job(load_dataset_case, self.dataset, case_id, name=f"Opening {case_id}")
        job.result.connect(guarded(self, self._apply_checked))
        job.error.connect(guarded(self, lambda exc, tb: self._load_failed(case_id, exc, tb)))
        job.cancelled.connect(guarded(self, lambda: setattr(self, "_wanted", None)))
        self.window.track_job(job, lambda exc: True)  # progress in the status bar; the error is shown here
        return job.start()

    def _load_failed(self, case_id: str, exc: BaseException, tb: str) -> None:
        if self._wanted == case_id:
            self._wanted = None
        self.window.report_error(exc, None if _is_ours(exc) else tb, title=f"Airway Studio: opening {case_id}")

    def _apply_checked(self, res: LoadedDatasetCase) -> None:
        """A pre-load that ended: shown if it is the case asked for and its files did not change meanwhile."""
        if self._wanted != res.case_id or self.dataset is None:
            return
        if res.stamps != case_stamps(self.dataset, self.dataset.case(res.case_id)):
            self._start_load(res.case_id)
            return
        self._apply(res)

    def _apply(self, res: LoadedDatasetCase) -> None:
        """Put a loaded case in the window (what open_files does with its loading job's result)."""
        w = self.window
        self._wanted = None
        if res.stamps:  # read from disk now (a reopened unsaved session keeps what it knew)
            self._reviewed_keys[res.case_id] = res.reviewed_key
        left, self._previous = self._previous, None
        keep = self.prefetch_enabled and self.owns_case() and self.info is not None
        if keep and self.current is not None and self.info is not None and self.current != res.case_id:
            # the case being left stays in memory, with its analysis: Ctrl+[ right after Ctrl+] shows it at once
            info = self.info
            kept = w.case.as_loaded(self.current)
            self._previous = LoadedDatasetCase(
                self.current, kept, info.label_path, info.label_version, info.models, (), dict(info.keys)
            )
            self._previous_stamps = info.stamps
        del left
        w.case.apply_loaded(res.loaded)
        self._session = w.case.session
        self.current, self.info = res.case_id, res
        cs = self.case_state(res.case_id)
        self._restore_statuses(cs.view)
        w.caseLoaded.emit()
        self._restore_view(cs.view)
        w.case._set_modified(False)
        self.activity.start()
        self.panel.select_case(res.case_id)
        self._update_label()
        self._update_progress()
        self.caseOpened.emit(res.case_id)
        self._prefetch_neighbour()

    # -- pre-loading ---------------------------------------------------------------------------
    def _order_changed(self, *_: Any) -> None:
        if self.owns_case():
            self._prefetch_neighbour()

    def _drop_prefetch(self) -> None:
        pre, self._prefetch = self._prefetch, None
        if pre is not None and pre.job.running:
            pre.job.cancel()

    def _prefetch_neighbour(self) -> None:
        """Read the next case of the worklist now, so Ctrl+] shows it without waiting for the files."""
        if not self.prefetch_enabled or self.dataset is None or self._wanted is not None:
            return
        target = self.panel.neighbour(self.current, 1)
        if target is None or (self._prefetch is not None and self._prefetch.case_id == target):
            return
        self._drop_prefetch()
        job = Job(load_dataset_case, self.dataset, target, name=f"Pre-loading {target}")
        pre = Prefetch(target, job)

        def done(res: LoadedDatasetCase, p: Prefetch = pre) -> None:
            p.result = res
            if self._waiting is p:
                self._waiting = None
                self._apply_checked(res)
            elif self._prefetch is p:
                self.prefetched.emit(p.case_id)

        def failed(exc: BaseException, tb: str, p: Prefetch = pre) -> None:
            # a pre-load that fails says nothing unless the case was asked for meanwhile
            if self._waiting is p:
                self._waiting = None
                self._load_failed(p.case_id, exc, tb)
            elif self._prefetch is p:
                self._prefetch = None

        job.result.connect(guarded(self, done))
        job.error.connect(guarded(self, failed))
        self._prefetch = pre
        job.start()

    # -- saving ----------------------------------------------------------------------------------
    def _figures(self, saving: bool = False) -> dict[str, dict[str, float]] | None:
        """The figures the session computed (never recomputed here); None while an analysis lags behind edits,
        and for edits left unsaved (they were measured on a label no file holds)."""
        import math

        from core.dataset import FIGURES

        case = self.window.case
        ref = case.session.reference
        if case.stale or ref is None or (ref.modified and not saving):
            return None
        out: dict[str, dict[str, float]] = {}
        for entry in case.predictions:
            m = entry.metrics
            if m is None:
                return None
            # an undefined figure (no branch to detect) is left out, as core.dataset does
            out[entry.name] = {k: float(getattr(m, k)) for k in FIGURES if math.isfinite(float(getattr(m, k)))}
        return out

    def _open_items(self) -> int | None:
        case = self.window.case
        counts = [e for e in case.predictions if e.regions is not None]
        if not counts:
            return None
        return sum(len(e.regions or []) - e.reviewed_count() for e in counts)

    def view_state(self) -> dict[str, Any]:
        """Cursor (the slice of every view), zoom and pan per view, active prediction, selected region and
        the regions' review statuses: what the case shows again when it is opened next time."""
        w = self.window
        case = w.case
        active = case.active
        return {
            "cursor": [int(v) for v in case.cursor],
            "zoom": {o: float(v.zoom) for o, v in w.views.items()},
            "pan": {o: [float(v.pan.x()), float(v.pan.y())] for o, v in w.views.items()},
            "active_prediction": active.name if active is not None else None,
            "region": case.active_region_key,
            "statuses": {e.name: dict(sorted(e.statuses.items())) for e in case.predictions if e.statuses},
        }

    def _record(self, status: str | None, saving: bool = False) -> CaseRecord:
        """What the state file gets for the open case; ``saving``: its reference is being written as reviewed."""
        info = self.info
        figures = self._figures(saving)
        layer = self.window.case.session.reference
        version = None
        if figures is not None and layer is not None:
            on_reviewed = layer.path is not None and Path(layer.path).parent == self._reviewed_dir()
            version = "reviewed" if saving or on_reviewed else "original"
        return CaseRecord(
            status=status,
            reviewer=self.reviewer(ask=False) if status else None,
            seconds=self.activity.take(),
            figures=figures,
            open_items=self._open_items(),
            keys=dict(info.keys) if info is not None else {},
            label_version=version,
            view=self.view_state(),
        )

    def _reviewed_dir(self) -> Path | None:
        return None if self.dataset is None else self.dataset.reviewed_dir

    def save_reviewed(self, status: str | None = None) -> Job | None:
        """Write the open case's reference to labelsReviewed/CASE.nii.gz (Ctrl+Alt+S on a dataset case,
        and the first half of Save and next) and record the case; None when nothing was written."""
        from app.dialogs import ask_save_conflict
        from core.review.persist import SaveConflictError, file_key

        if not self.owns_case() or self.dataset is None or self.current is None:
            return None
        case_id = self.current
        if case_id in self._saving:
            self._say(f"Saving {case_id} already: wait for it to finish.", 4000)
            return None
        session = self.window.case.session
        layer = session.reference
        if layer is None:
            self._say("This case has no reference to save.", 5000)
            return None
        target = self.dataset.reviewed_path(case_id)
        on_conflict = "raise"
        while True:
            try:
                pending = session.begin_save(layer, target, on_conflict=on_conflict)
            except SaveConflictError as exc:
                choice = ask_save_conflict(self.qwin, exc)
                if choice in ("merge", "overwrite"):
                    on_conflict = choice
                    continue
                self._say(f"Not saved: {target.name} changed on disk.", 8000)
                return None
            except Exception as exc:  # noqa: BLE001 - one dialog, the app goes on
                import traceback

                self.window.report_error(exc, None if _is_ours(exc) else traceback.format_exc())
                return None
            break
        # another annotator may have written this case's reviewed label since it was opened here
        expected = self._reviewed_keys.get(case_id)
        overwrite = on_conflict == "overwrite"
        if on_conflict == "merge":
            expected = file_key(target)  # merged into what is there now
        elif not overwrite and file_key(target) != expected:
            ans = QMessageBox.question(
                self.qwin,
                "Airway Studio",
                f"{_rel(target, self.dataset.root)} was saved by someone else after you opened {case_id}.\n\n"
                "Overwrite it with your review? Their version is kept beside it as "
                f"{case_id}.other-TIME.nii.gz.",
                QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Cancel,
            )
            if ans != QMessageBox.StandardButton.Save:
                self._say(f"Not saved: {target.name} was changed by someone else.", 8000)
                return None
            overwrite = True
        who = self.reviewer()
        record = self._record(status, saving=True)
        if who:
            record.reviewer = who

        # the save is over for the reviewer when its result or error arrives: the job's ``finished``
        # comes after, and a Ctrl+Alt+S typed in between was refused as "saving already"
        def written(saved: SavedReview, s: Any = session) -> None:
            self._saving_over(case_id, job)
            self._reviewed_keys[saved.case_id] = saved.pending.disk_key
            if self.window.case.session is s:
                self.window.case.finish_save(saved.pending)
            else:  # the window moved on: the session that made the snapshot learns it is saved
                s.end_save(saved.pending)
            self._set_state(saved.state)
            if self.window.case.session is s:  # the review's statuses and view are in the dataset now
                self.window.case._set_modified(False)
            self._say(f"Saved {_rel(saved.path, self.dataset.root if self.dataset else saved.path.parent)}", 6000)
            self.window.labelSaved.emit(saved.path)
            self.reviewSaved.emit(saved.case_id, saved.path)

        shown_ct, info = self.window.case.ct, self.info

        def failed(exc: BaseException, s: Any = session, ct: Any = shown_ct, i: Any = info) -> bool:
            self._saving_over(case_id, job)
            self._save_failed(case_id, s, ct, i, exc)
            return True

        job = self.window.start_job(
            write_review,
            self.dataset,
            case_id,
            pending,
            record,
            who,
            expected,
            overwrite,
            name=f"Saving {case_id}",
            on_result=written,
            on_error=failed,
        )
        self._saving[case_id] = job
        job.finished.connect(guarded(self, lambda c=case_id, j=job: self._save_ended(c, j)))
        return job

    def _save_failed(
        self, case_id: str, session: Any, shown_ct: Any, info: LoadedDatasetCase | None, exc: BaseException
    ) -> None:
        """The label was not written (disk full, no permission...): the edits are still in ``session``. The case
        opens again with them (now, unless the reviewer edits another case: then when it is opened next)."""
        from app.review.case import LoadedCase

        if self.owns_case() and self.current == case_id and self.window.case.session is session:
            # the next case was still loading: the switch is called off, the reviewer stays here with the edits
            self._wanted, self._waiting = None, None
            self.window.report_error(
                f"The reviewed label of {case_id} was not written: {exc}\n\nYour edits are kept: {case_id} stays open.",
                title=f"Airway Studio: saving {case_id}",
            )
            return
        if info is not None:
            loaded = LoadedCase(session, ct=shown_ct, name=case_id, new_case=True)
            self._unsaved[case_id] = LoadedDatasetCase(
                case_id, loaded, info.label_path, info.label_version, info.models, (), dict(info.keys)
            )
        ref = self.window.case.session.reference
        busy_here = self.owns_case() and self.current != case_id and ref is not None and ref.modified
        again = f"open {case_id} again to save them" if busy_here else f"{case_id} is open again with them"
        self.window.report_error(
            f"The reviewed label of {case_id} was not written: {exc}\n\nYour edits are kept: {again}.",
            title=f"Airway Studio: saving {case_id}",
        )
        if not busy_here and self.current != case_id and case_id in self._unsaved:
            self._wanted = None
            self._load(case_id)

    def _saving_over(self, case_id: str, job: Job) -> None:
        if self._saving.get(case_id) is job:
            del self._saving[case_id]

    def _save_ended(self, case_id: str, job: Job) -> None:
        self._saving_over(case_id, job)
        if self._load_after_save == case_id:
            self._load_after_save = None
            self._start_load(case_id)

    def _next_status(self) -> str:
        assert self.current is not None
        now = self.case_state(self.current).status
        return now if now in ("done", "flagged") else "in_review"

    def save_and_step(self, step: int) -> Job | None:
        """Ctrl+] / Ctrl+[: save the reviewed label (when edited), record the case, open the next / previous
        case of the worklist (as sorted and filtered)."""
        if self._no_dataset():
            return None
        if self._wanted is not None:
            self._say(f"Opening {self._wanted} already: wait for it.", 3000)
            return None
        if not self.owns_case():
            target = self.panel.neighbour(None, step)
            if target is None:
                self._say("The worklist shows no case (check the filters).", 5000)
                return None
            if not self.window.maybe_save("opening another case"):
                return None
            return self._load(target)
        target = self.panel.neighbour(self.current, step)
        if target is None:
            where = "last" if step > 0 else "first"
            self._say(f"{self.current} is the {where} case of the worklist (as filtered).", 6000)
        return self._save_then_open(target, self._next_status())

    def _save_then_open(self, target: str | None, status: str | None) -> Job | None:
        layer = self.window.case.session.reference
        edited = layer is not None and layer.modified
        if not edited:
            self.leave_case(status)
            return self._load(target) if target is not None else None
        job = self.save_reviewed(status)
        if job is None:  # not saved (a conflict the reviewer cancelled): stay
            return None
        # the snapshot is taken: the label is written while the next case shows (a failed write reopens
        # this case with its edits, see _save_failed)
        if target is not None:
            self._load(target)
        return job

    # -- view state ------------------------------------------------------------------------------
    def _restore_statuses(self, view: dict[str, Any]) -> None:
        from core.review import STATUS_KEYS

        case = self.window.case
        saved = view.get("statuses") or {}
        for i, entry in enumerate(case.predictions):
            table = saved.get(entry.name)
            if table:
                live = case.session.status_table(i)
                live.clear()
                live.update({k: v for k, v in table.items() if v in STATUS_KEYS})

    def _restore_view(self, view: dict[str, Any]) -> None:
        w = self.window
        case = w.case
        name = view.get("active_prediction")
        if name:
            for i, e in enumerate(case.predictions):
                if e.name == name:
                    case.set_active(i)
        cur = view.get("cursor")
        if isinstance(cur, list) and len(cur) == 3:
            case.set_cursor(cur)
        for o, z in (view.get("zoom") or {}).items():
            if o in w.views:
                w.views[o].zoom = float(z)
        for o, xy in (view.get("pan") or {}).items():
            if o in w.views and isinstance(xy, list) and len(xy) == 2:
                w.views[o].pan = QPointF(float(xy[0]), float(xy[1]))
        for v in w.views.values():
            v.update()
        key = view.get("region")
        active = case.active
        self._pending_region = (active.name, str(key)) if key and active is not None else None
        self._restore_region()

    def _restore_region(self) -> None:
        if self._pending_region is None or not self.owns_case():
            return
        case = self.window.case
        name, key = self._pending_region
        active = case.active
        if active is None or active.name != name or active.regions is None:
            return
        self._pending_region = None
        i = case.region_index(key)
        if i >= 0:
            case.active_region = i
            case.activeRegionChanged.emit(i)

    # -- window events ---------------------------------------------------------------------------
    def eventFilter(self, obj: Any, event: Any) -> bool:
        if obj is self.qwin:
            t = event.type()
            if t == QEvent.Type.WindowActivate:
                self.reload_state()
                if self.owns_case() and not self.activity.running:  # a close the user cancelled
                    self.activity.start()
            elif t == QEvent.Type.Close:
                self._before_close()
        return False

    def _before_close(self) -> None:
        """Saves under way finish (a label half-written is never left); the open case is recorded."""
        for job in list(self._saving.values()):
            if job.running:
                self.window.wait_for(job)
        self.leave_case()
        self.activity.stop()
        self._drop_prefetch()
        self._previous = None


def _rel(path: Path, root: Path) -> Path:
    try:
        return path.relative_to(root)
    except ValueError:
        return path


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")


def _noop(*_a: Any, **_k: Any) -> None:
    return None


def _is_ours(exc: BaseException) -> bool:
    from core.errors import AirwayError

    return isinstance(exc, AirwayError)
