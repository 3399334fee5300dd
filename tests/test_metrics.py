"""Airway metrics: values computed by hand on a Y tree of round tubes, ATM'22 mode on the real pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from airway_shapes import SPACING, Y_SEGMENTS, tube

from core.errors import GeometryError, InputError
from core.metrics import evaluate
from core.tree import parse_tree

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def ref() -> np.ndarray:
    return tube((74, 80, 80), Y_SEGMENTS)


@pytest.fixture(scope="module")
def tree(ref):
    t = parse_tree(ref, SPACING)
    assert t.n_branches == 7
    return t


def region_a(shape, z_from: int, z_to: int = 10**6) -> np.ndarray:
    """Voxels of branch A's tip only: other tubes have y > 40 or x > 40 at these depths."""
    z, y, x = np.indices(shape)
    return (z >= z_from) & (z < z_to) & (y < 40) & (x < 40)


def branch_a_id(tree) -> int:
    # the terminal branch whose centreline reaches the tip (68, 24, 14)
    d = np.linalg.norm(tree.centreline_zyx - np.array([68, 24, 14]), axis=1)
    return int(tree.centreline_branch[np.argmin(d)])


def test_perfect_prediction_scores_100(ref, tree):
    m = evaluate(ref, ref, SPACING, tree=tree)
    for k in ("td", "bd", "dsc", "precision", "sensitivity", "specificity", "atm_score"):
        assert getattr(m, k) == 100.0, k
    assert m.leakage == 0 and m.missing_ratio == 0 and m.breakages == 0
    assert m.n_detected == m.n_branches == 7
    assert m.td_mm == pytest.approx(m.tree_length_mm)
    assert m.tree_length_mm == pytest.approx(sum(b.length_mm for b in tree.branches))
    assert all(b.detected and b.detected_share == 100.0 for b in m.branches)
    assert sum(b.reference_voxels for b in m.dsc_by_diameter) == ref.sum()
    assert all(b.dsc == 100.0 for b in m.dsc_by_diameter if b.reference_voxels)
    assert [(g.generation, g.branches, g.detected) for g in m.per_generation] == [(0, 1, 1), (1, 2, 2), (2, 4, 4)]


def test_cutting_most_of_a_terminal_branch(ref, tree):
    cut = region_a(ref.shape, 56) & ref
    pred = ref & ~cut
    m = evaluate(pred, ref, SPACING, tree=tree)
    # by hand: centreline voxels inside the cut region, all of them in branch A
    cz = tree.centreline_zyx
    removed = region_a(ref.shape, 56)[cz[:, 0], cz[:, 1], cz[:, 2]]
    a = branch_a_id(tree)
    assert set(tree.centreline_branch[removed]) == {a}
    n_a = int((tree.centreline_branch == a).sum())
    assert removed.sum() > 0.2 * n_a  # more than 20% of A is gone: A is missed
    n = len(cz)
    assert m.td == pytest.approx(100.0 * (n - removed.sum()) / n, abs=1e-12)
    assert m.bd == pytest.approx(100.0 * 6 / 7, abs=1e-12)
    c, r = int(cut.sum()), int(ref.sum())
    assert m.dsc == pytest.approx(100.0 * 2 * (r - c) / (2 * r - c), abs=1e-12)
    assert m.precision == 100.0
    assert m.sensitivity == pytest.approx(100.0 * (r - c) / r, abs=1e-12)
    assert m.missing_ratio == pytest.approx(100.0 * c / r, abs=1e-12)
    assert m.leakage == 0.0 and m.breakages == 0
    assert m.specificity == 100.0
    row = next(b for b in m.branches if b.id == a)
    assert not row.detected and row.detected_voxels == n_a - removed.sum()
    assert [(g.generation, g.branches, g.detected) for g in m.per_generation] == [(0, 1, 1), (1, 2, 2), (2, 4, 3)]
    assert m.td_mm < m.tree_length_mm


def test_cutting_a_little_keeps_the_branch_detected(ref, tree):
    cz = tree.centreline_zyx
    a = branch_a_id(tree)
    n_a = int((tree.centreline_branch == a).sum())
    # pick the deepest cut that removes under 20% of A's centreline
    z_cut = max(z for z in range(40, 74) if region_a(ref.shape, z)[cz[:, 0], cz[:, 1], cz[:, 2]].sum() >= 1)
    removed = region_a(ref.shape, z_cut)[cz[:, 0], cz[:, 1], cz[:, 2]]
    assert 0 < removed.sum() < 0.2 * n_a
    m = evaluate(ref & ~region_a(ref.shape, z_cut), ref, SPACING, tree=tree)
    assert m.bd == 100.0
    assert m.td == pytest.approx(100.0 * (len(cz) - removed.sum()) / len(cz), abs=1e-12)


def test_a_gap_disconnects_the_tip_and_counts_as_a_breakage(ref, tree):
    pred = ref & ~region_a(ref.shape, 54, 57)
    m = evaluate(pred, ref, SPACING, tree=tree)
    assert m.breakages == 1
    assert m.counts["prediction_components"] == 2
    # the tip is not in the largest component: everything from z=54 on in A is missing
    cz = tree.centreline_zyx
    removed = region_a(ref.shape, 54)[cz[:, 0], cz[:, 1], cz[:, 2]]
    assert m.td == pytest.approx(100.0 * (len(cz) - removed.sum()) / len(cz), abs=1e-12)
    m_all = evaluate(pred, ref, SPACING, tree=tree, largest_component=False)
    assert m_all.breakages == 0 and m_all.td > m.td


def test_leakage_counts_false_positives_over_the_reference(ref, tree):
    blob = np.zeros_like(ref)
    blob[10:14, 43:47, 38:42] = True  # overlaps the trachea (radius 4 around y=40): a 4x4x4 cube, partly new
    assert (blob & ref).any() and (blob & ~ref).any()
    pred = ref | blob
    m = evaluate(pred, ref, SPACING, tree=tree)
    fp = int((blob & ~ref).sum())
    assert m.counts["fp"] == fp
    assert m.leakage == pytest.approx(100.0 * fp / ref.sum(), abs=1e-12)
    assert m.precision == pytest.approx(100.0 * ref.sum() / (ref.sum() + fp), abs=1e-12)
    n_total = ref.size
    assert m.specificity == pytest.approx(100.0 * (n_total - ref.sum() - fp) / (n_total - ref.sum()), abs=1e-12)


def test_atm22_mode_rounds_and_smooths_like_the_organisers(ref, tree):
    pred = ref & ~region_a(ref.shape, 56)
    m = evaluate(pred, ref, SPACING, tree=tree, atm22=True)
    e = evaluate(pred, ref, SPACING, tree=tree)
    c = e.counts
    assert m.td == round((c["centreline_detected"] + 1e-5) / (c["centreline_voxels"] + 1e-5) * 100, 2)
    assert m.bd == round(6 * 100 / 7, 2) == 85.71
    assert m.dsc == round(e.dsc, 2)
    assert m.sensitivity == round(100 - round((c["fn"] + 1e-5) * 100 / (c["reference_voxels"] + 1e-5), 3), 3)
    assert m.mode == "atm22" and e.mode == "exact"


def test_empty_prediction(ref, tree):
    m = evaluate(np.zeros_like(ref), ref, SPACING, tree=tree)
    assert (m.td, m.bd, m.dsc, m.precision, m.sensitivity) == (0.0, 0.0, 0.0, 0.0, 0.0)
    assert m.missing_ratio == 100.0 and m.breakages == 0 and m.n_detected == 0
    # ATM'22's smoothing turns 0/0 into 100% precision: reproduced in that mode only
    assert evaluate(np.zeros_like(ref), ref, SPACING, tree=tree, atm22=True).precision == 100.0


def test_reference_can_be_the_tree_and_tree_is_parsed_when_missing(ref, tree):
    a = evaluate(ref, tree)
    b = evaluate(ref, ref, SPACING)
    assert a.summary() == b.summary()


def test_bad_inputs(ref, tree):
    with pytest.raises(GeometryError):
        evaluate(ref[:-1], ref, SPACING, tree=tree)
    with pytest.raises(InputError):
        evaluate(ref, ref, SPACING, tree=tree, connectivity=8)
    with pytest.raises(InputError):
        evaluate(ref, ref, SPACING, tree=tree, detection_threshold=1.5)
    with pytest.raises(InputError):
        evaluate(ref, ref, SPACING, tree=tree, diameter_edges=(0, 4, 2))


def test_dsc_by_diameter_intervals(ref, tree):
    m = evaluate(ref & ~region_a(ref.shape, 56), ref, SPACING, tree=tree, diameter_edges=(0, 3.5))
    assert [b.label for b in m.dsc_by_diameter] == ["0-3.5 mm", ">3.5 mm"]
    small, big = m.dsc_by_diameter
    # the trachea (about 4.4 mm) alone is above 3.5 mm and untouched; the cut lies in a thin branch
    assert big.branches == 1 and big.dsc == 100.0
    assert small.branches == 6 and small.dsc < 100.0
    assert small.reference_voxels + big.reference_voxels == ref.sum()


@pytest.mark.slow
@pytest.mark.shared_data
def test_real_pair_matches_the_atm22_organisers_numbers():
    from core.io import read_label

    ref_path = DATA / "atm22" / "preds_YangLab" / "ATM_305_0000.nii.gz"
    pred_path = DATA / "atm22" / "preds_timi" / "ATM_305_0000.nii.gz"
    if not ref_path.exists() or not pred_path.exists():
        pytest.skip("needs ../shared/data/atm22 (real ATM'22 pair)")
    ref = read_label(ref_path)
    pred = read_label(pred_path)
    m = evaluate(pred, ref, atm22=True)
    assert (m.n_branches, m.n_detected) == (211, 195)
    assert (m.td, m.bd, m.dsc) == (94.15, 92.42, 94.52)
    assert (m.precision, m.sensitivity, m.specificity) == (94.312, 94.731, 99.992)


# -- command line ----------------------------------------------------------------


def _write(mask: np.ndarray, path: Path, spacing=(0.6, 0.6, 0.5)) -> Path:
    from core.io import write_volume
    from core.volume import Geometry, LabelVolume

    write_volume(LabelVolume(mask.astype(np.uint8), Geometry(spacing=spacing)), path)
    return path


def test_cli_single_pair_writes_every_file(tmp_path, ref, capsys):
    import csv
    import json

    from core.cli import main

    r = _write(ref, tmp_path / "ref.nii.gz")
    p = _write(ref & ~region_a(ref.shape, 56), tmp_path / "pred.nii.gz")
    out = {k: tmp_path / f"out.{k}" for k in ("json", "csv", "branches", "regions")}
    argv = [
        "evaluate",
        "--reference",
        str(r),
        "--prediction",
        str(p),
        "--tree",
        str(tmp_path / "t.npz"),
        "--branch-map",
        str(tmp_path / "branches.nii.gz"),
    ]
    for k, v in out.items():
        argv += [f"--{k}", str(v)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "TD%" in text and "85.714" in text  # BD = 6/7
    doc = json.loads(out["json"].read_text())
    assert doc["cases"][0]["bd"] == pytest.approx(600 / 7)
    rows = list(csv.DictReader(out["csv"].open()))
    assert len(rows) == 1 and float(rows[0]["bd"]) == pytest.approx(600 / 7)
    branch_rows = list(csv.DictReader(out["branches"].open()))
    assert len(branch_rows) == 7 and sum(int(b["detected"]) for b in branch_rows) == 6
    regions = json.loads(out["regions"].read_text())["regions"]
    assert any(g["kind"] == "FN" and g["category"] == "missed_branch" for g in regions)
    assert (tmp_path / "t.npz").exists() and (tmp_path / "branches.nii.gz").exists()
    from core.io import read_volume

    bm = read_volume(tmp_path / "branches.nii.gz").array
    assert set(np.unique(bm)) == set(range(8))
    # second run reuses the saved tree (existing outputs are refused without --overwrite)
    assert main(argv) == 2
    assert main(argv[:7] + ["--atm22"]) == 0
    assert "85.710" in capsys.readouterr().out


def test_cli_folder_mode_matches_cases_and_reports_mean_and_std(tmp_path, ref, capsys):
    import csv

    from core.cli import main

    (tmp_path / "ref").mkdir()
    (tmp_path / "pred").mkdir()
    _write(ref, tmp_path / "ref" / "case_a.nii.gz")
    _write(ref, tmp_path / "ref" / "case_b.nii.gz")
    _write(ref, tmp_path / "ref" / "case_c.nii.gz")  # no prediction: warned and skipped
    _write(ref, tmp_path / "pred" / "case_a_0000.nii.gz")
    _write(ref & ~region_a(ref.shape, 56), tmp_path / "pred" / "case_b.nii.gz")
    code = main(
        [
            "evaluate",
            "--reference",
            str(tmp_path / "ref"),
            "--prediction",
            str(tmp_path / "pred"),
            "--csv",
            str(tmp_path / "s.csv"),
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "case_c" in captured.err and "mean" in captured.out
    rows = {row["case"]: row for row in csv.DictReader((tmp_path / "s.csv").open())}
    assert set(rows) == {"case_a", "case_b", "mean", "sd"}
    bd = [100.0, 600 / 7]
    assert float(rows["mean"]["bd"]) == pytest.approx(np.mean(bd))
    assert float(rows["sd"]["bd"]) == pytest.approx(np.std(bd, ddof=1))  # sample sd, as airway compare


def test_cli_grid_mismatch_is_one_line_and_exit_2(tmp_path, ref, capsys):
    from core.cli import main

    r = _write(ref, tmp_path / "ref.nii.gz")
    p = _write(ref, tmp_path / "pred.nii.gz", spacing=(0.7, 0.7, 0.5))
    assert main(["evaluate", "--reference", str(r), "--prediction", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error" in line]
    assert errors == [err[-1]] and "not on the same grid" in err[-1] and "resample" in err[-1]
    assert main(["evaluate", "--reference", str(tmp_path / "nope.nii.gz"), "--prediction", str(p)]) == 2


def test_volumes_on_different_grids_are_refused(ref, tree):
    from core.volume import Geometry, LabelVolume

    a = LabelVolume(ref, Geometry(spacing=(0.6, 0.6, 0.5)))
    b = LabelVolume(ref, Geometry(spacing=(0.6, 0.6, 0.5), origin=(5.0, 0.0, 0.0)))
    with pytest.raises(GeometryError, match="same grid"):
        evaluate(b, a, tree=tree)
    m = evaluate(LabelVolume(ref, Geometry(spacing=(0.6, 0.6, 0.5))), a, tree=tree)
    assert m.td == 100.0
