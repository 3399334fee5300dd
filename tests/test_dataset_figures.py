"""core.dataset.figures / `airway dataset evaluate`: figures recorded with content keys, unchanged pairs skipped,
a reviewed label makes them stale, a failing pair does not stop the rest."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from airway_shapes import SPACING, Y_SEGMENTS, Y_SHAPE, tube

from core.cli import main
from core.dataset import open_dataset, read_state, summary_rows, write_reviewed_label
from core.dataset.figures import evaluate_dataset
from core.io import write_volume
from core.volume import Geometry, LabelVolume

GEO = Geometry(SPACING[::-1])  # (x, y, z)


@pytest.fixture(scope="module")
def shapes() -> tuple[np.ndarray, np.ndarray]:
    full = tube(Y_SHAPE, Y_SEGMENTS)
    cut = tube(Y_SHAPE, Y_SEGMENTS[:3] + Y_SEGMENTS[4:])  # terminal branch "A" missing
    return full, cut


def _dataset(root: Path, full: np.ndarray, cut: np.ndarray) -> Path:
    for cid in ("y1", "y2"):
        write_volume(LabelVolume(full, GEO), root / "labels" / f"{cid}.nii.gz")
    write_volume(LabelVolume(cut, GEO), root / "predictions" / "cutter" / "y1.nii.gz")
    write_volume(LabelVolume(full, GEO), root / "predictions" / "perfect" / "y1.nii.gz")
    other_grid = Geometry(SPACING[::-1], (5.0, 0.0, 0.0))
    write_volume(LabelVolume(full, other_grid), root / "predictions" / "perfect" / "y2.nii.gz")
    return root


@pytest.mark.slow
def test_figures_recorded_cached_and_made_stale_by_a_review(
    tmp_path: Path, shapes: tuple[np.ndarray, np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    full, cut = shapes
    root = _dataset(tmp_path / "ds", full, cut)
    ds = open_dataset(root)
    assert ds.models == ["cutter", "perfect"]

    records = {(r.case_id, r.model): r for r in evaluate_dataset(ds)}
    perfect = records[("y1", "perfect")]
    assert perfect.status == "evaluated" and perfect.figures == {
        "td": 100.0,
        "bd": 100.0,
        "dsc": 100.0,
        "precision": 100.0,
    }
    cutter = records[("y1", "cutter")].figures
    assert cutter["td"] < 100.0 and cutter["bd"] == pytest.approx(100.0 * 6 / 7, abs=0.1)
    assert cutter["precision"] == pytest.approx(100.0)
    failed = records[("y2", "perfect")]
    assert failed.status == "failed" and "not on the same grid" in failed.reason

    cs = read_state(ds).case("y1")
    assert cs.figures["cutter"] == cutter and cs.label_version == "original"
    assert set(cs.keys) == {"cutter", "perfect", "reference"}
    rows = {(r["case"], r["model"]): r for r in summary_rows(ds)}
    assert rows[("y1", "cutter")]["bd"] == cutter["bd"]

    again = evaluate_dataset(open_dataset(root), models=["cutter"])
    assert [(r.model, r.status) for r in again] == [("cutter", "cached")]

    # the reviewed label is the cut tree: the cutter is now perfect, and it is evaluated again
    write_reviewed_label(ds, "y1", LabelVolume(cut, GEO), [])
    after = {r.model: r for r in evaluate_dataset(open_dataset(root), cases=["y1"])}
    assert after["cutter"].status == "evaluated" and after["cutter"].figures["td"] == pytest.approx(100.0)
    cs = read_state(ds).case("y1")
    assert cs.label_version == "reviewed" and "reviewed" in cs.keys

    # the same figures as airway evaluate gives for the pair (one vocabulary, one definition)
    ev_csv = tmp_path / "ev.csv"
    pred = root / "predictions" / "cutter" / "y1.nii.gz"
    assert (
        main(
            [
                "evaluate",
                "--reference",
                str(root / "labels" / "y1.nii.gz"),
                "--prediction",
                str(pred),
                "--csv",
                str(ev_csv),
            ]
        )
        == 0
    )
    ev = next(csv.DictReader(ev_csv.open()))
    for f in ("td", "bd", "dsc", "precision"):
        assert float(ev[f]) == pytest.approx(cutter[f], abs=1e-3), f
    capsys.readouterr()

    # the command line: failures make exit status 1 with the reason; unchanged pairs are said so
    assert main(["dataset", "evaluate", str(root)]) == 1
    out = capsys.readouterr().out
    assert "(unchanged)" in out and "failed" in out and "2 unchanged, 1 failed" in out
    assert main(["dataset", "evaluate", str(root), "--cases", "y1"]) == 0
    assert main(["dataset", "evaluate", str(root), "--models", "nobody"]) == 2
