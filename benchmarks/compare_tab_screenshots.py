"""Screenshots of the Compare tab in the main window at 1024x700 and 1920x1080, for a person to look at.

    python benchmarks/compare_tab_screenshots.py OUT_FOLDER_OF_AIRWAY_COMPARE SHOTS_DIR [--case CASE]

Opens the `airway compare` folder in the app's Compare tab (3D panes when a display allows),
waits for the panes and plots, and saves ``compare_<W>x<H>_<tab>.png`` for the per-case table and
the plots (widget.grab()). Run it under Xvfb when there is no display (xvfb-run -a ...).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("shots", type=Path)
    ap.add_argument("--case")
    a = ap.parse_args(argv)

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    from app.main_window import MainWindow
    from app.settings import Settings

    def spin(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            app.processEvents()
            time.sleep(0.01)

    w = MainWindow(settings=Settings(ephemeral=True), training_tab=False)
    tab = w.compare_tab
    w.show()
    a.shots.mkdir(parents=True, exist_ok=True)
    for size in ((1024, 700), (1920, 1080)):
        w.resize(*size)
        w.tabs.setCurrentWidget(tab)
        spin(0.3)
        tab.open_folder(a.out)
        if a.case:
            tab.open_case(a.case)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60 and not tab.layout_view.panes:
            spin(0.1)
        spin(3.0)  # 3D surfaces are built in jobs
        tab.layout_view.zoom_to_airway()
        for name, page in (("per_case", tab.metrics.per_case), ("plots", tab.metrics.plot_view)):
            tab.metrics.tabs.setCurrentWidget(page)
            spin(0.5)
            path = a.shots / f"compare_{size[0]}x{size[1]}_{name}.png"
            w.grab().save(str(path))
            print(path)
    w.cancel_jobs()
    return 0


if __name__ == "__main__":
    sys.exit(main())
