"""Find bundled resources (presets, configs, icons, model weights).

One helper for every way the program runs: a source checkout, an installed
package (``resources`` is installed as a top-level package beside ``core``) and a
PyInstaller bundle (files unpacked under ``sys._MEIPASS``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from core.errors import InputError


def resources_root() -> Path:
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        return Path(frozen) / "resources"
    return Path(__file__).resolve().parent.parent / "resources"


def resource_path(*parts: str, must_exist: bool = True) -> Path:
    p = resources_root().joinpath(*parts)
    if must_exist and not p.exists():
        raise InputError(
            f"Bundled resource '{'/'.join(parts)}' is missing (looked in {resources_root()}).",
            "Reinstall Airway Studio, or run from a complete source checkout.",
        )
    return p


def load_json_resource(*parts: str) -> dict[str, Any]:
    with open(resource_path(*parts), encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)  # every bundled JSON resource is an object
    return data


SHIPPED_MODEL = ("models", "realct_wingsnet.pt")


def shipped_model_path() -> Path | None:
    """The demo WingsNet checkpoint shipped with Airway Studio, or None when this
    installation lacks it. The one place that knows where it lives: the CLI,
    the segment panel and the window all ask here."""
    p = resource_path(*SHIPPED_MODEL, must_exist=False)
    return p if p.exists() else None
