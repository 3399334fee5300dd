"""Save and next case on ATM'22-size cases: how long Ctrl+] takes, with and without the pre-load.

Builds an ATM'22-shaped dataset in a temporary folder from ../shared/data/atm22 (label-only:
``labelsTr/ATM_90x_0000.nii.gz`` -> preds_YangLab's 388 x 512 x 512 mask, ``preds_timi/`` the
prediction folder; three case names, symlinks), opens it in the real window, and presses the keys
as a reviewer does (pick an FP region, A, Ctrl+] / Ctrl+[) with the analysis of each case done
before the next key, as after a review.

Prints per switch: key -> case shown (layers in the window, views painted), the GUI thread's longest
stall during it (tests/watchdog.py's 20 ms heartbeat), and key -> figures ready (the new case's
analysis, which runs in the background and is not part of the switch).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_dataset_switch.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "atm22"
CASES = ("ATM_901", "ATM_902", "ATM_903")


def build(folder: Path) -> None:
    (folder / "labelsTr").mkdir(parents=True)
    (folder / "preds_timi").mkdir()
    for c in CASES:
        os.symlink(DATA / "preds_YangLab" / "ATM_305_0000.nii.gz", folder / "labelsTr" / f"{c}_0000.nii.gz")
        os.symlink(DATA / "preds_timi" / "ATM_305_0000.nii.gz", folder / "preds_timi" / f"{c}_0000.nii.gz")


def main() -> int:
    if not (DATA / "preds_YangLab" / "ATM_305_0000.nii.gz").exists():
        print("needs ../shared/data/atm22", file=sys.stderr)
        return 2
    os.environ.setdefault("AIRWAY_STUDIO_RECOVERY_DIR", tempfile.mkdtemp(prefix="airway-recovery-"))
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    app.setStyle("Fusion")
    from app.main_window import MainWindow, apply_theme
    from app.settings import Settings
    from tests.watchdog import Watchdog
    from tests.window_keys import analysed_and_idle

    apply_theme(app)

    def spin(cond, timeout: float = 600.0) -> None:
        end = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > end:
                raise TimeoutError("the window did not get there in time")
            app.processEvents()
            time.sleep(0.002)

    with tempfile.TemporaryDirectory(prefix="bench-dataset-") as tmp:
        folder = Path(tmp) / "atm22"
        build(folder)
        settings = Settings(ephemeral=True)
        settings.set_reviewer("bench")
        w = MainWindow(settings=settings, training_tab=False)
        w.error_handler = lambda _p, exc, *a, **k: print(f"ERROR: {exc}", file=sys.stderr)
        w.resize(1440, 900)
        w.show()
        ctl = w.dataset
        shown: list[str] = []
        ctl.caseOpened.connect(shown.append)
        dog = Watchdog().start()

        def idle() -> None:
            spin(lambda: analysed_and_idle(w))

        def key(k: Qt.Key, mods: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> None:
            w.activateWindow()
            spin(w.isActiveWindow, 10)
            QTest.keyClick(w.views["axial"], k, mods)

        def switch(label: str, step: int, edit: bool) -> None:
            idle()
            if ctl.prefetch_enabled and step > 0:
                spin(lambda: ctl._prefetch is not None and ctl._prefetch.result is not None)
            if edit:  # as a reviewer does: pick an FP region (a click in the 3D view selects it), A
                regs = w.case.regions()
                fp = max((i for i, r in enumerate(regs) if r.kind == "FP"), key=lambda i: regs[i].voxels)
                w.case.active_region = fp
                w.case.activeRegionChanged.emit(fp)
                key(Qt.Key.Key_A)
                spin(lambda: w.case.session.reference.modified, 10)
            n = len(shown)
            with dog.phase(label) as ph:
                t0 = time.perf_counter()
                key(
                    Qt.Key.Key_BracketRight if step > 0 else Qt.Key.Key_BracketLeft, Qt.KeyboardModifier.ControlModifier
                )
                spin(lambda: len(shown) > n)
                for v in w.views.values():
                    v.repaint()
                app.processEvents()
                t_shown = time.perf_counter() - t0
            idle()
            t_fig = time.perf_counter() - t0
            print(
                f"{label:<48} {shown[-1]}: shown {t_shown:5.2f} s   longest GUI stall {ph.longest_ms:5.0f} ms   "
                f"figures ready {t_fig:5.1f} s"
            )

        with dog.phase("open dataset"):
            job = ctl.open_dataset(folder)
            spin(lambda: job.state == "done" and ctl.dataset is not None)
        t0 = time.perf_counter()
        with dog.phase("first case") as ph:
            ctl.open_case(CASES[0])
            spin(lambda: bool(shown))
        print(f"dataset {folder.name}: {len(ctl.dataset.cases)} cases of {w.case.shape} voxels (label only)")
        print(
            f"{'first case (cold)':<48} {shown[-1]}: shown {time.perf_counter() - t0:5.2f} s   "
            f"longest GUI stall {ph.longest_ms:5.0f} ms"
        )
        switch("Ctrl+] with prefetch, edited (label written)", 1, edit=True)
        switch("Ctrl+] with prefetch, no edit", 1, edit=False)
        switch("Ctrl+[ back to the case left (in memory)", -1, edit=False)
        ctl.prefetch_enabled = False
        ctl._drop_prefetch()
        ctl._previous = None
        switch("Ctrl+[ without prefetch, no edit", -1, edit=False)
        switch("Ctrl+] without prefetch, edited (label written)", 1, edit=True)
        dog.stop()
        print("\nwatchdog:\n" + dog.report(top=0, min_ms=150))
        # what the GUI thread did during each switch's stalls (sampled stacks, most often first)
        for (phase, stack), n in dog.samples.most_common():
            if phase.startswith("Ctrl") and n >= 2:
                print(f"[{phase}] ~{n * dog.sample_every_ms:.0f} ms in\n    {stack}")
        w.case.session.discard_recovery()
        w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
