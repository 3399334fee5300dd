"""Training-free airway extraction (core.growing): phantoms always, real CT goals of issue 11 when ../shared/data exists."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
from scipy import ndimage

from core.errors import Cancelled, InputError
from core.growing import find_trachea, grow_airway, load_params
from core.volume import Geometry, IntensityVolume


@pytest.fixture(scope="module")
def phantom():
    from core.phantom import make_phantom

    return make_phantom((64, 64, 64), spacing=(1.5, 1.5, 2.0), seed=0)


@pytest.fixture(scope="module")
def phantom_result(phantom):
    return grow_airway(phantom.ct)


def _components(mask: np.ndarray) -> int:
    import cc3d

    return int(cc3d.connected_components(mask, connectivity=26).max())


def test_phantom_tree_is_grown_from_its_trachea(phantom, phantom_result):
    mask, label = phantom_result.mask.mask, phantom.label.mask
    assert phantom_result.mask.shape == phantom.ct.shape
    assert _components(mask) == 1
    # the trachea detector's lumen lies in the phantom's airway
    trachea = phantom_result.trachea.mask.mask
    assert trachea.any() and (trachea & label).sum() / trachea.sum() > 0.8
    assert (mask & trachea).sum() == trachea.sum()
    # precision: what is grown is airway (lumen), not lung
    assert (mask & label).sum() / mask.sum() > 0.75
    # recall 0.48 before the phantom had textbook anatomy (issue 26), 0.28 since: its label now holds the
    # lobar, segmental and sub-segmental bronchi inside this crop (~4000 more voxels from generation 3 on),
    # where region growing stopped before too (0-6 % of generation 3 then, 0 % now)
    assert (mask & label).sum() / label.sum() > 0.25
    # never above the trachea's top (z grows towards the head in this phantom)
    top = int(round(phantom_result.trachea.top_zyx[0]))
    assert not mask[top + 1 :].any()


def test_phantom_result_does_not_depend_on_orientation(phantom, phantom_result):
    flipped = np.ascontiguousarray(phantom.ct.array[::-1, :, ::-1])
    geo = phantom.ct.geometry
    n = phantom.ct.shape
    origin = geo.index_to_world([n[0] - 1, 0, n[2] - 1])
    direction = np.diag([-1.0, 1.0, -1.0]).ravel()
    ct = IntensityVolume(flipped, Geometry(geo.spacing, tuple(origin), tuple(direction)), name="flipped")
    result = grow_airway(ct)
    back = result.mask.mask[::-1, :, ::-1]
    assert back.sum() == phantom_result.mask.mask.sum()
    assert (back == phantom_result.mask.mask).all()


def test_phantom_without_airway_has_no_trachea(phantom):
    arr = phantom.ct.array.copy()
    arr[phantom.full_label.mask] = 40  # the airway lumen filled with soft tissue
    ct = dataclasses.replace(phantom.ct, array=arr, name="filled")
    with pytest.raises(InputError, match="no trachea found in filled"):
        find_trachea(ct)


@pytest.mark.parametrize("value", [None, 0, 1, -1024])
def test_volumes_without_air_have_no_trachea(value):
    if value is None:
        ct = IntensityVolume(np.zeros((1, 1, 1), np.int16), name="empty")
    else:
        ct = IntensityVolume(np.full((40, 48, 48), value, np.int16), name=f"all{value}")
    with pytest.raises(InputError, match="no trachea found in"):
        grow_airway(ct)


def test_progress_ends_at_total_and_cancel_stops(phantom):
    calls = []
    grow_airway(phantom.ct, progress=lambda d, t, m: calls.append((d, t, m)))
    assert calls[-1][0] == calls[-1][1]
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)
    assert all(isinstance(c[2], str) and c[2] for c in calls)
    stop = threading.Event()

    def cancel_midway(done, total, msg):
        if done >= 2:
            stop.set()

    with pytest.raises(Cancelled):
        grow_airway(phantom.ct, progress=cancel_midway, cancel=stop)


def test_preset_is_data_and_overridable(tmp_path):
    params = load_params(overrides={"growing": {"step_hu": 5}})
    assert params["growing"]["step_hu"] == 5
    assert params["growing"]["start_hu"] == load_params()["growing"]["start_hu"]
    bad = tmp_path / "bad.json"
    bad.write_text("{}", encoding="utf-8")
    from core.errors import ConfigError

    with pytest.raises(ConfigError):
        load_params(bad)


# -- real CT (goals of issue 11) ---------------------------------------------------------


@pytest.fixture(scope="module")
def chest(shared_data):
    from core.io import read_ct

    ct = read_ct(shared_data / "chest_ct_dicom")
    return ct, grow_airway(ct)


@pytest.mark.slow
def test_chest_ct_tree_goals(chest):
    import cc3d

    from core.preprocess import body_mask
    from core.tree import parse_tree

    ct, result = chest
    mask = result.mask.mask
    assert _components(mask) == 1
    assert result.volume_ml < 80
    assert not (mask & ~body_mask(ct.array)).any()
    assert (mask & result.trachea.mask.mask).sum() >= 0.9 * result.trachea.mask.mask.sum()
    # the output is one 26-connected piece: parse it as such
    tree = parse_tree(cc3d.largest_k(mask, 1, connectivity=26) > 0, ct.spacing_zyx, connectivity=26)
    assert tree.n_branches >= 18
    assert tree.max_generation >= 4
    trachea = tree.branch(tree.trachea)
    assert len(trachea.children) == 2, "trachea, then both main bronchi"

    def world_x(branch_id: int) -> float:
        pts = tree.centreline_zyx[tree.centreline_branch == branch_id]
        return float(ct.geometry.index_to_world(pts.mean(0))[0])

    # LPS: world x grows towards the patient's left
    right, left = sorted(trachea.children, key=world_x)
    assert len(tree.branch(left).children) >= 2, "left upper and lower lobe bronchi"
    right_children = tree.branch(right).children
    assert len(right_children) >= 2, "right upper lobe bronchus and bronchus intermedius"
    assert max(len(tree.branch(c).children) for c in right_children) >= 2, "right middle and lower lobe bronchi"


@pytest.mark.slow
def test_cip_dice(shared_data):
    from core.io import read_ct, read_label

    ct = read_ct(shared_data / "cip" / "ct-64.nrrd")
    ref = read_label(shared_data / "cip" / "lm-64.nrrd", "bits:8:2", reference=ct).mask
    mask = grow_airway(ct).mask.mask
    dice = 2 * (mask & ref).sum() / (mask.sum() + ref.sum())
    assert dice >= 0.60, f"Dice {dice:.2f} against the CIP airway label (issue 11's goal: 0.60)"
    # what the label does not hold is its edge at 4 mm (partial volume), not a leak into the lung
    near = ndimage.binary_dilation(ref, np.ones((3, 3, 3), bool))
    assert not (mask & ~near).any()
    assert (mask & ref).sum() / mask.sum() > 0.7


@pytest.mark.slow
def test_aorta_crop_trachea_and_main_bronchi_without_leak(shared_data):
    from core.io import read_ct
    from core.tree import parse_tree

    ct = read_ct(shared_data / "totalseg" / "aorta_ct_cropped.nii.gz")
    result = grow_airway(ct)
    mask = result.mask.mask
    assert result.volume_ml < 50, "no growth into the lung"
    assert np.median(ct.array[mask]) < -600
    tree = parse_tree(mask, ct.spacing_zyx, connectivity=26)
    assert len(tree.branch(tree.trachea).children) == 2


@pytest.mark.slow
def test_abdomen_and_cropped_chest_have_no_trachea(shared_data, chest):
    from core.io import read_ct

    abdomen = read_ct(shared_data / "totalseg" / "example_ct.nii.gz")
    with pytest.raises(InputError, match="no trachea found in example_ct"):
        find_trachea(abdomen)
    ct, result = chest
    # below the carina: slices under the lower end of the detected trachea (z grows to the head here)
    carina = int(result.trachea.bottom_zyx[0])
    below = dataclasses.replace(ct, array=np.ascontiguousarray(ct.array[:carina]), name="below_carina")
    with pytest.raises(InputError, match="no trachea found in below_carina"):
        find_trachea(below)
