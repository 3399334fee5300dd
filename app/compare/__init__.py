"""Model comparison in the app: 2-4 predictions side by side (linked slice and 3D views,
difference overlays), the metrics table over cases and models with the paper's plots,
exports, and `airway compare` output folders reopened.

``install_compare(window)`` adds the Compare tab and two Tools menu actions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.compare.layout import CompareLayout, ComparePane, LinkedSliceView
from app.compare.metrics import CompareMetrics
from app.compare.state import BlankCT, CompareState, PaneCase, PaneEntry, ReferenceTree
from app.compare.tab import CompareTab
from core.compare.batch import CompareResult

if TYPE_CHECKING:
    from app.review.case import Case

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
    "ReferenceTree",
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
            # read in a job: errors reach window.report_error (the tab's), as every user error
            window.tabs.setCurrentWidget(tab)
            tab.open_folder_in_background(d)

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


def review_result(window: Any, case_name: str) -> CompareResult:
    """The review's computed metrics as a one-case :class:`CompareResult` (the numbers `airway evaluate`
    gives for these files: one scoring, core.metrics with the commands' defaults). A prediction whose
    metrics are not computed yet, or are stale after an edit, is named in ``notes``, not shown empty."""
    from core.compare.batch import CaseRow, metrics_record

    case: Case = window.case
    preds = case.predictions[:4]
    result = CompareResult(models=[p.name for p in preds], cases=[case_name])
    ref_path = case.reference_path or ""
    for i, p in enumerate(preds):
        stale = case.session.is_stale(i)
        if p.metrics is None or stale:
            why = p.analysis_error or ("edited since it was analysed" if stale else "not analysed yet")
            result.notes.append(f"{p.name}: no metrics ({why}); the review shows them once the analysis ends.")
            continue
        record = metrics_record(p.metrics)
        scores = case.anatomy_scores(i)  # under the review's names, corrections included
        if scores is not None:
            record["anatomy"] = scores.as_dict()
        result.rows.append(CaseRow(case_name, p.name, record, ref_path, str(p.path or "")))
    if case.reference is None:
        result.notes.append("No reference: the panes show where the predictions differ; there are no metrics.")
    return result


def compare_case_predictions(window: Any) -> bool:
    """Put the review case's CT, reference and first 4 predictions into the Compare tab, with the
    metrics the review computed (tables, plots, cases and models listed)."""
    from core.errors import InputError

    case: Case = window.case
    if case.ct is None or len(case.predictions) < 2 and case.reference is None or not case.predictions:
        window.report_error(
            InputError("Nothing to compare yet.", "Open a CT with two or more predictions (or one and a reference).")
        )
        return False
    entries = [PaneEntry(p.name, p.label, p.probabilities, p.metrics, p.regions, p.path) for p in case.predictions[:4]]
    name = case.ct.name or "case"
    tab = window.compare_tab
    tree = None
    if case.reference is not None and case.branch_map is not None:
        # the branch map is replaced, not edited, when the review parses again: this one stays as shown
        tree = ReferenceTree(case.branch_map, dict(case.generations), case.session.names.names)
    tab.set_review(name, entries, case.reference, case.ct, review_result(window, name), tree)
    window.tabs.setCurrentWidget(tab)
    return True
