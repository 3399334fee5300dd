"""The project's error family.

Every error a user can cause is an :class:`AirwayError` whose message says what
is wrong and how to fix it. Boundaries catch this family once: the command line
prints one line and exits with status 2, the GUI shows one dialog.
"""

from __future__ import annotations

from pathlib import Path


class AirwayError(Exception):
    """Base class: ``what`` went wrong, ``fix`` says what the user can do."""

    def __init__(self, what: str, fix: str | None = None, path: str | Path | None = None):
        self.what = what
        self.fix = fix
        self.path = None if path is None else str(path)
        super().__init__(self.message)

    @property
    def message(self) -> str:
        text = self.what
        if self.path and self.path not in text:
            text = f"{self.path}: {text}"
        if self.fix:
            text = f"{text.rstrip('.')}. {self.fix}"
        return text

    def __str__(self) -> str:  # one line, for the CLI and dialogs
        return self.message


class InputError(AirwayError):
    """A file or argument that cannot be used as given (missing, corrupt, wrong shape, NaN...)."""


class WriteError(InputError, OSError):
    """A file that could not be written (disk full, no permission). The message names the file the
    user asked for, never a hidden temporary one. It is an ``OSError`` too, so code that handled the
    raw error from a write still handles it."""


class GeometryError(AirwayError):
    """Two volumes that should share a grid do not."""


class CheckpointError(AirwayError):
    """A model file that is missing, corrupt, foreign or of another architecture/version."""


class ConfigError(AirwayError):
    """A configuration value that is out of range or inconsistent."""


class Cancelled(AirwayError):
    """Raised inside long work when the caller asked it to stop."""

    def __init__(self, what: str = "Cancelled by the user.", fix: str | None = None):
        super().__init__(what, fix)


class QualityError(AirwayError):
    """A result that failed a quality gate when the user asked for strictness (``--strict``): exit status 3."""

    exit_code = 3
