"""The output gate (core.gate), model cards (core.models.card) and `airway segment --method/--strict` (issue 11)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.errors import InputError, QualityError
from core.volume import IntensityVolume


@pytest.fixture(scope="module")
def phantom():
    """A phantom with air in front of a chest wall (its own view is cropped inside the chest, lungs to the border)."""
    import dataclasses

    from core.phantom import make_phantom

    ph = make_phantom((64, 64, 64), spacing=(1.5, 1.5, 2.0), seed=0)
    arr = ph.ct.array.copy()
    arr[:, :4] = -1000
    arr[:, 4:7] = 40  # a chest wall between that air and the lungs
    return dataclasses.replace(ph, ct=dataclasses.replace(ph.ct, array=arr))


@pytest.fixture(scope="module")
def trachea(phantom):
    from core.growing import find_trachea

    return find_trachea(phantom.ct)


def _outside_air(ct: IntensityVolume) -> np.ndarray:
    """Air outside the body along the front of the volume: what the demo model returned on real CT."""
    from core.preprocess import body_mask

    outside = (ct.array < -950) & ~body_mask(ct.array)
    mask = np.zeros(ct.shape, bool)
    mask[:, :3] = outside[:, :3]
    return mask


def test_the_true_airway_passes(phantom, trachea):
    from core.gate import check_mask

    report = check_mask(phantom.ct, phantom.label.mask, trachea)
    assert report.passed, report.problems
    assert report.touches_trachea and report.outside_fraction <= 0.05
    assert report.warning("trained on x") == ""


def test_chest_wall_air_fails_and_names_the_training_data(phantom, trachea):
    from core.gate import check_mask, enforce

    mask = _outside_air(phantom.ct)
    assert mask.sum() > 100
    report = check_mask(phantom.ct, mask, trachea)
    assert not report.passed
    assert report.touches_trachea is False
    assert report.outside_fraction > 0.5
    text = report.warning("trained on 15 generated airway phantoms (synthetic)")
    assert "misses the trachea" in text and "outside the lungs" in text and "phantoms" in text
    assert enforce(report, "trained on phantoms", strict=False) == report.warning("trained on phantoms")
    with pytest.raises(QualityError) as info:
        enforce(report, "trained on phantoms", strict=True)
    assert info.value.exit_code == 3


def test_a_leak_of_more_than_five_percent_fails(phantom, trachea):
    from core.gate import check_mask

    mask = phantom.label.mask.copy()
    leak = _outside_air(phantom.ct)
    # attach enough outside air to the tree to pass 5 % of the mask, keeping the trachea
    n_leak = int(0.2 * mask.sum())
    idx = np.argwhere(leak)[:n_leak]
    mask[tuple(idx.T)] = True
    report = check_mask(phantom.ct, mask, trachea)
    assert report.touches_trachea
    assert not report.passed and "outside the lungs" in report.problems[-1]


def test_an_empty_mask_fails(phantom, trachea):
    from core.gate import check_mask

    assert not check_mask(phantom.ct, np.zeros(phantom.ct.shape, bool), trachea).passed


@pytest.mark.parametrize("value", [0, 1])
def test_ct_without_air_is_refused(value):
    from core.gate import require_air

    with pytest.raises(InputError, match="no air"):
        require_air(IntensityVolume(np.full((8, 8, 8), value, np.int16), name="flat"))


# -- model cards ---------------------------------------------------------------------------


def test_card_text_and_summary(tmp_path):
    from core.models.card import card_from_dataset, card_lines, card_summary, get_card

    (tmp_path / "phantoms.json").write_text(json.dumps({"difficulty": "normal"}), encoding="utf-8")
    card = card_from_dataset(tmp_path, [(3.0, 2.5, 2.5)] * 4, 3, 1, {"td": 95.0, "bd": 90.0, "loss": 0.1})
    assert card["kind"] == "synthetic" and card["cases"] == {"train": 3, "validation": 1}
    assert card["spacing_mm"] == [2.5, 2.5, 3.0]
    assert card["validation"] == {"td": 95.0, "bd": 90.0}
    header = {"card": card}
    assert get_card(header) is card
    assert "synthetic" in card_summary(header) and "2.5 x 2.5 x 3 mm" in card_summary(header)
    assert any(line.startswith("validation: TD 95.0") for line in card_lines(header))
    assert "not recorded" in card_summary({})
    (tmp_path / "real").mkdir()
    real = card_from_dataset(tmp_path / "real", [], 2, 0)
    assert real["kind"] == "real" and real["spacing_mm"] is None


def test_shipped_demo_model_has_a_card():
    from core.models.card import card_summary, get_card
    from core.models.checkpoint import load_checkpoint
    from core.resources import resource_path

    path = resource_path("models", "demo_wingsnet.pt", must_exist=False)
    if not path.exists():
        pytest.skip("demo model not installed")
    header = load_checkpoint(path).header
    card = get_card(header)
    assert card is not None and card["kind"] == "synthetic"
    assert "phantom" in card_summary(header)


def test_models_command_prints_the_card(capsys):
    from core.cli import main
    from core.resources import resource_path

    path = resource_path("models", "demo_wingsnet.pt", must_exist=False)
    if not path.exists():
        pytest.skip("demo model not installed")
    assert main(["models", "--checkpoint", str(path)]) == 0
    out = capsys.readouterr().out
    assert "kind: synthetic" in out and "held-out:" in out
    assert main(["models", "--checkpoint", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["card"]["kind"] == "synthetic"


# -- airway segment --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phantom_file(phantom, tmp_path_factory):
    from core.io import write_volume

    path = tmp_path_factory.mktemp("ct") / "chest.nii.gz"
    write_volume(phantom.ct, path)
    return path


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    """An untrained tiny U-Net: whatever it returns is not an airway, so the gate must flag it
    (one 64^3 window: the CLI path in about a second)."""
    import torch

    from core.models.checkpoint import save_checkpoint
    from core.models.registry import build_model
    from core.preprocess import Preprocessing

    torch.manual_seed(0)
    model = build_model("unet3d", base_channels=2, levels=2)
    path = tmp_path_factory.mktemp("ckpt") / "untrained.pt"
    save_checkpoint(
        path, model, {"preprocessing": Preprocessing(crop="none").to_dict(), "inference": {"window": 64, "step": 64}}
    )
    return path


def test_segment_defaults_to_region_growing_without_a_model(phantom_file, tmp_path, capsys):
    from core.cli import main
    from core.io import read_volume

    out = tmp_path / "m.nii.gz"
    assert main(["segment", "-i", str(phantom_file), "-o", str(out), "--json", "-q"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["method"] == "region-growing" and result["warnings"] == []
    mask = read_volume(out)
    assert mask.shape == (64, 64, 64) and result["voxels"] == int((mask.array > 0).sum()) > 0


@pytest.mark.slow
def test_segment_with_a_failing_model_warns_and_strict_exits_3(phantom_file, random_model, tmp_path, capsys):
    from core.cli import main

    out = tmp_path / "m.nii.gz"
    common = ["segment", "-i", str(phantom_file), "--model", str(random_model), "--backend", "torch", "-q"]
    assert main(common + ["-o", str(out)]) == 0
    captured = capsys.readouterr()
    text = captured.out + captured.err  # warnings go to stderr, the result line to stdout
    assert "chest: warning: this mask does not look like the CT's airway" in text
    assert "no model card" in text
    assert main(common + ["-o", str(tmp_path / "j.nii.gz"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["method"] == "model" and result["warnings"] and result["gate"]["passed"] is False
    strict = tmp_path / "strict.nii.gz"
    assert main(common + ["-o", str(strict), "--strict"]) == 3
    assert "error:" in capsys.readouterr().err
    assert not strict.exists()


@pytest.mark.slow
def test_segment_and_gate_predicts_gates_and_returns_the_warnings(phantom, random_model):
    """The one glue the CLI, the app's child process and its thread fallback call (core.segmentation.route)."""
    from core.segmentation import Predictor, segment_and_gate

    predictor = Predictor(random_model, device="cpu", backend="torch")
    messages: list[str] = []
    out = segment_and_gate(predictor, phantom.ct, progress=lambda d, t, m: messages.append(m))
    assert out.gate is not None and out.gate.passed is False and out.gate_dict() == out.gate.as_dict()
    assert any(w.startswith("this mask does not look like the CT's airway") for w in out.warnings)
    assert "no model card" in out.warnings[-1]
    assert messages[-1] == "Checking the mask (trachea, lungs)" and "windows" in messages[0]
    with pytest.raises(QualityError):
        segment_and_gate(predictor, phantom.ct, strict=True)
    ungated = segment_and_gate(predictor, phantom.ct, gate=False)
    assert ungated.gate is None and not any("does not look like" in w for w in ungated.warnings)
    assert np.array_equal(ungated.prediction.mask.array, out.prediction.mask.array)


@pytest.mark.parametrize("method", ["region-growing", "model"])
@pytest.mark.parametrize("value", [0, 1])
def test_segment_ct_without_air_exits_2_and_writes_nothing(method, value, random_model, tmp_path, capsys):
    from core.cli import main
    from core.io import write_volume

    ct = tmp_path / "flat.nii.gz"
    write_volume(IntensityVolume(np.full((24, 24, 24), value, np.int16)), ct)
    out = tmp_path / "m.nii.gz"
    args = ["segment", "-i", str(ct), "-o", str(out), "--method", method, "-q"]
    if method == "model":
        args += ["--model", str(random_model), "--backend", "torch"]
    assert main(args) == 2
    assert "no air" in capsys.readouterr().err
    assert not out.exists()


def test_segment_without_trachea_exits_2(tmp_path, capsys):
    from core.cli import main
    from core.io import write_volume

    arr = np.full((40, 48, 48), 40, np.int16)
    arr[5:35, 10:40, 8:40] = -850  # lung-like air, far wider than a trachea
    arr[:, :, :4] = -1000  # air outside the body: the CT passes the input checks, then finds no trachea
    ct = tmp_path / "odd.nii.gz"
    write_volume(IntensityVolume(arr), ct)
    out = tmp_path / "m.nii.gz"
    assert main(["segment", "-i", str(ct), "-o", str(out), "-q"]) == 2
    assert "no trachea found in" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_chest_wall_air_on_real_ct_is_flagged(shared_data):
    """The demo model's failure on chest_ct_dicom (37 mL of anterior chest-wall air) rebuilt as a mask."""
    from core.gate import check_mask
    from core.io import read_ct

    ct = read_ct(shared_data / "chest_ct_dicom")
    report = check_mask(ct, _outside_air(ct))
    assert report.trachea_found and not report.passed
    assert report.touches_trachea is False and report.outside_fraction > 0.9


@pytest.mark.slow
def test_the_gate_finds_the_trachea_of_a_cropped_15_mm_ct(shared_data):
    """The aorta crop (1.5 mm, lungs cut by the crop): the gate works on the CT's own grid there,
    and a body outline picked at 3 mm once opened the trachea's wall and lost it."""
    from core.gate import check_mask
    from core.growing import grow_airway
    from core.io import read_ct

    ct = read_ct(shared_data / "totalseg" / "aorta_ct_cropped.nii.gz")
    report = check_mask(ct, grow_airway(ct).mask.mask)
    assert report.trachea_found and report.touches_trachea
    assert report.passed, report.problems


@pytest.mark.parametrize("name", ["realct_wingsnet.pt", "demo_wingsnet.pt"])
def test_demo_model_finds_the_trachea_of_the_demo_case_with_its_defaults(name):
    """Issue 11: with the app's defaults (the checkpoint's own window, step and spacing) the shipped
    models must find the demo case's trachea; on the native 1.4 mm grid it covered 38 % of it."""
    from app.demo import TEST_PARAMS, make_demo
    from core.resources import resource_path
    from core.segmentation import Predictor
    from core.volume import to_canonical

    path = resource_path("models", name, must_exist=False)
    if not path.exists():
        pytest.skip(f"{name} not installed")
    demo = make_demo(TEST_PARAMS)
    ct, _ = to_canonical(demo.phantom.ct)
    ref, _ = to_canonical(demo.reference)
    top = int(np.flatnonzero(ref.mask.any(axis=(1, 2))).max())
    trachea = ref.mask.copy()
    trachea[: top - 8] = False  # the upper 9 slices of the tree (z grows to the head)...
    # ...less the right upper lobe's apical branches, which the phantom's anatomy sends up beside it
    t = next(b for b in demo.phantom.branches if b.name == "Trachea")
    idx = np.argwhere(trachea)
    xy = ct.geometry.index_to_world(idx)[:, :2] - np.asarray(t.end)[:2]
    trachea[tuple(idx[np.hypot(xy[:, 0], xy[:, 1]) > t.radius_mm + 3.0].T)] = False
    predictor = Predictor(path, device="cpu", backend="torch", threads=1)
    assert predictor.spacing == (2.5, 2.5, 3.0)
    mask = predictor.predict(ct).mask.mask
    assert (mask & trachea).sum() / trachea.sum() > 0.8
    # 0.85 before the phantom had textbook anatomy (issue 26): the reference now holds thin segmental and
    # sub-segmental bronchi inside this crop, which models trained at 2.5 mm on the older phantoms miss
    # (0.81 and 0.84 measured, 0.89 and 0.91 before; their trachea and main bronchi figures did not move)
    assert 2 * (mask & ref.mask).sum() / (mask.sum() + ref.mask.sum()) > 0.78


def test_shipped_model_is_the_real_ct_one_and_says_what_it_saw():
    from core.models.card import get_card
    from core.models.checkpoint import load_checkpoint
    from core.resources import shipped_model_path

    path = shipped_model_path()
    if path is None:
        pytest.skip("no shipped model installed")
    assert path.name == "realct_wingsnet.pt"
    header = load_checkpoint(path).header
    card = get_card(header)
    assert card["kind"] == "mixed" and "chest_ct_dicom" in card["data"]
    assert card["held_out"]["td"] >= 90 and card["held_out"]["bd"] >= 85
    assert header["inference"]["spacing"] == [2.5, 2.5, 3.0]


@pytest.fixture(scope="module")
def realct_predictor():
    from core.resources import resource_path
    from core.segmentation import Predictor

    path = resource_path("models", "realct_wingsnet.pt", must_exist=False)
    if not path.exists():
        pytest.skip("realct_wingsnet.pt not installed")
    return Predictor(path, device="cpu", backend="torch", threads=2)


@pytest.mark.slow
def test_real_ct_model_finds_the_airway_of_the_real_chest_ct(shared_data, realct_predictor):
    """The case it was trained on (pseudo-labels): trachea and both main bronchi, nothing outside the lungs
    and central airways (the phantom-only model returned chest-wall air there)."""
    import cc3d

    from core.gate import check_mask
    from core.growing import find_trachea
    from core.io import read_ct
    from core.tree import parse_tree

    ct = read_ct(shared_data / "chest_ct_dicom")
    mask = realct_predictor.predict(ct).mask.mask
    report = check_mask(ct, mask)
    assert report.passed and report.outside_fraction < 0.05, report.problems
    trachea = find_trachea(ct).mask.mask
    assert (mask & trachea).sum() / trachea.sum() > 0.9
    tree = parse_tree(cc3d.largest_k(mask, 1, connectivity=26) > 0, ct.spacing_zyx, connectivity=26)
    trachea_branch = tree.branch(tree.trachea)
    assert len(trachea_branch.children) == 2 and tree.n_branches >= 12

    def world_x(branch_id: int) -> float:
        pts = tree.centreline_zyx[tree.centreline_branch == branch_id]
        return float(ct.geometry.index_to_world(pts.mean(0))[0])

    right, left = sorted(trachea_branch.children, key=world_x)  # LPS: x grows to the patient's left
    assert len(tree.branch(left).children) >= 2, "left upper and lower lobe bronchi"
    right_children = tree.branch(right).children
    assert len(right_children) >= 2, "right upper lobe bronchus and bronchus intermedius"
    assert max(len(tree.branch(c).children) for c in right_children) >= 2, "right middle and lower lobe bronchi"


@pytest.mark.slow
def test_real_ct_model_on_held_out_real_cts(shared_data, realct_predictor):
    """Held out of its training: CIP ct-64 (Dice goal 0.60) and the aorta crop (trachea, main bronchi, no leak)."""
    from core.gate import check_mask
    from core.io import read_ct, read_label
    from core.tree import parse_tree

    ct = read_ct(shared_data / "cip" / "ct-64.nrrd")
    ref = read_label(shared_data / "cip" / "lm-64.nrrd", "bits:8:2", reference=ct).mask
    mask = realct_predictor.predict(ct).mask.mask
    assert 2 * (mask & ref).sum() / (mask.sum() + ref.sum()) >= 0.60
    ct = read_ct(shared_data / "totalseg" / "aorta_ct_cropped.nii.gz")
    mask = realct_predictor.predict(ct).mask.mask
    assert check_mask(ct, mask).passed
    assert mask.sum() * ct.geometry.voxel_volume_mm3 / 1000 < 50 and np.median(ct.array[mask]) < -600
    tree = parse_tree(mask, ct.spacing_zyx, connectivity=26)
    assert len(tree.branch(tree.trachea).children) == 2, "trachea, then both main bronchi"
