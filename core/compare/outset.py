"""A compare output folder written as a set: staged, locked, swapped into place.

``airway compare --out OUT`` writes a dozen files that only make sense
together (CSVs, ``compare.json``, ``report.html``, snapshots). They are
written into a hidden staging folder beside ``OUT`` and the folder is renamed
into place at the end, so a reader (or a crash, or ``kill -9``) sees the old
set or the new one, never a mix:

- a lock file beside ``OUT`` refuses a second run into the same folder while
  one is writing; a lock whose process is gone is taken over with a note;
- the output policy of the other commands (core.outputs): an ``OUT`` holding
  anything but an earlier run of *this same comparison* (same reference,
  models, CTs and settings) is refused without ``--overwrite``; with it, the
  first original is kept as ``OUT.bak`` (never replaced later); an input is
  never an output; files of the user's own in ``OUT`` that the compare does
  not write stay where they are;
- what later runs reuse (``OUT/.cache`` and ``OUT/predictions``) is carried
  into the staging folder by hard links (no data copied);
- a run killed between the two renames of the swap leaves ``.OUT.old-<pid>``:
  the next run puts it back before anything else.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from core.errors import InputError

RESULT_FILE = "compare.json"
FORMAT_VERSION = 2  # of compare.json; 2: the vocabulary of docs/vocabulary.md (n, n_branches, n_detected), gate, notes
MARKER_FILE = ".outputs.json"
CARRIED = (".cache", "predictions")  # reused by later runs: carried over into the new set
# what a compare run writes at the top of OUT (a user's other files are left alone)
OWN_NAMES = frozenset(
    {
        RESULT_FILE,
        MARKER_FILE,
        "report.html",
        "snapshots",
        "metrics.csv",
        "summary.csv",
        "tests.csv",
        "dsc_by_diameter.csv",
        "dsc_by_diameter_summary.csv",
        "bd_by_generation.csv",
        "bd_by_generation_summary.csv",
        "failures.csv",
        "gate.csv",
        "metrics_lobes.csv",
        "metrics_lobes_summary.csv",
        "metrics_segments.csv",
        *CARRIED,
    }
)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _link_tree(src: Path, dst: Path) -> None:
    """``dst`` gets ``src``'s files as hard links (a copy where links are refused)."""
    for root, _dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for f in files:
            if f.startswith(".") and f.endswith(".partial"):
                continue  # another writer's temp file
            s, d = Path(root) / f, dst / rel / f
            try:
                os.link(s, d)
            except OSError:
                shutil.copy2(s, d)


def identity(reference_dir: str, sources: dict[str, str], ct_dir: str, settings: dict[str, Any]) -> dict[str, Any]:
    """What makes two runs "the same comparison": a rerun of it may replace its own results."""
    return {
        "reference_dir": str(reference_dir),
        "sources": {k: str(v) for k, v in sources.items()},
        "ct_dir": str(ct_dir),
        # the per-lobe figures add detail to the same scores: toggling them is a rerun of this comparison
        "settings": {k: v for k, v in json.loads(json.dumps(settings)).items() if k != "anatomy"},
    }


def identity_of_json(doc: dict[str, Any]) -> dict[str, Any]:
    st = dict(doc.get("settings", {}))
    return identity(doc.get("reference_dir", ""), doc.get("sources", {}), doc.get("ct_dir", ""), st)


class CompareFolder:
    """``with CompareFolder(out, overwrite=..., identity=...) as f:`` write into ``f.staging``,
    then ``f.commit()``; leaving the block without a commit discards the staging folder."""

    def __init__(
        self,
        out: str | Path,
        *,
        overwrite: bool = False,
        identity: dict[str, Any] | None = None,
        inputs: Iterable[str | Path | None] = (),
        say: Callable[[str], None] | None = None,
    ):
        self.out = Path(out).absolute()
        self.overwrite = overwrite
        self.identity = identity
        self.inputs = [Path(p) for p in inputs if p]
        self.say = say
        self.staging = self.out.parent / f".{self.out.name}.staging-{os.getpid()}"
        self.lock_path = self.out.parent / f".{self.out.name}.compare.lock"
        self.backup = self.out.with_name(self.out.name + ".bak")
        self.committed = False
        self.backed_up = False
        self._locked = False

    # -- lock ------------------------------------------------------------------------------
    def _note(self, text: str) -> None:
        if self.say is not None:
            self.say(text)

    def _lock(self) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _attempt in range(3):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except PermissionError:
                raise InputError(
                    f"Cannot write beside --out in {self.out.parent} (the results are staged there and renamed "
                    "into place together).",
                    "Choose an --out whose parent folder you can write to.",
                    path=self.out,
                ) from None
            except FileExistsError:
                try:
                    held = json.loads(self.lock_path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    held = {}
                pid = int(held.get("pid", 0) or 0)
                host = str(held.get("host", ""))
                if pid and host == info["host"] and not _pid_alive(pid):
                    self._note(
                        f"note: took over a stale lock on {self.out} (pid {pid}, since {held.get('since', '?')}, "
                        "is gone)"
                    )
                    self.lock_path.unlink(missing_ok=True)
                    continue
                if not held:  # being written this instant, or damaged: look again once
                    time.sleep(0.2)
                    if self.lock_path.exists() and not self.lock_path.read_text(encoding="utf-8").strip():
                        self.lock_path.unlink(missing_ok=True)
                    continue
                raise InputError(
                    f"Another airway compare (pid {pid} on {host}, since {held.get('since', '?')}) is writing "
                    f"into {self.out}.",
                    f"Wait for it to finish, or choose another --out. If no such run is alive, delete {self.lock_path}.",
                    path=self.out,
                ) from None
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(info, f)
            self._locked = True
            return
        raise InputError("Could not take the lock of the output folder.", "Try again.", path=self.lock_path)

    def _unlock(self) -> None:
        if self._locked:
            self.lock_path.unlink(missing_ok=True)
            self._locked = False

    # -- leftovers of killed runs --------------------------------------------------------------
    def _recover(self) -> None:
        prefix = f".{self.out.name}."
        for p in sorted(self.out.parent.glob(f"{prefix}*")):
            tail = p.name[len(prefix) :]
            kind, _, pid_text = tail.rpartition("-")
            if kind not in ("staging", "old") or not pid_text.isdigit() or not p.is_dir():
                continue
            if int(pid_text) != os.getpid() and _pid_alive(int(pid_text)):
                continue
            if kind == "old" and not self.out.exists():
                os.rename(p, self.out)  # killed mid-swap: the previous complete set comes back
                self._note(f"note: restored {self.out} from an interrupted run")
            else:
                shutil.rmtree(p, ignore_errors=True)

    # -- policy ------------------------------------------------------------------------------
    def _earlier(self) -> dict[str, Any] | None:
        try:
            doc = json.loads((self.out / RESULT_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def _check(self) -> None:
        from core.outputs import same_file

        out = self.out
        for inp in self.inputs:
            if same_file(out, inp) or inp.absolute().resolve().is_relative_to(out.resolve()):
                raise InputError(
                    f"--out {out} is (or holds) an input ({inp}); the results would mix with it.",
                    "Choose another --out folder.",
                    path=out,
                )
        if out.exists() and not out.is_dir():
            raise InputError("--out is a file, not a folder.", "Give a folder for --out.", path=out)
        if not out.is_dir() or not any(out.iterdir()) or self.overwrite:
            return
        earlier = self._earlier()
        if earlier is None:
            raise InputError(
                f"--out {out} holds other files, not an earlier airway compare output.",
                f"Choose a new or empty --out folder, or pass --overwrite (the folder is kept as {self.backup.name}).",
                path=out,
            )
        if earlier.get("format_version") != FORMAT_VERSION:
            raise InputError(
                f"--out {out} holds the results of an earlier version of airway compare.",
                f"Choose another --out, or pass --overwrite (the earlier results are kept as {self.backup.name}).",
                path=out,
            )
        if self.identity is not None and identity_of_json(earlier) != self.identity:
            what = ", ".join(sorted(earlier.get("models", []))) or "?"
            raise InputError(
                f"--out {out} holds the results of another comparison (models {what}, reference "
                f"{earlier.get('reference_dir', '?')}, or other settings).",
                f"Choose another --out, or pass --overwrite (the earlier results are kept as {self.backup.name}).",
                path=out,
            )

    def _replaces_other(self) -> bool:
        """True when OUT holds something other than an earlier run of this very comparison."""
        if not self.out.is_dir() or not any(self.out.iterdir()):
            return False
        earlier = self._earlier()
        return earlier is None or self.identity is None or identity_of_json(earlier) != self.identity

    # -- the set -----------------------------------------------------------------------------------
    def __enter__(self) -> CompareFolder:
        from core.outputs import check_writable_folder

        self._check()  # before anything is written anywhere: a refused run leaves every folder as it was
        check_writable_folder(self.out, flag="--out")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            self._recover()
            self._check()  # again under the lock: another run may have finished meanwhile
            if self.staging.exists():
                shutil.rmtree(self.staging)
            self.staging.mkdir()
            for name in CARRIED:
                if (self.out / name).is_dir():
                    _link_tree(self.out / name, self.staging / name)
        except BaseException:
            self._unlock()
            raise
        return self

    def live(self, path: str) -> str:
        """A final path under OUT as it is found during the run (under the staging folder)."""
        out = str(self.out)
        return str(self.staging) + path[len(out) :] if path == out or path.startswith(out + os.sep) else path

    def final(self, path: str) -> str:
        """A staging path as it will be once the set is in place."""
        st = str(self.staging)
        return str(self.out) + path[len(st) :] if path == st or path.startswith(st + os.sep) else path

    def commit(self) -> None:
        """Swap the staging folder into place (OUT's own files of the user's stay in OUT)."""
        out = self.out
        if out.is_dir():
            keep_backup = self._replaces_other() and not self.backup.exists()
            new = {p.name for p in self.staging.iterdir()}
            for p in list(out.iterdir()):
                if p.name not in new and p.name not in OWN_NAMES:
                    os.rename(p, self.staging / p.name)  # a user's own file: not ours to drop
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.rename(out, old)
            os.rename(self.staging, out)
            if keep_backup:
                os.rename(old, self.backup)
                self.backed_up = True
            else:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(self.staging, out)
        self.committed = True

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if not self.committed and self.staging.exists():
                shutil.rmtree(self.staging, ignore_errors=True)
        finally:
            self._unlock()
