"""Segment from the app: choose a checkpoint and a device, run, watch, cancel.

The predictor runs in a child process (:mod:`core.predict_process`), not a
thread: importing torch and the Python parts of the sliding window hold the
GIL for long stretches, and the window must never stall for more than 100 ms
(``tests/test_segment_panel.py`` measures it with a QTimer heartbeat). The
CT is handed over as an ``.npy`` file written by a worker thread, progress
comes back as JSON lines read on the GUI thread, and the result is loaded by a
worker before it becomes a new prediction of the case, whose metrics and
regions the case then recomputes. Cancel asks the child to stop (a line on its
stdin), kills it if it does not within a few seconds, and leaves the case as it
was. In a frozen build (no ``python -m``) the run falls back to a worker thread.

The method is a choice next to the checkpoint: a model, or the training-free
region growing (core.growing, issue 11), which runs in a worker Job with the
same progress and cancel. It is the default because the shipped model
(phantoms plus one pseudo-labelled real chest CT) finds fewer branches than it
on that CT; choosing a checkpoint selects the model. Every model mask is checked by core.gate; a
failure shows as a warning on that prediction naming what the model was
trained on (its card, shown under the checkpoint with the whole card as tooltip).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PySide6.QtCore import QCoreApplication, QObject, QProcess, QProcessEnvironment, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

import core.errors as errors
from app.progress_bar import show_progress
from app.review.case import PredictionEntry, is_blank_ct
from core.child_process import PARENT_PID_ENV
from core.errors import AirwayError, CheckpointError, InputError
from core.progress import Cancellable, Progress
from core.volume import IntensityVolume, LabelVolume

KILL_AFTER_MS = 3000
#: why Run is off on a case without a CT (labels only, or nothing open)
NO_CT_TEXT = "Open a CT to segment"


def demo_checkpoint() -> Path | None:
    """The shipped model, when this installation has it."""
    from core.resources import shipped_model_path

    return shipped_model_path()


def cuda_maybe_available() -> bool:
    """Whether offering 'cuda' makes sense, without importing torch on the GUI thread."""
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            return bool(torch.cuda.is_available())
        except Exception:  # noqa: BLE001
            return False
    return os.path.exists("/proc/driver/nvidia/version") or bool(os.environ.get("CUDA_VISIBLE_DEVICES"))


def _error_from_event(event: dict[str, Any]) -> BaseException:
    """Rebuild the child's error as the project's own type, so dialogs show it the same way."""
    kind = str(event.get("kind", ""))
    cls = getattr(errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, AirwayError) and event.get("what"):
        if cls is errors.Cancelled:
            return cls(event["what"])
        return cls(event["what"], event.get("fix"))
    if kind == "MemoryError":
        return MemoryError(event.get("message", "out of memory"))
    return RuntimeError(event.get("message") or f"The segmentation process failed ({kind or 'unknown error'}).")


def load_result(
    mask_path: str,
    probabilities_path: str,
    ct: IntensityVolume,
    name: str,
    source: str,
    warnings: list[str] | None = None,
    *,
    progress: Any = None,
    cancel: Any = None,
) -> PredictionEntry:
    """Read the child's arrays into a prediction on ``ct``'s grid (worker side)."""
    mask = np.load(mask_path, allow_pickle=False)
    probs = np.load(probabilities_path, allow_pickle=False)
    if mask.shape != ct.shape or probs.shape != ct.shape:
        raise InputError(
            f"The segmentation came back with shape {mask.shape}, not the CT's {ct.shape}.",
            "Run it again; if it persists, report it.",
        )
    label = LabelVolume(mask.astype(bool, copy=False), ct.geometry, name=name)
    prob = IntensityVolume(probs, ct.geometry, name=f"{name} probabilities")
    return PredictionEntry(
        name=name, label=label, probabilities=prob, path=None, source=source, warnings=list(warnings or [])
    )


def prepare_request(
    folder: str,
    ct: IntensityVolume,
    checkpoint: str,
    options: dict[str, Any],
    *,
    progress: Any = None,
    cancel: Any = None,
) -> Path:
    """Write the CT and the request for the child (worker side)."""
    from core.predict_process import write_request
    from core.segmentation import PredictOptions

    return write_request(folder, ct, checkpoint, PredictOptions(**options))


def run_in_thread(
    ct: IntensityVolume,
    checkpoint: str,
    options: dict[str, Any],
    name: str,
    *,
    progress: Progress | None = None,
    cancel: Cancellable | None = None,
) -> tuple[PredictionEntry, dict[str, Any]]:
    """The frozen-build fallback: the one segmentation route in a worker thread; the prediction and what the
    run cost (device, backend, seconds, export_seconds: the keys of the child's ``done`` event)."""
    from core.segmentation import PredictOptions, Predictor, segment_and_gate

    # threads (in options): the PyTorch backend leaves its pool at every core, and on a busy CPU a
    # pool as big as the machine spins and runs several times slower
    predictor = Predictor(checkpoint, PredictOptions(**options))
    result = segment_and_gate(predictor, ct, progress=progress, cancel=cancel)
    label = LabelVolume(np.ascontiguousarray(result.prediction.mask.mask), ct.geometry, name=name)
    entry = PredictionEntry(
        name=name,
        label=label,
        probabilities=result.prediction.probabilities,
        path=None,
        source=f"model:{checkpoint}",
        warnings=result.warnings,
    )
    info = {
        "device": predictor.device,
        "backend": result.prediction.backend,
        "seconds": result.prediction.seconds,
        "export_seconds": predictor.export_seconds,
    }
    return entry, info


def grow_prediction(
    ct: IntensityVolume, name: str, *, progress: Progress | None = None, cancel: Cancellable | None = None
) -> tuple[PredictionEntry, float]:
    """The training-free method (core.growing) on the case's CT (worker side); the prediction and the
    seconds the growing took."""
    from core.gate import require_air
    from core.growing import grow_airway

    require_air(ct)
    result = grow_airway(ct, progress=progress, cancel=cancel)
    label = LabelVolume(np.ascontiguousarray(result.mask.mask), ct.geometry, name=name)
    entry = PredictionEntry(name=name, label=label, probabilities=None, path=None, source="region-growing")
    return entry, result.seconds


def timing_text(wall_s: float, info: dict[str, Any]) -> str:
    """What a run cost as the user waited for it: the wall time, then its parts (the first run of a model
    exports it for its engine, which can take longer than the inference itself), e.g.
    ``43.1 s (engine export 28.5 s, inference 14.6 s on cpu)``."""
    parts = []
    export = float(info.get("export_seconds") or 0.0)
    if export >= 0.05:
        parts.append(f"engine export {export:.1f} s")
    work = info.get("seconds")
    if work:
        device = info.get("device")
        parts.append(f"{info.get('work', 'inference')} {float(work):.1f} s" + (f" on {device}" if device else ""))
    return f"{wall_s:.1f} s" + (f" ({', '.join(parts)})" if parts else "")


class GrowingRun(QObject):
    """Region growing in a worker Job, with the signals of :class:`SegmentationRun`."""

    progress = Signal(int, int, str)
    finished = Signal(int)
    failed = Signal(object)
    cancelled = Signal()
    ended = Signal()

    def __init__(self, case: Any, name: str = "region growing", parent: QObject | None = None):
        super().__init__(parent)
        self.case = case
        self.ct = case.ct
        self.name = name
        self.checkpoint = None
        self.job: Any = None
        self.state = "new"
        self.info: dict[str, Any] = {"device": "cpu", "work": "region growing"}
        self.started_at = 0.0
        #: seconds from start() to the prediction being added (what the user waited)
        self.wall_seconds = 0.0

    def start(self) -> GrowingRun:
        from app.workers import Job

        if self.ct is None or is_blank_ct(self.ct):
            raise InputError(NO_CT_TEXT + ".")
        self.state = "running"
        self.started_at = time.perf_counter()
        self.progress.emit(0, 0, "Region growing: resampling")
        self.job = Job(grow_prediction, self.ct, self.name, name="Region growing")
        self.job.progress.connect(self.progress)
        self.job.result.connect(self._add)
        self.job.error.connect(lambda exc, _tb: self._end("failed", exc))
        self.job.cancelled.connect(lambda: self._end("cancelled"))
        self.job.start()
        return self

    def cancel(self) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel()

    @property
    def running(self) -> bool:
        return self.state == "running"

    def _add(self, value: tuple[PredictionEntry, float]) -> None:
        entry, seconds = value
        if self.case.ct is not self.ct:  # another case was opened meanwhile
            self._end("cancelled")
            return
        self.info["seconds"] = seconds
        index = self.case.add_prediction(entry)
        self.wall_seconds = time.perf_counter() - self.started_at
        self.state = "done"
        self.finished.emit(index)
        self.ended.emit()

    def _end(self, state: str, exc: BaseException | None = None) -> None:
        if self.state in ("done", "failed", "cancelled"):
            return
        self.state = state
        if exc is not None:
            self.failed.emit(exc)
        else:
            self.cancelled.emit()
        self.ended.emit()


class SegmentationRun(QObject):
    """One run: prepare (worker) -> child process -> load (worker) -> case.add_prediction.

    ``options``: :class:`core.segmentation.PredictOptions` fields by name (window, step, gaussian, backend,
    threads...); ``exact`` picks the paper's procedure (mode "exact"), else the measured fast mode. They
    stay a plain dict on the GUI thread (building the dataclass imports scipy: 0.4 s) and become
    PredictOptions in the worker.

    Signals: ``progress(done, total, text)``, ``finished(int)`` (index of the
    new prediction), ``failed(object)`` (an exception), ``cancelled()``, then
    always ``ended()``.
    """

    progress = Signal(int, int, str)
    finished = Signal(int)
    failed = Signal(object)
    cancelled = Signal()
    ended = Signal()

    def __init__(
        self,
        case: Any,
        checkpoint: str | os.PathLike[str],
        device: str = "auto",
        *,
        name: str | None = None,
        use_process: bool | None = None,
        parent: QObject | None = None,
        exact: bool = False,
        **options: Any,
    ):
        super().__init__(parent)
        self.case = case
        self.ct = case.ct
        self.checkpoint = str(checkpoint)
        self.device = device
        threads = options.pop("threads", None)
        # falsy window / step: the checkpoint's own
        self.options: dict[str, Any] = {
            **{k: v for k, v in options.items() if not (k in ("window", "step") and not v)},
            "device": device,
            "mode": "exact" if exact else "fast",
            "threads": threads if threads is not None else max(1, (os.cpu_count() or 2) - 1),
        }
        self.name = name or Path(self.checkpoint).stem
        self.use_process = (not getattr(sys, "frozen", False)) if use_process is None else use_process
        self.folder: str | None = None
        self.process: QProcess | None = None
        self.job: Any = None
        self.state = "new"  # new, preparing, running, loading, done, failed, cancelled
        self.info: dict[str, Any] = {}
        self.started_at = 0.0
        #: seconds from start() to the prediction being added (what the user waited)
        self.wall_seconds = 0.0
        self._buffer = b""
        self._cancel_requested = False
        self._outcome: dict[str, Any] | None = None
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._kill)

    @property
    def threads(self) -> int:
        return int(self.options["threads"])

    # -- control ---------------------------------------------------------------------------
    def start(self) -> SegmentationRun:
        from app.workers import Job

        if self.ct is None or is_blank_ct(self.ct):
            raise InputError(NO_CT_TEXT + ".")
        if not Path(self.checkpoint).is_file():
            raise CheckpointError(
                f"Model file '{self.checkpoint}' does not exist.",
                "Choose a .pt checkpoint (trained with `airway train`, or the demo model).",
            )
        self.started_at = time.perf_counter()
        if not self.use_process:
            self.state = "running"
            self.info["device"] = self.device
            self.job = Job(run_in_thread, self.ct, self.checkpoint, self.options, self.name, name="Segmentation")
            self.job.progress.connect(self.progress)
            self.job.result.connect(self._thread_done)
            self.job.error.connect(self._job_error)
            self.job.cancelled.connect(self._cancelled)
            self.job.start()
            return self
        self.state = "preparing"
        self.folder = tempfile.mkdtemp(prefix="airway-segment-")
        self.progress.emit(0, 0, "Preparing the CT")
        self.job = Job(
            prepare_request, self.folder, self.ct, self.checkpoint, self.options, name="Preparing segmentation"
        )
        self.job.result.connect(self._launch)
        self.job.error.connect(self._job_error)
        self.job.start()
        return self

    def cancel(self) -> None:
        if self.state in ("done", "failed", "cancelled"):
            return
        self._cancel_requested = True
        if self.job is not None and self.job.running:
            self.job.cancel()
        if self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning:
            self.process.write(b"cancel\n")
            self._kill_timer.start(KILL_AFTER_MS)
        elif self.state == "preparing":
            pass  # _launch sees the request and stops there
        elif self.state == "loading":
            pass  # _add sees the request and drops the result

    @property
    def running(self) -> bool:
        return self.state in ("preparing", "running", "loading")

    # -- process ---------------------------------------------------------------------------
    def _launch(self, request_path: Any) -> None:
        if self._cancel_requested:
            self._cancelled()
            return
        self.state = "running"
        proc = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        # the child imports ``core`` from the same place as this process
        root = str(Path(errors.__file__).resolve().parents[1])
        env.insert("PYTHONPATH", os.pathsep.join(p for p in (root, env.value("PYTHONPATH")) if p))
        env.insert("PYTHONUNBUFFERED", "1")
        env.insert(PARENT_PID_ENV, str(os.getpid()))  # the child ends with this app (core.child_process)
        proc.setProcessEnvironment(env)
        proc.setProcessChannelMode(QProcess.ProcessChannelMode.SeparateChannels)
        proc.readyReadStandardOutput.connect(self._read)
        proc.finished.connect(self._process_finished)
        proc.errorOccurred.connect(self._process_error)
        self.process = proc
        self.progress.emit(0, 0, "Loading the model")
        proc.start(sys.executable, ["-m", "core.predict_process", str(request_path)])

    def _read(self) -> None:
        assert self.process is not None
        self._buffer += bytes(self.process.readAllStandardOutput().data())
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a library printing on stdout: not ours
            self._event(event)

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "started":
            self.info.update(event)
            self.progress.emit(0, 0, f"Segmenting on {event.get('device')} ({event.get('backend')})")
        elif kind == "progress":
            self.progress.emit(int(event["done"]), int(event["total"]), str(event.get("message") or ""))
        elif kind in ("done", "error", "cancelled"):
            self._outcome = event

    def _process_error(self, err: QProcess.ProcessError) -> None:
        if err == QProcess.ProcessError.FailedToStart:
            self._fail(RuntimeError(f"Could not start the segmentation process ({sys.executable})."))

    def _process_finished(self, code: int, _status: Any) -> None:
        self._kill_timer.stop()
        if self.process is not None:
            self._read()
            self._buffer += b"\n"
            self._read()
            stderr = bytes(self.process.readAllStandardError().data()).decode("utf-8", "replace")
        else:
            stderr = ""
        outcome = self._outcome or {}
        kind = outcome.get("event")
        if self._cancel_requested or kind == "cancelled":
            self._cancelled()
        elif kind == "done":
            self.info.update(outcome)
            self._load(outcome)
        elif kind == "error":
            self._fail(_error_from_event(outcome))
        elif self.state in ("running", "preparing"):
            last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {code}"
            self._fail(RuntimeError(f"The segmentation process ended unexpectedly: {last}"))

    def _kill(self) -> None:
        if self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning:
            self.process.kill()

    def _load(self, done: dict[str, Any]) -> None:
        from app.workers import Job

        self.state = "loading"
        self.progress.emit(1, 1, "Reading the result")
        self.job = Job(
            load_result,
            done["mask"],
            done["probabilities"],
            self.ct,
            self.name,
            f"model:{self.checkpoint}",
            done.get("warnings") or [],
            name="Reading segmentation",
        )
        self.job.result.connect(self._add)
        self.job.error.connect(self._job_error)
        self.job.start()

    # -- endings -----------------------------------------------------------------------------
    def _thread_done(self, value: tuple[PredictionEntry, dict[str, Any]]) -> None:
        entry, info = value
        self.info.update(info)
        self._add(entry)

    def _add(self, entry: PredictionEntry) -> None:
        if self._cancel_requested:
            self._cancelled()
            return
        if self.case.ct is not self.ct:  # another case was opened meanwhile
            self._cancelled()
            return
        index = self.case.add_prediction(entry)
        self.wall_seconds = time.perf_counter() - self.started_at
        self.state = "done"
        self._cleanup()
        self.finished.emit(index)
        self.ended.emit()

    def _job_error(self, exc: BaseException, _traceback: str) -> None:
        self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self.state in ("done", "failed", "cancelled"):
            return
        self.state = "failed"
        self._cleanup()
        self.failed.emit(exc)
        self.ended.emit()

    def _cancelled(self) -> None:
        if self.state in ("done", "failed", "cancelled"):
            return
        self.state = "cancelled"
        self._cleanup()
        self.cancelled.emit()
        self.ended.emit()

    def _cleanup(self) -> None:
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)


AnyRun = TypeVar("AnyRun", SegmentationRun, GrowingRun)


class SegmentPanel(QWidget):
    """Checkpoint chooser, device, window options, Run with a progress bar and Cancel."""

    segmentationFinished = Signal(int)
    runStarted = Signal(object)  # the SegmentationRun, for the window's job display

    def __init__(self, case: Any, parent: QWidget | None = None, settings: Any = None, show_error: Any = None):
        super().__init__(parent)
        self.setObjectName("segmentPanel")
        self.case = case
        self.settings = settings
        self._show_error = show_error
        self.run: SegmentationRun | GrowingRun | None = None
        self.backend = "auto"
        self.threads: int | None = None

        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        form = QFormLayout()
        row = QHBoxLayout()
        self.checkpoint_edit = QLineEdit(self)
        self.checkpoint_edit.setObjectName("checkpointEdit")
        self.checkpoint_edit.setPlaceholderText("a .pt checkpoint")
        remembered = settings.get("segment/checkpoint", None) if settings is not None else None
        default = remembered if remembered and Path(str(remembered)).is_file() else demo_checkpoint()
        if default:
            self.checkpoint_edit.setText(str(default))
        browse = QToolButton(self)
        browse.setText("...")
        browse.setToolTip("Choose a checkpoint")
        browse.clicked.connect(self.browse)
        self.method_combo = QComboBox(self)
        self.method_combo.setObjectName("methodCombo")
        self.method_combo.addItem("Region growing (no model)", "region-growing")
        self.method_combo.addItem("Model", "model")
        self.method_combo.setToolTip(
            "Region growing: training-free, finds the trachea and grows the airway from it; works on any chest CT.\n"
            "Model: the checkpoint on the right. The bundled model was trained on phantoms and one "
            "pseudo-labelled real chest CT at 2.5 mm (its card is shown below)."
        )
        remembered_method = settings.get("segment/method", None) if settings is not None else None
        self.method_combo.setCurrentIndex(max(self.method_combo.findData(remembered_method or "region-growing"), 0))
        # the checkpoint on a row of its own: beside the method it made the panel ~385 px wide, more than
        # the dock column has at 1024 x 700 (tests/test_layout.py)
        form.addRow("Method", self.method_combo)
        row.addWidget(self.checkpoint_edit, 1)
        row.addWidget(browse)
        form.addRow("Model", row)
        self.browse_button = browse
        self.card_label = QLabel("", self)
        self.card_label.setObjectName("modelCard")
        self.card_label.setWordWrap(True)
        form.addRow("", self.card_label)
        self._update_card()
        # choosing a checkpoint means: segment with it
        self.checkpoint_edit.textChanged.connect(self._checkpoint_changed)

        self.device_combo = QComboBox(self)
        self.device_combo.setObjectName("deviceCombo")
        self.device_combo.addItem("auto (GPU when available)", "auto")
        self.device_combo.addItem("CPU", "cpu")
        if cuda_maybe_available():
            self.device_combo.addItem("CUDA GPU", "cuda")
        form.addRow("Device", self.device_combo)

        # 0 = "from model": the checkpoint's own window (InstanceNorm makes a model
        # sensitive to the window it was validated with; the paper's is 128 / 64)
        self.window_spin = QSpinBox(self)
        self.window_spin.setRange(0, 512)
        self.window_spin.setSingleStep(16)
        self.window_spin.setSpecialValueText("from model")
        self.window_spin.setValue(0)
        self.window_spin.setToolTip(
            "Sliding window side in voxels (paper: 128; a multiple of 8 for WingsNet); "
            "'from model' uses the checkpoint's own"
        )
        self.step_spin = QSpinBox(self)
        self.step_spin.setRange(0, 512)
        self.step_spin.setSingleStep(8)
        self.step_spin.setSpecialValueText("from model")
        self.step_spin.setValue(0)
        self.step_spin.setToolTip(
            "Window stride in voxels (paper: 64, i.e. 50% overlap); 'from model' uses the checkpoint's own"
        )
        wrow = QHBoxLayout()
        wrow.addWidget(self.window_spin)
        wrow.addWidget(QLabel("step"))
        wrow.addWidget(self.step_spin)
        form.addRow("Window", wrow)
        self.gaussian_check = QCheckBox("Gaussian window weighting", self)
        self.gaussian_check.setToolTip("nnU-Net-style weights where windows overlap instead of the paper's mean")
        form.addRow("", self.gaussian_check)
        self.exact_check = QCheckBox("Exact paper procedure", self)
        self.exact_check.setObjectName("exactCheck")
        self.exact_check.setToolTip(
            "Off: only the windows that touch the lungs and trachea, bf16 where the "
            "hardware has it (measured to agree with the paper's procedure). "
            "On: every window with full overlap, fp32 (slower)."
        )
        self.exact_check.toggled.connect(lambda on: self.gaussian_check.setEnabled(not on))
        form.addRow("", self.exact_check)
        lay.addLayout(form)
        self.form = form
        # what only the model method uses: hidden while region growing is chosen
        self._model_rows: list[QWidget | QHBoxLayout] = [
            row,
            self.card_label,
            self.device_combo,
            wrow,
            self.gaussian_check,
            self.exact_check,
        ]
        self.method_combo.currentIndexChanged.connect(self._show_method_options)
        self._show_method_options()

        brow = QHBoxLayout()
        self.run_button = QPushButton("Run", self)
        self.run_button.setObjectName("runSegmentation")
        self.run_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setObjectName("cancelSegmentation")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        brow.addWidget(self.run_button)
        brow.addWidget(self.cancel_button)
        lay.addLayout(brow)
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setObjectName("segmentProgress")
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        lay.addWidget(self.progress_bar)
        self.message = QLabel("", self)
        self.message.setObjectName("segmentMessage")
        self.message.setWordWrap(True)
        lay.addWidget(self.message)
        lay.addStretch(1)

        case.ctChanged.connect(self._update_enabled)
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)
        self._update_enabled()

    def shutdown(self) -> None:
        """Quitting: stop the child now (no grace period) and remove its files."""
        run = self.run
        if isinstance(run, GrowingRun):
            run.cancel()  # a worker thread: it stops at its next cancel check
        elif run is not None and run.running:
            run._cancel_requested = True
            if run.process is not None:
                run.process.kill()
                run.process.waitForFinished(2000)
            run._cancelled()

    def has_ct(self) -> bool:
        """Whether the case has a CT to segment (a label-only case shows a blank one: no)."""
        return self.case.ct is not None and not is_blank_ct(self.case.ct)

    def _update_enabled(self) -> None:
        busy = self.run is not None and self.run.running
        has_ct = self.has_ct()
        self.run_button.setEnabled(not busy and has_ct)
        self.run_button.setToolTip("" if has_ct else NO_CT_TEXT)
        self.cancel_button.setEnabled(busy)
        if not has_ct and not busy:
            self.message.setText(NO_CT_TEXT)
            self.message.setStyleSheet("")
        elif self.message.text() == NO_CT_TEXT:
            self.message.setText("")

    def _show_method_options(self) -> None:
        model = self.method == "model"
        for row in self._model_rows:
            self.form.setRowVisible(row, model)

    def _checkpoint_changed(self, _text: str) -> None:
        self._update_card()
        self.method_combo.setCurrentIndex(self.method_combo.findData("model"))

    def _update_card(self) -> None:
        """One-line model card under the checkpoint, the whole card as tooltip (read without torch,
        checked as loading checks it, so a damaged header names its field before Run is pressed)."""
        from core.models.card import checkpoint_card_text

        path = self.checkpoint_edit.text().strip()
        if not path or not Path(path).is_file():
            self.card_label.setText("")
            self.card_label.setToolTip("")
            return
        summary, lines = checkpoint_card_text(path)
        self.card_label.setText(summary[0].upper() + summary[1:])
        self.card_label.setToolTip("\n".join(lines))

    @property
    def method(self) -> str:
        return str(self.method_combo.currentData())

    def browse(self) -> None:
        start = self.checkpoint_edit.text() or os.path.expanduser("~")
        path, _ = QFileDialog.getOpenFileName(
            self, "Choose a model checkpoint", start, "Checkpoints (*.pt *.pth);;All files (*)"
        )
        if path:
            self.checkpoint_edit.setText(path)

    # -- running ------------------------------------------------------------------------------
    def start(self) -> SegmentationRun | GrowingRun | None:
        """Run the chosen method over the case's CT (the Run button, Tools > Segment); errors are shown,
        never raised; without a CT nothing starts and the panel says why."""
        if self.run is not None and self.run.running:
            return self.run
        if not self.has_ct():
            self._update_enabled()  # says why: "Open a CT to segment"
            return None
        if self.method == "region-growing":
            return self._start_growing()
        checkpoint = self.checkpoint_edit.text().strip()

        def make() -> SegmentationRun:
            if not checkpoint:
                raise CheckpointError("No model chosen.", "Choose a .pt checkpoint with the ... button.")
            return SegmentationRun(
                self.case,
                checkpoint,
                self.device_combo.currentData(),
                window=self.window_spin.value() or None,
                step=self.step_spin.value() or None,
                gaussian=None if self.exact_check.isChecked() else self.gaussian_check.isChecked(),
                backend=self.backend,
                threads=self.threads,
                parent=self,
                exact=self.exact_check.isChecked(),
            )

        run = self._launch(make)
        if run is None:
            return None
        if self.settings is not None:
            self.settings.set("segment/checkpoint", checkpoint)
            self.settings.set("segment/method", "model")
        self.message.setText(f"Segmenting with {Path(checkpoint).name}...")
        self.message.setStyleSheet("")
        show_progress(self.progress_bar, 0, 0)  # busy until the first window reports
        self._update_enabled()
        return run

    def _launch(self, make: Callable[[], AnyRun]) -> AnyRun | None:
        """Build a run (SegmentationRun or GrowingRun: the same signals), wire it to the panel and start it;
        an AirwayError is shown in the panel and gives None."""
        try:
            run = make()
            run.progress.connect(self._on_progress)
            run.finished.connect(self._on_finished)
            run.failed.connect(self._on_failed)
            run.cancelled.connect(self._on_cancelled)
            run.ended.connect(self._update_enabled)
            self.run = run
            run.start()
            self.runStarted.emit(run)
        except AirwayError as exc:
            self.run = None
            self._error(exc)
            self._update_enabled()
            return None
        return run

    def _start_growing(self) -> GrowingRun | None:
        run = self._launch(lambda: GrowingRun(self.case, parent=self))
        if run is None:
            return None
        if self.settings is not None:
            self.settings.set("segment/method", "region-growing")
        self.message.setText("Region growing (no model)...")
        self.message.setStyleSheet("")
        show_progress(self.progress_bar, 0, 0)
        self._update_enabled()
        return run

    def cancel(self) -> None:
        if self.run is not None:
            self.message.setText("Cancelling...")
            self.run.cancel()

    def _on_progress(self, done: int, total: int, text: str) -> None:
        show_progress(self.progress_bar, done, total)
        self.message.setText(text)

    def _on_finished(self, index: int) -> None:
        show_progress(self.progress_bar, 1, 1)
        run = self.run
        entry = self.case.predictions[index] if 0 <= index < len(self.case.predictions) else None
        name = entry.name if entry is not None else ""
        text = f"Added prediction '{name}'"
        if run is not None and run.wall_seconds:
            text += f" in {timing_text(run.wall_seconds, run.info)}"
        if self.case.reference is not None:
            text += "; metrics and regions follow."
        else:
            text += "; no reference is loaded, so there are no metrics or error regions."
        warnings = list(entry.warnings) if entry is not None else []
        if warnings:
            self.message.setText(f"\u26a0 Warning on '{name}': " + " ".join(warnings) + "\n" + text)
            self.message.setStyleSheet("color: #b35900; font-weight: bold;")
            self.message.setToolTip("\n".join(warnings))
        else:
            self.message.setText(text)
            self.message.setStyleSheet("")
            self.message.setToolTip("")
        self.segmentationFinished.emit(index)

    def _on_failed(self, exc: BaseException) -> None:
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.message.setText(f"Failed: {exc}")
        self._error(exc)

    def _on_cancelled(self) -> None:
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.message.setText("Cancelled; the case is unchanged.")

    def _error(self, exc: BaseException) -> None:
        if self._show_error is not None:
            self._show_error(exc)
            return
        from app.dialogs import show_error

        show_error(self, exc, title="Airway Studio: segmentation")
