"""State of the correction tools shared by the slice views (brush, eraser, fill).

The voxel work is core's (:mod:`core.review.tools` through the case's session);
this holds what the user chose: tool, target layer, brush size and shape, the
HU limit. Defaults and bounds come from ``resources/presets/edit_tools.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from core.errors import InputError
from core.resources import load_json_resource

MODES = ("navigate", "brush", "eraser", "fill")
TARGETS = ("reference", "prediction")
NO_CT_FILL = (
    "Flood fill needs a CT: it grows within an HU range of the CT, and this case has none. Open the CT (Ctrl+O)."
)
NO_CT_HU = "The brush's HU limit needs a CT, and this case has none: the brush paints without it. Open the CT (Ctrl+O)."


class EditTools(QObject):
    """``changed()`` after any choice; ``failed(str)`` when an edit was refused (e.g. a fill too large)."""

    changed = Signal()
    failed = Signal(str)

    def __init__(self, case: Any, parent: QObject | None = None):
        super().__init__(parent)
        self.case = case
        self.presets = load_json_resource("presets", "edit_tools.json")
        self.mode = "navigate"
        self.target = "reference"
        self.radius = float(self.presets["brush_radius"])
        self.form = str(self.presets["brush_form"])
        self.hu_limit = False
        self._last: tuple[int, int, int] | None = None

    # -- choices -----------------------------------------------------------------
    def has_ct(self) -> bool:
        """A real CT under the labels (a label-only case shows a blank one)."""
        return self.case.session.ct is not None

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(mode)
        if mode == "fill" and self.mode != "fill" and not self.has_ct():
            self.failed.emit(NO_CT_FILL)
            return
        # choosing the active tool again goes back to moving the crosshair
        self.mode = "navigate" if mode == self.mode and mode != "navigate" else mode
        self.changed.emit()

    def toggle_target(self) -> None:
        self.target = TARGETS[(TARGETS.index(self.target) + 1) % len(TARGETS)]
        self.changed.emit()

    def toggle_form(self) -> None:
        self.form = "sphere" if self.form == "disc" else "disc"
        self.changed.emit()

    def toggle_hu_limit(self) -> None:
        if not self.hu_limit and not self.has_ct():
            self.failed.emit(NO_CT_HU)
            return
        self.hu_limit = not self.hu_limit
        self.changed.emit()

    def resize(self, steps: int) -> None:
        lo, hi = float(self.presets["brush_radius_min"]), float(self.presets["brush_radius_max"])
        self.radius = float(np.clip(self.radius + steps, lo, hi))
        self.changed.emit()

    @property
    def painting(self) -> bool:
        return self.mode in ("brush", "eraser")

    def describe(self) -> str:
        if self.mode == "navigate":
            return ""
        what = "reference" if self.target == "reference" else "active prediction"
        if self.mode == "fill":
            lo, hi = self.presets["fill_hu_range"]
            return f"Fill on the {what} ({lo}..{hi} HU)"
        hu = " HU-limited" if self.hu_limit else ""
        return f"{self.mode.capitalize()} {self.form} r={self.radius:g}{hu} on the {what}"

    # -- edits (GUI thread; a stroke is one undo step) ---------------------------------
    def press(self, voxel: Sequence[int], orientation: str) -> None:
        session = self.case.session
        try:
            layer = self.case.edit_layer_name(self.target)
            if self.mode == "fill" and session.ct is None:
                self.failed.emit(NO_CT_FILL)
                return
            if self.mode == "fill":
                lo, hi = self.presets["fill_hu_range"]
                session.flood_fill(
                    layer,
                    voxel,
                    (float(lo), float(hi)),
                    max_voxels=int(self.presets["fill_max_voxels"]),
                    max_radius=int(self.presets["fill_max_radius"]),
                )
                return
            session.begin_stroke()
            self._last = None
            self.drag(voxel, orientation)
        except InputError as exc:
            self.failed.emit(str(exc))

    def drag(self, voxel: Sequence[int], orientation: str) -> None:
        if not self.painting or not self.case.session.stroke_open:
            return
        try:
            self._dabs(voxel, orientation)
        except InputError as exc:  # a mouse move never raises into Qt: the status bar says why
            self.failed.emit(str(exc))
            self.release()

    def _dabs(self, voxel: Sequence[int], orientation: str) -> None:
        layer = self.case.edit_layer_name(self.target)
        hu = tuple(self.presets["brush_hu_range"]) if self.hu_limit and self.case.session.ct is not None else None
        end = np.asarray(voxel, dtype=float)
        # dabs every half radius along the drag: fast mouse moves leave no gaps
        start = end if self._last is None else np.asarray(self._last, dtype=float)
        n = max(1, int(np.ceil(np.abs(end - start).max() / max(self.radius / 2, 0.5))))
        for t in np.linspace(0.0, 1.0, n + 1)[1 if self._last is not None else n :]:
            c = tuple(int(round(v)) for v in start + t * (end - start))
            self.case.session.brush(
                layer, c, self.radius, self.mode == "brush", form=self.form, orientation=orientation, hu_range=hu
            )
        z, y, x = (int(v) for v in voxel)
        self._last = (z, y, x)

    def release(self) -> None:
        if self.case.session.stroke_open:
            self.case.session.end_stroke()
        self._last = None
