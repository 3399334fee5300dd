"""The error-region navigator: FP and FN components of the active prediction.

By default it lists review items (core.region_groups): boundary fragments of
one kind along one reference branch are one item, missed branches, candidate
branches and leakage one item each, in review priority; boundary groups below
the preset size are hidden until asked for. A switch shows the raw regions
(``case.regions()``, core.regions, computed by the case in a job). Filters:
kind / status, category, minimum size, generation. Clicking a row or N /
Shift+N (bound once, by the main window, which asks :meth:`RegionsPanel.step`)
goes to the item: the slices centre on it and zoom to fit its box, the 3D view
focuses it. Status keys 1-4 mark the item (every region of a group). Statuses
are stored per region index, as project files keep them.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.review.case import STATUS_KEYS, STATUS_LABELS, Case, region_centre
from core.box import Box
from core.region_groups import RegionGroup, StableIds
from core.regions import ErrorRegion

COLUMNS = ("#", "ID", "Kind", "Category", "Size (mm³)", "Voxels", "Gen.", "Status")
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
GROUP_COLUMNS = ("#", "Item", "Kind", "Category", "Size (mm³)", "Parts", "Gen.", "Status")
FILTERS = (
    ("all", "All kinds"),
    ("FP", "False positives"),
    ("FN", "False negatives"),
    ("unreviewed", "Unreviewed"),
    ("reviewed", "Reviewed"),
)
CATEGORY_FILTERS = (
    ("all", "All categories"),
    ("missed_branch", "Missed branch"),
    ("candidate_branch", "Candidate branch"),
    ("leakage", "Leakage"),
    ("boundary", "Boundary"),
)
PARTLY = "partly_reviewed"
COLUMN_TIPS = {
    "#": "Review order",
    "ID": "Region id",
    "Item": "Review item: a single error or the boundary fragments of one branch",
    "Kind": "FP: predicted, not in the reference; FN: in the reference, not predicted",
    "Category": "What the error does to the tree",
    "Size (mm³)": "Volume in mm³",
    "Parts": "Regions in the item",
    "Voxels": "Voxels",
    "Gen.": "Generation of the nearest reference branch",
    "Status": "Review status (keys 1-4)",
}


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


def _kind_colours() -> dict[str, QColor]:
    """The overlay's FP/FN colours for the Kind column (one preset with the views)."""
    from app.review.view3d import overlay_colours

    c = overlay_colours()
    return {k: QColor(*c[k]) for k in ("FP", "FN")}


class RegionsModel(QAbstractTableModel):
    """Rows = regions of the active prediction, in the case's order."""

    def __init__(self, case: Any, parent: Any = None):
        super().__init__(parent)
        self.case = case
        self._regions: list[ErrorRegion] = []
        self._cache: dict[int, tuple[Any, ...]] = {}
        self._colours = _kind_colours()
        self.reload()

    def reload(self) -> None:
        regions = list(self.case.regions())
        if [r.key for r in regions] == [r.key for r in self._regions] and regions:
            # a re-analysis that found the same regions: cells change, rows stay
            self._regions = regions
            self._cache = {}
            self.dataChanged.emit(self.index(0, 0), self.index(len(regions) - 1, len(COLUMNS) - 1))
            return
        self.beginResetModel()
        self._regions = regions
        self._cache = {}
        self.endResetModel()

    def key(self, row: int) -> str:
        return str(self._regions[row].key) if 0 <= row < len(self._regions) else ""

    def row_of_key(self, key: str) -> int:
        for i, r in enumerate(self._regions):
            if r.key == key:
                return i
        return -1

    def status_changed(self, row: int) -> None:
        """Row ``row``'s status changed; -1: several rows' (a group's, in one change)."""
        c = COLUMNS.index("Status")
        if row < 0:
            self._cache.clear()
            if self._regions:
                self.dataChanged.emit(self.index(0, c), self.index(len(self._regions) - 1, c))
            return
        self._cache.pop(row, None)
        if row < len(self._regions):
            self.dataChanged.emit(self.index(row, c), self.index(row, c))

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(self._regions)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(COLUMNS)

    columns = COLUMNS

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self.columns[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            return COLUMN_TIPS.get(self.columns[section])
        return None

    def raw_category(self, row: int) -> str:
        return self._regions[row].category

    def review(self, row: int) -> bool:
        return True

    def values(self, row: int) -> tuple[Any, ...]:
        """Sort keys of one row, column by column (None sorts first); cached, sorting asks often."""
        v = self._cache.get(row)
        if v is None:
            v = self._cache[row] = self._values(row)
        return v

    def _values(self, row: int) -> tuple[Any, ...]:
        r = self._regions[row]
        vv = voxel_volume(self.case)
        act = self.case.active
        status = act.status(row) if act is not None else "unreviewed"
        return (
            row + 1,
            r.id,
            region_kind(r),
            region_category(r),
            region_volume_mm3(r, vv),
            region_voxel_count(r),
            region_generation(r),
            status,
        )

    @staticmethod
    def display(v: Any, name: str) -> str:
        """The text a cell shows for its sort value ``v`` in column ``name``."""
        if v is None:
            return ""
        if name == "Size (mm³)":
            return f"{v:.1f}"
        if name == "Status":
            return str(STATUS_LABELS.get(v, v))
        return str(v)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row, col = index.row(), index.column()
        vals = self.values(row)
        v = vals[col]
        if role == Qt.ItemDataRole.DisplayRole:
            return self.display(v, COLUMNS[col])
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


def voxel_volume(case: Any) -> float:
    """mm³ of one voxel: the CT's grid, else the reference's (label-only cases)."""
    for vol in (case.ct, case.reference):
        if vol is not None:
            return float(vol.geometry.voxel_volume_mm3)
    return 1.0


def _core_view(region: ErrorRegion, index: int, voxel_volume: float) -> dict[str, Any]:
    """What core.region_groups needs of a region."""
    return {
        "id": str(region.id or f"region-{index + 1}"),
        "kind": region.kind,
        "category": region.category,
        "voxels": int(region.voxels),
        "volume_mm3": float(region.volume_mm3),
        "bbox": region.box.to_json(),
        "centroid_zyx": list(region_centre(region)),
        "nearest_branch": region.nearest_branch,
        "nearest_generation": region.nearest_generation,
        "key": region.key,
    }


class GroupsModel(QAbstractTableModel):
    """Rows = review groups (core.region_groups) of the active prediction's regions."""

    columns = GROUP_COLUMNS

    def __init__(self, case: Any, parent: Any = None):
        super().__init__(parent)
        self.case = case
        self.groups: list[RegionGroup] = []
        self._cache: dict[int, tuple[Any, ...]] = {}
        self._colours = _kind_colours()

    def reload(self) -> None:
        from core.region_groups import group_regions

        if isinstance(self.case, Case):
            groups = self.case.groups()  # made with the analysis, off the GUI thread
        else:
            regions = list(self.case.regions())
            if regions and not all(isinstance(r, ErrorRegion) for r in regions):
                vv = voxel_volume(self.case)
                regions = [_core_view(r, i, vv) for i, r in enumerate(regions)]
            groups = group_regions(regions) if regions else []
        if groups and [g.key for g in groups] == [g.key for g in self.groups]:
            # the same items (a re-analysis that changed nothing here): cells change in place
            self.groups = groups
            self._cache.clear()
            self.dataChanged.emit(self.index(0, 0), self.index(len(groups) - 1, len(self.columns) - 1))
            return
        self.beginResetModel()
        self.groups = groups
        self._cache.clear()
        self.endResetModel()

    def key(self, row: int) -> str:
        return self.groups[row].key if 0 <= row < len(self.groups) else ""

    def row_of_key(self, key: str) -> int:
        for i, g in enumerate(self.groups):
            if g.key == key:
                return i
        return -1

    def status_changed(self, region_row: int) -> None:
        self._cache.clear()
        if self.groups:
            c = self.columns.index("Status")
            self.dataChanged.emit(self.index(0, c), self.index(len(self.groups) - 1, c))

    def names_changed(self) -> None:
        """The branch names changed: the items' texts follow."""
        self._cache.clear()
        if self.groups:
            c = self.columns.index("Item")
            self.dataChanged.emit(self.index(0, c), self.index(len(self.groups) - 1, c))

    def item_text(self, row: int) -> str:
        """ "FN-0002 - RB6 - 12 mm" (a group: "FN - RB6 - 12 mm (3 parts)"): the item, the reference branch it
        lies in (most of its voxels), and the length of its longest part; the group's own label while the tree
        has no names."""
        g = self.groups[row]
        case = self.case
        if not isinstance(case, Case) or case.session.names.names is None:
            return g.label()
        # the tables once per row, not per part: every row of a re-analysis comes through here, on the GUI thread
        regs = case.regions()
        branch_of = case.session.region_branches(case.active_index)
        votes: dict[int, int] = {}
        length = 0.0
        for i in g.indices:
            if not 0 <= i < len(regs):
                continue
            r = regs[i]
            b = branch_of.get(r.key)
            if b is not None:
                votes[b] = votes.get(b, 0) + int(r.voxels)
            length = max(length, float(r.length_mm))
        if not votes:
            return g.label()
        place = case.place_text(max(votes, key=lambda b: (votes[b], -b)))
        if g.is_single:  # its id ("FN-0002", kept across re-analyses) says the kind too
            return f"{g.regions[0]} - {place} - {length:.0f} mm"
        return f"{g.kind} - {place} - {length:.0f} mm ({len(g.regions)} parts)"

    def group_status(self, row: int) -> str:
        act = self.case.active
        if act is None:
            return "unreviewed"
        regs, table = act.regions or [], act.statuses
        st: set[str] = {
            str(table.get(regs[i].key, "unreviewed")) if 0 <= i < len(regs) else "unreviewed"
            for i in self.groups[row].indices
        }
        if len(st) == 1:
            return st.pop()
        return PARTLY if st != {"unreviewed"} else "unreviewed"

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(self.groups)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(self.columns)

    headerData = RegionsModel.headerData

    def raw_category(self, row: int) -> str:
        return self.groups[row].category

    def review(self, row: int) -> bool:
        return bool(self.groups[row].review)

    @staticmethod
    def display(v: Any, name: str) -> str:
        if name == "Status" and v == PARTLY:
            return "Partly reviewed"
        return RegionsModel.display(v, name)

    def values(self, row: int) -> tuple[Any, ...]:
        v = self._cache.get(row)
        if v is None:
            g = self.groups[row]
            v = (
                row + 1,
                self.item_text(row),
                g.kind,
                g.category.replace("_", " "),
                g.volume_mm3,
                len(g.regions),
                g.generation,
                self.group_status(row),
            )
            self._cache[row] = v
        return v

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row, col = index.row(), index.column()
        vals = self.values(row)
        v, name = vals[col], self.columns[col]
        if role == Qt.ItemDataRole.DisplayRole:
            return self.display(v, name)
        if role == SORT_ROLE:
            if v is None:
                return "" if name in ("Item", "Kind", "Category") else -1
            if name == "Status":
                return STATUS_KEYS.index(v) if v in STATUS_KEYS else 0.5
            return v
        if role == Qt.ItemDataRole.ToolTipRole:
            g = self.groups[row]
            ids = ", ".join(g.regions[:12]) + (" ..." if len(g.regions) > 12 else "")
            gen = "" if g.generation is None else f"; generation {g.generation}"
            return f"{g.title()}\n{g.voxels} voxels{gen}; regions {ids}"
        if role == Qt.ItemDataRole.TextAlignmentRole and isinstance(v, (int, float)):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole and name == "Kind" and vals[2] in self._colours:
            return QBrush(self._colours[vals[2]])
        return None


class _FilterProxy(QSortFilterProxyModel):
    def __init__(self, parent: Any = None):
        super().__init__(parent)
        self.mode = "all"
        self.category = "all"
        self.min_mm3 = 0.0
        self.max_generation = -1  # -1: any
        self.all_groups = False  # groups mode: small boundary groups too
        self.setSortRole(SORT_ROLE)

    def _change(self, **kw: Any) -> None:
        if hasattr(self, "beginFilterChange"):  # Qt >= 6.9; invalidateFilter is deprecated there
            self.beginFilterChange()
            self.__dict__.update(kw)
            self.endFilterChange()
        else:
            self.__dict__.update(kw)
            self.invalidateFilter()

    def set_mode(self, mode: str) -> None:
        self._change(mode=mode)

    def set_filters(self, **kw: Any) -> None:
        self._change(**kw)

    def filterAcceptsRow(self, row: int, parent: QModelIndex | QPersistentModelIndex) -> bool:  # noqa: N802
        m = self.sourceModel()
        assert isinstance(m, (RegionsModel, GroupsModel))
        if not self.all_groups and not m.review(row):
            return False
        vals = m.values(row)
        if self.category != "all":
            cat = m.raw_category(row)
            if not (cat == self.category or (self.category == "boundary" and cat.startswith("boundary"))):
                return False
        if self.min_mm3 > 0 and (vals[4] or 0.0) < self.min_mm3:
            return False
        if self.max_generation >= 0 and (vals[6] is None or vals[6] > self.max_generation):
            return False
        if self.mode == "all":
            return True
        if self.mode in ("FP", "FN"):
            return bool(vals[2] == self.mode)
        reviewed = vals[-1] != "unreviewed"
        return reviewed if self.mode == "reviewed" else not reviewed


class RegionsPanel(QWidget):
    """Review items (groups) or raw FP/FN regions, with filters, statuses and a reviewed counter."""

    def __init__(self, case: Any, parent: QWidget | None = None, grouped: bool = True):
        super().__init__(parent)
        self.setObjectName("regionsPanel")
        self.case = case
        self.grouped = grouped
        self.model = RegionsModel(case, self)
        self.groups_model = GroupsModel(case, self)
        self.proxy = _FilterProxy(self)
        self.proxy.setSourceModel(self.groups_model if grouped else self.model)
        self._group_row = -1  # the groups-model row last gone to
        # The item gone to, by content key (a group's key, or a region's in raw mode): a
        # re-analysis re-sorts and renumbers rows, the key finds the item again.
        self._item_key = ""
        self._region_key = ""  # the case's active region, by key
        self._resume_row = -1  # table row of an item that vanished (A/R): N goes on from there
        self._ids: dict[str, StableIds] = {}  # per prediction name: ids kept across re-analyses

        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        self.counter = QLabel("", self)
        self.counter.setObjectName("regionsCounter")
        self.counter.setWordWrap(True)
        lay.addWidget(self.counter)

        row1 = QHBoxLayout()
        self.filter_combo = QComboBox(self)
        for key, text in FILTERS:
            self.filter_combo.addItem(text, key)
        self.filter_combo.setToolTip("Kind or review status")
        self.filter_combo.currentIndexChanged.connect(lambda i: self.proxy.set_mode(self.filter_combo.itemData(i)))
        row1.addWidget(self.filter_combo, 1)
        self.category_combo = QComboBox(self)
        for key, text in CATEGORY_FILTERS:
            self.category_combo.addItem(text, key)
        self.category_combo.setToolTip("Category")
        self.category_combo.currentIndexChanged.connect(
            lambda i: self.proxy.set_filters(category=self.category_combo.itemData(i))
        )
        row1.addWidget(self.category_combo, 1)
        lay.addLayout(row1)

        row2 = QHBoxLayout()
        self.min_size = QDoubleSpinBox(self)
        self.min_size.setRange(0.0, 1e6)
        self.min_size.setDecimals(1)
        self.min_size.setSuffix(" mm³")
        self.min_size.setPrefix("≥ ")
        self.min_size.setToolTip("Minimum size of an item")
        self.min_size.valueChanged.connect(lambda v: self.proxy.set_filters(min_mm3=float(v)))
        row2.addWidget(self.min_size)
        self.max_gen = QSpinBox(self)
        self.max_gen.setRange(-1, 40)
        self.max_gen.setValue(-1)
        self.max_gen.setSpecialValueText("any gen.")
        self.max_gen.setPrefix("gen. ≤ ")
        self.max_gen.setToolTip("Only items near reference branches up to this generation (trachea = 0)")
        self.max_gen.valueChanged.connect(lambda v: self.proxy.set_filters(max_generation=int(v)))
        row2.addWidget(self.max_gen)
        row2.addStretch(1)
        lay.addLayout(row2)

        row3 = QHBoxLayout()
        self.small_switch = QCheckBox("Small groups", self)
        self.small_switch.setObjectName("regionsSmallSwitch")
        self.small_switch.setToolTip(
            "Also list boundary groups below the review size (resources/presets/review_groups.json)"
        )
        self.small_switch.toggled.connect(lambda on: self.proxy.set_filters(all_groups=bool(on) or not self.grouped))
        row3.addWidget(self.small_switch)
        self.raw_switch = QCheckBox("Raw regions", self)
        self.raw_switch.setObjectName("regionsRawSwitch")
        self.raw_switch.setToolTip("List every connected error region instead of review items")
        self.raw_switch.setChecked(not grouped)
        self.raw_switch.toggled.connect(lambda on: self.set_grouped(not on))
        row3.addWidget(self.raw_switch)
        row3.addStretch(1)
        lay.addLayout(row3)
        self.proxy.all_groups = not grouped

        self.table = QTableView(self)
        self.table.setObjectName("regionsTable")
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(False)
        header.setMinimumSectionSize(28)
        header.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.setToolTip("Click an item to go to it; sort by any column; details in each row's tooltip")
        # focus stays with the slice views, so N and 1-4 keep working after a click
        self.table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.table.clicked.connect(self._on_clicked)
        lay.addWidget(self.table, 1)

        buttons = QGridLayout()
        buttons.setSpacing(4)
        self.status_buttons: dict[str, QPushButton] = {}
        from app import shortcuts

        short = {
            "unreviewed": "Unreviewed",
            "confirmed": "Confirmed",
            "reference_error": "Ref. error",
            "flagged": "Flagged",
        }
        for key in STATUS_KEYS:
            b = QPushButton(short.get(key, STATUS_LABELS[key]), self)
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            b.setMinimumWidth(40)
            try:
                b.setToolTip(
                    f"{STATUS_LABELS[key]}: {shortcuts.binding('status_' + key).description} "
                    f"({shortcuts.key_text('status_' + key)})"
                )
            except KeyError:
                b.setToolTip(STATUS_LABELS[key])
            b.clicked.connect(lambda _=False, k=key: self.mark(k))
            n = len(self.status_buttons)
            buttons.addWidget(b, n // 2, n % 2)
            self.status_buttons[key] = b
        lay.addLayout(buttons)
        self.hint = QLabel(self._hint_text(), self)
        self.hint.setObjectName("regionsHint")
        self.hint.setWordWrap(True)
        lay.addWidget(self.hint)

        case.regionsChanged.connect(self._on_regions)
        if isinstance(case, Case):
            case.namesChanged.connect(self.groups_model.names_changed)
        case.activePredictionChanged.connect(lambda _i: self.reload())
        case.predictionsChanged.connect(self.reload)
        case.ctChanged.connect(self._new_case)
        case.regionStatusChanged.connect(self._on_status)
        case.staleChanged.connect(lambda _stale: self._update_counter())
        case.activeRegionChanged.connect(self._select_region)
        self.reload()

    @staticmethod
    def _hint_text() -> str:
        from app import shortcuts

        try:
            return (
                f"{shortcuts.key_text('next_region')} / {shortcuts.key_text('previous_region')}: next / previous item; "
                + ", ".join(f"{shortcuts.key_text('status_' + k)}: {STATUS_LABELS[k].lower()}" for k in STATUS_KEYS)
            )
        except KeyError:
            return ""

    # -- mode ------------------------------------------------------------------------------
    @property
    def source(self) -> Any:
        return self.groups_model if self.grouped else self.model

    def set_grouped(self, grouped: bool) -> None:
        """Review items (True, the default) or raw regions."""
        if grouped == self.grouped:
            return
        self.grouped = grouped
        if self.raw_switch.isChecked() == grouped:
            self.raw_switch.setChecked(not grouped)
        self.proxy.all_groups = self.small_switch.isChecked() or not grouped
        self.proxy.setSourceModel(self.source)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self._fit_columns()
        self._update_counter()
        if self.case.active_region >= 0:
            self._select_region(self.case.active_region)

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 - Qt name
        super().resizeEvent(event)
        if abs(self.table.viewport().width() - getattr(self, "_fitted_width", -100)) >= 8:
            self._fit_columns()

    # -- updates -------------------------------------------------------------------------
    def _on_regions(self, index: int) -> None:
        if index == self.case.active_index:
            self.reload()

    def _new_case(self) -> None:
        self._ids.clear()
        self._item_key = self._region_key = ""
        self._resume_row = -1
        self.reload()

    def reload(self, *_: Any) -> None:
        """New regions of the active prediction: rows follow, ids and the selected item stay."""
        act = self.case.active
        if act is not None and act.regions:
            self._ids.setdefault(act.name, StableIds()).assign(act.regions)
        key, row = self._item_key, self._current_row()
        self.model.reload()
        self.groups_model.reload()
        self._group_row = -1
        self._fit_columns()
        self._update_counter()
        if key:
            self._restore(key, row)
        elif self.case.active_region >= 0:
            self._select_region(self.case.active_region)

    def _current_row(self) -> int:
        """Table (proxy) row of the item gone to, or -1."""
        if not self._item_key:
            return -1
        src = self.source.row_of_key(self._item_key)
        if src < 0:
            return -1
        p = self.proxy.mapFromSource(self.source.index(src, 0))
        return p.row() if p.isValid() else -1

    def _restore(self, key: str, old_row: int) -> None:
        """Select the item ``key`` again after a re-analysis; the case's active region
        follows it (its index in the new list). An item that is gone (corrected by A/R)
        leaves nothing selected, and N goes on from its row."""
        src = self.source.row_of_key(key)
        regions = self.case.regions()
        if src < 0:
            self._item_key = self._region_key = ""
            self._resume_row = old_row
            self.table.clearSelection()
            self._set_active_region(-1)
            return
        self._resume_row = -1
        if self.grouped:
            self._group_row = src
            indices = self.groups_model.groups[src].indices
            same = [i for i in indices if regions[i].key == self._region_key]
            index = same[0] if same else indices[0]
        else:
            index = src
        self._region_key = regions[index].key
        self._select_row(src)
        self._set_active_region(index)

    def _set_active_region(self, index: int) -> None:
        """The case's active region is an index into the list a re-analysis replaced: point
        it at the same region (views highlight it, A / R / 1-4 act on it)."""
        if self.case.active_region != index:
            self.case.active_region = index
            self.case.activeRegionChanged.emit(index)

    # Columns a row needs to be told apart and acted on; the others show while the table is wide
    # enough for every shown column to be read whole (issue 22: "F..." for FP and FN alike).
    REQUIRED = {True: ("Item", "Status"), False: ("ID", "Kind", "Status")}
    OPTIONAL = ("Size (mm³)", "Category", "Gen.")

    def column_widths(self) -> dict[str, int]:
        """Width each column needs to show its header and every cell whole (the longest texts
        measured); only the columns that can be shown, read from the source model (3,514 raw
        regions on the ATM'22 pair: through the proxy this took 0.3 s)."""
        m = self.source
        cols = m.columns
        fm = self.table.fontMetrics()
        wanted = set(self.REQUIRED[self.grouped]) | set(self.OPTIONAL)
        rows = [m.values(r) for r in range(m.rowCount())]
        out: dict[str, int] = {}
        for c, name in enumerate(cols):
            if name not in wanted:
                out[name] = fm.horizontalAdvance(name) + 18
                continue
            # the model's own formatting, not data(index): Qt indexes per cell made this the
            # longest GUI stall of a re-analysis (28,000 calls on the ATM'22 pair)
            texts = [m.display(vals[c], name) for vals in rows]
            longest = sorted(texts, key=len, reverse=True)[:8]  # by characters, then measured
            out[name] = max(fm.horizontalAdvance(t) for t in [name, *longest]) + 18
        return out

    def _fit_columns(self) -> None:
        """Shown columns fit their content whole; optional ones are left out (their values are in
        the row's tooltip) when the table is too narrow for them."""
        header = self.table.horizontalHeader()
        cols = self.source.columns
        need = self.column_widths()
        room = self.table.viewport().width() or self.table.width()
        shown = [c for c in self.REQUIRED[self.grouped] if c in cols]
        used = sum(need[c] for c in shown)
        for name in self.OPTIONAL:
            if name in cols and used + need[name] <= room:
                shown.append(name)
                used += need[name]
        header.setMinimumSectionSize(28)
        for c, name in enumerate(cols):
            self.table.setColumnHidden(c, name not in shown)
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.Interactive)
            header.resizeSection(c, need[name])
        # the spare width goes to the item (or the last column): never less than its content
        if "Item" in cols:
            header.setStretchLastSection(False)
            header.setSectionResizeMode(cols.index("Item"), QHeaderView.ResizeMode.Stretch)
            header.setMinimumSectionSize(min(need["Item"], 28))
        else:
            header.setStretchLastSection(True)
        self.table.setMinimumWidth(0)
        self._fitted_width = room

    def _on_status(self, pred: int, region: int, _status: str) -> None:
        if pred == self.case.active_index:
            self.model.status_changed(region)
            self.groups_model.status_changed(region)
            self.proxy.invalidate()
            self._update_counter()

    def _update_counter(self) -> None:
        act = self.case.active
        regions = self.case.regions()
        if act is None:
            self.counter.setText("No prediction")
            return
        if act.regions is None:
            text = act.analysis_error or (
                "Computing regions..." if self.case.reference is not None else "Needs a reference"
            )
            self.counter.setText(text)
            return
        n = len(regions)
        fp = sum(1 for r in regions if region_kind(r) == "FP")
        text = f"Reviewed {act.reviewed_count()} / {n}  ({fp} FP, {n - fp} FN)"
        if self.grouped:
            gm = self.groups_model
            # the rows' cached values (the filter has just computed them): group_status again for
            # every group was a tenth of a re-analysis's GUI-thread time on the ATM'22 pair
            status = GROUP_COLUMNS.index("Status")
            done = sum(1 for r in range(len(gm.groups)) if gm.values(r)[status] not in ("unreviewed", PARTLY))
            shown = sum(1 for g in gm.groups if g.review)
            text = (
                f"Reviewed {act.reviewed_count()} / {n} regions ({fp} FP, {n - fp} FN); "
                f"items {done} / {len(gm.groups)} done, {shown} to review"
            )
        if self.case.stale:
            # the rows are those of the last analysis until the re-analysis after the edits lands
            text += " \u2014 stale: updating after edits..."
        self.counter.setText(text)

    def _select_row(self, source_row: int) -> None:
        if not 0 <= source_row < self.source.rowCount():
            self.table.clearSelection()
            return
        proxy_index = self.proxy.mapFromSource(self.source.index(source_row, 0))
        if proxy_index.isValid():
            self.table.selectRow(proxy_index.row())
            self.table.scrollTo(proxy_index, QAbstractItemView.ScrollHint.EnsureVisible)
        else:
            self.table.clearSelection()

    def _select_region(self, index: int) -> None:
        regions = self.case.regions()
        if not 0 <= index < len(regions):
            if index < 0 and not self._item_key:
                self.table.clearSelection()
            return
        self._region_key = regions[index].key
        self._resume_row = -1
        if not self.grouped:
            self._item_key = self._region_key
            self._select_row(index)
            return
        if not (
            0 <= self._group_row < len(self.groups_model.groups)
            and index in self.groups_model.groups[self._group_row].indices
        ):
            from core.region_groups import group_of_region

            gi = group_of_region(self.groups_model.groups, index)
            self._group_row = -1 if gi is None else gi
        self._item_key = self.groups_model.key(self._group_row)
        self._select_row(self._group_row)

    # -- user actions ----------------------------------------------------------------------
    def go_to_group(self, row: int) -> None:
        """Cursor on the group's largest region; the views fit the whole group's box."""
        g = self.groups_model.groups[row]
        self._group_row = row
        self._item_key = g.key
        self.case.go_to_region(g.indices[0], box=Box.from_ranges(g.bbox))

    def _on_clicked(self, proxy_index: QModelIndex) -> None:
        src = self.proxy.mapToSource(proxy_index)
        if not src.isValid():
            return
        if self.grouped:
            self.go_to_group(src.row())
        else:
            self.case.go_to_region(src.row())

    def step(self, step: int) -> int:
        """N / Shift+N: the next / previous item in the table's order (filters and sorting), wrapping."""
        n = self.proxy.rowCount()
        if n == 0:
            return -1
        current = -1
        if self.grouped and self._group_row >= 0:
            p = self.proxy.mapFromSource(self.groups_model.index(self._group_row, 0))
            current = p.row() if p.isValid() else -1
        elif not self.grouped and self.case.active_region >= 0:
            current = self.region_row(self.case.active_region)
        if current < 0 and self._resume_row >= 0:
            # the item gone to was corrected away: its successor now holds its row
            target = (self._resume_row if step > 0 else self._resume_row - 1) % n
        else:
            target = (0 if step > 0 else n - 1) if current < 0 else (current + step) % n
        self._resume_row = -1
        src = self.proxy.mapToSource(self.proxy.index(target, 0)).row()
        if self.grouped:
            self.go_to_group(src)
        else:
            self.case.go_to_region(src)
        return src

    def mark(self, status: str) -> None:
        """Set the status of the selected item (every region of a group, as one change)."""
        if self.case.active is None or self.case.active_region < 0:
            return
        if self.grouped and 0 <= self._group_row < len(self.groups_model.groups):
            g = self.groups_model.groups[self._group_row]
            if self.case.active_region in g.indices:
                self.case.set_region_statuses(list(g.indices), status)
                return
        self.case.set_region_statuses([self.case.active_region], status)

    def region_row(self, index: int) -> int:
        """The raw-regions table row showing region ``index`` (after sorting/filtering), or -1."""
        if self.grouped:
            return -1
        p = self.proxy.mapFromSource(self.model.index(index, 0))
        return p.row() if p.isValid() else -1

    def group_row(self, group_index: int) -> int:
        """The table row showing review group ``group_index`` (groups mode), or -1."""
        if not self.grouped:
            return -1
        p = self.proxy.mapFromSource(self.groups_model.index(group_index, 0))
        return p.row() if p.isValid() else -1
