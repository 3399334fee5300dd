"""core.dataset.write_reviewed_label: labelsReviewed/, original untouched, backup once, edit log, grid check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dataset_fixtures import GEOMETRY, make_atm22, make_flat, tiny_mask

from core.dataset import open_dataset, read_edit_log, read_state, write_reviewed_label
from core.errors import GeometryError
from core.io import read_label
from core.review.persist import file_key
from core.volume import Geometry, LabelVolume


def test_reviewed_label_round_trip(tmp_path: Path) -> None:
    root = make_atm22(tmp_path / "ATM22", n=2)
    ds = open_dataset(root)
    case = ds.case("ATM_001")
    assert case.reference is not None
    original = file_key(case.reference)
    before = read_label(case.reference).mask

    edited = before.copy()
    edited[0, 0, 0:3] = True  # 3 voxels added
    edited[2, 2, 3] = False  # 1 removed
    path = write_reviewed_label(
        ds, "ATM_001", LabelVolume(edited, GEOMETRY), [{"tool": "accept", "region_key": "FP:ab"}], reviewer="ann"
    )
    assert path == root / "labelsReviewed" / "ATM_001.nii.gz"
    assert file_key(case.reference) == original  # never touched
    assert ds.case("ATM_001").reviewed == path  # this Dataset sees it at once

    again = open_dataset(root)  # and a re-open
    c = again.case("ATM_001")
    assert c.reviewed == path and c.label("best") == path and c.label("original") == case.reference
    back = read_label(path)
    assert np.array_equal(back.mask, edited) and back.geometry.matches(GEOMETRY)
    assert again.case("ATM_002").label("best") == again.case("ATM_002").reference

    log = read_edit_log(again, "ATM_001")
    assert log[0]["tool"] == "accept" and log[0]["reviewer"] == "ann" and log[0]["time"]
    assert log[-1]["tool"] == "save" and log[-1]["added"] == 3 and log[-1]["removed"] == 1
    assert log[-1]["voxels"] == int(edited.sum()) and log[-1]["from"] == "original"
    st = read_state(again).case("ATM_001")
    assert st.label_version == "reviewed" and st.reviewer == "ann" and len(st.keys["reviewed"]) == 64


def test_second_save_backs_up_the_first_once_and_appends_the_log(tmp_path: Path) -> None:
    ds = open_dataset(make_flat(tmp_path / "d", n=1))
    m1 = tiny_mask(0)
    first = write_reviewed_label(ds, "c0", m1, [])
    first_bytes = first.read_bytes()
    m2 = LabelVolume(m1.mask.copy(), GEOMETRY)
    m2.array[7, 7, 7] = True
    write_reviewed_label(ds, "c0", m2, [{"tool": "brush", "voxels": 1}])
    backup = first.with_name("c0.orig.nii.gz")
    assert backup.read_bytes() == first_bytes
    m3 = LabelVolume(m2.mask.copy(), GEOMETRY)
    m3.array[0, 0, 0] = True
    write_reviewed_label(ds, "c0", m3, [])
    assert backup.read_bytes() == first_bytes  # the backup is the first reviewed version, kept once
    log = read_edit_log(ds, "c0")
    saves = [e for e in log if e["tool"] == "save"]
    assert [(e["from"], e["added"], e["removed"]) for e in saves] == [
        ("original", 0, 0),
        ("reviewed", 1, 0),
        ("reviewed", 1, 0),
    ]
    assert any(e["tool"] == "brush" for e in log)


def test_a_mask_on_another_grid_is_refused(tmp_path: Path) -> None:
    ds = open_dataset(make_flat(tmp_path / "d", n=1))
    shifted = tiny_mask(0, Geometry(GEOMETRY.spacing, (10.0, 0.0, 0.0)))
    with pytest.raises(GeometryError) as err:
        write_reviewed_label(ds, "c0", shifted, [])
    assert "c0" in str(err.value) and "not on the grid" in str(err.value)
    small = LabelVolume(np.zeros((4, 8, 8), bool), GEOMETRY)
    with pytest.raises(GeometryError, match="shape"):
        write_reviewed_label(ds, "c0", small, [])
    assert not ds.reviewed_path("c0").exists()


def test_a_broken_last_log_line_is_skipped(tmp_path: Path) -> None:
    ds = open_dataset(make_flat(tmp_path / "d", n=1))
    write_reviewed_label(ds, "c0", tiny_mask(0), [])
    log = ds.reviewed_dir / "c0.edits.jsonl"
    with open(log, "a") as f:
        f.write('{"tool": "bru')  # a crash mid-append
    assert len(read_edit_log(ds, "c0")) == 1


def test_a_review_saved_meanwhile_by_someone_else_is_not_overwritten(tmp_path: Path) -> None:
    from core.review.persist import SaveConflictError

    ds = open_dataset(make_flat(tmp_path / "d", n=1))
    mine_opened = file_key(ds.reviewed_path("c0"))  # None: no reviewed label when I opened the case
    theirs = write_reviewed_label(ds, "c0", tiny_mask(1), [], reviewer="bob")
    their_bytes = theirs.read_bytes()
    with pytest.raises(SaveConflictError, match="changed on disk"):
        write_reviewed_label(ds, "c0", tiny_mask(2), [], reviewer="ann", expected=mine_opened)
    assert theirs.read_bytes() == their_bytes
    write_reviewed_label(ds, "c0", tiny_mask(2), [], reviewer="ann", expected=file_key(theirs))  # after merging
    assert {hash(c) for c in open_dataset(ds.root).cases}  # cases can go in sets
