"""Reference tree parsing: hand-built trees, exactness against scipy, save/load, real ATM'22 pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from airway_shapes import Y_SEGMENTS, Y_SHAPE, tube
from scipy import ndimage

from core.errors import InputError
from core.tree import AirwayTree, fill_holes, largest_component_in_box, nearest_feature, parse_tree

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def y_label() -> np.ndarray:
    return tube(Y_SHAPE, Y_SEGMENTS)


@pytest.fixture(scope="module")
def y_tree(y_label) -> AirwayTree:
    return parse_tree(y_label, (0.5, 0.6, 0.6))


def test_y_tree_has_seven_branches_in_three_generations(y_tree):
    t = y_tree
    assert t.n_branches == 7
    gens = sorted(b.generation for b in t.branches)
    assert gens == [0, 1, 1, 2, 2, 2, 2]
    trachea = t.branch(t.trachea)
    assert trachea.generation == 0 and trachea.parent is None and len(trachea.children) == 2
    for b in t.branches:
        for c in b.children:
            assert t.branch(c).parent == b.id
            assert t.branch(c).generation == b.generation + 1
    terminals = [b for b in t.branches if b.is_terminal]
    assert len(terminals) == 4 and all(b.generation == 2 for b in terminals)
    # the trachea is the top tube: its centreline lies at small z
    z = t.centreline_zyx[t.centreline_branch == t.trachea, 0]
    assert z.max() <= 30


@pytest.mark.parametrize("radius", [1.5, 2.5, 4.0, 8.0])
def test_diameter_of_a_round_tube_is_within_half_a_voxel(radius):
    n = int(2 * radius + 6)
    m = tube((24, n, n), [((0, n // 2, n // 2), (23, n // 2, n // 2), radius)])  # through both z faces
    t = parse_tree(m, (1.0, 0.5, 0.5))
    assert t.n_branches == 1
    b = t.branch(1)
    assert abs(b.mean_diameter_mm - 2 * radius * 0.5) <= 0.25
    assert abs(b.min_diameter_mm - 2 * radius * 0.5) <= 0.25
    # a straight centreline along z at 1 mm per voxel (thinning trims the ends a little)
    assert b.centreline_voxels >= 10
    assert b.length_mm == pytest.approx(b.centreline_voxels - 1.0)


def test_branch_measures_of_the_y_tree(y_tree):
    t = y_tree
    sp = np.array(t.spacing_zyx)
    trachea = t.branch(t.trachea)
    # trachea radius 4 voxels (2 mm along z, 2.4 mm in plane): diameter 4..4.8 mm
    assert 3.8 <= trachea.mean_diameter_mm <= 5.2
    for b in t.branches:
        if b.is_terminal:
            # radius 2.5 voxels on an oblique axis: 1.25..1.5 mm
            assert 2.0 <= b.mean_diameter_mm <= 3.3, b
            assert b.min_diameter_mm <= b.mean_diameter_mm
            axis = np.linalg.norm((np.array((68, 24, 14)) - np.array((44, 40, 22))) * sp)
            assert 0.6 * axis <= b.length_mm <= 1.1 * axis
    total_vox = sum(b.voxels for b in t.branches)
    assert total_vox == int(t.branch_map.astype(bool).sum())
    assert abs(sum(b.volume_mm3 for b in t.branches) - total_vox * float(np.prod(sp))) < 1e-6


def test_branch_map_covers_the_label_and_centreline_lies_inside(y_label, y_tree):
    bm = y_tree.branch_label_map()
    assert bm.shape == y_label.shape
    np.testing.assert_array_equal(bm > 0, y_label)  # single component without holes
    cl = y_tree.centreline_mask()
    assert cl.sum() == len(y_tree.centreline_zyx)
    assert not (cl & ~y_label).any()
    z, y, x = y_tree.centreline_zyx.T
    np.testing.assert_array_equal(bm[z, y, x], y_tree.centreline_branch)


def test_save_and_load_round_trip(tmp_path, y_tree):
    path = y_tree.save(tmp_path / "sub" / "tree.npz")
    again = AirwayTree.load(path)
    assert again.branches == y_tree.branches
    assert again.trachea == y_tree.trachea
    np.testing.assert_array_equal(again.branch_label_map(), y_tree.branch_label_map())
    np.testing.assert_array_equal(again.centreline_zyx, y_tree.centreline_zyx)
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temp file left behind


def test_load_rejects_other_files(tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="Not a saved airway tree"):
        AirwayTree.load(bad)
    with pytest.raises(InputError, match="not found"):
        AirwayTree.load(tmp_path / "missing.npz")


def test_nearest_feature_matches_scipy_including_ties():
    rng = np.random.default_rng(1)
    for _ in range(12):
        shape = tuple(int(v) for v in rng.integers(6, 22, 3))
        feat = rng.random(shape) < rng.choice([0.01, 0.05, 0.2])
        feat[tuple(rng.integers(0, s) for s in shape)] = True
        inds = ndimage.distance_transform_edt(~feat, return_distances=False, return_indices=True)
        pts = np.argwhere(np.ones(shape, bool))
        f = np.argwhere(feat)
        got = f[nearest_feature(pts, f)]
        want = inds[:, pts[:, 0], pts[:, 1], pts[:, 2]].T
        np.testing.assert_array_equal(got, want)


def test_fill_holes_and_largest_component_match_scipy():
    rng = np.random.default_rng(2)
    m = ndimage.binary_opening(rng.random((20, 24, 22)) < 0.55)
    np.testing.assert_array_equal(fill_holes(m), ndimage.binary_fill_holes(m))
    lab, n = ndimage.label(m)
    sizes = np.bincount(lab.ravel())[1:]
    found = largest_component_in_box(m, 6)
    assert found is not None
    box, sub = found
    largest = np.zeros(m.shape, bool)
    largest[box.slices] = sub
    np.testing.assert_array_equal(largest, lab == np.argmax(sizes) + 1)


def test_single_tube_is_one_branch_and_touching_the_volume_face_is_fine():
    m = tube((40, 20, 20), [((0, 10, 10), (39, 10, 10), 3.0)])  # runs through both z faces
    t = parse_tree(m, (1.0, 1.0, 1.0))
    assert t.n_branches == 1 and t.trachea == 1
    b = t.branch(1)
    assert b.generation == 0 and b.parent is None and b.children == ()
    assert b.centreline_voxels >= 30
    assert 30 <= b.length_mm <= 40


def test_thin_even_box_without_skeleton_still_gives_one_branch():
    m = np.zeros((12, 8, 8), bool)
    m[2:10, 3:5, 3:5] = True  # 2 x 2 cross-section: 3D thinning may return nothing
    t = parse_tree(m)
    assert t.n_branches == 1
    assert any("skeleton is empty" in w for w in t.warnings)
    assert len(t.centreline_zyx) > 0 and t.centreline_mask()[m].sum() == len(t.centreline_zyx)
    assert t.branch(1).voxels == m.sum()


def test_tiny_blob_with_short_skeleton_is_one_branch_with_warning():
    m = np.zeros((9, 9, 9), bool)
    m[3:6, 3:6, 3:6] = True
    t = parse_tree(m)
    assert t.n_branches == 1
    assert any("whole skeleton is one branch" in w for w in t.warnings)


def test_empty_label_raises_input_error():
    with pytest.raises(InputError, match="empty"):
        parse_tree(np.zeros((5, 5, 5), bool))
    with pytest.raises(InputError, match="3D"):
        parse_tree(np.zeros((5, 5), bool))


def test_cancel_raises():
    import threading

    from core.errors import Cancelled

    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled):
        parse_tree(np.ones((5, 5, 5), bool), cancel=ev)


def _atm_pair():
    ref = DATA / "atm22" / "preds_YangLab" / "ATM_305_0000.nii.gz"
    pred = DATA / "atm22" / "preds_timi" / "ATM_305_0000.nii.gz"
    if not ref.exists() or not pred.exists():
        pytest.skip("needs ../shared/data/atm22 (real ATM'22 pair)")
    return ref, pred


@pytest.mark.slow
@pytest.mark.shared_data
def test_real_reference_parses_into_211_branches():
    from core.io import read_label

    ref_path, _ = _atm_pair()
    ref = read_label(ref_path)
    t = parse_tree(ref)
    # ATM'22 organisers' tree_parse.py on this label: 211 branches
    assert t.n_branches == 211
    assert t.branch(t.trachea).generation == 0
    assert t.max_generation >= 10
    assert not t.warnings


def _reference_parse(label: np.ndarray) -> np.ndarray:
    """The organisers' tree_parse.py procedure, re-typed plainly (whole-volume passes), for comparison."""
    from skimage import measure
    from skimage.morphology import skeletonize

    cd, num = measure.label(label.astype(np.uint8), return_num=True, connectivity=1)
    vol = np.array([(cd == k + 1).sum() for k in range(num)])
    lab = ndimage.binary_fill_holes(cd == np.argsort(vol)[-1] + 1).astype(np.uint8)
    skel = skeletonize(lab).astype(np.uint8)
    filt = ndimage.convolve(skel, np.ones((3, 3, 3), np.uint8)) * skel
    sp = skel.copy()
    sp[filt > 3] = 0
    cd, num = ndimage.label(sp, structure=np.ones((3, 3, 3)))
    for i in range(num):
        if (cd == i + 1).sum() < 5:
            sp[cd == i + 1] = 0
    cd, num = ndimage.label(sp, structure=np.ones((3, 3, 3)))
    _, inds = ndimage.distance_transform_edt(1 - sp, return_indices=True)
    tp = cd[inds[0], inds[1], inds[2]] * lab

    def graph(tp, num):
        tr = int(np.argsort(np.array([(tp == k + 1).sum() for k in range(num)], float))[-1]) + 1
        ad = np.zeros((num, num), np.uint8)
        for i in range(num):
            cur = (tp == i + 1).astype(np.uint8)
            ring = ndimage.binary_dilation(cur, ndimage.generate_binary_structure(3, 1)).astype(np.uint8) - cur
            touching = ring * tp
            for j in np.unique(touching[touching > 0]):
                ad[i, j - 1] = 1
        pm = np.zeros((num, num), np.uint8)
        cm = np.zeros((num, num), np.uint8)
        g = np.zeros(num, np.int64)
        proc = [tr - 1]
        pm[tr - 1, tr - 1] = 1
        while proc:
            it, proc = proc, []
            while it:
                cur = it.pop()
                for ch in np.where(ad[cur] > 0)[0]:
                    if pm[ch].sum() == 0:
                        pm[ch, cur] = cm[cur, ch] = 1
                        g[ch] = g[cur] + 1
                        proc.append(ch)
                    elif g[cur] + 1 == g[ch]:
                        pm[ch, cur] = cm[cur, ch] = 1
        return pm, cm, g

    def merge(pm, cm, tp):
        d = []
        for w in np.where(pm.sum(1) > 1)[0]:
            ps = np.where(pm[w] > 0)[0]
            for p in ps[1:]:
                tp[tp == p + 1] = ps[0] + 1
                if p not in d:
                    d.append(p)
        for loc in np.where(cm.sum(1) == 1)[0]:
            if loc not in d:
                ch = np.where(cm[loc] == 1)[0][0]
                if ch not in d:
                    tp[tp == ch + 1] = loc + 1
                    d.append(ch)
        return d

    pm, cm, g = graph(tp, num)
    while merge(pm, cm, tp):
        d = merge(pm, cm, tp)
        for i in range(num):
            if i not in d:
                tp[tp == i + 1] = i + 1 - int(np.sum(np.array(d) < i))
        num -= len(d)
        pm, cm, g = graph(tp, num)
    return tp


@pytest.mark.parametrize("case", ["y", "noisy_y", "thin_y_through_faces", "tube_along_a_face"])
def test_parse_equals_the_reference_procedure_voxel_for_voxel(case, y_label):
    label = y_label.copy()
    if case == "noisy_y":
        # ragged surface with bumps: spurs and extra pieces that the merge rules must remove
        rng = np.random.default_rng(1)
        surface = label & ~ndimage.binary_erosion(label)
        label &= ~(surface & (rng.random(label.shape) < 0.5))
        label |= ndimage.binary_dilation(surface & (rng.random(label.shape) < 0.01))
    elif case == "thin_y_through_faces":
        # one-voxel-wide centrelines reach the volume's faces: scipy's reflect border counts there
        label = tube(
            (40, 40, 40),
            [((0, 20, 20), (20, 20, 20), 1.0), ((20, 20, 20), (39, 10, 10), 1.0), ((20, 20, 20), (39, 30, 30), 1.0)],
        )
    elif case == "tube_along_a_face":
        # a centreline lying in the face z = 0: the reflected slice adds neighbours there
        label = tube((30, 30, 40), [((0, 10, 2), (0, 10, 37), 1.0), ((0, 10, 20), (25, 20, 20), 1.5)])
    tree = parse_tree(label)
    np.testing.assert_array_equal(tree.branch_label_map(), _reference_parse(label))
    if case == "noisy_y":
        assert tree.params["pieces"] > tree.n_branches  # merges happened
    if case == "thin_y_through_faces":
        assert tree.centreline_zyx[:, 0].min() == 0 and tree.centreline_zyx[:, 0].max() == 39
