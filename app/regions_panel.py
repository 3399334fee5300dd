"""The error-region navigator: FP and FN components of the active prediction.

A sortable table (kind, category, size, generation, status) over
``case.regions()`` (core.regions, computed by the case in a job). Clicking a
row goes to the region (slices centre on it, the 3D view focuses it); the
case's N / Shift+N and status keys 1-4 (bound once, by the main window) move
and mark; this panel follows the case's signals and shows how many regions
are reviewed. Row numbers are the case's region indices, which project files
store statuses by.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.case import STATUS_KEYS, STATUS_LABELS
from core.regions import ErrorRegion

COLUMNS = ("#", "ID", "Kind", "Category", "Size (mm³)", "Voxels", "Gen.", "Status")
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
FILTERS = (("all", "All regions"), ("FP", "False positives"), ("FN", "False negatives"),
           ("unreviewed", "Unreviewed"), ("reviewed", "Reviewed"))


def region_kind(region: ErrorRegion) -> str:
    return region.kind


def region_voxel_count(region: ErrorRegion) -> int:
    return int(region.voxels)


def region_volume_mm3(region: ErrorRegion, voxel_volume: float) -> float:
    return float(region.volume_mm3)


def region_generation(region: ErrorRegion) -> int | None:
    return region.nearest_generation


def region_category(region: ErrorRegion) -> str:
    return region.category.replace("_", " ")


class RegionsModel(QAbstractTableModel):
    """Rows = regions of the active prediction, in the case's order."""

    def __init__(self, case: Any, parent: Any = None):
        super().__init__(parent)
        self.case = case
        self._regions: list[Any] = []
        self._colours: dict[str, QColor] = {}
        try:
            from app.view3d import overlay_colours

            c = overlay_colours()
            self._colours = {k: QColor(*c[k]) for k in ("FP", "FN")}
        except Exception:  # noqa: BLE001 - colours are a nicety
            pass
        self.reload()

    def reload(self) -> None:
        self.beginResetModel()
        self._regions = list(self.case.regions())
        self.endResetModel()

    def status_changed(self, row: int) -> None:
        if 0 <= row < len(self._regions):
            c = COLUMNS.index("Status")
            self.dataChanged.emit(self.index(row, c), self.index(row, c))

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(self._regions)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def values(self, row: int) -> tuple[Any, ...]:
        """Sort keys of one row, column by column (None sorts first)."""
        r = self._regions[row]
        vv = self.case.ct.geometry.voxel_volume_mm3 if self.case.ct is not None else 1.0
        act = self.case.active
        status = act.status(row) if act is not None else "unreviewed"
        return (row + 1, r.id, region_kind(r), region_category(r),
                region_volume_mm3(r, vv), region_voxel_count(r), region_generation(r), status)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row, col = index.row(), index.column()
        vals = self.values(row)
        v = vals[col]
        if role == Qt.ItemDataRole.DisplayRole:
            if v is None:
                return ""
            if COLUMNS[col] == "Size (mm³)":
                return f"{v:.1f}"
            if COLUMNS[col] == "Status":
                return STATUS_LABELS.get(v, v)
            return str(v)
        if role == SORT_ROLE:
            if v is None:
                return "" if COLUMNS[col] in ("ID", "Kind", "Category") else -1
            if COLUMNS[col] == "Status":
                return STATUS_KEYS.index(v) if v in STATUS_KEYS else 0
            return v
        if role == Qt.ItemDataRole.ToolTipRole:
            n = vals[COLUMNS.index("Voxels")]
            return f"{vals[1] or 'region'}: {n} voxels" if n is not None else None
        if role == Qt.ItemDataRole.TextAlignmentRole and isinstance(v, (int, float)):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        kind = vals[COLUMNS.index("Kind")]
        if role == Qt.ItemDataRole.ForegroundRole and COLUMNS[col] == "Kind" and kind in self._colours:
            return QBrush(self._colours[kind])
        return None


class _FilterProxy(QSortFilterProxyModel):
    def __init__(self, parent: Any = None):
        super().__init__(parent)
        self.mode = "all"
        self.setSortRole(SORT_ROLE)

    def set_mode(self, mode: str) -> None:
        if hasattr(self, "beginFilterChange"):  # Qt >= 6.9; invalidateFilter is deprecated there
            self.beginFilterChange()
            self.mode = mode
            self.endFilterChange()
        else:
            self.mode = mode
            self.invalidateFilter()

    def filterAcceptsRow(self, row: int, parent: QModelIndex | QPersistentModelIndex) -> bool:  # noqa: N802
        if self.mode == "all":
            return True
        m = self.sourceModel()
        vals = m.values(row)
        if self.mode in ("FP", "FN"):
            return vals[COLUMNS.index("Kind")] == self.mode
        reviewed = vals[-1] != "unreviewed"
        return reviewed if self.mode == "reviewed" else not reviewed


class RegionsPanel(QWidget):
    """Table of the FP/FN regions with review statuses and a reviewed counter."""

    def __init__(self, case: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("regionsPanel")
        self.case = case
        self.model = RegionsModel(case, self)
        self.proxy = _FilterProxy(self)
        self.proxy.setSourceModel(self.model)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        top = QHBoxLayout()
        self.counter = QLabel("", self)
        self.counter.setObjectName("regionsCounter")
        top.addWidget(self.counter, 1)
        self.filter_combo = QComboBox(self)
        for key, text in FILTERS:
            self.filter_combo.addItem(text, key)
        self.filter_combo.currentIndexChanged.connect(lambda i: self.proxy.set_mode(self.filter_combo.itemData(i)))
        top.addWidget(self.filter_combo)
        lay.addLayout(top)

        self.table = QTableView(self)
        self.table.setObjectName("regionsTable")
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        header.setMinimumSectionSize(28)
        # the ID (FN-0001...) already shows the case's order: the row number
        # column stays in the model for sorting and tests, hidden on screen
        self.table.setColumnHidden(COLUMNS.index("#"), True)
        self.table.setColumnHidden(COLUMNS.index("Voxels"), True)
        self.table.setToolTip("Click a region to go to it; sort by any column; the voxel count is in the tooltip")
        # focus stays with the slice views, so N and 1-4 keep working after a click
        self.table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.table.clicked.connect(self._on_clicked)
        lay.addWidget(self.table, 1)

        buttons = QHBoxLayout()
        self.status_buttons: dict[str, QPushButton] = {}
        from app import shortcuts

        for key in STATUS_KEYS:
            b = QPushButton(STATUS_LABELS[key], self)
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            try:
                b.setToolTip(f"{shortcuts.binding('status_' + key).description} ({shortcuts.key_text('status_' + key)})")
            except KeyError:
                pass
            b.clicked.connect(lambda _=False, k=key: self.mark(k))
            buttons.addWidget(b)
            self.status_buttons[key] = b
        lay.addLayout(buttons)
        self.hint = QLabel(self._hint_text(), self)
        self.hint.setObjectName("regionsHint")
        self.hint.setWordWrap(True)
        lay.addWidget(self.hint)

        case.regionsChanged.connect(lambda i: i == case.active_index and self.reload())
        case.activePredictionChanged.connect(lambda _i: self.reload())
        case.predictionsChanged.connect(self.reload)
        case.ctChanged.connect(self.reload)
        case.regionStatusChanged.connect(self._on_status)
        case.activeRegionChanged.connect(self._select_region)
        self.reload()

    @staticmethod
    def _hint_text() -> str:
        from app import shortcuts

        try:
            return (f"{shortcuts.key_text('next_region')} / {shortcuts.key_text('previous_region')}: next / previous region; "
                    + ", ".join(f"{shortcuts.key_text('status_' + k)}: {STATUS_LABELS[k].lower()}" for k in STATUS_KEYS))
        except KeyError:
            return ""

    # -- updates -------------------------------------------------------------------------
    def reload(self, *_: Any) -> None:
        self.model.reload()
        self._update_counter()
        if self.case.active_region >= 0:
            self._select_region(self.case.active_region)

    def _on_status(self, pred: int, region: int, _status: str) -> None:
        if pred == self.case.active_index:
            self.model.status_changed(region)
            self.proxy.invalidate()
            self._update_counter()

    def _update_counter(self) -> None:
        act = self.case.active
        regions = self.case.regions()
        if act is None:
            self.counter.setText("No prediction")
            return
        if act.regions is None:
            text = act.analysis_error or ("Computing regions..." if self.case.reference is not None else "Needs a reference")
            self.counter.setText(text)
            return
        n = len(regions)
        fp = sum(1 for r in regions if region_kind(r) == "FP")
        self.counter.setText(f"Reviewed {act.reviewed_count()} / {n}  ({fp} FP, {n - fp} FN)")

    def _select_region(self, index: int) -> None:
        if not 0 <= index < self.model.rowCount():
            self.table.clearSelection()
            return
        proxy_index = self.proxy.mapFromSource(self.model.index(index, 0))
        if proxy_index.isValid():
            self.table.selectRow(proxy_index.row())
            self.table.scrollTo(proxy_index, QAbstractItemView.ScrollHint.EnsureVisible)

    # -- user actions ----------------------------------------------------------------------
    def _on_clicked(self, proxy_index: QModelIndex) -> None:
        src = self.proxy.mapToSource(proxy_index)
        if src.isValid():
            self.case.go_to_region(src.row())

    def mark(self, status: str) -> None:
        """Set the status of the selected (active) region."""
        if self.case.active is None or self.case.active_region < 0:
            return
        self.case.set_region_status(self.case.active_region, status)

    def region_row(self, index: int) -> int:
        """The table row showing region ``index`` (after sorting/filtering), or -1."""
        p = self.proxy.mapFromSource(self.model.index(index, 0))
        return p.row() if p.isValid() else -1
