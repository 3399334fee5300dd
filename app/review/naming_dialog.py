"""Naming a reference branch: the right-click menu of the slice and 3D views, and the Name... dialog.

The dialog lists the bronchus names grouped central / lobar / segmental, plus "unnamed" and the
labeller's own name (dropping the correction); it shows the branch's current name and confidence.
OK names the branch through :meth:`app.review.case.Case.name_branch` (one undo step; the
descendants follow, core.anatomy's rule). The menu is built where the user right-clicked and shown
with ``popup`` (never a nested event loop), so a view keeps it as ``context_menu``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import QComboBox, QDialog, QDialogButtonBox, QLabel, QMenu, QVBoxLayout, QWidget

from core.errors import InputError

if TYPE_CHECKING:
    from app.review.case import Case

# item data of the two choices that are not a name
UNNAMED = "\x00unnamed"
AUTOMATIC = "\x00automatic"


def name_groups() -> list[tuple[str, tuple[str, ...]]]:
    """The names the dialog offers, under their headings."""
    from core.anatomy.names import CENTRAL, LOBAR, MERGED, SEGMENTAL, SUBLOBAR

    return [("Central", CENTRAL), ("Lobar", (*LOBAR, *SUBLOBAR)), ("Segmental", (*SEGMENTAL, *MERGED))]


class NamingDialog(QDialog):
    """Name one branch. ``choice()``: (name or None, automatic)."""

    def __init__(self, case: Case, branch_id: int, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("namingDialog")
        self.case = case
        self.branch_id = int(branch_id)
        layer = case.session.names
        named = layer.name(self.branch_id)
        current = layer.label_text(self.branch_id) or "unnamed"
        self.setWindowTitle(f"Name branch {self.branch_id}")
        lay = QVBoxLayout(self)
        if named is None:
            how = "not named yet"
        elif named.source == "user":
            how = "named by you" if layer.is_corrected(self.branch_id) else "follows your correction above it"
        else:
            how = f"confidence {named.confidence:.2f}"
        self.current = QLabel(f"Branch {self.branch_id}: <b>{current}</b> ({how})", self)
        self.current.setObjectName("namingCurrent")
        lay.addWidget(self.current)
        self.combo = QComboBox(self)
        self.combo.setObjectName("namingCombo")
        self.combo.setMaxVisibleItems(24)
        model = QStandardItemModel(self.combo)
        auto = layer.auto.names.get(self.branch_id) if layer.auto is not None else None
        auto_text = (auto.name if auto is not None and auto.name else "unnamed") if auto is not None else "none"
        self._add(model, f"Automatic ({auto_text})", AUTOMATIC)
        self._add(model, "unnamed", UNNAMED)
        for heading, names in name_groups():
            head = QStandardItem(heading)
            head.setFlags(Qt.ItemFlag.NoItemFlags)  # a heading, not a choice
            font = head.font()
            font.setBold(True)
            head.setFont(font)
            model.appendRow(head)
            for n in names:
                self._add(model, f"    {n}", n)
        self.combo.setModel(model)
        now = named.name if named is not None and named.name else None
        start = self.combo.findData(now) if now else self.combo.findData(UNNAMED)
        self.combo.setCurrentIndex(max(start, 0))
        lay.addWidget(self.combo)
        lay.addWidget(QLabel("Its descendants follow the name's lobe and segment.", self))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)

    @staticmethod
    def _add(model: QStandardItemModel, text: str, data: str) -> None:
        item = QStandardItem(text)
        item.setData(data, Qt.ItemDataRole.UserRole)
        model.appendRow(item)

    def select(self, name: str | None) -> None:
        """Choose ``name`` in the combo (None: unnamed)."""
        i = self.combo.findData(UNNAMED if name is None else name)
        if i < 0:
            raise InputError(f"'{name}' is not a name the dialog offers.", "Choose one of the list.")
        self.combo.setCurrentIndex(i)

    def choice(self) -> tuple[str | None, bool]:
        data = self.combo.currentData()
        if data == AUTOMATIC:
            return None, True
        return (None if data == UNNAMED else str(data)), False

    def accept(self) -> None:
        from app.dialogs import show_error

        name, automatic = self.choice()
        try:
            self.case.name_branch(self.branch_id, name, automatic=automatic)
        except InputError as exc:
            show_error(self, exc)
            return
        super().accept()


def branch_menu(case: Case, parent: QWidget, zyx: Sequence[int]) -> QMenu | None:
    """The right-click menu at voxel ``zyx``: "Name..." for the reference branch there (disabled, with
    the reason, where there is none or the tree has no names yet). None outside the volume."""
    if case.ct is None:
        return None
    bid = case.branch_at(zyx)
    menu = QMenu(parent)
    menu.setObjectName("branchMenu")
    layer = case.session.names
    text = layer.label_text(bid) if bid > 0 else ""
    action = menu.addAction(f"Name... ({text})" if text else "Name...")
    action.setObjectName("nameBranch")
    if bid <= 0:
        action.setEnabled(False)
        action.setToolTip("No reference branch here")
    elif layer.names is None or layer.tree is not case.tree:
        action.setEnabled(False)
        action.setToolTip(layer.error or "The branch names are not ready yet (the analysis is running)")
    else:
        action.triggered.connect(lambda: open_naming_dialog(case, bid, parent))
    return menu


def open_naming_dialog(case: Case, branch_id: int, parent: QWidget) -> NamingDialog:
    """Show the dialog window-modal without a nested event loop; the window keeps it as ``naming_dialog``."""
    dialog = NamingDialog(case, branch_id, parent.window())
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    window: Any = parent.window()
    window.naming_dialog = dialog
    dialog.open()
    return dialog
