"""The training event stream (schema: docs/CONTRACTS.md, documented in docs/events.md).

One JSON object per line, appended to ``RUN/events.jsonl`` and printed on
stdout, flushed line by line so that the GUI's training tab (which reads the
process's stdout or tails the file) sees every event as it happens.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import IO, Any

from core.training.run_files import EVENTS_FILE

Event = dict[str, Any]

EVENT_TYPES = (
    "run_start",
    "stage",
    "step",
    "epoch",
    "validation",
    "checkpoint",
    "info",
    "warning",
    "error",
    "run_end",
)

#: Fields each event carries besides ``event``, ``time`` and ``run`` (the contract).
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "run_start": ("config", "versions", "device", "world_size", "resumed"),
    "stage": ("stage", "name", "loss", "epochs", "alpha", "threshold"),
    "step": ("stage", "epoch", "step", "global_step", "loss", "loss_enc", "loss_dec", "lr", "patches_per_s"),
    "epoch": ("stage", "epoch", "loss", "time_s", "eta_s"),
    "validation": ("stage", "epoch", "td", "bd", "dsc", "precision", "cases"),
    "checkpoint": ("stage", "epoch", "path", "kind"),
    "info": ("message",),
    "warning": ("message",),
    "error": ("message", "traceback"),
    "run_end": ("status", "best_checkpoint"),
}


def _clean(value: Any) -> Any:
    # JSON has no NaN/Infinity; a diverged loss is reported as null rather than breaking parsers
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _clean(value.item())
    if isinstance(value, Path):
        return str(value)
    return value


class EventLog:
    """Writes events to ``RUN/events.jsonl`` (appending, so a resumed run continues the file) and stdout.

    ``enabled=False`` (DDP ranks other than 0) makes every call a no-op.
    """

    def __init__(self, run_dir: str | Path, stdout: IO[str] | None = sys.stdout, enabled: bool = True):
        self.run_dir = Path(run_dir)
        self.run = self.run_dir.name
        self.enabled = enabled
        self.stdout = stdout
        self._file: IO[str] | None = None
        if enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._file = open(self.run_dir / EVENTS_FILE, "a", encoding="utf-8")

    def emit(self, event: str, **fields: Any) -> Event:
        if event not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event!r}")
        record: Event = {"event": event, "time": round(time.time(), 3), "run": self.run}
        record.update(_clean(fields))
        if not self.enabled:
            return record
        line = json.dumps(record, separators=(", ", ": "))
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()
        if self.stdout is not None:
            self.stdout.write(line + "\n")
            self.stdout.flush()
        return record

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_events(path: str | Path) -> list[Event]:
    """All events of a run folder's ``events.jsonl`` (or the file itself); a torn last line is skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / EVENTS_FILE
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a process killed mid-write leaves a partial line
    return out


def check_event(record: Event) -> list[str]:
    """Problems with one event against the contract (empty list = well-formed)."""
    problems = []
    for key in ("event", "time", "run"):
        if key not in record:
            problems.append(f"missing '{key}'")
    kind = record.get("event")
    if kind not in REQUIRED_FIELDS:
        problems.append(f"unknown event type {kind!r}")
        return problems
    for key in REQUIRED_FIELDS[kind]:
        if key not in record:
            problems.append(f"{kind}: missing '{key}'")
    return problems
