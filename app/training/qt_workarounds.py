"""Guard against PySide6 6.12.0's reference-count bug on Python 3.11.

Measured here (PySide6 6.12.0, CPython 3.11.7): every call of a PySide6
method that returns nothing (``QTimer.start``, ``QLabel.setText``...) takes one
reference from ``None`` without giving it, and ``SignalInstance.emit`` does the
same to ``True``. Python 3.12+ makes these singletons immortal, which is
probably why the binding gets away with it there; on 3.11 the counts drift
down with every call (pyqtgraph makes thousands per redraw) until Python aborts
with "Fatal Python error: none_dealloc" / "bool_dealloc", at the latest at
interpreter exit. A live training view runs for hours, so it meets this first.

The guard does what 3.12 does: it gives ``None``, ``True`` and ``False`` a
reference count so large that no leak can bring it to zero. It runs only on
Python < 3.12 and only when a probe shows the leak, so on a fixed PySide6 it
does nothing. It is process-wide: the application should call
``install_refcount_guard()`` once at start-up, before building windows.
"""

from __future__ import annotations

import ctypes
import sys

# 2**48 references: at a million leaked references a second, about nine years.
_PAD = 1 << 48
_state: dict[str, bool] = {}


def measure_leaks(n: int = 32) -> dict[str, int]:
    """References lost by ``None`` over ``n`` void PySide6 calls and by ``True`` over ``n`` emits."""
    from PySide6.QtCore import QObject, QTimer, Signal

    class _Probe(QObject):
        fired = Signal()

    probe, timer = _Probe(), QTimer()
    none_before = sys.getrefcount(None)
    for _ in range(n):
        timer.stop()
    none_lost = none_before - sys.getrefcount(None)
    true_before = sys.getrefcount(True)
    for _ in range(n):
        probe.fired.emit()
    true_lost = true_before - sys.getrefcount(True)
    return {"None": none_lost, "True": true_lost}


def install_refcount_guard() -> bool:
    """Pad the singletons' reference counts if PySide6 leaks them; True if the guard is in place."""
    if "installed" in _state:
        return _state["installed"]
    installed = False
    if sys.version_info < (3, 12) and sys.implementation.name == "cpython":
        lost = measure_leaks()
        if lost["None"] > 0 or lost["True"] > 0:
            for obj in (None, True, False):
                # ob_refcnt is the first field of every CPython object
                ctypes.c_ssize_t.from_address(id(obj)).value += _PAD
            installed = True
    _state["installed"] = installed
    return installed
