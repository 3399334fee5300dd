"""Start a job with its signals already connected: the only way tests wait on a job.

A job's signals are emitted from its worker thread. Qt queues a cross-thread
emission only to the connections that exist *at that moment*, so a test that
connects (or opens ``qtbot.waitSignal``) after ``start()`` misses whatever a
fast job emitted before: progress lost, or a wait that runs into its timeout
on a loaded machine. :func:`run_job_and_wait` takes the signals and the call
that starts the job, connects first, then calls it::

    run = GrowingRun(case)
    done = run_job_and_wait(qtbot, run.start, until=run.ended, record={"progress": run.progress})
    assert any("growing" in m for _, _, m in done.recorded["progress"])

The same holds for any action whose effect arrives as a signal (a Cancel
click, a menu action that starts a run): pass the click as ``start``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Started:
    """What :func:`run_job_and_wait` saw: ``value`` (what ``start`` returned), ``args`` (the
    arguments of the ``until`` signal that ended the wait) and ``recorded`` (per name, the
    argument tuples of every emission, in order)."""

    value: Any = None
    args: list[Any] = field(default_factory=list)
    recorded: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)


def run_job_and_wait(
    qtbot: Any,
    start: Callable[[], Any],
    *,
    until: Any,
    record: Mapping[str, Any] | None = None,
    timeout: int = 60000,
    raising: bool = True,
) -> Started:
    """Connect ``record``'s signals and wait for ``until`` (a signal), *then* call ``start()``;
    return once ``until`` was emitted (``raising``: fail after ``timeout`` ms)."""
    out = Started(recorded={name: [] for name in (record or {})})
    for name, signal in (record or {}).items():
        signal.connect(lambda *args, _n=name: out.recorded[_n].append(args))
    with qtbot.waitSignal(until, timeout=timeout, raising=raising) as blocker:
        out.value = start()
    out.args = list(blocker.args or [])
    return out
