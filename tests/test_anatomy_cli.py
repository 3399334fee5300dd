"""``airway label`` as typed: label image, colour tables, JSON/CSV table, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from core.anatomy.io import read_names
from core.anatomy.names import UNNAMED_VALUE, name_value
from core.anatomy.textbook import textbook_mask, textbook_tree
from core.cli import main
from core.io import read_label, read_volume, write_volume
from core.volume import LabelVolume


@pytest.fixture(scope="module")
def mask_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    vol = textbook_mask(textbook_tree(), (1.2, 1.2, 1.5), flip="x")
    path = tmp_path_factory.mktemp("label") / "case7.nii.gz"
    write_volume(vol, path)
    return path


def test_label_writes_image_tables_and_colours(mask_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["label", "--input", str(mask_file), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "lobar 6 / 6" in said
    img = read_volume(out / "case7_names.nii.gz")
    mask = read_label(mask_file)
    assert img.geometry.matches(mask.geometry)
    values = np.rint(img.array).astype(int)
    assert ((values > 0) == mask.mask).all()  # every airway voxel has a value, nothing else
    present = set(np.unique(values)) - {0}
    for name in ("Trachea", "RMB", "LMB", "RUL", "RML", "RLL", "LUL", "LLL", "Lingula", "RB6", "LB10"):
        assert name_value(name) in present, name
    # colour tables: Slicer (value name R G B A) and ITK-SNAP (IDX R G B A VIS MSH "LABEL")
    ctbl = (out / "case7_names.ctbl").read_text().splitlines()
    rows = [line.split() for line in ctbl if not line.startswith("#")]
    assert all(len(r) == 6 for r in rows)
    by_value = {int(r[0]): r[1] for r in rows}
    assert by_value[name_value("RB6")] == "RB6" and by_value[UNNAMED_VALUE] == "unnamed"
    snap = [line for line in (out / "case7_names_itksnap.txt").read_text().splitlines() if not line.startswith("#")]
    assert any(line.split()[0] == str(name_value("LB1+2")) and line.endswith('"LB1+2"') for line in snap)
    assert all(len(line.split()) >= 8 for line in snap)
    # the table, as JSON and CSV
    doc = json.loads((out / "case7_names.json").read_text())
    names = read_names(out / "case7_names.json")
    assert names.to_json() == doc["names"]
    with open(out / "case7_names.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(doc["table"]) == len(names.names)
    assert {"branch", "name", "confidence", "lobe", "segment", "generation", "length_mm", "mean_diameter_mm"} <= set(
        table[0]
    )
    rb6 = [r for r in table if r["name"] == "RB6"]
    assert rb6 and rb6[0]["lobe"] == "RLL" and float(rb6[0]["confidence"]) > 0
    # again without --overwrite: refused, the first outputs stay
    assert main(["label", "--input", str(mask_file), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_label_with_a_lobe_mask(mask_file: Path, tmp_path: Path, capsys) -> None:
    """A lobe map whose values say every airway voxel below the carina is in the left lower lobe."""
    mask = read_label(mask_file)
    lobes = LabelVolume(np.where(mask.mask, 7, 0).astype(np.uint8), mask.geometry)
    write_volume(lobes, tmp_path / "lobes.nii.gz")
    out = tmp_path / "out"
    argv = ["label", "--input", str(mask_file), "--lobes", str(tmp_path / "lobes.nii.gz"), "--out", str(out)]
    assert main([*argv, "--lobe-values", "7=LLL"]) == 0
    table = json.loads((out / "case7_names.json").read_text())["table"]
    below = [r for r in table if r["name"] not in ("Trachea", "RMB", "LMB", "BronInt")]
    assert below and all(r["lobe"] == "LLL" for r in below)
    assert not any(r["name"].startswith("RB") for r in table)
    assert main([*argv, "--lobe-values", "7=XYZ", "--overwrite"]) == 2
    assert "--lobe-values" in capsys.readouterr().err


def test_label_errors(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty.nii.gz"
    write_volume(LabelVolume(np.zeros((20, 20, 20), np.uint8)), empty)
    assert main(["label", "--input", str(empty), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "empty" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "empty_names.nii.gz").exists()
    assert main(["label", "--input", str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path / "o")]) == 2
    assert "Traceback" not in capsys.readouterr().err
