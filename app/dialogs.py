"""Dialogs: errors (one per failure, never a bare traceback), About, Help.

Every error the GUI shows goes through :func:`show_error`, so tests can
monkeypatch ``QMessageBox.exec`` (or this function) and the app goes on.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from core.errors import AirwayError
from core.resources import resource_path

APP_NAME = "Airway Studio"
#: written by installer/make_notices.py into every bundle's resources (not kept in the source tree)
NOTICES_FILE = "THIRD_PARTY_NOTICES.txt"

# Third-party components and their licences, shown in About. Versions are
# read at run time; a missing package is simply skipped.
LICENCES: tuple[tuple[str, str, str], ...] = (
    ("PySide6 (Qt for Python)", "PySide6|PySide6-Essentials|PySide6_Essentials", "LGPL-3.0"),
    ("VTK", "vtk", "BSD-3-Clause"),
    ("PyVista", "pyvista", "MIT"),
    ("pyvistaqt", "pyvistaqt", "MIT"),
    ("PyTorch", "torch", "BSD-3-Clause"),
    ("SimpleITK (ITK, GDCM)", "SimpleITK", "Apache-2.0"),
    ("NumPy", "numpy", "BSD-3-Clause"),
    ("SciPy", "scipy", "BSD-3-Clause"),
    ("scikit-image", "scikit-image", "BSD-3-Clause"),
    ("connected-components-3d", "connected-components-3d", "LGPL-3.0-or-later"),
    ("edt", "edt", "LGPL-3.0-or-later"),
    ("superqt", "superqt", "BSD-3-Clause"),
)


def error_text(exc: BaseException) -> tuple[str, str | None]:
    """(message, details) for an exception: ours are one line, others get details."""
    if isinstance(exc, AirwayError):
        return str(exc), None
    if isinstance(exc, MemoryError):
        return "Out of memory. Close other programs, or crop or downsample the volume.", None
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return f"Unexpected error ({name}){': ' + first if first else ''}.", None


def show_error(
    parent: QWidget | None, exc: BaseException | str, details: str | None = None, title: str = "Airway Studio"
) -> QMessageBox:
    """One dialog per error. Our errors: the message says what and how to fix;
    other exceptions: a short message with the traceback under Show Details."""
    if isinstance(exc, BaseException):
        text, extra = error_text(exc)
        if not isinstance(exc, AirwayError):
            details = details or extra
        else:
            details = None  # a user error needs no traceback
    else:
        text = exc
    box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok, parent)
    box.setObjectName("errorDialog")
    if details:
        box.setInformativeText("If this keeps happening, report it with the details below.")
        box.setDetailedText(details)
    box.exec()
    return box


def ask_resample(parent: QWidget | None, exc: BaseException, title: str = "Airway Studio") -> bool:
    """Offer to open a label on another grid resampled onto the CT's (the GUI's --resample-to-ct)."""
    box = QMessageBox(
        QMessageBox.Icon.Question,
        title,
        str(exc),
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        parent,
    )
    box.setObjectName("resampleDialog")
    box.setInformativeText("Resample it onto the CT's grid (nearest neighbour) and open it anyway?")
    box.setDefaultButton(QMessageBox.StandardButton.No)  # an explicit choice: resampling changes the label
    return box.exec() == QMessageBox.StandardButton.Yes


SAVE_CONFLICT_CHOICES = ("new", "merge", "overwrite")


def ask_save_conflict(parent: QWidget | None, exc: BaseException, title: str = "Airway Studio") -> str | None:
    """Another save changed the file this window would overwrite: the user chooses.

    ``"new"`` (save to another file), ``"merge"`` (read the file again and put this window's
    edits over it), ``"overwrite"`` (keep the other version as a backup, then overwrite), or
    None (cancel: nothing is written)."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, str(exc), QMessageBox.StandardButton.Cancel, parent)
    box.setObjectName("saveConflictDialog")
    box.setInformativeText(
        "Merge: your edits go over the version on disk (both kept; where both changed a voxel, yours).\n"
        "Overwrite: the other version is kept beside it as NAME.other-TIME, then yours replaces it."
    )
    buttons = {
        box.addButton("Save as a new file...", QMessageBox.ButtonRole.AcceptRole): "new",
        box.addButton("Merge into the file", QMessageBox.ButtonRole.AcceptRole): "merge",
        box.addButton("Overwrite (keep a backup)", QMessageBox.ButtonRole.DestructiveRole): "overwrite",
    }
    box.setDefaultButton(QMessageBox.StandardButton.Cancel)
    box.exec()
    clicked = box.clickedButton()
    for button, choice in buttons.items():
        if button is clicked:
            return choice
    return None


def notices_path() -> Path | None:
    """The bundle's THIRD_PARTY_NOTICES.txt; None in a source checkout, where it is not generated."""
    path = resource_path(NOTICES_FILE, must_exist=False)
    return path if path.is_file() else None


def about_html() -> str:
    from importlib import metadata

    import core

    rows = []
    for label, dists, lic in LICENCES:
        ver = None
        for dist in dists.split("|"):  # a component may ship under several distribution names
            try:
                ver = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
        if ver is None:
            continue
        rows.append(f"<tr><td>{label}</td><td>{ver}</td><td>{lic}</td></tr>")
    return (
        f"<h2>{APP_NAME} {core.__version__}</h2>"
        "<p>Pulmonary airway segmentation and review in chest CT, implementing "
        "Zheng et al., <i>Alleviating Class-wise Gradient Imbalance for Pulmonary Airway "
        "Segmentation</i>, IEEE TMI 2021 (WingsNet, GUL), with ATM'22 airway metrics.</p>"
        "<p>Airway Studio is MIT licensed. It uses:</p>"
        "<table cellspacing='6'><tr><th align='left'>Component</th><th align='left'>Version</th>"
        "<th align='left'>Licence</th></tr>" + "".join(rows) + "</table>"
        "<p>PySide6/Qt are used under the LGPL-3.0 as dynamically linked libraries; "
        "their source is available from qt.io.</p>"
        + (
            "<p>The licence texts of every bundled component: <b>Third-party notices</b> below.</p>"
            if notices_path()
            else "<p>Installed builds list every bundled component with its licence text under "
            "<b>Third-party notices</b> (written by <tt>installer/make_notices.py</tt>).</p>"
        )
        + f"<p style='color:gray'>Python {platform.python_version()} on {sys.platform}</p>"
    )


class AboutDialog(QDialog):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle(f"About {APP_NAME}")
        lay = QVBoxLayout(self)
        text = QTextBrowser(self)
        text.setOpenExternalLinks(True)
        text.setHtml(about_html())
        text.setMinimumSize(520, 420)
        lay.addWidget(text)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.reject)
        self.notices_button: QPushButton | None = None
        if notices_path():
            self.notices_button = buttons.addButton("Third-party notices…", QDialogButtonBox.ButtonRole.ActionRole)
            self.notices_button.clicked.connect(lambda: NoticesDialog(self).exec())
        lay.addWidget(buttons)


class NoticesDialog(QDialog):
    """THIRD_PARTY_NOTICES.txt as plain text (about 1.5 MB: QPlainTextEdit handles it, QTextBrowser is slow)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Third-party notices")
        lay = QVBoxLayout(self)
        self.text = QPlainTextEdit(self)
        self.text.setReadOnly(True)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        font = self.text.font()
        font.setFamily("monospace")
        font.setStyleHint(font.StyleHint.Monospace)
        self.text.setFont(font)
        path = notices_path()
        self.text.setPlainText(path.read_text(encoding="utf-8", errors="replace") if path else "")
        self.text.setMinimumSize(760, 520)
        lay.addWidget(self.text)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)


class ShortcutsDialog(QDialog):
    """Every binding of :mod:`app.shortcuts`, grouped."""

    def __init__(self, parent: QWidget | None = None):
        from app import shortcuts

        super().__init__(parent)
        self.setWindowTitle("Keyboard and mouse shortcuts")
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Every key binding of Airway Studio:"))
        rows = [(g, b) for g, bs in shortcuts.groups().items() for b in bs]
        table = QTableWidget(len(rows), 3, self)
        table.setObjectName("shortcutsTable")
        table.setHorizontalHeaderLabels(["Group", "Keys", "Action"])
        for r, (g, b) in enumerate(rows):
            for c, text in enumerate((g, ", ".join(b.keys), b.description)):
                item = QTableWidgetItem(text)
                item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
                table.setItem(r, c, item)
        table.verticalHeader().setVisible(False)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        table.horizontalHeader().setStretchLastSection(True)
        table.setMinimumSize(640, 520)
        lay.addWidget(table)
        self.table = table
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
