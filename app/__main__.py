"""GUI entry point: ``airway-studio [CT] [--reference R] [--prediction P ...]`` (the CT is optional).

Also ``--demo`` (the phantom demo case), ``--project F``, ``--dataset DIR`` (a worklist) and ``--screenshot
FILE`` (open the case, render every view, save one PNG of the window, exit).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow


def build_parser() -> argparse.ArgumentParser:
    import core

    p = argparse.ArgumentParser(
        prog="airway-studio", description="Airway Studio: review airway segmentations of chest CT."
    )
    p.add_argument("ct", nargs="?", metavar="CT", help="CT volume file or DICOM series folder")
    p.add_argument("--reference", "-r", metavar="LABEL", help="reference airway label on the CT's grid")
    p.add_argument(
        "--label-selector",
        metavar="SEL",
        default=None,
        help="which reference values are airway: nonzero (default), value:N, bits:SHIFT:N (CIP maps: bits:8:2)",
    )
    p.add_argument(
        "--prediction",
        "-p",
        metavar="PRED",
        nargs="+",
        default=[],
        action="extend",
        help="one or more predictions (masks or probability maps)",
    )
    p.add_argument("--demo", action="store_true", help="open the phantom demo case (simulated prediction)")
    p.add_argument("--project", metavar="F", help="open a saved project (.json)")
    p.add_argument("--dataset", metavar="DIR", help="open a dataset folder or CSV manifest as a worklist of its cases")
    p.add_argument("--screenshot", metavar="FILE", help="open the case, save a PNG of the whole window and exit")
    p.add_argument("--size", metavar="WxH", default=None, help="window size, e.g. 1600x1000 (screenshots)")
    p.add_argument("--version", action="version", version=f"Airway Studio {core.__version__}")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)

    from PySide6.QtWidgets import QApplication

    from app.dialogs import APP_NAME
    from app.settings import Settings

    existing = QApplication.instance()
    app = (
        existing if isinstance(existing, QApplication) else QApplication([sys.argv[0] if sys.argv else "airway-studio"])
    )
    app.setApplicationName(APP_NAME)
    app.setOrganizationName("AirwayStudio")
    app.setDesktopFileName("airway-studio")  # matches installer/linux/airway-studio.desktop
    from PySide6.QtGui import QIcon

    from core.resources import resource_path

    app.setWindowIcon(QIcon(str(resource_path("icons", "airway_studio.svg"))))
    app.setStyle("Fusion")
    from app.main_window import MainWindow, apply_theme

    apply_theme(app)
    settings = Settings(ephemeral=bool(args.screenshot))
    window = MainWindow(settings=settings)
    if args.size:
        try:
            w, h = (int(v) for v in args.size.lower().split("x"))
            window.resize(w, h)
        except ValueError:
            print(f"airway-studio: error: --size {args.size!r} is not WxH (e.g. 1600x1000)", file=sys.stderr)
            return 2
    elif args.screenshot:
        window.resize(1600, 1000)
    window.show()

    if args.screenshot:
        # no dialog may block a headless run: errors are printed instead
        def report(_parent: Any, exc: BaseException | str, details: str | None = None, title: str = "") -> None:
            print(f"airway-studio: error: {title + ': ' if title else ''}{exc}", file=sys.stderr)

        window.error_handler = report
    job = None
    if args.dataset:  # the worklist; a case given too opens beside it
        job = window.dataset.open_dataset(args.dataset)
    if args.project:
        job = window.open_project(args.project)
    elif args.demo:
        job = window.open_demo()
    elif args.ct or args.reference or args.prediction:
        # no CT: a label-only case (neutral background; metrics, regions and 3D work)
        job = window.open_files(args.ct, args.reference, args.prediction, args.label_selector)

    if args.screenshot:
        return _screenshot(app, window, job, args.screenshot)
    return app.exec()


def _screenshot(app: QApplication, window: MainWindow, job: Any, path: str) -> int:
    """Wait for loading and analysis, let views settle, grab, save, quit."""
    import time

    from PySide6.QtCore import QEventLoop

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        if job is not None and job.state in ("failed", "cancelled"):  # a failed load: nothing to show
            print(f"airway-studio: error: {job.exception}", file=sys.stderr)
            window.error_handler = lambda *a, **k: None  # said once
            window.close()
            return 2
        if (job is None or not job.running) and not window.busy and not window.case.busy:
            break
        time.sleep(0.02)
    for _ in range(10):  # let layouts, panels and the 3D view settle
        app.processEvents()
        time.sleep(0.02)
    out = window.save_screenshot(path)
    print(f"Saved {out}")
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
