"""Staged writes: every file the project writes appears under its name complete, or not at all.

A writer writes into a hidden file next to the target (same folder, so the
final ``os.replace`` is atomic) and renames it into place. The hidden name
carries the writer's machine and process id::

    .NAME.<host>-<pid>-<random>.partial[.suffix]

so a file left by a writer that was killed or hit a full disk is recognisable
as stale: the next write into that folder removes it when its process is gone
(or the pid now belongs to a process started after the file was last written).
Staged files of another machine (a shared folder) are left alone unless they are
older than :data:`FOREIGN_STALE_S`: their pid means nothing here.

Errors name the output the user asked for, never the hidden file. This module is
kept below :mod:`core.outputs` (which re-exports it) so that :mod:`core.io` can
use it without an import circle.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from core.errors import AirwayError, WriteError
from core.filemodes import apply_umask

STAGED_MARK = ".partial"
FOREIGN_STALE_S = 24 * 3600.0  # a write from another machine that is still going after a day is not one

_STAGED_RE = re.compile(r"^\..*\.(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[a-z0-9_]+\.partial(?:$|\.)")


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]


def staged_prefix(target: Path) -> str:
    """The hidden name's start for ``target`` (this machine and process)."""
    return f".{target.name}.{_host_tag()}-{os.getpid()}-"


def new_staged_file(target: Path, suffix: str = "") -> Path:
    """Create an empty hidden file next to ``target`` to write into (``suffix`` keeps a format's extension)."""
    fd, tmp = tempfile.mkstemp(prefix=staged_prefix(target), suffix=STAGED_MARK + suffix, dir=target.parent)
    os.close(fd)
    return Path(tmp)


def new_staged_folder(target: Path) -> Path:
    """A hidden folder next to ``target`` for outputs that are several files (a header and its data)."""
    return Path(tempfile.mkdtemp(prefix=staged_prefix(target), suffix=STAGED_MARK, dir=target.parent))


def _writer_gone(pid: int, written: float) -> bool:
    import psutil

    if pid == os.getpid():
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return True
        # the pid was given to a process started after the file was last written: not its writer
        return float(proc.create_time()) > written + 1.0
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False  # another user's live process


def stale_staged(folder: str | Path) -> list[Path]:
    """The staged files and folders in ``folder`` whose writer is gone."""
    return _scan(folder)[0]


def _scan(folder: str | Path) -> tuple[list[Path], int]:
    """(:func:`stale_staged`, how many entries the folder has)."""
    found: list[Path] = []
    here = _host_tag()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return found, 0
    now = time.time()
    for entry in entries:
        if not entry.name.startswith("."):
            continue
        m = _STAGED_RE.match(entry.name)
        if m is None:
            continue
        try:
            written = entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue  # removed meanwhile
        if m["host"] == here:
            if not _writer_gone(int(m["pid"]), written):
                continue
        elif now - written < FOREIGN_STALE_S:
            continue
        found.append(Path(entry.path))
    return found, len(entries)


# A folder of many files (a cache of thousands of entries) is scanned at most once a minute per process:
# 10,000 entries take about 20 ms to list, which every write would pay.
BIG_FOLDER = 512
BIG_FOLDER_RESCAN_S = 60.0
_next_scan: dict[str, float] = {}


def clean_stale(folder: str | Path) -> list[Path]:
    """Remove what :func:`stale_staged` finds (quietly: two cleaners may race); returns what was removed."""
    key = os.path.abspath(folder)
    if time.monotonic() < _next_scan.get(key, 0.0):
        return []
    stale, n_entries = _scan(folder)
    if n_entries >= BIG_FOLDER:
        _next_scan[key] = time.monotonic() + BIG_FOLDER_RESCAN_S
    removed = []
    for p in stale:
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        except FileNotFoundError:
            continue
        except OSError:
            continue  # not ours to force; it stays for the next write
        removed.append(p)
    return removed


def write_error(target: str | Path, exc: OSError) -> WriteError:
    """The error a failed write raises: it names ``target``, not the hidden file being written."""
    reason = exc.strerror or str(exc)
    for name in (exc.filename, exc.filename2):
        if name:  # a message that names the hidden file would send the user looking for it
            reason = reason.replace(str(name), str(target))
    err = WriteError(
        f"Could not write the file: {reason}",
        "Check the folder is writable and the disk has space; the previous version, if any, is unchanged.",
        path=target,
    )
    err.errno = exc.errno
    return err


def retarget(err: AirwayError, staged: Path, target: Path) -> AirwayError:
    """Make an error raised while writing ``staged`` name ``target`` instead (in place; returns it).

    Format writers report the file they were given, which is the hidden one.
    """
    names = [str(staged / target.name), str(staged)] if staged.is_dir() else [str(staged)]
    for name in names:
        err.what = err.what.replace(name, str(target))
        if err.path == name:
            err.path = str(target)
    err.args = (err.message,)
    return err


def atomic_write(path: str | Path, writer: Callable[[Path], object], suffix: str = "") -> Path:
    """Write ``path`` by ``writer(hidden_file)`` then one rename; a failure leaves ``path`` as it was.

    Files get the user's umask permissions (mkstemp alone makes 0600); stale
    staged files in the folder are removed first. An ``OSError`` (disk full, no
    permission) becomes a :class:`~core.errors.WriteError` naming ``path``.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(path.parent)
        tmp = new_staged_file(path, suffix)
        try:
            writer(tmp)
        except AirwayError as err:
            retarget(err, tmp, path)
            raise
        apply_umask(tmp)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write one file atomically with umask permissions (no existence policy: app save dialogs ask)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
