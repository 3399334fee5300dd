"""Per-lobe figures on anatomy phantoms (core.phantom with true branch names), named by the phantom's
truth (core.anatomy.truth): a prediction that misses one lobe scores 0 there and 100 in the other lobes
the reference has, a lobe cut off by the field of view reads n/a, and the rows add up to the overall figures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.anatomy import is_segmental
from core.anatomy.metrics import LOBE_ROWS, anatomy_scores
from core.anatomy.tree_names import BranchName, TreeNames
from core.anatomy.truth import truth_names
from core.metrics import evaluate
from core.phantom import make_phantom
from core.tree import parse_tree

CASES = [(64, (2.5, 2.5, 3.0), 0), (64, (2.5, 2.5, 3.0), 2), (128, (0.7, 0.7, 2.5), 0), (128, (0.7, 0.7, 2.5), 2)]


def _truth(tree, ph) -> TreeNames:
    truth = truth_names(tree, ph.to_table(), ph.label.geometry)
    names = {b: BranchName(t.name, 1.0, t.lobe, t.segment) for b, t in truth.items()}
    for br in tree.branches:
        names.setdefault(br.id, BranchName(None, 0.0, None, None))
    return TreeNames(names)


@pytest.mark.parametrize(("shape", "spacing", "seed"), CASES)
def test_phantom_missing_its_left_lower_lobe(shape, spacing, seed):
    ph = make_phantom(shape, spacing=spacing, seed=seed, vessels=False)
    tree = parse_tree(ph.label)
    names = _truth(tree, ph)
    full = tree.branch_label_map()
    lll = [b for b in names.names if names.lobe_of(b) == "LLL"]
    assert lll, "the phantom grows a left lower lobe"
    pred = (full > 0) & ~np.isin(full, lll)
    m = evaluate(pred, ph.label, tree=tree)
    s = anatomy_scores(tree, names, m)
    by = {r.lobe: r for r in s.lobes}
    assert by["LLL"].td == 0.0 and by["LLL"].bd == 0.0 and by["LLL"].branches == len(lll)
    for lobe in (*LOBE_ROWS, "central"):
        r = by[lobe]
        if lobe == "LLL":
            continue
        if r.found:
            assert r.td == pytest.approx(100.0) and r.bd == 100.0, lobe
        else:  # the phantom has no branch there (e.g. the field of view cuts the left upper lobe): n/a
            assert math.isnan(r.td) and math.isnan(r.bd), lobe
    assert sum(r.branches for r in s.lobes) == m.n_branches
    assert sum(r.detected for r in s.lobes) == m.n_detected
    cv = [r.centreline_voxels for r in s.lobes]
    assert sum(r.td * w for r, w in zip(s.lobes, cv) if w) / sum(cv) == pytest.approx(m.td)
    truth_lll_segments = sorted({n for b in lll if is_segmental(n := names.name_of(b)) and n is not None})
    assert sorted(s.segmental.missed) == truth_lll_segments  # every other segmental bronchus is detected
    assert not set(s.segmental.detected) & set(truth_lll_segments)
