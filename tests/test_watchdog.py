"""The stall watchdog's own numbers (tests/watchdog.py): a failing stall test is only as useful
as what its report says about whom the GUI thread waited for."""

from __future__ import annotations

import sys
import threading
import time

import pytest
from pytestqt.qtbot import QtBot
from watchdog import Watchdog

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="schedstat is Linux's")


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def _stall(qtbot: QtBot, dog: Watchdog, block) -> None:  # type: ignore[no-untyped-def]
    """Let the heartbeat run, call ``block`` on the GUI thread, let it tick again."""
    # a first gap may be an earlier test's widgets being deleted: start from a steady heartbeat
    qtbot.waitUntil(lambda: dog._baseline is not None and len(dog.gaps) > 3 and dog.gaps[-1].ms < 20, timeout=10_000)
    with dog.phase("stall"):
        block()
        qtbot.waitUntil(lambda: len(dog.gaps) > 0 and dog.gaps[-1].ms < 100, timeout=10_000)


@linux_only
def test_a_stall_of_the_gui_threads_own_work_is_counted_and_named(qtbot: QtBot) -> None:
    dog = Watchdog().start()
    try:
        _stall(qtbot, dog, lambda: _spin(0.4))
    finally:
        dog.stop()
    gap = max((g for g in dog.gaps if g.phase == "stall"), key=lambda g: g.ms)
    assert gap.ms >= 350 and gap.phase == "stall"
    gui = threading.main_thread().native_id
    assert f":{gui} cpu" in gap.threads, gap.threads  # the GUI thread itself was the busy one
    assert "stall" in dog.report() and f":{gui}" in dog.report()


def test_a_gap_counts_the_gui_threads_work_whole_and_its_waits_for_a_cpu_not() -> None:
    from watchdog import Gap

    # blocked 240 ms on a thread that waited 120 ms for a CPU: those 120 ms are the machine's load
    blocked = Gap("p", 0.0, ms=300.0, waited_ms=50.0, cpu_ms=10.0, helpers_waited_ms=120.0)
    assert blocked.blocked_ms == pytest.approx(240.0) and blocked.own_ms == pytest.approx(130.0)
    # a GUI thread that computes: its work counts whole, however long other threads waited
    busy = Gap("p", 0.0, ms=300.0, waited_ms=0.0, cpu_ms=290.0, helpers_waited_ms=200.0)
    assert busy.own_ms == pytest.approx(290.0)
    # a short gap (no per-thread figures): only the GUI thread's own wait is taken off
    short = Gap("p", 0.0, ms=60.0, waited_ms=20.0, helpers_waited_ms=500.0)
    assert short.own_ms == pytest.approx(40.0)


@linux_only
def test_a_gui_thread_blocked_on_a_thread_that_waits_for_a_cpu_is_told_less_that_wait(qtbot: QtBot) -> None:
    """A helper thread shares one CPU with a busy process while the GUI thread waits for it: the
    helper's run-queue time is seen, and it is taken off the gap, but not the helper's own work."""
    import os
    import subprocess

    cpu = min(os.sched_getaffinity(0))
    hog = subprocess.Popen([sys.executable, "-c", f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"])
    dog = Watchdog().start()
    work = {"cpu_s": 0.0}
    go, done, leave = threading.Event(), threading.Event(), threading.Event()

    def helper() -> None:
        os.sched_setaffinity(0, {cpu})  # this thread only: Linux takes a thread's own id for 0
        go.wait()
        t0 = time.thread_time()
        x = 0
        while time.thread_time() - t0 < 0.2:  # 200 ms of CPU, in a queue with the hog
            x += 1
        work["cpu_s"] = time.thread_time() - t0
        done.set()
        leave.wait()  # alive until the gap is read: a thread that has ended is gone from /proc

    t = threading.Thread(target=helper, name="helper", daemon=True)
    t.start()

    def block() -> None:
        go.set()
        done.wait()

    try:
        _stall(qtbot, dog, block)
    finally:
        leave.set()
        dog.stop()
        hog.kill()
        hog.wait()
        t.join()
    gap = max((g for g in dog.gaps if g.phase == "stall"), key=lambda g: g.ms)
    assert gap.cpu_ms is not None, gap.threads
    assert gap.helpers_waited_ms >= 50, gap.threads  # it shared its CPU with the hog
    # told less the helper's wait, not less its work: the 200 ms it computed stay the app's
    assert gap.own_ms < gap.ms - 40 and gap.own_ms >= 1000 * work["cpu_s"] - 50, (gap, gap.threads)
