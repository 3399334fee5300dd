"""Keys and waits shared by the tests that drive the main window as a user does."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QItemSelectionModel, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QTableView


def analysed_and_idle(w: Any) -> bool:
    """The case is analysed and nothing runs (regions listed, no job, no re-analysis due)."""
    case = w.case
    return (
        case.active is not None and case.active.regions is not None and not case.stale and not case.busy and not w.busy
    )


def wait_analysed(qtbot: Any, w: Any) -> None:
    """Until :func:`analysed_and_idle`."""
    qtbot.waitUntil(lambda: analysed_and_idle(w), timeout=120000)


def type_key(w: Any, key: Qt.Key, mods: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> None:
    """A key typed on the axial view (where an annotator's focus is), its handler run."""
    QTest.keyClick(w.views["axial"], key, mods)
    QApplication.processEvents()


def select_row(table: QTableView, row: int) -> None:
    """Make ``row`` the one selected row, as a plain click does. ``setCurrentIndex`` asks Qt for
    the keyboard modifiers held, and a synthetic Ctrl left over from an earlier test's key
    made it extend the selection instead (a status button then hit two rows)."""
    flags = QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows
    table.selectionModel().setCurrentIndex(table.model().index(row, 0), flags)


def jobs_report(w: Any) -> str:
    """What keeps a window busy: its jobs and its case's, every live job, the pool's threads."""
    from PySide6.QtCore import QThreadPool

    from app import workers

    def names(jobs: Any) -> list[str]:
        return [f"{j.name} ({j.state}{', cancel asked' if j.cancel_event.is_set() else ''})" for j in list(jobs)]

    pool = QThreadPool.globalInstance()
    return (
        f"window jobs {names(w.jobs)}; case jobs {names(w.case._jobs)}; live jobs {names(workers._ACTIVE)}; "
        f"global pool {pool.activeThreadCount()}/{pool.maxThreadCount()} threads busy"
    )


def wait_not_busy(qtbot: Any, w: Any, timeout_ms: int = 60000) -> None:
    """Until neither the window nor its case runs a job; on a timeout, says which jobs ran."""
    try:
        qtbot.waitUntil(lambda: not w.busy and not w.case.busy, timeout=timeout_ms)
    except qtbot.TimeoutError as exc:
        raise AssertionError(f"still busy after {timeout_ms} ms: {jobs_report(w)}") from exc
