"""The case model: loading in canonical orientation, probing, regions, project files, demo."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from app.review.case import (
    Case,
    PredictionEntry,
    apply_project,
    load_case,
    load_project,
    read_project,
    region_centre,
)
from app.workers import Job, run_sync
from core.box import Box
from core.errors import Cancelled, GeometryError, InputError
from core.regions import ErrorRegion
from core.volume import Geometry, IntensityVolume, LabelVolume


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_demo):
    """The tiny demo on disk, plus a copy of everything stored with flipped x and z axes."""
    from core.io import write_volume

    d = tmp_path_factory.mktemp("case")
    ph = tiny_demo.phantom
    out = {
        "ct": write_volume(ph.ct, d / "ct.nii.gz"),
        "ref": write_volume(
            LabelVolume(tiny_demo.reference.mask.astype(np.uint8), ph.ct.geometry), d / "ref_label.nii.gz"
        ),
        "pred": write_volume(
            LabelVolume(tiny_demo.prediction.mask.astype(np.uint8), ph.ct.geometry), d / "pred.nii.gz"
        ),
    }
    # the same physical image stored with x and z index axes reversed (RAI-like)
    g = ph.ct.geometry
    n = ph.ct.shape
    direction = np.diag([-1.0, 1.0, -1.0])
    origin = np.asarray(g.origin) + np.array([(n[2] - 1) * g.spacing[0], 0.0, (n[0] - 1) * g.spacing[2]])
    flipped = Geometry(g.spacing, tuple(origin), tuple(direction.ravel()))
    out["ct_flipped"] = write_volume(
        IntensityVolume(ph.ct.array[::-1, :, ::-1].copy(), flipped), d / "ct_flipped.nii.gz"
    )
    out["ref_flipped"] = write_volume(
        LabelVolume(tiny_demo.reference.mask[::-1, :, ::-1].astype(np.uint8), flipped), d / "ref_flipped.nii.gz"
    )
    small = IntensityVolume(np.zeros((4, 4, 4), np.float32), g)
    out["wrong_grid"] = write_volume(LabelVolume(np.zeros((4, 4, 4), np.uint8), g), d / "wrong.nii.gz")
    probs = np.where(tiny_demo.prediction.mask, 0.9, 0.1).astype(np.float32)
    out["probs"] = write_volume(IntensityVolume(probs, g), d / "probs.nii.gz")
    out["bad_float"] = write_volume(IntensityVolume(probs * 3, g), d / "bad_float.nii.gz")
    del small
    return out


def test_load_case_is_canonical_whatever_the_storage(files, tiny_demo):
    a = load_case(files["ct"], files["ref"], [files["pred"]])
    b = load_case(files["ct_flipped"], files["ref_flipped"])
    assert a.ct.geometry.orientation_code() == "LPS" == b.ct.geometry.orientation_code()
    np.testing.assert_array_equal(a.ct.array, tiny_demo.phantom.ct.array)
    np.testing.assert_array_equal(b.ct.array, a.ct.array)  # the flipped file looks the same
    np.testing.assert_array_equal(b.reference.mask, tiny_demo.reference.mask)
    assert b.ct.geometry.matches(a.ct.geometry)
    assert not b.reorientation.is_identity and a.reorientation.is_identity
    np.testing.assert_array_equal(a.predictions[0].mask, tiny_demo.prediction.mask)


def test_flipped_real_file_shows_in_patient_orientation(shared_data):
    from core.io import read_ct

    path = shared_data / "totalseg" / "example_ct.nii.gz"
    raw = read_ct(path)
    ct, reo = load_case(path).ct, load_case(path).reorientation
    assert raw.geometry.orientation_code() != "LPS"
    assert ct.geometry.orientation_code() == "LPS"
    # same physical point for the same voxel value: the first voxel of the canonical array
    world = ct.geometry.index_to_world((0, 0, 0))
    back = np.round(raw.geometry.world_to_index(world)).astype(int)
    assert ct.array[0, 0, 0] == raw.array[tuple(back)]
    np.testing.assert_array_equal(reo.invert(ct.array), raw.array)


def test_labels_on_another_grid_are_refused(files):
    with pytest.raises(GeometryError, match="not on the same grid"):
        load_case(files["ct"], files["wrong_grid"])


def test_probability_maps_and_bad_float_predictions(files, tiny_demo):
    ct = load_case(files["ct"]).ct
    entry = load_case(None, None, [files["probs"]], current_ct=ct).predictions[0]  # joins the open case
    assert entry.probabilities is not None
    np.testing.assert_array_equal(entry.mask, tiny_demo.prediction.mask)
    with pytest.raises(InputError, match="neither a mask nor probabilities"):
        load_case(None, None, [files["bad_float"]], current_ct=ct)


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError):
        load_case(tmp_path / "nope.nii.gz")


def test_loading_can_be_cancelled(files):
    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled):
        load_case(files["ct"], files["ref"], progress=lambda *a: None, cancel=ev)


def _hand_case() -> Case:
    geo = Geometry((1.0, 1.0, 2.0), (10.0, 20.0, 30.0))
    ct = IntensityVolume(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6), geo, "ct")
    ref = np.zeros((4, 5, 6), bool)
    pred = np.zeros((4, 5, 6), bool)
    ref[1, 1, 1] = ref[1, 1, 2] = True
    pred[1, 1, 1] = pred[2, 3, 4] = True
    case = Case(auto_analyse=False)
    case.set_ct(ct)
    case.set_reference(LabelVolume(ref, geo))
    case.add_prediction(PredictionEntry("p", LabelVolume(pred, geo)))
    return case


def test_probe_reports_values_and_class(qtbot):
    case = _hand_case()
    info = case.probe((1, 1, 1))
    assert info["class"] == "TP" and info["hu"] == 1 * 30 + 1 * 6 + 1
    assert info["world"] == (11.0, 21.0, 32.0)  # origin + index * spacing (x, y, z)
    assert case.probe((1, 1, 2))["class"] == "FN"
    assert case.probe((2, 3, 4))["class"] == "FP"
    assert case.probe((0, 0, 0))["class"] == "TN"
    assert case.probe((9, 0, 0)) == {}


def test_probe_names_the_branch_and_generation_of_the_analysed_tree(qtbot, tiny_demo):
    case = Case()
    case.set_ct(tiny_demo.phantom.ct)
    case.set_reference(tiny_demo.reference)
    qtbot.waitUntil(lambda: case.branch_map is not None, timeout=60000)
    bmap = case.tree.branch_label_map()
    voxel = tuple(int(v) for v in np.argwhere(bmap > 0)[0])
    info = case.probe(voxel)
    branch = case.tree.branch(int(bmap[voxel]))
    assert info["branch"] == branch.id and info["generation"] == branch.generation


def test_cursor_is_clamped_and_signalled(qtbot):
    case = _hand_case()
    with qtbot.waitSignal(case.cursorChanged) as sig:
        case.set_cursor((99, -3, 2.6))
    assert case.cursor == (3, 0, 3) and sig.args == [(3, 0, 3)]


def _region(key: str, centroid=(1.0, 1.0, 1.0), focus=None, kind="FP") -> ErrorRegion:
    return ErrorRegion(
        id=key,
        kind=kind,
        category="leakage",
        voxels=1,
        volume_mm3=1.0,
        centroid_zyx=centroid,
        centroid_mm=(0.0, 0.0, 0.0),
        bbox=((0, 3), (0, 3), (0, 3)),
        nearest_branch=None,
        nearest_generation=None,
        max_distance_mm=0.0,
        length_mm=1.0,
        elongation=1.0,
        centreline_voxels=0,
        key=key,
        focus_zyx=focus,
    )


def test_next_and_previous_region_wrap_and_move_the_cursor(qtbot):
    case = _hand_case()
    regs = [_region("a", centroid=(1.2, 1.0, 2.0)), _region("b", focus=(2, 3, 4)), _region("c", focus=(1, 1, 1))]
    case.predictions[0].regions = regs
    assert case.step_region(1) == 0 and case.cursor == (1, 1, 2)
    assert case.step_region(1) == 1 and case.cursor == (2, 3, 4)
    assert case.step_region(1) == 2 and case.cursor == (1, 1, 1)
    assert case.step_region(1) == 0
    assert case.step_region(-1) == 2
    assert region_centre(regs[1]) == (2, 3, 4)


def test_region_statuses_and_project_round_trip(qtbot, tmp_path, files):
    loaded = load_case(files["ct"], files["ref"], [files["pred"]])
    case = Case(auto_analyse=False)
    case.apply_loaded(loaded)
    entry = case.predictions[0]
    entry.regions = [_region(k) for k in "abc"]
    case.active_region = 1
    with qtbot.waitSignal(case.regionStatusChanged) as sig:
        case.set_region_status(1, "reference_error")
    assert sig.args == [0, 1, "reference_error"]
    case.set_region_status(2, "flagged")
    assert entry.reviewed_count() == 2
    with pytest.raises(InputError):
        case.set_region_status(0, "bogus")
    case.set_cursor((5, 6, 7))
    case.view_state = {"display": {"window": 350, "level": 40}}
    proj = case.save_project(tmp_path / "sub" / "review.json")
    assert [p.name for p in proj.parent.iterdir()] == ["review.json"]  # atomic: no temp left
    data = json.loads(proj.read_text())
    assert not data["ct"].startswith("/")  # relative to the project
    assert data["predictions"][0]["statuses"] == {"b": "reference_error", "c": "flagged"}

    loaded2, data2 = run_sync(load_project, proj)
    case2 = Case(auto_analyse=False)
    apply_project(case2, loaded2, data2, str(proj))
    assert case2.cursor == (5, 6, 7)
    assert case2.predictions[0].statuses == {"b": "reference_error", "c": "flagged"}
    assert case2.view_state["display"]["window"] == 350
    np.testing.assert_array_equal(case2.predictions[0].mask, entry.mask)
    assert not case2.modified


def test_in_app_predictions_are_written_beside_the_project(qtbot, tmp_path, files):
    case = Case(auto_analyse=False)
    case.apply_loaded(load_case(files["ct"]))
    made = PredictionEntry(
        "model out", LabelVolume(np.ones(case.ct.shape, bool), case.ct.geometry), source="model:x.pt"
    )
    case.add_prediction(made)
    proj = case.save_project(tmp_path / "p.json")
    data = read_project(proj)
    assert data["predictions"][0]["path"].endswith("p_model_out.nii.gz")
    loaded, _ = run_sync(load_project, proj)
    assert loaded.predictions[0].mask.all()


@pytest.mark.parametrize(
    "content,match", [("{not json", "not valid JSON"), ('{"a": 1}', "not an Airway Studio project")]
)
def test_bad_project_files(tmp_path, content, match):
    p = tmp_path / "x.json"
    p.write_text(content)
    with pytest.raises(InputError, match=match):
        read_project(p)


def test_demo_has_fp_and_fn_of_every_kind(tiny_demo):
    d = tiny_demo
    ref, pred = d.reference.mask, d.prediction.mask
    fp, fn = pred & ~ref, ref & ~pred
    assert fn.sum() > 0 and fp.sum() > 0
    ph = d.phantom
    omitted_only = ph.full_label.mask & ~ph.label.mask
    assert omitted_only.any() and (pred[omitted_only]).all()  # omitted branches are FP (reference errors)
    assert d.leak_centre_zyx is not None and fp[d.leak_centre_zyx]
    assert len(d.missed) == 2 and d.thickened is not None
    # every FN voxel lies in a missed branch's tube, and each missed branch adds some
    from app.demo import _grid, _tube

    by_id = {b.id: b for b in ph.branches}
    union = np.zeros(ref.shape, bool)
    for bid in d.missed:
        sl, inside = _tube(_grid(ph), by_id[bid], 1.0)
        tube = np.zeros(ref.shape, bool)
        tube[sl] = inside
        assert (fn & tube).sum() > 5
        union |= tube
    assert not (fn & ~union).any()
    from app.demo import TEST_PARAMS, make_demo

    again = make_demo(TEST_PARAMS)
    np.testing.assert_array_equal(again.prediction.mask, pred)  # deterministic


def test_job_reports_result_error_and_cancel(qtbot):
    def ok(x, progress, cancel):
        progress(1, 2, "half")
        progress(2, 2, "done")
        return x * 2

    job = Job(ok, 21, name="ok")
    with qtbot.waitSignal(job.finished, timeout=5000):
        with qtbot.waitSignal(job.result) as res:
            job.start()
    assert res.args == [42] and job.state == "done"

    def boom(progress, cancel):
        raise ValueError("bad thing")

    job = Job(boom)
    with qtbot.waitSignal(job.error, timeout=5000) as err:
        job.start()
    assert isinstance(err.args[0], ValueError) and "bad thing" in err.args[1]

    started = threading.Event()

    def slow(progress, cancel):
        started.set()
        while not cancel.is_set():
            cancel.wait(0.01)
        raise Cancelled()

    job = Job(slow)
    with qtbot.waitSignal(job.cancelled, timeout=5000):
        job.start()
        started.wait(5)
        job.cancel()
    assert job.state == "cancelled"


def test_sagittal_slices_from_the_x_major_copy_are_the_same(qtbot, monkeypatch):
    import app.review.case as case_mod
    from app.review.slice_view import extract_slice

    monkeypatch.setattr(case_mod, "SAGITTAL_COPY_MIN_BYTES", 0)
    case = _hand_case()
    qtbot.waitUntil(lambda: case._ct_by_x is not None, timeout=5000)
    for i in range(case.ct.shape[2]):
        np.testing.assert_array_equal(case.ct_slice("sagittal", i), extract_slice(case.ct.array, "sagittal", i))


def test_label_selector_picks_the_airway_of_a_cip_map(shared_data):
    cip = shared_data / "cip"
    loaded = load_case(cip / "ct-64.nrrd", cip / "lm-64.nrrd", reference_selector="bits:8:2")
    assert loaded.reference.voxel_count() == 555  # trachea, main and lobar bronchi (data README)
    everything = load_case(cip / "ct-64.nrrd", cip / "lm-64.nrrd")
    assert everything.reference.voxel_count() > 555  # nonzero: the whole lung label map


@pytest.mark.slow
def test_analysis_in_the_child_process_equals_the_thread_one(tiny_demo):
    from app.review.analysis_runner import run_review_analysis
    from core.review import Session

    s = Session(tiny_demo.phantom.ct, tiny_demo.reference, [tiny_demo.prediction])
    here, tree_here = run_review_analysis(s.analysis_job(copy=True), in_process=False)
    there, tree_there = run_review_analysis(s.analysis_job(copy=True), in_process=True)
    assert tree_there.generations == tree_here.generations and len(tree_here.generations) > 3
    np.testing.assert_array_equal(tree_there.branch_map, tree_here.branch_map)
    (a,) = here.predictions.values()
    (b,) = there.predictions.values()
    assert json.dumps(a.metrics.as_dict(), sort_keys=True, default=str) == json.dumps(
        b.metrics.as_dict(), sort_keys=True, default=str
    )
    assert [r.id for r in a.regions] == [r.id for r in b.regions] and len(a.regions) >= 4

    # a re-analysis against the same reference: the child gets the tree as the bytes it sent, and the
    # result keeps the session's tree object instead of a copy of it
    s.apply_analysis(there)
    job = s.analysis_job(copy=True, only_stale=False)
    assert job.tree is there.tree
    again, new_tree = run_review_analysis(job, in_process=True)
    assert again.tree is there.tree and new_tree is None
    (c,) = again.predictions.values()
    assert [(r.key, r.id) for r in c.regions] == [(r.key, r.id) for r in b.regions]
    assert [g.key for g in c.groups] == [g.key for g in b.groups] and len(c.groups) >= 1


@pytest.mark.parametrize("shared_memory", [True, False], ids=["shared-memory", "through-the-pipe"])
def test_a_child_result_comes_back_in_slices_equal_to_the_whole(tiny_demo, monkeypatch, shared_memory):
    """What crosses from the analysis child is unpickled a slice at a time (the GIL changes hands
    between slices): put together again, it is the result the child made, regions in order."""
    import os
    import pickle

    from app.review import analysis_runner
    from core.review import Session

    s = Session(tiny_demo.phantom.ct, tiny_demo.reference, [tiny_demo.prediction])
    whole = s.analysis_job(copy=True).run()
    (a,) = whole.predictions.values()
    assert len(a.regions) >= 4
    monkeypatch.setattr(analysis_runner, "REGION_SLICE", 2)
    packed = pickle.loads(pickle.dumps(analysis_runner._pack(whole, tree_reused=False, shared_memory=shared_memory)))
    assert list(packed.slices.values()) == [(len(a.regions) + 1) // 2]
    assert len(packed.regions) == (len(a.regions) + 1) // 2 and packed.result.tree is None
    assert (packed.regions.name is not None) == shared_memory
    # the regions' bytes go through the pipe only without shared memory
    assert (len(pickle.dumps(packed.regions)) < packed.regions.nbytes) == shared_memory
    back = analysis_runner._unpack(packed, job_tree=None)
    (b,) = back.predictions.values()
    assert [(r.key, r.id, r.voxels) for r in b.regions] == [(r.key, r.id, r.voxels) for r in a.regions]
    assert all(np.array_equal(x.coords, y.coords) for x, y in zip(a.regions, b.regions))
    assert back.tree.branches == whole.tree.branches  # the new tree comes whole
    np.testing.assert_array_equal(back.tree.branch_map, whole.tree.branch_map)
    if shared_memory:
        assert not os.path.exists(f"/dev/shm/{packed.regions.name}")  # read once, freed
        assert packed.tree is not None and os.path.exists(f"/dev/shm/{packed.tree.name}")  # kept for the next job
    # the next job names the block the tree came in, and a new tree frees it
    assert analysis_runner._block_of_tree(back.tree) is packed.tree
    reused = analysis_runner._unpack(analysis_runner._pack(whole, tree_reused=True), job_tree=back.tree)
    assert reused.tree is back.tree  # a reused tree does not come back: the caller's object
    other = analysis_runner._block_of_tree(whole.tree)
    assert other is not packed.tree
    if shared_memory:
        assert packed.tree is not None and not os.path.exists(f"/dev/shm/{packed.tree.name}")
    analysis_runner._forget_tree_block()
    assert other.name is None or not os.path.exists(f"/dev/shm/{other.name}")


@pytest.mark.slow
def test_cancelling_work_in_the_child_process_kills_it_and_the_next_call_works(tiny_demo):
    import time

    from app.review.analysis_runner import run_review_analysis
    from app.workers import call_in_process
    from core.review import Session

    ev = threading.Event()
    threading.Timer(0.3, ev.set).start()
    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        call_in_process(time.sleep, 30, cancel=ev)
    assert time.monotonic() - t0 < 10  # not the 30 s the child was asked to sleep
    job = Session(None, tiny_demo.reference).analysis_job(copy=True)
    assert run_review_analysis(job, in_process=True)[1].generations


@pytest.mark.slow
def test_the_selected_region_stays_selected_when_a_reanalysis_reorders_the_list(qtbot, tiny_demo):
    case = Case()
    case.set_ct(tiny_demo.phantom.ct)
    case.set_reference(tiny_demo.reference.with_array(tiny_demo.reference.mask.copy()))  # edited below
    case.add_prediction(PredictionEntry("p", tiny_demo.prediction))
    qtbot.waitUntil(lambda: bool(case.regions()) and not case.busy, timeout=60000)
    first_fp = next(i for i, r in enumerate(case.regions()) if r.kind == "FP")  # FN regions are listed first
    case.go_to_region(first_fp)
    key = case.active_region_key
    assert key is not None and case.active_region == first_fp
    # a large reference blob far from the airway: a new FN region, the largest, listed first
    free = np.argwhere(~tiny_demo.prediction.mask & ~case.session.reference.array)
    z, y, x = (int(v) for v in free[0])
    case.session.paint(
        "reference",
        Box((z, y, x), (z + 3, y + 3, x + 3)),
        ~case.predictions[0].mask[z : z + 3, y : y + 3, x : x + 3],
        True,
    )
    qtbot.waitUntil(lambda: not case.stale and not case.busy, timeout=60000)
    regs = case.regions()
    assert case.active_region_key == key and regs[case.active_region].key == key
    assert case.active_region == first_fp + 1  # the list moved under it; the selection did not
