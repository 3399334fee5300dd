"""Reading a training run folder, Qt-free: events, history arrays, liveness.

The training process (``airway train``, see docs/CONTRACTS.md and
docs/events.md) appends one JSON object per line to ``RUN/events.jsonl``. The
app never talks to the process directly: it tails that file, so a run started
from this window and a run found again after the app was reopened look the
same. The app adds two files of its own to the run folder:

- ``trainer.pid``: ``{"pid": ..., "create_time": ...}`` of the process it
  launched, so that liveness survives an app restart (``create_time`` guards
  against the pid being reused by another program);
- ``trainer.log``: the process's stdout and stderr, whose last lines are shown
  when the process dies without an ``error`` event (an import error, an
  argument error, a segfault).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.training.run_files import CONFIG_FILE, EVENTS_FILE, LOG_FILE, PID_FILE, STOP_FILE, RunFiles

__all__ = ["CONFIG_FILE", "EVENTS_FILE", "LOG_FILE", "PID_FILE", "STOP_FILE", "RunFiles"]

# Run states shown to the user. "finished", "stopped" and "failed" come from the
# trainer's run_end event; "interrupted" (docs/events.md: SIGKILL, out of memory,
# a segfault, power loss) and "killed" (by this app) are what the app concludes
# when the process is gone without one.
RUNNING, FINISHED, STOPPED, FAILED, INTERRUPTED, KILLED, NOT_STARTED = (
    "running",
    "finished",
    "stopped",
    "failed",
    "interrupted",
    "killed",
    "not started",
)
ENDED = frozenset({FINISHED, STOPPED, FAILED, INTERRUPTED, KILLED})


# --------------------------------------------------------------------------- #
# Incremental reading of events.jsonl
# --------------------------------------------------------------------------- #
class LineTail:
    """Reads the lines appended to a text file since the last call.

    Keeps a byte offset and the partial last line, so a line still being
    written is returned once complete. A file that was replaced or shrank (a
    new run in the same folder) is read again from the start, and ``reset``
    tells the caller to drop what it had.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.offset = 0
        self._partial = b""
        self._inode: int | None = None
        self.reset = False
        self.more = False  # the last read stopped at max_bytes: more is waiting

    def read_lines(self, max_bytes: int = 8 << 20) -> list[str]:
        """Complete lines added since the last call (at most ``max_bytes`` read per call)."""
        self.reset = self.more = False
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return []
        if (self._inode is not None and st.st_ino != self._inode) or st.st_size < self.offset:
            self.offset, self._partial, self.reset = 0, b"", True
        self._inode = st.st_ino
        if st.st_size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read(max_bytes)
        self.offset += len(chunk)
        self.more = len(chunk) == max_bytes
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()  # b"" when the chunk ended with a newline
        return [ln.decode("utf-8", "replace").rstrip("\r") for ln in lines]

    @property
    def at_end(self) -> bool:
        try:
            return self.path.stat().st_size == self.offset
        except FileNotFoundError:
            return True


class EventTail(LineTail):
    """The events appended to ``events.jsonl`` since the last call; foreign lines are counted and skipped."""

    def __init__(self, path: str | Path):
        super().__init__(path)
        self.bad_lines = 0

    def read_new(self, max_bytes: int = 2 << 20) -> list[dict[str, Any]]:
        events = []
        for line in self.read_lines(max_bytes):
            event = parse_event_line(line)
            if event is None:
                if line.strip():
                    self.bad_lines += 1
                continue
            events.append(event)
        return events


def parse_event_line(raw: bytes | str) -> dict[str, Any] | None:
    """One event, or None for a blank, partial or foreign line (e.g. a print on stdout)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = text.strip()
    if not text.startswith("{"):
        return None
    try:
        event = json.loads(text)
    except ValueError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        return None
    return event


# --------------------------------------------------------------------------- #
# Growable columns: appends in amortised O(1), plots take views
# --------------------------------------------------------------------------- #
class Columns:
    """A table of float64 columns preallocated and doubled when full.

    Curves are redrawn from ``view(name)`` (no copy), so a long run costs one
    reallocation per doubling instead of one per step.
    """

    def __init__(self, names: Iterable[str], capacity: int = 1024):
        self.names = tuple(names)
        self._data = np.full((len(self.names), max(1, capacity)), np.nan)
        self._index = {n: i for i, n in enumerate(self.names)}
        self.size = 0

    def append(self, row: dict[str, Any]) -> None:
        if self.size == self._data.shape[1]:
            grown = np.full((len(self.names), 2 * self.size), np.nan)
            grown[:, : self.size] = self._data
            self._data = grown
        col = self._data[:, self.size]
        for name, i in self._index.items():
            col[i] = _as_float(row.get(name))
        self.size += 1

    def view(self, name: str) -> np.ndarray:
        return self._data[self._index[name], : self.size]

    def truncate(self, size: int) -> None:
        size = max(0, min(size, self.size))
        self._data[:, size : self.size] = np.nan
        self.size = size

    def __len__(self) -> int:
        return self.size


def _as_float(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.nan
    return v


# --------------------------------------------------------------------------- #
# What a run's events add up to
# --------------------------------------------------------------------------- #
STEP_COLUMNS = ("x", "stage", "epoch", "loss", "loss_enc", "loss_dec", "lr", "patches_per_s", "time")
EPOCH_COLUMNS = ("x", "stage", "epoch", "loss", "time_s", "eta_s")
VALIDATION_COLUMNS = ("x", "stage", "epoch", "td", "bd", "dsc", "precision", "marked_percent")


@dataclass
class StageMark:
    stage: int
    name: str
    x: float  # global step at which the stage began
    epochs: int | None = None
    loss: str | None = None


@dataclass
class RunHistory:
    """Everything the tab shows about one run, folded from its events.

    The x axis of every series is the trainer's ``global_step``; epoch and
    validation points sit at the global step of the last step before them.
    When a resumed run repeats steps (it restarts from the last checkpoint,
    which may be older than the last step logged), the repeated tail is dropped
    so the curves stay functions of x.
    """

    name: str = ""
    steps: Columns = field(default_factory=lambda: Columns(STEP_COLUMNS))
    epochs: Columns = field(default_factory=lambda: Columns(EPOCH_COLUMNS, 256))
    validations: Columns = field(default_factory=lambda: Columns(VALIDATION_COLUMNS, 256))
    stages: list[StageMark] = field(default_factory=list)
    status: str = NOT_STARTED
    stage: int | None = None
    stage_name: str = ""
    stage_epochs: int | None = None
    epoch: int | None = None
    eta_s: float | None = None
    eta_time: float | None = None  # wall time at which eta_s was reported
    last_time: float | None = None
    device: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    checkpoints: dict[str, str] = field(default_factory=dict)
    best_checkpoint: str | None = None
    error_message: str | None = None
    error_traceback: str | None = None
    warnings: list[str] = field(default_factory=list)
    latest_validation: dict[str, float] = field(default_factory=dict)
    #: what the events' ``epoch`` counts from: 1 (run_start says ``epoch_base: 1``) or 0 (older trainers)
    epoch_base: int = 0
    starts: int = 0
    events_seen: int = 0
    _x: float = 0.0

    def shown_epoch(self, event: dict[str, Any]) -> int | None:
        """The event's epoch as users count it, from 1 (older trainers wrote it from 0)."""
        raw = _int_or(event.get("epoch"), None)
        return None if raw is None else raw + 1 - self.epoch_base

    def apply(self, event: dict[str, Any]) -> str | None:
        """Fold one event in; returns a log line for it (None for per-step events)."""
        kind = event.get("event")
        self.events_seen += 1
        t = _as_float(event.get("time"))
        if not math.isnan(t):
            self.last_time = t
        if kind == "step":
            x = _as_float(event.get("global_step"))
            if math.isnan(x):
                x = self._x + 1
            if self.steps.size and x <= self.steps.view("x")[-1]:
                self._drop_from(x)
            self._x = x
            self.steps.append({**event, "x": x, "time": t, "epoch": self.shown_epoch(event)})
            self.stage = _int_or(event.get("stage"), self.stage)
            self.epoch = self.shown_epoch(event) or self.epoch
            self.status = RUNNING
            return None
        if kind == "run_start":
            self.starts += 1
            self.status = RUNNING
            self.error_message = self.error_traceback = None
            self.device = event.get("device", self.device)
            if isinstance(event.get("config"), dict):
                self.config = event["config"]
            self.name = str(event.get("run") or self.name)
            self.epoch_base = _int_or(event.get("epoch_base"), 0) or 0
            more = _int_or(event.get("more_epochs"), 0) or 0
            resumed = (
                f" (trained further: {more} more epochs)" if more else (" (resumed)" if event.get("resumed") else "")
            )
            return f"Run started{resumed} on {event.get('device', '?')}, world size {event.get('world_size', 1)}."
        if kind == "stage":
            stage = _int_or(event.get("stage"), 0) or 0
            self.stage, self.stage_name = stage, str(event.get("name") or f"stage {stage}")
            self.stage_epochs = _int_or(event.get("epochs"), None)
            mark = StageMark(stage, self.stage_name, self._x, self.stage_epochs, event.get("loss"))
            # A resumed run announces its stage again: keep the first boundary.
            if not any(m.stage == stage for m in self.stages):
                self.stages.append(mark)
            return (
                f"Stage {stage} ({self.stage_name}): loss {event.get('loss')}, {event.get('epochs')} epochs, "
                f"alpha {event.get('alpha')}, threshold {event.get('threshold')}."
            )
        if kind == "epoch":
            shown = self.shown_epoch(event)
            self.epochs.append({**event, "x": self._x, "epoch": shown})
            self.stage = _int_or(event.get("stage"), self.stage)
            self.epoch = shown or self.epoch
            eta = _as_float(event.get("eta_s"))
            self.eta_s, self.eta_time = (None, None) if math.isnan(eta) else (eta, t)
            total = f"/{self.stage_epochs}" if self.stage_epochs else ""
            return (
                f"Stage {event.get('stage')} epoch {shown}{total}: loss {_fmt(event.get('loss'))}, "
                f"{_fmt(event.get('time_s'), '.1f')} s, ETA {format_duration(self.eta_s)}."
            )
        if kind == "validation":
            shown = self.shown_epoch(event)
            self.validations.append({**event, "x": self._x, "epoch": shown})
            self.latest_validation = {
                k: _as_float(event.get(k)) for k in ("td", "bd", "dsc", "precision", "marked_percent") if k in event
            }
            marked = _as_float(event.get("marked_percent"))
            marked_text = "" if math.isnan(marked) else f", {marked:.1f}% of the volume marked as airway"
            return (
                f"Validation stage {event.get('stage')} epoch {shown}: TD {_fmt(event.get('td'), '.1f')}%, "
                f"BD {_fmt(event.get('bd'), '.1f')}%, DSC {_fmt(event.get('dsc'), '.1f')}%, "
                f"precision {_fmt(event.get('precision'), '.1f')}% ({event.get('cases')} cases{marked_text})."
            )
        if kind == "checkpoint":
            path = str(event.get("path") or "")
            kind_ = str(event.get("kind") or "last")
            self.checkpoints[kind_] = path
            if kind_ == "best":
                self.best_checkpoint = path
            return f"Checkpoint ({kind_}): {path}"
        if kind == "warning":
            msg = str(event.get("message") or "")
            self.warnings.append(msg)
            return f"Warning: {msg}"
        if kind == "info":
            return f"Note: {event.get('message') or ''}"
        if kind == "error":
            self.error_message = str(event.get("message") or "unknown error")
            self.error_traceback = str(event.get("traceback") or "") or None
            return f"Error: {self.error_message}"
        if kind == "run_end":
            status = str(event.get("status") or FINISHED)
            self.status = status if status in (FINISHED, STOPPED, FAILED) else FAILED
            best = event.get("best_checkpoint")
            if best:
                self.best_checkpoint = str(best)
            self.eta_s = None
            return f"Run ended: {self.status}." + (f" Best checkpoint: {best}" if best else "")
        return None  # unknown kinds are ignored: newer trainers may add some

    def _drop_from(self, x: float) -> None:
        for cols in (self.steps, self.epochs, self.validations):
            if cols.size:
                cols.truncate(int(np.searchsorted(cols.view("x"), x, side="left")))

    def eta_now(self, now: float | None = None) -> float | None:
        """ETA counted down from the last epoch's estimate."""
        if self.eta_s is None or self.status != RUNNING:
            return None
        if self.eta_time is None:
            return self.eta_s
        now = time.time() if now is None else now
        return max(0.0, self.eta_s - max(0.0, now - self.eta_time))

    def summary(self, status: str | None = None, now: float | None = None) -> str:
        """One line: status (the events' own, or ``status`` as the app judged it), stage, epoch, ETA."""
        parts = [status or self.status]
        if self.stage is not None:
            parts.append(f"stage {self.stage} ({self.stage_name})" if self.stage_name else f"stage {self.stage}")
        if self.epoch is not None:
            total = f"/{self.stage_epochs}" if self.stage_epochs else ""
            parts.append(f"epoch {self.epoch}{total}")  # from 1, as in the log
        eta = self.eta_now(now) if (status or self.status) == RUNNING else None
        if eta is not None:
            parts.append(f"ETA {format_duration(eta)}")
        v = self.latest_validation
        if v:
            figures = ", ".join(
                f"{name} {v[k]:.1f}%"
                for k, name in (("td", "TD"), ("bd", "BD"), ("dsc", "DSC"), ("precision", "precision"))
                if k in v and not math.isnan(v[k])
            )
            parts.append(f"validation {figures}")
        return " · ".join(parts)


def _int_or(value: Any, default: int | None) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _fmt(value: Any, spec: str = ".4g") -> str:
    v = _as_float(value)
    return "?" if math.isnan(v) else format(v, spec)


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h {m:02d}m"
    if m:
        return f"{m}m {s:02d}s"
    return f"{s}s"


# --------------------------------------------------------------------------- #
# The process behind a run
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class PidRecord:
    pid: int
    create_time: float | None

    def alive(self) -> bool:
        return process_alive(self.pid, self.create_time)


def write_pid_file(run_dir: str | Path, pid: int) -> PidRecord:
    """Record the trainer's pid (and its start time, to detect reuse), atomically."""
    create_time: float | None
    try:
        import psutil

        create_time = psutil.Process(pid).create_time()
    except Exception:  # the process may already be gone; still record the pid
        create_time = None
    record = PidRecord(int(pid), create_time)
    write_text_atomic(Path(run_dir) / PID_FILE, json.dumps({"pid": record.pid, "create_time": create_time}))
    return record


def read_pid_file(run_dir: str | Path) -> PidRecord | None:
    try:
        data = json.loads((Path(run_dir) / PID_FILE).read_text(encoding="utf-8"))
        return PidRecord(int(data["pid"]), None if data.get("create_time") is None else float(data["create_time"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def process_alive(pid: int, create_time: float | None = None) -> bool:
    """True while that very process runs (zombies count as dead: they ran to the end)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 1.0:
            return False
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        return False


def find_trainer(run_dir: str | Path) -> PidRecord | None:
    """The process training into ``run_dir`` that this app did not start (``airway train --out RUN`` from a shell).

    Matches ``train`` ... ``--out RUN`` on command lines, resolving a relative
    RUN against the process's working folder. Under ``torchrun`` the launcher
    and its workers all match; the topmost one is returned, so killing it ends all.
    """
    import psutil

    target = Path(run_dir).resolve()
    matches: dict[int, tuple[int, float]] = {}
    for proc in psutil.process_iter(["pid", "ppid", "cmdline", "create_time"]):
        cmd = proc.info.get("cmdline") or []
        if "train" not in cmd:
            continue
        out = _option_value(cmd, "--out")
        if out is None:
            continue
        path = Path(out)
        try:
            if not path.is_absolute():
                path = Path(proc.cwd()) / path
            if path.resolve() == target:
                matches[proc.info["pid"]] = (proc.info.get("ppid") or 0, proc.info.get("create_time") or 0.0)
        except (psutil.Error, OSError):
            continue
    for pid, (ppid, created) in sorted(matches.items(), key=lambda kv: kv[1][1]):
        if ppid not in matches:
            return PidRecord(pid, created)
    return None


def _option_value(cmd: list[str], option: str) -> str | None:
    for i, arg in enumerate(cmd):
        if arg == option and i + 1 < len(cmd):
            return cmd[i + 1]
        if arg.startswith(option + "="):
            return arg[len(option) + 1 :]
    return None


def kill_process(record: PidRecord) -> bool:
    """Kill the trainer and its children (data loader workers). True if something was killed."""
    import psutil

    if not record.alive():
        return False
    try:
        proc = psutil.Process(record.pid)
        victims = proc.children(recursive=True) + [proc]
    except psutil.NoSuchProcess:
        return False
    for p in victims:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=5)
    return True


def request_stop(run_dir: str | Path) -> Path:
    """Ask the trainer to finish its step, save ``last.pt`` and exit (docs/CONTRACTS.md)."""
    path = Path(run_dir) / STOP_FILE
    write_text_atomic(path, f"stop requested at {time.time():.3f}\n")
    return path


def clear_stop_request(run_dir: str | Path) -> None:
    try:
        (Path(run_dir) / STOP_FILE).unlink()
    except FileNotFoundError:
        pass


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def log_tail(run_dir: str | Path, lines: int = 20, max_bytes: int = 64 << 10) -> list[str]:
    """Last non-event lines of the trainer's captured output (what a crash printed)."""
    path = Path(run_dir) / LOG_FILE
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    kept = [ln.rstrip() for ln in text.splitlines() if ln.strip() and parse_event_line(ln) is None]
    return kept[-lines:]


def conclude_status(history: RunHistory, process_running: bool, launched: bool = False) -> str:
    """The run's state from its events and whether its process still runs.

    ``launched``: a process was started for this run (a pid file exists), so a
    dead process without a ``run_end`` is a crash even before its first event.
    """
    if history.status in (FINISHED, STOPPED, FAILED):
        return history.status
    if process_running:
        return RUNNING
    if history.status == RUNNING or history.events_seen or launched:
        return INTERRUPTED  # gone without run_end
    return NOT_STARTED


RESUMABLE = frozenset({STOPPED, FAILED, INTERRUPTED, KILLED})


def can_resume(status: str, run_dir: str | Path) -> bool:
    """A run that ended before its end (stopped, crashed, killed) with a checkpoint to go on from.

    A finished run is not resumed (the trainer refuses it): it can be trained further instead.
    """
    files = RunFiles.of(run_dir)
    return status in RESUMABLE and files.config.is_file() and files.checkpoint("last").is_file()


def can_train_further(status: str, run_dir: str | Path) -> bool:
    """A finished run, which ``airway train --resume --more-epochs N`` continues with N more epochs."""
    files = RunFiles.of(run_dir)
    return status == FINISHED and files.config.is_file() and files.checkpoint("last").is_file()


def crash_report(history: RunHistory, run_dir: str | Path, lines: int = 15) -> str:
    """What to show when a run failed: the error event, else the last lines the process printed."""
    parts: list[str] = []
    if history.error_message:
        parts.append(history.error_message)
        if history.error_traceback:
            parts.append("\n".join(history.error_traceback.rstrip().splitlines()[-lines:]))
    tail = log_tail(run_dir, lines)
    if tail and not history.error_traceback:
        parts.append("\n".join(tail))
    if not parts:
        parts.append("The training process ended without a message (killed, or out of memory?).")
    return "\n".join(parts)


# --------------------------------------------------------------------------- #
# Finding runs
# --------------------------------------------------------------------------- #
def is_run_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / EVENTS_FILE).is_file() or (p / PID_FILE).is_file()


def find_runs(root: str | Path) -> list[Path]:
    """Run folders directly under ``root`` (and ``root`` itself if it is one), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [root] if is_run_dir(root) else []
    try:
        found += [p for p in root.iterdir() if p.is_dir() and is_run_dir(p)]
    except OSError:
        pass
    return sorted(found, key=lambda p: _mtime(p / EVENTS_FILE))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def best_checkpoint_path(history: RunHistory, run_dir: str | Path) -> Path | None:
    """The best checkpoint of a run: from its events, else ``checkpoints/best.pt``, else ``last.pt``."""
    run_dir = Path(run_dir)
    candidates = []
    if history.best_checkpoint:
        p = Path(history.best_checkpoint)
        candidates.append(p if p.is_absolute() else run_dir / p)
    files = RunFiles.of(run_dir)
    candidates += [files.checkpoint("best"), files.checkpoint("last")]
    for c in candidates:
        if c.is_file():
            return c
    return None
