"""Axial, coronal and sagittal slice views linked through the case's cursor.

Rendering is numpy only (:class:`SliceRenderer`): the slice is cut from the
canonical (LPS) volume, windowed through a lookup table, the TP/FP/FN classes
are blended in with per-class colours and opacity (filled or outlined) and the
result becomes a ``QImage``; no per-pixel Python. The widget paints that
image with the aspect ratio of the voxel spacing and draws the crosshair,
orientation letters and the highlighted error region on top.

Display conventions (radiological, as ITK-SNAP and Slicer): axial seen from
the feet with the patient's right on the screen's left and anterior at the
top; coronal seen from the front, superior at the top; sagittal seen from the
patient's left, anterior on the left, superior at the top.

Coordinates: widget positions are logical pixels (Qt scales painting and
mouse events alike by ``devicePixelRatio``), so picking is the same on HiDPI
screens; the image itself is drawn at device resolution by Qt.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QKeySequence, QPainter, QPen
from PySide6.QtWidgets import QAbstractSpinBox, QApplication, QLineEdit, QMenu, QWidget

from app.review.case_view import CaseView
from core.box import Box
from core.resources import load_json_resource

ORIENTATIONS = ("axial", "coronal", "sagittal")
AXIS_OF = {"axial": 0, "coronal": 1, "sagittal": 2}  # array axis a view slices through
TITLES = {"axial": "Axial", "coronal": "Coronal", "sagittal": "Sagittal"}
# (left, right, top, bottom) letters for the canonical LPS arrays shown as described above
EDGE_LETTERS = {
    "axial": ("R", "L", "A", "P"),
    "coronal": ("R", "L", "S", "I"),
    "sagittal": ("A", "P", "S", "I"),
}

# Overlay class codes of a slice (0 = nothing). TP/FP/FN match core.surfaces.
NONE, TP, FP, FN, REF_ONLY, PRED_ONLY = 0, 1, 2, 3, 4, 5
CLASS_KEYS = {TP: "TP", FP: "FP", FN: "FN", REF_ONLY: "reference", PRED_ONLY: "prediction"}


# -- presets (data files) ---------------------------------------------------------------


@dataclass(frozen=True)
class WindowPreset:
    key: str
    name: str
    window: float
    level: float


def load_window_presets() -> list[WindowPreset]:
    data = load_json_resource("presets", "window_level.json")
    return [WindowPreset(p["key"], p["name"], float(p["window"]), float(p["level"])) for p in data["presets"]]


def load_overlay_colors() -> dict[str, Any]:
    return load_json_resource("presets", "overlay_colors.json")


# -- geometry of the three orientations (pure) -------------------------------------------


def slice_count(orientation: str, shape: Sequence[int]) -> int:
    return int(shape[AXIS_OF[orientation]])


def slice_index(orientation: str, zyx: Sequence[int]) -> int:
    return int(zyx[AXIS_OF[orientation]])


def extract_slice(array: np.ndarray, orientation: str, index: int) -> np.ndarray:
    """The 2D slice as displayed (rows top->bottom, columns left->right); a view, no copy."""
    if orientation == "axial":
        return np.asarray(array[index])
    if orientation == "coronal":
        return np.asarray(array[::-1, index, :])
    if orientation == "sagittal":
        return np.asarray(array[::-1, :, index])
    raise ValueError(f"unknown orientation {orientation!r}")


def display_shape(orientation: str, shape: Sequence[int]) -> tuple[int, int]:
    z, y, x = shape
    return {"axial": (y, x), "coronal": (z, x), "sagittal": (z, y)}[orientation]


def pixel_mm(orientation: str, spacing_zyx: Sequence[float]) -> tuple[float, float]:
    """(column width, row height) of one displayed pixel in mm."""
    sz, sy, sx = spacing_zyx
    return {"axial": (sx, sy), "coronal": (sx, sz), "sagittal": (sy, sz)}[orientation]


def display_to_voxel(
    orientation: str, index: int, row: float, col: float, shape: Sequence[int]
) -> tuple[int, int, int]:
    """Displayed (row, col) of slice ``index`` -> voxel (z, y, x), clamped into the volume."""
    z_n, y_n, x_n = shape
    r, c = int(np.floor(row)), int(np.floor(col))
    if orientation == "axial":
        v = (index, r, c)
    elif orientation == "coronal":
        v = (z_n - 1 - r, index, c)
    else:
        v = (z_n - 1 - r, c, index)
    return tuple(int(np.clip(a, 0, s - 1)) for a, s in zip(v, shape))  # type: ignore[return-value]


def voxel_to_display(orientation: str, zyx: Sequence[float], shape: Sequence[int]) -> tuple[float, float]:
    """Voxel (z, y, x) -> displayed (row, col) of its centre."""
    z, y, x = (float(v) for v in zyx)
    z_n = shape[0]
    if orientation == "axial":
        return y + 0.5, x + 0.5
    if orientation == "coronal":
        return z_n - 1 - z + 0.5, x + 0.5
    return z_n - 1 - z + 0.5, y + 0.5


# -- rendering (pure numpy) ---------------------------------------------------------------


@dataclass
class DisplaySettings:
    """What every slice view shares: window/level and the overlay's look."""

    window: float = 1500.0
    level: float = -600.0
    preset: str = "lung"  # preset key, or "custom"
    show_overlay: bool = True
    outline: bool = False
    opacity: float = 0.5
    visible: dict[str, bool] = field(
        default_factory=lambda: {"TP": True, "FP": True, "FN": True, "reference": True, "prediction": True}
    )
    heatmap: bool = False
    crosshair: bool = True

    def key(self) -> tuple[Any, ...]:
        return (
            self.window,
            self.level,
            self.show_overlay,
            self.outline,
            round(self.opacity, 3),
            tuple(sorted(self.visible.items())),
            self.heatmap,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "level": self.level,
            "preset": self.preset,
            "show_overlay": self.show_overlay,
            "outline": self.outline,
            "opacity": self.opacity,
            "visible": dict(self.visible),
            "heatmap": self.heatmap,
            "crosshair": self.crosshair,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DisplaySettings:
        base = cls()
        kw = {
            k: d[k]
            for k in ("window", "level", "preset", "show_overlay", "outline", "opacity", "heatmap", "crosshair")
            if k in d
        }
        out = replace(base, **kw)
        out.visible = {**base.visible, **(d.get("visible") or {})}
        return out


def window_slice(values: np.ndarray, window: float, level: float) -> np.ndarray:
    """HU -> uint8 grey through the window (W, L): L - W/2 is black, L + W/2 white.

    Integer CTs go through a 16-bit lookup table (one gather per pixel); float
    CTs through clip-and-scale in float32.
    """
    window = max(float(window), 1e-3)
    lo = level - window / 2.0
    if values.dtype.kind in "iu" and values.dtype.itemsize <= 2:
        info = np.iinfo(values.dtype)
        lut = _window_lut(values.dtype.str, lo, window)
        return lut[values.astype(np.int32) - int(info.min)]
    out = (values.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / window)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


_LUTS: OrderedDict[tuple[str, float, float], np.ndarray] = OrderedDict()


def _window_lut(dtype: str, lo: float, window: float) -> np.ndarray:
    key = (dtype, lo, window)
    lut = _LUTS.get(key)
    if lut is None:
        info = np.iinfo(np.dtype(dtype))
        v = np.arange(int(info.min), int(info.max) + 1, dtype=np.float32)
        lut = np.clip((v - lo) * (255.0 / window), 0, 255).astype(np.uint8)
        _LUTS[key] = lut
        while len(_LUTS) > 8:
            _LUTS.popitem(last=False)
    return lut


_LUTS32: OrderedDict[tuple[str, float, float], np.ndarray] = OrderedDict()
_GREY32 = (np.uint32(0xFF000000) | (np.arange(256, dtype=np.uint32) * np.uint32(0x010101))).astype(np.uint32)


def _lut32(dtype: np.dtype[Any], lo: float, window: float) -> np.ndarray:
    """Opaque grey ARGB per stored value, indexed by the value's bits read as unsigned."""
    key = (dtype.str, lo, window)
    lut = _LUTS32.get(key)
    if lut is None:
        n = 1 << (8 * dtype.itemsize)
        values = np.arange(n, dtype=np.dtype(f"u{dtype.itemsize}")).view(dtype).astype(np.float32)
        grey = np.clip((values - np.float32(lo)) * np.float32(255.0 / window), 0, 255).astype(np.uint8)
        lut = _GREY32[grey]
        _LUTS32[key] = lut
        while len(_LUTS32) > 8:
            _LUTS32.popitem(last=False)
    return lut


def grey_argb(values: np.ndarray, window: float, level: float) -> np.ndarray:
    """HU -> (H, W) uint32 opaque grey (Qt's RGB32), the window applied.

    8/16-bit integer CTs take one gather through a 256/65536-entry table indexed
    by the raw bits; other types go through :func:`window_slice`.
    """
    window = max(float(window), 1e-3)
    if values.dtype.kind in "iu" and values.dtype.itemsize <= 2:
        lut = _lut32(values.dtype, level - window / 2.0, window)
        return np.asarray(lut[values.view(np.dtype(f"u{values.dtype.itemsize}"))])
    return np.asarray(_GREY32[window_slice(values, window, level)])


def argb_to_rgb(img: np.ndarray) -> np.ndarray:
    """(H, W) uint32 RGB32 -> (H, W, 3) uint8 RGB (for tests and exports)."""
    b = img.view(np.uint8).reshape(img.shape + (4,))  # little-endian: B, G, R, A
    return np.ascontiguousarray(b[..., 2::-1]) if np.little_endian else np.ascontiguousarray(b[..., 1:])


def _blend(region: np.ndarray, sel: np.ndarray, rgb: np.ndarray, alpha: np.ndarray) -> None:
    """region[sel] = grey * (1 - alpha) + rgb * alpha, packed back to RGB32 (base pixels are grey)."""
    grey = (region[sel] & np.uint32(0xFF)).astype(np.float32)[:, None]
    a = alpha[:, None]
    mixed = (grey * (1 - a) + rgb * a + 0.5).astype(np.uint32)
    region[sel] = np.uint32(0xFF000000) | (mixed[:, 0] << np.uint32(16)) | (mixed[:, 1] << np.uint32(8)) | mixed[:, 2]


def display_rect(orientation: str, box: Box, shape: Sequence[int]) -> tuple[int, int, int, int]:
    """Rows (r0, r1) and columns (c0, c1), half-open, that a volume box covers in a displayed slice."""
    (z0, y0, x0), (z1, y1, x1) = box.start, box.stop
    nz = shape[0]
    if orientation == "axial":
        return y0, y1, x0, x1
    if orientation == "coronal":
        return nz - z1, nz - z0, x0, x1
    return nz - z1, nz - z0, y0, y1


OverlayWindow = tuple[tuple[Any, Any, Any], bool, tuple[int, int]]


def overlay_window(orientation: str, index: int, box: Box, shape: Sequence[int]) -> OverlayWindow | None:
    """Where a volume box (z/y/x) meets slice ``index``.

    Returns (array index tuple, flip_rows, (row0, col0) in the displayed slice),
    or None when the slice misses the box: overlays then cost nothing.
    """
    (z0, y0, x0), (z1, y1, x1) = box.start, box.stop
    nz = shape[0]
    if orientation == "axial":
        if not z0 <= index < z1:
            return None
        return (index, slice(y0, y1), slice(x0, x1)), False, (y0, x0)
    if orientation == "coronal":
        if not y0 <= index < y1:
            return None
        return (slice(z0, z1), index, slice(x0, x1)), True, (nz - z1, x0)
    if not x0 <= index < x1:
        return None
    return (slice(z0, z1), slice(y0, y1), index), True, (nz - z1, y0)


def class_codes(reference: np.ndarray | None, prediction: np.ndarray | None) -> np.ndarray | None:
    """Per-pixel overlay class: TP/FP/FN with both, else reference-only or prediction-only."""
    if reference is None:
        return None if prediction is None else np.asarray(prediction.astype(np.uint8) * PRED_ONLY)
    if prediction is None:
        return np.asarray(reference.astype(np.uint8) * REF_ONLY)
    # ref + 2*pred: 1 ref only (FN), 2 pred only (FP), 3 both (TP)
    code = reference.astype(np.uint8) + 2 * prediction.astype(np.uint8)
    return np.asarray(_BOTH_TO_CLASS[code])


_BOTH_TO_CLASS = np.array([NONE, FN, FP, TP], dtype=np.uint8)


def outline_of(codes: np.ndarray) -> np.ndarray:
    """Keep only the boundary pixels of each class region (4-neighbourhood)."""
    edge = np.zeros(codes.shape, dtype=bool)
    edge[1:, :] |= codes[1:, :] != codes[:-1, :]
    edge[:-1, :] |= codes[:-1, :] != codes[1:, :]
    edge[:, 1:] |= codes[:, 1:] != codes[:, :-1]
    edge[:, :-1] |= codes[:, :-1] != codes[:, 1:]
    # the image border closes regions that touch it
    edge[0, :] = edge[-1, :] = True
    edge[:, 0] = edge[:, -1] = True
    return np.where(edge, codes, NONE).astype(np.uint8)


def heat_lut() -> np.ndarray:
    """256 x 3 'hot' colour map (black-red-yellow-white), as matplotlib's."""
    t = np.linspace(0.0, 1.0, 256)
    r = np.clip(t / 0.365, 0, 1)
    g = np.clip((t - 0.365) / 0.38, 0, 1)
    b = np.clip((t - 0.745) / 0.255, 0, 1)
    return (np.stack([r, g, b], axis=1) * 255).astype(np.uint8)


_HEAT = heat_lut()


class SliceRenderer:
    """Builds the RGB image of one slice; colours come from overlay_colors.json."""

    def __init__(self, colors: dict[str, Any] | None = None):
        colors = colors or load_overlay_colors()
        self.colors = colors
        self.rgb = np.zeros((6, 3), dtype=np.float32)
        for code, key in CLASS_KEYS.items():
            self.rgb[code] = colors["classes"][key]["rgb"]
        self.min_probability = float(colors.get("heatmap", {}).get("min_probability", 0.02))

    def alpha_lut(self, settings: DisplaySettings) -> np.ndarray:
        a = np.zeros(6, dtype=np.float32)
        if settings.show_overlay:
            for code, key in CLASS_KEYS.items():
                a[code] = settings.opacity if settings.visible.get(key, True) else 0.0
        return a

    def render(
        self,
        ct_slice: np.ndarray,
        settings: DisplaySettings,
        reference: np.ndarray | None = None,
        prediction: np.ndarray | None = None,
        probability: np.ndarray | None = None,
        offset: tuple[int, int] = (0, 0),
    ) -> np.ndarray:
        """(H, W) uint32 RGB32 image of the slice.

        ``reference``/``prediction``/``probability`` may cover a sub-rectangle
        of the slice whose top-left is ``offset`` (row, col): overlays are only
        computed where the airway can be.
        """
        out = grey_argb(ct_slice, settings.window, settings.level)
        if not settings.show_overlay:
            return out
        if settings.heatmap and probability is not None:
            h, w = probability.shape
            region = out[offset[0] : offset[0] + h, offset[1] : offset[1] + w]
            p = np.asarray(probability, dtype=np.float32)
            if probability.dtype == np.uint8:  # core.segmentation stores round(255 p)
                p *= np.float32(1.0 / 255.0)
            sel = p >= self.min_probability
            if sel.any():
                pv = p[sel]
                col = _HEAT[np.clip(pv * 255, 0, 255).astype(np.uint8)].astype(np.float32)
                _blend(region, sel, col, np.float32(settings.opacity) * np.clip(pv * 1.5, 0, 1))
            return out
        codes = class_codes(reference, prediction)
        if codes is None:
            return out
        if settings.outline:
            codes = outline_of(codes)
        alpha = self.alpha_lut(settings)
        if settings.outline:
            alpha = np.where(alpha > 0, np.maximum(alpha, 0.9), 0).astype(np.float32)
        sel = alpha[codes] > 0
        if not sel.any():
            return out
        h, w = codes.shape
        region = out[offset[0] : offset[0] + h, offset[1] : offset[1] + w]
        c = codes[sel]
        _blend(region, sel, self.rgb[c], alpha[c])
        return out


class ArrayImage(QImage):
    """A QImage over a numpy (H, W) uint32 RGB32 array it keeps alive (``buffer``)."""

    def __init__(self, buffer: np.ndarray):
        h, w = buffer.shape
        super().__init__(buffer.data, w, h, 4 * w, QImage.Format.Format_RGB32)
        self.buffer = buffer


def argb_to_qimage(img: np.ndarray) -> ArrayImage:
    """Wrap an (H, W) uint32 RGB32 array; the image keeps a reference to the buffer."""
    return ArrayImage(np.ascontiguousarray(img))


# -- the shared display state -----------------------------------------------------------------


class DisplayState(QObject):
    """:class:`DisplaySettings` plus a ``changed`` signal, shared by the three views."""

    changed = Signal()

    def __init__(self, settings: DisplaySettings | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.settings = settings or DisplaySettings()
        self.presets = load_window_presets()

    def update(self, **kwargs: Any) -> None:
        for k, v in kwargs.items():
            setattr(self.settings, k, v)
        self.changed.emit()

    def set_window(self, window: float, level: float, preset: str = "custom") -> None:
        self.update(window=max(1.0, float(window)), level=float(level), preset=preset)

    def apply_preset(self, key: str) -> None:
        for p in self.presets:
            if p.key == key:
                self.set_window(p.window, p.level, p.key)
                return
        raise KeyError(key)

    def next_preset(self) -> str:
        keys = [p.key for p in self.presets]
        i = keys.index(self.settings.preset) + 1 if self.settings.preset in keys else 0
        key = keys[i % len(keys)]
        self.apply_preset(key)
        return key

    def toggle_class(self, key: str) -> None:
        vis = dict(self.settings.visible)
        vis[key] = not vis.get(key, True)
        self.update(visible=vis)


# -- the widget ---------------------------------------------------------------------------------


class SliceView(QWidget):
    """One orientation of the case; the cursor's component along its axis is its slice."""

    hovered = Signal(object)  # (z, y, x) under the mouse, or None
    sliceChanged = Signal(int)

    ZOOM_MIN, ZOOM_MAX = 0.25, 40.0
    # filtered downscaling costs a few ms a frame; side-by-side layouts redrawing
    # several views per slice change turn it off
    smooth_downscale = True

    def __init__(
        self,
        case: CaseView,
        orientation: str,
        display: DisplayState,
        renderer: SliceRenderer | None = None,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        if orientation not in ORIENTATIONS:
            raise ValueError(orientation)
        self.case = case
        self.orientation = orientation
        self.display = display
        self.tools: Any = None  # app.review.edit_tools.EditTools, set by the window
        # the window's right-click menu at a voxel (app.review.naming_dialog.branch_menu); the last one shown
        self.branch_menu: Callable[[QWidget, tuple[int, int, int]], QMenu | None] | None = None
        self.context_menu: QMenu | None = None
        self.renderer = renderer or SliceRenderer()
        self.zoom = 1.0
        self.pan = QPointF(0.0, 0.0)  # logical pixels
        self._cache: OrderedDict[tuple[Any, ...], ArrayImage] = OrderedDict()
        self._last: tuple[tuple[Any, ...], ArrayImage] | None = None  # the image shown last, patched by edits
        self._drag: tuple[str, QPointF, Any] | None = None
        self._space = False
        self.last_render_ms = 0.0
        self.setObjectName(f"slice_{orientation}")
        self.setMinimumSize(160, 160)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        colors = self.renderer.colors
        self.crosshair_color = QColor(*colors.get("crosshair_rgb", (0, 190, 255)))
        self.highlight_color = QColor(*colors.get("region_highlight_rgb", (255, 0, 255)))

        case.cursorChanged.connect(self._on_cursor)
        for sig in (case.ctChanged, case.referenceChanged, case.predictionsChanged, case.activePredictionChanged):
            sig.connect(self.invalidate)
        case.labelChanged.connect(self._on_label_changed)
        case.activeRegionChanged.connect(self._on_cursor)
        display.changed.connect(self.invalidate)

    # -- state ------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int] | None:
        return None if self.case.ct is None else self.case.ct.shape

    @property
    def index(self) -> int:
        return slice_index(self.orientation, self.case.cursor)

    def invalidate(self, *_: Any) -> None:
        self._cache.clear()
        self._last = None
        self.update()

    def _on_cursor(self, *_: Any) -> None:
        self.update()

    def _on_label_changed(self, _layer: str, box: Box | None) -> None:
        # slices outside the edited box keep their cached images (keys hold the revisions)
        ax = AXIS_OF[self.orientation]
        if box is None or box.start[ax] <= self.index < box.stop[ax]:
            if box is not None:
                self._patch(box)
            self.update()
        else:
            self._patch(None)  # the shown slice did not change: its image holds for the new revision

    def _key(self) -> tuple[Any, ...]:
        case = self.case
        act = case.active
        # revisions: labels are edited in place, the arrays' identity alone would show stale slices
        return (
            self.index,
            case.active_index,
            id(act),
            id(case.reference),
            case.revision("reference"),
            0 if act is None else case.revision(act.name),
            self.display.settings.key(),
        )

    def _patch(self, box: Box | None) -> None:
        """Re-render only the edited box of the image shown last (a brush dab repaints a
        few hundred pixels, not the slice), when that image is exactly one edit old;
        ``box=None``: the edit missed this slice, the image is kept as it is."""
        if self._last is None or self.case.ct is None:
            return
        old_key, old_img = self._last
        key = self._key()
        s = self.display.settings
        steps = [b - a for a, b in zip(old_key[4:6], key[4:6])]
        if old_key[:4] != key[:4] or old_key[6] != key[6] or sorted(steps) != [0, 1] or (s.show_overlay and s.heatmap):
            return
        if box is None:
            self._cache[key] = old_img
            self._last = (key, old_img)
            return
        case, o, i = self.case, self.orientation, self.index
        if case.ct is None:
            return
        h, w = display_shape(o, case.ct.shape)
        r0, r1, c0, c1 = display_rect(o, box, case.ct.shape)
        # outlines depend on the 4-neighbours: paste one pixel around the box, render one more
        pr0, pr1, pc0, pc1 = max(r0 - 1, 0), min(r1 + 1, h), max(c0 - 1, 0), min(c1 + 1, w)
        rr0, rr1, rc0, rc1 = max(pr0 - 1, 0), min(pr1 + 1, h), max(pc0 - 1, 0), min(pc1 + 1, w)
        win = (slice(rr0, rr1), slice(rc0, rc1))
        act = case.active
        ref = None if case.reference is None else extract_slice(case.reference.mask, o, i)[win]
        pred = None if act is None else extract_slice(act.mask, o, i)[win]
        sub = self.renderer.render(case.ct_slice(o, i)[win], s, ref, pred)
        buf = old_img.buffer.copy()
        buf[pr0:pr1, pc0:pc1] = sub[pr0 - rr0 : pr1 - rr0, pc0 - rc0 : pc1 - rc0]
        img = argb_to_qimage(buf)
        self._cache[key] = img
        self._last = (key, img)

    def set_slice(self, index: int) -> None:
        shape = self.shape
        if shape is None:
            return
        index = int(np.clip(index, 0, slice_count(self.orientation, shape) - 1))
        cur = list(self.case.cursor)
        cur[AXIS_OF[self.orientation]] = index
        self.case.set_cursor(cur)
        self.sliceChanged.emit(index)

    def step(self, delta: int) -> None:
        self.set_slice(self.index + delta)

    def reset_view(self) -> None:
        self.zoom, self.pan = 1.0, QPointF(0.0, 0.0)
        self.update()

    def zoom_by(self, factor: float, anchor: QPointF | None = None) -> None:
        new = float(np.clip(self.zoom * factor, self.ZOOM_MIN, self.ZOOM_MAX))
        if anchor is not None:
            # keep the point under the mouse where it is
            centre = QPointF(self.width() / 2.0, self.height() / 2.0) + self.pan
            self.pan += (anchor - centre) * (1 - new / self.zoom)
        self.zoom = new
        self.update()

    def fit_box(self, box: Box | None, margin: float = 0.5, min_mm: float = 24.0) -> None:
        """Centre on a voxel box and zoom so it fills the view with ``margin``
        (a share of its size) around it; tiny boxes still show ``min_mm`` of context."""
        shape, ct = self.shape, self.case.ct
        if shape is None or ct is None or box is None or self.width() < 2 or self.height() < 2:
            return
        lo, hi = (np.asarray(b, dtype=float) for b in (box.start, box.stop))
        corners = [
            voxel_to_display(self.orientation, lo.tolist(), shape),
            voxel_to_display(self.orientation, np.maximum(hi - 1, lo).tolist(), shape),
        ]
        rows, cols = sorted(c[0] for c in corners), sorted(c[1] for c in corners)
        pw, ph = pixel_mm(self.orientation, ct.spacing_zyx)
        # box extent in mm, one voxel added (corners are voxel centres)
        w_mm = max((cols[1] - cols[0] + 1) * pw * (1 + 2 * margin), min_mm)
        h_mm = max((rows[1] - rows[0] + 1) * ph * (1 + 2 * margin), min_mm)
        self.zoom, self.pan = 1.0, QPointF(0.0, 0.0)
        rect = self.image_rect()
        assert rect is not None  # a CT is open (shape above)
        dh, dw = display_shape(self.orientation, shape)
        scale = rect.width() / (dw * pw)  # widget pixels per mm at zoom 1
        want = min(self.width() / (w_mm * scale), self.height() / (h_mm * scale))
        self.zoom = float(np.clip(want, 1.0, self.ZOOM_MAX))
        rect = self.image_rect()
        assert rect is not None
        cx = rect.x() + (cols[0] + cols[1]) / 2.0 / dw * rect.width()
        cy = rect.y() + (rows[0] + rows[1]) / 2.0 / dh * rect.height()
        self.pan = QPointF(self.width() / 2.0 - cx, self.height() / 2.0 - cy)
        self.update()

    def centre_on_cursor(self) -> None:
        rect = self.image_rect()
        if rect is None:
            return
        p = self.voxel_to_widget(self.case.cursor)
        self.pan += QPointF(self.width() / 2.0, self.height() / 2.0) - p
        self.update()

    # -- image ----------------------------------------------------------------------
    def current_rgb(self) -> np.ndarray | None:
        """The rendered slice (H, W, 3) for the current cursor (cached)."""
        img = self._image()
        return None if img is None else argb_to_rgb(img.buffer)

    def _image(self) -> ArrayImage | None:
        case = self.case
        if case.ct is None:
            return None
        act = case.active
        key = self._key()
        img = self._cache.get(key)
        if img is not None:
            self._cache.move_to_end(key)
            self._last = (key, img)
            return img
        import time

        t0 = time.perf_counter()
        o, i = self.orientation, self.index
        ct = case.ct_slice(o, i)
        s = self.display.settings
        ref = pred = prob = None
        offset = (0, 0)
        if s.show_overlay:
            if s.heatmap and act is not None and act.probabilities is not None:
                prob = extract_slice(act.probabilities.array, o, i)
            else:
                box = case.overlay_box()
                win = None if box is None else overlay_window(o, i, box, case.ct.shape)
                if box is None or win is not None:
                    idx, flip, offset = win if win is not None else ((slice(None),) * 3, False, (0, 0))

                    def cut(mask: np.ndarray) -> np.ndarray:
                        if win is None:
                            return extract_slice(mask, o, i)
                        sub = mask[idx]
                        return sub[::-1] if flip else sub

                    ref = None if case.reference is None else cut(case.reference.mask)
                    pred = None if act is None else cut(act.mask)
        rgb = self.renderer.render(ct, s, ref, pred, prob, offset)
        img = argb_to_qimage(rgb)
        self.last_render_ms = (time.perf_counter() - t0) * 1000
        self._cache[key] = img
        self._last = (key, img)
        while len(self._cache) > 6:
            self._cache.popitem(last=False)
        return img

    # -- mapping between widget and voxels -------------------------------------------------
    def image_rect(self) -> QRectF | None:
        """Where the slice image lies in the widget (logical pixels), spacing-true."""
        shape, ct = self.shape, self.case.ct
        if shape is None or ct is None:
            return None
        h, w = display_shape(self.orientation, shape)
        pw, ph = pixel_mm(self.orientation, ct.spacing_zyx)
        mm_w, mm_h = w * pw, h * ph
        margin = 4.0
        fit = min((self.width() - 2 * margin) / mm_w, (self.height() - 2 * margin) / mm_h)
        s = max(fit, 1e-6) * self.zoom
        rw, rh = mm_w * s, mm_h * s
        x0 = (self.width() - rw) / 2.0 + self.pan.x()
        y0 = (self.height() - rh) / 2.0 + self.pan.y()
        return QRectF(x0, y0, rw, rh)

    def widget_to_voxel(self, pos: QPointF) -> tuple[int, int, int] | None:
        rect, shape = self.image_rect(), self.shape
        if rect is None or shape is None or rect.width() <= 0:
            return None
        h, w = display_shape(self.orientation, shape)
        col = (pos.x() - rect.x()) / rect.width() * w
        row = (pos.y() - rect.y()) / rect.height() * h
        if not (0 <= col < w and 0 <= row < h):
            return None
        return display_to_voxel(self.orientation, self.index, row, col, shape)

    def voxel_to_widget(self, zyx: Sequence[float]) -> QPointF:
        rect, shape = self.image_rect(), self.shape
        if rect is None or shape is None:
            return QPointF(-1.0, -1.0)  # no CT: nowhere in the widget
        h, w = display_shape(self.orientation, shape)
        row, col = voxel_to_display(self.orientation, zyx, shape)
        return QPointF(rect.x() + col / w * rect.width(), rect.y() + row / h * rect.height())

    # -- painting --------------------------------------------------------------------------
    def paintEvent(self, _event: Any) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(12, 12, 14))
        img = self._image()
        rect = self.image_rect()
        if img is None or rect is None:
            p.setPen(QColor(130, 130, 140))
            p.drawText(
                self.rect(),
                Qt.AlignmentFlag.AlignCenter,
                f"{TITLES[self.orientation]}\nOpen a CT (File > Open) or drop files here",
            )
            p.end()
            return
        # nearest neighbour when zoomed in: voxels stay voxels
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self.smooth_downscale and rect.width() < img.width())
        p.drawImage(rect, img)
        self._paint_region(p)
        if self.display.settings.crosshair:
            self._paint_crosshair(p, rect)
        self._paint_labels(p, rect)
        self._paint_heat_bar(p)
        p.end()

    def _paint_heat_bar(self, p: QPainter) -> None:
        """A colour scale for the probability heat map (0 at the bottom, 1 at the top)."""
        s = self.display.settings
        act = self.case.active
        if not (s.show_overlay and s.heatmap and act is not None and act.probabilities is not None):
            return
        h = int(min(160, max(60, self.height() * 0.4)))
        w = 10
        x = self.width() - w - 30
        y = (self.height() - h) // 2
        lut = _HEAT[::-1]  # top = 1
        bar = np.ascontiguousarray(np.repeat(lut[np.linspace(0, 255, h).astype(int)][:, None, :], w, axis=1))
        img = QImage(bar.data, w, h, bar.strides[0], QImage.Format.Format_RGB888).copy()
        p.drawImage(QRectF(x, y, w, h), img)
        p.setPen(QColor(200, 200, 205))
        p.drawRect(QRectF(x - 0.5, y - 0.5, w + 1, h + 1))
        self._text(p, QPointF(x + w + 3, y + 8), "1", QColor(220, 220, 225))
        self._text(p, QPointF(x + w + 3, y + h), "0", QColor(220, 220, 225))
        self._text(p, QPointF(x - 4, y - 6), "p", QColor(220, 220, 225))

    def _paint_crosshair(self, p: QPainter, rect: QRectF) -> None:
        c = self.voxel_to_widget(self.case.cursor)
        pen = QPen(self.crosshair_color)
        pen.setWidthF(1.0)
        p.setPen(pen)
        gap = 6.0
        p.drawLine(QPointF(rect.left(), c.y()), QPointF(c.x() - gap, c.y()))
        p.drawLine(QPointF(c.x() + gap, c.y()), QPointF(rect.right(), c.y()))
        p.drawLine(QPointF(c.x(), rect.top()), QPointF(c.x(), c.y() - gap))
        p.drawLine(QPointF(c.x(), c.y() + gap), QPointF(c.x(), rect.bottom()))

    def _paint_region(self, p: QPainter) -> None:
        regs = self.case.regions()
        i = self.case.active_region
        if not 0 <= i < len(regs):
            return
        start, stop = regs[i].box.start, regs[i].box.stop
        ax = AXIS_OF[self.orientation]
        if not start[ax] <= self.index < stop[ax]:
            return
        a = self.voxel_to_widget([s - 0.5 for s in start])
        b = self.voxel_to_widget([s - 0.5 for s in stop])
        r = QRectF(a, b).normalized().adjusted(-3, -3, 3, 3)
        pen = QPen(self.highlight_color)
        pen.setWidthF(2.0)
        pen.setStyle(Qt.PenStyle.DashLine)
        p.setPen(pen)
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(r)

    @staticmethod
    def _text(p: QPainter, pos: QPointF, text: str, colour: QColor) -> None:
        """Text on a translucent dark plate, readable over white bone and black air alike."""
        fm = p.fontMetrics()
        plate = QRectF(pos.x() - 3, pos.y() - fm.ascent() - 1, fm.horizontalAdvance(text) + 6, fm.height() + 2)
        p.fillRect(plate, QColor(0, 0, 0, 140))
        p.setPen(colour)
        p.drawText(pos, text)

    def _paint_labels(self, p: QPainter, rect: QRectF) -> None:
        f = QFont(self.font())
        f.setPointSizeF(max(8.0, f.pointSizeF()))
        p.setFont(f)
        fm = p.fontMetrics()
        shape = self.shape
        if shape is None:
            return
        left, right, top, bottom = EDGE_LETTERS[self.orientation]
        letter, info = QColor(240, 200, 80), QColor(225, 225, 230)
        W, H = self.width(), self.height()
        mid = H / 2 - 8  # beside the horizontal crosshair line, not on it
        self._text(p, QPointF(6, mid), left, letter)
        self._text(p, QPointF(W - 6 - fm.horizontalAdvance(right), mid), right, letter)
        self._text(p, QPointF(W / 2 + 6, fm.ascent() + 4), top, letter)
        self._text(p, QPointF(W / 2 + 6, H - 6), bottom, letter)
        n = slice_count(self.orientation, shape)
        self._text(p, QPointF(8, fm.ascent() + 4), f"{TITLES[self.orientation]}  {self.index + 1}/{n}", info)
        s = self.display.settings
        self._text(p, QPointF(8, H - 6), f"W {s.window:.0f}  L {s.level:.0f}", info)
        if abs(self.zoom - 1.0) > 1e-3:
            t = f"{self.zoom:.1f}x"
            self._text(p, QPointF(W - 8 - fm.horizontalAdvance(t), fm.ascent() + 4), t, info)

    # -- input -----------------------------------------------------------------------------
    def enterEvent(self, event: Any) -> None:
        # keys go to the view under the mouse, unless the user is typing somewhere
        fw = QApplication.focusWidget()
        if not isinstance(fw, (QLineEdit, QAbstractSpinBox)):
            self.setFocus(Qt.FocusReason.MouseFocusReason)
        super().enterEvent(event)

    def leaveEvent(self, event: Any) -> None:
        self.hovered.emit(None)
        super().leaveEvent(event)

    def wheelEvent(self, event: Any) -> None:
        dy = event.angleDelta().y()
        if dy == 0:
            return
        if self.tools is not None and self.tools.painting and event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self.tools.resize(1 if dy > 0 else -1)
        elif event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.zoom_by(1.15 if dy > 0 else 1 / 1.15, event.position())
        else:
            steps = int(dy / 120) or (1 if dy > 0 else -1)
            self.step(steps)
        event.accept()

    def mousePressEvent(self, event: Any) -> None:
        pos = event.position()
        button = event.button()
        if button == Qt.MouseButton.MiddleButton or (button == Qt.MouseButton.LeftButton and self._space):
            self._drag = ("pan", pos, QPointF(self.pan))
        elif button == Qt.MouseButton.RightButton:
            s = self.display.settings
            self._drag = ("window", pos, (s.window, s.level))
        elif button == Qt.MouseButton.LeftButton and self.tools is not None and self.tools.mode != "navigate":
            v = self.widget_to_voxel(pos)
            if v is not None:
                self._drag = ("paint", pos, None)
                self.tools.press(v, self.orientation)
        elif button == Qt.MouseButton.LeftButton:
            self._drag = ("cursor", pos, None)
            self._move_cursor(pos)
        event.accept()

    def mouseMoveEvent(self, event: Any) -> None:
        pos = event.position()
        self.hovered.emit(self.widget_to_voxel(pos))
        if self._drag is None:
            return
        kind, start, value = self._drag
        if kind == "pan":
            self.pan = value + (pos - start)
            self.update()
        elif kind == "window":
            w0, l0 = value
            d = pos - start
            # ITK-SNAP-like feel: a full widget width changes the window by ~2x its range
            scale = max(w0, 50.0) / max(self.width(), 1) * 2.0
            self.display.set_window(w0 + d.x() * scale, l0 - d.y() * scale)
        elif kind == "cursor":
            self._move_cursor(pos)
        elif kind == "paint":
            v = self.widget_to_voxel(pos)
            if v is not None:
                self.tools.drag(v, self.orientation)

    def mouseReleaseEvent(self, event: Any) -> None:
        if self._drag is not None and self._drag[0] == "paint":
            self.tools.release()
        drag, self._drag = self._drag, None
        if drag is not None and drag[0] == "window" and (event.position() - drag[1]).manhattanLength() <= 3:
            # a right click, not a window drag: the menu of what lies under it
            self.menu_at(event.position())
        event.accept()

    def menu_at(self, pos: QPointF) -> QMenu | None:
        """Show the window's right-click menu for the voxel at widget position ``pos`` (kept as ``context_menu``)."""
        v = self.widget_to_voxel(pos)
        if v is None or self.branch_menu is None:
            return None
        menu = self.branch_menu(self, v)
        if menu is not None:
            self.context_menu = menu
            menu.popup(self.mapToGlobal(pos.toPoint()))
        return menu

    def _move_cursor(self, pos: QPointF) -> None:
        v = self.widget_to_voxel(pos)
        if v is not None:
            self.case.set_cursor(v)

    def keyPressEvent(self, event: Any) -> None:
        from app import shortcuts

        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = True
            return
        seq = QKeySequence(event.keyCombination())
        for action, delta in (
            ("slice_next", 1),
            ("slice_previous", -1),
            ("slice_page_next", 10),
            ("slice_page_previous", -10),
        ):
            if any(seq.matches(k) == QKeySequence.SequenceMatch.ExactMatch for k in shortcuts.keys(action)):
                self.step(delta)
                event.accept()
                return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event: Any) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = False
            return
        super().keyReleaseEvent(event)
