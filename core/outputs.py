"""One output policy for every command and the app.

- Every output is checked before the work starts (:meth:`OutputPlan.check`):
  its folder can be created and written, it is not a folder, not an input, and
  it does not exist unless the caller allows overwriting. A problem is an
  :class:`~core.errors.InputError` naming the file and the fix (CLI: one line, exit 2).
- Outputs are staged under hidden temporary names next to their targets and
  renamed into place together at :meth:`OutputPlan.commit`; a failure before
  that (or :meth:`OutputPlan.abort`) removes every staged file, so no partial
  result remains. The hidden names carry the writer's pid (:mod:`core.staging`):
  what a killed writer left is removed by the next write into that folder, and
  a failed write's message names the output, not the hidden file.
- Overwriting keeps the *first* original as ``NAME.bak``; a later overwrite
  never replaces that backup.
- Files get the user's usual permissions (``0666 & ~umask``): ``mkstemp``
  creates 0600 files, which is why masks once came out private while text
  files did not.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from core.errors import AirwayError, InputError
from core.filemodes import apply_umask, umask_mode
from core.staging import (
    STAGED_MARK,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    clean_stale,
    new_staged_file,
    new_staged_folder,
    retarget,
    staged_prefix,
    write_error,
)

# the writers and checks every command and the app import from here (core.staging and core.filemodes
# sit below this module so that core.io can use them without an import circle)
__all__ = [
    "BACKUP_SUFFIX",
    "OutputPlan",
    "apply_umask",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "backup_path",
    "check_output",
    "check_writable_folder",
    "clean_stale",
    "content_key",
    "new_staged_file",
    "new_staged_folder",
    "refuse_input_as_output",
    "retarget",
    "same_file",
    "staged_prefix",
    "umask_mode",
    "write_error",
]

BACKUP_SUFFIX = ".bak"


def backup_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + BACKUP_SUFFIX)


def _resolved(path: str | Path) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(path)))).resolve()


def same_file(a: str | Path, b: str | Path) -> bool:
    """True when ``a`` and ``b`` name one file (resolved paths, or hard links to one inode)."""
    if _resolved(a) == _resolved(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _nearest_existing(path: Path) -> Path | None:
    for p in [path, *path.parents]:
        if p.exists():
            return p
    return None


def check_writable_folder(folder: str | Path, *, flag: str | None = None, what: str = "Output folder") -> Path:
    """Raise unless ``folder`` exists as a writable folder or can be created; returns it."""
    folder = Path(folder)
    fix = f"Choose another {flag}." if flag else "Choose a folder you can write to."
    existing = _nearest_existing(folder.absolute())
    if existing is None or not existing.is_dir():
        raise InputError(f"{what} cannot be created: {existing} is a file, not a folder.", fix, path=folder)
    try:
        fd, probe = tempfile.mkstemp(
            prefix=staged_prefix(existing / "airway-write-test"), suffix=STAGED_MARK, dir=existing
        )
    except OSError as exc:
        raise InputError(f"{what} is not writable ({exc.strerror}: {existing}).", fix, path=folder) from None
    os.close(fd)
    os.unlink(probe)
    return folder


@dataclass
class _Entry:
    path: Path
    flag: str | None
    tmp: Path | None = None
    created_dirs: list[Path] = field(default_factory=list)


class OutputPlan:
    """The outputs of one piece of work: checked before it, written all at once after it.

    ``with OutputPlan(overwrite, inputs) as plan: plan.add(...); plan.check(); ...;
    plan.write_text(...)`` commits on a clean exit and removes every staged file
    when the block raises.
    """

    def __init__(
        self,
        overwrite: bool = False,
        inputs: Iterable[str | Path | None] = (),
        overwrite_flag: str = "--overwrite",
        backup: bool = True,
    ):
        self.overwrite = overwrite
        self.backup = backup
        self.overwrite_flag = overwrite_flag
        self.inputs = [Path(p) for p in inputs if p]
        self.entries: dict[Path, _Entry] = {}
        self.written: list[Path] = []
        self.backups: list[Path] = []

    # -- planning ---------------------------------------------------------------
    def add_input(self, path: str | Path | None) -> None:
        if path:
            self.inputs.append(Path(path))

    def add(self, path: str | Path | None, flag: str | None = None) -> Path | None:
        """Declare an output (``flag``: the option that named it, for the messages)."""
        if path is None or str(path) == "":
            return None
        p = Path(os.path.expanduser(str(path)))
        self.entries.setdefault(_resolved(p), _Entry(p, flag))
        return p

    def check(self) -> None:
        """Raise the first problem of any declared output, before any work is done."""
        for entry in self.entries.values():
            check_output(
                entry.path,
                flag=entry.flag,
                overwrite=self.overwrite,
                inputs=self.inputs,
                overwrite_flag=self.overwrite_flag,
            )

    # -- staging ----------------------------------------------------------------
    def _entry(self, path: str | Path) -> _Entry:
        key = _resolved(Path(os.path.expanduser(str(path))))
        entry = self.entries.get(key)
        if entry is None:  # written without being declared: check it now, still before writing
            self.add(path)
            entry = self.entries[key]
            check_output(
                entry.path, flag=None, overwrite=self.overwrite, inputs=self.inputs, overwrite_flag=self.overwrite_flag
            )
        return entry

    def stage(self, path: str | Path, writer: Callable[[Path], Any], tmp_suffix: str = "") -> Path:
        """Run ``writer(tmp)`` to write the output's content under a hidden temporary name."""
        entry = self._entry(path)
        target = entry.path
        try:
            entry.created_dirs = _make_parents(target.parent)
            clean_stale(target.parent)
            if tmp_suffix in (".mhd", ".nhdr"):
                # a header names its data file: write the pair under the final names in a hidden folder
                entry.tmp = tmp = new_staged_folder(target)
                out = tmp / target.name
            else:
                entry.tmp = tmp = out = new_staged_file(target, tmp_suffix)
            try:
                writer(out)
            except AirwayError as err:
                retarget(err, tmp, target)
                raise
            for f in [*tmp.iterdir()] if tmp.is_dir() else [tmp]:
                apply_umask(f)
        except OSError as exc:
            raise write_error(target, exc) from None
        return out

    def write_text(self, path: str | Path, text: str) -> None:
        self.stage(path, lambda tmp: tmp.write_text(text, encoding="utf-8", newline=""))

    def write_bytes(self, path: str | Path, data: bytes) -> None:
        self.stage(path, lambda tmp: tmp.write_bytes(data))

    def write_volume(self, volume: Any, path: str | Path, compress: bool = True) -> None:
        from core.io import volume_suffix, write_volume_file

        suffix = volume_suffix(path)
        self.stage(path, lambda tmp: write_volume_file(volume, tmp, suffix, compress), tmp_suffix=suffix)

    # -- finishing --------------------------------------------------------------
    def commit(self) -> list[Path]:
        """Rename every staged file into place (backing up originals first); returns the paths written."""
        staged = [(e, e.tmp) for e in self.entries.values() if e.tmp is not None]
        for entry, _ in staged:
            bak = backup_path(entry.path)
            if self.backup and entry.path.is_file() and not bak.exists():
                # only the first original is kept: a .bak is never replaced by a later version
                try:
                    _keep_copy(entry.path, bak)
                except OSError as exc:
                    raise write_error(bak, exc) from None
                self.backups.append(bak)
        for entry, tmp in staged:
            try:
                if tmp.is_dir():  # a header + data pair (.mhd/.nhdr): data files first, the header last
                    name = entry.path.name
                    for f in sorted(tmp.iterdir(), key=lambda f: f.name == name):
                        os.replace(f, entry.path.parent / f.name)
                    tmp.rmdir()
                else:
                    os.replace(tmp, entry.path)
            except OSError as exc:
                raise write_error(entry.path, exc) from None
            entry.tmp = None
            self.written.append(entry.path)
        return list(self.written)

    def abort(self) -> None:
        """Remove every staged file (and folders made for them that stayed empty)."""
        for entry in self.entries.values():
            if entry.tmp is not None:
                if entry.tmp.is_dir():
                    import shutil

                    shutil.rmtree(entry.tmp, ignore_errors=True)
                else:
                    entry.tmp.unlink(missing_ok=True)
                entry.tmp = None
            for d in reversed(entry.created_dirs):
                try:
                    d.rmdir()
                except OSError:
                    break
            entry.created_dirs = []

    def __enter__(self) -> OutputPlan:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()


def _make_parents(folder: Path) -> list[Path]:
    missing = []
    for p in [folder, *folder.parents]:
        if p.exists():
            break
        missing.append(p)
    folder.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


def _keep_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes the current content of ``src`` (a hard link when possible: no copy of a big volume)."""
    try:
        os.link(src, dst)
    except OSError:
        import shutil

        shutil.copy2(src, dst)


def check_output(
    path: str | Path,
    *,
    flag: str | None = None,
    overwrite: bool = False,
    inputs: Iterable[str | Path] = (),
    overwrite_flag: str = "--overwrite",
) -> Path:
    """Raise an :class:`InputError` naming ``path`` and the fix when it cannot be an output."""
    p = Path(os.path.expanduser(str(path)))
    other = f"another {flag}" if flag else "another output path"
    for inp in inputs:
        inp = Path(inp)
        if same_file(p, inp):
            raise InputError(
                f"This output is also an input ({inp}); writing it would destroy the input.", f"Choose {other}.", path=p
            )
    if p.is_dir():
        raise InputError(
            "This output is a folder, not a file.", f"Give a file name ({flag or 'output'} FOLDER/NAME).", path=p
        )
    if p.exists() and not overwrite:
        raise InputError(
            "Output already exists.",
            f"Choose {other}, or pass {overwrite_flag} (the first original is kept as {p.name}{BACKUP_SUFFIX}).",
            path=p,
        )
    check_writable_folder(p.parent if str(p.parent) else Path("."), flag=flag, what="The output's folder")
    return p


def refuse_input_as_output(path: str | Path, inputs: Iterable[str | Path | None], what: str = "file") -> None:
    """For the app's save dialogs: never write over a file the case was opened from."""
    for inp in inputs:
        if inp and same_file(path, inp):
            raise InputError(
                f"This {what} is one of the opened inputs ({inp}); saving would destroy it.",
                "Save under another name.",
                path=path,
            )


def content_key(volume: Any) -> str:
    """Hash of a volume's voxels and grid (shape, spacing, origin, direction): the key of caches made from it.

    Two masks of the same shape from different phantoms, or one mask moved to
    another origin, get different keys, so a cache is never reused across them.
    """
    import hashlib

    import numpy as np

    arr = np.ascontiguousarray(getattr(volume, "array", volume))
    h = hashlib.sha256()
    if arr.dtype == bool:
        h.update(np.packbits(arr, axis=None).tobytes())  # 8x less to hash
    else:
        h.update(str(arr.dtype).encode())
        h.update(arr.tobytes())
    h.update(repr(tuple(int(s) for s in arr.shape)).encode())
    geometry = getattr(volume, "geometry", None)
    if geometry is not None:
        for part in (geometry.spacing, geometry.origin, geometry.direction):
            h.update(repr(tuple(round(float(v), 6) for v in part)).encode())
    return h.hexdigest()
