"""The batch run's progress on stderr: a tqdm bar (cases done, rate, ETA) on a terminal, plain lines elsewhere.

A SLURM log or a pipe gets one line per finished case ("[3/10] CASE: done; 4.2 cases/min, about 1 min left")
instead of carriage-return redraws. Lines for stdout (each case's result) go through :meth:`CaseBar.write`,
which lifts the bar out of the way first.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO


def _eta(seconds: float) -> str:
    if seconds < 90:
        return f"about {seconds:.0f} s left"
    if seconds < 5400:
        return f"about {seconds / 60:.0f} min left"
    return f"about {seconds / 3600:.1f} h left"


class CaseBar:
    """A :data:`core.progress.Progress` over cases: ``bar(done, total, message)``; ``done`` may be fractional
    while a case runs (the message then says how far that case is)."""

    def __init__(self, label: str = "airway segment", stream: TextIO | None = None, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.label = label
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar: Any = None
        self.t0 = time.perf_counter()
        self.last_whole = 0
        self.lock = threading.Lock()

    def __call__(self, done: float, total: float, message: str = "") -> None:
        if not self.enabled:
            return
        with self.lock:
            if self.tty:
                self._draw(done, total, message)
            else:
                self._line(done, total, message)

    def _draw(self, done: float, total: float, message: str) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="case", file=self.stream, desc=self.label, dynamic_ncols=True)
        self.bar.total = total
        # whole cases on the bar (tqdm's rate and ETA count cases); a case's own progress is in the message
        self.bar.n = int(done)
        if message:
            self.bar.set_postfix_str(message[:60], refresh=False)
        self.bar.refresh()

    def _line(self, done: float, total: float, message: str) -> None:
        whole = int(done)
        if whole <= self.last_whole:
            return  # plain lines only when a case ends: a log file is read, not watched
        self.last_whole = whole
        elapsed = time.perf_counter() - self.t0
        rate = whole / elapsed * 60 if elapsed > 0 else 0.0
        eta = f", {_eta(elapsed / whole * (total - whole))}" if 0 < whole < total else ""
        self.stream.write(f"{self.label}: [{whole}/{int(total)}] {message}; {rate:.1f} cases/min{eta}\n")
        self.stream.flush()

    def write(self, text: str, stream: TextIO | None = None) -> None:
        """Print a line (default stdout) without tearing the bar."""
        out = stream or sys.stdout
        with self.lock:
            if self.bar is not None:
                self.bar.clear()
            out.write(text + "\n")
            out.flush()
            if self.bar is not None:
                self.bar.refresh()

    def close(self) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.close()
                self.bar = None
