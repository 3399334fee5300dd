"""Model comparison in the app: 2-4 predictions side by side (linked slice and 3D views,
difference overlays), the metrics table over cases and models with the paper's plots,
exports, and `airway compare` output folders reopened.

``install_compare(window)`` adds the Compare tab and two Tools menu actions.
"""

from __future__ import annotations

from typing import Any

from app.compare.layout import CompareLayout, ComparePane, LinkedSliceView
from app.compare.metrics import CompareMetrics
from app.compare.state import BlankCT, CompareState, PaneCase, PaneEntry
from app.compare.tab import CompareTab

__all__ = [
    "BlankCT",
    "CompareLayout",
    "CompareMetrics",
    "ComparePane",
    "CompareState",
    "CompareTab",
    "LinkedSliceView",
    "PaneCase",
    "PaneEntry",
    "install_compare",
]


def install_compare(window: Any) -> CompareTab:
    """The Compare tab in ``window.tabs``; Tools > "Open compare results…" and
    "Compare this case's predictions side by side"."""
    from PySide6.QtGui import QAction
    from PySide6.QtWidgets import QFileDialog

    tab = CompareTab(window, track_job=window.track_job, report_error=window.report_error)
    window.compare_tab = tab
    window.tabs.addTab(tab, "Compare")

    def open_results() -> None:
        d = QFileDialog.getExistingDirectory(window, "Open an `airway compare` output folder")
        if d:
            try:
                tab.open_folder(d)
            except Exception as exc:  # noqa: BLE001 - one dialog, as every user error
                window.report_error(exc)
                return
            window.tabs.setCurrentWidget(tab)

    def compare_current() -> None:
        compare_case_predictions(window)

    menu = window.tools_menu
    menu.addSeparator()
    a1 = QAction("Open compare results\u2026", window)
    a1.setObjectName("compareOpenResults")
    a1.triggered.connect(open_results)
    a2 = QAction("Compare this case's predictions side by side", window)
    a2.setObjectName("compareCasePredictions")
    a2.triggered.connect(compare_current)
    menu.addAction(a1)
    menu.addAction(a2)
    window.compare_actions = {"open": a1, "case": a2}
    return tab


def compare_case_predictions(window: Any) -> bool:
    """Put the review case's CT, reference and first 4 predictions into the Compare tab."""
    from core.errors import InputError

    case = window.case
    if case.ct is None or len(case.predictions) < 2 and case.reference is None or not case.predictions:
        window.report_error(
            InputError("Nothing to compare yet.", "Open a CT with two or more predictions (or one and a reference).")
        )
        return False
    entries = [PaneEntry(p.name, p.label, p.probabilities, p.metrics, p.regions, p.path) for p in case.predictions[:4]]
    tab = window.compare_tab
    tab.set_case(case.ct.name if getattr(case.ct, "name", "") else "case", entries, case.reference, case.ct)
    window.tabs.setCurrentWidget(tab)
    return True
