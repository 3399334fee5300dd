"""Time a reviewer spends on a case: active time, not the time the case is merely open.

A second counts when the window is the active one and the user gave input (key, mouse button,
wheel, mouse move) within the last ``IDLE_S`` seconds: reading a slice without touching
anything for a minute still counts, a window left open over lunch or behind another program does not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication, QWidget

IDLE_S = 90.0  # no input for this long: the reviewer is away (or reading something else)
TICK_MS = 1000

INPUT_EVENTS = frozenset(
    {
        QEvent.Type.KeyPress,
        QEvent.Type.MouseButtonPress,
        QEvent.Type.MouseMove,
        QEvent.Type.Wheel,
        QEvent.Type.ShortcutOverride,
    }
)


class ActiveTime(QObject):
    """Accumulates active seconds while running; :meth:`take` returns and resets them."""

    def __init__(self, window: QWidget, clock: Callable[[], float] = time.monotonic, idle_s: float = IDLE_S):
        super().__init__(window)
        self.window = window
        self.clock = clock
        self.idle_s = idle_s
        self.seconds = 0.0
        self.running = False
        self._last_input = clock()
        self._last_tick = clock()
        self._timer = QTimer(self)
        self._timer.setInterval(TICK_MS)
        self._timer.timeout.connect(self.tick)
        self._filtering = False

    def eventFilter(self, obj: Any, event: Any) -> bool:
        if event.type() in INPUT_EVENTS:
            self.input()
        return False

    def input(self) -> None:
        """The user did something (any window of the app: the worklist dock counts too)."""
        now = self.clock()
        if self.running and self.window.isActiveWindow():
            self.tick(now)
        self._last_input = now

    def tick(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        dt = max(0.0, now - self._last_tick)
        self._last_tick = now
        if not self.running or not self.window.isActiveWindow():
            return
        # only the part of the interval within IDLE_S of the last input counts
        active_until = self._last_input + self.idle_s
        start = now - dt
        self.seconds += max(0.0, min(now, active_until) - start)

    def start(self) -> None:
        """A case opened: count from now (the case's earlier time is in the state file)."""
        now = self.clock()
        self.seconds = 0.0
        self._last_tick = self._last_input = now
        self.running = True
        self._timer.start()
        app = QApplication.instance()
        if app is not None and not self._filtering:
            # input reaches the widget under the mouse or with the focus: only the application sees it all
            # (installed with the first dataset case, so a window without one pays nothing per event)
            app.installEventFilter(self)
            self._filtering = True

    def take(self) -> float:
        """The active seconds since the last take (or start), reset to zero."""
        self.tick()
        out, self.seconds = self.seconds, 0.0
        return out

    def stop(self) -> float:
        out = self.take()
        self.running = False
        self._timer.stop()
        app = QApplication.instance()
        if app is not None and self._filtering:
            app.removeEventFilter(self)
            self._filtering = False
        return out
