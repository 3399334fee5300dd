"""core.dataset.open_dataset: every layout, the CSV manifest, unmatched files, refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from dataset_fixtures import make_atm22, make_flat, make_nnunet, make_predictions, tiny_ct, tiny_mask

from core.dataset import open_dataset
from core.errors import InputError
from core.io import write_volume

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_nnunet_layout(tmp_path: Path) -> None:
    root = make_nnunet(tmp_path / "Dataset001_Airway", n_train=5, n_test=2)
    ds = open_dataset(root)
    assert ds.layout == "nnunet"
    assert ds.case_ids == [f"case_{i:03d}" for i in range(7)]
    c = ds.case("case_001")
    assert c.image == root / "imagesTr" / "case_001_0000.nii.gz"
    assert c.reference == root / "labelsTr" / "case_001.nii.gz"
    assert c.reviewed is None and c.split is None and c.subset == "Tr"
    test_case = ds.case("case_006")
    assert test_case.reference is None and test_case.subset == "Ts"
    assert ds.channels == {"0": "CT"} and ds.file_ending == ".nii.gz"
    assert ds.label_selector is None  # airway = 1 and nothing else: nonzero
    assert ds.unmatched == []
    assert ds.state_path == root / "airway_dataset.json"
    assert ds.reviewed_path("case_001") == root / "labelsReviewed" / "case_001.nii.gz"


def test_nnunet_file_ending_and_label_value(tmp_path: Path) -> None:
    root = make_nnunet(tmp_path / "ds", n_train=3, n_test=0, labels={"background": 0, "lung": 1, "Airway": 2})
    stray = root / "labelsTr" / "case_000.mha"  # not the dataset's file ending
    write_volume(tiny_mask(0), stray)
    ds = open_dataset(root)
    assert ds.label_selector == "value:2"
    assert ds.unmatched == [stray]


def test_dataset_json_without_airway_label_is_refused(tmp_path: Path) -> None:
    root = make_nnunet(tmp_path / "ds", n_train=2, n_test=0, labels={"background": 0, "lung": 1})
    with pytest.raises(InputError) as err:
        open_dataset(root)
    text = str(err.value)
    assert "no airway label" in text and "lung: 1" in text and '"airway": 1' in text


def test_atm22_layout_labels_keep_0000(tmp_path: Path) -> None:
    root = make_atm22(tmp_path / "ATM22", n=4)
    ds = open_dataset(root)
    assert ds.layout == "atm22"
    assert ds.case_ids == ["ATM_001", "ATM_002", "ATM_003", "ATM_004"]
    c = ds.case("ATM_002")
    assert c.image is not None and c.image.name == "ATM_002_0000.nii.gz"
    assert c.reference is not None and c.reference.parent.name == "labelsTr"
    assert c.reference.name == "ATM_002_0000.nii.gz"
    assert ds.unmatched == []


def test_flat_folder_and_images_labels_folders(tmp_path: Path) -> None:
    flat = make_flat(tmp_path / "flat", n=3)
    write_volume(tiny_mask(1), flat / "orphan.nii.gz")  # a label without its image
    ds = open_dataset(flat)
    assert ds.layout == "folder" and ds.case_ids == ["c0", "c1", "c2"]
    assert ds.case("c1").reference == flat / "c1.nii.gz"
    assert ds.unmatched == [flat / "orphan.nii.gz"]

    pair = tmp_path / "pair"
    for i in range(2):
        write_volume(tiny_ct(i), pair / "images" / f"p{i}_0000.nii.gz")
        write_volume(tiny_mask(i), pair / "labels" / f"p{i}.nii.gz")
    ds2 = open_dataset(pair)
    assert ds2.layout == "folder" and ds2.case_ids == ["p0", "p1"]
    assert ds2.case("p0").reference == pair / "labels" / "p0.nii.gz"


def test_label_only_folder(tmp_path: Path) -> None:
    root = tmp_path / "labels_only"
    for i in range(3):
        write_volume(tiny_mask(i), root / f"L{i}.nii.gz")
    ds = open_dataset(root)
    assert ds.case_ids == ["L0", "L1", "L2"]
    assert all(c.image is None and c.reference is not None for c in ds.cases)


def test_prediction_folders_one_model_each_and_unmatched(tmp_path: Path) -> None:
    root = make_nnunet(tmp_path / "ds", n_train=4, n_test=0)
    make_predictions(root / "modelA", ["case_000", "case_001"])
    make_predictions(root / "preds" / "modelB", ["case_002"], suffix="_0000")  # ATM'22 teams' naming
    make_predictions(root / "preds" / "modelB", ["case_003"], suffix="_airway")  # airway segment before the rule
    make_predictions(root / "modelA", ["nope_9"])
    outside = make_predictions(tmp_path / "elsewhere" / "modelC", ["case_003", "zzz"])
    ds = open_dataset(root, predictions=[outside])
    assert ds.models == ["modelA", "modelB", "modelC"]
    assert ds.case("case_000").predictions == {"modelA": root / "modelA" / "case_000.nii.gz"}
    assert ds.case("case_002").predictions["modelB"].name == "case_002_0000.nii.gz"
    assert set(ds.case("case_003").predictions) == {"modelB", "modelC"}
    assert sorted(p.name for p in ds.unmatched) == ["nope_9.nii.gz", "zzz.nii.gz"]
    named = open_dataset(root, predictions=[f"mine={outside}"])
    assert "mine" in named.models


def test_label_version_best(tmp_path: Path) -> None:
    root = make_flat(tmp_path / "flat", n=2)
    write_volume(tiny_mask(3), root / "labelsReviewed" / "c1.nii.gz")
    ds = open_dataset(root)
    c = ds.case("c1")
    assert c.reviewed == root / "labelsReviewed" / "c1.nii.gz"
    assert c.label() == c.reviewed and c.label("original") == root / "c1.nii.gz"
    assert ds.case("c0").label("best") == root / "c0.nii.gz" and ds.case("c0").label("reviewed") is None
    with pytest.raises(InputError):
        c.label("final")
    with pytest.raises(InputError, match="No case 'c9'"):
        ds.case("c9")


def test_csv_manifest(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for i in range(3):
        write_volume(tiny_ct(i), data / "ct" / f"s{i}.nii.gz")
        write_volume(tiny_mask(i), data / "ref" / f"s{i}.nii.gz")
    make_predictions(data / "unet", ["s0", "s1"])
    manifest = data / "cohort.csv"
    manifest.write_text(
        "case,ct,reference,unet\n"
        "s0,ct/s0.nii.gz,ref/s0.nii.gz,unet/s0.nii.gz\n"
        f"s1,{data / 'ct' / 's1.nii.gz'},ref/s1.nii.gz,unet/s1.nii.gz\n"
        "s2,ct/s2.nii.gz,ref/missing.nii.gz,\n"
    )
    ds = open_dataset(manifest)
    assert ds.layout == "csv" and ds.root == data and ds.source == manifest
    assert ds.case_ids == ["s0", "s1", "s2"]
    assert ds.case("s1").image == data / "ct" / "s1.nii.gz"
    assert ds.case("s0").predictions == {"unet": data / "unet" / "s0.nii.gz"}
    assert ds.case("s2").reference is None
    assert len(ds.missing) == 1 and "line 4" in ds.missing[0] and "missing.nii.gz" in ds.missing[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "empty"),
        ("name,image\nx,y\n", "no 'case'"),
        ("case,ct\na,x.nii.gz\na,y.nii.gz\n", "listed twice"),
        ("case,ct\n../evil,x.nii.gz\n", "cannot be a file name"),
    ],
)
def test_csv_manifest_refusals(tmp_path: Path, text: str, expected: str) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(text)
    with pytest.raises(InputError, match=expected):
        open_dataset(manifest)


def test_empty_or_unknown_folder_says_what_is_expected(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("hi")
    for folder in (empty, tmp_path / "docs"):
        with pytest.raises(InputError) as err:
            open_dataset(folder)
        assert "imagesTr" in str(err.value) and "CSV manifest" in str(err.value)
    with pytest.raises(InputError, match="No such dataset"):
        open_dataset(tmp_path / "nothing")
    (tmp_path / "only_images" / "imagesTr").mkdir(parents=True)
    with pytest.raises(InputError, match="No case found"):
        open_dataset(tmp_path / "only_images")


def test_cases_in_natural_order(tmp_path: Path) -> None:
    root = tmp_path / "nat"
    for i in (10, 2, 1):
        write_volume(tiny_mask(i), root / f"ATM_{i}.nii.gz")
    assert open_dataset(root).case_ids == ["ATM_1", "ATM_2", "ATM_10"]


@pytest.mark.skipif(not (SHARED / "atm22").is_dir(), reason="../shared/data/atm22 is absent")
def test_real_atm22_files_in_an_atm22_shaped_folder(tmp_path: Path) -> None:
    """ATM'22 as shipped (labelsTr keeps _0000) made of symlinks to the real trees; the second team's
    tree is a model folder beside it."""
    yang = SHARED / "atm22" / "preds_YangLab" / "ATM_305_0000.nii.gz"
    timi = SHARED / "atm22" / "preds_timi" / "ATM_305_0000.nii.gz"
    root = tmp_path / "ATM22"
    (root / "labelsTr").mkdir(parents=True)
    (root / "preds_timi").mkdir()
    os.symlink(yang, root / "labelsTr" / "ATM_305_0000.nii.gz")
    os.symlink(timi, root / "preds_timi" / "ATM_305_0000.nii.gz")
    ds = open_dataset(root)
    assert ds.layout == "atm22" and ds.case_ids == ["ATM_305"]
    c = ds.case("ATM_305")
    assert c.image is None and c.reference == root / "labelsTr" / "ATM_305_0000.nii.gz"
    assert c.predictions == {"preds_timi": root / "preds_timi" / "ATM_305_0000.nii.gz"}
    assert ds.unmatched == []


def test_nnunet_v1_labels_and_a_second_channel(tmp_path: Path) -> None:
    root = make_nnunet(tmp_path / "ds", n_train=2, n_test=0, labels={"0": "background", "1": "airway"})
    meta = json.loads((root / "dataset.json").read_text())
    meta["channel_names"] = {"0": "CT", "1": "lung mask"}
    (root / "dataset.json").write_text(json.dumps(meta))
    for i in range(2):
        write_volume(tiny_mask(i), root / "imagesTr" / f"case_{i:03d}_0001.nii.gz")
    write_volume(tiny_mask(5), root / "imagesTr" / "case_009_0001.nii.gz")  # a channel without its case
    ds = open_dataset(root)
    assert ds.case_ids == ["case_000", "case_001"] and ds.label_selector is None
    assert ds.channels == {"0": "CT", "1": "lung mask"}
    assert ds.case("case_000").image == root / "imagesTr" / "case_000_0000.nii.gz"
    assert ds.unmatched == [root / "imagesTr" / "case_009_0001.nii.gz"]


def test_an_image_without_channel_suffix_is_listed(tmp_path: Path) -> None:
    root = make_nnunet(tmp_path / "ds", n_train=2, n_test=0)
    write_volume(tiny_ct(0), root / "imagesTr" / "case_007.nii.gz")  # not CASE_0000: the naming rule says no
    ds = open_dataset(root)
    assert ds.case_ids == ["case_000", "case_001"]
    assert ds.unmatched == [root / "imagesTr" / "case_007.nii.gz"]


def test_opening_images_tr_itself_points_to_the_parent(tmp_path: Path) -> None:
    root = make_nnunet(tmp_path / "ds", n_train=2, n_test=0)
    with pytest.raises(InputError) as err:
        open_dataset(root / "imagesTr")
    assert "imagesTr folder of a dataset" in str(err.value) and str(root) in str(err.value)


def test_a_folder_holding_one_manifest_opens_it(tmp_path: Path) -> None:
    data = tmp_path / "cohort"
    write_volume(tiny_ct(0), data / "ct" / "a.nii.gz")
    (data / "notes.csv").write_text("x,y\n1,2\n")  # not a manifest
    (data / "list.csv").write_text("case,ct\na,ct/a.nii.gz\n")
    ds = open_dataset(data)
    assert ds.layout == "csv" and ds.case_ids == ["a"] and ds.source == data / "list.csv"
    (data / "other.csv").write_text("case,reference\nb,x.nii.gz\n")
    with pytest.raises(InputError, match="2 manifests"):
        open_dataset(data)


def test_atm22_batches_open_as_one_dataset(tmp_path: Path) -> None:
    """ATM'22's training data came in two archives, TrainBatch1/ and TrainBatch2/, each with imagesTr/labelsTr."""
    root = tmp_path / "ATM22"
    make_atm22(root / "TrainBatch1", n=2)
    for i in (3, 4):
        name = f"ATM_{i:03d}_0000.nii.gz"
        write_volume(tiny_ct(i), root / "TrainBatch2" / "imagesTr" / name)
        write_volume(tiny_mask(i), root / "TrainBatch2" / "labelsTr" / name)
    make_predictions(root / "preds_team", ["ATM_001", "ATM_004"], suffix="_0000")
    ds = open_dataset(root)
    assert ds.layout == "atm22" and ds.case_ids == ["ATM_001", "ATM_002", "ATM_003", "ATM_004"]
    assert ds.case("ATM_004").reference == root / "TrainBatch2" / "labelsTr" / "ATM_004_0000.nii.gz"
    assert ds.models == ["preds_team"] and ds.unmatched == []
    assert any("TrainBatch1, TrainBatch2" in n for n in ds.notes)
