"""The ATM'22 pair's reference tree coloured by lobe in the real window's 3D view, saved as a PNG, with the
GUI thread's longest stalls while the colouring switches to lobes and while the right-click menu opens.

Opens ../shared/data/atm22 (YangLab as reference, timi as prediction; 388 x 512 x 512) in the real
MainWindow, waits for the analysis (tree, names, metrics, regions: all in the analysis worker), picks
"Lobes" in the 3D view's colouring combo, right-clicks a named branch in the axial view, and writes the
3D view (legend drawn in) to the path given (default /tmp/anatomy_3d.png). A 20 ms heartbeat on the GUI
thread (tests/watchdog.py) measures the stalls. Needs a display; under X-less shells:

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python benchmarks/anatomy_screenshot.py [OUT.png]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "atm22"


def wait_until(app: object, cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    from PySide6.QtWidgets import QApplication

    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out waiting for {what}")
        QApplication.processEvents()
        time.sleep(0.005)


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path("/tmp/anatomy_3d.png")
    ref_p, pred_p = DATA / "preds_YangLab" / "ATM_305_0000.nii.gz", DATA / "preds_timi" / "ATM_305_0000.nii.gz"
    if not ref_p.exists():
        print("needs ../shared/data/atm22", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT / "tests"))
    import numpy as np
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication
    from watchdog import Watchdog

    from app.main_window import MainWindow
    from app.settings import Settings

    app = QApplication.instance() or QApplication(sys.argv[:1])
    w = MainWindow(settings=Settings(ephemeral=True), training_tab=False)
    w.resize(1600, 1000)
    w.show()
    dog = Watchdog().start()
    t0 = time.perf_counter()
    loaded: list[bool] = []
    w.caseLoaded.connect(lambda: loaded.append(True))
    w.open_files(None, str(ref_p), [str(pred_p)])
    case = w.case
    wait_until(app, lambda: bool(loaded), 300, "the case to load")
    wait_until(
        app,
        lambda: (
            case.active is not None
            and case.active.regions is not None
            and case.session.names.names is not None
            and not case.busy
            and not w.busy
        ),
        600,
        "the analysis",
    )
    names = case.session.names.names
    print(f"opened and analysed in {time.perf_counter() - t0:.1f} s; {len(names.named())} names given")
    view = w.view3d
    wait_until(app, lambda: view.scene is not None and not view.busy, 300, "the first 3D scene")

    with dog.phase("generation") as gens:  # the baseline: a colouring that existed before the names
        combo = view.mode_combo
        combo.setCurrentIndex(combo.findData("generation"))
        wait_until(
            app, lambda: view.scene is not None and view.scene.mode == "generation" and not view.busy, 300, "gens"
        )
        app.processEvents()
    print(f"3D colouring -> generations (baseline): longest GUI stall {gens.longest_ms:.0f} ms")
    with dog.phase("lobes") as lobes:
        t = time.perf_counter()
        combo = view.mode_combo
        combo.setCurrentIndex(combo.findData("lobe"))  # what a pick in the combo's list does
        wait_until(app, lambda: view.scene is not None and view.scene.mode == "lobe" and not view.busy, 300, "lobes")
        app.processEvents()
        lobe_s = time.perf_counter() - t
    print(f"3D colouring -> lobes: {lobe_s:.1f} s until shown; longest GUI stall {lobes.longest_ms:.0f} ms")
    print("legend:", ", ".join(name for name, _ in view.scene.legend))

    # right click on the RB6 (else any named segmental bronchus) in the axial view
    tree = case.tree
    target = next((n for n in ("RB6", "LB6", "RB1", "RLL") if names.branches_named(n)), None)
    assert target is not None
    bid = names.branches_named(target)[0]
    pts = tree.centreline_zyx[tree.centreline_branch == bid]
    z, y, x = (int(v) for v in pts[np.argmin(((pts - pts.mean(axis=0)) ** 2).sum(axis=1))])
    axial = w.views["axial"]
    case.set_cursor((z, y, x))
    # the crosshair's move is drawn in 3D by a timer (one software-rendered frame): not part of the menu
    wait_until(app, lambda: not view._render_timer.isActive(), 30, "the 3D frame")
    settle = time.monotonic() + 0.5
    wait_until(app, lambda: time.monotonic() > settle, 5, "a quiet moment")
    with dog.phase("menu") as menu_phase:
        pos = axial.voxel_to_widget((z, y + 0.5, x + 0.5)).toPoint()
        t = time.perf_counter()
        QTest.mouseClick(axial, Qt.MouseButton.RightButton, Qt.KeyboardModifier.NoModifier, pos)
        click_ms = (time.perf_counter() - t) * 1000
        wait_until(app, lambda: axial.context_menu is not None and axial.context_menu.isVisible(), 30, "the menu")
        app.processEvents()
    menu = axial.context_menu
    assert menu is not None
    print(
        f"right-click menu on {target} ({menu.actions()[0].text()}): longest GUI stall {menu_phase.longest_ms:.0f} ms "
        f"(the click handler, menu built and shown: {click_ms:.0f} ms)"
    )
    with dog.phase("dialog") as dialog_phase:
        menu.actions()[0].trigger()
        wait_until(app, lambda: getattr(w, "naming_dialog", None) is not None, 30, "the dialog")
        app.processEvents()
    print(f"Name... dialog opened: longest GUI stall {dialog_phase.longest_ms:.0f} ms")
    w.naming_dialog.reject()
    menu.close()

    view.camera_preset("anterior")
    path = view.save_screenshot(out, scale=2)
    print(f"saved {path}")
    dog.stop()
    print("what the GUI thread did in stalls of 100 ms or more:")
    print(dog.report(top=4))
    w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
