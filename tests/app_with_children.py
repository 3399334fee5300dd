"""The app as ``python -m app CT --reference LABEL`` runs it, plus what a user then does
to start its other child: Tools > Segment with the shipped model.

tests/test_child_processes.py starts this in a subprocess and kills it. Prints
``segmenting`` once the action was triggered.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    import app.review.analysis_runner as runner
    from app.__main__ import main as gui_main

    # a test-size case analysed in the child process, as a real-size case (>= 32 M voxels) is
    assert hasattr(runner, "PROCESS_ANALYSIS_MIN_VOXELS"), "the threshold moved: update this driver"
    runner.PROCESS_ANALYSIS_MIN_VOXELS = 0
    qapp = QApplication.instance() or QApplication(sys.argv[:1])

    def segment_once_open() -> None:
        from app.main_window import MainWindow

        windows = [w for w in qapp.topLevelWidgets() if isinstance(w, MainWindow)]
        if windows and windows[0].case.ct is not None:
            windows[0].action_table["segment_demo"].trigger()
            print("segmenting", flush=True)
        else:
            QTimer.singleShot(100, segment_once_open)

    QTimer.singleShot(100, segment_once_open)
    return gui_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
