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
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InputError
from core.outputs import atomic_write_bytes  # noqa: F401  (one atomic writer; it applies the umask)

RECOVERY_FORMAT = "airway-studio-recovery"
RECOVERY_VERSION = 1
RECOVERY_SUFFIX = ".recovery.npz"


def split_suffix(path: Path) -> tuple[str, str]:
    from core.io import volume_suffix

    suffix = volume_suffix(path) or path.suffix
    return path.name[: len(path.name) - len(suffix)], suffix


def backup_path(path: str | os.PathLike) -> Path:
    """``ref.nii.gz`` -> ``ref.orig.nii.gz`` beside it."""
    p = Path(path)
    stem, suffix = split_suffix(p)
    return p.with_name(f"{stem}.orig{suffix}")


def edit_log_path(path: str | os.PathLike) -> Path:
    """``ref.nii.gz`` -> ``ref.edits.json`` beside it."""
    p = Path(path)
    stem, _ = split_suffix(p)
    return p.with_name(f"{stem}.edits.json")


def backup_once(path: str | os.PathLike) -> Path | None:
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


def append_edit_log(path: str | os.PathLike, entries: list[dict], label_path: str | os.PathLike) -> Path:
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


def file_identity(path: str | None) -> dict | None:
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


def recovery_name(reference_path: str | os.PathLike) -> str:
    """One recovery file per reference file (hash of its absolute path)."""
    p = Path(reference_path).resolve()
    h = hashlib.blake2b(str(p).encode(), digest_size=6).hexdigest()
    stem, _ = split_suffix(p)
    return f"{stem}-{h}{RECOVERY_SUFFIX}"


def write_recovery(path: Path, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    import io

    buf = io.BytesIO()
    meta = dict(meta, format=RECOVERY_FORMAT, version=RECOVERY_VERSION, written=time.time())
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    atomic_write_bytes(path, buf.getvalue())


def read_recovery(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            arrays = {k: z[k] for k in z.files if k != "meta"}
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise InputError(
            f"The recovery file cannot be read ({exc}).", "Delete it; the edits in it are lost.", path=path
        ) from None
    if meta.get("format") != RECOVERY_FORMAT:
        raise InputError("Not an Airway Studio recovery file.", "Choose a *.recovery.npz file.", path=path)
    return meta, arrays


def list_recoveries(directory: str | os.PathLike | None = None) -> list[tuple[Path, dict]]:
    """Recovery files left behind (newest first) and their metadata; unreadable ones are skipped."""
    d = Path(directory) if directory is not None else default_recovery_dir()
    out = []
    for p in sorted(d.glob(f"*{RECOVERY_SUFFIX}"), key=lambda q: q.stat().st_mtime, reverse=True) if d.is_dir() else []:
        try:
            meta, _ = read_recovery(p)
        except InputError:
            continue
        out.append((p, meta))
    return out
