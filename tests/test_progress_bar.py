"""A progress report paints with the next event-loop paint, never at once: a synchronous
repaint composes a window that holds an OpenGL widget (app.progress_bar)."""

from __future__ import annotations

from PySide6.QtWidgets import QProgressBar

from app.progress_bar import show_progress


class _CountingBar(QProgressBar):
    def __init__(self) -> None:
        super().__init__()
        self.paints = 0

    def paintEvent(self, event):  # noqa: N802 - Qt's name
        self.paints += 1
        super().paintEvent(event)


def _shown_bar(qtbot) -> _CountingBar:
    bar = _CountingBar()
    bar.setTextVisible(True)
    bar.resize(200, 24)
    qtbot.addWidget(bar)
    bar.show()
    qtbot.waitExposed(bar)
    qtbot.waitUntil(lambda: bar.paints > 0)
    return bar


def test_qt_repaints_a_progress_bar_at_once_on_set_value(qtbot):
    # the behaviour show_progress exists to avoid: if Qt stops doing it, this says so
    bar = _shown_bar(qtbot)
    bar.setRange(0, 10)
    before = bar.paints
    bar.setValue(5)
    assert bar.paints > before


def test_show_progress_schedules_one_paint_instead(qtbot):
    bar = _shown_bar(qtbot)
    first = bar.paints
    show_progress(bar, 0, 10)
    qtbot.waitUntil(lambda: bar.paints > first)
    before = bar.paints
    show_progress(bar, 5, 10)
    assert bar.paints == before
    assert (bar.minimum(), bar.maximum(), bar.value()) == (0, 10, 5)
    qtbot.waitUntil(lambda: bar.paints > before)


def test_show_progress_ranges(qtbot):
    bar = _shown_bar(qtbot)
    show_progress(bar, 12, 10)
    assert (bar.maximum(), bar.value()) == (10, 10)
    show_progress(bar, -3, 10)
    assert bar.value() == 0
    show_progress(bar, 4, 0)
    assert (bar.minimum(), bar.maximum()) == (0, 0)
    assert bar.isEnabled() and bar.updatesEnabled()
