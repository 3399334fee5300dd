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
