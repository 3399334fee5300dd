"""Jobs that wait (a child process, the disk) never leave another job queued behind them."""

from __future__ import annotations

import threading

from jobs import run_job_and_wait

from app.workers import MIN_JOB_THREADS, Job


def _wait_for(event: threading.Event, *, progress=None, cancel=None) -> str:
    while not event.wait(0.05):
        if cancel is not None and cancel.is_set():
            return "cancelled"
    return "released"


def _quick(*, progress=None, cancel=None) -> int:
    return 42


def test_a_short_job_runs_while_long_ones_hold_threads(qtbot):
    """On a 2-core machine Qt's pool has 2 threads: two long jobs (a region growing, a comparison)
    left a re-analysis queued until one of them ended."""
    release = threading.Event()
    long_jobs = [Job(_wait_for, release, name=f"long {i}") for i in range(MIN_JOB_THREADS - 1)]
    try:
        for job in long_jobs:
            job.start()
        qtbot.waitUntil(lambda: all(j.running for j in long_jobs), timeout=10000)
        quick = Job(_quick, name="quick")
        done = run_job_and_wait(qtbot, quick.start, until=quick.result, timeout=30000)
        assert done.args == [42]
        assert not release.is_set() and all(j.running for j in long_jobs)  # they still hold their threads
    finally:
        release.set()
        for job in long_jobs:
            assert job.wait(30)
