"""``airway train --dataset ... --ignore-unreviewed``: the error regions a reviewer did not judge
count neither as airway nor as background; judged ones and everything else keep the reviewed label."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_finetune import DEMO, make_dataset, split_of, train, write_reviewed  # noqa: E402

from core.training.finetune_ignore import IGNORE_VALUE, JUDGED  # noqa: E402

MODEL = "demo_model"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """The phantom dataset with one model's predictions: the whole airway (so every distal branch the
    reference leaves out is an FP region of it) less a block of the trachea (an FN region)."""
    from core.io import read_label, write_volume
    from core.volume import LabelVolume

    root = tmp_path_factory.mktemp("finetune_ignore")
    data, truth = make_dataset(root, n=5, fractions=(3, 1, 1))
    for f in sorted(truth.glob("*.nii.gz")):
        whole = read_label(f)
        mask = whole.mask.copy()
        zz, yy, xx = np.nonzero(mask)
        top = zz.min()
        mask[top : top + 3] = False  # the top of the trachea missed: an FN region
        write_volume(LabelVolume(mask.astype(np.uint8), whole.geometry), data / MODEL / f.name)
    return data


@pytest.fixture
def dataset(pristine, tmp_path) -> Path:
    shutil.copytree(pristine, tmp_path / "dataset")
    return tmp_path / "dataset"


def _review(data: Path, case_id: str) -> tuple[np.ndarray, dict[str, str], list[tuple[str, np.ndarray]]]:
    """Write a reviewed label, list its error regions as the app does and judge the first two (one
    confirmed, one a reference error), leaving the rest without a status; the statuses go to the state
    file where the app keeps them. Returns (reviewed mask, statuses, [(key, canonical voxels)])."""
    from core.dataset import open_dataset, set_case
    from core.review import Session

    reviewed = write_reviewed(data, case_id, extra=False)
    ds = open_dataset(data)
    case = ds.case(case_id)
    s = Session.load(None, case.reviewed, [case.predictions[MODEL]], recovery_path=None)
    s.analyse()
    regions = [(r.key, np.asarray(r.voxels)) for r in s.regions(0)]
    assert len(regions) >= 4, "the phantom should give several error regions"
    statuses = {regions[0][0]: "confirmed", regions[1][0]: "reference_error", regions[2][0]: "flagged"}
    set_case(ds, case_id, view={"statuses": {MODEL: statuses}})
    return reviewed, statuses, regions


def test_judged_statuses_are_review_statuses():
    from core.review import STATUS_KEYS

    assert set(JUDGED) <= set(STATUS_KEYS) and "unreviewed" not in JUDGED and "flagged" not in JUDGED


def test_unjudged_regions_get_the_ignore_value_and_the_rest_keeps_the_reviewed_label(dataset, tmp_path):
    from core.io import read_volume
    from core.training import finetune

    case_id = split_of(dataset)["train"][0]
    reviewed, statuses, regions = _review(dataset, case_id)
    plan = finetune.plan_finetune(dataset, "reviewed", DEMO, ignore_unreviewed=True)
    run = tmp_path / "run"
    said: list[str] = []
    finetune.write_run_files(plan, run, say=said.append)
    out = np.asarray(read_volume(run / "labels" / f"{case_id}.nii.gz").array)
    assert out.shape == reviewed.shape and set(np.unique(out)) <= {0, 1, IGNORE_VALUE}
    # the phantom's grid is canonical: region voxels index the file's array as they are
    expected = reviewed.astype(np.uint8)
    for key, voxels in regions:
        if statuses.get(key) not in JUDGED:
            expected[tuple(voxels.T)] = IGNORE_VALUE
    assert np.array_equal(out, expected)
    for _key, voxels in regions[:2]:  # judged: the reviewed label's own values
        assert np.array_equal(out[tuple(voxels.T)], reviewed[tuple(voxels.T)].astype(np.uint8))
    assert (out[tuple(regions[2][1].T)] == IGNORE_VALUE).all()  # flagged is still an open question
    # what was left out is recorded, said, and the run's cases.csv reads the run's label
    saved = json.loads((run / "finetune.json").read_text())
    (record,) = saved["ignored"]
    assert record["case_id"] == case_id and record["regions"] == len(regions) and record["judged"] == 2
    assert record["ignored_voxels"] == int((out == IGNORE_VALUE).sum())
    assert f"{len(regions) - 2} of {len(regions)} error regions unjudged" in said[0]
    assert str(run / "labels" / f"{case_id}.nii.gz") in (run / "cases.csv").read_text()
    cfg = finetune.finetune_config(plan, run)
    assert cfg.data.ignore_value == IGNORE_VALUE
    # without the flag the reviewed label is read as it is
    plain = finetune.plan_finetune(dataset, "reviewed", DEMO)
    assert finetune.finetune_config(plain, tmp_path / "plain").data.ignore_value == 0


def test_the_flag_is_refused_where_it_cannot_mean_anything(dataset, tmp_path):
    code, _, err = train(["--data", str(dataset), "--ignore-unreviewed", "--out", str(tmp_path / "r")])
    assert code == 2 and "--ignore-unreviewed works on a reviewed dataset" in err
    code, _, err = train(
        ["--dataset", str(dataset), "--labels", "original", "--init", str(DEMO), "--ignore-unreviewed"]
        + ["--out", str(tmp_path / "r2")]
    )
    assert code == 2 and "--labels reviewed or --labels best" in err


@pytest.mark.slow
def test_training_as_typed_leaves_the_unjudged_voxels_out_of_the_losses(dataset, tmp_path):
    from test_finetune import TINY_TOML

    case_id = split_of(dataset)["train"][0]
    reviewed, statuses, regions = _review(dataset, case_id)
    toml = tmp_path / "tiny.toml"
    toml.write_text(TINY_TOML)
    run = tmp_path / "run"
    code, _, err = train(
        ["--dataset", str(dataset), "--labels", "reviewed", "--ignore-unreviewed", "--init", str(DEMO)]
        + ["--preset", "finetune", "--config", str(toml), "--out", str(run), "--no-compare"]
    )
    assert code == 0, err
    assert "error regions unjudged" in err
    cached = run / ".airway_cache" / case_id
    ignore = np.load(cached / "ignore.npy")
    label = np.load(cached / "label.npy")
    unjudged = np.zeros(reviewed.shape, bool)
    for key, voxels in regions:
        if statuses.get(key) not in JUDGED:
            unjudged[tuple(voxels.T)] = True
    assert np.array_equal(ignore.astype(bool), unjudged)
    assert np.array_equal(label.astype(bool), reviewed & ~unjudged)
