"""The 3D view: airway surfaces (pyvistaqt) linked to the case's crosshair.

Surfaces come from :mod:`core.surfaces` (VTK surface nets on the bounding box)
and are built in a background job (:class:`app.workers.Job`); the GUI thread
only hands finished meshes to VTK. Faces carry a ``label`` and are coloured
through a lookup table, one scene per colouring:

- ``outcome``: the skin of prediction ∪ reference, TP / FP / FN faces in the
  overlay colours of ``resources/presets/overlay_colors.json``;
- ``generation``: the reference tree by branch generation (core.tree);
- ``detection``: reference branches detected / missed by the active
  prediction (ATM'22 rule, core.metrics per-branch table);
- ``lobe`` / ``segment``: the reference tree by the lobe or segmental bronchus each branch
  belongs to (the session's branch names, corrections included), in core.anatomy's colours.

In TP/FP/FN colouring the FP and FN faces are their own actor, drawn opaque
over a TP skin that can be made see-through. The active error region is
outlined and the camera focuses on it; the crosshair is three short lines.
Normals and the actor split are computed in the worker too, and the last few
scenes are cached, so flipping predictions or colourings is immediate. A left click (press and release without dragging) on a surface
picks the point with a ``vtkCellPicker`` and moves the case cursor to the
nearest airway voxel. VTK's event positions are in device pixels, as are the
picker's, so picking is right on HiDPI screens whatever ``devicePixelRatio``.

Without an OpenGL-capable platform (``QT_QPA_PLATFORM=offscreen``) the widget
shows a note instead of the scene; everything else in the app keeps working.
"""

from __future__ import annotations

import colorsys
import functools
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from PySide6.QtCore import QPoint, Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import QGuiApplication, QImage
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QMenu, QSizePolicy, QToolButton, QVBoxLayout, QWidget

from app.review.case_view import CaseView
from core.box import Box, bounding_box
from core.errors import InputError
from core.metrics import AirwayMetrics
from core.progress import Progress
from core.regions import ErrorRegion
from core.surfaces import (
    FN,
    FP,
    TP,
    labels_surface,
    mask_surface,
    outcome_surface,
    relabel,
    select_faces,
    world_to_voxel,
)
from core.volume import Geometry

COLOUR_MODES: tuple[tuple[str, str], ...] = (
    ("outcome", "TP / FP / FN"),
    ("generation", "Branch generation"),
    ("detection", "Detected / missed branches"),
    ("lobe", "Lobes"),
    ("segment", "Segments"),
)
NAME_MODES = ("lobe", "segment")

MODE_KEYS = tuple(k for k, _ in COLOUR_MODES)
CAMERA_PRESETS = ("reset", "anterior", "posterior", "left", "right", "superior")

# Generations get evenly spaced hues; a 12-step cycle keeps neighbouring
# generations apart while distal ones (rarely past 10) stay distinct.
_GENERATION_CYCLE = 12
_FALLBACK_COLOURS = {
    "TP": (240, 228, 170),
    "FP": (40, 200, 60),
    "FN": (230, 40, 40),
    "reference": (255, 196, 0),
    "prediction": (70, 150, 255),
}


def overlay_colours() -> dict[str, tuple[int, int, int]]:
    """Class colours from the overlay preset file (shared with the slice views)."""
    try:
        from core.resources import load_json_resource

        data = load_json_resource("presets", "overlay_colors.json")
        out = {k: tuple(int(c) for c in v["rgb"]) for k, v in data.get("classes", {}).items()}
        out["highlight"] = tuple(int(c) for c in data.get("region_highlight_rgb", (255, 0, 255)))
        out["crosshair"] = tuple(int(c) for c in data.get("crosshair_rgb", (0, 190, 255)))
        return {**_FALLBACK_COLOURS, **out}  # type: ignore[dict-item]
    except Exception:  # noqa: BLE001 - a damaged preset file must not stop the 3D view
        return {**_FALLBACK_COLOURS, "highlight": (255, 0, 255), "crosshair": (0, 190, 255)}


def anatomy_colour(name: str) -> tuple[int, int, int]:
    """The colour of a lobe or bronchus name in core.anatomy's colour table (the one ``airway label``
    writes for Slicer and ITK-SNAP), so the 3D view and the label files agree."""
    from core.anatomy.colours import colour_of

    r, g, b = colour_of(name)
    return int(r), int(g), int(b)


def name_order(name: str) -> tuple[int, str]:
    """Legend order: lobes as core.anatomy lists them, then bronchi by their label value."""
    from core.anatomy.names import ALL_NAMES, LOBES

    if name in LOBES:
        return LOBES.index(name), name
    return len(LOBES) + (ALL_NAMES.index(name) if name in ALL_NAMES else len(ALL_NAMES)), name


def branch_groups(names: Any, mode: str) -> dict[int, str]:
    """Branch id -> its lobe (``mode`` "lobe") or segmental bronchus ("segment"), where it has one."""
    if names is None:
        return {}
    out = {}
    for bid, n in names.names.items():
        group = n.lobe if mode == "lobe" else n.segment
        if group:
            out[int(bid)] = str(group)
    return out


def generation_colour(generation: int) -> tuple[int, int, int]:
    h = (generation % _GENERATION_CYCLE) / _GENERATION_CYCLE
    r, g, b = colorsys.hsv_to_rgb(h, 0.65, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


# -- scene building (worker side, Qt-free) --------------------------------------------


@dataclass
class SceneInput:
    """What one scene is built from (arrays are shared, never modified)."""

    geometry: Geometry
    mode: str = "outcome"
    prediction: np.ndarray | None = None
    reference: np.ndarray | None = None
    branch_map: np.ndarray | None = None
    generations: dict[int, int] = field(default_factory=dict)
    detected: dict[int, bool] | None = None
    groups: dict[int, str] | None = None  # lobe / segment colouring: branch id -> lobe or segment name
    # (reference, prediction) edit revisions: arrays are edited in place, so the
    # cache tells scenes apart by these, not by the arrays' identity alone
    revisions: tuple[int, int] = (0, 0)


@dataclass
class Scene:
    """A labelled surface and the colour of each label, plus what the legend says."""

    surface: Any  # pyvista.PolyData
    colours: dict[int, tuple[int, int, int]]
    legend: list[tuple[str, tuple[int, int, int]]]
    mode: str
    note: str = ""
    # (actor name, mesh with per-face "rgb" and point normals, is the TP skin),
    # made in the worker so the GUI thread only hands them to VTK
    parts: list[tuple[str, Any, bool]] = field(default_factory=list)

    def rgb_of(self, labels: np.ndarray) -> np.ndarray:
        """uint8 (n, 3) colours of face labels through the lookup table (unknown labels grey)."""
        labels = np.asarray(labels, dtype=np.int64)
        top = max([0, *self.colours.keys(), int(labels.max()) if labels.size else 0])
        lut = np.full((top + 1, 3), 200, np.uint8)
        for k, c in self.colours.items():
            lut[k] = c
        return np.asarray(lut[labels])

    def face_rgb(self) -> np.ndarray:
        """Colours of every face of the surface."""
        return self.rgb_of(np.asarray(self.surface.cell_data["label"]) if self.surface.n_cells else np.zeros(0, int))


# Faces drawn at most, about: a software renderer (llvmpipe, VMs, remote desktops) draws
# 0.4-1 M faces a second (the lower figure on a loaded 2-core machine), and every frame of the GUI thread counts (issue 22: a
# 251,000-face ATM'22 tree cost 100-250 ms a frame). Larger surfaces are coarsened
# in the worker; ``scene.surface`` itself (picking, tests) keeps every face.
RENDER_FACE_BUDGET = 50_000


def build_scene(inp: SceneInput, *, progress: Progress | None = None, cancel: Any = None) -> Scene:
    """The surface for one colouring mode, split into actors, normals computed (worker side)."""
    scene = surface_scene(inp, progress=progress, cancel=cancel)
    if cancel is not None and cancel.is_set():
        from core.errors import Cancelled

        raise Cancelled()
    return prepare_parts(scene, voxel_mm=min(inp.geometry.spacing))


_SCENE_POOL: QThreadPool | None = None


def scene_pool() -> QThreadPool:
    """Threads that build 3D scenes, two at most (a superseded build may still be finishing its
    step), so rebuilds after quick edits never take every thread of the jobs' pool.

    They run at the process's CPU priority, on purpose. They were once niced (+10) to leave
    the CPU to the GUI thread, but a Python thread holds the GIL while it runs: on a loaded
    machine the kernel then kept the niced thread off the CPU for 300-450 ms *while it held
    the GIL*, and the GUI thread waited for it (a priority inversion; per-thread schedstat of
    the annotator-day test at load 4: GUI thread 5-9 ms on a CPU in a 465 ms stall, the
    scene thread 427 ms in the run queue). At equal priority the GIL changes hands every
    5 ms, and the worst stall of the same test fell from 465 to 207 ms."""
    global _SCENE_POOL
    if _SCENE_POOL is None:
        _SCENE_POOL = QThreadPool()
        _SCENE_POOL.setMaxThreadCount(2)
    return _SCENE_POOL


def coarsen(mesh: Any, voxel_mm: float, budget: int | None = None) -> Any:
    """``mesh`` with about ``budget`` faces or fewer: vertices clustered on a grid of 1.5, then
    2, 3... voxels (quadric clustering keeps the shape and the faces' labels)."""
    import pyvista as pv
    from vtkmodules.vtkFiltersCore import vtkQuadricClustering

    budget = RENDER_FACE_BUDGET if budget is None else budget
    if mesh.n_cells <= budget or voxel_mm <= 0:
        return mesh
    b = np.asarray(mesh.bounds, float).reshape(3, 2)
    out = mesh
    for factor in (1.5, 2.0, 3.0, 4.0):
        q = vtkQuadricClustering()
        q.SetAutoAdjustNumberOfDivisions(False)
        q.SetInputData(mesh)
        q.SetNumberOfDivisions(*[max(1, int((hi - lo) / (factor * voxel_mm))) for lo, hi in b])
        q.SetCopyCellData(True)
        q.Update()
        out = pv.wrap(q.GetOutput())
        if out.n_cells <= budget:
            break
    return out


def prepare_parts(scene: Scene, voxel_mm: float = 0.0) -> Scene:
    """Point normals (smooth shading) and the actors: in TP/FP/FN colouring the error faces are
    their own actor, drawn opaque over a TP skin that may be see-through. Surfaces above
    :data:`RENDER_FACE_BUDGET` faces are drawn coarsened (:func:`coarsen`)."""
    if not scene.surface.n_cells:
        scene.parts = []
        return scene
    # surface nets wind boundary faces from the label to the background, so
    # normals are already consistent: skip VTK's costly re-orientation pass
    mesh = coarsen(scene.surface, voxel_mm).compute_normals(
        cell_normals=False,
        point_normals=True,
        split_vertices=False,
        consistent_normals=False,
        auto_orient_normals=False,
    )
    if scene.mode == "outcome" and set(scene.colours) >= {TP, FP, FN}:
        parts = [("airway_tp", select_faces(mesh, [TP]), True), ("airway_errors", select_faces(mesh, [FP, FN]), False)]
    else:
        parts = [("airway", mesh, False)]
    scene.parts = []
    for name, part, is_tp in parts:
        if part.n_cells:
            part.cell_data["rgb"] = scene.rgb_of(np.asarray(part.cell_data["label"]))
            scene.parts.append((name, part, is_tp))
    return scene


def surface_scene(inp: SceneInput, *, progress: Progress | None = None, cancel: Any = None) -> Scene:
    """The labelled surface for one colouring mode; falls back to what the data allows (and says so)."""
    colours = overlay_colours()

    mode, note = inp.mode, ""
    if mode in ("generation", "detection", *NAME_MODES) and (inp.branch_map is None or inp.reference is None):
        mode, note = "outcome", "branch colours need the reference tree; showing TP/FP/FN"
    if mode == "detection" and not inp.detected:
        mode, note = "generation", "no per-branch detection for this prediction yet; showing generations"
    if mode in NAME_MODES and inp.branch_map is not None and not inp.groups:
        mode, note = "generation", "no branch names yet; showing generations"

    if mode == "outcome":
        if inp.prediction is not None and inp.reference is not None:
            surf = outcome_surface(inp.prediction, inp.reference, inp.geometry, progress=progress, cancel=cancel)
            cmap = {TP: colours["TP"], FP: colours["FP"], FN: colours["FN"]}
            legend = [("TP", colours["TP"]), ("FP", colours["FP"]), ("FN", colours["FN"])]
        elif inp.prediction is not None:
            surf = mask_surface(inp.prediction, inp.geometry, progress=progress, cancel=cancel)
            cmap, legend = {1: colours["prediction"]}, [("prediction", colours["prediction"])]
        elif inp.reference is not None:
            surf = mask_surface(inp.reference, inp.geometry, progress=progress, cancel=cancel)
            cmap, legend = {1: colours["reference"]}, [("reference", colours["reference"])]
        else:
            import pyvista as pv

            return Scene(pv.PolyData(), {}, [], "outcome", "no label to show")
        return Scene(surf, cmap, legend, "outcome", note)

    assert inp.branch_map is not None and inp.reference is not None
    # work on the reference's box only: full-size int32 label maps would cost
    # four bytes a voxel of the whole CT
    box = bounding_box(inp.reference)
    if box is None:
        import pyvista as pv

        return Scene(pv.PolyData(), {}, [], mode, "the reference is empty")
    bmap, ref = inp.branch_map[box.slices], inp.reference[box.slices]
    if mode == "generation":
        # label = generation + 1; reference voxels without a branch id (pieces
        # the tree parser dropped) show as generation 0
        labels = relabel(bmap, {b: g + 1 for b, g in inp.generations.items()}, default=1)
        labels[(labels == 0) & ref] = 1
        labels[~ref] = 0
        surf = labels_surface(labels, inp.geometry, offset=box.start, progress=progress, cancel=cancel)
        gens = sorted({int(v) - 1 for v in np.unique(np.asarray(surf.cell_data["label"]))}) if surf.n_cells else []
        cmap = {g + 1: generation_colour(g) for g in gens}
        legend = [(f"generation {g}", generation_colour(g)) for g in gens]
        return Scene(surf, cmap, legend, "generation", note)
    if mode in NAME_MODES:
        groups = inp.groups or {}
        order = sorted(set(groups.values()), key=name_order)
        value = {g: k + 2 for k, g in enumerate(order)}  # 1: no lobe / segment
        labels = relabel(bmap, {b: value[g] for b, g in groups.items()}, default=1)
        labels[(labels == 0) & ref] = 1
        labels[~ref] = 0
        surf = labels_surface(labels, inp.geometry, offset=box.start, progress=progress, cancel=cancel)
        shown = {int(v) for v in np.unique(np.asarray(surf.cell_data["label"]))} if surf.n_cells else set()
        from core.anatomy.colours import UNNAMED_COLOUR  # faces without a lobe / segment

        cmap = {1: UNNAMED_COLOUR, **{value[g]: anatomy_colour(g) for g in order}}
        legend = [(g, anatomy_colour(g)) for g in order if value[g] in shown]
        if 1 in shown:
            legend.append(("central / unnamed" if mode == "lobe" else "no segment", UNNAMED_COLOUR))
        return Scene(surf, cmap, legend, mode, note)

    # detection: 1 detected, 2 missed
    detected = inp.detected or {}
    labels = relabel(bmap, {b: 1 if ok else 2 for b, ok in detected.items()}, default=2)
    labels[(labels == 0) & ref] = 2
    labels[~ref] = 0
    surf = labels_surface(labels, inp.geometry, offset=box.start, progress=progress, cancel=cancel)
    cmap = {1: colours["TP"], 2: colours["FN"]}
    return Scene(surf, cmap, [("detected", colours["TP"]), ("missed", colours["FN"])], "detection", note)


def branch_detection(metrics: AirwayMetrics | None) -> dict[int, bool] | None:
    """Branch id -> detected, as core.metrics decided it (``BranchResult.detected``, with the
    metrics' own ``detection_threshold``): the view never re-decides detection."""
    if metrics is None or not metrics.branches:
        return None
    return {int(b.id): bool(b.detected) for b in metrics.branches}


def region_voxels(
    region: ErrorRegion,
    shape: tuple[int, int, int] | None = None,
    prediction: np.ndarray | None = None,
    reference: np.ndarray | None = None,
) -> tuple[Box, np.ndarray]:
    """(box, mask within box) of an error region: the voxels core.regions kept (never recomputed)."""
    return region.box, region.mask()


def region_surface(
    region: ErrorRegion, geometry: Geometry, *, progress: Any = None, cancel: Any = None
) -> tuple[Any, np.ndarray, float]:
    """(surface, world centre, world radius) of one error region, for highlighting and focusing."""
    box, m = region_voxels(region)
    surf = labels_surface(m.astype(np.uint8), geometry, offset=box.start, smoothing=False)
    corners = geometry.index_to_world(np.array([box.start, np.asarray(box.stop) - 1], float))
    centre = corners.mean(axis=0)
    radius = float(np.linalg.norm(corners[1] - corners[0]) / 2 + max(geometry.spacing))
    return surf, centre, radius


def _view_directions() -> np.ndarray:
    """Unit view directions (LPS world, from the target towards the camera): the six axes and
    the twelve edge diagonals; anterior first (the default view)."""
    dirs = [(0, -1, 0), (0, 1, 0), (1, 0, 0), (-1, 0, 0), (0, 0, 1), (0, 0, -1)]
    for a in (-1, 1):
        for b in (-1, 1):
            dirs += [(a, b, 0), (a, 0, b), (0, a, b)]
    d = np.asarray(dirs, float)
    return np.asarray(d / np.linalg.norm(d, axis=1, keepdims=True))


VIEW_DIRECTIONS = _view_directions()


def occluders(
    start_zyx: Sequence[float],
    direction: np.ndarray,
    masks: Sequence[np.ndarray],
    geometry: Geometry,
    own: ErrorRegion | None = None,
    reach_mm: float = 200.0,
) -> int:
    """How many airway walls a ray from voxel ``start_zyx`` towards ``direction`` (world)
    crosses before it leaves the volume: entries into any of ``masks`` outside the
    region ``own``. 0: the camera sees the region unhidden from that side."""
    step = 0.5 * min(geometry.spacing)
    t = np.arange(1, int(reach_mm / step)) * step
    start = geometry.index_to_world(np.asarray(start_zyx, float))
    idx = np.rint(geometry.world_to_index(start[None, :] + t[:, None] * direction[None, :])).astype(np.int64)
    shape = np.asarray(masks[0].shape)
    inside = np.all((idx >= 0) & (idx < shape), axis=1)
    if not inside.all():
        idx = idx[: int(np.argmin(inside))]  # up to where the ray leaves the volume
    if not len(idx):
        return 0
    z, y, x = idx.T
    fg = np.zeros(len(idx), bool)
    for m in masks:
        fg |= m[z, y, x]
    if own is not None:
        lo, hi = np.array(own.box.start), np.array(own.box.stop)
        in_box = np.all((idx >= lo) & (idx < hi), axis=1)
        if in_box.any():
            local = own.mask()
            k = idx[in_box] - lo
            mine = np.zeros(len(idx), bool)
            mine[in_box] = local[k[:, 0], k[:, 1], k[:, 2]]
            fg &= ~mine
    return int(fg[0]) + int(np.count_nonzero(fg[1:] & ~fg[:-1]))


def clear_view_direction(
    region: ErrorRegion,
    masks: Sequence[np.ndarray],
    geometry: Geometry,
    current: np.ndarray | None = None,
) -> np.ndarray:
    """The view direction (world, target to camera) in which the fewest airway walls hide
    ``region``; among equally clear ones, the nearest to ``current`` (the camera moves
    as little as it can)."""
    start = region.focus_zyx if region.focus_zyx is not None else region.centroid_zyx
    counts = np.array([occluders(start, d, masks, geometry, region) for d in VIEW_DIRECTIONS])
    best = np.flatnonzero(counts == counts.min())
    if current is None or not np.linalg.norm(current):
        return np.asarray(VIEW_DIRECTIONS[best[0]])
    cur = np.asarray(np.asarray(current, float) / np.linalg.norm(current))
    if occluders(start, cur, masks, geometry, region) <= counts.min():
        return cur
    return np.asarray(VIEW_DIRECTIONS[best[int(np.argmax(VIEW_DIRECTIONS[best] @ cur))]])


def region_view(
    region: ErrorRegion,
    geometry: Geometry,
    masks: Sequence[np.ndarray],
    current: np.ndarray | None = None,
    *,
    progress: Any = None,
    cancel: Any = None,
) -> tuple[Any, np.ndarray, float, np.ndarray]:
    """:func:`region_surface` plus the clearest view direction (worker side)."""
    surf, centre, radius = region_surface(region, geometry)
    direction = clear_view_direction(region, masks, geometry, current) if masks else current
    return surf, centre, radius, np.asarray(direction if direction is not None else VIEW_DIRECTIONS[0], float)


# -- the widget ---------------------------------------------------------------------------


def three_d_supported() -> bool:
    """False where Qt cannot give VTK an OpenGL window (offscreen/minimal platforms)."""
    if os.environ.get("AIRWAY_NO_3D"):
        return False
    app = QGuiApplication.instance()
    name = app.platformName() if isinstance(app, QGuiApplication) else ""
    return name not in ("offscreen", "minimal", "vnc")


class View3D(QWidget):
    """pyvistaqt scene of the case. Signals: ``sceneReady(str)`` (mode) after each rebuild,
    ``picked(object)`` (voxel z, y, x) after a pick moved the cursor."""

    sceneReady = Signal(str)
    picked = Signal(object)

    def __init__(self, case: CaseView, parent: QWidget | None = None, track_job: Callable[[Any], None] | None = None):
        super().__init__(parent)
        self.setObjectName("view3d")
        self.case = case
        self.track_job = track_job
        self.mode = "outcome"
        self.scene: Scene | None = None
        self.plotter: Any = None
        self._surface_actors: list[Any] = []
        self._scene_cache: list[tuple[SceneInput, Scene]] = []
        self.tp_opacity = 1.0
        self._region_actor: Any = None
        self._cursor_actor: Any = None
        self._build_serial = 0
        self._region_serial = 0
        self._focus_key = ""  # content key of the region the camera follows
        self._job: Any = None
        self._camera_set = False
        self._press: tuple[int, int] | None = None
        self.colours = overlay_colours()
        # set by the window: the review's branch names (core.review.names.NamesLayer) and right-click menu
        self.names_source: Callable[[], Any] | None = None
        self.branch_menu: Callable[[QWidget, tuple[int, int, int]], QMenu | None] | None = None
        self.context_menu: QMenu | None = None
        self._right_press: tuple[int, int] | None = None

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        # the toolbar never asks for width (Ignored): a narrow column clips it instead of
        # squeezing the slice views; the legend wraps on its own row
        self.toolbar = QWidget(self)
        self.toolbar.setObjectName("toolbar3d")
        self.toolbar.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.toolbar.setMinimumWidth(0)
        bar = QHBoxLayout(self.toolbar)
        bar.setContentsMargins(4, 2, 4, 0)
        self.mode_combo = QComboBox(self)
        self.mode_combo.setObjectName("colourMode")
        self.mode_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.mode_combo.setMinimumContentsLength(10)
        for key, text in COLOUR_MODES:
            self.mode_combo.addItem(text, key)
        self.mode_combo.currentIndexChanged.connect(lambda i: self.set_colour_mode(self.mode_combo.itemData(i)))
        bar.addWidget(QLabel("3D:"))
        bar.addWidget(self.mode_combo)
        # camera presets and see-through in one menu: the bar fits a 1024-px window's column
        self.camera_button = QToolButton(self)
        self.camera_button.setObjectName("camera3d")
        self.camera_button.setText("View")
        self.camera_button.setToolTip("Camera presets and TP see-through")
        self.camera_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.camera_button)
        for name, text in (
            ("reset", "Reset camera"),
            ("anterior", "Anterior"),
            ("posterior", "Posterior"),
            ("left", "Left"),
            ("right", "Right"),
            ("superior", "Superior"),
        ):
            menu.addAction(text, functools.partial(self.camera_preset, name))
        menu.addSeparator()
        self.see_through = menu.addAction("TP see-through")
        self.see_through.setObjectName("tpSeeThrough")
        self.see_through.setCheckable(True)
        self.see_through.setToolTip("Draw true positives translucent so FP/FN components inside show")
        self.see_through.toggled.connect(lambda on: self.set_tp_opacity(0.25 if on else 1.0))
        self.camera_button.setMenu(menu)
        bar.addWidget(self.camera_button)
        bar.addStretch(1)
        lay.addWidget(self.toolbar)
        self.legend = QLabel(self)
        self.legend.setObjectName("legend3d")
        self.legend.setWordWrap(True)
        self.legend.setContentsMargins(6, 0, 4, 0)
        self.legend.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.legend.setMinimumWidth(0)
        lay.addWidget(self.legend)

        self.available = three_d_supported()
        if self.available:
            try:
                from pyvistaqt import QtInteractor

                self.plotter = QtInteractor(self, auto_update=False)
                self.plotter.set_background("#1e1f24")
                self.plotter.enable_trackball_style()
                lay.addWidget(self.plotter.interactor, 1)
                self._install_picking()
            except Exception as exc:  # noqa: BLE001 - no GL: say so, keep the app
                self.available = False
                self.plotter = None
                self._unavailable(lay, f"3D view unavailable: {exc}")
        else:
            self._unavailable(lay, "3D view unavailable on this display (no OpenGL); run under X11/Wayland.")

        self._rebuild_timer = QTimer(self)
        self._rebuild_timer.setSingleShot(True)
        self._rebuild_timer.setInterval(30)
        self._rebuild_timer.timeout.connect(self.rebuild)
        # cursor moves (every wheel step in a slice view) are drawn once the
        # scrolling pauses: a frame of a full tree costs a software renderer
        # a few hundred ms
        self._render_timer = QTimer(self)
        self._render_timer.setSingleShot(True)
        self._render_timer.setInterval(80)
        self._render_timer.timeout.connect(self.render)
        case.ctChanged.connect(self._on_new_case)
        for sig in (case.referenceChanged, case.predictionsChanged, case.activePredictionChanged, case.treeChanged):
            sig.connect(self.schedule_rebuild)
        case.metricsChanged.connect(self._on_metrics)
        case.labelChanged.connect(self._on_label_changed)
        # a re-analysis: the region list is new; the panel points the active region at the same
        # region again (activeRegionChanged), and a region gone (corrected) loses its outline
        case.regionsChanged.connect(self._on_regions)
        case.cursorChanged.connect(self._move_cursor_marker)
        case.activeRegionChanged.connect(self.focus_region)
        if case.ct is not None:  # installed over an open case
            self.schedule_rebuild()

    def _unavailable(self, lay: QVBoxLayout, text: str) -> None:
        note = QLabel(text, self)
        note.setObjectName("view3dUnavailable")
        note.setAlignment(Qt.AlignmentFlag.AlignCenter)
        note.setWordWrap(True)
        lay.addWidget(note, 1)

    # -- building ---------------------------------------------------------------------
    def schedule_rebuild(self, *_: Any) -> None:
        self._rebuild_timer.start()

    def _on_label_changed(self, layer: str, _box: Any) -> None:
        act = self.case.active
        if layer == "reference" or (act is not None and layer == act.name):
            self.schedule_rebuild()

    def _on_new_case(self) -> None:
        self._camera_set = False
        self._focus_key = ""
        self._scene_cache.clear()
        self.schedule_rebuild()

    def scene_input(self) -> SceneInput | None:
        case = self.case
        if case.ct is None:
            return None
        active = case.active
        ref = case.reference
        metrics = active.metrics if active is not None and isinstance(active.metrics, AirwayMetrics) else None
        detected = branch_detection(metrics)
        groups = None
        if self.mode in NAME_MODES and self.names_source is not None:
            groups = branch_groups(self.names_source().names, self.mode)
        return SceneInput(
            geometry=case.ct.geometry,
            mode=self.mode,
            prediction=None if active is None else active.mask,
            reference=None if ref is None else ref.mask,
            branch_map=case.branch_map,
            generations=dict(case.generations),
            detected=detected,
            groups=groups,
            revisions=(case.revision("reference"), 0 if active is None else case.revision(active.name)),
        )

    def rebuild(self) -> None:
        """Start building the scene in a worker; the newest request wins."""
        from app.workers import Job

        self._build_serial += 1
        serial = self._build_serial
        if self._job is not None and self._job.running:
            self._supersede(self._job)
        inp = self.scene_input()
        if inp is None:
            self._show_scene(None, serial)
            return
        for key, cached in self._scene_cache:
            if _same_input(key, inp):
                self._show_scene(cached, serial)
                return
        job = Job(build_scene, inp, name="3D surfaces")
        from app.workers import guarded

        # guarded: a scene may finish after the view (and its legend) is gone
        job.result.connect(guarded(self, lambda scene, s=serial, k=inp: self._scene_built(scene, s, k)))
        self._job = job
        if self.track_job is not None:
            self.track_job(job)
        job.start(scene_pool())

    @staticmethod
    def _supersede(job: Any) -> None:
        """Stop a rebuild a newer one replaces. Not a cancel the user asked for: the window's
        "<job>: cancelled" message is disconnected first (issue 22: "3D surfaces: cancelled"
        in the status bar after every edit)."""
        try:
            job.cancelled.disconnect()
        except (RuntimeError, TypeError):  # nothing connected
            pass
        job.cancel()

    def _scene_built(self, scene: Scene, serial: int, key: SceneInput) -> None:
        # a few recent scenes: flipping between predictions (P) or colourings
        # (G) shows them again without rebuilding
        self._scene_cache = [(key, scene)] + [(k, c) for k, c in self._scene_cache if not _same_input(k, key)]
        del self._scene_cache[SCENE_CACHE_SIZE:]
        self._show_scene(scene, serial)

    def _show_scene(self, scene: Scene | None, serial: int) -> None:
        if serial != self._build_serial:
            return  # superseded
        self.scene = scene
        self.legend.setText(self._legend_html(scene))
        if self.plotter is not None:
            p = self.plotter
            for actor in self._surface_actors:
                p.remove_actor(actor, render=False)
            self._surface_actors = []
            if scene is not None and scene.surface.n_cells:
                for name, part, is_tp in scene.parts:
                    actor = p.add_mesh(
                        part,
                        scalars="rgb",
                        rgb=True,
                        name=name,
                        pickable=True,
                        render=False,
                        show_scalar_bar=False,
                        opacity=self.tp_opacity if is_tp else 1.0,
                    )
                    actor.GetProperty().SetInterpolationToGouraud()  # with the worker's point normals
                    self._surface_actors.append(actor)
                if not self._camera_set:
                    self.camera_preset("anterior", render=False)
                    self._camera_set = True
            self._move_cursor_marker(self.case.cursor, render=False)
            self._render_timer.start()  # one frame for the scene and the region's outline
        self.sceneReady.emit(scene.mode if scene is not None else "")

    def _legend_html(self, scene: Scene | None) -> str:
        if scene is None:
            return ""
        items = " ".join(
            f"<span style='color:rgb{tuple(c)}'>&#9632;</span>&nbsp;{name}" for name, c in scene.legend[:24]
        )
        return items + (f" <i>({scene.note})</i>" if scene.note else "")

    # -- colour mode ---------------------------------------------------------------------
    def set_colour_mode(self, mode: str) -> None:
        if mode not in MODE_KEYS:
            raise InputError(f"Unknown 3D colouring '{mode}'.", f"Use one of {', '.join(MODE_KEYS)}.")
        if mode == self.mode:
            return
        self.mode = mode
        i = MODE_KEYS.index(mode)
        if self.mode_combo.currentIndex() != i:
            self.mode_combo.blockSignals(True)
            self.mode_combo.setCurrentIndex(i)
            self.mode_combo.blockSignals(False)
        self.schedule_rebuild()

    def set_tp_opacity(self, opacity: float) -> None:
        """Opacity of the TP skin in the TP/FP/FN colouring (errors stay opaque)."""
        self.tp_opacity = float(min(1.0, max(0.05, opacity)))
        for actor in self._surface_actors:
            if self.plotter is not None and actor is self.plotter.actors.get("airway_tp"):
                actor.GetProperty().SetOpacity(self.tp_opacity)
        if self.plotter is not None:
            self.plotter.render()

    def cycle_colour_mode(self) -> None:
        self.set_colour_mode(MODE_KEYS[(MODE_KEYS.index(self.mode) + 1) % len(MODE_KEYS)])

    # -- camera ----------------------------------------------------------------------------
    def _scene_bounds(self) -> np.ndarray | None:
        if self.scene is not None and self.scene.surface.n_cells:
            return np.asarray(self.scene.surface.bounds, float).reshape(3, 2)
        if self.case.ct is not None:
            g, shape = self.case.ct.geometry, self.case.ct.shape
            corners = g.index_to_world(np.array([(0, 0, 0), np.asarray(shape) - 1], float))
            return np.sort(corners.T, axis=1)
        return None

    def camera_preset(self, name: str, render: bool = True) -> None:
        """Views in LPS world: anterior looks from -y, left from +x, superior from +z."""
        if name not in CAMERA_PRESETS:
            raise InputError(f"Unknown camera preset '{name}'.", f"Use one of {', '.join(CAMERA_PRESETS)}.")
        if self.plotter is None:
            return
        b = self._scene_bounds()
        if b is None:
            return
        centre = b.mean(axis=1)
        size = float(np.linalg.norm(b[:, 1] - b[:, 0])) or 100.0
        direction, up = {
            "reset": ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
            "anterior": ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
            "posterior": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
            "left": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
            "right": ((-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
            "superior": ((0.0, 0.0, 1.0), (0.0, -1.0, 0.0)),
        }[name]
        # the renderer's camera: pyvista's ``plotter.camera`` renders a frame first when unset
        cam = self.plotter.renderer.GetActiveCamera()
        cam.SetFocalPoint(*centre)
        cam.SetPosition(*(centre + np.asarray(direction) * size * 2.0))
        cam.SetViewUp(*up)
        self.plotter.renderer.ResetCamera(*b.ravel())
        self.plotter.renderer.ResetCameraClippingRange()
        self.plotter.camera_set = True  # pyvista would otherwise reset it on the next read
        if render:
            self.plotter.render()

    def view_direction(self) -> np.ndarray | None:
        """Unit vector from the focal point to the camera (world), or None without 3D."""
        if self.plotter is None:
            return None
        cam = self.plotter.renderer.GetActiveCamera()
        d = np.asarray(cam.GetPosition(), float) - np.asarray(cam.GetFocalPoint(), float)
        n = float(np.linalg.norm(d))
        return d / n if n else None

    def focus_point(
        self, world: np.ndarray, radius: float, render: bool = True, direction: np.ndarray | None = None
    ) -> None:
        """Centre on ``world`` at a distance that frames ``radius`` mm, looking along
        ``direction`` (target to camera; default: the current one)."""
        if self.plotter is None:
            return
        cam = self.plotter.renderer.GetActiveCamera()
        d = np.asarray(direction, float) if direction is not None else self.view_direction()
        if d is None or not np.linalg.norm(d):
            d = VIEW_DIRECTIONS[0]
        d = d / np.linalg.norm(d)
        angle = np.radians(cam.GetViewAngle() or 30.0)
        # frame the region with its surroundings (at least 15 mm around it)
        distance = max(radius * 1.5, 15.0) / np.tan(angle / 2)
        up = np.asarray(cam.GetViewUp(), float)
        if abs(float(up @ d)) > 0.95:  # looking along the old up: take another
            up = np.array([0.0, -1.0, 0.0]) if abs(d[2]) > 0.9 else np.array([0.0, 0.0, 1.0])
        cam.SetFocalPoint(*np.asarray(world, float))
        cam.SetPosition(*(np.asarray(world, float) + d * distance))
        cam.SetViewUp(*up)
        cam.OrthogonalizeViewUp()
        self.plotter.renderer.ResetCameraClippingRange()
        self.plotter.camera_set = True
        if render:
            self.plotter.render()

    def focus_cursor(self) -> None:
        if self.case.ct is None:
            return
        world = self.case.ct.geometry.index_to_world(self.case.cursor)
        self.focus_point(world, 20.0)

    # -- regions ----------------------------------------------------------------------------
    def focus_region(self, index: int) -> None:
        """Highlight error region ``index`` of the active prediction and point the camera at it."""
        from app.workers import Job, guarded

        regions = self.case.regions()
        key = regions[index].key if 0 <= index < len(regions) else ""
        if key and key == self._focus_key:
            return  # the same region (a re-analysis renumbered it): nothing moves
        self._focus_key = key
        self._region_serial += 1
        serial = self._region_serial
        case, ct = self.case, self.case.ct
        if ct is None or not key:
            self._show_region(None, serial)
            return
        masks = [
            m
            for m in (
                None if case.reference is None else case.reference.mask,
                None if case.active is None else case.active.mask,
            )
            if m is not None
        ]
        job = Job(region_view, regions[index], ct.geometry, masks, self.view_direction(), name="Region view")
        job.result.connect(guarded(self, lambda res, s=serial: self._show_region(res, s)))
        job.start()

    def names_changed(self) -> None:
        """The branch names changed (a new tree, a correction): the name colourings follow."""
        if self.mode in NAME_MODES:
            self.schedule_rebuild()

    def _on_metrics(self, _index: int) -> None:
        if self.mode == "detection":
            self.schedule_rebuild()

    def _on_regions(self, index: int) -> None:
        if index != self.case.active_index:
            return
        keys = {r.key for r in self.case.regions()}
        if self._focus_key and self._focus_key not in keys:
            self.focus_region(-1)

    def _show_region(self, res: tuple[Any, np.ndarray, float, np.ndarray] | None, serial: int) -> None:
        if serial != self._region_serial or self.plotter is None:
            return
        p = self.plotter
        if self._region_actor is not None:
            p.remove_actor(self._region_actor, render=False)
            self._region_actor = None
        if res is not None:
            surf, centre, radius, direction = res
            if surf.n_cells:
                # an outline box around the region: it marks the region without
                # hiding its TP/FP/FN-coloured faces
                import pyvista as pv

                pad = max(self.case.ct.geometry.spacing) if self.case.ct is not None else 1.0
                b = np.asarray(surf.bounds, float).reshape(3, 2) + np.array([-pad, pad])
                self._region_actor = p.add_mesh(
                    pv.Box(tuple(b.ravel())).outline(),
                    color=self.colours["highlight"],
                    line_width=2,
                    name="region",
                    pickable=False,
                    render=False,
                    lighting=False,
                )
            if radius > 0:
                # from the side where no other branch hides it (issue 22)
                self.focus_point(centre, radius, render=False, direction=direction)
        self._render_timer.start()

    # -- crosshair ----------------------------------------------------------------------------
    def _move_cursor_marker(self, zyx: Any, render: bool = True) -> None:
        if self.plotter is None or self.case.ct is None:
            return
        import pyvista as pv

        g = self.case.ct.geometry
        world = g.index_to_world(np.asarray(zyx, float))
        if self._cursor_actor is None:
            # three short axis lines, not a solid marker: they never hide the
            # region being reviewed; a gap in the middle keeps the voxel itself visible
            h, gap = max(g.spacing) * 5.0, max(g.spacing) * 1.5
            pts = []
            for axis in range(3):
                for sign in (-1.0, 1.0):
                    for d in (gap, h):
                        p = [0.0, 0.0, 0.0]
                        p[axis] = sign * d
                        pts.append(p)
            lines = np.array([[2, 2 * k, 2 * k + 1] for k in range(6)]).ravel()
            cross = pv.PolyData(np.array(pts), lines=lines)
            self._cursor_actor = self.plotter.add_mesh(
                cross,
                color=self.colours["crosshair"],
                line_width=2,
                name="cursor",
                pickable=False,
                render=False,
                lighting=False,
            )
        self._cursor_actor.SetPosition(*world)
        if render:
            self._render_timer.start()

    # -- picking ------------------------------------------------------------------------------
    def _install_picking(self) -> None:
        from vtkmodules.vtkRenderingCore import vtkCellPicker

        self._picker = vtkCellPicker()
        self._picker.SetTolerance(0.0005)
        iren = self.plotter.iren
        iren.add_observer("LeftButtonPressEvent", self._on_press)
        iren.add_observer("LeftButtonReleaseEvent", self._on_release)
        iren.add_observer("RightButtonPressEvent", self._on_right_press)
        iren.add_observer("RightButtonReleaseEvent", self._on_right_release)

    def _on_right_press(self, obj: Any, _event: str) -> None:
        x, y = self.plotter.iren.interactor.GetEventPosition()
        self._right_press = (int(x), int(y))

    def _on_right_release(self, obj: Any, _event: str) -> None:
        pos = tuple(self.plotter.iren.interactor.GetEventPosition())
        press, self._right_press = self._right_press, None
        if press is None or abs(pos[0] - press[0]) + abs(pos[1] - press[1]) > 3:
            return  # a drag zoomed the camera: no menu
        self.menu_at_display(pos[0], pos[1])

    def menu_at_display(self, x: float, y: float) -> QMenu | None:
        """Right click at display pixel (x, y) (VTK's device pixels, origin bottom-left): pick the surface
        (the cursor goes there) and show the window's menu for that voxel (kept as ``context_menu``)."""
        voxel = self.pick_display(x, y)
        if voxel is None or self.branch_menu is None:
            return None
        menu = self.branch_menu(self, voxel)
        if menu is not None:
            inter = self.plotter.interactor
            ratio = inter.devicePixelRatioF() if hasattr(inter, "devicePixelRatioF") else 1.0
            at = QPoint(int(x / ratio), int(inter.height() - y / ratio))
            self.context_menu = menu
            menu.popup(inter.mapToGlobal(at))
        return menu

    def _on_press(self, obj: Any, _event: str) -> None:
        x, y = self.plotter.iren.interactor.GetEventPosition()
        self._press = (int(x), int(y))

    def _on_release(self, obj: Any, _event: str) -> None:
        pos = tuple(self.plotter.iren.interactor.GetEventPosition())
        press, self._press = self._press, None
        if press is None or abs(pos[0] - press[0]) + abs(pos[1] - press[1]) > 3:
            return  # a drag rotated the camera: not a pick
        self.pick_display(pos[0], pos[1])

    def pick_display(self, x: float, y: float) -> tuple[int, int, int] | None:
        """Pick the airway surface at display pixel (x, y) (VTK's device pixels, origin bottom-left)."""
        if self.plotter is None or not self._surface_actors:
            return None
        picker = self._picker
        picker.InitializePickList()
        for actor in self._surface_actors:
            picker.AddPickList(actor)
        picker.PickFromListOn()
        if not picker.Pick(float(x), float(y), 0.0, self.plotter.renderer) or picker.GetCellId() < 0:
            return None
        return self.pick_world(np.asarray(picker.GetPickPosition(), float))

    def pick_world(self, point_xyz: np.ndarray) -> tuple[int, int, int] | None:
        """Move the cursor to the airway voxel nearest a world point on a surface."""
        case = self.case
        if case.ct is None:
            return None
        masks = [
            m
            for m in (
                None if case.active is None else case.active.mask,
                None if case.reference is None else case.reference.mask,
            )
            if m is not None
        ]
        union: _LazyUnion | np.ndarray | None = None
        if len(masks) == 2:
            union = _LazyUnion(masks[0], masks[1])
        elif masks:
            union = masks[0]
        # _LazyUnion answers the one thing world_to_voxel does with a mask: index a small window
        voxel = world_to_voxel(point_xyz, case.ct.geometry, case.ct.shape, mask=cast(np.ndarray, union))
        case.set_cursor(voxel)
        self.picked.emit(voxel)
        return voxel

    def display_of_world(self, point_xyz: np.ndarray) -> tuple[float, float]:
        """Display pixel (device pixels, origin bottom-left) of a world point: the inverse of picking."""
        r = self.plotter.renderer
        r.SetWorldPoint(float(point_xyz[0]), float(point_xyz[1]), float(point_xyz[2]), 1.0)
        r.WorldToDisplay()
        x, y, _ = r.GetDisplayPoint()
        return float(x), float(y)

    @property
    def busy(self) -> bool:
        """A rebuild is scheduled or running (``--screenshot`` waits for it)."""
        return self._rebuild_timer.isActive() or (self._job is not None and self._job.running)

    def render(self, *args: Any, **kwargs: Any) -> None:
        """Draw the scene now (the window's screenshot calls this before grabbing); with
        arguments, QWidget.render (paint the widget into a device)."""
        if args or kwargs:
            super().render(*args, **kwargs)
            return
        self._render_timer.stop()
        if self.plotter is not None:
            self.plotter.render()

    # -- screenshot ---------------------------------------------------------------------------
    def save_screenshot(self, path: str | os.PathLike[str], scale: int = 2, legend: bool = True) -> Path:
        """Write the 3D view as PNG atomically (temp file + rename): ``scale`` times the view's
        device pixels (2: print quality), with the colour legend drawn in."""
        path = Path(path)
        if path.suffix.lower() != ".png":
            path = path.with_suffix(".png")
        if self.plotter is None:
            image = self.grab().toImage()
        else:
            self.plotter.render()
            inter = self.plotter.interactor
            ratio = inter.devicePixelRatioF() if hasattr(inter, "devicePixelRatioF") else 1.0
            size = [
                max(1, int(round(inter.width() * ratio * scale))),
                max(1, int(round(inter.height() * ratio * scale))),
            ]
            arr = np.ascontiguousarray(self.plotter.screenshot(return_img=True, window_size=size))
            h, w = arr.shape[:2]
            fmt = QImage.Format.Format_RGBA8888 if arr.shape[2] == 4 else QImage.Format.Format_RGB888
            image = QImage(arr.data, w, h, arr.strides[0], fmt).copy()
        scene = getattr(self, "scene", None)
        if legend and scene is not None and scene.legend:
            _draw_legend(image, scene)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
        os.close(fd)
        try:
            if not image.save(tmp):  # PNG, from the suffix
                raise InputError(f"Could not write the screenshot to {path}.", "Choose a writable folder.")
            from core.outputs import apply_umask

            apply_umask(tmp)  # mkstemp makes 0600 files
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt name
        if self._job is not None:
            self._job.cancel()
        if self.plotter is not None:
            self.plotter.close()
        super().closeEvent(event)


SCENE_CACHE_SIZE = 4


def _draw_legend(image: QImage, scene: Any) -> None:
    """The scene's legend (colour squares and names) in the image's top-left corner."""
    from PySide6.QtCore import QRectF
    from PySide6.QtGui import QColor, QFont, QPainter

    p = QPainter(image)
    font = QFont()
    font.setPixelSize(max(12, image.height() // 45))
    p.setFont(font)
    fm = p.fontMetrics()
    items = list(scene.legend[:24])
    line = fm.height() + 4
    width = max(fm.horizontalAdvance(name) for name, _ in items) + line + 24
    height = line * len(items) + (line if scene.note else 0) + 12
    p.fillRect(QRectF(8, 8, width, height), QColor(20, 21, 25, 200))
    y = 14
    for name, c in items:
        p.fillRect(QRectF(16, y + 3, line - 8, line - 8), QColor(*[int(v) for v in c[:3]]))
        p.setPen(QColor(230, 230, 235))
        p.drawText(int(16 + line), int(y + fm.ascent() + 2), name)
        y += line
    if scene.note:
        p.setPen(QColor(170, 170, 180))
        p.drawText(16, int(y + fm.ascent() + 2), str(scene.note))
    p.end()


def _same_input(a: SceneInput, b: SceneInput) -> bool:
    """Same arrays (by identity and edit revision) and options."""
    return (
        a.mode == b.mode
        and a.prediction is b.prediction
        and a.reference is b.reference
        and a.revisions == b.revisions
        and a.branch_map is b.branch_map
        and a.geometry == b.geometry
        and a.generations == b.generations
        and a.detected == b.detected
        and a.groups == b.groups
    )


class _LazyUnion:
    """``a | b`` evaluated only on the small window :func:`world_to_voxel` reads."""

    def __init__(self, a: np.ndarray, b: np.ndarray):
        self.a, self.b = a, b

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.a[key] | self.b[key])
