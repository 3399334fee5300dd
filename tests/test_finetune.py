"""Fine-tuning on a dataset's reviewed references (issue 25, part 3): the preset, the start weights,
the frozen split's parts, the label versions, and ``airway train --dataset`` as typed."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from core.training.config import PRESETS, load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "resources" / "models" / "demo_wingsnet.pt"
SIZE, SPACING = 48, (2.5, 2.5, 3.0)  # the demo model's phantoms

# a run in seconds: one epoch of one patch per case (the demo model's 32^3 patches and 48^3 window)
TINY_TOML = """
[run]
device = "cpu"
num_workers = 0
threads = 2
channels_last = false

[sampling]
patches_per_case = 1
batch_size = 2

[stage2]
epochs = 1
milestones = [1]
lr = 0.01
"""


def make_dataset(root: Path, n: int = 6, seed: int = 3000, fractions=(4, 1, 1)) -> tuple[Path, Path]:
    """A phantom dataset (nnU-Net layout, references missing distal branches) with a frozen split;
    the whole airways go to a truth folder beside it. Returns (dataset, truth)."""
    from core.dataset import freeze_split, open_dataset
    from core.training.finetune_phantoms import write_noisy_phantom_dataset

    data, truth = root / "dataset", root / "truth"
    write_noisy_phantom_dataset(data, range(seed, seed + n), truth, size=SIZE, spacing=SPACING, omit_distal=6)
    freeze_split(open_dataset(data), seed=0, fractions=fractions)
    return data, truth


def split_of(data: Path) -> dict[str, list[str]]:
    from core.dataset import open_dataset, read_state

    split = read_state(open_dataset(data)).split
    assert split is not None
    return split


def write_reviewed(data: Path, case_id: str, extra: bool = True) -> np.ndarray:
    """Write a reviewed label of ``case_id``: its original plus a block of airway (so the two differ)."""
    from core.dataset import open_dataset, write_reviewed_label
    from core.io import read_label
    from core.volume import LabelVolume

    ds = open_dataset(data)
    case = ds.case(case_id)
    original = read_label(case.reference)
    mask = original.mask.copy()
    if extra:
        mask[20:26, 20:26, 20:26] = True
    write_reviewed_label(ds, case_id, LabelVolume(mask, original.geometry, case_id), [{"tool": "test", "added": 1}])
    return mask


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("finetune_data")
    make_dataset(root)
    return root


@pytest.fixture
def dataset(pristine, tmp_path) -> Path:
    """A fresh copy of the module's dataset for each test (tests write reviewed labels into it)."""
    shutil.copytree(pristine, tmp_path / "d")
    return tmp_path / "d" / "dataset"


@pytest.fixture
def tiny_toml(tmp_path) -> Path:
    p = tmp_path / "tiny.toml"
    p.write_text(TINY_TOML)
    return p


def train(argv: list[str]) -> tuple[int, str, str]:
    """``airway train ...`` in this process, as typed; (exit status, stdout, stderr)."""
    import contextlib

    from core.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["train", *argv])
    return code, out.getvalue(), err.getvalue()


# -- the preset ---------------------------------------------------------------------------------


def test_finetune_preset_loads_as_data_with_one_gentle_stage():
    from app.training.launch import list_presets

    assert "finetune" in PRESETS and "finetune" in list_presets()
    assert (ROOT / "resources" / "configs" / "finetune.toml").is_file()
    cfg = load_config(preset="finetune")
    paper = load_config(preset="paper")
    assert [i for i, _ in cfg.stages()] == [2]
    stage = cfg.stage2
    assert stage.lr < paper.stage2.lr and stage.epochs < paper.stage2.epochs
    assert not stage.hard_sampling and cfg.sampling.p_hard == 0.0


def test_finetune_preset_without_init_is_refused(dataset, tmp_path):
    code, _, err = train(["--dataset", str(dataset), "--preset", "finetune", "--out", str(tmp_path / "run")])
    assert code == 2
    assert "--init" in err
    assert not (tmp_path / "run").exists()


# -- the plan: split parts and label versions --------------------------------------------------


def test_plan_uses_train_and_validation_parts_and_lists_unreviewed_cases(dataset):
    from core.training.finetune import plan_finetune

    split = split_of(dataset)
    reviewed = split["train"][:2]
    for cid in reviewed:
        write_reviewed(dataset, cid)
    plan = plan_finetune(dataset, "reviewed", DEMO)
    assert [c.case_id for c in plan.train] == reviewed
    assert all(c.version == "reviewed" and "labelsReviewed" in c.label for c in plan.train)
    skipped = {s["case"] for s in plan.skipped}
    assert skipped == set(split["train"][2:])
    assert all("not reviewed" in s["reason"] for s in plan.skipped)
    assert [c.case_id for c in plan.validation] == split["validation"]
    assert plan.test == split["test"]
    # best: the unreviewed ones fall back to their original label
    best = plan_finetune(dataset, "best", DEMO)
    assert [c.case_id for c in best.train] == split["train"]
    assert {c.case_id: c.version for c in best.train} == {
        cid: "reviewed" if cid in reviewed else "original" for cid in split["train"]
    }
    assert not best.skipped


def test_no_reviewed_training_case_says_what_to_do(dataset):
    from core.errors import InputError
    from core.training.finetune import plan_finetune

    with pytest.raises(InputError, match="Review some training cases"):
        plan_finetune(dataset, "reviewed", DEMO)


def test_dataset_without_a_frozen_split_is_refused(tmp_path):
    from core.errors import InputError
    from core.training.finetune import plan_finetune
    from core.training.finetune_phantoms import write_noisy_phantom_dataset

    write_noisy_phantom_dataset(tmp_path / "d", [3000, 3001], tmp_path / "t", size=SIZE, spacing=SPACING)
    with pytest.raises(InputError, match="airway dataset split"):
        plan_finetune(tmp_path / "d", "best", DEMO)


# -- runs ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_run_reads_no_test_case_and_trains_with_reviewed_labels(dataset, tiny_toml, tmp_path):
    split = split_of(dataset)
    test_case = split["test"][0]
    # a test case training touched would fail to load (and be named in a warning, or stop the run)
    for f in (dataset / "imagesTr" / f"{test_case}_0000.nii.gz", dataset / "labelsTr" / f"{test_case}.nii.gz"):
        f.write_bytes(b"not a volume")
    changed = split["train"][0]
    reviewed_mask = write_reviewed(dataset, changed)
    missing = split["train"][1:]
    run = tmp_path / "run"
    code, out, err = train(
        ["--dataset", str(dataset), "--labels", "reviewed", "--init", str(DEMO), "--preset", "finetune"]
        + ["--config", str(tiny_toml), "--out", str(run), "--no-compare"]
    )
    assert code == 0, err
    # the unreviewed training cases are listed, on stderr, in the event stream and in finetune.json
    for cid in missing:
        assert cid in err
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    warnings = " ".join(e["message"] for e in events if e["event"] == "warning")
    assert all(cid in warnings for cid in missing)
    plan = json.loads((run / "finetune.json").read_text())
    assert {s["case"] for s in plan["skipped"]} == set(missing)
    # training and validation saw exactly the split's parts, never the test case
    start = next(e for e in events if e["event"] == "run_start")
    assert start["train_cases"] == [changed]
    assert start["val_cases"] == split["validation"]
    assert test_case not in (run / "cases.csv").read_text()
    assert test_case not in warnings
    cache = run / ".airway_cache"
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == sorted(
        [changed, *split["validation"]]
    )
    # what the data loader reads for the changed case is its reviewed label, not the original
    meta = json.loads((cache / changed / "meta.json").read_text())
    assert "labelsReviewed" in meta["source"]["label"]["path"]
    assert int(np.load(cache / changed / "label.npy").sum()) == int(reviewed_mask.sum())
    from core.io import read_label

    original = read_label(dataset / "labelsTr" / f"{changed}.nii.gz").mask
    assert int(original.sum()) != int(reviewed_mask.sum())
    # the fine-tuned model records where it started
    from core.models.checkpoint import load_checkpoint

    header = load_checkpoint(run / "checkpoints" / "last.pt").header
    assert header["training"]["model"]["init"] == str(DEMO.resolve())
    assert header["arch_args"] == load_checkpoint(DEMO).arch_args


@pytest.mark.slow
def test_init_weights_make_the_first_forward(dataset, tmp_path):
    """The model the first step runs is the start checkpoint's: with a learning rate too small to move
    a weight, the model after step 1 still answers exactly as the checkpoint does; without --init it does not."""
    from core.models.checkpoint import model_from_checkpoint
    from core.training.finetune import finetune_config, plan_finetune, write_run_files
    from core.training.trainer import Trainer

    write_reviewed(dataset, split_of(dataset)["train"][0])
    plan = plan_finetune(dataset, "reviewed", DEMO)
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 1, 32, 32, 32)).astype(np.float32))
    reference, _ = model_from_checkpoint(DEMO, device="cpu")
    with torch.no_grad():
        expected = reference(x)[-1]

    def first_output(run: Path, init: bool) -> torch.Tensor:
        write_run_files(plan, run)
        tiny = run.parent / f"{run.name}.toml"
        tiny.write_text(TINY_TOML.replace("lr = 0.01", "lr = 1e-30"))
        cfg = finetune_config(plan, run, "finetune", tiny)
        cfg.stage2.weight_decay = 0.0
        if not init:
            cfg.model.init = ""
        seen: list[torch.Tensor] = []

        def after_first_step(trainer: Trainer) -> None:
            if not seen:
                trainer.model.eval()
                with torch.no_grad():
                    seen.append(trainer.model(x)[-1].clone())
                trainer.model.train()
                trainer.paths.stop.touch()

        assert Trainer(cfg, run, stdout=io.StringIO(), on_step=after_first_step).run() == "stopped"
        return seen[0]

    got = first_output(tmp_path / "with_init", True)
    assert torch.allclose(got, expected, atol=1e-5)
    scratch = first_output(tmp_path / "scratch", False)
    assert not torch.allclose(scratch, expected, atol=1e-3)


@pytest.mark.slow
def test_cli_as_typed_fine_tunes_and_compares_on_the_test_part(dataset, tiny_toml, tmp_path):
    """``python main.py train --dataset ... --init ... --preset finetune`` in a process of its own: it
    trains, then compares the start and the fine-tuned model on the test part (RUN/compare/report.html)."""
    for cid in split_of(dataset)["train"]:
        write_reviewed(dataset, cid, extra=False)
    run = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "main.py"), "train", "--dataset", str(dataset), "--labels", "reviewed"]
    cmd += ["--init", str(DEMO), "--preset", "finetune", "--config", str(tiny_toml), "--out", str(run)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = run / "compare" / "report.html"
    assert report.is_file()
    html = report.read_text(encoding="utf-8")
    assert "init" in html and "finetuned" in html
    plan = json.loads((run / "finetune.json").read_text())
    assert plan["compare"]["test_cases"] == split_of(dataset)["test"]
    assert set(plan["compare"]["summary"]) == {"init", "finetuned"}
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    # the comparison is announced before the run ends, so a watcher that sees the end sees the report
    compare_at = next(i for i, e in enumerate(events) if e.get("kind") == "compare" and e["event"] == "info")
    assert compare_at < kinds.index("run_end")
    assert events[compare_at]["report"] == str(report)


def test_label_maps_are_trained_as_their_airway_beside_reviewed_masks(tmp_path):
    """nnU-Net labels with the airway as value 2 (dataset.json): the run's case list gives the trainer
    0/1 masks of value 2 for the original labels and the reviewed 0/1 masks as they are."""
    import csv

    from dataset_fixtures import SHAPE, make_nnunet, tiny_ct

    from core.dataset import freeze_split, open_dataset, write_reviewed_label
    from core.io import read_label, read_volume, write_volume
    from core.training.finetune import plan_finetune, write_run_files
    from core.volume import LabelVolume

    data = make_nnunet(tmp_path / "ds", n_train=4, n_test=0, labels={"background": 0, "lung": 1, "airway": 2})
    geometry = tiny_ct().geometry
    for i in range(4):
        labels = np.zeros(SHAPE, np.uint8)
        labels[1:7, 1:7, 1:7] = 1  # lung
        labels[3 : 5 + i % 2, 3:5, 3:5] = 2  # airway
        write_volume(LabelVolume(labels, geometry), data / "labelsTr" / f"case_{i:03d}.nii.gz")
    ds = open_dataset(data)
    assert ds.label_selector == "value:2"
    split = freeze_split(ds, seed=0, fractions=(3, 1, 0))
    reviewed = np.zeros(SHAPE, bool)
    reviewed[2:6, 3:5, 3:5] = True
    write_reviewed_label(ds, split["train"][0], LabelVolume(reviewed, geometry))
    plan = plan_finetune(data, "best", DEMO)
    run = tmp_path / "run"
    write_run_files(plan, run)
    with open(run / "cases.csv", newline="") as f:
        rows = {Path(r["label"]).name.removesuffix(".nii.gz"): Path(r["label"]) for r in csv.DictReader(f)}
    assert set(rows) == set(split["train"] + split["validation"])
    for cid, path in rows.items():
        mask = np.asarray(read_volume(path).array)
        assert set(np.unique(mask)) <= {0, 1}
        if cid == split["train"][0]:
            assert "labelsReviewed" in str(path) and np.array_equal(mask.astype(bool), reviewed)
        else:
            expected = read_label(data / "labelsTr" / f"{cid}.nii.gz", "value:2").mask
            assert path.parent == run / "labels" and np.array_equal(mask.astype(bool), expected)


@pytest.mark.slow
def test_a_stopped_fine_tuning_resumes_and_then_compares(dataset, tiny_toml, tmp_path):
    """Stop after the first step (as the tab's Stop does), then ``airway train --out RUN --resume``: the run
    reads its own finetune.json, finishes, and compares the models on the test part."""
    from core.training.finetune import finetune_config, plan_finetune, write_run_files
    from core.training.trainer import Trainer

    for cid in split_of(dataset)["train"][:2]:
        write_reviewed(dataset, cid)
    tiny_toml.write_text(TINY_TOML.replace("epochs = 1", "epochs = 2"))
    plan = plan_finetune(dataset, "reviewed", DEMO)
    run = tmp_path / "run"
    write_run_files(plan, run)
    cfg = finetune_config(plan, run, "finetune", tiny_toml)
    status = Trainer(cfg, run, stdout=io.StringIO(), on_step=lambda t: t.paths.stop.touch()).run()
    assert status == "stopped" and not (run / "compare").exists()
    code, _, err = train(["--out", str(run), "--resume"])
    assert code == 0, err
    assert (run / "compare" / "report.html").is_file()
    saved = json.loads((run / "finetune.json").read_text())
    assert saved["compare"]["test_cases"] == split_of(dataset)["test"]
