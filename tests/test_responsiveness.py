"""An annotator's day on a real-size pair never freezes the window (issue 22).

Opens a 388 x 512 x 512 label-only pair in the whole window and goes through it
as a user does, with keys: N, A (on an FP item), R (on an FN item), a brush dab,
undo, redo and save (Ctrl+Alt+S). A 20 ms heartbeat (tests/watchdog.py) records
every gap of the event loop; any gap above 250 ms while opening, navigating,
editing, undoing or saving fails, with the stacks sampled during the stalls. A gap
counts less the time the GUI thread waited for a CPU that other programs held,
directly or blocked on one of the app's threads that waited for one (llvmpipe's
rasterisers in a paint, the GIL's holder; Linux schedstat, tests/watchdog.py),
so the test holds on a loaded machine; the GUI thread's own work counts whole.

The pair is the shared ATM'22 one (211 branches); without ../shared, a generated
pair of that size and about that many branches (app.demo) stands in.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from annotator_day import atm22_available, copy_pair, make_window, run_day
from pytestqt.qtbot import QtBot
from watchdog import Watchdog

STALL_LIMIT_MS = 250.0  # issue 22: the window answers within a quarter second, always

pytestmark = pytest.mark.slow


def _generated_pair(folder: Path) -> tuple[Path, Path]:
    """A reference tree and a simulated prediction (missed branches, a thickened one, a leak)
    at the ATM'22 pair's size and spacing, as label files."""
    from app.demo import DemoParams, make_demo
    from core.io import write_volume

    demo = make_demo(
        DemoParams(shape=(388, 512, 512), spacing=(0.662, 0.662, 0.8), generations=8, omit_distal=1, missed=4)
    )
    ref, pred = folder / "team_a" / "case_0000.nii.gz", folder / "team_b" / "case_0000.nii.gz"
    for vol, path in ((demo.reference, ref), (demo.prediction, pred)):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_volume(vol, path)
    return ref, pred


def _day(qtbot: QtBot, reference: Path, prediction: Path) -> None:
    w = make_window((1280, 800))
    qtbot.addWidget(w)
    dog = Watchdog()
    try:
        day, dog = run_day(w, reference, prediction, dog=dog, timeout_s=300.0)
    finally:
        dog.stop()
        w.case.auto_analyse = False
    assert not day.errors, day.errors
    assert not [n for n in day.notes if "did not change" in n], day.notes
    # shown by pytest -s; the limit holds for the stall less the GUI thread's wait for a CPU, which
    # other programs' load makes (a clean-clone run beside another once saw a 313 ms gap)
    print("longest GUI stall per phase (ms):", {k: round(v) for k, v in day.stalls.items()})
    print("less the wait for a CPU (ms):", {k: round(v) for k, v in day.own_stalls.items()})
    worst = {phase: ms for phase, ms in day.own_stalls.items() if ms > STALL_LIMIT_MS}
    assert not worst, f"GUI stalls above {STALL_LIMIT_MS:.0f} ms: {worst}\n{dog.report()}"


def test_a_day_on_the_atm22_pair_never_stalls_the_window(qtbot: QtBot, tmp_path: Path) -> None:
    if not atm22_available():
        pytest.skip("../shared/data/atm22 is absent (the generated pair test stands in)")
    ref, pred = copy_pair(tmp_path)
    _day(qtbot, ref, pred)


def test_a_day_on_a_generated_real_size_pair_never_stalls_the_window(qtbot: QtBot, tmp_path: Path) -> None:
    if atm22_available() and not os.environ.get("AIRWAY_TEST_GENERATED_PAIR"):
        pytest.skip("the real ATM'22 pair is here (AIRWAY_TEST_GENERATED_PAIR=1 runs this one too)")
    ref, pred = _generated_pair(tmp_path)
    _day(qtbot, ref, pred)
