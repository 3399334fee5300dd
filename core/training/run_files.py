"""The names of the files in a training run folder, in one place for the trainer and the app's tab.

The trainer (``core.training.trainer``) writes the folder and the training tab
(``app.training``) reads and controls it; both import these names so that a
rename cannot leave one side looking for a file the other no longer writes
(docs/CONTRACTS.md, docs/events.md)::

    RUN/config.toml          the whole run's configuration (resume reads it back)
    RUN/events.jsonl         the event stream (docs/events.md), also on stdout
    RUN/checkpoints/last.pt  weights + resume state (optimizer, scheduler, RNG, position)
    RUN/checkpoints/best.pt  best validation score (``run.best_metric``) over the whole run
    RUN/checkpoints/stage{0,1,2}.pt   weights at the end of each stage
    RUN/hard/<case>.npy      stage-0 false-negative centreline voxels (hard skeleton sampling)
    RUN/tensorboard/         TensorBoard logs (``run.tensorboard = true``)
    RUN/stop.request         created by the user/GUI: finish the step, save last.pt, stop
    RUN/trainer.pid          written by the app: the pid (and start time) of the process it launched
    RUN/trainer.log          written by the app: that process's stdout and stderr
    RUN/finetune.json        fine-tuning runs (core.training.finetune): dataset, label version, cases, comparison
    RUN/cases.csv            fine-tuning runs: the image,label pairs trained and validated on
    RUN/compare/report.html  fine-tuning runs: the start and the fine-tuned model on the split's test part

This module imports nothing heavy (no torch, no Qt): the tab imports it on the GUI thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "config.toml"
EVENTS_FILE = "events.jsonl"
STOP_FILE = "stop.request"
PID_FILE = "trainer.pid"
LOG_FILE = "trainer.log"
CHECKPOINTS_DIR = "checkpoints"
HARD_DIR = "hard"
TENSORBOARD_DIR = "tensorboard"
FINETUNE_FILE = "finetune.json"
CASES_FILE = "cases.csv"
COMPARE_DIR = "compare"
REPORT_FILE = "report.html"

#: Checkpoint kinds and their file stems: ``last``, ``best`` and ``stage0`` .. ``stage2``.
LAST, BEST = "last", "best"
CHECKPOINT_SUFFIX = ".pt"


@dataclass(frozen=True)
class RunFiles:
    """The paths of one run folder."""

    root: Path

    @classmethod
    def of(cls, run_dir: str | Path) -> RunFiles:
        return cls(Path(run_dir))

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def events(self) -> Path:
        return self.root / EVENTS_FILE

    @property
    def stop(self) -> Path:
        return self.root / STOP_FILE

    @property
    def pid(self) -> Path:
        return self.root / PID_FILE

    @property
    def log(self) -> Path:
        return self.root / LOG_FILE

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    def checkpoint(self, kind: str) -> Path:
        """``last``, ``best`` or ``stage0`` .. ``stage2``."""
        return self.checkpoints / f"{kind}{CHECKPOINT_SUFFIX}"

    @property
    def hard(self) -> Path:
        return self.root / HARD_DIR

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD_DIR

    @property
    def finetune(self) -> Path:
        return self.root / FINETUNE_FILE

    @property
    def cases_csv(self) -> Path:
        return self.root / CASES_FILE

    @property
    def compare(self) -> Path:
        return self.root / COMPARE_DIR

    @property
    def compare_report(self) -> Path:
        return self.compare / REPORT_FILE
