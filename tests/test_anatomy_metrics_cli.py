"""`airway evaluate` and `airway compare` as typed: TD/BD per lobe and the segmental bronchi detected, in
the CSV, JSON and report.html (issue 26: "a reviewer can read from airway compare's report which lobes and
segmental bronchi each model misses"). The reference is core.anatomy's textbook tree, named by the labeller;
the predictions are the reference with one lobe, or one segmental bronchus, cut away."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from core.anatomy import label_tree
from core.anatomy.textbook import textbook_mask, textbook_tree
from core.cli import main
from core.io import write_volume
from core.tree import parse_tree
from core.volume import LabelVolume

SPACING = (1.5, 1.5, 1.5)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _cut(vol: LabelVolume, keep_branch) -> LabelVolume:
    """The reference without the voxels of the branches ``keep_branch`` says no to."""
    tree = parse_tree(vol)
    names = label_tree(tree, geometry=vol.geometry)
    full = tree.branch_label_map()
    drop = [b.id for b in tree.branches if not keep_branch(names, b.id)]
    return LabelVolume(((full > 0) & ~np.isin(full, drop)).astype(np.uint8), vol.geometry)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """ref/{t0,t1}: the textbook tree (t1 without RB7); nolll/: the left lower lobe cut away; norb6/: RB6 and
    its subsegments cut away."""
    root = tmp_path_factory.mktemp("anatomy_cli")
    for d in ("ref", "nolll", "norb6"):
        (root / d).mkdir()
    for case, rb7 in (("t0", True), ("t1", False)):
        vol = textbook_mask(textbook_tree(rb7=rb7), SPACING)
        write_volume(vol, root / "ref" / f"{case}.nii.gz")
        write_volume(_cut(vol, lambda n, b: n.lobe_of(b) != "LLL"), root / "nolll" / f"{case}.nii.gz")
        write_volume(_cut(vol, lambda n, b: n.segment_of(b) != "RB6"), root / "norb6" / f"{case}.nii.gz")
    return root


@pytest.mark.slow
def test_evaluate_writes_lobes_and_segments(data, tmp_path, capsys):
    out = tmp_path / "ev.csv"
    argv = ["evaluate", "--reference", str(data / "ref" / "t0.nii.gz"), "--prediction"]
    argv += [str(data / "nolll" / "t0.nii.gz"), str(data / "norb6" / "t0.nii.gz")]
    assert main(argv + ["--csv", str(out), "--json", str(tmp_path / "ev.json")]) == 0
    printed = capsys.readouterr().out
    assert "missed LB6, LB7+8, LB9, LB10" in printed and "LLL 0/0" in printed

    lobes = _rows(tmp_path / "ev_lobes.csv")
    assert list(lobes[0]) == ["case", "model", "lobe", "td", "bd", "branches", "detected", "length_mm"]
    nolll = {r["lobe"]: r for r in lobes if r["model"].startswith("nolll")}
    assert float(nolll["LLL"]["td"]) == 0.0 and float(nolll["LLL"]["bd"]) == 0.0
    for lobe in ("RUL", "RML", "RLL", "LUL", "central"):
        assert float(nolll[lobe]["td"]) == pytest.approx(100.0) and float(nolll[lobe]["bd"]) == 100.0, lobe
    assert nolll["unnamed"]["td"] == "n/a" and nolll["unnamed"]["branches"] == "0"  # no branch there: n/a, not 0

    main_rows = {r["model"].split("/")[0]: r for r in _rows(out)}
    assert main_rows["nolll"]["segmental_missed"] == "LB6 LB7+8 LB9 LB10"
    assert main_rows["nolll"]["segmental_total"] == "18" and main_rows["nolll"]["segmental_detected"] == "14"
    assert main_rows["norb6"]["segmental_missed"] == "RB6"
    for model, r in main_rows.items():  # the rows add up to the overall counts
        mine = [x for x in lobes if x["model"].split("/")[0] == model]
        assert sum(int(x["branches"]) for x in mine) == int(r["n_branches"])
        assert sum(int(x["detected"]) for x in mine) == int(r["n_detected"])

    segments = _rows(tmp_path / "ev_segments.csv")
    missed = [s["segment"] for s in segments if s["model"].startswith("norb6") and s["detected"] == "0"]
    assert missed == ["RB6"]

    doc = json.loads((tmp_path / "ev.json").read_text())
    a = doc["cases"][0]["anatomy"]
    assert a["sentence"] == "segmental bronchi detected 14 / 18; missed LB6, LB7+8, LB9, LB10"
    assert {r["lobe"]: r["bd"] for r in a["lobes"]}["unnamed"] is None  # JSON null, never 0

    # --no-anatomy: no naming, no lobe file, no segmental columns
    out2 = tmp_path / "plain.csv"
    assert main(argv + ["--csv", str(out2), "--no-anatomy"]) == 0
    assert not (tmp_path / "plain_lobes.csv").exists()
    assert "segmental_missed" not in _rows(out2)[0]


@pytest.mark.slow
def test_compare_report_says_which_lobes_and_segments_each_model_misses(data, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["compare", "--reference", str(data / "ref"), "--predictions"]
    argv += [f"nolll={data / 'nolll'}", f"norb6={data / 'norb6'}", "--out", str(out), "-q", "--no-snapshots"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "nolll: lobes missed most: LLL (BD 0.0 %, TD 0.0 %)" in printed

    lobes = _rows(out / "metrics_lobes.csv")
    assert list(lobes[0]) == ["case", "model", "lobe", "td", "bd", "branches", "detected", "length_mm"]
    assert {(r["case"], r["lobe"]) for r in lobes if r["model"] == "nolll" and r["bd"] == "0.0"} == {
        ("t0", "LLL"),
        ("t1", "LLL"),
    }
    summary = {(r["model"], r["lobe"]): r for r in _rows(out / "metrics_lobes_summary.csv")}
    assert float(summary[("norb6", "RLL")]["bd_mean"]) < 100.0 and summary[("norb6", "RLL")]["n"] == "2"
    assert summary[("norb6", "unnamed")]["bd_mean"] == "n/a"
    metrics = {(r["case"], r["model"]): r for r in _rows(out / "metrics.csv")}
    assert metrics[("t1", "norb6")]["segmental_total"] == "17"  # t1's reference has no RB7: not counted
    assert metrics[("t1", "norb6")]["segmental_missed"] == "RB6"
    segs = _rows(out / "metrics_segments.csv")
    assert not [s for s in segs if s["case"] == "t1" and s["segment"] == "RB7"]

    doc = json.loads((out / "compare.json").read_text())
    row = next(r for r in doc["rows"] if r["case"] == "t0" and r["model"] == "norb6")
    assert row["metrics"]["anatomy"]["segmental"]["missed"] == ["RB6"]

    html = (out / "report.html").read_text()
    first_screen = html[: html.index("<h2>")]
    assert "id='lobes-missed'" in first_screen
    assert "<b>nolll</b>: lobes missed most: LLL (BD 0.0 %" in first_screen
    assert "segmental bronchi missed most: RB6 (2 of 2)" in first_screen
    assert "<table class='lobes'>" in html and "<th>nolll<br>TD / BD (n)</th>" in html
    assert "<td class='t'>LLL</td><td>0.0 / 0.0 (2)</td>" in html
    assert "segmental bronchi detected 17 / 18; missed RB6" in html

    # a rerun takes the names from the cache; --no-anatomy drops the files and the section
    assert main(argv) == 0
    assert json.loads((out / "compare.json").read_text())["cache_stats"].get("names_hits") == 2
    assert main(argv + ["--no-anatomy"]) == 0
    assert not (out / "metrics_lobes.csv").exists() and not (out / "metrics_segments.csv").exists()
    assert "per-lobe" not in (out / "report.html").read_text()
    assert "segmental_missed" not in _rows(out / "metrics.csv")[0]


@pytest.mark.slow
def test_evaluate_and_compare_write_the_same_lobe_rows(data, tmp_path, capsys):
    """One vocabulary: evaluate's F_lobes.csv of a folder equals compare's metrics_lobes.csv."""
    ev = tmp_path / "ev.csv"
    argv = ["evaluate", "--reference", str(data / "ref"), "--prediction", str(data / "norb6"), "--csv", str(ev)]
    assert main(argv) == 0
    out = tmp_path / "out"
    argv = ["compare", "--reference", str(data / "ref"), "--predictions", f"norb6={data / 'norb6'}"]
    assert main(argv + ["--out", str(out), "-q", "--no-snapshots"]) == 0
    capsys.readouterr()
    assert _rows(tmp_path / "ev_lobes.csv") == _rows(out / "metrics_lobes.csv")
    assert _rows(tmp_path / "ev_segments.csv") == _rows(out / "metrics_segments.csv")
    compared = {(r["case"], r["model"]): r for r in _rows(out / "metrics.csv")}
    for r in _rows(ev):
        if r["case"] not in ("mean", "sd"):
            for col in ("segmental_detected", "segmental_total", "segmental_missed"):
                assert r[col] == compared[(r["case"], r["model"])][col]


def test_a_cached_record_without_branch_counts_is_scored_again(data, tmp_path):
    """A metrics record cached by the version before the per-lobe figures lacks their counts: it is
    evaluated again (not shown without lobes), and the rerun after that is served from the cache."""
    from core.compare import compare_folders

    cache = tmp_path / "cache"
    first = compare_folders(data / "ref", {"norb6": data / "norb6"}, cache_dir=cache)
    assert all("anatomy" in r.metrics for r in first.rows)
    for f in (cache / "metrics").glob("*.json"):
        record = json.loads(f.read_text())
        del record["branch_counts"]
        f.write_text(json.dumps(record))
    again = compare_folders(data / "ref", {"norb6": data / "norb6"}, cache_dir=cache)
    assert again.cache_stats.get("evaluated") == 2
    same = json.dumps([r.metrics["anatomy"] for r in again.rows]) == json.dumps(
        [r.metrics["anatomy"] for r in first.rows]
    )
    assert same  # nan-safe
    third = compare_folders(data / "ref", {"norb6": data / "norb6"}, cache_dir=cache)
    assert third.cache_stats == {"metrics_hits": 2, "names_hits": 2}


ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "report_in_browser.py"
sys.path.insert(0, str(SCRIPT.parent))
from report_in_browser import find_chromium  # noqa: E402


@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed (apt-get install chromium)")
@pytest.mark.slow
def test_report_with_lobes_renders_in_chromium(data, tmp_path):
    import subprocess

    out = tmp_path / "out"
    argv = ["compare", "--reference", str(data / "ref"), "--predictions"]
    assert main(argv + [f"nolll={data / 'nolll'}", "--out", str(out), "-q", "--no-snapshots"]) == 0
    r = subprocess.run(
        [sys.executable, str(SCRIPT), str(out / "report.html"), "--screenshot", str(tmp_path / "shot.png")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.stdout.strip(), r.stderr
    found = json.loads(r.stdout.strip().splitlines()[-1])
    assert r.returncode == 0, found
    assert found["images"] >= 2 and found["broken"] == 0 and found["errors"] == []
