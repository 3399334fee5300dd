"""Slice views: orientation maths, windowing, overlay colours, scrolling, picking, zoom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt

from app.review.case import Case, PredictionEntry
from app.review.slice_view import (
    FN,
    FP,
    NONE,
    PRED_ONLY,
    REF_ONLY,
    TP,
    DisplaySettings,
    DisplayState,
    SliceRenderer,
    SliceView,
    argb_to_rgb,
    class_codes,
    display_shape,
    display_to_voxel,
    extract_slice,
    grey_argb,
    load_overlay_colors,
    load_window_presets,
    outline_of,
    overlay_window,
    pixel_mm,
    voxel_to_display,
    window_slice,
)
from core.box import Box
from core.volume import Geometry, IntensityVolume, LabelVolume

SHAPE = (10, 12, 14)  # z, y, x: all different so a wrong axis shows
SPACING_XYZ = (0.5, 0.8, 2.0)


# -- pure functions -----------------------------------------------------------------------


@pytest.mark.parametrize("orientation", ["axial", "coronal", "sagittal"])
def test_display_voxel_round_trip(orientation):
    arr = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    rng = np.random.default_rng(0)
    for _ in range(20):
        v = tuple(int(rng.integers(0, s)) for s in SHAPE)
        idx = {"axial": v[0], "coronal": v[1], "sagittal": v[2]}[orientation]
        row, col = voxel_to_display(orientation, v, SHAPE)
        assert display_to_voxel(orientation, idx, row, col, SHAPE) == v
        # the displayed slice shows that voxel's value at (row, col)
        sl = extract_slice(arr, orientation, idx)
        assert sl.shape == display_shape(orientation, SHAPE)
        assert sl[int(row), int(col)] == arr[v]


def test_radiological_layout():
    # canonical LPS arrays: x grows to the patient's left, y posterior, z superior
    arr = np.zeros(SHAPE)
    arr[-1, 0, -1] = 1  # most superior, most anterior, most left voxel
    ax = extract_slice(arr, "axial", SHAPE[0] - 1)
    assert ax[0, -1] == 1  # anterior at the top, patient's left on the screen's right
    co = extract_slice(arr, "coronal", 0)
    assert co[0, -1] == 1  # superior at the top
    sa = extract_slice(arr, "sagittal", SHAPE[2] - 1)
    assert sa[0, 0] == 1  # superior at the top, anterior on the left


def test_pixel_aspect_from_spacing():
    sz, sy, sx = 2.0, 0.8, 0.5
    assert pixel_mm("axial", (sz, sy, sx)) == (0.5, 0.8)
    assert pixel_mm("coronal", (sz, sy, sx)) == (0.5, 2.0)
    assert pixel_mm("sagittal", (sz, sy, sx)) == (0.8, 2.0)


def test_window_lut_end_points_and_float_path_agree():
    hu = np.array([[-1400, -1350, -600, 150, 151, 3000]], dtype=np.int16)
    g = window_slice(hu, 1500, -600)  # black at -1350, white at +150
    assert g[0, 0] == 0 and g[0, 1] == 0
    assert g[0, 3] == 255 and g[0, 4] == 255 and g[0, 5] == 255
    assert g[0, 2] == 127  # (750 / 1500) * 255 = 127.5, truncated
    f = window_slice(hu.astype(np.float32), 1500, -600)
    np.testing.assert_array_equal(f, g)
    u = window_slice(np.array([[0, 1000]], dtype=np.uint16), 1000, 500)
    assert u.tolist() == [[0, 255]]
    # the 16-bit RGB32 table gives the same greys, for every dtype the views see
    for arr in (hu, hu.astype(np.float32), hu.astype(np.int32)):
        rgb = argb_to_rgb(grey_argb(arr, 1500, -600))
        np.testing.assert_array_equal(rgb, np.repeat(g[:, :, None], 3, axis=2))
    every = np.arange(-32768, 32768, dtype=np.int16).reshape(256, 256)
    np.testing.assert_array_equal(argb_to_rgb(grey_argb(every, 700, 20))[..., 0], window_slice(every, 700, 20))


@pytest.mark.parametrize("orientation", ["axial", "coronal", "sagittal"])
def test_overlay_window_cuts_the_same_pixels_as_the_full_slice(orientation):
    rng = np.random.default_rng(3)
    mask = np.zeros(SHAPE, bool)
    mask[2:7, 3:9, 4:12] = rng.random((5, 6, 8)) > 0.5
    box = Box.from_ranges(((2, 7), (3, 9), (4, 12)))
    axis = {"axial": 0, "coronal": 1, "sagittal": 2}[orientation]
    for index in range(SHAPE[axis]):
        full = extract_slice(mask, orientation, index)
        win = overlay_window(orientation, index, box, SHAPE)
        if win is None:
            assert not full.any()
            continue
        idx, flip, (r0, c0) = win
        sub = mask[idx][::-1] if flip else mask[idx]
        h, w = sub.shape
        np.testing.assert_array_equal(full[r0 : r0 + h, c0 : c0 + w], sub)
        assert full.sum() == sub.sum()


def test_class_codes_and_outline():
    ref = np.array([[1, 1, 0, 0]], bool)
    pred = np.array([[1, 0, 1, 0]], bool)
    assert class_codes(ref, pred).tolist() == [[TP, FN, FP, NONE]]
    assert class_codes(ref, None).tolist() == [[REF_ONLY, REF_ONLY, NONE, NONE]]
    assert class_codes(None, pred).tolist() == [[PRED_ONLY, NONE, PRED_ONLY, NONE]]
    assert class_codes(None, None) is None
    sq = np.zeros((7, 7), np.uint8)
    sq[1:6, 1:6] = FP
    out = outline_of(sq)
    assert (out[1:6, 1:6] > 0).sum() == 16  # the 5x5 square's ring
    assert out[3, 3] == NONE and out[1, 1] == FP


def test_presets_are_data():
    presets = {p.key: (p.window, p.level) for p in load_window_presets()}
    assert presets == {"lung": (1500, -600), "mediastinum": (350, 40), "bone": (2000, 300)}
    colors = load_overlay_colors()["classes"]
    r, g, b = colors["FP"]["rgb"]
    assert g > r and g > b  # FP green, as in the paper's figures
    r, g, b = colors["FN"]["rgb"]
    assert r > g and r > b  # FN red


def test_renderer_blends_class_colour_exactly():
    r = SliceRenderer()
    s = DisplaySettings(window=1000, level=0, opacity=0.25)
    ct = np.zeros((1, 3), np.int16)  # grey 127
    ref = np.array([[1, 1, 0]], bool)
    pred = np.array([[1, 0, 1]], bool)
    out = argb_to_rgb(r.render(ct, s, ref, pred))
    grey = 127
    for col, code in ((0, TP), (1, FN), (2, FP)):
        want = np.floor(grey * 0.75 + r.rgb[code] * 0.25 + 0.5).astype(np.uint8)
        np.testing.assert_array_equal(out[0, col], want)
    s.visible["FP"] = False
    hidden = argb_to_rgb(r.render(ct, s, ref, pred))
    assert out[0, 2].tolist() != hidden[0, 2].tolist()
    assert hidden[0, 2].tolist() == [grey] * 3
    # an overlay given for a sub-rectangle lands at its offset
    s.visible["FP"] = True
    ct3 = np.zeros((3, 4), np.int16)
    sub = argb_to_rgb(r.render(ct3, s, np.array([[False]]), np.array([[True]]), offset=(2, 1)))
    assert sub[2, 1].tolist() == out[0, 2].tolist() and sub[0, 0].tolist() == [grey] * 3


def test_heatmap_uses_probabilities():
    r = SliceRenderer()
    s = DisplaySettings(window=1000, level=0, opacity=1.0, heatmap=True)
    ct = np.zeros((1, 3), np.int16)
    prob = np.array([[0, 128, 255]], np.uint8)
    out = argb_to_rgb(r.render(ct, s, None, None, prob))
    assert out[0, 0].tolist() == [127, 127, 127]  # below min probability: untouched
    assert out[0, 2].tolist() == [255, 255, 255]  # p = 1 -> white end of 'hot', full alpha


# -- the widget ---------------------------------------------------------------------------


def _case(qtbot) -> tuple[Case, dict]:
    rng = np.random.default_rng(1)
    ct_arr = rng.integers(-1000, 400, SHAPE).astype(np.int16)
    geo = Geometry(SPACING_XYZ)
    ref = np.zeros(SHAPE, bool)
    pred = np.zeros(SHAPE, bool)
    fp, fn, tp = (5, 3, 4), (5, 8, 9), (5, 6, 6)
    ref[fn] = ref[tp] = True
    pred[fp] = pred[tp] = True
    case = Case(auto_analyse=False)
    case.set_ct(IntensityVolume(ct_arr, geo, "ct"))
    case.set_reference(LabelVolume(ref, geo, "ref"))
    case.add_prediction(PredictionEntry("p", LabelVolume(pred, geo, "p")))
    return case, {"fp": fp, "fn": fn, "tp": tp}


@pytest.fixture
def view(qtbot):
    case, marks = _case(qtbot)
    display = DisplayState(DisplaySettings(window=2000, level=0, opacity=0.6))
    v = SliceView(case, "axial", display)
    v.resize(400, 360)
    qtbot.addWidget(v)
    v.show()
    qtbot.waitExposed(v)
    return v, case, marks


def test_overlay_colour_at_known_fp_and_fn_voxels(view):
    v, case, marks = view
    r = v.renderer
    for kind, code in (("fp", FP), ("fn", FN), ("tp", TP)):
        z, y, x = marks[kind]
        case.set_cursor((z, y, x))
        rgb = v.current_rgb()
        grey = int(window_slice(case.ct.array[z, y, x][None, None], 2000, 0)[0, 0])
        want = np.floor(grey * 0.4 + r.rgb[code] * 0.6 + 0.5).astype(np.uint8)
        np.testing.assert_array_equal(rgb[y, x], want, err_msg=kind)
    # a background pixel stays grey
    assert len(set(rgb[0, 0].tolist())) == 1


def test_overlay_inside_the_airway_box_equals_the_full_slice(view, qtbot):
    v, case, marks = view
    qtbot.waitUntil(lambda: case.overlay_box() is not None, timeout=5000)
    assert case.overlay_box() == Box((5, 3, 4), (6, 9, 10))  # union of the FP, FN and TP voxels
    for o in ("axial", "coronal", "sagittal"):
        v.orientation = o
        for idx in range(SHAPE[{"axial": 0, "coronal": 1, "sagittal": 2}[o]]):
            cur = list(case.cursor)
            cur[{"axial": 0, "coronal": 1, "sagittal": 2}[o]] = idx
            case.set_cursor(cur)
            v.invalidate()
            boxed = v.current_rgb()
            saved, case._boxes = case._boxes, {}
            v.invalidate()
            full = v.current_rgb()
            case._boxes = saved
            np.testing.assert_array_equal(boxed, full)


def test_scroll_by_wheel_keys_and_pages(view, qtbot):
    v, case, _ = view
    case.set_cursor((5, 6, 7))
    from PySide6.QtCore import QPointF as P
    from PySide6.QtGui import QWheelEvent

    ev = QWheelEvent(
        P(50, 50),
        P(50, 50),
        QPoint(0, 0),
        QPoint(0, 120),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    v.wheelEvent(ev)
    assert case.cursor == (6, 6, 7)
    v.setFocus()
    qtbot.keyClick(v, Qt.Key.Key_Down)
    assert case.cursor[0] == 5
    qtbot.keyClick(v, Qt.Key.Key_PageUp)
    assert case.cursor[0] == 9  # +10 clamped at the last slice
    qtbot.keyClick(v, Qt.Key.Key_PageDown)
    assert case.cursor[0] == 0


def test_click_picks_the_voxel_with_anisotropic_aspect(view, qtbot):
    v, case, _ = view
    rect = v.image_rect()
    # spacing-true aspect: width/height = (14 * 0.5 mm) / (12 * 0.8 mm)
    assert rect.width() / rect.height() == pytest.approx((14 * 0.5) / (12 * 0.8), rel=1e-6)
    target = (case.cursor[0], 9, 3)
    p = v.voxel_to_widget(target)
    qtbot.mouseClick(v, Qt.MouseButton.LeftButton, pos=p.toPoint())
    assert case.cursor == target


def test_zoom_keeps_point_under_mouse_and_right_drag_windows(view, qtbot):
    v, case, _ = view
    anchor = v.voxel_to_widget((case.cursor[0], 4, 11))
    before = v.widget_to_voxel(anchor)
    v.zoom_by(3.0, anchor)
    assert v.zoom == pytest.approx(3.0)
    assert v.widget_to_voxel(anchor) == before
    s = v.display.settings
    w0, l0 = s.window, s.level
    centre = QPoint(v.width() // 2, v.height() // 2)
    qtbot.mousePress(v, Qt.MouseButton.RightButton, pos=centre)
    from PySide6.QtCore import QEvent
    from PySide6.QtGui import QMouseEvent

    move = QMouseEvent(
        QEvent.Type.MouseMove,
        QPointF(centre + QPoint(40, -20)),
        QPointF(centre + QPoint(40, -20)),
        Qt.MouseButton.NoButton,
        Qt.MouseButton.RightButton,
        Qt.KeyboardModifier.NoModifier,
    )
    v.mouseMoveEvent(move)
    qtbot.mouseRelease(v, Qt.MouseButton.RightButton, pos=centre + QPoint(40, -20))
    assert s.window > w0 and s.level > l0 and s.preset == "custom"


def test_views_are_linked_through_the_cursor(qtbot):
    case, _ = _case(qtbot)
    display = DisplayState()
    views = {o: SliceView(case, o, display) for o in ("axial", "coronal", "sagittal")}
    for v in views.values():
        qtbot.addWidget(v)
        v.resize(300, 300)
    views["coronal"].set_slice(2)
    assert views["coronal"].index == 2 and case.cursor[1] == 2
    views["sagittal"].step(3)
    assert views["sagittal"].index == case.cursor[2]
    assert views["axial"].index == case.cursor[0]


HIDPI_SCRIPT = r"""
import sys
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication
app = QApplication([])
from app.review.case import Case
from app.review.slice_view import DisplayState, SliceView
from core.volume import Geometry, IntensityVolume
case = Case(auto_analyse=False)
case.set_ct(IntensityVolume(np.zeros((10, 12, 14), np.int16), Geometry((0.5, 0.8, 2.0))))
v = SliceView(case, "coronal", DisplayState())
v.resize(300, 260)
v.show()
QTest.qWaitForWindowExposed(v)
target = (7, case.cursor[1], 11)
QTest.mouseClick(v, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, v.voxel_to_widget(target).toPoint())
print(v.devicePixelRatio(), case.cursor == target, case.cursor)
"""


def test_picking_is_right_on_hidpi_screens(tmp_path):
    """With a device pixel ratio of 2 a click still lands on the voxel drawn under it."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, QT_SCALE_FACTOR="2", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run([sys.executable, "-c", HIDPI_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    ratio, ok, cursor = out.stdout.split(maxsplit=2)
    assert float(ratio) == 2.0 and ok == "True", cursor


def test_middle_drag_pans_by_the_drag(view, qtbot):
    from PySide6.QtCore import QEvent
    from PySide6.QtGui import QMouseEvent

    v, case, _ = view
    before = v.image_rect()
    cursor = case.cursor
    start = QPoint(100, 100)
    qtbot.mousePress(v, Qt.MouseButton.MiddleButton, pos=start)
    end = QPointF(130, 85)
    v.mouseMoveEvent(
        QMouseEvent(
            QEvent.Type.MouseMove,
            end,
            end,
            Qt.MouseButton.NoButton,
            Qt.MouseButton.MiddleButton,
            Qt.KeyboardModifier.NoModifier,
        )
    )
    qtbot.mouseRelease(v, Qt.MouseButton.MiddleButton, pos=end.toPoint())
    after = v.image_rect()
    assert (after.x() - before.x(), after.y() - before.y()) == pytest.approx((30, -15))
    assert case.cursor == cursor  # panning never moves the crosshair
    v.reset_view()
    assert v.image_rect() == before
