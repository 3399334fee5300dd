"""The one vocabulary of long work: a progress callback and a cancel token.

Every long job of ``core`` (segmentation, region growing, analyses, caching...)
takes ``progress`` and ``cancel`` keyword arguments of these types, and the app's
worker jobs (``app.workers.Job``) hand them in:

- ``progress(done, total, message)``: how far it got and what it does now, in
  words a user reads (an ETA, when a job knows one, is part of the message);
  ``total`` 0 means "unknown" (a busy indicator).
- ``cancel``: anything with ``is_set()`` (a :class:`CancelToken`, or the
  ``threading.Event`` a caller already has); the job polls it between steps
  through :func:`raise_if_cancelled` and stops by raising
  :class:`core.errors.Cancelled`, leaving nothing half-written.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from core.errors import Cancelled

#: ``progress(done, total, message)``
Progress = Callable[[float, float, str], None]


class Cancellable(Protocol):
    """What a job polls: a :class:`CancelToken` or a ``threading.Event``."""

    def is_set(self) -> bool: ...


class CancelToken(threading.Event):
    """A cancel request shared between the caller and the job (a ``threading.Event``, so it can be
    set from another thread and passed wherever an event was)."""

    @property
    def cancelled(self) -> bool:
        return self.is_set()

    def cancel(self) -> None:
        self.set()

    def raise_if_cancelled(self, what: str = "Cancelled by the user.") -> None:
        raise_if_cancelled(self, what)


def raise_if_cancelled(cancel: Cancellable | None, what: str = "Cancelled by the user.") -> None:
    """:class:`Cancelled` (saying ``what`` was stopped) when ``cancel`` is set; nothing without one."""
    if cancel is not None and cancel.is_set():
        raise Cancelled(what)


def no_progress(done: float, total: float, message: str = "") -> None:
    """A :data:`Progress` that reports nowhere (the default of jobs run without a listener)."""


def throttled(progress: Progress, interval_s: float) -> Progress:
    """``progress`` called at most once per ``interval_s``, but always for the last step (``done >= total``):
    a job reporting every window would otherwise flood a reader (a pipe, a GUI's event loop)."""
    last = [float("-inf")]

    def report(done: float, total: float, message: str = "") -> None:
        now = time.monotonic()
        if not (total and done >= total) and now - last[0] < interval_s:
            return
        last[0] = now
        progress(done, total, message)

    return report


def eta_text(done: float, total: float, elapsed_s: float) -> str:
    """``", about 12 s left"`` from the pace so far (empty when done or nothing was done yet)."""
    if done <= 0 or done >= total:
        return ""
    return f", about {elapsed_s / done * (total - done):.0f} s left"
