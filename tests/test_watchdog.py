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
    # its CPU time is read: a spin is on a CPU or waiting for one, never blocked (the spin is 400 ms of
    # wall time, of which a loaded machine may give it only part on a CPU)
    assert gap.cpu_ms is not None and gap.cpu_ms + gap.waited_ms >= 300, gap
    # and it counts whole: nothing but its own wait for a CPU comes off (the per-thread snapshot may
    # start up to a sampler period before the gap: a few ms of slack)
    assert gap.own_ms >= gap.ms - gap.waited_ms - 30.0, gap
    assert "stall" in dog.report() and f":{gui}" in dog.report()


def test_a_gap_counts_the_gui_threads_work_whole_and_its_waits_for_a_cpu_not() -> None:
    from watchdog import Gap

    # blocked 240 ms on a thread that computed 60 ms and waited 120 ms for a CPU: the wait is the load's
    blocked = Gap("p", 0.0, ms=300.0, waited_ms=50.0, cpu_ms=10.0, helper_ms=(60.0, 120.0))
    assert blocked.blocked_ms == pytest.approx(240.0) and blocked.own_ms == pytest.approx(130.0)
    # blocked 316 ms on a thread that computed 100 ms and waited 338 (a stall test's real gap): the
    # 100 ms it computed stay the app's
    hog = Gap("p", 0.0, ms=348.0, waited_ms=24.0, cpu_ms=8.0, helper_ms=(100.0, 338.0))
    assert hog.own_ms == pytest.approx(108.0)
    # a GUI thread that computes: its work counts whole, however long other threads waited
    busy = Gap("p", 0.0, ms=300.0, waited_ms=0.0, cpu_ms=290.0, helper_ms=(0.0, 200.0))
    assert busy.own_ms == pytest.approx(290.0)
    # a short gap (no per-thread figures): only the GUI thread's own wait is taken off
    short = Gap("p", 0.0, ms=60.0, waited_ms=20.0, helper_ms=(0.0, 500.0))
    assert short.own_ms == pytest.approx(40.0)
