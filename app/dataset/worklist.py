"""The dataset worklist: one row per case (status, reviewer, time, label version, split, figures).

A table model over a :class:`core.dataset.Dataset` and its state file, a proxy that sorts and
filters it (status, reviewer, text), and the panel that shows them with the status buttons,
the note and the progress line. The panel never writes the state itself: it asks (signals) and
the controller (:mod:`app.dataset.controller`) writes through ``core.dataset``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QPoint,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import QAction, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from core.dataset import STATUSES, CaseState, Dataset, DatasetState, progress_text, status_counts

STATUS_TEXT = {"todo": "To do", "in_review": "In review", "done": "Done", "flagged": "Flagged"}
STATUS_COLOUR = {"todo": "#9a9aa2", "in_review": "#e0b040", "done": "#58b858", "flagged": "#e05a5a"}
FIGURES = (("td", "TD"), ("bd", "BD"), ("dsc", "DSC"), ("precision", "precision"))
BASE_COLUMNS = ("case", "status", "reviewer", "time spent", "label version", "split")
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
CASE_ROLE = Qt.ItemDataRole.UserRole + 2

Index = QModelIndex | QPersistentModelIndex


def time_text(seconds: float) -> str:
    s = int(round(seconds))
    if s <= 0:
        return ""
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def worklist_progress(dataset: Dataset | None, state: DatasetState | None) -> str:
    """ "37 of 150 done, 3 flagged" (core.dataset's words)"""
    if dataset is None:
        return ""
    return progress_text(status_counts(dataset, state if state is not None else DatasetState()))


class WorklistModel(QAbstractTableModel):
    """Rows: the dataset's cases in case-id order; columns: BASE_COLUMNS then per model its figures."""

    def __init__(self, parent: Any = None):
        super().__init__(parent)
        self.dataset: Dataset | None = None
        self.state: DatasetState | None = None
        self.models: list[str] = []
        self.reviewed: set[str] = set()  # cases with a reviewed label on disk
        self.current: str | None = None  # the case open in the window (shown bold)

    # -- data in ----------------------------------------------------------------------------
    def _models_of(self, dataset: Dataset | None, state: DatasetState | None) -> list[str]:
        names: list[str] = list(dataset.models) if dataset is not None else []
        for cs in state.cases.values() if state is not None else ():
            names.extend(m for m in cs.figures if m not in names)
        return names

    def reset(self, dataset: Dataset | None, state: DatasetState | None) -> None:
        self.beginResetModel()
        self.dataset, self.state = dataset, state
        self.models = self._models_of(dataset, state)
        self._scan_reviewed()
        self.endResetModel()

    def _scan_reviewed(self) -> None:
        ds = self.dataset
        self.reviewed = set() if ds is None else {c for c in ds.case_ids if ds.reviewed_path(c).is_file()}

    def update_state(self, state: DatasetState) -> None:
        """A newer state (this window's change or another's): rows repaint, columns only when a model appeared."""
        if self._models_of(self.dataset, state) != self.models:
            self.reset(self.dataset, state)
            return
        self.state = state
        self._scan_reviewed()
        if self.rowCount():
            self.dataChanged.emit(self.index(0, 0), self.index(self.rowCount() - 1, self.columnCount() - 1))

    def set_current(self, case_id: str | None) -> None:
        self.current = case_id
        if self.rowCount():
            self.dataChanged.emit(self.index(0, 0), self.index(self.rowCount() - 1, 0))

    # -- reading ----------------------------------------------------------------------------
    def case_id(self, row: int) -> str:
        assert self.dataset is not None
        return self.dataset.cases[row].case_id

    def row_of(self, case_id: str) -> int:
        if self.dataset is None:
            return -1
        for i, c in enumerate(self.dataset.cases):
            if c.case_id == case_id:
                return i
        return -1

    def case_state(self, case_id: str) -> CaseState:
        if self.state is not None and case_id in self.state.cases:
            return self.state.cases[case_id]
        return CaseState()

    def columns(self) -> list[str]:
        return list(BASE_COLUMNS) + [f"{m} {label}" for m in self.models for _, label in FIGURES]

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 - Qt's default argument
        return 0 if parent.isValid() or self.dataset is None else len(self.dataset.cases)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(BASE_COLUMNS) + 4 * len(self.models)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            cols = self.columns()
            return cols[section] if 0 <= section < len(cols) else None
        return None

    def _value(self, row: int, col: int) -> tuple[str, Any]:
        """(text, sort key) of a cell."""
        assert self.dataset is not None
        case = self.dataset.cases[row]
        cs = self.case_state(case.case_id)
        if col == 0:
            return case.case_id, row  # case-id order is the dataset's (natural) order
        if col == 1:
            return STATUS_TEXT.get(cs.status, cs.status), STATUSES.index(cs.status) if cs.status in STATUSES else 99
        if col == 2:
            return cs.reviewer or "", (cs.reviewer or "").lower()
        if col == 3:
            return time_text(cs.seconds_spent), float(cs.seconds_spent)
        if col == 4:
            version = "reviewed" if case.case_id in self.reviewed else ("original" if case.reference else "none")
            return version, version
        if col == 5:
            return case.split or "", case.split or ""
        k = col - len(BASE_COLUMNS)
        model, (key, _) = self.models[k // 4], FIGURES[k % 4]
        value = (cs.figures.get(model) or {}).get(key)
        if value is None:
            return "", float("-inf")
        return f"{float(value):.1f}", float(value)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or self.dataset is None:
            return None
        row, col = index.row(), index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._value(row, col)[0]
        if role == SORT_ROLE:
            return self._value(row, col)[1]
        if role == CASE_ROLE:
            return self.dataset.cases[row].case_id
        if role == Qt.ItemDataRole.ForegroundRole and col == 1:
            return QColor(STATUS_COLOUR.get(self.case_state(self.dataset.cases[row].case_id).status, "#dddddd"))
        if role == Qt.ItemDataRole.FontRole and col == 0 and self.dataset.cases[row].case_id == self.current:
            from PySide6.QtGui import QFont

            f = QFont()
            f.setBold(True)
            return f
        if role == Qt.ItemDataRole.ToolTipRole and col == 0:
            note = self.case_state(self.dataset.cases[row].case_id).note
            return note or None
        if role == Qt.ItemDataRole.TextAlignmentRole and col >= 3:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


_FIGURE_TEST = re.compile(r"^\s*(td|bd|dsc|precision)\s*(<=|>=|<|>)\s*(\d+(?:\.\d*)?)\s*%?\s*$")


def figure_test(text: str) -> tuple[str, Callable[[float], bool]] | None:
    """``"td < 80"`` -> ("td", value < 80); None when the text is not such a test."""
    m = _FIGURE_TEST.match(text.lower())
    if m is None:
        return None
    key, op, number = m.group(1), m.group(2), float(m.group(3))
    ops: dict[str, Callable[[float], bool]] = {
        "<": lambda v: v < number,
        "<=": lambda v: v <= number,
        ">": lambda v: v > number,
        ">=": lambda v: v >= number,
    }
    return key, ops[op]


class WorklistFilter(QSortFilterProxyModel):
    """Sort by each column's value (numbers as numbers); filter by status, reviewer and a text."""

    def __init__(self, parent: Any = None):
        super().__init__(parent)
        self.status: str | None = None
        self.reviewer: str | None = None
        self.text = ""
        self.setSortRole(SORT_ROLE)

    def set_filter(self, status: str | None = None, reviewer: str | None = None, text: str = "") -> None:
        self.beginFilterChange()
        self.status, self.reviewer, self.text = status, reviewer, text.strip().lower()
        self.endFilterChange()

    def refilter(self) -> None:
        """The rows' values changed (a status): filter and sort again."""
        self.beginFilterChange()
        self.endFilterChange()

    def filterAcceptsRow(self, source_row: int, source_parent: Index) -> bool:
        model = self.sourceModel()
        assert isinstance(model, WorklistModel)
        case_id = model.case_id(source_row)
        cs = model.case_state(case_id)
        if self.status is not None and cs.status != self.status:
            return False
        if self.reviewer is not None and (cs.reviewer or "") != self.reviewer:
            return False
        if not self.text:
            return True
        test = figure_test(self.text)
        if test is not None:  # "td < 80": a case where some model's TD is below 80 %
            key, compare = test
            return any(key in f and compare(float(f[key])) for f in cs.figures.values())
        return self.text in case_id.lower() or self.text in cs.note.lower()

    def lessThan(self, left: Index, right: Index) -> bool:
        a, b = left.data(SORT_ROLE), right.data(SORT_ROLE)
        try:
            return bool(a < b)
        except TypeError:
            return str(a) < str(b)


class WorklistTable(QTableView):
    """Enter / Return opens the current row's case (as a double-click does)."""

    activatedCase = Signal(str)
    focused = Signal()

    def focusInEvent(self, event: Any) -> None:
        self.focused.emit()
        super().focusInEvent(event)

    def keyPressEvent(self, event: Any) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.currentIndex().isValid():
            case_id = self.currentIndex().data(CASE_ROLE)
            if case_id:
                self.activatedCase.emit(str(case_id))
                return
        super().keyPressEvent(event)


class WorklistPanel(QWidget):
    """The dock's content. Signals ask the controller: open a case, set statuses, set a note."""

    openRequested = Signal(str)
    statusRequested = Signal(list, str)  # case ids, status
    noteEdited = Signal(str, str)  # case id, note
    focused = Signal()  # the panel gained focus: the controller re-reads the state file

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("worklistPanel")
        self.model = WorklistModel(self)
        self.proxy = WorklistFilter(self)
        self.proxy.setSourceModel(self.model)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        self.title = QLabel("No dataset open: File > Open dataset...")
        self.title.setObjectName("worklistTitle")
        self.title.setWordWrap(True)
        lay.addWidget(self.title)

        filters = QHBoxLayout()
        self.status_filter = QComboBox()
        self.status_filter.setObjectName("worklistStatusFilter")
        self.status_filter.addItem("All statuses", None)
        for key in STATUSES:
            self.status_filter.addItem(STATUS_TEXT[key], key)
        self.reviewer_filter = QComboBox()
        self.reviewer_filter.setObjectName("worklistReviewerFilter")
        self.reviewer_filter.addItem("All reviewers", None)
        self.search = QLineEdit()
        self.search.setObjectName("worklistSearch")
        self.search.setPlaceholderText("Filter: case, note, or a figure (td < 80)")
        self.search.setClearButtonEnabled(True)
        filters.addWidget(self.status_filter)
        filters.addWidget(self.reviewer_filter)
        filters.addWidget(self.search, 1)
        lay.addLayout(filters)
        for box in (self.status_filter, self.reviewer_filter):
            box.currentIndexChanged.connect(self._apply_filter)
        self.search.textChanged.connect(self._apply_filter)

        self.table = WorklistTable()
        self.table.setObjectName("worklistTable")
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(False)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._context_menu)
        self.table.doubleClicked.connect(self._open_index)
        self.table.activatedCase.connect(self.openRequested.emit)
        self.table.focused.connect(self.focused.emit)
        self.table.selectionModel().currentRowChanged.connect(lambda *_: self._show_note())
        lay.addWidget(self.table, 1)

        buttons = QHBoxLayout()
        self.status_buttons: dict[str, QPushButton] = {}
        for key in STATUSES:
            b = QPushButton(STATUS_TEXT[key])
            b.setObjectName(f"worklistStatus_{key}")
            b.setToolTip(f"Mark the selected case(s) {STATUS_TEXT[key].lower()}")
            b.clicked.connect(lambda _=False, k=key: self._request_status(k))
            self.status_buttons[key] = b
            buttons.addWidget(b)
        lay.addLayout(buttons)
        note_row = QHBoxLayout()
        note_row.addWidget(QLabel("Note"))
        self.note = QLineEdit()
        self.note.setObjectName("worklistNote")
        self.note.setPlaceholderText("A note on the selected case (Enter keeps it)")
        self.note.editingFinished.connect(self._note_done)
        note_row.addWidget(self.note, 1)
        lay.addLayout(note_row)
        self.progress = QLabel("")
        self.progress.setObjectName("worklistProgress")
        lay.addWidget(self.progress)
        self._set_enabled(False)

    # -- data --------------------------------------------------------------------------------
    def set_data(self, dataset: Dataset | None, state: DatasetState | None) -> None:
        self.model.reset(dataset, state)
        self._after_state()
        self.table.resizeColumnsToContents()
        self._set_enabled(dataset is not None)
        if dataset is not None:
            root = dataset.source or dataset.root
            self.title.setText(f"{root.name} ({dataset.layout}, {len(dataset.cases)} cases)")
            self.title.setToolTip(str(root))

    def update_state(self, state: DatasetState) -> None:
        self.model.update_state(state)
        self._after_state()

    def _after_state(self) -> None:
        self._fill_reviewers()
        self.proxy.refilter()
        self.progress.setText(worklist_progress(self.model.dataset, self.model.state))
        self._show_note()

    def _set_enabled(self, on: bool) -> None:
        for w in (self.status_filter, self.reviewer_filter, self.search, self.note, *self.status_buttons.values()):
            w.setEnabled(on)

    def _fill_reviewers(self) -> None:
        state = self.model.state
        names = sorted({cs.reviewer for cs in state.cases.values() if cs.reviewer} if state else set())
        have = [self.reviewer_filter.itemData(i) for i in range(1, self.reviewer_filter.count())]
        if have == names:
            return
        chosen = self.reviewer_filter.currentData()
        self.reviewer_filter.blockSignals(True)
        while self.reviewer_filter.count() > 1:
            self.reviewer_filter.removeItem(1)
        for n in names:
            self.reviewer_filter.addItem(n, n)
        i = self.reviewer_filter.findData(chosen) if chosen else 0
        self.reviewer_filter.setCurrentIndex(max(0, i))
        self.reviewer_filter.blockSignals(False)

    def _apply_filter(self) -> None:
        self.proxy.set_filter(self.status_filter.currentData(), self.reviewer_filter.currentData(), self.search.text())

    # -- order: what Ctrl+] / Ctrl+[ follow ----------------------------------------------------
    def ordered_cases(self) -> list[str]:
        """Case ids in the table's current order (sorted and filtered as shown)."""
        return [str(self.proxy.index(r, 0).data(CASE_ROLE)) for r in range(self.proxy.rowCount())]

    def neighbour(self, case_id: str | None, step: int) -> str | None:
        """The case ``step`` rows from ``case_id`` in the table's order; a case the filter hides counts at
        its place in the dataset's order (a case that just left a "To do" filter still has a next one)."""
        shown = self.ordered_cases()
        if not shown:
            return None
        if case_id is None:
            return shown[0] if step > 0 else shown[-1]
        if case_id in shown:
            i = shown.index(case_id) + step
            return shown[i] if 0 <= i < len(shown) else None
        row = self.model.row_of(case_id)
        rows = [(self.model.row_of(c), c) for c in shown]
        after = [c for r, c in rows if (r > row if step > 0 else r < row)]
        if not after:
            return None
        return after[0] if step > 0 else after[-1]

    def select_case(self, case_id: str | None) -> None:
        self.model.set_current(case_id)
        if case_id is None:
            return
        row = self.model.row_of(case_id)
        if row < 0:
            return
        index = self.proxy.mapFromSource(self.model.index(row, 0))
        if index.isValid():
            self.table.setCurrentIndex(index)
            self.table.scrollTo(index)

    def selected_cases(self) -> list[str]:
        rows = self.table.selectionModel().selectedRows()
        ids = [str(i.data(CASE_ROLE)) for i in rows]
        if not ids and self.table.currentIndex().isValid():
            ids = [str(self.table.currentIndex().data(CASE_ROLE))]
        return ids

    # -- user ----------------------------------------------------------------------------------
    def _open_index(self, index: QModelIndex) -> None:
        case_id = index.data(CASE_ROLE)
        if case_id:
            self.openRequested.emit(str(case_id))

    def _request_status(self, status: str) -> None:
        ids = self.selected_cases()
        if ids:
            self.statusRequested.emit(ids, status)

    def _context_menu(self, pos: QPoint) -> None:
        index = self.table.indexAt(pos)
        if not index.isValid() or self.model.dataset is None:
            return
        menu = self._build_menu(index)
        menu.popup(self.table.viewport().mapToGlobal(pos))

    def _build_menu(self, index: QModelIndex) -> QMenu:
        menu = QMenu(self)
        menu.setObjectName("worklistMenu")
        case_id = str(index.data(CASE_ROLE))
        if case_id not in self.selected_cases():
            self.table.setCurrentIndex(index)
        menu.addAction("Open case", lambda: self.openRequested.emit(case_id))
        menu.addSeparator()
        current = self.model.case_state(case_id).status
        for key in STATUSES:
            text = "Reopen (in review)" if key == "in_review" and current == "done" else STATUS_TEXT[key]
            a = QAction(f"Mark {text.lower()}" if not text.startswith("Reopen") else text, menu)
            a.setObjectName(f"worklistMenu_{key}")
            a.triggered.connect(lambda _=False, k=key: self._request_status(k))
            menu.addAction(a)
        return menu

    def _show_note(self) -> None:
        ids = self.selected_cases()
        text = self.model.case_state(ids[0]).note if len(ids) == 1 else ""
        if not self.note.hasFocus() and self.note.text() != text:
            self.note.setText(text)

    def _note_done(self) -> None:
        ids = self.selected_cases()
        if len(ids) == 1 and self.note.text() != self.model.case_state(ids[0]).note:
            self.noteEdited.emit(ids[0], self.note.text())

    def focusInEvent(self, event: Any) -> None:
        self.focused.emit()
        super().focusInEvent(event)
