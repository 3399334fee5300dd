"""Writing edits safely: atomic label saves with a one-time backup, a JSON edit
log beside the label, and a recovery file that survives a killed process.

The recovery file holds, per layer, the flat indices ever edited and their
current values (never a full volume), plus what is needed to reopen the same
inputs; :meth:`core.review.Session.recover` replays it on the files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InputError
from core.staging import atomic_write_bytes as atomic_write_bytes  # one atomic writer (it applies the umask)

RECOVERY_FORMAT = "airway-studio-recovery"
RECOVERY_VERSION = 1
RECOVERY_SUFFIX = ".recovery.npz"
DAMAGED_SUFFIX = ".damaged"

PathArg = str | os.PathLike[str]
Meta = dict[str, Any]


class SaveConflictError(InputError):
    """The file a save would replace is no longer what this session loaded (another
    window, person or program saved it since): overwriting it would lose their edits."""

    def __init__(self, path: PathArg, layer: str):
        self.layer = layer
        super().__init__(
            f"{Path(path).name} changed on disk after it was opened here (another window or person saved it).",
            "Save to a new file, merge your edits into the file on disk, or overwrite it keeping a backup of "
            "the other version.",
            path=str(path),
        )


@dataclass(frozen=True)
class FileKey:
    """What a file held when it was read: its size and a hash of its bytes (an mtime can
    stay the same across a save; the bytes cannot)."""

    size: int
    digest: str


def file_key(path: PathArg | None) -> FileKey | None:
    """The :class:`FileKey` of ``path`` now, or None when there is no such file."""
    if path is None:
        return None
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as f:
            size = 0
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
                size += len(chunk)
    except OSError:
        return None
    return FileKey(size, h.hexdigest())


def other_version_path(path: PathArg) -> Path:
    """Where the version on disk goes before an overwrite the user chose:
    ``ref.nii.gz`` -> ``ref.other-20260101-120000.nii.gz`` (never an existing file)."""
    p = Path(path)
    stem, suffix = split_suffix(p)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = p.with_name(f"{stem}.other-{stamp}{suffix}")
    k = 2
    while out.exists():
        out = p.with_name(f"{stem}.other-{stamp}-{k}{suffix}")
        k += 1
    return out


def keep_other_version(path: PathArg) -> Path | None:
    """Copy the file on disk aside (see :func:`other_version_path`); the copy's path, or None."""
    p = Path(path)
    if not p.exists():
        return None
    out = other_version_path(p)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.copy2(p, tmp)
    os.replace(tmp, out)
    return out


def split_suffix(path: Path) -> tuple[str, str]:
    from core.io import volume_suffix

    suffix = volume_suffix(path) or path.suffix
    return path.name[: len(path.name) - len(suffix)], suffix


def backup_path(path: PathArg) -> Path:
    """``ref.nii.gz`` -> ``ref.orig.nii.gz`` beside it."""
    p = Path(path)
    stem, suffix = split_suffix(p)
    return p.with_name(f"{stem}.orig{suffix}")


def edit_log_path(path: PathArg) -> Path:
    """``ref.nii.gz`` -> ``ref.edits.json`` beside it."""
    p = Path(path)
    stem, _ = split_suffix(p)
    return p.with_name(f"{stem}.edits.json")


def backup_once(path: PathArg) -> Path | None:
    """Copy an existing ``path`` to its backup unless a backup is already there; the backup path or None."""
    p = Path(path)
    if not p.exists():
        return None
    b = backup_path(p)
    if not b.exists():
        tmp = b.with_name(f".{b.name}.tmp")
        shutil.copy2(p, tmp)
        os.replace(tmp, b)
    return b


LOCK_SUFFIX = ".lock"


@dataclass(frozen=True)
class LockInfo:
    """Who edits a file: written beside it (``.NAME.lock``) while a session has it open."""

    user: str
    host: str
    pid: int
    since: float

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.since))
        return f"{self.user} on {self.host} (process {self.pid}) since {when}"

    def alive(self) -> bool:
        """False only when the holder surely ended: its process is gone on this host."""
        import socket

        if self.host != socket.gethostname():
            return True  # another machine's process cannot be checked from here
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True  # exists, owned by someone else
        return True


def lock_path(path: PathArg) -> Path:
    p = Path(path)
    return p.with_name(f".{p.name}{LOCK_SUFFIX}")


def read_lock(path: PathArg) -> LockInfo | None:
    try:
        d = json.loads(lock_path(path).read_text())
        return LockInfo(str(d["user"]), str(d["host"]), int(d["pid"]), float(d["since"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class EditLock:
    """A lock file beside a file being edited: a second window learns who holds it (``other``);
    a lock whose process is gone is taken over (``note`` says whose it was). Advisory: saves
    stay safe through the content check (:class:`SaveConflictError`), never through the lock."""

    def __init__(self, path: PathArg):
        import getpass
        import socket

        self.path = Path(path)
        self.other: LockInfo | None = None
        self.note: str | None = None
        self.held = False
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "someone"
        self.mine = LockInfo(user, socket.gethostname(), os.getpid(), time.time())

    def check(self) -> EditLock:
        """Only look (an open writes nothing): ``other`` when another live session holds the file."""
        existing = read_lock(self.path)
        if existing is not None and existing.pid != self.mine.pid and existing.alive():
            self.other = existing
        return self

    def acquire(self) -> EditLock:
        existing = read_lock(self.path)
        if existing is not None and existing.pid != self.mine.pid:
            if existing.alive():
                self.other = existing
                return self  # theirs stays: it is released when they close
            self.note = f"took over the lock of {existing.describe()}: that process has ended"
        data = {"user": self.mine.user, "host": self.mine.host, "pid": self.mine.pid, "since": self.mine.since}
        try:
            atomic_write_bytes(lock_path(self.path), json.dumps(data).encode())
            self.held = True
        except OSError:
            self.held = False  # a read-only folder: editing goes on, unlocked
        return self

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        now = read_lock(self.path)
        if now is not None and now.pid == self.mine.pid and now.host == self.mine.host:
            lock_path(self.path).unlink(missing_ok=True)


def append_edit_log(path: PathArg, entries: list[Meta], label_path: PathArg) -> Path:
    """Add ``entries`` to the label's JSON edit log (created on first save)."""
    log = Path(path)
    data: dict[str, Any] = {"label": Path(label_path).name, "edits": []}
    if log.exists():
        try:
            data = json.loads(log.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(
                f"The edit log {log.name} cannot be read ({exc}).",
                "Move it away; a new log is started on the next save.",
                path=log,
            ) from None
    data.setdefault("edits", []).extend(entries)
    atomic_write_bytes(log, (json.dumps(data, indent=1) + "\n").encode())
    return log


def file_identity(path: str | None) -> Meta | None:
    """Size and modification time: a recovery applies only to the very files it was made for."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return {"path": str(Path(path).resolve()), "size": None, "mtime_ns": None}
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def default_recovery_dir() -> Path:
    env = os.environ.get("AIRWAY_STUDIO_RECOVERY_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "airway-studio" / "recovery"


def recovery_name(reference_path: PathArg) -> str:
    """One recovery file per reference file (hash of its absolute path)."""
    p = Path(reference_path).resolve()
    h = hashlib.blake2b(str(p).encode(), digest_size=6).hexdigest()
    stem, _ = split_suffix(p)
    return f"{stem}-{h}{RECOVERY_SUFFIX}"


def write_recovery(path: Path, meta: Meta, arrays: dict[str, np.ndarray]) -> None:
    import io

    buf = io.BytesIO()
    meta = dict(meta, format=RECOVERY_FORMAT, version=RECOVERY_VERSION, written=time.time())
    payload: dict[str, Any] = dict(arrays, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    np.savez(buf, **payload)
    atomic_write_bytes(path, buf.getvalue())


def read_recovery(path: PathArg) -> tuple[Meta, dict[str, np.ndarray]]:
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            arrays = {k: z[k] for k in z.files if k != "meta"}
    except (OSError, ValueError, KeyError, EOFError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        # json.JSONDecodeError is a ValueError; a truncated or empty file fails in np.load or zipfile
        raise InputError(
            f"The recovery file cannot be read ({exc}).", "Delete it; the edits in it are lost.", path=str(path)
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != RECOVERY_FORMAT or not isinstance(meta.get("layers"), list):
        raise InputError("Not an Airway Studio recovery file.", "Choose a *.recovery.npz file.", path=str(path))
    return meta, arrays


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def list_recoveries(directory: PathArg | None = None) -> list[tuple[Path, Meta]]:
    """Recovery files left behind (newest first) and their metadata; unreadable ones are skipped
    (:func:`scan_recoveries` also sets them aside and names them)."""
    return scan_recoveries(directory, set_aside=False)[0]


def scan_recoveries(
    directory: PathArg | None = None, *, set_aside: bool = True
) -> tuple[list[tuple[Path, Meta]], list[tuple[Path, str]]]:
    """Every recovery file, one by one: ``(valid, damaged)``.

    ``valid``: (path, metadata), newest first. ``damaged``: (path, reason) of the files that
    cannot be read (empty, truncated, foreign); with ``set_aside`` each is renamed to
    ``<name>.damaged`` (its new path is reported) so it is never offered again, and one
    damaged file never hides a valid one beside it."""
    d = Path(directory) if directory is not None else default_recovery_dir()
    valid: list[tuple[Path, Meta]] = []
    damaged: list[tuple[Path, str]] = []
    if not d.is_dir():
        return valid, damaged
    for p in sorted(d.glob(f"*{RECOVERY_SUFFIX}"), key=_mtime, reverse=True):
        try:
            meta, _ = read_recovery(p)
        except InputError as exc:
            where = p
            if set_aside:
                where = p.with_name(p.name + DAMAGED_SUFFIX)
                try:
                    os.replace(p, where)
                except OSError:
                    where = p
            damaged.append((where, exc.what))
            continue
        valid.append((p, meta))
    return valid, damaged
