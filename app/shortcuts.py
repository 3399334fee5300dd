"""Every key binding of Airway Studio, in one table.

Widgets never spell a key sequence themselves: they look an action up by name
(``keys("next_region")``) or let :func:`bind` set it on a ``QAction``. The Help
dialog lists this table, so what users read is what the app does. Mouse
gestures are listed here too (``mouse=True``) so that Help shows them; they are
never registered as shortcuts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction, QKeySequence


@dataclass(frozen=True)
class Binding:
    action: str
    keys: tuple[str, ...]
    description: str
    group: str
    mouse: bool = False


def _b(action: str, keys: str | tuple[str, ...], description: str, group: str, mouse: bool = False) -> Binding:
    """One row; ``keys=()`` for an action reached only through its menu entry."""
    return Binding(action, (keys,) if isinstance(keys, str) else tuple(keys), description, group, mouse)


KEYMAP: tuple[Binding, ...] = (
    # File
    _b("open_ct", "Ctrl+O", "Open a CT (file or DICOM folder)", "File"),
    _b("open_dicom", "Ctrl+Alt+O", "Open a CT from a DICOM series folder", "File"),
    _b("open_reference", "Ctrl+R", "Open a reference airway label", "File"),
    _b("open_prediction", "Ctrl+Shift+P", "Open a prediction (mask or probability map)", "File"),
    _b("open_project", "Ctrl+Shift+O", "Open a project file", "File"),
    _b("save_project", "Ctrl+S", "Save the project", "File"),
    _b("save_project_as", "Ctrl+Shift+S", "Save the project as...", "File"),
    _b("open_demo", "Ctrl+D", "Open the phantom demo case", "File"),
    _b("screenshot", "F12", "Save a screenshot of the window", "File"),
    _b("quit", "Ctrl+Q", "Quit", "File"),
    # Dataset
    _b("open_dataset", "Ctrl+Shift+D", "Open a dataset folder as a worklist of its cases", "Dataset"),
    _b("open_dataset_manifest", (), "Open a dataset from a CSV manifest (case, ct, reference, models...)", "Dataset"),
    _b("save_next_case", "Ctrl+]", "Save the reviewed label (if edited) and open the next case", "Dataset"),
    _b("save_previous_case", "Ctrl+[", "Save the reviewed label (if edited) and open the previous case", "Dataset"),
    _b("case_done", "Ctrl+Alt+D", "Mark the open case done (again: reopen it, in review)", "Dataset"),
    # Slices
    _b("slice_next", ("Up", "Right"), "Next slice in the view under the mouse", "Slices"),
    _b("slice_previous", ("Down", "Left"), "Previous slice", "Slices"),
    _b("slice_page_next", "PgUp", "Ten slices forward", "Slices"),
    _b("slice_page_previous", "PgDown", "Ten slices back", "Slices"),
    _b("zoom_in", ("Ctrl+=", "Ctrl++"), "Zoom in", "Slices"),
    _b("zoom_out", "Ctrl+-", "Zoom out", "Slices"),
    _b("reset_view", "Ctrl+0", "Fit all slice views", "Slices"),
    _b("centre_cursor", "C", "Centre the slice views on the crosshair", "Slices"),
    _b("toggle_crosshair", "X", "Show or hide the crosshair", "Slices"),
    # Window / level
    _b("preset_lung", "Alt+1", "Window preset: lung (W1500 / L-600)", "Window/level"),
    _b("preset_mediastinum", "Alt+2", "Window preset: mediastinum (W350 / L40)", "Window/level"),
    _b("preset_bone", "Alt+3", "Window preset: bone (W2000 / L300)", "Window/level"),
    _b("preset_next", "W", "Cycle the window presets", "Window/level"),
    # Overlay
    _b("toggle_overlay", "O", "Show or hide the segmentation overlay", "Overlay"),
    _b("toggle_outline", "Shift+O", "Overlay as filled regions or outlines", "Overlay"),
    _b("toggle_tp", "Ctrl+1", "Show or hide true positives", "Overlay"),
    _b("toggle_fp", "Ctrl+2", "Show or hide false positives", "Overlay"),
    _b("toggle_fn", "Ctrl+3", "Show or hide false negatives", "Overlay"),
    _b("toggle_heatmap", "H", "Probability heat map instead of the classes", "Overlay"),
    _b("opacity_up", "]", "More overlay opacity", "Overlay"),
    _b("opacity_down", "[", "Less overlay opacity", "Overlay"),
    _b("next_prediction", "P", "Make the next prediction active", "Overlay"),
    _b("previous_prediction", "Shift+P", "Make the previous prediction active", "Overlay"),
    # Error regions
    _b("next_region", "N", "Go to the next error region", "Regions"),
    _b("previous_region", "Shift+N", "Go to the previous error region", "Regions"),
    _b("status_unreviewed", "1", "Mark the region unreviewed", "Regions"),
    _b("status_confirmed", "2", "Mark the region a confirmed error", "Regions"),
    _b("status_reference_error", "3", "Mark the region a reference error", "Regions"),
    _b("status_flagged", "4", "Flag the region for discussion", "Regions"),
    _b("add_to_reference", "A", "Add the FP region to the reference (the annotators missed an airway)", "Regions"),
    _b("remove_from_reference", "R", "Remove the FN region from the reference (not an airway)", "Regions"),
    _b("undo", "Ctrl+Z", "Undo the last edit", "Edit"),
    _b("redo", "Ctrl+Shift+Z", "Redo the edit", "Edit"),
    _b("tool_brush", "B", "Brush tool (paint label voxels; again: back to the crosshair)", "Edit"),
    _b("tool_eraser", "E", "Eraser tool (again: back to the crosshair)", "Edit"),
    _b("tool_fill", "F", "Flood fill: grow a lumen from the clicked voxel within an HU range", "Edit"),
    _b("brush_larger", "Alt+]", "Larger brush", "Edit"),
    _b("brush_smaller", "Alt+[", "Smaller brush", "Edit"),
    _b("brush_form", "Shift+B", "Brush shape: disc (one slice) or sphere", "Edit"),
    _b("brush_hu_limit", "Alt+H", "Limit the brush to its HU range", "Edit"),
    _b("edit_target", "T", "Edit the reference or the active prediction", "Edit"),
    _b("save_reference", "Ctrl+Alt+S", "Save the edited reference (backup of the original, edit log)", "Edit"),
    _b("save_reference_as", "Ctrl+Alt+Shift+S", "Save the reference as a new file", "Edit"),
    _b("save_prediction_as", "Ctrl+Alt+P", "Save the active prediction as a label file", "Edit"),
    _b("use_prediction_as_reference", (), "Use the active prediction as the reference (undoable)", "Edit"),
    # 3D
    _b("camera_reset", "Ctrl+Alt+0", "3D: reset the camera", "3D view"),
    _b("camera_anterior", "Ctrl+Alt+1", "3D: view from the front", "3D view"),
    _b("camera_posterior", "Ctrl+Alt+2", "3D: view from the back", "3D view"),
    _b("camera_left", "Ctrl+Alt+3", "3D: view from the patient's left", "3D view"),
    _b("camera_right", "Ctrl+Alt+4", "3D: view from the patient's right", "3D view"),
    _b("camera_superior", "Ctrl+Alt+5", "3D: view from above", "3D view"),
    _b("colour_mode_next", "G", "3D: cycle colouring (TP/FP/FN, generation, detected/missed)", "3D view"),
    _b("focus_cursor_3d", "Ctrl+Alt+F", "3D: focus the camera on the crosshair", "3D view"),
    _b("screenshot_3d", "Shift+F12", "3D: save the 3D view as PNG", "3D view"),
    # Tools
    _b("segment", "Ctrl+G", "Segment the CT with a model", "Tools"),
    _b("segment_demo", "Ctrl+Shift+G", "Segment the CT with the shipped model", "Tools"),
    _b("cancel_job", "Esc", "Cancel the running background job", "Tools"),
    _b("export_metrics", "Ctrl+E", "Export metrics to CSV/JSON", "Tools"),
    # Help
    _b("help_shortcuts", "F1", "Show this list of shortcuts", "Help"),
    # Mouse
    _b("mouse_click", "Left click / drag", "Move the crosshair", "Mouse", True),
    _b("mouse_scroll", "Wheel", "Scroll slices", "Mouse", True),
    _b("mouse_zoom", "Ctrl+Wheel", "Zoom at the mouse", "Mouse", True),
    _b("mouse_pan", ("Middle drag", "Space+drag"), "Pan", "Mouse", True),
    _b("mouse_window", "Right drag", "Window (left/right) and level (up/down)", "Mouse", True),
    _b("mouse_pick3d", "Left click on a surface", "3D: move the crosshair to the point", "Mouse", True),
    _b("mouse_paint", "Left drag (brush / eraser)", "Paint or erase label voxels", "Mouse", True),
    _b("mouse_brush_size", "Shift+Wheel (brush / eraser)", "Brush size", "Mouse", True),
)

_BY_ACTION = {b.action: b for b in KEYMAP}
if len(_BY_ACTION) != len(KEYMAP):  # pragma: no cover - guards edits to the table
    raise RuntimeError("app.shortcuts.KEYMAP has a duplicated action name")


def binding(action: str) -> Binding:
    try:
        return _BY_ACTION[action]
    except KeyError:
        raise KeyError(f"No key binding named '{action}'; add it to app/shortcuts.py KEYMAP") from None


def keys(action: str) -> list[QKeySequence]:
    """The key sequences of ``action`` (empty for mouse gestures)."""
    b = binding(action)
    return [] if b.mouse else [QKeySequence(k) for k in b.keys]


def key_text(action: str) -> str:
    """The keys as people read them, e.g. ``"Up, Right"``."""
    return ", ".join(binding(action).keys)


def bind(qaction: QAction, action: str) -> QAction:
    """Give ``qaction`` the keys of ``action`` and a tooltip naming them."""
    b = binding(action)
    qaction.setShortcuts(keys(action))
    qaction.setToolTip(f"{b.description} ({key_text(action)})")
    qaction.setObjectName(f"action_{action}")
    return qaction


def _without_checked(slot: Callable[..., Any]) -> Callable[[bool], Any]:
    """``triggered(bool checked)`` calls ``slot()``: a slot with an optional first parameter
    (``save_reference(path=None)``) would otherwise get ``False`` as that parameter."""

    def call(_checked: bool = False) -> Any:
        return slot()

    return call


def make_action(
    parent: QObject,
    action: str,
    text: str | None = None,
    slot: Callable[..., Any] | None = None,
    checkable: bool = False,
) -> QAction:
    """A ``QAction`` for ``action`` owned by ``parent`` with its keys and an optional slot.

    A checkable action's slot gets the new state (``slot(on)``); any other slot is called
    without arguments, never with Qt's ``checked`` flag."""
    qa = QAction(text or binding(action).description, parent)
    qa.setCheckable(checkable)
    bind(qa, action)
    if slot is not None:
        qa.triggered.connect(slot if checkable else _without_checked(slot))
    return qa


def groups() -> dict[str, list[Binding]]:
    """The table grouped for display, in table order."""
    out: dict[str, list[Binding]] = {}
    for b in KEYMAP:
        out.setdefault(b.group, []).append(b)
    return out


def conflicts() -> list[tuple[str, str, str]]:
    """Pairs of actions sharing a key sequence (should be empty)."""
    seen: dict[str, str] = {}
    out = []
    for b in KEYMAP:
        if b.mouse:
            continue
        for k in b.keys:
            norm = QKeySequence(k).toString()
            if norm in seen:
                out.append((norm, seen[norm], b.action))
            else:
                seen[norm] = b.action
    return out
