"""File modes of what the project writes: new files follow the umask, as ``open()`` would make them.

``tempfile.mkstemp`` (behind every atomic write) creates 0600 files, so masks
and maps written that way were unreadable to the user's group while text
outputs were not. Kept apart from core.outputs so that core.io can use it
without an import circle.
"""

from __future__ import annotations

import os
from pathlib import Path


def umask_mode() -> int:
    """``0666 & ~umask``: the mode ``open()`` would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def apply_umask(path: str | Path) -> None:
    os.chmod(path, umask_mode())
