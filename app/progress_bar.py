"""Progress bars that report without repainting the window at once.

``QProgressBar.setValue`` calls ``repaint()`` whenever the drawn value changes. In a
window that holds the 3D view's OpenGL widget, a synchronous repaint composes the
whole window (10-30 ms under llvmpipe, measured on the annotator's day), and a job
reports progress many times. With updates off around the change, re-enabling them
schedules one ``update()`` that the next paint of the event loop serves.
"""

from __future__ import annotations

from PySide6.QtWidgets import QProgressBar


def show_progress(bar: QProgressBar, done: int, total: int) -> None:
    """``done`` of ``total`` on ``bar``; a ``total`` of 0 or less shows it busy."""
    bar.setUpdatesEnabled(False)
    try:
        if total > 0:
            bar.setRange(0, total)
            bar.setValue(min(max(done, 0), total))
        else:
            bar.setRange(0, 0)
    finally:
        bar.setUpdatesEnabled(True)
