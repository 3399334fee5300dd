"""Project files: a review's inputs and decisions as one JSON file (paths relative to it).

Format 2 keys region statuses by the regions' content keys (format 1 used list
positions; readers map those once, on the first analysis of the same files).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from core.errors import InputError
from core.review.persist import atomic_write_bytes

PROJECT_FORMAT = "airway-studio-project"
PROJECT_VERSION = 2


def write_project(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write a project dict atomically (a temporary file, then a rename)."""
    path = Path(path)
    atomic_write_bytes(path, json.dumps(data, indent=2).encode("utf-8"))
    return path


def read_project(path: str | os.PathLike) -> dict[str, Any]:
    """Parse and check a project file; paths come back absolute."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise InputError("The project file does not exist.", "Check the path.", path=path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(
            f"The project file is not valid JSON ({exc}).", "Open an Airway Studio project (.json).", path=path
        ) from None
    if not isinstance(data, dict) or data.get("format") != PROJECT_FORMAT:
        raise InputError(
            "This JSON file is not an Airway Studio project.", "Open a project saved by Airway Studio.", path=path
        )
    if int(data.get("version", 0)) > PROJECT_VERSION:
        raise InputError(
            f"The project was saved by a newer Airway Studio (format {data.get('version')}).",
            "Update Airway Studio to open it.",
            path=path,
        )
    base = path.resolve().parent

    def absolute(p: str | None) -> str | None:
        if p is None:
            return None
        q = Path(p)
        return str(q if q.is_absolute() else (base / q).resolve())

    data["ct"] = absolute(data.get("ct"))
    data["reference"] = absolute(data.get("reference"))
    for p in data.get("predictions", []):
        p["path"] = absolute(p.get("path"))
    return data
