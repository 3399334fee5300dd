"""The headless review session (core.review): edits, undo, analysis, saves and recovery."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_regions import SPACING, make_case

from core.box import Box
from core.io import read_volume, write_volume
from core.metrics import evaluate
from core.regions import find_error_regions
from core.review import Session, backup_path, edit_log_path, list_recoveries
from core.review.layers import History, LabelLayer
from core.review.tools import brush, flood_fill
from core.volume import Geometry, IntensityVolume, LabelVolume

# A file geometry that is not canonical (x flipped, y flipped): saves must come back on it.
FILE_GEOMETRY = Geometry(
    spacing=tuple(SPACING[::-1]), origin=(12.0, -7.5, 30.0), direction=(-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)
)


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    ref, pred, _, parts = make_case()
    d = tmp_path_factory.mktemp("review")
    write_volume(LabelVolume(ref.astype(np.uint8), FILE_GEOMETRY), d / "ref.nii.gz")
    write_volume(LabelVolume(pred.astype(np.uint8), FILE_GEOMETRY), d / "pred.nii.gz")
    return d


def _session(files, tmp_path, **kw) -> Session:
    kw.setdefault("recovery_dir", tmp_path / "recovery")
    s = Session.load(ct=None, reference=files / "ref.nii.gz", predictions=[files / "pred.nii.gz"], **kw)
    s.analyse()
    return s


def _canonical_label(path) -> np.ndarray:
    from core.review.loading import read_label_canonical

    return read_label_canonical(path, None)[0].array


def test_accepting_fp_region_puts_exactly_its_voxels_into_the_saved_reference(files, tmp_path):
    s = _session(files, tmp_path)
    original = s.reference.array.copy()
    assert s.reference.array.dtype == bool
    fp = [g for g in s.regions(0) if g.kind == "FP"]
    assert len(fp) == 3
    region = fp[0]
    assert len(region.voxels) == region.count > 0
    assert not original[tuple(region.voxels.T)].any()
    edit = s.accept(region.key)
    assert edit.added == region.count and edit.removed == 0
    out = s.save_reference(tmp_path / "new.nii.gz")
    saved = _canonical_label(out)
    expected = original.copy()
    expected[tuple(region.voxels.T)] = True
    assert np.array_equal(saved, expected)
    # written on the input's own grid and orientation, not the canonical one
    raw_in, raw_out = read_volume(files / "ref.nii.gz"), read_volume(out)
    assert raw_out.geometry.matches(raw_in.geometry)
    assert raw_out.shape == raw_in.shape
    assert np.array_equal(raw_out.array != 0, np.asarray(s.reference.source.to_file_array(expected)))
    assert s.status(0, region.key) == "reference_error"


def test_accepting_fn_region_removes_its_voxels(files, tmp_path):
    s = _session(files, tmp_path)
    fn = [g for g in s.regions(0) if g.kind == "FN"][0]
    assert s.reference.array[tuple(fn.voxels.T)].all()
    s.accept(fn.key)
    assert not s.reference.array[tuple(fn.voxels.T)].any()


def test_metrics_after_reanalysis_equal_metrics_from_scratch(files, tmp_path):
    s = _session(files, tmp_path)
    before = s.metrics(0)
    assert set(before) >= {"td", "bd", "dsc", "precision"}
    assert all(0 <= before[k] <= 100 for k in ("td", "bd", "dsc", "precision"))
    regions = s.regions(0)
    s.accept(next(g for g in regions if g.kind == "FP").key)
    s.accept(next(g for g in regions if g.kind == "FN" and g.category == "boundary_miss").key)
    s.brush("reference", (60, 40, 40), 2.5, True, form="sphere")  # an unrelated blob
    assert s.is_stale(0)
    s.analyse()
    assert not s.is_stale(0)
    edited = s.reference.array.copy()
    pred = s.predictions[0].array
    scratch = evaluate(pred, edited, s.reference.geometry.spacing_zyx)
    assert s.metrics(0) == scratch.summary()
    assert s.metrics(0)["precision"] > before["precision"]
    from core.tree import parse_tree

    fresh = find_error_regions(
        pred, edited, parse_tree(edited, s.reference.geometry.spacing_zyx), s.reference.geometry.spacing_zyx
    )
    assert [g.key for g in s.regions(0)] == [g.key for g in fresh]


def test_undo_restores_the_exact_bytes_and_redo_the_edit(files, tmp_path):
    s = _session(files, tmp_path)
    start = _digest(s.reference.array)
    pred_start = _digest(s.predictions[0].array)
    regions = s.regions(0)
    s.accept(regions[-1].key)
    s.accept(regions[0].key)
    s.brush("reference", (30, 40, 40), 6, False, form="disc")
    s.brush(0, (30, 40, 40), 3, True, form="sphere")
    edited, edited_pred = _digest(s.reference.array), _digest(s.predictions[0].array)
    assert edited != start and edited_pred != pred_start
    for _ in range(4):
        assert s.undo() is not None
    assert s.undo() is None
    assert _digest(s.reference.array) == start
    assert _digest(s.predictions[0].array) == pred_start
    assert s.status(0, regions[0].key) == "unreviewed"
    for _ in range(4):
        s.redo()
    assert _digest(s.reference.array) == edited
    assert _digest(s.predictions[0].array) == edited_pred
    assert s.status(0, regions[0].key) == "reference_error"


def test_statuses_survive_a_reanalysis_that_reorders_regions():
    ref, pred, _, _ = make_case()
    geo = Geometry(spacing=tuple(SPACING[::-1]))
    s = Session(reference=LabelVolume(ref, geo), predictions=[LabelVolume(pred, geo, name="pred")])
    s.analyse()
    regions = s.regions(0)
    chosen = {
        g.key: status for g, status in zip(regions, ["confirmed", "flagged", "reference_error", "confirmed", "flagged"])
    }
    for key, status in chosen.items():
        s.set_status(0, key, status)
    ids_before = {g.key: g.id for g in regions}
    # a new FP blob on the trachea, larger than FP-0002: the smaller FP ids shift
    s.brush(0, (18, 40, 47), 3.5, True, form="sphere")
    s.analyse()
    after = s.regions(0)
    ids_after = {g.key: g.id for g in after}
    moved = [k for k in chosen if ids_after.get(k) not in (None, ids_before[k])]
    assert moved, "the re-analysis should have re-ordered the regions"
    for g in after:
        assert s.status(0, g.key) == chosen.get(g.key, "unreviewed")
    assert sum(1 for g in after if g.key in chosen) == len(chosen)


def test_change_notifications_carry_box_and_revision(files, tmp_path):
    s = _session(files, tmp_path)
    seen = []
    s.subscribe(lambda kind, payload: seen.append((kind, payload)))
    rev = s.reference.revision
    s.brush("reference", (30, 40, 40), 2, True, form="sphere")
    changes = [p for k, p in seen if k == "change"]
    assert len(changes) == 1
    assert changes[0].layer == "reference" and changes[0].revision == rev + 1 == s.reference.revision
    # radius in voxels of the finest axis (z, 0.5 mm): 2 voxels along z, 1 along y and x (0.6 mm)
    assert changes[0].box == Box((28, 39, 39), (33, 42, 42))
    s.undo()
    assert [p for k, p in seen if k == "change"][-1].reason == "undo"
    assert s.reference.revision == rev + 2  # undo is a change too: caches keyed by revision refresh


def test_undo_memory_of_100_edits_of_10k_voxels_stays_under_50_mb():
    shape = (200, 256, 256)
    layer = LabelLayer("reference", LabelVolume(np.zeros(shape, bool)), role="reference")
    s = Session(reference=layer, undo_depth=200)
    rng = np.random.default_rng(0)
    for _k in range(100):
        z, y, x = rng.integers(0, 170), rng.integers(0, 230), rng.integers(0, 230)
        box = Box((z, y, x), (z + 25, y + 20, x + 20))
        assert s.paint("reference", box, np.ones((25, 20, 20), bool), True, tool="test") is not None
    counts = [e.deltas[0].count for e in s.history.undo_stack]
    assert len(counts) == 100 and sum(counts) > 0.9e6
    assert s.history.nbytes < 50e6
    # values + uint32 indices + the stated overhead: 5 bytes a voxel, never a volume
    assert s.history.nbytes == sum(c * 5 + 256 for c in counts)


def test_history_depth_and_byte_bounds():
    h_layer = LabelLayer("reference", LabelVolume(np.zeros((20, 20, 20), bool)), role="reference")
    s = Session(reference=h_layer, undo_depth=3)
    for k in range(5):
        s.paint("reference", Box((k, 0, 0), (k + 1, 20, 20)), np.ones((1, 20, 20), bool), True)
    assert len(s.history.undo_stack) == 3
    while s.undo():
        pass
    assert h_layer.array[:2].all() and not h_layer.array[2:].any()
    h = History(depth=100, max_bytes=3000)
    layer = LabelLayer("x", LabelVolume(np.zeros((10, 10, 10), bool)))
    from core.review.layers import Edit

    for k in range(5):
        h.push(Edit("t", [layer.write(Box((k, 0, 0), (k + 1, 10, 10)), np.ones((1, 10, 10), bool), True)]))
    assert h.nbytes <= 3000 and len(h.undo_stack) == 3


def test_save_keeps_one_backup_and_writes_an_edit_log(files, tmp_path):
    import shutil

    work = tmp_path / "case"
    work.mkdir()
    shutil.copy(files / "ref.nii.gz", work / "ref.nii.gz")
    shutil.copy(files / "pred.nii.gz", work / "pred.nii.gz")
    original = (work / "ref.nii.gz").read_bytes()
    s = Session.load(reference=work / "ref.nii.gz", predictions=[work / "pred.nii.gz"], recovery_dir=tmp_path / "rec")
    s.analyse()
    fp = [g for g in s.regions(0) if g.kind == "FP"]
    s.accept(fp[0].key)
    assert s.modified
    s.save_reference()
    assert not s.modified
    s.accept(fp[1].key)
    s.undo()
    s.save_reference()
    assert backup_path(work / "ref.nii.gz") == work / "ref.orig.nii.gz"
    assert (work / "ref.orig.nii.gz").read_bytes() == original
    log = json.loads(edit_log_path(work / "ref.nii.gz").read_text())
    tools = [(e["tool"], e["region_key"], e["added"], e["removed"]) for e in log["edits"]]
    assert tools == [
        ("add_to_reference", fp[0].key, fp[0].count, 0),
        ("add_to_reference", fp[1].key, fp[1].count, 0),
        ("undo add_to_reference", fp[1].key, 0, fp[1].count),
    ]
    assert all("time" in e for e in log["edits"])
    assert np.array_equal(_canonical_label(work / "ref.nii.gz"), s.reference.array)
    assert not list(work.glob(".*tmp*"))


_CHILD = textwrap.dedent("""
    import hashlib, sys, time
    import numpy as np
    from core.review import Session
    folder, rec = sys.argv[1], sys.argv[2]
    s = Session.load(reference=folder + "/ref.nii.gz", predictions=[folder + "/pred.nii.gz"],
                     recovery_dir=rec, autosave_interval_s=0)
    s.analyse()
    regions = s.regions(0)
    s.accept([g for g in regions if g.kind == "FP"][0].key)
    s.accept([g for g in regions if g.kind == "FN"][0].key)
    s.brush("reference", (30, 40, 40), 3, True, form="sphere")
    s.set_status(0, regions[-1].key, "flagged")
    s.autosave()
    print(hashlib.sha256(s.reference.array.tobytes()).hexdigest(), regions[-1].key, flush=True)
    time.sleep(600)
""")


@pytest.mark.slow
def test_a_killed_process_recovers_its_edits_from_the_recovery_file(files, tmp_path):
    rec = tmp_path / "recovery"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(files), str(rec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        digest, key = line.split()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    found = list_recoveries(rec)
    assert len(found) == 1
    s = Session.recover(found[0][0])
    assert _digest(s.reference.array) == digest
    assert s.status(0, key) == "flagged"
    assert [e["tool"] for e in s.edit_log] == ["add_to_reference", "remove_from_reference", "brush"]
    s.save_reference(tmp_path / "recovered.nii.gz")
    assert not found[0][0].exists()  # a save that holds every edit retires the recovery file


def test_recovery_refuses_changed_inputs(files, tmp_path):
    import shutil

    from core.errors import InputError

    work = tmp_path / "case"
    shutil.copytree(files, work)
    s = Session.load(reference=work / "ref.nii.gz", predictions=[work / "pred.nii.gz"], recovery_dir=tmp_path / "rec")
    s.brush("reference", (30, 40, 40), 3, True, form="sphere")
    path = s.autosave()
    assert path is not None and path.exists()
    os.utime(work / "ref.nii.gz", ns=(0, 0))
    with pytest.raises(InputError, match="changed"):
        Session.recover(path)


def test_brush_shapes_and_hu_range():
    box, disc = brush((20, 20, 20), (10, 10, 10), 3, form="disc", orientation="axial")
    assert disc.shape == (1, 7, 7) and disc.sum() == 29
    box, ball = brush((20, 20, 20), (10, 10, 10), 3, form="sphere")
    assert ball.shape == (7, 7, 7) and ball.sum() == 123
    _, side = brush((20, 20, 20), (10, 10, 10), 3, form="disc", orientation="sagittal")
    assert side.shape == (7, 7, 1)
    box, edge = brush((20, 20, 20), (0, 0, 0), 3, form="sphere")
    assert box == Box((0, 0, 0), (4, 4, 4))
    ct = np.full((20, 20, 20), -900, np.int16)
    ct[:, :, 10:] = 40
    _, lumen = brush((20, 20, 20), (10, 10, 10), 3, form="disc", ct=ct, hu_range=(-1024, -500))
    assert lumen.sum() == 29 - int(disc[..., 3:].sum())
    assert brush((20, 20, 20), (40, 40, 40), 2) is None


def test_flood_fill_is_bounded():
    from core.errors import InputError

    ct = np.full((40, 40, 40), 40, np.int16)
    ct[5:35, 18:22, 18:22] = -950  # a lumen along z
    box, mask = flood_fill(ct, (20, 20, 20), (-1024, -700))
    assert mask.sum() == 30 * 16
    with pytest.raises(InputError, match="limit"):
        flood_fill(ct, (20, 20, 20), (-1024, -700), max_voxels=100)
    with pytest.raises(InputError, match="outside the fill range"):
        flood_fill(ct, (0, 0, 0), (-1024, -700))
    s = Session(ct=IntensityVolume(ct), reference=LabelVolume(np.zeros(ct.shape, bool)))
    edit = s.flood_fill("reference", (20, 20, 20), (-1024, -700))
    assert edit.added == 480 and s.reference.array.sum() == 480


def test_regions_keep_their_voxels_and_keys_are_content_based():
    ref, pred, tree, parts = make_case()
    regions = find_error_regions(pred, ref, tree, SPACING)
    total_fp = pred & ~ref
    for g in regions:
        c = g.coords.astype(np.intp)
        assert len(c) == g.voxels
        assert (total_fp if g.kind == "FP" else ref & ~pred)[tuple(c.T)].all()
        assert g.mask().sum() == g.voxels
        assert tuple(g.focus_zyx) in {tuple(v) for v in c}
        json.dumps(g.as_dict())
    again = find_error_regions(pred, ref, tree, SPACING, min_voxels=50)
    keys = {g.key: g.id for g in regions}
    assert all(keys[g.key] for g in again)


def test_a_stroke_of_many_dabs_is_one_undo_step():
    layer = LabelLayer("reference", LabelVolume(np.zeros((30, 30, 30), bool)), role="reference")
    s = Session(reference=layer)
    s.begin_stroke()
    for x in range(5, 25):
        s.brush("reference", (15, 15, x), 2, True, form="sphere")
    s.end_stroke()
    assert len(s.history.undo_stack) == 1 and layer.array.sum() > 0
    assert [e["tool"] for e in s.edit_log] == ["brush"]
    assert s.edit_log[0]["added"] == int(layer.array.sum())
    s.undo()
    assert not layer.array.any()
    s.redo()
    assert s.edit_log[-1]["tool"] == "redo brush" and layer.array.sum() == s.edit_log[0]["added"]
