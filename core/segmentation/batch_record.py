"""The record a batch run writes next to each mask (``OUT/CASE.json``), and what ``--continue`` reads in it.

A record says what produced the mask: the input (its path, a key of its bytes and a key of its voxels and
grid, :func:`core.outputs.content_key`), the method and model (checksum of the checkpoint file, its card
line), the code version, device, engine, seconds, the gate's verdict and warnings, and the options that
shape the mask. ``--continue`` skips a case only when its mask and record exist and the record's input key,
model checksum and mask options equal this run's; anything else is segmented again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: version of the record's layout; a record of another version is not trusted by --continue
RECORD_FORMAT = 1
RECORD_SUFFIX = ".json"


def record_path(mask: Path) -> Path:
    """``OUT/CASE.nii.gz`` -> ``OUT/CASE.json``."""
    from core.casenames import stem

    return mask.with_name(stem(mask) + RECORD_SUFFIX)


def file_checksum(path: str | Path) -> str:
    """SHA-256 of a file's bytes (the model checksum)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def input_file_key(path: str | Path) -> str | None:
    """A key of the input's bytes (a file, or every file of a DICOM folder by name), None when unreadable.

    Cheaper than the content key (no decoding): --continue compares it first and decodes only when it
    differs, so an unchanged cohort is checked in seconds."""
    p = Path(path)
    h = hashlib.blake2b(digest_size=16)
    files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
    try:
        for f in files:
            h.update(f.name.encode("utf-8", "replace") + b"\0")
            with open(f, "rb") as stream:
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    h.update(chunk)
    except OSError:
        return None
    return f"{sum(f.stat().st_size for f in files)}-{h.hexdigest()}"


@functools.cache
def code_version() -> dict[str, str | None]:
    """This code's version: the package version, and ``git describe`` when it runs from a checkout."""
    import core

    root = Path(core.__file__).resolve().parents[1]
    described: str | None = None
    if (root / ".git").exists():
        try:
            run = subprocess.run(
                ["git", "describe", "--always", "--dirty", "--tags"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=10,
            )
            described = run.stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            described = None
    return {"airway_studio": core.__version__, "git": described}


@dataclass(frozen=True)
class ModelInfo:
    """The checkpoint a run uses, as records name it."""

    path: str
    name: str
    checksum: str
    card: str

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "name": self.name, "checksum": self.checksum, "card": self.card}


def model_info(checkpoint: str | Path) -> ModelInfo:
    """Name, checksum and card line of a checkpoint file (its header is read without torch)."""
    from core.models.card import read_header, short_line

    p = Path(checkpoint)
    header = read_header(p)
    return ModelInfo(str(p.resolve()), p.name, file_checksum(p), short_line(header) if header else "")


def build_record(
    *,
    case: str,
    image: Path,
    mask: Path,
    probabilities: Path | None,
    input_key: str | None,
    content_key: str,
    method: str,
    model: ModelInfo | None,
    mask_options: dict[str, Any],
    options: dict[str, Any],
    result: dict[str, Any],
    part: tuple[int, int],
) -> dict[str, Any]:
    """One case's record (see the module doc)."""
    return {
        "format": RECORD_FORMAT,
        "case": case,
        "status": "done",
        "input": {"path": str(image.resolve()), "file_key": input_key, "content_key": content_key},
        "outputs": {"mask": mask.name, "probabilities": None if probabilities is None else str(probabilities)},
        "method": method,
        "model": None if model is None else model.to_json(),
        "code": code_version(),
        "device": result.get("device", "cpu"),
        "engine": result.get("backend") or method,
        "seconds": result.get("seconds"),
        "gate": result.get("gate"),
        "warnings": list(result.get("warnings") or ()),
        "voxels": result.get("voxels"),
        "volume_ml": result.get("volume_ml"),
        "mask_options": mask_options,
        "options": options,
        "part": {"part_id": part[0], "num_parts": part[1]},
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def read_record(path: Path) -> dict[str, Any] | None:
    """A record as written, or None when it is missing, unreadable or of another format."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT or data.get("status") != "done":
        return None
    return data


def same_producer(record: dict[str, Any], method: str, model: ModelInfo | None, mask_options: dict[str, Any]) -> bool:
    """The record's mask came from this method, model checksum and mask options."""
    if record.get("method") != method or record.get("mask_options") != mask_options:
        return False
    recorded = record.get("model")
    if model is None:
        return recorded is None
    return isinstance(recorded, dict) and recorded.get("checksum") == model.checksum


def why_redone(
    record: dict[str, Any] | None,
    mask: Path,
    method: str,
    model: ModelInfo | None,
    mask_options: dict[str, Any],
) -> str | None:
    """Why a case cannot be skipped by what its outputs say (None: the input key decides)."""
    if not mask.is_file():
        return "no mask"
    if record is None:
        return "no record"
    if not same_producer(record, method, model, mask_options):
        return "another model or options"
    return None


def input_keys(record: dict[str, Any]) -> tuple[str | None, str | None]:
    """(file key, content key) of the input the record's mask was made from."""
    inp = record.get("input") or {}
    return inp.get("file_key"), inp.get("content_key")
