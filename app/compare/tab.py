"""The Compare tab: open an `airway compare` output folder (or take the review case's
predictions), pick a case and 2-4 models, see them side by side with the metrics
table and plots, export CSV / PNG / the HTML report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.compare.layout import CompareLayout
from app.compare.metrics import STALE_TEXT, CompareMetrics
from app.compare.state import MAX_PANES, PaneEntry, PreparedCase, ReferenceTree, prepare_case
from core.compare.batch import CompareResult


def load_case_masks(
    result: CompareResult, case: str, models: list[str], *, progress: Any = None, cancel: Any = None
) -> tuple[str, set[tuple[str, str]], PreparedCase]:
    """Job: (case, stale pairs, the case ready to show) of one case of a compare result: reference,
    predictions and CT in canonical (LPS) orientation like the review's case.

    Every mask is keyed by its content as the compare keyed it (core.compare.cache.mask_key); a
    file whose key differs from the one its figures came from is a stale (case, model) pair."""
    from core.compare.cache import mask_key
    from core.errors import Cancelled, InputError
    from core.io import read_ct, read_label
    from core.volume import LabelVolume, to_canonical

    rows = [r for r in (result.row(case, m) for m in models) if r is not None]
    if not rows:
        raise InputError(f"No evaluated prediction of case '{case}' for these models.", "Choose other models.")
    s = result.settings
    steps = len(rows) + 2
    ref_path = Path(rows[0].reference) if rows[0].reference else None
    ref: LabelVolume | None = None
    stale: set[tuple[str, str]] = set()
    if ref_path is not None and ref_path.exists():
        raw_ref = read_label(ref_path, s.label_selector)
        if rows[0].reference_key and mask_key(raw_ref, s.label_selector) != rows[0].reference_key:
            stale |= {(case, r.model) for r in rows}  # every figure of the case came from the old reference
        canon_ref = to_canonical(raw_ref)[0]
        assert isinstance(canon_ref, LabelVolume)  # to_canonical keeps the volume's kind
        ref = canon_ref
    if progress:
        progress(1, steps, "reference")
    entries = []
    for k, r in enumerate(rows):
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        lab = read_label(r.prediction, s.prediction_selector)
        if r.prediction_key and mask_key(lab, s.prediction_selector) != r.prediction_key:
            stale.add((case, r.model))
        gate = result.gate.get(r.model, {}).get(case)
        notes = [STALE_TEXT] if (case, r.model) in stale else []
        if gate is not None and not gate.get("passed"):
            notes.append("output gate failed: " + "; ".join(gate.get("problems", [])))
        note = " \u2014 ".join(notes)
        canon = to_canonical(lab)[0]
        assert isinstance(canon, LabelVolume)  # to_canonical keeps the volume's kind
        entries.append(PaneEntry(r.model, canon, path=r.prediction, note=note))
        if progress:
            progress(2 + k, steps, r.model)
    ct = None
    ct_dir = Path(result.ct_dir) if result.ct_dir else None
    if ct_dir is not None and ct_dir.is_dir():
        from core.compare.cases import list_cases

        ct_path = list_cases(ct_dir).get(case)
        if ct_path is not None:
            ct = to_canonical(read_ct(ct_path))[0]
    if progress:
        progress(steps, steps, "preparing the panes")
    # here, not on the GUI thread: wrapping the masks for sagittal reads and the CT's x-major copy
    # stalled the window 450-650 ms on the real ATM'22 pair
    return case, stale, prepare_case(case, entries, ref, ct)


def prepare_review_case(
    name: str,
    predictions: list[PaneEntry],
    reference: Any,
    ct: Any,
    tree: ReferenceTree | None,
    *,
    progress: Any = None,
    cancel: Any = None,
) -> PreparedCase:
    """Job: :func:`prepare_case` of the review's case (its masks are in memory: nothing to read)."""
    return prepare_case(name, predictions, reference, ct, tree)


def load_reference_tree(
    case: str, ref_path: str, settings: Any, cache_root: str | None, *, progress: Any = None, cancel: Any = None
) -> tuple[str, str, ReferenceTree]:
    """Job: (case, reference path, the reference's tree) on the panes' canonical grid, from the
    compare folder's cache when it holds the tree and names (`airway compare` kept them there)."""
    from core.compare import reference_tree
    from core.compare.cache import Cache
    from core.io import read_label
    from core.volume import to_canonical

    raw = read_label(ref_path, settings.label_selector, allow_empty=False)
    if progress:
        progress(1, 3, "reference tree")
    tree, names = reference_tree(ref_path, raw, settings, Cache(cache_root), cancel=cancel)
    if progress:
        progress(2, 3, "branch map")
    reo = to_canonical(raw)[1]
    bmap = np.ascontiguousarray(reo.apply(np.asarray(tree.branch_label_map())))
    generations = {int(b.id): int(b.generation) for b in tree.branches}
    return case, ref_path, ReferenceTree(bmap, generations, names)


def read_folder(
    folder: str | Path, *, progress: Any = None, cancel: Any = None
) -> tuple[CompareResult, dict[str, list[dict[str, Any]]]]:
    """Job: a compare output folder's result and its tables (statistics included)."""
    from core.compare import read_outputs
    from core.compare.output import tables

    result = read_outputs(folder)
    if progress:
        progress(1, 2, "statistics")
    return result, tables(result)


def changed_files(result: CompareResult, *, progress: Any = None, cancel: Any = None) -> set[tuple[str, str]]:
    """Job: the (case, model) pairs whose reference or prediction file no longer has the bytes it was
    scored with (a missing file counts as changed)."""
    from core.compare.cache import file_digest
    from core.errors import Cancelled

    seen: dict[str, str | None] = {}

    def digest(path: str) -> str | None:
        if path not in seen:
            try:
                seen[path] = file_digest(path)
            except OSError:
                seen[path] = None
        return seen[path]

    out: set[tuple[str, str]] = set()
    for k, r in enumerate(result.rows):
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        for path, was in ((r.reference, r.reference_digest), (r.prediction, r.prediction_digest)):
            if was and path and digest(path) != was:
                out.add((r.case, r.model))
        if progress:
            progress(k + 1, len(result.rows), r.case)
    return out


class CompareTab(QWidget):
    """``open_folder(path)``, ``show_case(case, models)``, ``set_case(name, predictions, reference, ct)``."""

    caseShown = Signal(str)
    folderOpened = Signal(str)  # a compare output folder's results are in the tables

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        track_job: Callable[[Any], None] | None = None,
        report_error: Callable[..., None] | None = None,
        with_3d: bool = True,
    ):
        super().__init__(parent)
        self.setObjectName("compareTab")
        self.track_job = track_job
        self.report_error = report_error
        self.result: CompareResult | None = None
        self.folder: Path | None = None
        self._job: Any = None
        self._tree_job: Any = None  # the shown case's reference tree (load_reference_tree)
        self._read_job: Any = None  # a folder being read (open_folder_in_background)
        self._tree_for: tuple[str, str] | None = None  # (case, reference path) it is for
        self._stale: set[tuple[str, str]] = set()
        self._review: tuple[str, list[PaneEntry], Any, Any, ReferenceTree | None] | None = None  # set by set_review
        self._check_job: Any = None
        self._bytes_changed: set[tuple[str, str]] = set()  # file bytes differ (checked on opening)
        self._key_stale: set[tuple[str, str]] = set()  # decoded mask keys differ (checked on loading a case)
        self._key_fresh: set[tuple[str, str]] = set()

        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        bar = QHBoxLayout()
        self.open_button = QPushButton("Open compare folder\u2026", self)
        self.open_button.setObjectName("compareOpen")
        self.open_button.clicked.connect(self._ask_folder)
        bar.addWidget(self.open_button)
        bar.addWidget(QLabel("Case:", self))
        self.case_combo = QComboBox(self)
        self.case_combo.setObjectName("compareCase")
        self.case_combo.setMinimumWidth(140)
        self.case_combo.activated.connect(lambda _i: self.show_selected())
        bar.addWidget(self.case_combo)
        self.folder_label = QLabel(self)
        bar.addWidget(self.folder_label, 1)
        for text, name, slot in (
            ("Export CSV\u2026", "compareExportCsv", self._ask_export_csv),
            ("Export PNG\u2026", "compareExportPng", self._ask_export_png),
            ("Export report\u2026", "compareExportHtml", self._ask_export_html),
        ):
            b = QPushButton(text, self)
            b.setObjectName(name)
            b.clicked.connect(slot)
            bar.addWidget(b)
        lay.addLayout(bar)

        split = QSplitter(Qt.Orientation.Horizontal, self)
        side = QWidget(split)
        sl = QVBoxLayout(side)
        sl.setContentsMargins(0, 0, 0, 0)
        sl.addWidget(QLabel(f"Models (2-{MAX_PANES} side by side):", side))
        self.model_list = QListWidget(side)
        self.model_list.setObjectName("compareModels")
        self.model_list.itemChanged.connect(lambda _it: self.show_selected())
        sl.addWidget(self.model_list, 1)
        split.addWidget(side)
        right = QSplitter(Qt.Orientation.Vertical, split)
        self.layout_view = CompareLayout(with_3d=with_3d, track_job=track_job, parent=right)
        self.metrics = CompareMetrics(right)
        self.metrics.caseActivated.connect(self.open_case)
        right.addWidget(self.layout_view)
        right.addWidget(self.metrics)
        right.setSizes([600, 400])  # tables and plots need room to be read at 1024x700
        split.addWidget(right)
        split.setSizes([160, 1200])
        lay.addWidget(split, 1)

    # -- opening ----------------------------------------------------------------------------
    def open_folder(self, folder: str | Path) -> CompareResult:
        """Restore a compare output folder: metrics, plots, cases and models (first case shown).
        Reads and computes on the calling thread (scripts, tests); the menus use
        :meth:`open_folder_in_background`."""
        result, tables = read_folder(folder)
        self._read_job = None  # one being read in the background is overtaken
        self._apply_folder(folder, result, tables)
        return result

    def _run(self, job: Any, on_result: Callable[[Any], None]) -> Any:
        """Start one of the tab's jobs: its result to ``on_result`` (while the tab lives), its error
        reported, the job tracked by the window."""
        from app.workers import guarded

        job.result.connect(guarded(self, on_result))
        report = self.report_error
        if report is not None:
            job.error.connect(guarded(self, lambda exc, tb: report(exc, tb)))
        if self.track_job is not None:
            self.track_job(job)
        return job.start()

    def open_folder_in_background(self, folder: str | Path) -> Any:
        """:meth:`open_folder` with the reading and the statistics in a job: a 150-case, 4-model
        compare cost the GUI thread 0.65 s, and 0.7 s more for scipy.stats's first import."""
        from app.workers import Job

        job = Job(read_folder, folder, name="Compare: reading the results")

        def read(value: tuple[CompareResult, dict[str, list[dict[str, Any]]]]) -> None:
            if self._read_job is job:  # not overtaken by a later folder or the review's case
                self._apply_folder(folder, *value)

        self._read_job = job
        return self._run(job, read)

    def _apply_folder(self, folder: str | Path, result: CompareResult, tables: dict[str, list[dict[str, Any]]]) -> None:
        self._review = None
        self.folder = Path(folder)
        self.set_result(result, tables=tables)
        self.folder_label.setText(str(self.folder))
        self.folderOpened.emit(str(self.folder))
        self.check_files()

    def check_files(self) -> Any:
        """Hash every file the figures came from (a job); changed ones withdraw their figures."""
        from app.workers import Job, guarded

        if self.result is None:
            return None
        job = Job(changed_files, self.result, name="Compare: checking the files")
        result = self.result

        def done(stale: set[tuple[str, str]]) -> None:
            if self.result is result:
                self._bytes_changed = set(stale)
                self._key_fresh -= stale  # checked before the bytes changed: check again when shown
                self._update_stale()

        job.result.connect(guarded(self, done))
        if self.track_job is not None:
            self.track_job(job)
        self._check_job = job
        return job.start()

    def _update_stale(self) -> None:
        self._stale = (self._bytes_changed - self._key_fresh) | self._key_stale
        self.metrics.set_stale(self._stale)

    def set_result(
        self, result: CompareResult, show: bool = True, tables: dict[str, list[dict[str, Any]]] | None = None
    ) -> None:
        """``tables``: core.compare.output.tables(result), when a job made them already."""
        self.result = result
        self._stale = set()
        self._bytes_changed, self._key_stale, self._key_fresh = set(), set(), set()
        self.metrics.set_result(result, tables=tables)
        self.case_combo.clear()
        for c in result.cases:
            if any(r.case == c for r in result.rows):
                self.case_combo.addItem(c, c)
        self.model_list.blockSignals(True)
        self.model_list.clear()
        for k, m in enumerate(result.models):
            it = QListWidgetItem(m)
            it.setFlags(it.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            it.setCheckState(Qt.CheckState.Checked if k < MAX_PANES else Qt.CheckState.Unchecked)
            self.model_list.addItem(it)
        self.model_list.blockSignals(False)
        if show:
            self.show_selected()

    def open_case(self, case: str) -> None:
        """Show ``case`` in the linked panes (a click on its per-case row)."""
        i = self.case_combo.findData(case)
        if i < 0:
            return
        self.case_combo.setCurrentIndex(i)
        self.show_selected()

    def set_review(
        self,
        name: str,
        predictions: list[PaneEntry],
        reference: Any,
        ct: Any,
        result: CompareResult,
        tree: ReferenceTree | None = None,
    ) -> None:
        """The review's case: its masks in the panes, its computed metrics in the tables, and its
        parsed and named reference tree for the 3D colourings (no reload)."""
        self.folder = None
        self.folder_label.setText(f"from the review: {name}")
        self.set_result(result, show=False)
        self._review = (name, list(predictions), reference, ct, tree)
        self._tree_for = self._read_job = None  # a folder still being read or parsed is not shown now
        self._prepare(name, predictions, reference, ct, tree)

    def _prepare(
        self, name: str, predictions: list[PaneEntry], reference: Any, ct: Any, tree: ReferenceTree | None
    ) -> Any:
        """Prepare the review's case for the panes in a job (a CT's x-major copy and the masks' sagittal
        copies are a second or more of a real chest CT), then show it; errors are reported."""
        from app.workers import Job

        if self._job is not None and self._job.running:
            self._job.cancel()
        job = Job(prepare_review_case, name, list(predictions), reference, ct, tree, name=f"Compare: preparing {name}")
        self._job = job
        return self._run(job, self._prepared)

    def _prepared(self, prepared: PreparedCase) -> None:
        if self._review is not None and self._review[0] == prepared.name:
            self.layout_view.state.show(prepared)
            self._shown(prepared.name)

    def selected_models(self) -> list[str]:
        out = []
        for i in range(self.model_list.count()):
            it = self.model_list.item(i)
            if it.checkState() == Qt.CheckState.Checked:
                out.append(it.text())
        return out[:MAX_PANES]

    def show_selected(self) -> None:
        case = self.case_combo.currentData()
        models = self.selected_models()
        if self._review is not None:  # the review's own masks (some are in memory only): no file to read
            name, entries, reference, ct, tree = self._review
            chosen = [e for e in entries if e.name in models]
            if chosen:
                self._prepare(name, chosen, reference, ct, tree)
            return
        if self.result is not None and case and models:
            self.show_case(case, models)

    def show_case(self, case: str, models: list[str]) -> Any:
        """Load the masks of ``case`` for ``models`` in a job; the panes update when it ends."""
        from app.workers import Job

        if self._job is not None and self._job.running:
            self._job.cancel()
        self._job = job = Job(load_case_masks, self.result, case, list(models), name=f"Compare: loading {case}")
        return self._run(job, self._loaded)

    def _loaded(self, value: tuple[str, set[tuple[str, str]], PreparedCase]) -> None:
        case, stale, prepared = value
        if self._review is not None:  # the review's case came after this folder case was asked for
            return
        shown = {(case, e.name) for e in prepared.predictions}
        # a pair whose decoded mask still has the key its figures came from is fresh, whatever its bytes
        self._key_fresh = (self._key_fresh - stale) | (shown - stale)
        self._key_stale = (self._key_stale - shown) | stale
        self._update_stale()
        self.layout_view.state.show(prepared)
        self._shown(case)
        self._tree_for = None
        ref_path = next((r.reference for r in (self.result.rows if self.result else []) if r.case == case), "")
        if prepared.reference is not None and ref_path:
            self._start_tree(case, ref_path)

    def _start_tree(self, case: str, ref_path: str) -> None:
        """Parse (or take from the compare's cache) the shown case's reference tree in a job, so the
        panes' 3D views colour by generation, lobe or segment as the review's does."""
        from app.workers import Job

        if self._tree_job is not None and self._tree_job.running:
            self._tree_job.cancel()
        assert self.result is not None
        cache = self.folder / ".cache" if self.folder is not None and (self.folder / ".cache").is_dir() else None
        job = Job(
            load_reference_tree,
            case,
            ref_path,
            self.result.settings,
            None if cache is None else str(cache),
            name=f"Compare: reference tree of {case}",
        )
        # a tree that cannot be parsed leaves the panes as they are (TP/FP/FN), and is reported
        self._tree_job, self._tree_for = job, (case, ref_path)
        self._run(job, self._tree_loaded)

    def _tree_loaded(self, value: tuple[str, str, ReferenceTree]) -> None:
        case, path, tree = value
        state = self.layout_view.state
        # only for the case still shown, from the same file (another folder may have a case of that name)
        if self._tree_for == (case, path) and state.case_name == case and state.reference is not None:
            state.set_tree(tree)

    def set_case(
        self,
        name: str,
        predictions: list[PaneEntry],
        reference: Any = None,
        ct: Any = None,
        tree: ReferenceTree | None = None,
    ) -> None:
        self.layout_view.state.set_case(name, predictions, reference, ct, tree)
        self._shown(name)

    def _shown(self, name: str) -> None:
        self.layout_view.zoom_to_airway()
        self.caseShown.emit(name)

    # -- dialogs ------------------------------------------------------------------------------
    def _ask_folder(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Open an `airway compare` output folder")
        if d:
            self.open_folder_in_background(d)

    def _ask_export_csv(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Export the tables (CSV) into")
        if d:
            self._guard(lambda: self.metrics.export_csv(d))

    def _ask_export_png(self) -> None:
        f, _ = QFileDialog.getSaveFileName(
            self, "Export the DSC-per-diameter plot", "dsc_by_diameter.png", "PNG (*.png)"
        )
        if f:
            self._guard(
                lambda: (
                    self.metrics.export_png(f, "dsc_by_diameter"),
                    self.metrics.export_png(
                        str(Path(f).with_name(Path(f).stem + "_bd_by_generation.png")), "bd_by_generation"
                    ),
                )
            )

    def _ask_export_html(self) -> None:
        f, _ = QFileDialog.getSaveFileName(self, "Export the HTML report", "report.html", "HTML (*.html)")
        if f:
            snaps = self.folder / "snapshots" if self.folder is not None else None
            self._guard(lambda: self.metrics.export_report(f, snaps))

    def _guard(self, fn: Callable[[], Any]) -> None:
        from core.errors import AirwayError

        try:
            fn()
        except AirwayError as exc:
            if self.report_error is None:
                raise
            self.report_error(exc)
