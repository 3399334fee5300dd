"""One naming rule for cases (core.casenames): `airway segment` writes what `compare` and
`evaluate` match; files of earlier versions and ATM'22 teams still match; a model that
matches nothing is an error that names what was expected and what was found."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.casenames import case_id, list_predictions, list_references, mask_name, prediction_case_id
from core.cli import main
from core.io import write_volume
from core.volume import Geometry, LabelVolume


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")


def test_the_rule():
    assert case_id("ATM_305_0000.nii.gz") == "ATM_305" == case_id("ATM_305.nii.gz") == case_id(Path("x/ATM_305.mha"))
    assert mask_name("ATM_305_0000.nii.gz") == "ATM_305.nii.gz" == mask_name("ATM_305")
    assert prediction_case_id("ATM_305_airway.nii.gz") == "ATM_305" == prediction_case_id("ATM_305_0000.nrrd")
    assert case_id("case_000_0000") == "case_000"  # only the channel suffix goes


def test_prediction_folders_of_every_version_match(tmp_path):
    _touch(tmp_path / "ref", "A_0000.nii.gz", "B.nii.gz", "C.nii.gz", "D.nii.gz")
    _touch(
        tmp_path / "pred",
        "A.nii.gz",  # this version (airway segment on a folder)
        "B_airway.nii.gz",  # earlier airway segment
        "C_0000.nii.gz",  # an ATM'22 team's submission
        "C_probabilities.nii.gz",  # never a prediction
        "D_airway.nii.gz",
        "D.nii.gz",  # the plain name wins over the legacy one
        ".hidden.nii.gz",
        "notes.txt",
    )
    assert list(list_references(tmp_path / "ref")) == ["A", "B", "C", "D"]
    preds = list_predictions(tmp_path / "pred")
    assert {k: v.name for k, v in preds.items()} == {
        "A": "A.nii.gz",
        "B": "B_airway.nii.gz",
        "C": "C_0000.nii.gz",
        "D": "D.nii.gz",
    }


def _label(seed: int) -> LabelVolume:
    from core.phantom import make_phantom

    return make_phantom(32, seed=seed, spacing=(1.5, 1.5, 1.8), vessels=False).label


@pytest.fixture
def ref_dir(tmp_path) -> Path:
    d = tmp_path / "ref"
    d.mkdir()
    for i in range(3):
        write_volume(_label(i), d / f"case_{i}.nii.gz")
    return d


@pytest.mark.slow
def test_legacy_segment_names_compare_instead_of_nan_rows(ref_dir, tmp_path, capsys):
    """Why (issue 24): a folder of CASE_airway.nii.gz got 0 cases and nan rows, exit 0."""
    pred = tmp_path / "legacy"
    pred.mkdir()
    for i in range(3):
        write_volume(_label(i), pred / f"case_{i}_airway.nii.gz")
    out = tmp_path / "out"
    rc = main(["compare", "--reference", str(ref_dir), "--predictions", f"rg={pred}", "--out", str(out), "-q"])
    assert rc == 0, capsys.readouterr().err
    text = (out / "metrics.csv").read_text()
    assert text.count("\n") == 4 and ",nan" not in text and "100.0" in text


@pytest.mark.slow
def test_a_model_matching_no_case_is_an_error_naming_expected_and_found(ref_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        write_volume(_label(i), bad / f"seg-{i}.nii.gz")
    out = tmp_path / "out"
    argv = ["compare", "--reference", str(ref_dir), "--predictions", f"bad={bad}", "--out", str(out), "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "0 of 3" in err and "case_0.nii.gz" in err and "case_0_airway.nii.gz" in err  # expected
    assert "seg-0.nii.gz" in err and "--allow-missing" in err  # found, and the way out
    assert not out.exists()
    # --allow-missing: it goes on with the other model, and says so
    good = tmp_path / "good"
    good.mkdir()
    write_volume(_label(0), good / "case_0.nii.gz")
    argv = argv[:5] + [f"good={good}"] + argv[5:] + ["--allow-missing"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "model 'good' has a prediction for 1 of 3" in err and "found case_0.nii.gz" in err
    assert "model 'bad' has a prediction for 0 of 3" in err


def test_evaluate_names_cases_like_compare_and_lists_what_is_missing(ref_dir, tmp_path, capsys):
    pred = tmp_path / "p"
    pred.mkdir()
    write_volume(_label(0), pred / "case_0_0000.nii.gz")
    write_volume(_label(1), pred / "case_1_airway.nii.gz")
    csv_path = tmp_path / "e.csv"
    assert main(["evaluate", "--reference", str(ref_dir), "--prediction", str(pred), "--csv", str(csv_path)]) == 0
    err = capsys.readouterr().err
    assert "1 of 3" not in err and "2 of 3" in err and "case_2.nii.gz" in err
    import csv

    rows = list(csv.DictReader(csv_path.open()))
    assert [r["case"] for r in rows] == ["case_0", "case_1", "mean", "sd"]
    nothing = tmp_path / "empty"
    nothing.mkdir()
    write_volume(LabelVolume(np.zeros((4, 4, 4), bool), Geometry()), nothing / "other.nii.gz")
    assert main(["evaluate", "--reference", str(ref_dir), "--prediction", str(nothing)]) == 2
    assert "found other.nii.gz" in capsys.readouterr().err
