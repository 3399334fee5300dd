"""Settings remembered between runs (QSettings), with typed accessors.

Tests and ``--screenshot`` runs pass ``Settings(ephemeral=True)`` (an INI file
in a temporary folder), so they never touch the user's own settings.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from PySide6.QtCore import QByteArray, QSettings

ORG, APP = "AirwayStudio", "Airway Studio"
MAX_RECENT = 10


class Settings:
    def __init__(self, ephemeral: bool = False, path: str | None = None):
        if path is None and ephemeral:
            self._tmp = tempfile.TemporaryDirectory(prefix="airway-settings-")
            path = os.path.join(self._tmp.name, "settings.ini")
        if path is not None:
            self.q = QSettings(path, QSettings.Format.IniFormat)
        else:
            self.q = QSettings(ORG, APP)

    # generic ------------------------------------------------------------------
    def get(self, key: str, default: Any = None, type_: type | None = None) -> Any:
        value = self.q.value(key, default)
        if type_ is None or value is None:
            return value
        try:
            if type_ is bool:
                return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
            return type_(value)
        except (TypeError, ValueError):
            return default

    def set(self, key: str, value: Any) -> None:
        self.q.setValue(key, value)

    def sync(self) -> None:
        self.q.sync()

    # recent files ---------------------------------------------------------------
    def recent(self) -> list[str]:
        value: Any = self.q.value("recent/files", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or []) if v]

    def add_recent(self, path: str) -> list[str]:
        path = os.path.abspath(path)
        items = [p for p in self.recent() if os.path.abspath(p) != path]
        items.insert(0, path)
        items = items[:MAX_RECENT]
        self.q.setValue("recent/files", items)
        return items

    def clear_recent(self) -> None:
        self.q.setValue("recent/files", [])

    # folders and window ------------------------------------------------------------
    def last_dir(self) -> str:
        return str(self.q.value("paths/last_dir", os.path.expanduser("~")))

    def set_last_dir(self, path: str) -> None:
        self.q.setValue("paths/last_dir", os.path.dirname(os.path.abspath(path)) if os.path.isfile(path) else path)

    # the reviewer's name, asked once (app.dataset): the dataset's state file and edit log record it
    def reviewer(self) -> str | None:
        value = str(self.q.value("dataset/reviewer", "") or "").strip()
        return value or None

    def set_reviewer(self, name: str) -> None:
        self.q.setValue("dataset/reviewer", name.strip())

    def window_state(self) -> tuple[QByteArray | None, QByteArray | None]:
        return self.q.value("window/geometry"), self.q.value("window/state")

    def set_window_state(self, geometry: QByteArray, state: QByteArray) -> None:
        self.q.setValue("window/geometry", geometry)
        self.q.setValue("window/state", state)
