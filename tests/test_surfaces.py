"""core.surfaces: label maps -> world-space meshes, checked against closed forms."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from core.box import Box, bounding_box
from core.errors import Cancelled, GeometryError
from core.surfaces import (
    FN,
    FP,
    TP,
    components_surface,
    labels_surface,
    mask_surface,
    outcome_labels,
    outcome_surface,
    relabel,
    world_to_voxel,
)
from core.volume import Geometry


def _box_mask(shape=(20, 30, 40), z=(5, 10), y=(10, 20), x=(15, 30)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[z[0] : z[1], y[0] : y[1], x[0] : x[1]] = True
    return m


def test_bounding_box_and_empty():
    m = _box_mask()
    assert bounding_box(m) == Box((5, 10, 15), (10, 20, 30))
    assert bounding_box(np.zeros((4, 4, 4), np.uint8)) is None


def test_outcome_labels_truth_table():
    p = np.array([0, 1, 0, 1], bool).reshape(1, 1, 4)
    r = np.array([0, 0, 1, 1], bool).reshape(1, 1, 4)
    assert outcome_labels(p, r).ravel().tolist() == [0, FP, FN, TP]
    with pytest.raises(GeometryError):
        outcome_labels(p, r[..., :3])


def test_staircase_box_surface_has_exact_bounds_and_area():
    g = Geometry((0.5, 0.7, 2.0), (10.0, 20.0, 30.0))
    s = mask_surface(_box_mask(), g, smoothing=False)
    # voxel faces sit half a voxel outside the first/last voxel centres
    lo = np.array([10 + 14.5 * 0.5, 20 + 9.5 * 0.7, 30 + 4.5 * 2.0])
    hi = np.array([10 + 29.5 * 0.5, 20 + 19.5 * 0.7, 30 + 9.5 * 2.0])
    b = np.array(s.bounds).reshape(3, 2)
    np.testing.assert_allclose(b[:, 0], lo, atol=1e-6)
    np.testing.assert_allclose(b[:, 1], hi, atol=1e-6)
    a, bb, c = 15 * 0.5, 10 * 0.7, 5 * 2.0
    assert s.area == pytest.approx(2 * (a * bb + bb * c + c * a), rel=1e-9)
    assert set(np.unique(s.cell_data["label"])) == {1}


def test_direction_matrix_is_applied():
    # x and y flipped (RAS-like storage): the surface must land where index_to_world puts the voxels
    g = Geometry((1.0, 1.5, 2.5), (100.0, -50.0, 7.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    m = _box_mask()
    s = mask_surface(m, g, smoothing=False)
    centre_idx = np.array([(5 + 9) / 2, (10 + 19) / 2, (15 + 29) / 2])
    expected = g.index_to_world(centre_idx)
    b = np.array(s.bounds).reshape(3, 2)
    np.testing.assert_allclose(b.mean(axis=1), expected, atol=1e-6)
    np.testing.assert_allclose(b[:, 1] - b[:, 0], [15 * 1.0, 10 * 1.5, 5 * 2.5], atol=1e-6)


def test_outcome_surface_labels_faces_by_class():
    g = Geometry((1.0, 1.0, 1.0))
    ref = _box_mask(x=(5, 20))
    pred = _box_mask(x=(10, 30))  # x 5..9 FN, 10..19 TP, 20..29 FP
    s = outcome_surface(pred, ref, g, smoothing=False)
    labels = np.asarray(s.cell_data["label"])
    assert set(np.unique(labels)) == {TP, FP, FN}
    centres = np.asarray(s.cell_centers().points)
    # faces of each class lie over that class's x range (plus the half-voxel skin)
    assert centres[labels == FN, 0].max() <= 9.5 + 1e-6
    assert centres[labels == FP, 0].min() >= 19.5 - 1e-6
    assert np.all((centres[labels == TP, 0] >= 9.5 - 1e-6) & (centres[labels == TP, 0] <= 19.5 + 1e-6))
    # outer skin only: the union is one box, so the area is that box's
    assert s.area == pytest.approx(2 * (25 * 10 + 10 * 5 + 5 * 25), rel=1e-9)


def test_components_surface_numbers_each_component():
    g = Geometry()
    shape = (12, 12, 12)
    a = np.zeros((2, 2, 2), bool) | True
    b = np.ones((3, 3, 3), bool)
    s = components_surface(
        [(Box((1, 1, 1), (3, 3, 3)), a), (Box((6, 6, 6), (9, 9, 9)), b)], shape=shape, geometry=g, smoothing=False
    )
    labels = np.asarray(s.cell_data["label"])
    assert set(np.unique(labels)) == {1, 2}
    areas = s.compute_cell_sizes(length=False, volume=False)["Area"]
    assert areas[labels == 1].sum() == pytest.approx(6 * 4)
    assert areas[labels == 2].sum() == pytest.approx(6 * 9)


def test_relabel_and_empty_and_cancel():
    lab = np.array([0, 1, 2, 3, 2], np.int32).reshape(1, 1, 5)
    assert relabel(lab, {1: 5, 2: 7}, default=9).ravel().tolist() == [0, 5, 7, 9, 7]
    assert labels_surface(np.zeros((5, 5, 5), np.uint8), Geometry()).n_points == 0
    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled):
        mask_surface(_box_mask(), Geometry(), cancel=ev)
    seen: list[tuple[float, float, str]] = []
    mask_surface(_box_mask(), Geometry(), progress=lambda d, t, m: seen.append((d, t, m)))
    assert seen[0] == (0, 3, "Building 3D surfaces") and seen[-1] == (3, 3, "Building 3D surfaces")


def test_world_to_voxel_snaps_to_mask():
    g = Geometry((0.5, 0.5, 2.0), (0.0, 0.0, 0.0), (-1, 0, 0, 0, 1, 0, 0, 0, 1))
    m = _box_mask()
    s = mask_surface(m, g, smoothing=False)
    for p in np.asarray(s.points)[:: max(1, s.n_points // 50)]:
        v = world_to_voxel(p, g, m.shape, mask=m)
        assert m[v], (p, v)
        # within one voxel diagonal of the picked point
        assert np.linalg.norm(g.index_to_world(v) - p) <= np.linalg.norm(g.spacing) + 1e-6
    # without a mask it is the rounded index
    assert world_to_voxel(g.index_to_world((3, 4, 5)), g, m.shape) == (3, 4, 5)


def test_offset_crop_lands_where_the_full_volume_does():
    g = Geometry((0.8, 0.6, 1.2), (5.0, 6.0, 7.0), (0, 1, 0, -1, 0, 0, 0, 0, 1))
    m = _box_mask()
    full = mask_surface(m, g, smoothing=False)
    part = mask_surface(m[3:, 8:, 10:], g, offset=(3, 8, 10), smoothing=False)
    np.testing.assert_allclose(np.array(full.bounds), np.array(part.bounds), atol=1e-9)
    assert full.area == pytest.approx(part.area)


def test_select_faces_splits_by_label():
    from core.surfaces import select_faces

    ref = _box_mask(x=(5, 20))
    pred = _box_mask(x=(10, 30))
    s = outcome_surface(pred, ref, Geometry(), smoothing=False)
    errors = select_faces(s, [FP, FN])
    tp = select_faces(s, [TP])
    assert errors.n_cells + tp.n_cells == s.n_cells
    assert set(np.unique(errors.cell_data["label"])) == {FP, FN}
    assert errors.area + tp.area == pytest.approx(s.area)
    assert select_faces(s, [99]).n_cells == 0
