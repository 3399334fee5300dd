"""Child processes end with the process that started them, however it ends.

A crash or an out-of-memory kill (SIGKILL) of the app runs none of its
clean-up, so a child left to itself would run on as an orphan, using CPU and
holding the app's output pipe open. Every child the app starts (the analysis
process pool, the segmentation process, the 3D snapshot renderer) calls
:func:`die_with_parent` first:

- on Linux the kernel kills the child when its parent goes
  (``prctl(PR_SET_PDEATHSIG, SIGKILL)``). The kernel means the parent *thread*:
  the child dies when the thread that started it ends, so children are started
  from threads that live as long as the app (see ``app.workers``);
- everywhere (Windows and macOS included) a daemon thread watches the parent
  and ends the child when the parent is gone. It cannot act while the child
  holds the GIL in a C call, so it is the fallback, not the first line.

The training process is the exception: it is detached on purpose and survives
the app (docs/architecture.md), so it never calls this.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

#: the app's pid, set by the app in a child's environment: it names the app even
#: when the app died before the child started, or when a shell stands between
#: them; without it the child's parent at start-up is watched
PARENT_PID_ENV = "AIRWAY_STUDIO_PARENT_PID"

#: exit status of a child that ended because its parent was gone
PARENT_GONE_EXIT = 75

_PR_SET_PDEATHSIG = 1


def parent_pid_from_env() -> int | None:
    value = os.environ.get(PARENT_PID_ENV, "")
    return int(value) if value.isdigit() else None


def die_with_parent(parent_pid: int | None = None, poll_s: float = 0.5) -> None:
    """End this process when ``parent_pid`` (default: the app named by
    ``AIRWAY_STUDIO_PARENT_PID``, else the current parent) ends.

    Call it first thing in a child; it returns at once. If the parent is
    already gone (it died before this ran) the process exits here."""
    parent = parent_pid or parent_pid_from_env() or os.getppid()
    if sys.platform.startswith("linux"):
        _set_pdeathsig()
    # checked after prctl: a parent that died before the kernel knew whom to
    # tell shows here as a changed parent pid
    alive = _parent_watch(parent)
    if not alive():
        os._exit(PARENT_GONE_EXIT)
    threading.Thread(target=_watch, args=(alive, poll_s), name="die-with-parent", daemon=True).start()


def _set_pdeathsig() -> None:
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # a libc without prctl: the watcher thread still works
        pass


def _parent_watch(parent: int) -> Callable[[], bool]:
    """A test that says whether ``parent`` still runs."""
    if os.name == "posix" and os.getppid() == parent:
        # an orphan is re-parented (to init or a subreaper) the moment its parent
        # exits, before the parent is reaped: no pid probe, no reused-pid doubt
        return lambda: os.getppid() == parent
    # Windows, or a parent further up than the direct one (started through a shell)
    import psutil

    try:
        proc = psutil.Process(parent)  # remembers the start time: a reused pid is not the parent
    except psutil.Error:
        return lambda: False

    def alive() -> bool:
        try:
            return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
        except psutil.Error:
            return False

    return alive


def _watch(alive: Callable[[], bool], poll_s: float) -> None:
    while alive():
        time.sleep(poll_s)
    os._exit(PARENT_GONE_EXIT)
