"""Error regions on a Y tree with hand-placed errors of each category."""

from __future__ import annotations

import json

import numpy as np
import pytest
from airway_shapes import SPACING, Y_SEGMENTS, tube

from core.errors import GeometryError
from core.regions import category_counts, find_error_regions, sort_regions, step_region
from core.tree import parse_tree
from core.volume import Geometry

SHAPE = (84, 80, 80)


def make_case():
    ref = tube(SHAPE, Y_SEGMENTS)
    tree = parse_tree(ref, SPACING)
    assert tree.n_branches == 7
    z, y, x = np.indices(SHAPE)
    pred = ref.copy()
    # FN missed branch: the tip of the terminal branch ending at (68, 56, 66)
    tip = (z >= 58) & (y > 40) & (x > 40)
    pred &= ~tip
    # FN boundary miss: peel the trachea's outer layer on one side (x > 42) over z 8..14
    trachea_core = tube(SHAPE, [((0, 40, 40), (30, 40, 40), 3.0)])
    peel = ref & ~trachea_core & (z >= 8) & (z < 15) & (x > 42)
    pred &= ~peel
    # FP boundary dilation: a one-voxel shell around the upper trachea on the y < 36 side
    shell = tube(SHAPE, [((4, 40, 40), (20, 40, 40), 5.0)]) & ~ref & (y < 37) & (z >= 6) & (z < 18)
    pred |= shell
    # FP candidate branch: a thin tube continuing branch (44,40,22)->(68,24,14) beyond its tip
    d = np.array([68, 24, 14]) - np.array([44, 40, 22])
    beyond = tube(SHAPE, [((70, 22.7, 13.3), tuple(np.array([68, 24, 14]) + 0.5 * d), 1.5)])
    pred |= beyond & ~ref
    # FP leakage: a ball at the carina, off to the side (posterior)
    ball = np.linalg.norm(np.stack([z - 28, y - 46, x - 40], -1), axis=-1) <= 4.0
    pred |= ball
    return ref, pred, tree, dict(tip=tip & ref, peel=peel, shell=shell, beyond=beyond & ~ref, ball=ball & ~ref)


@pytest.fixture(scope="module")
def case():
    return make_case()


@pytest.fixture(scope="module")
def regions(case):
    ref, pred, tree, _ = case
    return find_error_regions(pred, ref, tree, SPACING)


def _region_at(regions, mask):
    """The region whose bounding box holds the centroid of ``mask``."""
    c = np.argwhere(mask).mean(axis=0)
    hits = [g for g in regions if all(lo <= v < hi for v, (lo, hi) in zip(c, g.bbox))]
    assert hits, "no region there"
    return max(hits, key=lambda g: g.voxels)


def test_each_planted_error_gets_its_category(case, regions):
    ref, pred, tree, parts = case
    tip = _region_at(regions, parts["tip"])
    assert (tip.kind, tip.category) == ("FN", "missed_branch")
    assert tip.voxels == parts["tip"].sum() and tip.centreline_voxels >= 2
    assert tree.branch(tip.nearest_branch).is_terminal and tip.nearest_generation == 2

    peel = _region_at(regions, parts["peel"])
    assert (peel.kind, peel.category) == ("FN", "boundary_miss")
    assert peel.centreline_voxels == 0
    assert peel.nearest_branch == tree.trachea and peel.nearest_generation == 0

    shell = _region_at(regions, parts["shell"])
    assert (shell.kind, shell.category) == ("FP", "boundary_dilation")
    assert shell.voxels == parts["shell"].sum()
    assert shell.max_distance_mm <= 1.5

    cand = _region_at(regions, parts["beyond"])
    assert (cand.kind, cand.category) == ("FP", "candidate_branch")
    assert tree.branch(cand.nearest_branch).is_terminal
    assert cand.elongation >= 3.0 and cand.length_mm >= 3.0

    ball = _region_at(regions, parts["ball"])
    assert (ball.kind, ball.category) == ("FP", "leakage")
    assert ball.max_distance_mm > 1.5


def test_voxel_totals_and_geometry(case, regions):
    ref, pred, tree, _ = case
    fp = sum(g.voxels for g in regions if g.kind == "FP")
    fn = sum(g.voxels for g in regions if g.kind == "FN")
    assert fp == int((pred & ~ref).sum())
    assert fn == int((ref & ~pred).sum())
    vv = float(np.prod(SPACING))
    for g in regions:
        assert g.volume_mm3 == pytest.approx(g.voxels * vv)
        assert all(lo <= c < hi for c, (lo, hi) in zip(g.centroid_zyx, g.bbox))
        # default geometry: origin 0, identity direction -> world (x, y, z) = index * spacing
        z, y, x = g.centroid_zyx
        assert g.centroid_mm == pytest.approx((x * SPACING[2], y * SPACING[1], z * SPACING[0]))
    json.dumps([g.as_dict() for g in regions])


def test_world_centroids_follow_the_geometry(case):
    ref, pred, tree, _ = case
    geo = Geometry(spacing=SPACING[::-1], origin=(10.0, 20.0, 30.0), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    regs = find_error_regions(pred, ref, tree, geometry=geo, min_voxels=10)
    assert regs and all(g.voxels >= 10 for g in regs)
    g = regs[0]
    np.testing.assert_allclose(g.centroid_mm, geo.index_to_world(np.array(g.centroid_zyx)))


def test_order_is_stable_and_navigable(regions):
    kinds = [g.kind for g in regions]
    assert kinds == sorted(kinds, key=("FN", "FP").index)
    for kind in ("FN", "FP"):
        sizes = [g.voxels for g in regions if g.kind == kind]
        assert sizes == sorted(sizes, reverse=True)
        ids = [g.id for g in regions if g.kind == kind]
        assert ids == [f"{kind}-{i:04d}" for i in range(1, len(ids) + 1)]
    again = sort_regions(list(reversed(regions)))
    assert [g.id for g in again] == [g.id for g in regions]
    first, last = regions[0], regions[-1]
    assert step_region(regions, None) is first
    assert step_region(regions, last.id, 1) is first
    assert step_region(regions, first.id, -1) is last
    assert step_region(regions, first.id, 1) is regions[1]
    assert step_region([], None) is None
    counts = category_counts(regions)
    assert sum(counts.values()) == len(regions)
    assert counts["FN:missed_branch"] >= 1 and counts["FP:candidate_branch"] >= 1


def test_perfect_and_empty_predictions(case):
    ref, _, tree, _ = case
    assert find_error_regions(ref, ref, tree, SPACING) == []
    regs = find_error_regions(np.zeros_like(ref), ref, tree, SPACING)
    assert len(regs) == 1 and regs[0].kind == "FN" and regs[0].category == "missed_branch"
    assert regs[0].voxels == ref.sum()


def test_grid_mismatch_raises(case):
    ref, pred, tree, _ = case
    with pytest.raises(GeometryError):
        find_error_regions(pred[:-1], ref, tree, SPACING)


@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_components_match_cc3d(case, connectivity):
    import cc3d

    ref, pred, tree, _ = case
    regs = find_error_regions(pred, ref, tree, SPACING, connectivity=connectivity)
    for kind, err in (("FP", pred & ~ref), ("FN", ref & ~pred)):
        labels, n = cc3d.connected_components(err, connectivity=connectivity, return_N=True)
        sizes = sorted(np.bincount(labels.ravel())[1:].tolist(), reverse=True)
        assert [g.voxels for g in regs if g.kind == kind] == sizes


def test_a_tube_continuing_a_stub_the_parse_cannot_see_is_a_candidate_branch():
    """A reference that stops a millimetre into a side branch: the parse gives the stub to the trachea
    (not terminal), yet the tube the prediction continues it with is branch-shaped, not a leak; a streak
    lying along the trachea, as long but staying close to it, is still leakage."""
    stub_tip = (16, 40, 45)
    ref = tube(SHAPE, Y_SEGMENTS + [((16, 40, 40), stub_tip, 2.0)])
    tree = parse_tree(ref, SPACING)
    assert tree.n_branches == 7  # no branch for the stub
    cont = tube(SHAPE, [(stub_tip, (16, 40, 55), 1.5)]) & ~ref
    streak = tube(SHAPE, [((8, 40, 33), (22, 40, 33), 2.0)]) & ~ref
    regions = find_error_regions(ref | cont | streak, ref, tree, SPACING)
    branch = _region_at(regions, cont)
    assert (branch.kind, branch.category) == ("FP", "candidate_branch")
    assert not tree.branch(branch.nearest_branch).is_terminal
    side = _region_at(regions, streak)
    assert (side.kind, side.category) == ("FP", "leakage")
    assert side.elongation >= 2.0 and side.length_mm >= branch.length_mm
    assert not tree.branch(side.nearest_branch).is_terminal


def test_focus_is_where_the_whole_prediction_shows_the_miss(case):
    """A missed tip the prediction holds in a piece apart from its largest component is missed by the
    metrics; N must put the crosshair where a view of the whole prediction shows the miss."""
    ref, _, tree, _ = case
    z, y, x = np.indices(SHAPE)
    tip = (z >= 58) & (y > 40) & (x > 40) & ref
    band = tip & (z < 61)
    pred = ref & ~band  # the tip beyond the band is an island
    regions = find_error_regions(pred, ref, tree, SPACING)
    g = _region_at(regions, tip)
    assert (g.kind, g.category) == ("FN", "missed_branch") and g.voxels == tip.sum()
    assert ref[g.focus_zyx] and not pred[g.focus_zyx]
    assert any((g.coords == np.array(g.focus_zyx)).all(axis=1))
