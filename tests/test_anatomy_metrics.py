"""TD/BD per lobe and the segmental bronchi detected (core.anatomy.metrics), on a hand-built tree whose
branches are named by hand (so the figures are checked apart from the labeller)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.anatomy.metrics import ROWS, AnatomyScores, anatomy_scores, counts_of, scores_from_counts
from core.anatomy.names import lobe_of_name
from core.anatomy.tree_names import BranchName, TreeNames
from core.metrics import evaluate
from core.tree import parse_tree

# A textbook-shaped toy tree: (name, start, end) in voxels (z, y, x), 1 mm voxels, z towards the feet.
SEGS = {
    "Trachea": ((4, 32, 48), (22, 32, 48)),
    "RMB": ((22, 32, 48), (30, 32, 36)),
    "LMB": ((22, 32, 48), (32, 32, 62)),
    "RUL": ((30, 32, 36), (24, 32, 26)),
    "BronInt": ((30, 32, 36), (40, 32, 34)),
    "RML": ((40, 32, 34), (48, 22, 28)),
    "RLL": ((40, 32, 34), (52, 36, 36)),
    "LUL": ((32, 32, 62), (24, 32, 72)),
    "LLL": ((32, 32, 62), (46, 32, 66)),
    "RB1": ((24, 32, 26), (14, 32, 22)),
    "RB2": ((24, 32, 26), (24, 44, 16)),
    "RB6": ((52, 36, 36), (56, 48, 36)),
    "RB8": ((52, 36, 36), (64, 30, 30)),
    "LB1+2": ((24, 32, 72), (14, 32, 76)),
    "LB3": ((24, 32, 72), (24, 18, 80)),
    "LB6": ((46, 32, 66), (50, 46, 68)),
    "LB9+10": ((46, 32, 66), (60, 34, 72)),
}
SHAPE = (72, 64, 96)


def tube_mask() -> np.ndarray:
    p = np.stack(np.indices(SHAPE), -1).astype(float)
    mask = np.zeros(SHAPE, bool)
    for name, (a, b) in SEGS.items():
        a_, b_ = np.array(a, float), np.array(b, float)
        r = 3.2 if name == "Trachea" else 2.6 if name in ("RMB", "LMB", "BronInt") else 2.1
        d = b_ - a_
        t = np.clip(((p - a_) @ d) / (d @ d), 0, 1)
        mask |= np.linalg.norm(p - (a_ + t[..., None] * d), axis=-1) <= r
    return mask


def hand_names(tree, drop: tuple[str, ...] = ()) -> TreeNames:
    """Each branch gets the name of the drawn tube its centreline lies along (its midpoint nearest);
    names in ``drop`` are left unnamed, lobe and all (as when the labeller abstains)."""
    mids = {n: (np.array(a) + np.array(b)) / 2 for n, (a, b) in SEGS.items()}
    names = {}
    for br in tree.branches:
        c = tree.centreline_zyx[tree.centreline_branch == br.id].mean(axis=0)
        name = min(mids, key=lambda n: float(np.linalg.norm(mids[n] - c)))
        names[br.id] = name
    assert sorted(names.values()) == sorted(SEGS), "the toy tree parses into one branch per tube"
    out = {}
    for bid, name in names.items():
        lobe = lobe_of_name(name)
        if name in drop or lobe in drop:
            out[bid] = BranchName(None, 0.0, None, None)
        else:
            seg = name if name.startswith(("RB", "LB")) else None
            out[bid] = BranchName(name, 1.0, lobe, seg)
    return TreeNames(out)


@pytest.fixture(scope="module")
def toy():
    mask = tube_mask()
    tree = parse_tree(mask, (1.0, 1.0, 1.0))
    return mask, tree


def without(tree, names: TreeNames, lobe: str) -> np.ndarray:
    """The reference mask with every voxel of the lobe's branches removed."""
    ids = [b for b in names.names if names.lobe_of(b) == lobe]
    full = tree.branch_label_map()
    return (full > 0) & ~np.isin(full, ids)


def test_a_prediction_missing_one_lobe_scores_zero_there_and_full_elsewhere(toy):
    mask, tree = toy
    names = hand_names(tree)
    pred = without(tree, names, "RLL")
    s = anatomy_scores(tree, names, pred)
    by = {r.lobe: r for r in s.lobes}
    assert [r.lobe for r in s.lobes] == list(ROWS)
    assert by["RLL"].td == 0.0 and by["RLL"].bd == 0.0 and by["RLL"].branches == 3 and by["RLL"].detected == 0
    for lobe in ("RUL", "RML", "LUL", "LLL", "central"):
        assert by[lobe].td == pytest.approx(100.0) and by[lobe].bd == 100.0, lobe
    assert by["central"].branches == 4  # trachea, both main bronchi, bronchus intermedius
    assert by["unnamed"].branches == 0 and math.isnan(by["unnamed"].td)  # n/a, not 0
    assert s.missed_lobes() == ["RLL"]
    assert s.segmental.missed == ["RB6", "RB8"]
    assert s.segmental.detected == ["RB1", "RB2", "LB1+2", "LB3", "LB6", "LB9+10"]
    assert s.sentence() == "segmental bronchi detected 6 / 8; missed RB6, RB8"


def test_rows_add_up_to_the_overall_figures(toy):
    """Branch counts over lobes + central + unnamed equal the overall ones, and TD weighted by each
    row's centreline voxels is the overall TD, for a prediction that misses bits everywhere."""
    from scipy import ndimage

    mask, tree = toy
    names = hand_names(tree, drop=("LLL", "RB2"))  # the labeller abstained there: figures go to "unnamed"
    rng = np.random.default_rng(3)
    pred = ndimage.binary_erosion(mask, iterations=1)
    pred &= rng.random(mask.shape) > 0.15
    pred |= ndimage.binary_erosion(mask, iterations=2)  # keeps it one piece
    pred[:, :, 66:] = False  # the left upper lobe's ends
    m = evaluate(pred, mask, (1.0, 1.0, 1.0), tree=tree)
    assert 0 < m.n_detected < m.n_branches and 0 < m.td < 100
    s = anatomy_scores(tree, names, m)
    assert sum(r.branches for r in s.lobes) == m.n_branches
    assert sum(r.detected for r in s.lobes) == m.n_detected
    weights = [r.centreline_voxels for r in s.lobes]
    td = sum(r.td * w for r, w in zip(s.lobes, weights) if w) / sum(weights)
    assert td == pytest.approx(m.td, abs=1e-9)
    assert sum(r.length_mm for r in s.lobes) == pytest.approx(sum(b.length_mm for b in tree.branches))
    by = {r.lobe: r for r in s.lobes}
    assert by["LLL"].branches == 0 and math.isnan(by["LLL"].td) and math.isnan(by["LLL"].bd)  # lobe not found
    assert by["unnamed"].branches == 4  # LLL's three branches and RB2
    assert "RB2" not in s.segmental.detected + s.segmental.missed  # the reference's names decide
    # the mask path scores the same as the metrics path
    again = anatomy_scores(tree, names, pred)
    assert str(again.as_dict()) == str(s.as_dict())
    # and the record airway compare caches gives them back
    assert str(scores_from_counts(counts_of(m), names, threshold=0.8).as_dict()) == str(s.as_dict())
    assert str(AnatomyScores.from_dict(s.as_dict()).as_dict()) == str(s.as_dict())


def test_sentence_wording():
    from core.anatomy.metrics import SegmentalFigures

    s = AnatomyScores([], SegmentalFigures(["RB1"] * 18, ["RB7", "LB9"]))
    assert s.sentence() == "segmental bronchi detected 18 / 20; missed RB7, LB9"
    assert AnatomyScores([], SegmentalFigures(["RB1"], [])).sentence() == "segmental bronchi detected 1 / 1"
    assert AnatomyScores([], SegmentalFigures()).sentence() == "segmental bronchi: none named in the reference"


def test_segmental_detection_uses_the_threshold_on_the_pooled_centreline(toy):
    mask, tree = toy
    names = hand_names(tree)
    rb6 = names.branches_named("RB6")[0]
    full = tree.branch_label_map()
    cl = tree.centreline_zyx[tree.centreline_branch == rb6]
    # cut the bronchus' far half: about half its centreline is missed, under the 0.8 threshold
    far = cl[np.argsort(cl[:, 1])][len(cl) // 2 :]
    pred = full > 0
    lo = far.min(axis=0)
    keep = ~((full == rb6) & (np.indices(SHAPE)[1] >= lo[1]))
    pred &= keep
    s = anatomy_scores(tree, names, pred)
    assert "RB6" in s.segmental.missed
    s_low = anatomy_scores(tree, names, pred, threshold=0.3)
    assert "RB6" in s_low.segmental.detected
