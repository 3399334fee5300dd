"""Opening an `airway compare` folder of a real-size case in the Compare tab: how long until the
case is shown and its reference tree arrives, and the GUI thread's longest stall on the way.

Runs `airway compare` on ../shared/data/atm22 (YangLab's 388 x 512 x 512 mask as the reference,
timi's as the model) into a temporary folder, opens it in the Compare tab as a user does, then
switches the first pane's 3D view to lobe colours. The baseline in the same run hands the
same masks to the panes unprepared (CompareTab.set_case, the direct call scripts use), so their
preparation (prepare_case: sagittal copies, first cursor) runs on the GUI thread, as every case's
did before it moved into the loading job. (Before, the cursor also read the whole volume: the
old route measured 663 ms, 532 ms less the wait for a CPU, on this pair at load 3.5.)

    PYTHONPATH=. xvfb-run -a .venv/bin/python benchmarks/bench_compare_open.py
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "atm22"
REFERENCE = DATA / "preds_YangLab" / "ATM_305_0000.nii.gz"
PREDICTION = DATA / "preds_timi" / "ATM_305_0000.nii.gz"


def main() -> int:
    if not REFERENCE.exists():
        print("needs ../shared/data/atm22", file=sys.stderr)
        return 2
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    from app.compare import CompareTab, PaneEntry
    from app.review.case import Case
    from app.review.view3d import View3D
    from core.cli import main as cli
    from tests.watchdog import Watchdog

    def spin(cond, timeout: float = 600.0) -> None:  # type: ignore[no-untyped-def]
        end = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > end:
                raise TimeoutError("the tab did not get there in time")
            app.processEvents()
            time.sleep(0.002)

    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        root = Path(tmp)
        for name, src in (("ref", REFERENCE), ("timi", PREDICTION)):
            (root / name).mkdir()
            shutil.copy(src, root / name / "ATM_305.nii.gz")
        t0 = time.perf_counter()
        argv = ["compare", "--reference", str(root / "ref"), "--predictions", f"timi={root / 'timi'}"]
        assert cli([*argv, "--out", str(root / "out"), "-q", "--no-snapshots"]) == 0
        print(f"airway compare (1 case, 1 model): {time.perf_counter() - t0:.1f} s")

        # as in the app, where the review's 3D view came first: VTK imported, a render context made
        warm = View3D(Case(auto_analyse=False))
        warm.show()
        tab = CompareTab(with_3d=True)
        tab.resize(1280, 800)
        tab.show()
        spin(lambda: warm.isVisible() and tab.isVisible())
        state = tab.layout_view.state
        dog = Watchdog().start()
        t0 = time.perf_counter()
        with dog.phase("open (prepared in the job)") as opened:
            tab.open_folder(root / "out")
            spin(lambda: state.case_name == "ATM_305")
            shown = time.perf_counter() - t0
            spin(lambda: state.branch_map is not None)
            tree = time.perf_counter() - t0
            v = tab.layout_view.panes[0].view3d
            spin(lambda: v.scene is not None and not v.busy)
        with dog.phase("lobe colours") as lobes:
            t1 = time.perf_counter()
            v.mode_combo.setCurrentIndex(v.mode_combo.findData("lobe"))
            spin(lambda: v.scene is not None and v.scene.mode == "lobe" and not v.busy)
            lobe_s = time.perf_counter() - t1
        # the baseline: the same case handed over unprepared, as the panes were given it before
        raw = [
            PaneEntry(p.name, dataclasses.replace(p.label, array=np.asarray(p.label.array)), path=p.path)
            for p in state.predictions
        ]
        ref = state.reference
        assert ref is not None
        raw_ref = dataclasses.replace(ref, array=np.asarray(ref.array))
        spin(lambda: True)
        with dog.phase("baseline: prepared on the GUI thread") as base:
            t2 = time.perf_counter()
            tab.set_case("ATM_305", raw, raw_ref, None)
            spin(lambda: v.scene is not None and not v.busy)
            base_s = time.perf_counter() - t2
        dog.stop()
        print(f"case shown {shown:.2f} s, its reference tree (from the folder's cache) {tree:.2f} s after open")
        print(f"lobe colours in the first pane: {lobe_s:.2f} s")
        for ph, seconds in ((opened, shown), (base, base_s), (lobes, lobe_s)):
            print(
                f"{ph.name:<40} longest GUI stall {ph.longest_ms:5.0f} ms "
                f"(less the wait for a CPU {ph.longest_own_ms:5.0f} ms), {seconds:.2f} s"
            )
        if opened.longest_own_ms > 0:
            print(
                f"ratio of longest own stalls, baseline / prepared in the job: {base.longest_own_ms / opened.longest_own_ms:.1f}x"
            )
        print("\nwatchdog:\n" + dog.report(top=4, min_ms=150))
        tab.close()
        warm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
