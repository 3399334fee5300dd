"""airway compare: numbers equal `airway evaluate`, content cache, statistics, failures named,
the real ATM'22 pair as a case, two models trained differently on phantoms end to end."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from core.cli import main
from core.compare import CompareSettings, agreement, compare_folders, match_cases, read_outputs, write_outputs
from core.compare.batch import METRIC_COLUMNS, CaseRow, CompareResult
from core.compare.stats import diameter_summary, generation_summary, paired_tests, summary_rows
from core.io import write_volume
from core.volume import LabelVolume

ROOT = Path(__file__).resolve().parents[1]
ATM = ROOT.parent / "shared" / "data" / "atm22"


def _phantom_label(seed: int) -> LabelVolume:
    from core.phantom import make_phantom

    return make_phantom(40, seed=seed, spacing=(1.5, 1.5, 1.8), vessels=False).label


def _drop_distal(mask: np.ndarray, k: int) -> np.ndarray:
    """The mask minus its lowest k slices of airway: distal branches go missing."""
    out = mask.copy()
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    out[zs[-k:]] = False if mask.shape[0] else out
    return out


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    """ref/ (ATM'22-like names), eroded/ (nnU-Net `_0000`), dilated/ (plain names), 3 cases."""
    root = tmp_path_factory.mktemp("cmp")
    for d in ("ref", "eroded", "dilated"):
        (root / d).mkdir()
    for i in range(3):
        lab = _phantom_label(i)
        g = lab.geometry
        write_volume(lab, root / "ref" / f"case_{i:03d}_0000.nii.gz")
        er = ndimage.binary_erosion(lab.array, iterations=1 + i % 2)
        write_volume(LabelVolume(er, g), root / "eroded" / f"case_{i:03d}_0000.nii.gz")
        di = _drop_distal(ndimage.binary_dilation(lab.array), 2 + i)
        write_volume(LabelVolume(di, g), root / "dilated" / f"case_{i:03d}.nii.gz")
    return root


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_case_matching_atm22_and_nnunet_names(tmp_path):
    for d, names in {
        "ref": ["ATM_305_0000.nii.gz", "case.nii.gz", "other.nii.gz"],
        "a": ["ATM_305_0000.nii.gz", "case_0000.nii.gz"],
        "b": ["ATM_305.nii.gz", "case.nii.gz", ".hidden.nii.gz", "notes.txt"],
    }.items():
        (tmp_path / d).mkdir()
        for n in names:
            (tmp_path / d / n).write_bytes(b"")
    cases = {c.name: c for c in match_cases(tmp_path / "ref", {"a": tmp_path / "a", "b": tmp_path / "b"})}
    assert sorted(cases) == ["ATM_305", "case", "other"]
    assert cases["ATM_305"].predictions["a"].name == "ATM_305_0000.nii.gz"
    assert cases["ATM_305"].predictions["b"].name == "ATM_305.nii.gz"
    assert cases["case"].predictions["a"].name == "case_0000.nii.gz"
    assert cases["other"].predictions == {"a": None, "b": None}


@pytest.mark.slow
def test_metrics_csv_equals_airway_evaluate(folders, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(
        [
            "compare",
            "--reference",
            str(folders / "ref"),
            "--predictions",
            f"eroded={folders / 'eroded'}",
            f"dilated={folders / 'dilated'}",
            "--out",
            str(out),
            "--no-snapshots",
            "-q",
        ]
    )
    assert rc == 0
    ev_csv = tmp_path / "evaluate.csv"
    assert (
        main(
            [
                "evaluate",
                "--reference",
                str(folders / "ref"),
                "--prediction",
                str(folders / "eroded"),
                str(folders / "dilated"),
                "--csv",
                str(ev_csv),
            ]
        )
        == 0
    )
    capsys.readouterr()
    # one vocabulary (docs/vocabulary.md): the same case ids (no _0000), the same column names
    evaluated = {(r["case"], r["model"]): r for r in _read_csv(ev_csv) if r["case"] not in ("mean", "sd")}
    compared = _read_csv(out / "metrics.csv")
    assert len(compared) == 6 == len(evaluated)
    assert {c for c, _ in METRIC_COLUMNS} <= set(_read_csv(ev_csv)[0])
    assert {"n_branches", "n_detected"} <= set(compared[0]) and "detected" not in compared[0]
    for row in compared:
        e = evaluated[(row["case"], row["model"])]
        for col, _ in METRIC_COLUMNS:
            assert float(row[col]) == float(e[col]), (row["case"], row["model"], col)
    # the two models really differ, so the comparison is not vacuous
    dsc = {(r["case"], r["model"]): float(r["dsc"]) for r in compared}
    assert any(dsc[(c, "eroded")] != dsc[(c, "dilated")] for c in ("case_000", "case_001", "case_002"))
    summary = {r["model"]: r for r in _read_csv(out / "summary.csv")}
    vals = [float(r["dsc"]) for r in compared if r["model"] == "eroded"]
    assert float(summary["eroded"]["dsc_mean"]) == pytest.approx(np.mean(vals))
    assert float(summary["eroded"]["dsc_sd"]) == pytest.approx(np.std(vals, ddof=1))
    assert summary["eroded"]["n"] == "3"
    ev_rows = {(r["case"], r["model"]): r for r in _read_csv(ev_csv)}
    assert float(ev_rows[("sd", "eroded")]["dsc"]) == pytest.approx(float(summary["eroded"]["dsc_sd"]))
    tests = _read_csv(out / "tests.csv")
    assert {(t["model_a"], t["model_b"]) for t in tests} == {("eroded", "dilated")}
    for name in (
        "dsc_by_diameter.csv",
        "dsc_by_diameter_summary.csv",
        "bd_by_generation.csv",
        "bd_by_generation_summary.csv",
        "report.html",
        "compare.json",
    ):
        assert (out / name).stat().st_size > 0, name
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in html and "src='http" not in html and 'src="http' not in html
    assert "--no-snapshots" in html


def test_rerun_is_served_from_the_cache_and_changes_are_seen(folders, tmp_path):
    preds = {"eroded": folders / "eroded", "dilated": folders / "dilated"}
    cache = tmp_path / "cache"
    first = compare_folders(folders / "ref", preds, cache_dir=cache)
    assert first.cache_stats.get("evaluated") == 6 and first.cache_stats.get("trees_parsed") == 3
    again = compare_folders(folders / "ref", preds, cache_dir=cache)
    # no volume read, no tree parsed, nothing evaluated; each reference's names from the cache once
    assert again.cache_stats == {"metrics_hits": 6, "names_hits": 3}
    assert all(r.cached for r in again.rows)
    assert json.dumps([r.metrics for r in again.rows]) == json.dumps([r.metrics for r in first.rows])  # nan-safe

    # same content, new file (new mtime): read and hashed again, still a hit by content
    work = tmp_path / "work"
    import shutil

    shutil.copytree(folders / "dilated", work)
    p = work / "case_001.nii.gz"
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    touched = compare_folders(folders / "ref", {"eroded": folders / "eroded", "dilated": work}, cache_dir=cache)
    assert touched.cache_stats.get("evaluated", 0) == 0 and touched.cache_stats["metrics_hits"] == 6

    # changed content: that one pair is evaluated again, the tree comes from the cache
    lab = LabelVolume(ndimage.binary_dilation(_phantom_label(1).array, iterations=2), _phantom_label(1).geometry)
    write_volume(lab, p)
    changed = compare_folders(folders / "ref", {"eroded": folders / "eroded", "dilated": work}, cache_dir=cache)
    assert changed.cache_stats.get("evaluated") == 1 and changed.cache_stats.get("trees_hits") == 1
    assert "trees_parsed" not in changed.cache_stats
    assert changed.row("case_001", "dilated").metrics["dsc"] != first.row("case_001", "dilated").metrics["dsc"]

    # outputs are not rewritten on an unchanged rerun
    out = tmp_path / "out"
    write_outputs(again, out, snapshots=False, cache_dir=cache)
    res = compare_folders(folders / "ref", preds, cache_dir=cache)
    write_outputs(res, out, snapshots=False, cache_dir=cache)
    assert res.cache_stats.get("outputs_hits") == 1
    back = read_outputs(out)
    assert back.models == ["eroded", "dilated"] and len(back.rows) == 6
    assert back.row("case_002", "eroded").metrics["dsc"] == res.row("case_002", "eroded").metrics["dsc"]


def test_failing_cases_are_named_and_the_rest_go_on(folders, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    lab = _phantom_label(0)
    write_volume(LabelVolume(lab.array[:, :-3], lab.geometry), bad / "case_000.nii.gz")  # wrong grid
    (bad / "case_001.nii.gz").write_bytes(b"not a volume")  # corrupt
    write_volume(_phantom_label(2), bad / "case_002.nii.gz")  # fine
    res = compare_folders(folders / "ref", {"eroded": folders / "eroded", "bad": bad}, cache_dir=None)
    failed = {(f.case, f.model): f.message for f in res.failures}
    assert set(failed) == {("case_000", "bad"), ("case_001", "bad")}
    assert all(m for m in failed.values())
    assert {(r.case, r.model) for r in res.rows} == {
        ("case_000", "eroded"),
        ("case_001", "eroded"),
        ("case_002", "eroded"),
        ("case_002", "bad"),
    }
    assert res.row("case_002", "bad").metrics["dsc"] == 100.0


def test_progress_and_cancel(folders):
    import threading

    from core.errors import Cancelled

    seen = []
    cancel = threading.Event()

    def progress(done, total, what):
        seen.append((done, total))
        if done >= 2:
            cancel.set()

    with pytest.raises(Cancelled):
        compare_folders(
            folders / "ref",
            {"eroded": folders / "eroded", "dilated": folders / "dilated"},
            progress=progress,
            cancel=cancel,
        )
    assert seen[0] == (0, 6) and all(t == 6 for _, t in seen)


def _result(values: dict[str, list[float]]) -> CompareResult:
    models = list(values)
    n = len(next(iter(values.values())))
    cases = [f"c{i}" for i in range(n)]
    rows = []
    for m, vs in values.items():
        for c, v in zip(cases, vs):
            rows.append(
                CaseRow(
                    c,
                    m,
                    {
                        "dsc": v,
                        "td": 50.0,
                        "per_generation": [
                            {"generation": 0, "branches": 1, "detected": 1},
                            {"generation": 1, "branches": 4, "detected": int(v > 80)},
                        ],
                        "dsc_by_diameter": [
                            {
                                "label": "0-2 mm",
                                "low_mm": 0.0,
                                "high_mm": 2.0,
                                "branches": 3,
                                "reference_voxels": 10,
                                "prediction_voxels": 10,
                                "overlap_voxels": int(v // 10),
                                "dsc": v,
                            }
                        ],
                    },
                )
            )
    return CompareResult(models, cases, rows)


def test_statistics_match_scipy_and_numpy():
    from scipy.stats import wilcoxon

    a = [80.0, 82.5, 79.0, 90.0, 85.0, 88.0, 70.0]
    b = [78.0, 80.0, 79.5, 85.0, 84.0, 80.0, 69.0]
    res = _result({"A": a, "B": b})
    tests = {t["metric"]: t for t in paired_tests(res, ("dsc", "td"))}
    expected = wilcoxon(a, b)
    assert tests["dsc"]["p_value"] == pytest.approx(expected.pvalue) and tests["dsc"]["n"] == 7
    assert tests["dsc"]["mean_difference"] == pytest.approx(np.mean(np.subtract(a, b)))
    assert math.isnan(tests["td"]["p_value"]) and tests["td"]["note"] == "all differences are zero"
    # one test defined in the family: Holm leaves it as it is
    assert tests["dsc"]["p_holm"] == pytest.approx(expected.pvalue)
    s = {r["model"]: r for r in summary_rows(res, ("dsc",))}
    # the sample sd (n - 1), and n per model
    assert s["A"]["dsc_mean"] == pytest.approx(np.mean(a)) and s["A"]["dsc_sd"] == pytest.approx(np.std(a, ddof=1))
    assert s["A"]["n"] == 7 and s["A"]["dsc_n"] == 7
    gen = {(r["model"], r["generation"]): r for r in generation_summary(res)}
    assert gen[("A", 1)]["n_branches"] == 28 and gen[("A", 1)]["n_detected"] == sum(v > 80 for v in a)
    assert gen[("A", 1)]["bd_sd"] == pytest.approx(np.std([100.0 * (v > 80) / 4 for v in a], ddof=1))
    dia = {r["model"]: r for r in diameter_summary(res)}
    assert dia["B"]["dsc_mean"] == pytest.approx(np.mean(b)) and dia["B"]["n"] == 7


def test_small_n_says_na_and_holm_corrects_the_family():
    """Why (issue 24): n = 1 printed "p 1.0000" and "+- 0.00"; thirty tests were listed without a word
    about multiple comparisons."""
    from scipy.stats import wilcoxon

    from core.compare.output import tables
    from core.compare.report import build_report
    from core.compare.stats import holm

    one = _result({"A": [80.0], "B": [70.0]})
    t = {r["metric"]: r for r in paired_tests(one, ("dsc",))}
    assert math.isnan(t["dsc"]["p_value"]) and t["dsc"]["note"] == "n/a (n = 1)"
    s = {r["model"]: r for r in summary_rows(one, ("dsc",))}
    assert s["A"]["dsc_mean"] == 80.0 and math.isnan(s["A"]["dsc_sd"])
    four = _result({"A": [80.0, 82.0, 84.0, 90.0], "B": [70.0, 71.0, 72.0, 73.0]})
    assert paired_tests(four, ("dsc",))[0]["note"] == "n/a (n = 4)"
    html = build_report(one, tables(one), {}, "")[0]
    assert "n/a (n = 1)" in html and "80.00 &plusmn; n/a" in html and "1.0000" not in html
    assert "&plusmn; 0.00" not in html

    # Holm-Bonferroni (step-down): pinned on a textbook example and on scipy's p-values
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(holm([0.2, math.nan])[1]) and holm([0.2, math.nan])[0] == 0.2
    rng = np.random.default_rng(7)
    base = rng.uniform(60, 90, 9)
    res = _result({"A": list(base), "B": list(base - rng.uniform(0, 6, 9)), "C": list(base + rng.normal(0, 1, 9))})
    rows = paired_tests(res, ("dsc",))
    raw = [
        wilcoxon(
            [r.metrics["dsc"] for r in res.rows if r.model == x["model_a"]],
            [r.metrics["dsc"] for r in res.rows if r.model == x["model_b"]],
        ).pvalue
        for x in rows
    ]
    assert [x["p_value"] for x in rows] == pytest.approx(raw)
    m = len(raw)
    order = np.argsort(raw)
    expected = np.empty(m)
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * raw[i]))
        expected[i] = running
    assert [x["p_holm"] for x in rows] == pytest.approx(list(expected))
    assert all(x["significant"] == ("yes" if x["p_holm"] < 0.05 else "no") for x in rows)
    assert any(x["p_holm"] > x["p_value"] for x in rows)  # the correction is not a no-op here
    html = build_report(res, tables(res), {}, "")[0]
    assert "Holm-corrected" in html and "significant after correction" in html
    sig = [x for x in rows if x["significant"] == "yes"]
    assert f"{len(sig)} significant after correction" in html


def test_agreement_of_two_predictions_without_reference():
    lab = _phantom_label(3)
    a = lab.array
    b = _drop_distal(a, 6)
    res = agreement(LabelVolume(a, lab.geometry), LabelVolume(b, lab.geometry), name_a="full", name_b="cut")
    assert res.dice == pytest.approx(200.0 * b.sum() / (a.sum() + b.sum()))
    assert res.b_only_voxels == 0 and res.a_only_voxels == int(a.sum() - b.sum())
    assert len(res.a_branches_missed_by_b) >= 1  # the cut-off branches of A
    assert res.b_branches_missed_by_a == []  # everything B has, A has
    same = agreement(LabelVolume(a, lab.geometry), LabelVolume(a, lab.geometry))
    assert same.dice == 100.0 and same.a_branches_missed_by_b == [] == same.b_branches_missed_by_a


def test_agreement_cli(tmp_path, capsys):
    lab = _phantom_label(3)
    write_volume(lab, tmp_path / "a.nii.gz")
    write_volume(LabelVolume(_drop_distal(lab.array, 6), lab.geometry), tmp_path / "b.nii.gz")
    assert (
        main(
            [
                "compare",
                "--agreement",
                str(tmp_path / "a.nii.gz"),
                str(tmp_path / "b.nii.gz"),
                "--json",
                str(tmp_path / "agree.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "Dice" in out and "missed by b" in out
    assert json.loads((tmp_path / "agree.json").read_text())["a_only_voxels"] > 0


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert (
        main(["compare", "--reference", str(tmp_path), "--predictions", "nonsense", "--out", str(tmp_path / "o")]) == 2
    )
    assert (
        main(["compare", "--reference", str(tmp_path), "--models", f"m={tmp_path}/x.pt", "--out", str(tmp_path)]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "NAME=PATH" in err[0] and "--cts" in err[1]


@pytest.mark.slow
@pytest.mark.shared_data
def test_real_atm22_pair_is_one_case(folders, tmp_path):
    """timi's ATM_305 against YangLab's as reference, beside the phantom cases; equals `airway evaluate`."""
    ref_file = ATM / "preds_YangLab" / "ATM_305_0000.nii.gz"
    pred_file = ATM / "preds_timi" / "ATM_305_0000.nii.gz"
    if not ref_file.exists() or not pred_file.exists():
        pytest.skip("needs ../shared/data/atm22 (real ATM'22 pair)")
    ref, pred = tmp_path / "ref", tmp_path / "timi"
    ref.mkdir()
    pred.mkdir()
    # links, not copies: the shared data stays where it is
    (ref / "ATM_305_0000.nii.gz").symlink_to(ref_file)
    (pred / "ATM_305_0000.nii.gz").symlink_to(pred_file)
    for i in range(2):
        (ref / f"case_{i:03d}_0000.nii.gz").symlink_to(folders / "ref" / f"case_{i:03d}_0000.nii.gz")
        (pred / f"case_{i:03d}.nii.gz").symlink_to(folders / "dilated" / f"case_{i:03d}.nii.gz")
    res = compare_folders(ref, {"timi": pred}, settings=CompareSettings(atm22=True), cache_dir=tmp_path / "c")
    m = res.row("ATM_305", "timi").metrics
    # the organisers' numbers (tests/test_metrics.py)
    assert (m["n_branches"], m["n_detected"]) == (211, 195)
    assert (m["td"], m["bd"], m["dsc"]) == (94.15, 92.42, 94.52)
    assert not res.failures and len(res.rows) == 3
