"""Crash recovery for every kind of case, and damaged recovery files (core.review.persist)."""

from __future__ import annotations

import numpy as np
import pytest
from test_regions import make_case

from core.box import Box
from core.io import write_volume
from core.review import Session
from core.review.persist import DAMAGED_SUFFIX, RECOVERY_SUFFIX, scan_recoveries
from core.volume import Geometry, LabelVolume

GEO = Geometry(spacing=(0.8, 0.8, 1.0))


@pytest.fixture()
def files(tmp_path):
    ref, pred, _, _ = make_case()
    write_volume(LabelVolume(ref.astype(np.uint8), GEO), tmp_path / "ref.nii.gz")
    write_volume(LabelVolume(pred.astype(np.uint8), GEO), tmp_path / "pred.nii.gz")
    return tmp_path


def _edited_label_only(files, rec):
    s = Session.load(reference=files / "ref.nii.gz", predictions=[files / "pred.nii.gz"], recovery_dir=rec)
    s.analyse()
    s.accept(next(g.key for g in s.regions(0) if g.kind == "FP"), 0)
    s.paint(0, Box((0, 0, 0), (2, 2, 2)), np.ones((2, 2, 2), bool), True)
    assert s.autosave() is not None
    return s


def test_a_label_only_case_recovers_and_the_file_goes_after_the_save(files, tmp_path):
    rec = tmp_path / "rec"
    s = _edited_label_only(files, rec)
    shown_ref, shown_pred = s.reference.array.copy(), s.predictions[0].array.copy()
    path = s.recovery_path
    del s  # the crash: nothing saved
    valid, damaged = scan_recoveries(rec)
    assert [p for p, _ in valid] == [path] and not damaged
    r = Session.recover(path)
    assert r.ct is None
    assert np.array_equal(r.reference.array, shown_ref) and np.array_equal(r.predictions[0].array, shown_pred)
    r.save_reference(files / "ref_fixed.nii.gz")
    r.save_prediction(0, files / "pred_fixed.nii.gz")
    assert not path.exists()


def test_a_damaged_recovery_file_is_set_aside_and_never_hides_a_valid_one(files, tmp_path):
    rec = tmp_path / "rec"
    s = _edited_label_only(files, rec)
    good = s.recovery_path
    (rec / f"empty{RECOVERY_SUFFIX}").write_bytes(b"")
    (rec / f"truncated{RECOVERY_SUFFIX}").write_bytes(good.read_bytes()[:100])
    (rec / f"foreign{RECOVERY_SUFFIX}").write_bytes(b"PK\x03\x04 not a zip at all")
    valid, damaged = scan_recoveries(rec)
    assert [p for p, _ in valid] == [good]
    assert sorted(p.name for p, _ in damaged) == sorted(
        f"{n}{RECOVERY_SUFFIX}{DAMAGED_SUFFIX}" for n in ("empty", "truncated", "foreign")
    )
    assert all(p.exists() and why for p, why in damaged)
    # set aside once: the next start lists only the valid one, and reports nothing again
    valid, damaged = scan_recoveries(rec)
    assert [p for p, _ in valid] == [good] and not damaged
