"""Background jobs with progress and cancel, so the window never freezes.

A job is a plain function ``fn(*args, progress=..., cancel=..., **kwargs)``:
``progress(done, total, message="")`` reports, ``cancel`` is a
``threading.Event`` the function polls (``cancel.is_set()``) and answers by
raising :class:`core.errors.Cancelled`. It runs on ``QThreadPool``; its result,
error or cancellation come back as Qt signals on the GUI thread.

Errors are shown once, by whoever tracks the job (the main window), through
:func:`app.dialogs.show_error`: the project's own errors as one message,
anything else as a short message with the traceback under "Show Details".
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from core.errors import Cancelled
from core.progress import CancelToken

if TYPE_CHECKING:  # imported where used: multiprocessing costs the window's start-up ~25 ms
    from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor

# Jobs stay referenced until they end: a QObject whose last Python reference
# goes away while its runnable still emits would be deleted under it.
_ACTIVE: set[Job] = set()

# Qt sizes its global pool by cores: 2 threads on a 2-core laptop, where a region growing and a
# comparison (or a thread segmentation) left a re-analysis after an edit queued until one ended.
# Most jobs spend their time waiting on a child process or the disk, so a few more threads than
# cores cost little; the CPU-heavy ones are few and the case runs one analysis at a time.
MIN_JOB_THREADS = 6


def job_pool() -> QThreadPool:
    """The pool jobs run on: Qt's global one, with at least :data:`MIN_JOB_THREADS` threads."""
    pool = QThreadPool.globalInstance()
    if pool.maxThreadCount() < MIN_JOB_THREADS:
        pool.setMaxThreadCount(MIN_JOB_THREADS)
    return pool


class _Runnable(QRunnable):
    def __init__(self, job: Job):
        super().__init__()
        self.setAutoDelete(True)
        self._job = job

    def run(self) -> None:  # worker thread
        self._job._execute()


class Job(QObject):
    """One function run off the GUI thread.

    Signals (delivered on the GUI thread): ``progress(done, total, message)``,
    ``result(value)``, ``error(exception, traceback_text)``, ``cancelled()``,
    then always ``finished()``.
    """

    progress = Signal(int, int, str)
    result = Signal(object)
    error = Signal(object, str)
    cancelled = Signal()
    finished = Signal()

    # Progress is throttled: a predictor reporting every window would
    # otherwise flood the event loop with queued signals.
    PROGRESS_INTERVAL_S = 0.05

    def __init__(self, fn: Callable[..., Any], *args: Any, name: str = "", **kwargs: Any):
        super().__init__()
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.name = name or getattr(fn, "__name__", "job")
        self.cancel_event = CancelToken()
        self._done = threading.Event()
        self._last_emit = 0.0
        self.value: Any = None
        self.exception: BaseException | None = None
        self.state = "new"  # new, running, done, failed, cancelled

    # -- control (GUI thread) -------------------------------------------------
    def start(self, pool: QThreadPool | None = None) -> Job:
        if self.state != "new":
            raise RuntimeError(f"Job '{self.name}' was already started")
        self.state = "running"
        _ACTIVE.add(self)
        self.finished.connect(lambda: _ACTIVE.discard(self))
        (pool or job_pool()).start(_Runnable(self))
        return self

    def cancel(self) -> None:
        self.cancel_event.set()

    @property
    def running(self) -> bool:
        return self.state == "running"

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the function returned (signals may still be queued)."""
        return self._done.wait(timeout_s)

    # -- worker thread ---------------------------------------------------------
    def _report(self, done: float, total: float = 0, message: str = "") -> None:
        now = time.monotonic()
        final = total and done >= total
        if not final and now - self._last_emit < self.PROGRESS_INTERVAL_S:
            return
        self._last_emit = now
        self._emit(self.progress, int(done), int(total), message)

    @staticmethod
    def _emit(signal: Any, *args: Any) -> None:
        try:
            signal.emit(*args)
        except RuntimeError:  # the QObject went away (window closed, app quitting): nobody listens
            pass

    def _execute(self) -> None:
        try:
            value = self.fn(*self.args, progress=self._report, cancel=self.cancel_event, **self.kwargs)
        except Cancelled as exc:
            self.exception = exc
            self.state = "cancelled"
            self._done.set()
            self._emit(self.cancelled)
        except BaseException as exc:  # noqa: BLE001 - shown to the user, never swallowed
            self.exception = exc
            self.state = "failed"
            self._done.set()
            self._emit(self.error, exc, traceback.format_exc())
        else:
            self.value = value
            self.state = "done"
            self._done.set()
            self._emit(self.result, value)
        self._emit(self.finished)


def guarded(owner: QObject, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` that does nothing once ``owner``'s C++ object is gone.

    A job may end after the window or case that started it was closed; Qt
    drops connections to *methods* of deleted QObjects but not to closures, so
    every closure connected to a job's signals goes through this."""
    import shiboken6

    def call(*args: Any) -> Any:
        if shiboken6.isValid(owner):
            return fn(*args)
        return None

    return call


def run_job(
    fn: Callable[..., Any],
    *args: Any,
    name: str = "",
    on_result: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException, str], None] | None = None,
    on_cancelled: Callable[[], None] | None = None,
    tracker: Callable[[Job], None] | None = None,
    **kwargs: Any,
) -> Job:
    """Create, connect and start a :class:`Job`; ``tracker`` (e.g. the main
    window's ``track_job``) shows its progress and its errors."""
    job = Job(fn, *args, name=name, **kwargs)
    if on_result is not None:
        job.result.connect(on_result)
    if on_error is not None:
        job.error.connect(on_error)
    if on_cancelled is not None:
        job.cancelled.connect(on_cancelled)
    if tracker is not None:
        tracker(job)
    return job.start()


# -- work in a child process ------------------------------------------------------------
#
# Some engine steps (cc3d labelling, scipy.ndimage hole filling) hold the GIL
# for hundreds of milliseconds on a full-size case, which a worker *thread*
# cannot hide from the event loop. Those run in one long-lived child process;
# big arrays travel through shared memory, not pickles.

_POOL: ProcessPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_LAUNCHER: ThreadPoolExecutor | None = None


def _launcher() -> ThreadPoolExecutor:
    """The one thread that starts child processes.

    Linux's parent-death signal (:func:`core.child_process.die_with_parent`)
    fires when the *thread* that started a child ends, and the jobs that need
    the child run on QThreadPool threads, which retire after 30 s idle. This
    thread lives as long as the app, so the child ends with the app, not with
    the job that happened to start it."""
    global _LAUNCHER
    with _POOL_LOCK:
        if _LAUNCHER is None:
            from concurrent.futures import ThreadPoolExecutor

            _LAUNCHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="airway-process-launcher")
        return _LAUNCHER


def _process_pool() -> ProcessPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            from core.child_process import die_with_parent

            _POOL = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                # the child ends with the app however the app ends (a crash or an OOM kill included)
                initializer=die_with_parent,
                initargs=(os.getpid(),),
            )
        return _POOL


def _submit(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
    """``fn`` handed to the pool from the launcher thread (the first submit starts the child)."""
    return _launcher().submit(lambda: _process_pool().submit(fn, *args, **kwargs)).result()


def _kill_pool() -> None:
    """Stop the child at once (a cancelled task cannot be interrupted otherwise)."""
    global _POOL
    with _POOL_LOCK:
        pool, _POOL = _POOL, None
    if pool is None:
        return
    processes: dict[int, Any] = getattr(pool, "_processes", None) or {}
    for proc in list(processes.values()):
        proc.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


def shutdown_process_pool() -> None:
    """Stop the analysis child (on quit: a running task would otherwise hold the exit)."""
    _kill_pool()


def call_in_process(fn: Callable[..., Any], *args: Any, cancel: Any = None, poll_s: float = 0.05, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in the shared child process; the calling (worker) thread
    waits without the GIL. Setting ``cancel`` kills the child and raises Cancelled."""
    from concurrent.futures import TimeoutError as FutureTimeout
    from concurrent.futures.process import BrokenProcessPool

    if cancel is not None and cancel.is_set():
        raise Cancelled()
    try:
        future = _submit(fn, *args, **kwargs)
    except BrokenProcessPool:  # the child died between two calls (killed, out of memory): start a new one
        _kill_pool()
        future = _submit(fn, *args, **kwargs)
    while True:
        try:
            return future.result(timeout=poll_s)
        except FutureTimeout:
            if cancel is not None and cancel.is_set():
                _kill_pool()
                raise Cancelled() from None
        except BrokenProcessPool:
            _kill_pool()
            raise RuntimeError("The analysis process ended unexpectedly (out of memory?).") from None


class SharedArray:
    """A numpy array copied into shared memory for :func:`call_in_process`;
    ``spec`` is what the child gets, :func:`attach_shared` its side."""

    def __init__(self, array: np.ndarray):
        from multiprocessing import shared_memory

        self.shm = shared_memory.SharedMemory(create=True, size=max(1, array.nbytes))
        view = np.ndarray(array.shape, dtype=array.dtype, buffer=self.shm.buf)
        np.copyto(view, array)  # numpy copies without the GIL
        del view
        self.spec = (self.shm.name, tuple(array.shape), array.dtype.str)

    def close(self) -> None:
        self.shm.close()
        self.shm.unlink()

    def __enter__(self) -> SharedArray:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def attach_shared(spec: tuple[Any, ...]) -> tuple[Any, np.ndarray]:
    """Child side: (handle to keep open while the array is used, array view)."""
    from multiprocessing import shared_memory

    # spawn children share the parent's resource tracker: the parent unlinks
    name, shape, dtype = spec
    shm = shared_memory.SharedMemory(name=name)
    return shm, np.ndarray(shape, dtype=np.dtype(dtype), buffer=shm.buf)


def run_sync(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a job function on this thread (scripts, tests, ``--screenshot``)."""
    return fn(*args, progress=lambda *a, **k: None, cancel=threading.Event(), **kwargs)
