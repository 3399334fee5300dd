"""The dataset's state file (``ROOT/airway_dataset.json``): per-case review status, reviewer, time,
figures, content keys and the frozen split.

Several windows, processes and annotators on a shared folder update it at once. Each change
(:func:`update_state`) takes an exclusive lock file (``.airway_dataset.json.lock``, created with
``O_EXCL`` and holding who/where/since), reads the file again, applies the change and writes it
atomically (:mod:`core.staging`), so no update is lost. A lock whose process has ended (same
host) or that is older than :data:`LOCK_STALE_S` is taken over and the takeover explained; a
live lock held longer than the wait raises an :class:`~core.errors.InputError` naming its holder.

The file is checked as a whole on every read: a damaged one is renamed ``*.damaged`` and the
reason raised (:class:`DamagedStateError`), never silently replaced by an empty state.
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeGuard

from core.errors import InputError
from core.review.persist import DAMAGED_SUFFIX, LockInfo
from core.staging import atomic_write_bytes


class Dataset(Protocol):
    """What the state needs of a :class:`core.dataset.layout.Dataset` (a Protocol: layout reads the state
    when it opens a dataset, so the state cannot import layout)."""

    notes: list[str]

    @property
    def state_path(self) -> Path: ...

    @property
    def case_ids(self) -> list[str]: ...

    def case(self, case_id: str) -> object: ...


STATE_FORMAT = "airway-studio-dataset"
STATE_VERSION = 1
STATUSES = ("todo", "in_review", "done", "flagged")
FIGURES = ("td", "bd", "dsc", "precision")  # docs/vocabulary.md names, percent

HISTORY_KEEP = 100  # status changes kept per case (the oldest go first): the file stays small
LOCK_WAIT_S = 15.0  # how long an update waits for another process's lock before it gives up
LOCK_STALE_S = 300.0  # a lock older than this is taken over even when its process seems alive
_BREAKER_STALE_S = 10.0  # the takeover lock is held for microseconds; older means its holder died


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "someone"


@dataclass
class CaseState:
    """What the dataset file records of one case."""

    status: str = "todo"
    reviewer: str | None = None
    seconds_spent: float = 0.0
    note: str = ""
    figures: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> {"td","bd","dsc","precision"} %
    open_items: int | None = None
    keys: dict[str, str] = field(default_factory=dict)  # role ("reference", "reviewed", "ct", model) -> content key
    label_version: str = "original"  # which label the figures/review used
    view: dict[str, Any] = field(default_factory=dict)  # the app's view state, opaque to core
    updated: str = ""  # ISO time of the last change
    history: list[dict[str, Any]] = field(default_factory=list)  # status changes: time, from, to, reviewer
    # model -> {"prediction": key, "label": key, "version": "original"|"reviewed"}: the masks its figures came from
    figure_keys: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CaseState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class DatasetState:
    """The whole file. ``cases`` holds every case of the dataset once read through :func:`read_state`
    (cases never changed are ``CaseState()`` defaults)."""

    version: int = STATE_VERSION
    cases: dict[str, CaseState] = field(default_factory=dict)
    split: dict[str, list[str]] | None = None  # frozen {"train": [...], "validation": [...], "test": [...]}
    split_seed: int | None = None
    split_fractions: list[float] | None = None
    split_created: str = ""
    split_removed: dict[str, str] = field(default_factory=dict)  # case -> its part, for cases gone from the dataset
    updated: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # fields of a newer minor version, kept as they are

    def case(self, case_id: str) -> CaseState:
        """The state of ``case_id`` (created as a default entry when absent)."""
        return self.cases.setdefault(case_id, CaseState())

    def to_json(self) -> dict[str, Any]:
        return {
            **self.extra,
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "updated": self.updated,
            "split": self.split,
            "split_seed": self.split_seed,
            "split_fractions": self.split_fractions,
            "split_created": self.split_created,
            "split_removed": self.split_removed,
            "cases": {cid: c.to_json() for cid, c in self.cases.items()},
        }


class DamagedStateError(InputError):
    """The state file could not be used; it was renamed to :attr:`set_aside` (or could not be)."""

    def __init__(self, path: Path, reasons: list[str], set_aside: Path | None):
        self.reasons = reasons
        self.set_aside = set_aside
        shown = "; ".join(reasons[:5]) + (f"; and {len(reasons) - 5} more" if len(reasons) > 5 else "")
        where = (
            f"it was set aside as {set_aside.name}, and the dataset starts with a new state file"
            if set_aside is not None
            else "another window set it aside meanwhile, or it could not be moved (a read-only folder)"
        )
        super().__init__(
            f"The dataset's state file is damaged ({shown}): {where}.",
            "Statuses, reviewers and the split in it are not lost: repair the set-aside copy and put it back "
            f"as {path.name} while no one works on the dataset.",
            path=path,
        )


# -- the schema -----------------------------------------------------------------------------------------------


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _case_problems(cid: str, data: Any) -> list[str]:
    where = f"cases['{cid}']"
    if not isinstance(data, dict):
        return [f"{where} must be an object"]
    wrong: list[str] = []
    checks: dict[str, tuple[Callable[[Any], bool], str]] = {
        "status": (lambda v: v in STATUSES, f"one of {', '.join(STATUSES)}"),
        "reviewer": (lambda v: v is None or isinstance(v, str), "text or null"),
        "seconds_spent": (lambda v: _is_number(v) and v >= 0, "a number from 0"),
        "note": (lambda v: isinstance(v, str), "text"),
        "figures": (
            lambda v: (
                isinstance(v, dict)
                and all(isinstance(m, dict) and all(_is_number(x) for x in m.values()) for m in v.values())
            ),
            "an object of models to {figure: number}",
        ),
        "open_items": (lambda v: v is None or (_is_int(v) and v >= 0), "a whole number from 0 or null"),
        "keys": (lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()), "an object of text"),
        "label_version": (lambda v: isinstance(v, str), "text"),
        "view": (lambda v: isinstance(v, dict), "an object"),
        "updated": (lambda v: isinstance(v, str), "text"),
        "history": (lambda v: isinstance(v, list) and all(isinstance(h, dict) for h in v), "a list of objects"),
        "figure_keys": (
            lambda v: (
                isinstance(v, dict)
                and all(isinstance(m, dict) and all(isinstance(x, str) for x in m.values()) for m in v.values())
            ),
            "an object of models to {role: key}",
        ),
    }
    for key, (ok, what) in checks.items():
        if key in data and not ok(data[key]):
            wrong.append(f"{where}.{key} must be {what}, got {json.dumps(data[key])[:40]}")
    return wrong


def state_problems(data: Any) -> list[str]:
    """Every way ``data`` (a parsed state file) does not fit the schema, one phrase each."""
    if not isinstance(data, dict):
        return ["it is not a JSON object"]
    if data.get("format") != STATE_FORMAT:
        return [f"its format is {json.dumps(data.get('format'))[:40]}, not '{STATE_FORMAT}'"]
    wrong: list[str] = []
    version = data.get("version")
    if not _is_int(version) or version < 1:
        wrong.append(f"version must be a whole number from 1, got {json.dumps(version)[:40]}")
    cases = data.get("cases", {})
    if not isinstance(cases, dict):
        wrong.append("cases must be an object of case names")
    else:
        for cid, c in cases.items():
            wrong.extend(_case_problems(cid, c))
    split = data.get("split")
    if split is not None:
        ok = isinstance(split, dict) and all(
            isinstance(ids, list) and all(isinstance(x, str) for x in ids) for ids in split.values()
        )
        if not ok:
            wrong.append("split must be null or an object of parts to lists of case names")
        else:
            seen: set[str] = set()
            for ids in split.values():
                twice = seen & set(ids)
                if twice:
                    wrong.append(f"split puts {sorted(twice)[0]} in two parts")
                    break
                seen |= set(ids)
    seed = data.get("split_seed")
    if seed is not None and not _is_int(seed):
        wrong.append(f"split_seed must be a whole number or null, got {json.dumps(seed)[:40]}")
    fr = data.get("split_fractions")
    if fr is not None and not (isinstance(fr, list) and all(_is_number(x) and x >= 0 for x in fr)):
        wrong.append("split_fractions must be null or a list of numbers")
    removed = data.get("split_removed", {})
    if not (isinstance(removed, dict) and all(isinstance(v, str) for v in removed.values())):
        wrong.append("split_removed must be an object of case names to parts")
    return wrong


# -- reading ------------------------------------------------------------------------------------------------------


def _set_aside(path: Path) -> Path | None:
    target = path.with_name(path.name + DAMAGED_SUFFIX)
    k = 2
    while target.exists():
        target = path.with_name(f"{path.name}{DAMAGED_SUFFIX}-{k}")
        k += 1
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return None  # another process set it aside first
    except OSError:
        return None
    return target


class _Damaged(Exception):
    def __init__(self, reasons: list[str]):
        self.reasons = reasons


def _parse(raw: bytes, path: Path) -> DatasetState:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Damaged([f"it is not valid JSON ({exc})" if raw.strip() else "it is empty"]) from None
    if isinstance(data, dict) and _is_int(data.get("version")) and data["version"] > STATE_VERSION:
        raise InputError(
            f"The dataset's state file is of version {data['version']}, newer than this Airway Studio reads "
            f"({STATE_VERSION}).",
            "Update Airway Studio; the file was left as it is.",
            path=path,
        )
    wrong = state_problems(data)
    if wrong:
        raise _Damaged(wrong)
    known = {
        "format",
        "version",
        "updated",
        "split",
        "split_seed",
        "split_fractions",
        "split_created",
        "split_removed",
        "cases",
    }
    return DatasetState(
        version=int(data["version"]),
        cases={str(cid): CaseState.from_json(c) for cid, c in data.get("cases", {}).items()},
        split=None if data.get("split") is None else {str(k): list(v) for k, v in data["split"].items()},
        split_seed=data.get("split_seed"),
        split_fractions=None if data.get("split_fractions") is None else [float(x) for x in data["split_fractions"]],
        split_created=str(data.get("split_created") or ""),
        split_removed={str(k): str(v) for k, v in (data.get("split_removed") or {}).items()},
        updated=str(data.get("updated") or ""),
        extra={k: v for k, v in data.items() if k not in known},
    )


def _read_raw(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(
            f"The dataset's state file cannot be read ({exc.strerror or exc}).", "Check its permissions.", path=path
        ) from None


def read_state_file(path: Path, *, locked: bool = False) -> DatasetState:
    """Parse and check the state file at ``path`` (a missing file is a new, empty state).

    A damaged file is renamed under the lock (``locked``: the caller holds it), and only if it still holds
    the bytes found damaged: a reader never sets aside a good file another process wrote meanwhile."""
    raw = _read_raw(path)
    if raw is None:
        return DatasetState()
    try:
        return _parse(raw, path)
    except _Damaged as damaged:
        reasons = damaged.reasons
    if locked:
        raise DamagedStateError(path, reasons, _set_aside(path))
    lock = StateLock(path)
    try:
        lock.acquire()
    except InputError:  # a read-only folder, or a lock held by a hung process: the file stays where it is
        raise DamagedStateError(path, reasons, None) from None
    try:
        now = _read_raw(path)
        if now is not None and now != raw:
            try:
                return _parse(now, path)  # rewritten meanwhile: what is there now is judged
            except _Damaged as damaged:
                reasons = damaged.reasons
        aside = _set_aside(path) if now is not None else None
    finally:
        lock.release()
    raise DamagedStateError(path, reasons, aside)


def read_state(dataset: Dataset, *, fill: bool = True) -> DatasetState:
    """The dataset's state now; with ``fill`` every case of ``dataset`` has an entry (defaults for new ones).

    A damaged file is set aside and :class:`DamagedStateError` raised (the next read starts afresh)."""
    state = read_state_file(dataset.state_path)
    if fill:
        for cid in dataset.case_ids:
            state.case(cid)
    return state


# -- the lock -----------------------------------------------------------------------------------------------------


def lock_path(state_path: Path) -> Path:
    return state_path.with_name(f".{state_path.name}.lock")


def _holder_alive(info: LockInfo) -> bool:
    """False when the holder surely ended: its process is gone on this host (or the pid is another's now)."""
    if info.host != socket.gethostname():
        return True
    import psutil

    try:
        proc = psutil.Process(info.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return float(proc.create_time()) <= info.since + 1.0  # a later process with a recycled pid is not it
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def _read_lock(path: Path) -> tuple[bytes, LockInfo | None] | None:
    """(raw bytes, holder) of the lock file, or None when there is none."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        return b"", None
    try:
        d = json.loads(raw.decode("utf-8"))
        return raw, LockInfo(str(d["user"]), str(d["host"]), int(d["pid"]), float(d["since"]))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return raw, None  # being written right now, or garbage


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


class StateLock:
    """An exclusive lock on the state file for the few milliseconds of one update."""

    def __init__(self, state_path: Path, *, wait_s: float | None = None, stale_s: float | None = None):
        self.path = lock_path(state_path)
        self.wait_s = LOCK_WAIT_S if wait_s is None else wait_s
        self.stale_s = LOCK_STALE_S if stale_s is None else stale_s
        self.mine = LockInfo(_user(), socket.gethostname(), os.getpid(), time.time())
        self.raw = b""
        self.held = False
        self.notes: list[str] = []  # takeovers of stale locks, explained

    def _try_create(self) -> bool:
        self.mine = LockInfo(self.mine.user, self.mine.host, self.mine.pid, time.time())
        data = {"user": self.mine.user, "host": self.mine.host, "pid": self.mine.pid, "since": self.mine.since}
        self.raw = json.dumps(data).encode()
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return False
        except OSError as exc:
            raise InputError(
                f"Cannot lock the dataset's state file ({exc.strerror or exc}).",
                "Check that the dataset folder is writable.",
                path=self.path.parent,
            ) from None
        try:
            os.write(fd, self.raw)
        finally:
            os.close(fd)
        return True

    def _stale_reason(self, holder: LockInfo | None) -> str | None:
        now = time.time()
        if holder is None:  # unreadable: half-written by a live process, or left by a crash mid-write
            mtime = _mtime(self.path)
            return "an unreadable lock file" if mtime is not None and now - mtime > _BREAKER_STALE_S else None
        if not _holder_alive(holder):
            return f"the lock of {holder.describe()}: that process has ended"
        if now - holder.since > self.stale_s:
            return f"the lock of {holder.describe()}: held for {now - holder.since:.0f} s, longer than an update takes"
        return None

    def _break(self, raw: bytes, reason: str) -> bool:
        """Remove the lock file if it still holds ``raw``; one breaker at a time (so no breaker removes the
        lock another just took). True when the lock is gone (removed here or meanwhile)."""
        breaker = self.path.with_name(self.path.name + ".break")
        try:
            fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            mtime = _mtime(breaker)
            if mtime is not None and time.time() - mtime > _BREAKER_STALE_S:
                breaker.unlink(missing_ok=True)  # its breaker died between two syscalls
            return False
        except OSError:
            return False  # a folder we cannot write: the wait ends in the error naming the holder
        os.close(fd)
        try:
            now = _read_lock(self.path)
            if now is not None and now[0] == raw:
                self.path.unlink(missing_ok=True)
                self.notes.append(f"took over {reason}")
            return True
        finally:
            breaker.unlink(missing_ok=True)

    def acquire(self) -> StateLock:
        start = time.monotonic()
        delay = 0.002
        while True:
            if self._try_create():
                self.held = True
                return self
            seen = _read_lock(self.path)
            if seen is None:
                continue  # released meanwhile
            raw, holder = seen
            reason = self._stale_reason(holder)
            if reason is not None and self._break(raw, reason):
                continue
            if time.monotonic() - start > self.wait_s:
                who = holder.describe() if holder is not None else "another process"
                raise InputError(
                    f"The dataset's state file is locked by {who} and stayed locked for {self.wait_s:.0f} s.",
                    f"Try again in a moment; if that process hangs, end it (or delete {self.path.name} once it "
                    "has ended).",
                    path=self.path.parent,
                )
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 1.5, 0.05)

    def still_mine(self) -> bool:
        seen = _read_lock(self.path)
        return seen is not None and seen[0] == self.raw

    def release(self) -> None:
        if self.held and self.still_mine():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> StateLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# -- updating -----------------------------------------------------------------------------------------------------


def write_state_file(path: Path, state: DatasetState) -> None:
    try:
        # allow_nan=False: NaN is no JSON; another tool reading the file would fail on it
        text = json.dumps(state.to_json(), indent=1, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"This change cannot be stored in the dataset's state file ({exc}).",
            "Store only text, numbers, lists and objects (e.g. in a case's view state); the file was left as it was.",
            path=path,
        ) from None
    atomic_write_bytes(path, text.encode("utf-8"))


def update_state(
    dataset: Dataset,
    change: Callable[[DatasetState], None],
    *,
    who: str | None = None,
    wait_s: float | None = None,
) -> DatasetState:
    """Lock, read the file again, apply ``change`` (it edits the state in place), write atomically, unlock.

    Takeovers of stale locks are added to ``dataset.notes``. ``who`` is recorded nowhere by itself;
    :func:`set_case` uses it as the reviewer of status changes."""
    lock = StateLock(dataset.state_path, wait_s=wait_s)
    with lock:
        dataset.notes.extend(lock.notes)
        state = read_state_file(dataset.state_path, locked=True)
        change(state)
        state.updated = now_iso()
        problems = state_problems(state.to_json())
        if problems:
            raise InputError(
                f"This change would make the dataset's state file invalid: {'; '.join(problems[:3])}.",
                "This is a bug in the caller; the file was left as it was.",
                path=dataset.state_path,
            )
        if not lock.still_mine():
            raise InputError(
                "Another process took over the dataset's lock while this update waited; the update was not written.",
                "Try again.",
                path=dataset.state_path,
            )
        write_state_file(dataset.state_path, state)
    for cid in dataset.case_ids:
        state.case(cid)
    return state


_CASE_FIELDS = {f.name for f in fields(CaseState)} - {"history", "figure_keys"}


def _check_case(dataset: Dataset, case_id: str) -> None:
    if case_id not in set(dataset.case_ids):
        dataset.case(case_id)  # raises the InputError naming the case


def set_case(dataset: Dataset, case_id: str, *, who: str | None = None, **values: Any) -> CaseState:
    """Set fields of one case (``status="done"``, ``reviewer=...``, ``note=...``) under the lock.

    Any status may follow any other (a done case can be reopened); each change of status is added to
    the case's ``history`` with the time and the reviewer (``reviewer`` given, else ``who``, else the
    case's reviewer, else the login name)."""
    _check_case(dataset, case_id)
    unknown = sorted(set(values) - _CASE_FIELDS)
    if unknown:
        raise InputError(
            f"Unknown case field(s): {', '.join(unknown)}.", f"Use {', '.join(sorted(_CASE_FIELDS))}.", path=None
        )
    if "status" in values and values["status"] not in STATUSES:
        raise InputError(f"Unknown status '{values['status']}'.", f"Use one of {', '.join(STATUSES)}.", path=None)
    out: list[CaseState] = []

    def change(state: DatasetState) -> None:
        case = state.case(case_id)
        before = case.status
        for key, value in values.items():
            setattr(case, key, value)
        stamp = now_iso()
        if "status" in values and values["status"] != before:
            reviewer = values.get("reviewer") or who or case.reviewer or _user()
            case.history.append({"time": stamp, "from": before, "to": case.status, "reviewer": reviewer})
            del case.history[:-HISTORY_KEEP]
        case.updated = stamp
        out.append(case)

    update_state(dataset, change, who=who)
    return out[0]


def add_time(dataset: Dataset, case_id: str, seconds: float, *, reviewer: str | None = None) -> CaseState:
    """Add review time to a case (two windows timing one case both count)."""
    _check_case(dataset, case_id)
    if not _is_number(seconds) or seconds < 0:
        raise InputError(f"Time spent must be a number of seconds from 0, got {seconds!r}.", path=None)
    out: list[CaseState] = []

    def change(state: DatasetState) -> None:
        case = state.case(case_id)
        case.seconds_spent = float(case.seconds_spent) + float(seconds)
        if reviewer:
            case.reviewer = reviewer
        case.updated = now_iso()
        out.append(case)

    update_state(dataset, change)
    return out[0]


def set_figures(
    dataset: Dataset,
    case_id: str,
    model: str,
    values: dict[str, float],
    *,
    keys: dict[str, str] | None = None,
    label_version: str | None = None,
    figure_keys: dict[str, str] | None = None,
) -> CaseState:
    """Record one model's figures (percent; keys of :data:`FIGURES`, more allowed) for a case, keeping the
    other models' figures; ``keys``: content keys of the files they came from (role -> key);
    ``label_version``: the label they were measured on ("original" / "reviewed"); ``figure_keys``: the content
    keys of the very masks measured (``{"prediction", "label", "version"}``), to tell when they are stale."""
    _check_case(dataset, case_id)
    bad = [k for k, v in values.items() if not _is_number(v)]
    if bad:
        raise InputError(f"Figures must be finite numbers; {', '.join(bad)} are not.", path=None)
    out: list[CaseState] = []

    def change(state: DatasetState) -> None:
        case = state.case(case_id)
        case.figures[model] = {k: float(v) for k, v in values.items()}
        case.keys.update(keys or {})
        if label_version is not None:
            case.label_version = label_version
        if figure_keys is not None:
            case.figure_keys[model] = dict(figure_keys)
        case.updated = now_iso()
        out.append(case)

    update_state(dataset, change)
    return out[0]
