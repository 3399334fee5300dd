"""Review groups over error regions; categories on the demo and on a real ATM'22 pair."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.region_groups import BOUNDARY_CATEGORIES, SINGLE_CATEGORIES, group_of_region, group_regions
from core.regions import find_error_regions
from core.tree import parse_tree

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "atm22"


def _region(i, kind, cat, branch, voxels, box=((0, 1), (0, 1), (0, 1))):
    from core.regions import ErrorRegion

    c = tuple(float(lo) for lo, _ in box)
    return ErrorRegion(f"{kind}-{i:04d}", kind, cat, voxels, voxels * 0.5, c, c, box, branch, 2, 1.0, 1.0, 1.0, 0)


def _evaluated(pred, ref):
    """The prediction as metrics and regions see it: its largest 6-connected component."""
    from core.metrics import _prediction_component

    p_box, p_sub, _, _ = _prediction_component(pred, ref, 6, True)
    p = np.zeros(ref.shape, bool)
    p[p_box.slices] = p_sub
    return p


def test_boundary_fragments_of_one_branch_group_and_the_rest_stay_single():
    regs = [
        _region(1, "FN", "missed_branch", 4, 30),
        _region(2, "FN", "boundary_miss", 4, 3, ((5, 6), (5, 6), (5, 6))),
        _region(3, "FN", "boundary_miss", 4, 2, ((8, 10), (1, 2), (1, 2))),
        _region(4, "FN", "boundary_miss", 5, 1),
        _region(1, "FP", "boundary_dilation", 4, 2),
        _region(2, "FP", "leakage", 4, 9),
        _region(3, "FP", "candidate_branch", 4, 5),
        _region(4, "FP", "leakage", 4, 20),
    ]
    groups = group_regions(regs, boundary_review_min_mm3=2.0)
    assert [g.category for g in groups][:4] == ["missed_branch", "candidate_branch", "leakage", "leakage"]
    assert groups[2].volume_mm3 > groups[3].volume_mm3  # larger first within a category
    seen = sorted(i for g in groups for i in g.indices)
    assert seen == list(range(len(regs)))  # every region in exactly one group
    b4 = next(g for g in groups if g.kind == "FN" and g.category == "boundary_miss" and g.branch == 4)
    assert b4.regions == ["FN-0002", "FN-0003"] and b4.voxels == 5 and b4.volume_mm3 == 2.5
    assert b4.bbox == ((5, 10), (1, 6), (1, 6)) and b4.review
    assert "2 fragments" in b4.title() and "branch 4" in b4.title()
    small = next(g for g in groups if g.category == "boundary_miss" and g.branch == 5)
    assert not small.review  # below the threshold
    fp_b = next(g for g in groups if g.category == "boundary_dilation")
    assert fp_b.key != b4.key and not fp_b.review
    assert all(g.review for g in groups if g.category in SINGLE_CATEGORIES)
    assert group_of_region(groups, 2) == groups.index(b4)
    # the threshold comes from the bundled preset when not given
    assert len(group_regions(regs)) == len(groups)


@pytest.mark.slow
def test_demo_case_every_planted_error_gets_its_category():
    """The app's --demo case (full size): missed, omitted, thickened and leak keep their planted category."""
    from app.demo import DemoParams, _grid, _tube, make_demo
    from core.metrics import evaluate

    d = make_demo(DemoParams())
    ref = d.reference.mask
    pred = _evaluated(d.prediction.mask, ref)
    tree = parse_tree(d.reference)
    regions = find_error_regions(d.prediction, d.reference, tree)
    # voxel -> region: the 26-connected error components, matched to regions by box and size
    from scipy import ndimage

    labels = np.zeros(ref.shape, np.int32)  # region index + 1
    fp_fn = [(pred & ~ref), (ref & ~pred)]
    for kind, mask in (("FP", fp_fn[0]), ("FN", fp_fn[1])):
        lab, _ = ndimage.label(mask, structure=np.ones((3, 3, 3)))
        by_box = {}
        for k, sl in enumerate(ndimage.find_objects(lab), start=1):
            box = tuple((s.start, s.stop) for s in sl)
            by_box[(box, int((lab[sl] == k).sum()))] = k
        for i, g in enumerate(regions):
            if g.kind == kind:
                labels[lab == by_box[(tuple(g.bbox), g.voxels)]] = i + 1

    def categories(mask):
        hit = labels[mask]
        return {regions[i - 1].category for i in np.unique(hit[hit > 0])}

    grid, by_id = _grid(d.phantom), {b.id: b for b in d.phantom.branches}

    def tube(bid, extra):
        sl, inside = _tube(grid, by_id[bid], extra)
        m = np.zeros(ref.shape, bool)
        m[sl] = inside
        return m

    vox = max(d.reference.geometry.spacing)
    for bid in d.missed:
        assert categories(tube(bid, 0.5 * vox) & fp_fn[1]) == {"missed_branch"}, bid
    for bid in d.phantom.omitted:
        assert categories(tube(bid, 0.0) & fp_fn[0] & ~tube(by_id[bid].parent, 0.5 * vox)) == {"candidate_branch"}, bid
    assert categories(tube(d.thickened, 2.5 * vox) & fp_fn[0]) == {"boundary_dilation"}
    assert regions[labels[d.leak_centre_zyx] - 1].category == "leakage"
    # every FP is one of the planted ones
    assert {g.category for g in regions if g.kind == "FP"} == {"boundary_dilation", "candidate_branch", "leakage"}
    # missed branches are missed by the metrics too, so the story holds together
    assert evaluate(d.prediction, d.reference, tree=tree).bd < 100.0


def test_thresholds_follow_the_grid_not_fixed_mm():
    """A one-voxel dilation is a boundary error whatever the slice spacing."""
    from airway_shapes import Y_SEGMENTS, tube
    from scipy import ndimage

    ref = tube((84, 80, 80), Y_SEGMENTS)
    pred = ref | (ndimage.binary_dilation(ref) & (np.indices(ref.shape)[0] < 20))
    for sp in ((0.6, 0.6, 0.6), (2.5, 0.7, 0.7), (3.0, 1.5, 1.5)):
        tree = parse_tree(ref, sp)
        regs = find_error_regions(pred, ref, tree, sp)
        assert {g.category for g in regs} == {"boundary_dilation"}, sp


@pytest.fixture(scope="module")
def atm_pair():
    ref_p, pred_p = DATA / "preds_YangLab" / "ATM_305_0000.nii.gz", DATA / "preds_timi" / "ATM_305_0000.nii.gz"
    if not (ref_p.exists() and pred_p.exists()):
        pytest.skip("needs ../shared/data/atm22 (real ATM'22 pair)")
    from core.io import read_label

    ref = read_label(ref_p)
    pred = read_label(pred_p, reference=ref)
    tree = parse_tree(ref)
    return ref, pred, tree, find_error_regions(pred, ref, tree)


@pytest.mark.slow
def test_atm_pair_review_items_are_few_and_cover_every_error_voxel(atm_pair):
    ref, pred, tree, regions = atm_pair
    groups = group_regions(regions)
    shown = [g for g in groups if g.review]
    assert len(regions) > 1000 and 0 < len(shown) <= 200
    # every region, hence every FP/FN voxel, in exactly one group
    ids = [r for g in groups for r in g.regions]
    assert sorted(ids) == sorted(g.id for g in regions) and len(set(ids)) == len(ids)
    assert sum(g.voxels for g in groups) == sum(r.voxels for r in regions)
    # the error voxels of the evaluated prediction (largest component) equal the regions' voxels
    p = _evaluated(pred.mask, ref.mask)
    assert sum(r.voxels for r in regions) == int((p ^ ref.mask).sum())
    cats = {g.category for g in shown}
    assert {"missed_branch", "leakage"} <= cats
    assert all(g.category in SINGLE_CATEGORIES + BOUNDARY_CATEGORIES for g in groups)


def test_cli_regions_file_has_groups(tmp_path):
    from airway_shapes import Y_SEGMENTS, tube

    from core.cli import main
    from core.io import write_volume
    from core.volume import Geometry, LabelVolume

    ref = tube((84, 80, 80), Y_SEGMENTS)
    z, y, x = np.indices(ref.shape)
    pred = ref & ~((z >= 58) & (y > 40) & (x > 40))
    g = Geometry(spacing=(0.7, 0.7, 0.7))
    write_volume(LabelVolume(ref, g), tmp_path / "r.nii.gz")
    write_volume(LabelVolume(pred, g), tmp_path / "p.nii.gz")
    out = tmp_path / "regions.json"
    assert (
        main(
            [
                "evaluate",
                "--reference",
                str(tmp_path / "r.nii.gz"),
                "--prediction",
                str(tmp_path / "p.nii.gz"),
                "--regions",
                str(out),
            ]
        )
        == 0
    )
    doc = json.loads(out.read_text())
    ids = sorted(r for grp in doc["groups"] for r in grp["regions"])
    assert ids == sorted(r["id"] for r in doc["regions"])
    for grp in doc["groups"]:
        assert {"key", "kind", "category", "voxels", "volume_mm3", "branch", "regions", "review"} <= set(grp)
    assert any(grp["category"] == "missed_branch" and grp["review"] for grp in doc["groups"])


def test_stable_ids_follow_content_keys():
    from core.region_groups import StableIds

    ids = StableIds()
    first = [
        {"key": k, "kind": kind, "id": f"{kind}-{i:04d}"}
        for i, (k, kind) in enumerate([("a", "FN"), ("b", "FN"), ("c", "FN")], 1)
    ]
    first.append({"key": "p", "kind": "FP", "id": "FP-0001"})
    ids.assign(first)
    assert [r["id"] for r in first] == ["FN-0001", "FN-0002", "FN-0003", "FP-0001"]  # core's numbering kept
    # the next analysis: "b" is gone (corrected), "d" is new, and the list is re-sorted and renumbered
    second = [{"key": k, "kind": "FN", "id": f"FN-{i:04d}"} for i, k in enumerate(["d", "c", "a"], 1)]
    ids.assign(second)
    assert {r["key"]: r["id"] for r in second} == {"d": "FN-0004", "c": "FN-0003", "a": "FN-0001"}
    third = [{"key": "b", "kind": "FN", "id": "FN-0009"}]  # undone: the same voxels, the same id
    ids.assign(third)
    assert third[0]["id"] == "FN-0002"
