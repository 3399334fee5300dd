"""An annotator's day on a real-size pair, driven through keys, measured by the watchdog.

Shared by ``tests/test_responsiveness.py`` (fails on a stall above the limit)
and ``benchmarks/bench_annotator_day.py`` (prints the figures). The pair is the
shared ATM'22 one (YangLab as reference, timi as prediction: 388 x 512 x 512,
211 branches), copied to a scratch folder first: a save writes next to the
reference, and ../shared is read-only.
"""

from __future__ import annotations

import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication
from watchdog import Watchdog

ATM22 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "atm22"
REFERENCE = ATM22 / "preds_YangLab" / "ATM_305_0000.nii.gz"
PREDICTION = ATM22 / "preds_timi" / "ATM_305_0000.nii.gz"


def atm22_available() -> bool:
    return REFERENCE.is_file() and PREDICTION.is_file()


def copy_pair(folder: Path) -> tuple[Path, Path]:
    """The shared pair in ``folder`` (own team folders: both files have one name)."""
    out = []
    for src in (REFERENCE, PREDICTION):
        dst = folder / src.parent.name / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        out.append(dst)
    return out[0], out[1]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def wait_until(cond: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Run the event loop until ``cond()``; seconds it took. Raises TimeoutError naming ``what``."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"{what}: not reached in {timeout_s:.0f} s")
        QApplication.processEvents()
        time.sleep(0.005)
    return time.monotonic() - t0


def settle(seconds: float = 0.15) -> None:
    """Let queued work (paints, timers) run for a moment."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        QApplication.processEvents()
        time.sleep(0.005)


@dataclass
class Day:
    """Figures of one run (ms unless named otherwise)."""

    usable_s: float = 0.0
    settled_s: float = 0.0
    n_ms: list[float] = field(default_factory=list)
    stalls: dict[str, float] = field(default_factory=dict)  # phase -> longest GUI gap
    # phase -> longest GUI gap less the GUI thread's wait for a CPU (tests/watchdog.py: Gap.own_ms)
    own_stalls: dict[str, float] = field(default_factory=dict)
    reanalysis_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    notes: list[str] = field(default_factory=list)


def make_window(size: tuple[int, int] = (1280, 800)) -> Any:
    from app.main_window import MainWindow
    from app.settings import Settings

    w = MainWindow(settings=Settings(ephemeral=True))
    w.resize(*size)
    w.show()
    w.activateWindow()
    # window shortcuts (N, A, R...) need the active window
    wait_until(w.isActiveWindow, 10.0, "the window active")
    return w


def usable(w: Any) -> bool:
    """Navigator filled and the slice views drawn."""
    case = w.case
    act = case.active
    if act is None or act.regions is None or w.panels.regions.proxy.rowCount() == 0:
        return False
    return all(getattr(v, "_last", None) is not None for v in slice_views(w))


def slice_views(w: Any) -> list[Any]:
    return [v for v in w.views.values() if v.isVisible()]


def idle(w: Any) -> bool:
    return not w.case.stale and not w.case.busy and not w.busy


def press(w: Any, key: Qt.Key, mods: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> float:
    """A key on the window as a user types it; ms until its handler returned and the views repainted."""
    t0 = time.perf_counter()
    QTest.keyClick(w, key, mods)
    QApplication.processEvents()
    return (time.perf_counter() - t0) * 1000.0


def step_to_kind(w: Any, kind: str, dog: Watchdog, day: Day, tries: int = 40) -> bool:
    """The navigator's kind filter on FP (or FN), as a user picks it, then N until the
    selected item is one that A (or R) applies to."""
    combo = w.panels.regions.filter_combo
    combo.setCurrentIndex(combo.findData(kind))
    QApplication.processEvents()
    for _ in range(tries):
        day.n_ms.append(press(w, Qt.Key.Key_N))
        regs = w.case.regions()
        i = w.case.active_region
        if 0 <= i < len(regs) and regs[i].kind == kind:
            return True
    return False


def run_day(
    w: Any,
    reference: Path,
    prediction: Path,
    *,
    timeout_s: float = 240.0,
    dog: Watchdog | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> tuple[Day, Watchdog]:
    """Open, N, A, R, brush dab, undo, redo, save: the stall of each, through keys."""
    day = Day()
    errors: list[str] = []
    w.error_handler = lambda _parent, exc, *_a, **_k: errors.append(f"{type(exc).__name__}: {exc}")
    dog = dog or Watchdog()
    dog.start()
    case = w.case

    with dog.phase("open"):
        t0 = time.monotonic()
        w.open_files(None, str(reference), [str(prediction)])
        wait_until(lambda: usable(w) or bool(errors), timeout_s, "usable")
        day.usable_s = time.monotonic() - t0
        log(f"usable after {day.usable_s:.1f} s")
    with dog.phase("settle"):
        wait_until(lambda: idle(w) or bool(errors), timeout_s, "analysis and 3D done")
        day.settled_s = time.monotonic() - t0
        settle(0.3)
        log(f"settled after {day.settled_s:.1f} s")

    views = slice_views(w)
    axial = next((v for v in views if v.orientation == "axial"), views[0])
    axial.setFocus()

    with dog.phase("N"):
        for _ in range(5):
            day.n_ms.append(press(w, Qt.Key.Key_N))
            settle(0.05)

    def edit(name: str, key: Qt.Key, mods: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> None:
        rev = case.revision("reference")
        with dog.phase(name):
            press(w, key, mods)
            settle(0.1)
        if case.revision("reference") == rev:
            day.notes.append(f"{name}: the reference did not change")
        with dog.phase(f"{name} re-analysis"):
            t = time.monotonic()
            wait_until(lambda: idle(w) or bool(errors), timeout_s, f"re-analysis after {name}")
            day.reanalysis_s.append(time.monotonic() - t)
            settle(0.2)
        log(f"{name}: stall {dog.longest(name):.0f} ms, re-analysis {day.reanalysis_s[-1]:.1f} s")

    with dog.phase("N"):
        found = step_to_kind(w, "FP", dog, day)
    if found:
        edit("A", Qt.Key.Key_A)
    else:
        day.notes.append("no FP item reached with N")
    with dog.phase("N"):
        found = step_to_kind(w, "FN", dog, day)
    if found:
        edit("R", Qt.Key.Key_R)
    else:
        day.notes.append("no FN item reached with N")

    # a brush dab on the reference at the crosshair, in the axial view
    press(w, Qt.Key.Key_B)
    pos = axial.voxel_to_widget(case.cursor)
    rev = case.revision("reference")
    with dog.phase("brush"):
        QTest.mouseClick(
            axial, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(int(pos.x()), int(pos.y()))
        )
        QApplication.processEvents()
        settle(0.1)
    press(w, Qt.Key.Key_B)
    if case.revision("reference") == rev:
        day.notes.append("brush: the reference did not change")
    with dog.phase("brush re-analysis"):
        t = time.monotonic()
        wait_until(lambda: idle(w) or bool(errors), timeout_s, "re-analysis after the brush")
        day.reanalysis_s.append(time.monotonic() - t)
        settle(0.2)

    edit("undo", Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    edit("redo", Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)

    with dog.phase("save"):
        press(w, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier)
        wait_until(lambda: idle(w) or bool(errors), timeout_s, "save")
        settle(0.2)

    dog.stop()
    for ph in ("open", "settle", "N", "A", "A re-analysis", "R", "R re-analysis", "brush", "brush re-analysis"):
        day.stalls[ph], day.own_stalls[ph] = dog.longest(ph), dog.longest_own(ph)
    for ph in ("undo", "undo re-analysis", "redo", "redo re-analysis", "save"):
        day.stalls[ph], day.own_stalls[ph] = dog.longest(ph), dog.longest_own(ph)
    day.errors = errors
    day.peak_rss_mb = peak_rss_mb()
    return day, dog
