"""Distance weights (eq. 15): closed forms on hand-built tubes, clipping, anisotropy, guards."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from core.box import bounding_box
from core.errors import Cancelled, ConfigError, InputError
from core.weights import centreline, distance_weights


def _tube_along_x(shape=(15, 17, 30), centre=(7, 8), radius=4.0, spacing_zy=(1.0, 1.0)):
    """A straight tube along x, its axis as skeleton, and the exact distance of each voxel to the axis."""
    z, y, _ = np.indices(shape)
    dz = (z - centre[0]) * spacing_zy[0]
    dy = (y - centre[1]) * spacing_zy[1]
    dist = np.sqrt(dz**2 + dy**2)
    mask = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2) <= radius
    mask[:, :, :3] = mask[:, :, -3:] = False
    axis = np.zeros(shape, bool)
    axis[centre[0], centre[1], 3:-3] = True
    return mask, axis, dist


def test_closed_form_with_given_centreline():
    mask, axis, dist = _tube_along_x()
    w = distance_weights(mask, skeleton=axis)
    d_max = dist[mask].max()
    assert d_max == pytest.approx(4.0)
    expected = np.where(mask, 1 - 0.9 * np.sqrt(dist / d_max), 1.0)
    np.testing.assert_allclose(w, expected, rtol=0, atol=1e-6)
    assert w.dtype == np.float32 and w.shape == mask.shape
    assert w[mask].min() == pytest.approx(0.1, abs=1e-6)  # m = 1 - alpha at d = d_max
    assert np.all(w[~mask] == 1.0) and np.all(w[axis] == 1.0)


def test_parameters_alpha_m_r_d():
    mask, axis, dist = _tube_along_x()
    d = dist / dist[mask].max()
    w = distance_weights(mask, skeleton=axis, alpha=0.2, r_d=1.0)
    np.testing.assert_allclose(w[mask], 1 - 0.8 * d[mask], atol=1e-6)
    w = distance_weights(mask, skeleton=axis, m=0.5, r_d=2.0)
    np.testing.assert_allclose(w[mask], 1 - 0.5 * d[mask] ** 2, atol=1e-6)
    # the paper's m can exceed 1: weights are clipped to [0, 1] like the authors' loader
    w = distance_weights(mask, skeleton=axis, m=1.5)
    np.testing.assert_allclose(w[mask], np.clip(1 - 1.5 * np.sqrt(d[mask]), 0, 1), atol=1e-6)
    assert w.min() == 0.0
    with pytest.raises(ConfigError):
        distance_weights(mask, r_d=0)


def test_millimetre_distances_follow_anisotropic_spacing():
    spacing = (2.0, 0.7, 0.7)  # z, y, x
    mask, axis, dist_mm = _tube_along_x(spacing_zy=spacing[:2])
    w_mm = distance_weights(mask, spacing_zyx=spacing, skeleton=axis)
    expected = 1 - 0.9 * np.sqrt(dist_mm / dist_mm[mask].max())
    np.testing.assert_allclose(w_mm[mask], expected[mask], atol=1e-5)
    # voxel distances differ from mm ones when the spacing is anisotropic
    w_vox = distance_weights(mask, skeleton=axis)
    assert np.abs(w_vox - w_mm).max() > 0.05
    # an isotropic scale does not change d / d_max
    w_iso = distance_weights(mask, spacing_zyx=(0.5, 0.5, 0.5), skeleton=axis)
    np.testing.assert_allclose(w_iso, w_vox, atol=1e-6)


def test_computed_centreline_of_a_tube_is_its_axis():
    mask, axis, dist = _tube_along_x(shape=(15, 17, 40))
    skel = centreline(mask)
    middle = skel[:, :, 10:30]
    assert np.array_equal(np.argwhere(middle)[:, :2], np.tile([7, 8], (middle.sum(), 1)))
    w = distance_weights(mask)
    np.testing.assert_array_equal(w, distance_weights(mask, skeleton=skel))
    # along the middle of the tube, weights fall with the distance to the axis
    row = w[7, 8:13, 20]
    assert row[0] == 1.0 and np.all(np.diff(row) < 0)


def test_crop_to_bbox_gives_the_same_weights_as_the_small_array():
    mask, axis, _ = _tube_along_x()
    big = np.zeros((40, 50, 60), bool)
    big[10:25, 20:37, 15:45] = mask
    w_big = distance_weights(big)
    np.testing.assert_array_equal(w_big[10:25, 20:37, 15:45], distance_weights(mask))
    outside = np.ones(big.shape, bool)
    outside[10:25, 20:37, 15:45] = False
    assert np.all(w_big[outside] == 1.0)
    # tube: z 7 +- 4, y 8 +- 4, x 3..26 inside the pasted block
    box = bounding_box(big)
    assert box is not None and box.slices == (slice(13, 22), slice(24, 33), slice(18, 42))
    assert box.grown(20, big.shape).slices == (slice(0, 40), slice(4, 50), slice(0, 60))


def test_empty_tiny_and_thin_labels():
    empty = np.zeros((6, 6, 6), bool)
    assert np.all(distance_weights(empty) == 1.0)
    one = empty.copy()
    one[3, 3, 3] = True
    assert np.all(distance_weights(one) == 1.0)  # d_max = 0
    # a 2x2xN box: skimage's skeletonize returns nothing; the guard keeps a centreline
    thin = np.zeros((8, 8, 16), bool)
    thin[3:5, 3:5, 2:14] = True
    assert centreline(thin).any()
    w = distance_weights(thin)
    assert np.isfinite(w).all() and (w[thin] >= 0).all() and (w[thin] <= 1).all()


def test_bad_input_and_cancel():
    with pytest.raises(InputError, match="3D"):
        distance_weights(np.ones((4, 4), bool))
    mask, axis, _ = _tube_along_x()
    with pytest.raises(InputError, match="skeleton"):
        distance_weights(mask, skeleton=axis[:-1])
    with pytest.raises(InputError, match="spacing"):
        distance_weights(mask, spacing_zyx=(1, 0, 1))
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        distance_weights(mask, cancel=stop)


DATA = __import__("pathlib").Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.shared_data
@pytest.mark.skipif(not (DATA / "cip" / "lm-64.nrrd").is_file(), reason="needs ../shared/data (real CIP label map)")
def test_real_label_map():
    from core.io import read_label

    label = read_label(DATA / "cip" / "lm-64.nrrd", "bits:8:2")
    mask = label.mask
    assert mask.sum() == 555
    skel = centreline(mask)
    w = distance_weights(mask, spacing_zyx=label.spacing_zyx, skeleton=skel)
    assert w.shape == mask.shape and w.dtype == np.float32
    assert np.all(w[~mask] == 1.0) and np.all(w[skel] == 1.0)
    assert w[mask].min() == pytest.approx(0.1, abs=1e-6)  # the voxel at d_max gets 1 - m
    assert 0.1 <= w[mask].mean() < 1.0
