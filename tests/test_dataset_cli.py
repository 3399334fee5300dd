"""`airway dataset summary` and `airway dataset split` as typed: outputs and exit codes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from dataset_fixtures import make_nnunet, make_predictions

from core.cli import main
from core.dataset import open_dataset, read_state, set_case, set_figures

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = make_nnunet(tmp_path / "Dataset001", n_train=5, n_test=1)
    make_predictions(root / "unet", ["case_000", "case_001", "stray"])
    ds = open_dataset(root)
    set_case(ds, "case_000", status="done", reviewer="ann", seconds_spent=65.0)
    set_case(ds, "case_001", status="flagged", note="leak")
    set_case(ds, "case_002", status="done")
    set_figures(ds, "case_000", "unet", {"td": 90.0, "bd": 80.0, "dsc": 88.0, "precision": 92.0})
    return root


def test_summary_text(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dataset", "summary", str(dataset)]) == 0
    out, err = capsys.readouterr()
    assert "2 of 6 done, 1 flagged" in out and "nnunet, 6 cases" in out
    assert "unet" in out and "90.0" in out
    assert "flagged: case_001 (leak)" in out
    assert "1 file(s) match no case" in err and "stray.nii.gz" in err


def test_summary_csv_and_json(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_csv, out_json = tmp_path / "s.csv", tmp_path / "s.json"
    assert main(["dataset", "summary", str(dataset), "--csv", str(out_csv), "--json", str(out_json)]) == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["case"] for r in rows] == [f"case_{i:03d}" for i in range(6)]
    r0 = rows[0]
    assert (r0["status"], r0["reviewer"], r0["seconds"], r0["model"]) == ("done", "ann", "65.0", "unet")
    assert (r0["td"], r0["bd"], r0["dsc"], r0["precision"]) == ("90.0", "80.0", "88.0", "92.0")
    assert rows[1]["note"] == "leak" and rows[1]["td"] == ""
    data = json.loads(out_json.read_text())
    assert data["counts"] == {"todo": 3, "in_review": 0, "done": 2, "flagged": 1}
    assert data["progress"] == "2 of 6 done, 1 flagged" and data["layout"] == "nnunet"
    assert data["unmatched"] == [str(dataset / "unet" / "stray.nii.gz")]
    capsys.readouterr()
    assert main(["dataset", "summary", str(dataset), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cases"] == 6  # stdout is pure JSON


def test_split_then_refuse_another_seed(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dataset", "split", str(dataset), "--seed", "3", "--fractions", "0.6", "0.2", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "seed 3 (frozen now)" in out and "test 2" in out  # case_005 is nnU-Net's imagesTs: held out
    frozen = read_state(open_dataset(dataset)).split
    assert main(["dataset", "split", str(dataset), "--seed", "4"]) == 2
    err = capsys.readouterr().err
    assert "frozen with seed 3" in err and "--force" in err and err.count("error") == 1
    assert read_state(open_dataset(dataset)).split == frozen
    assert main(["dataset", "split", str(dataset), "--seed", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["split"] == frozen
    assert main(["dataset", "split", str(dataset), "--seed", "4", "--force"]) == 0


def test_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "main.py", "dataset", "summary", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "imagesTr" in r.stderr
    r = subprocess.run(
        [sys.executable, "main.py", "dataset", "split", str(tmp_path)], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 2 and "--seed" in r.stderr


def test_existing_output_needs_overwrite(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.csv"
    out.write_text("mine\n")
    assert main(["dataset", "summary", str(dataset), "--csv", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_text() == "mine\n"
    assert main(["dataset", "summary", str(dataset), "--csv", str(out), "--overwrite"]) == 0
    assert out.read_text().startswith("case,status") and out.with_name("s.csv.bak").read_text() == "mine\n"


def test_status_from_the_command_line(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dataset", "status", str(dataset), "case_003", "case_004", "--set", "flagged", "--note", "dark"]) == 0
    assert "2 case(s) set to flagged" in capsys.readouterr().out
    state = read_state(open_dataset(dataset))
    assert state.case("case_003").status == "flagged" and state.case("case_004").note == "dark"
    assert state.case("case_003").history[-1]["to"] == "flagged"
    assert main(["dataset", "status", str(dataset), "case_000", "nope", "--set", "todo"]) == 2
    assert "No case 'nope'" in capsys.readouterr().err
    assert read_state(open_dataset(dataset)).case("case_000").status == "done"  # nothing changed
    with pytest.raises(SystemExit):
        main(["dataset", "status", str(dataset), "case_000", "--set", "finished"])


def test_status_choices_are_the_statuses() -> None:
    from core.commands.dataset import STATUS_CHOICES
    from core.dataset import STATUSES

    assert STATUS_CHOICES == STATUSES
