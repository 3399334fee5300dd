"""The training tab: launch ``main.py train`` in its own process and watch it learn.

The trainer is started detached (its own session, app.training.launch.launch_detached) with its output
captured in ``RUN/trainer.log`` and its pid in ``RUN/trainer.pid``, so it keeps
running when the app closes, and a reopened app reattaches to it exactly as it
watches a run it has just started: by tailing ``RUN/events.jsonl`` (schema in
docs/CONTRACTS.md) on a file-system watcher with a timer as fallback, and by
checking the pid for liveness.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6 import QtCore, QtGui, QtWidgets
from PySide6.QtCore import Signal

from app.training.launch import (
    TrainSettings,
    check_settings,
    entry_command,
    finetune_args,
    launch_detached,
    list_presets,
    resume_args,
    train_args,
)
from app.training.plots import TrainingPlots
from app.training.qt_workarounds import install_refcount_guard
from app.training.runs import (
    ENDED,
    FAILED,
    FINISHED,
    INTERRUPTED,
    KILLED,
    NOT_STARTED,
    RUNNING,
    EventTail,
    LineTail,
    PidRecord,
    RunHistory,
    best_checkpoint_path,
    can_resume,
    can_train_further,
    clear_stop_request,
    conclude_status,
    crash_report,
    find_runs,
    find_trainer,
    kill_process,
    parse_event_line,
    read_pid_file,
    request_stop,
    write_pid_file,
)
from core.training.run_files import EVENTS_FILE, LOG_FILE, RunFiles

if TYPE_CHECKING:
    from app.settings import Settings

install_refcount_guard()  # PySide6 6.12 on Python 3.11 leaks references (see the module)

Launcher = Callable[[list[str]], tuple[str, list[str]]]
LOG_LINES = 5000


class RunMonitor(QtCore.QObject):
    """Follows one run folder: new events, the trainer's output, and whether it still runs."""

    changed = Signal()  # history or status changed (plots, status line)
    logLines = Signal(list)  # new lines for the log pane
    ended = Signal(str)  # the run reached an end state (training_runs.ENDED)

    POLL_MS = 500
    STEP_LOG_EVERY_S = 10.0

    def __init__(self, run_dir: str | Path, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.run_dir = Path(run_dir).resolve()
        self.history = RunHistory(name=self.run_dir.name)
        self.log: deque[str] = deque(maxlen=LOG_LINES)
        self.pid: PidRecord | None = read_pid_file(self.run_dir)
        self.killed = False
        self._searched = self.pid is not None  # looked for a trainer started outside the app
        self._starts_at_launch: int | None = None  # run_start count when this app last launched it
        self.status = NOT_STARTED
        self._last_step_logged = float("-inf")
        self._events = EventTail(self.run_dir / EVENTS_FILE)
        self._output = LineTail(self.run_dir / LOG_FILE)
        self._watcher = QtCore.QFileSystemWatcher(self)
        # Writes come per step; coalesce the watcher's notifications into one poll.
        self._kick = QtCore.QTimer(self)
        self._kick.setSingleShot(True)
        self._kick.setInterval(50)
        self._kick.timeout.connect(self.poll)
        self._watcher.fileChanged.connect(lambda _: self._kick.start() if not self._kick.isActive() else None)
        self._watcher.directoryChanged.connect(self._watch_files)
        self._timer = QtCore.QTimer(self)
        self._timer.setInterval(self.POLL_MS)
        self._timer.timeout.connect(self.poll)
        self._watch_files()  # and a first poll
        if self.status == RUNNING or self.status == NOT_STARTED:
            self._timer.start()

    # -- following the folder ---------------------------------------------------------
    def _watch_files(self) -> None:
        if self.run_dir.is_dir() and str(self.run_dir) not in self._watcher.directories():
            self._watcher.addPath(str(self.run_dir))
        for name in (EVENTS_FILE, LOG_FILE):
            path = self.run_dir / name
            if path.is_file() and str(path) not in self._watcher.files():
                self._watcher.addPath(str(path))
        self.poll()

    def poll(self) -> None:
        """Read what is new and re-judge whether the process lives."""
        # Liveness first: a process that wrote run_end and exited between the two
        # checks must not look as if it died without one.
        alive = self.pid.alive() if self.pid is not None else False
        lines: list[str] = []
        events = self._events.read_new()
        if self._events.reset:  # the file was replaced: start over
            self.history = RunHistory(name=self.run_dir.name)
        for event in events:
            line = self.history.apply(event) or self._step_line(event)
            if line:
                lines.append(f"[{_clock(event.get('time'))}] {line}")
        for raw in self._output.read_lines():
            if raw.strip() and parse_event_line(raw) is None:
                lines.append(f"[trainer] {raw}")
        if self.pid is None and not self._searched and self.history.status == RUNNING:
            # events without an end and no pid file: a run started from a shell?
            self._searched = True
            self.pid = find_trainer(self.run_dir)
            alive = self.pid.alive() if self.pid is not None else False
            if self.pid is not None:
                lines.append(f"[app] Found the training process of this run (pid {self.pid.pid}).")
        if self._events.more:  # a long backlog (reattaching): read on without blocking the GUI
            self._emit(lines, bool(events))
            QtCore.QTimer.singleShot(0, self.poll)
            return
        status = conclude_status(self.history, alive, launched=self.pid is not None)
        if status == INTERRUPTED and self.killed:
            status = KILLED
        elif status == INTERRUPTED and self._starts_at_launch == self.history.starts:
            status = FAILED  # died before its run_start: bad arguments, a broken install (see its output)
        previous, self.status = self.status, status
        self._emit(lines, bool(events) or status != previous)
        if status != previous and status in ENDED:
            self._timer.stop()
            self.ended.emit(status)
        elif status == RUNNING and not self._timer.isActive():
            self._timer.start()

    def _step_line(self, event: dict[str, object]) -> str | None:
        """A log line for a step now and then: steps are plotted, but a slow run should still show life."""
        if event.get("event") != "step":
            return None
        t = event.get("time")
        if not isinstance(t, (int, float)) or t - self._last_step_logged < self.STEP_LOG_EVERY_S:
            return None
        self._last_step_logged = t
        return (
            f"Stage {event.get('stage')} epoch {self.history.shown_epoch(event)} step {event.get('step')} "
            f"(global {event.get('global_step')}): loss {_num(event.get('loss'))} "
            f"(enc {_num(event.get('loss_enc'))}, dec {_num(event.get('loss_dec'))}), "
            f"lr {_num(event.get('lr'))}, {_num(event.get('patches_per_s'), '.1f')} patches/s"
        )

    def _emit(self, lines: list[str], changed: bool) -> None:
        if lines:
            self.log.extend(lines)
            self.logLines.emit(lines)
        if changed:
            self.changed.emit()

    # -- control --------------------------------------------------------------------
    def attach_process(self, pid: int) -> None:
        """A (re)started trainer now writes this folder."""
        self.pid = write_pid_file(self.run_dir, pid)
        self.killed = False
        # Until its own events arrive, the new process is what the run is doing:
        # an old run_end (stopped) must not end it, a death before run_start is a crash.
        self.history.status = RUNNING
        self.history.error_message = self.history.error_traceback = None
        self._starts_at_launch = self.history.starts
        self.status = RUNNING
        self._watch_files()
        self._timer.start()
        self.changed.emit()

    def stop(self) -> None:
        request_stop(self.run_dir)
        self.log.append(f"[app] Stop requested ({RunFiles.of(self.run_dir).stop}).")
        self.logLines.emit([self.log[-1]])

    def kill(self) -> bool:
        if self.pid is None:
            return False
        self.killed = True
        done = kill_process(self.pid)
        self.log.append("[app] Training process killed." if done else "[app] The training process had already ended.")
        self.logLines.emit([self.log[-1]])
        self.poll()
        return done

    def crash_text(self) -> str:
        return crash_report(self.history, self.run_dir)

    def summary(self) -> str:
        return self.history.summary(self.status)


# message colours readable on the dark theme (and on a light one)
MESSAGE_COLOURS = {"error": "#ff6b6b", "warning": "#f0b429", "ok": "#5fd38d", "info": ""}


def never_learned(history: RunHistory) -> bool:
    """True when a run validated at least once and every TD, BD, DSC and precision stayed at 0."""
    import numpy as np

    v = history.validations
    if v.size == 0:
        return False
    vals = np.concatenate([np.nan_to_num(np.asarray(v.view(c), dtype=float)) for c in ("td", "bd", "dsc", "precision")])
    return bool(np.all(vals <= 0.0))


def _num(value: object, spec: str = ".4g") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "?"


def _clock(t: object) -> str:
    try:
        return time.strftime("%H:%M:%S", time.localtime(float(t)))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "--:--:--"


class TrainingTab(QtWidgets.QWidget):
    """Choose data, config, output and device; start, stop, kill, resume; watch and compare runs.

    ``openCheckpointRequested(path)`` asks the main window to open a checkpoint
    in the review workspace and segment the current case with it.
    ``launcher`` maps ``airway`` arguments to (program, arguments); it defaults
    to relaunching this application's entry point (tests swap in a fake trainer).
    """

    openCheckpointRequested = Signal(str)
    runStarted = Signal(str)
    runEnded = Signal(str, str)  # run folder, status

    SETTINGS_RUNS = "training/runs"

    def __init__(
        self,
        parent: QtWidgets.QWidget | None = None,
        *,
        settings: Settings | None = None,
        launcher: Launcher | None = None,
    ):
        super().__init__(parent)
        if settings is None:
            from app.settings import Settings

            settings = Settings()
        self.settings = settings
        self.launcher: Launcher = launcher or entry_command
        self.monitors: dict[str, RunMonitor] = {}
        self.dataset_path: Path | None = None  # the open dataset (set_dataset), for fine-tuning
        self._finetune_block: str | None = "Open a dataset (File > Open dataset) to fine-tune on its reviewed cases."
        self._build()
        self._restore()
        self._refresh_buttons()

    # -- layout ------------------------------------------------------------------------
    def _build(self) -> None:
        self.data_edit = QtWidgets.QLineEdit()
        self.data_edit.setPlaceholderText("folder with imagesTr/ + labelsTr/, or dataset.csv")
        self.config_combo = QtWidgets.QComboBox()
        self.config_combo.setEditable(True)
        from app.training.launch import preset_description

        for i, name in enumerate(list_presets()):
            self.config_combo.addItem(name)
            self.config_combo.setItemData(i, preset_description(name), QtCore.Qt.ItemDataRole.ToolTipRole)
        self.config_combo.setToolTip(
            "A preset (paper, quick, demo) or the path of a .toml file; hover a preset in the list for what it is for"
        )
        self.out_edit = QtWidgets.QLineEdit()
        self.out_edit.setPlaceholderText("a new folder for this run")
        self.device_combo = QtWidgets.QComboBox()
        self.device_combo.setEditable(True)
        self.device_combo.addItems(["auto", "cpu", "cuda", "cuda:0", "cuda:1"])

        form = QtWidgets.QFormLayout()
        form.addRow("Dataset", self._with_browse(self.data_edit, self._browse_data))
        form.addRow("Config", self._with_browse(self.config_combo, self._browse_config))
        form.addRow("Output", self._with_browse(self.out_edit, self._browse_out))
        form.addRow("Device", self.device_combo)
        self.init_edit = QtWidgets.QLineEdit()
        self.init_edit.setPlaceholderText("checkpoint to fine-tune (empty: the shipped model)")
        self.init_edit.setToolTip(
            "The model 'Fine-tune on reviewed cases' starts from, usually the one whose predictions were reviewed"
        )
        form.addRow("Fine-tune from", self._with_browse(self.init_edit, self._browse_init))

        self.check_button = QtWidgets.QPushButton("Check")
        self.start_button = QtWidgets.QPushButton("Start")
        self.start_button.setToolTip(
            "Check the settings and start training in its own process; it keeps running "
            "if you close the app, and the app finds it again when reopened"
        )
        self._start_tip = self.start_button.toolTip()
        self.stop_button = QtWidgets.QPushButton("Stop")
        self.stop_button.setToolTip("Finish the current step, save a checkpoint and exit")
        self.kill_button = QtWidgets.QPushButton("Kill")
        self.kill_button.setToolTip("End the training process now (progress since the last checkpoint is lost)")
        self.resume_button = QtWidgets.QPushButton("Resume")
        self.resume_button.setToolTip(
            "Continue the selected run from its last checkpoint (a run that was stopped, crashed or killed)"
        )
        self.further_button = QtWidgets.QPushButton("Train further")
        self.further_button.setToolTip(
            "Train the selected finished run for more epochs of its last stage (its learning-rate schedule "
            "goes on where it ended); the number of epochs is set beside the button"
        )
        self.more_epochs_spin = QtWidgets.QSpinBox()
        self.more_epochs_spin.setRange(1, 10000)
        self.more_epochs_spin.setValue(10)
        self.more_epochs_spin.setSuffix(" more epochs")
        self.more_epochs_spin.setToolTip("How many epochs 'Train further' adds to a finished run's last stage")
        self.open_best_button = QtWidgets.QPushButton("Segment CT with best")
        self.open_best_button.setToolTip(
            "Segment the CT open in the Review tab with the selected run's best "
            "checkpoint (needs an open CT and a checkpoint)"
        )
        self.finetune_button = QtWidgets.QPushButton("Fine-tune on reviewed cases")
        self.ignore_unreviewed_check = QtWidgets.QCheckBox("Ignore unjudged regions")
        self.ignore_unreviewed_check.setObjectName("ignoreUnreviewed")
        self.ignore_unreviewed_check.setToolTip(
            "Fine-tuning leaves out of the losses the error regions of each reviewed case that the reviewer did "
            "not judge (no status, unreviewed or flagged): they count neither as airway nor as background"
        )
        self.report_button = QtWidgets.QPushButton("Open comparison report")
        self.report_button.setToolTip(
            "Open the selected fine-tuning run's comparison of the start and the fine-tuned model on the test cases"
        )
        self.ct_available = False
        self.finetune_button.clicked.connect(self.fine_tune)
        self.report_button.clicked.connect(self.open_report)
        self.check_button.clicked.connect(self.check)
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.kill_button.clicked.connect(self.kill)
        self.resume_button.clicked.connect(self.resume)
        self.further_button.clicked.connect(self.train_further)
        self.open_best_button.clicked.connect(self.open_best)
        buttons = QtWidgets.QGridLayout()
        for i, b in enumerate(
            (
                self.check_button,
                self.start_button,
                self.stop_button,
                self.kill_button,
                self.resume_button,
                self.open_best_button,
            )
        ):
            buttons.addWidget(b, i // 3, i % 3)
        buttons.addWidget(self.further_button, 2, 0)
        buttons.addWidget(self.more_epochs_spin, 2, 1)
        buttons.addWidget(self.finetune_button, 3, 0, 1, 2)
        buttons.addWidget(self.report_button, 3, 2)
        buttons.addWidget(self.ignore_unreviewed_check, 4, 0, 1, 3)

        self.problems_label = QtWidgets.QLabel()
        self.problems_label.setWordWrap(True)

        self.problems_label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status_label = QtWidgets.QLabel("No run selected.")
        self.status_label.setWordWrap(True)
        # the selected run's latest warning from the trainer (e.g. a model that marks everything as airway)
        self.warning_label = QtWidgets.QLabel()
        self.warning_label.setWordWrap(True)
        self.warning_label.setStyleSheet(f"color: {MESSAGE_COLOURS['warning']};")
        self.warning_label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.warning_label.hide()

        self.runs_list = QtWidgets.QListWidget()
        self.runs_list.setToolTip("Tick runs to draw them; the selected run is the one the buttons act on")
        self.runs_list.currentItemChanged.connect(lambda *_: self._select_changed())
        self.runs_list.itemChanged.connect(self._item_checked)
        self.add_runs_button = QtWidgets.QPushButton("Add runs…")
        self.add_runs_button.setToolTip("Add a run folder, or every run inside a folder")
        self.add_runs_button.clicked.connect(self._browse_runs)
        self.remove_run_button = QtWidgets.QPushButton("Remove from list")
        self.remove_run_button.clicked.connect(self.remove_current_run)
        run_buttons = QtWidgets.QHBoxLayout()
        run_buttons.addWidget(self.add_runs_button)
        run_buttons.addWidget(self.remove_run_button)

        left = QtWidgets.QWidget()
        left_lay = QtWidgets.QVBoxLayout(left)
        left_lay.addLayout(form)
        left_lay.addLayout(buttons)
        left_lay.addWidget(self.problems_label)
        left_lay.addWidget(QtWidgets.QLabel("Runs"))
        left_lay.addWidget(self.runs_list, 1)
        left_lay.addLayout(run_buttons)
        left_lay.addWidget(self.status_label)
        left_lay.addWidget(self.warning_label)

        self.plots = TrainingPlots()
        self.log_view = QtWidgets.QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(LOG_LINES)
        self.log_view.setFont(QtGui.QFontDatabase.systemFont(QtGui.QFontDatabase.SystemFont.FixedFont))
        self.error_view = QtWidgets.QPlainTextEdit()
        self.error_view.setReadOnly(True)
        self.error_view.setStyleSheet(f"color: {MESSAGE_COLOURS['error']};")
        self.error_view.setMaximumHeight(160)
        self.error_view.hide()

        right = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        right.addWidget(self.plots)
        bottom = QtWidgets.QWidget()
        bottom_lay = QtWidgets.QVBoxLayout(bottom)
        bottom_lay.setContentsMargins(0, 0, 0, 0)
        bottom_lay.addWidget(self.error_view)
        bottom_lay.addWidget(self.log_view)
        right.addWidget(bottom)
        right.setStretchFactor(0, 3)
        right.setStretchFactor(1, 1)

        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(1, 1)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(split)

        self._status_timer = QtCore.QTimer(self)  # ETA counts down between epochs
        self._status_timer.setInterval(1000)
        self._status_timer.timeout.connect(self._update_status)
        self._status_timer.start()

    def _with_browse(self, field: QtWidgets.QWidget, slot: Callable[[], None]) -> QtWidgets.QWidget:
        box = QtWidgets.QWidget()
        lay = QtWidgets.QHBoxLayout(box)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(field, 1)
        button = QtWidgets.QToolButton()
        button.setText("…")
        button.clicked.connect(slot)
        lay.addWidget(button)
        return box

    # -- the form --------------------------------------------------------------------------
    def form(self) -> TrainSettings:
        return TrainSettings(
            data=self.data_edit.text().strip(),
            config=self.config_combo.currentText().strip(),
            out=self.out_edit.text().strip(),
            device=self.device_combo.currentText().strip() or "auto",
        )

    def set_form(
        self, data: str | None = None, config: str | None = None, out: str | None = None, device: str | None = None
    ) -> None:
        if data is not None:
            self.data_edit.setText(str(data))
        if config is not None:
            self.config_combo.setCurrentText(str(config))
        if out is not None:
            self.out_edit.setText(str(out))
        if device is not None:
            self.device_combo.setCurrentText(str(device))

    def _browse_data(self) -> None:
        path = QtWidgets.QFileDialog.getExistingDirectory(self, "Dataset folder", self.data_edit.text())
        if path:
            self.data_edit.setText(path)

    def _browse_config(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Training configuration", "", "TOML (*.toml)")
        if path:
            self.config_combo.setCurrentText(path)

    def _browse_out(self) -> None:
        path = QtWidgets.QFileDialog.getExistingDirectory(self, "Output folder for the run", self.out_edit.text())
        if path:
            self.out_edit.setText(path)

    def _browse_init(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Model to fine-tune", "", "Checkpoints (*.pt)")
        if path:
            self.init_edit.setText(path)

    def _browse_runs(self) -> None:
        path = QtWidgets.QFileDialog.getExistingDirectory(self, "Run folder, or a folder of runs")
        if path:
            self.add_runs(path)

    def check(self) -> list[str]:
        """Check the form; problems are shown under the buttons. Returns them."""
        problems = check_settings(self.form())
        if problems:
            self._say("\n".join(f"• {p}" for p in problems), "error")
        else:
            self._say("Ready to start.", "ok")
        return problems

    def set_ct_available(self, available: bool) -> None:
        """Whether the Review tab has a CT to segment (the best-checkpoint button needs one)."""
        self.ct_available = bool(available)
        self._refresh_buttons()

    # -- fine-tuning on an open dataset ---------------------------------------------------------
    def set_dataset(self, path: str | Path | None) -> None:
        """The dataset open in the window (None: none). 'Fine-tune on reviewed cases' needs one with a
        frozen split and at least one reviewed training case; its tooltip says what is missing."""
        self.dataset_path = None if path is None else Path(path)
        self.refresh_dataset()

    def refresh_dataset(self) -> None:
        """Look at the dataset again (after a review saved a label, or a split was frozen)."""
        self._finetune_block = self._finetune_problem()
        self._refresh_buttons()

    def _finetune_problem(self) -> str | None:
        if self.dataset_path is None:
            return "Open a dataset (File > Open dataset) to fine-tune on its reviewed cases."
        from core.errors import AirwayError
        from core.training.finetune import reviewed_train_cases

        try:
            reviewed, total = reviewed_train_cases(self.dataset_path)
        except AirwayError as exc:
            return str(exc)
        if reviewed == 0:
            return (
                f"None of the {total} training cases of {self.dataset_path.name}'s split has a reviewed label yet: "
                "review some (their labels go to labelsReviewed/) first."
            )
        return None

    def _finetune_tip(self) -> str:
        if self._finetune_block is not None:
            return self._finetune_block
        return (
            f"Fine-tune the model under 'Fine-tune from' on the reviewed training cases of {self.dataset_path}, "
            "in its own process; when it ends, the start and the fine-tuned model are compared on the split's "
            "test cases (Open comparison report)"
        )

    def _finetune_out(self) -> Path:
        """The Output field when it names a new folder, else a new folder beside the dataset."""
        text = self.out_edit.text().strip()
        if text:
            run = Path(text).expanduser()
            if not (RunFiles.of(run).events.exists() or RunFiles.of(run).config.exists()):
                return run.resolve()
        assert self.dataset_path is not None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return (self.dataset_path.parent / f"{self.dataset_path.name}-finetune-{stamp}").resolve()

    def fine_tune(self) -> str | None:
        """Start fine-tuning on the open dataset's reviewed training cases; returns the run folder, or None."""
        self.refresh_dataset()
        if self._finetune_block is not None:
            self._say(self._finetune_block, "warning")
            return None
        if any(m.status == RUNNING for m in self.monitors.values()):
            self._say("A run is going: stop it or wait for it to end.", "warning")
            return None
        assert self.dataset_path is not None
        init_text = self.init_edit.text().strip()
        if init_text:
            init: Path | None = Path(init_text).expanduser()
        else:
            from core.resources import shipped_model_path

            init = shipped_model_path()
        if init is None or not init.is_file():
            self._say(
                f"The model to fine-tune ({init_text or 'the shipped model'}) is not there. "
                "Choose a checkpoint under 'Fine-tune from'.",
                "error",
            )
            return None
        config = self.config_combo.currentText().strip()
        user_config = config if config.endswith(".toml") and Path(config).expanduser().is_file() else None
        device = self.device_combo.currentText().strip() or "auto"
        run = self._finetune_out()
        run.mkdir(parents=True, exist_ok=True)
        monitor = self._monitor_for(run)
        ignore = self.ignore_unreviewed_check.isChecked()
        if not self._launch(monitor, finetune_args(self.dataset_path, init, run, device, user_config, ignore)):
            return None
        self.runStarted.emit(str(run))
        return str(run)

    def comparison_report(self) -> Path | None:
        """The selected run's comparison report, when it has one."""
        monitor = self.current_monitor()
        if monitor is None:
            return None
        report = RunFiles.of(monitor.run_dir).compare_report
        return report if report.is_file() else None

    def open_report(self) -> str | None:
        """Open the selected run's comparison report in the browser; returns its path, or None."""
        report = self.comparison_report()
        if report is None:
            self._say("The selected run has no comparison report (only a finished fine-tuning run has one).")
            return None
        QtGui.QDesktopServices.openUrl(QtCore.QUrl.fromLocalFile(str(report)))
        return str(report)

    # -- actions ----------------------------------------------------------------------------
    def start(self) -> str | None:
        """Check the form and start a new run; returns its folder, or None (problems shown)."""
        if self.check():
            return None
        s = self.form()
        run = Path(s.out).expanduser().resolve()
        run.mkdir(parents=True, exist_ok=True)
        clear_stop_request(run)
        monitor = self._monitor_for(run)
        if not self._launch(monitor, train_args(TrainSettings(s.data, s.config, str(run), s.device))):
            return None
        self._save_form()
        self.runStarted.emit(str(run))
        return str(run)

    def resume(self) -> bool:
        """Continue a run that ended early (stopped, crashed, killed) from its last checkpoint."""
        monitor = self.current_monitor()
        if monitor is None:
            self._say("Select a run to resume.", "warning")
            return False
        if monitor.status == RUNNING:
            self._say("This run is still running.", "warning")
            return False
        if monitor.status == FINISHED:
            self._say(
                f"{monitor.run_dir.name} has finished: there is nothing to resume. To train it longer, set the "
                "number of epochs and press 'Train further'.",
                "warning",
            )
            return False
        if not can_resume(monitor.status, monitor.run_dir):
            self._say(
                f"{monitor.run_dir.name} has no checkpoint to resume from (it ended before its first epoch, or "
                "its config.toml is missing). Start a new run instead.",
                "error",
            )
            return False
        clear_stop_request(monitor.run_dir)
        device = self.device_combo.currentText().strip() or "auto"
        return self._launch(monitor, resume_args(monitor.run_dir, device))

    def train_further(self) -> bool:
        """Train a finished run for ``more_epochs_spin`` more epochs of its last stage."""
        monitor = self.current_monitor()
        if monitor is None:
            self._say("Select a finished run to train further.", "warning")
            return False
        if not can_train_further(monitor.status, monitor.run_dir):
            self._say(
                f"{monitor.run_dir.name} is {monitor.status}: only a finished run is trained further. "
                + ("Resume it to finish it first." if can_resume(monitor.status, monitor.run_dir) else ""),
                "warning",
            )
            return False
        clear_stop_request(monitor.run_dir)
        device = self.device_combo.currentText().strip() or "auto"
        more = int(self.more_epochs_spin.value())
        return self._launch(monitor, resume_args(monitor.run_dir, device, more_epochs=more))

    def stop(self) -> None:
        monitor = self.current_monitor()
        if monitor is not None and monitor.status == RUNNING:
            monitor.stop()
            self.status_label.setText(f"{monitor.run_dir.name}: stopping after this step…")

    def kill(self) -> None:
        monitor = self.current_monitor()
        if monitor is not None:
            monitor.kill()

    def open_best(self) -> str | None:
        monitor = self.current_monitor()
        if monitor is None:
            self._say("Select a run first.", "warning")
            return None
        if not self.ct_available:
            self._say("Open a CT in the Review tab first: this segments it with the run's best checkpoint.", "warning")
            return None
        path = best_checkpoint_path(monitor.history, monitor.run_dir)
        if path is None:
            self._say(
                f"{monitor.run_dir.name} has no checkpoint yet. Wait for the first validation, or pick another run.",
                "warning",
            )
            return None
        self.openCheckpointRequested.emit(str(path))
        return str(path)

    def _launch(self, monitor: RunMonitor, args: list[str]) -> bool:
        program, arguments = self.launcher(args)
        pid = launch_detached(program, arguments, monitor.run_dir, monitor.run_dir / LOG_FILE)
        if isinstance(pid, str):
            self._say(
                f"Could not start the trainer ({program}): {pid}. Check that the application is installed completely."
            )
            return False
        self.error_view.hide()
        monitor.log.append(f"[app] Started: {program} {' '.join(arguments)} (pid {pid})")
        if monitor is self.current_monitor():
            self.log_view.appendPlainText(monitor.log[-1])
        monitor.attach_process(pid)
        self.problems_label.setText("")
        self._refresh_buttons()
        return True

    def _say(self, text: str, kind: str = "info") -> None:
        """A message under the buttons, coloured by meaning: error, warning, ok or info."""
        colour = MESSAGE_COLOURS.get(kind)
        self.problems_label.setStyleSheet(f"color: {colour};" if colour else "")
        self.problems_label.setProperty("kind", kind)
        self.problems_label.setText(text)

    # -- runs list ---------------------------------------------------------------------------
    def add_runs(self, folder: str | Path) -> list[str]:
        """Add a run folder (or each run inside a folder) to the list; returns the folders added."""
        found = find_runs(folder)
        if not found:
            self._say(f"{folder} holds no training run (no {EVENTS_FILE}). Choose a run folder.")
            return []
        added = [str(self._monitor_for(p).run_dir) for p in found]
        self._save_runs()
        return added

    def _monitor_for(self, run: str | Path) -> RunMonitor:
        key = str(Path(run).resolve())
        monitor = self.monitors.get(key)
        if monitor is not None:
            self._select(key)
            return monitor
        monitor = RunMonitor(key, self)
        self.monitors[key] = monitor
        item = QtWidgets.QListWidgetItem(f"{monitor.run_dir.name} — {monitor.status}")
        item.setData(QtCore.Qt.ItemDataRole.UserRole, key)
        item.setToolTip(key)
        item.setFlags(item.flags() | QtCore.Qt.ItemFlag.ItemIsUserCheckable)
        self.runs_list.blockSignals(True)
        item.setCheckState(QtCore.Qt.CheckState.Checked)
        self.runs_list.addItem(item)
        self.runs_list.blockSignals(False)
        self.plots.show_run(key, monitor.history, monitor.run_dir.name)
        monitor.changed.connect(lambda k=key: self._run_changed(k))
        monitor.logLines.connect(lambda lines, k=key: self._log_lines(k, lines))
        monitor.ended.connect(lambda status, k=key: self._run_ended(k, status))
        self._save_runs()
        self._select(key)
        return monitor

    def remove_current_run(self) -> None:
        monitor = self.current_monitor()
        if monitor is None:
            return
        key = str(monitor.run_dir)
        self.plots.hide_run(key)
        row = self.runs_list.currentRow()
        self.runs_list.takeItem(row)
        self.monitors.pop(key).deleteLater()
        self._save_runs()
        self._select_changed()

    def _item(self, key: str) -> QtWidgets.QListWidgetItem | None:
        for i in range(self.runs_list.count()):
            item = self.runs_list.item(i)
            if item.data(QtCore.Qt.ItemDataRole.UserRole) == key:
                return item
        return None

    def _select(self, key: str) -> None:
        item = self._item(key)
        if item is not None:
            self.runs_list.setCurrentItem(item)

    def current_monitor(self) -> RunMonitor | None:
        item = self.runs_list.currentItem()
        return None if item is None else self.monitors.get(item.data(QtCore.Qt.ItemDataRole.UserRole))

    def _item_checked(self, item: QtWidgets.QListWidgetItem) -> None:
        key = item.data(QtCore.Qt.ItemDataRole.UserRole)
        monitor = self.monitors.get(key)
        if monitor is None:
            return
        if item.checkState() == QtCore.Qt.CheckState.Checked:
            self.plots.show_run(key, monitor.history, monitor.run_dir.name)
        else:
            self.plots.hide_run(key)

    def _select_changed(self) -> None:
        monitor = self.current_monitor()
        self.log_view.setPlainText("\n".join(monitor.log) if monitor else "")
        self.log_view.moveCursor(QtGui.QTextCursor.MoveOperation.End)
        self._show_crash(monitor)
        self._update_status()
        self._refresh_buttons()

    # -- monitor signals ------------------------------------------------------------------------
    def _run_changed(self, key: str) -> None:
        monitor = self.monitors.get(key)
        if monitor is None:
            return
        if key in self.plots.runs() and self.plots.history_of(key) is not monitor.history:
            # the events file was replaced: draw the new history
            self.plots.hide_run(key)
            self.plots.show_run(key, monitor.history, monitor.run_dir.name)
        self.plots.mark_dirty(key)
        item = self._item(key)
        text = f"{monitor.run_dir.name} — {monitor.status}"
        if item is not None and item.text() != text:
            item.setText(text)
        if monitor is self.current_monitor():
            self._update_status()
        self._refresh_buttons()  # Start depends on every run

    def _log_lines(self, key: str, lines: list[str]) -> None:
        monitor = self.monitors.get(key)
        if monitor is not None and monitor is self.current_monitor():
            self.log_view.appendPlainText("\n".join(lines))

    def _run_ended(self, key: str, status: str) -> None:
        monitor = self.monitors.get(key)
        if monitor is None:
            return
        if monitor is self.current_monitor():
            self._show_crash(monitor)
            self._update_status()
        self._refresh_buttons()
        if status == FINISHED and never_learned(monitor.history):
            self._say(
                f"{monitor.run_dir.name} finished, but validation never rose above 0 %: the model learned "
                "nothing it can segment. Train longer or on more cases (the 'quick' preset only checks a setup; "
                "'demo' learns on phantoms).",
                "warning",
            )
        self.runEnded.emit(key, status)

    def _show_crash(self, monitor: RunMonitor | None) -> None:
        if monitor is not None and monitor.status in (FAILED, INTERRUPTED):
            self.error_view.setPlainText(f"Training {monitor.status}:\n{monitor.crash_text()}")
            self.error_view.show()
        else:
            self.error_view.hide()

    def _update_status(self) -> None:
        monitor = self.current_monitor()
        self.status_label.setText(f"{monitor.run_dir.name}: {monitor.summary()}" if monitor else "No run selected.")
        warnings = monitor.history.warnings if monitor is not None else []
        text = f"Warning from the trainer: {warnings[-1]}" if warnings else ""
        if self.warning_label.text() != text:
            self.warning_label.setText(text)
        self.warning_label.setVisible(bool(text))

    def _refresh_buttons(self) -> None:
        monitor = self.current_monitor()
        running = monitor is not None and monitor.status == RUNNING
        any_running = any(m.status == RUNNING for m in self.monitors.values())
        self.start_button.setEnabled(not any_running)  # one run at a time from this tab
        self.start_button.setToolTip(
            self._start_tip if not any_running else "A run is going: stop it or wait for it to end"
        )
        self.stop_button.setEnabled(running)
        self.kill_button.setEnabled(running)
        idle = monitor is not None and not running and not any_running
        self.resume_button.setEnabled(idle and monitor is not None and can_resume(monitor.status, monitor.run_dir))
        further = idle and monitor is not None and can_train_further(monitor.status, monitor.run_dir)
        self.further_button.setEnabled(further)
        self.more_epochs_spin.setEnabled(further)
        self.open_best_button.setEnabled(monitor is not None and self.ct_available)
        self.finetune_button.setEnabled(self._finetune_block is None and not any_running)
        self.ignore_unreviewed_check.setEnabled(self._finetune_block is None)
        busy = any_running and self._finetune_block is None  # what is missing matters more than a busy tab
        self.finetune_button.setToolTip(
            "A run is going: stop it or wait for it to end" if busy else self._finetune_tip()
        )
        self.report_button.setEnabled(self.comparison_report() is not None)
        self.remove_run_button.setEnabled(monitor is not None)

    # -- remembering runs and the form -------------------------------------------------------------
    def _save_runs(self) -> None:
        self.settings.set(self.SETTINGS_RUNS, list(self.monitors))

    def _save_form(self) -> None:
        s = self.form()
        for key, value in (("data", s.data), ("config", s.config), ("out", s.out), ("device", s.device)):
            self.settings.set(f"training/{key}", value)

    def _restore(self) -> None:
        self.set_form(
            data=self.settings.get("training/data", "") or "",
            config=self.settings.get("training/config", "") or ("quick" if "quick" in list_presets() else ""),
            out="",
            device=self.settings.get("training/device", "auto") or "auto",
        )
        runs = self.settings.get(self.SETTINGS_RUNS, []) or []
        if isinstance(runs, str):
            runs = [runs]
        for run in runs:
            if Path(run).is_dir():
                self._monitor_for(run)
        self._save_runs()


__all__ = ["TrainingTab", "RunMonitor"]
