"""End-to-end training on tiny phantoms: all stages, event stream, resume equivalence,
graceful stop, crash events, bad datasets, the cache, DDP with two CPU processes."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from core.errors import InputError  # noqa: E402
from core.io import write_volume  # noqa: E402
from core.training.cache import CacheSettings, prepare_cases  # noqa: E402
from core.training.config import load_config  # noqa: E402
from core.training.dataset import discover_cases  # noqa: E402
from core.training.events import check_event, read_events  # noqa: E402
from core.training.phantoms import write_phantom_dataset  # noqa: E402
from core.training.trainer import Trainer  # noqa: E402
from core.volume import Geometry, IntensityVolume, LabelVolume  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "run": {"threads": 1, "num_workers": 0, "deterministic": True, "device": "cpu"},
    "data": {"val_cases": ["phantom_002"]},
    "preprocessing": {"crop": "none"},
    "model": {"arch_args": {"width": 0.125}},
    "sampling": {"patch_size": 16, "patches_per_case": 2, "batch_size": 2, "max_large_voxels": 4096},
    "validation": {"window": 32, "step": 32},
    "stage0": {"epochs": 1, "milestones": [1]},
    "stage1": {"epochs": 2, "milestones": [1]},
    "stage2": {"epochs": 1, "milestones": [1]},
}


def tiny_config(**sections):
    import copy

    over = copy.deepcopy(TINY)
    for k, v in sections.items():
        over.setdefault(k, {}).update(v)
    return load_config(preset="quick", overrides=over)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantoms")
    write_phantom_dataset(root, 3, size=32, seed=0, spacing=(2.0, 2.0, 2.5))
    return root


def _weights(path: Path) -> dict:
    from core.models.checkpoint import load_checkpoint

    return load_checkpoint(path).state_dict


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- the full quick run -------------------------------------------------------------------


@pytest.mark.slow
def test_quick_run_through_all_stages(phantoms, tmp_path):
    out = io.StringIO()
    run = tmp_path / "run"
    status = Trainer(tiny_config(run={"tensorboard": True}), run, data=phantoms, stdout=out).run()
    assert status == "finished"
    for kind in ("last", "best", "stage0", "stage1", "stage2"):
        assert (run / "checkpoints" / f"{kind}.pt").is_file(), kind
    assert (run / "config.toml").is_file()
    assert sorted(p.name for p in (run / "hard").iterdir()) == ["phantom_000.npy", "phantom_001.npy"]

    events = read_events(run)
    assert [json.loads(l) for l in out.getvalue().splitlines()] == events  # same stream on stdout
    assert all(check_event(e) == [] for e in events), [check_event(e) for e in events if check_event(e)]
    assert events[0]["event"] == "run_start" and events[0]["resumed"] is False and events[0]["world_size"] == 1
    assert events[-1] == {**events[-1], "event": "run_end", "status": "finished"}
    assert events[-1]["best_checkpoint"].endswith("best.pt")
    stages = [e for e in events if e["event"] == "stage"]
    assert [(e["stage"], e["loss"], e["alpha"], e["threshold"]) for e in stages] == [
        (0, "dice", 0.5, 0.8),
        (1, "gul", 0.1, 0.8),
        (2, "gul", 0.2, 0.9),
    ]
    steps = [e for e in events if e["event"] == "step"]
    assert [e["global_step"] for e in steps] == list(range(1, 9))  # (1 + 2 + 1) epochs x 2 steps
    assert all(e["loss"] is not None and e["loss"] >= 0 for e in steps)
    # stage 1 lr 0.01 divided by 10 after epoch 1
    assert [e["lr"] for e in steps if e["stage"] == 1] == pytest.approx([0.01, 0.01, 0.001, 0.001])
    vals = [e for e in events if e["event"] == "validation"]
    assert len(vals) == 4 and all(0 <= e[k] <= 100 for e in vals for k in ("td", "bd", "dsc", "precision"))
    assert all(e["cases"] == 1 for e in vals)
    try:
        import tensorboard  # noqa: F401

        assert (run / "tensorboard").is_dir()
    except ImportError:  # optional: a warning, and training goes on
        assert any("TensorBoard" in e["message"] for e in events if e["event"] == "warning")
    epochs = [e for e in events if e["event"] == "epoch"]
    assert epochs[-1]["eta_s"] == 0 and all(e["time_s"] > 0 for e in epochs)

    from core.models.checkpoint import load_checkpoint, model_from_checkpoint

    model, header = model_from_checkpoint(run / "checkpoints" / "best.pt")
    assert header["architecture"] == "wingsnet" and header["arch_args"]["width"] == 0.125
    assert header["preprocessing"]["window"] == [-1000.0, 600.0]
    assert header["training"]["stage1"]["alpha"] == 0.1
    assert set(header["metrics"]) >= {"td", "bd", "dsc", "precision"}
    assert load_checkpoint(run / "checkpoints" / "last.pt").extra_state["train_state"]["status"] == "finished"
    # the stage-2 checkpoint is the final weights
    assert _same(_weights(run / "checkpoints" / "stage2.pt"), _weights(run / "checkpoints" / "last.pt"))

    # a run folder is not silently overwritten, and a finished run is not resumed
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="already holds a run"):
        Trainer(tiny_config(), run, data=phantoms, stdout=None).run()
    with pytest.raises(ConfigError, match="already finished.*--more-epochs N"):
        Trainer(None, run, resume=True, stdout=None).run()
    assert read_events(run) == events  # refusals leave the finished run's stream alone

    # one epoch numbering for users: events count from 1, as the tab's log and status line
    assert events[0]["epoch_base"] == 1
    assert [e["epoch"] for e in epochs if e["stage"] == 1] == [1, 2]
    assert [e["epoch"] for e in vals if e["stage"] == 1] == [1, 2]
    assert {e["epoch"] for e in steps if e["stage"] == 1} == {1, 2} and min(e["step"] for e in steps) == 1
    assert load_checkpoint(run / "checkpoints" / "stage1.pt").header["epoch"] == 2
    assert all(0 <= e["marked_percent"] <= 100 and e["marked_to_label"] >= 0 for e in vals)

    # a finished run is trained further: more epochs of its last stage, from where it ended
    status = Trainer(None, run, resume=True, more_epochs=2, stdout=None).run()
    assert status == "finished"
    more = read_events(run)[len(events) :]
    assert more[0]["event"] == "run_start" and more[0]["resumed"] and more[0]["more_epochs"] == 2
    assert [(e["stage"], e["epoch"]) for e in more if e["event"] == "epoch"] == [(2, 2), (2, 3)]
    assert [e["global_step"] for e in more if e["event"] == "step"] == [9, 10, 11, 12]
    assert load_config(run / "config.toml").stage2.epochs == 3
    assert more[-1]["event"] == "run_end" and more[-1]["status"] == "finished"
    with pytest.raises(ConfigError, match="1 or more"):
        Trainer(None, run, resume=True, more_epochs=0, stdout=None)


def test_a_model_that_marks_everything_is_flagged_at_validation(phantoms, tmp_path):
    """Issue 24: a model marking everything scored TD/BD 100 % (DSC 0.3 %) and the plot looked like success.
    The validation event now says how much of the volume it marks, and a warning says what it means."""
    hooked = []

    def mark_everything(trainer):
        if not hooked:  # logits + 50 everywhere: every voxel above threshold, gradients still flow
            hooked.append(trainer.model.register_forward_hook(lambda _m, _i, out: tuple(o + 50.0 for o in out)))

    cfg = tiny_config(stage1={"enabled": False}, stage2={"enabled": False})
    run = tmp_path / "run"
    assert Trainer(cfg, run, data=phantoms, stdout=None, on_step=mark_everything).run() == "finished"
    events = read_events(run)
    (val,) = [e for e in events if e["event"] == "validation"]
    assert val["td"] > 95 and val["dsc"] < 20 and val["marked_percent"] > 50
    warnings = [e for e in events if e["event"] == "warning" and e.get("kind") == "oversegmentation"]
    assert len(warnings) == 1
    text = warnings[0]["message"]
    assert "stage 0, epoch 1" in text and "marks" in text and "TD and BD near 100 % mean nothing" in text
    assert "lower the learning rate" in text  # says what to do


# -- resume --------------------------------------------------------------------------------

RESUME_CFG = {
    "stage0": {"epochs": 1},
    "stage1": {"epochs": 2},
    "stage2": {"enabled": False},
    "data": {"val_cases": [], "val_fraction": 0.0},
}


@pytest.mark.slow
def test_stopped_and_resumed_run_ends_bit_identical(phantoms, tmp_path):
    straight = tmp_path / "straight"
    assert Trainer(tiny_config(**RESUME_CFG), straight, data=phantoms, stdout=None).run() == "finished"

    # 3 training cases x 2 patches / batch 2 = 3 steps per epoch; stage 0: steps 1-3, stage 1: 4-9
    def stop_mid_epoch(trainer):  # stage 1, epoch 0, after its first step; as the GUI would
        if trainer.state.global_step == 4:
            trainer.paths.stop.write_text("")

    broken = tmp_path / "broken"
    assert (
        Trainer(tiny_config(**RESUME_CFG), broken, data=phantoms, stdout=None, on_step=stop_mid_epoch).run()
        == "stopped"
    )
    ev = read_events(broken)
    assert ev[-1]["event"] == "run_end" and ev[-1]["status"] == "stopped"
    assert not (broken / "stop.request").exists()
    assert Trainer(None, broken, resume=True, stdout=None).run() == "finished"

    ev = read_events(broken)
    starts = [e for e in ev if e["event"] == "run_start"]
    assert [e["resumed"] for e in starts] == [False, True]
    assert [e["global_step"] for e in ev if e["event"] == "step"] == list(range(1, 10))
    assert _same(_weights(straight / "checkpoints" / "last.pt"), _weights(broken / "checkpoints" / "last.pt"))
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)["extra_state"]["optimizer"]
    b = torch.load(broken / "checkpoints" / "last.pt", weights_only=True)["extra_state"]["optimizer"]
    assert all(torch.equal(a["state"][k]["momentum_buffer"], b["state"][k]["momentum_buffer"]) for k in a["state"])


@pytest.mark.slow
def test_crash_emits_error_and_a_killed_run_resumes_from_the_last_epoch(phantoms, tmp_path):
    def crash(trainer):
        if trainer.state.global_step == 5:
            raise RuntimeError("simulated crash")

    run = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(tiny_config(**RESUME_CFG), run, data=phantoms, stdout=None, on_step=crash).run()
    ev = read_events(run)
    err = [e for e in ev if e["event"] == "error"]
    assert len(err) == 1 and "simulated crash" in err[0]["message"] and "Traceback" in err[0]["traceback"]
    assert ev[-1]["event"] == "run_end" and ev[-1]["status"] == "failed"
    # like a SIGKILL: last.pt is from the end of stage 0; resuming replays stage 1 from its start
    assert Trainer(None, run, resume=True, stdout=None).run() == "finished"
    straight = tmp_path / "straight"
    assert Trainer(tiny_config(**RESUME_CFG), straight, data=phantoms, stdout=None).run() == "finished"
    assert _same(_weights(straight / "checkpoints" / "last.pt"), _weights(run / "checkpoints" / "last.pt"))


@pytest.mark.slow
def test_sigterm_stops_the_command_gracefully(phantoms, tmp_path):
    cfg = tmp_path / "c.toml"
    from core.training.config import save_config

    c = tiny_config(stage0={"epochs": 50}, data={"val_cases": [], "val_fraction": 0.0})
    save_config(c, cfg)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.cli", "train", "--config", str(cfg), "--data", str(phantoms), "--out", str(run)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stdout:
            if json.loads(line)["event"] == "step":
                proc.send_signal(signal.SIGTERM)
                break
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    last = json.loads(rest.strip().splitlines()[-1])
    assert last["event"] == "run_end" and last["status"] == "stopped"
    assert (run / "checkpoints" / "last.pt").is_file()


# -- bad datasets and the cache ----------------------------------------------------------------


def _bad_dataset(root: Path, phantoms: Path) -> Path:
    import shutil

    data = root / "bad"
    shutil.copytree(phantoms / "imagesTr", data / "imagesTr")
    shutil.copytree(phantoms / "labelsTr", data / "labelsTr")
    g = Geometry((2.0, 2.0, 2.5))
    write_volume(IntensityVolume(np.full((32, 32, 32), -1000, np.int16), g), data / "imagesTr" / "nolabel_0000.nii.gz")
    write_volume(IntensityVolume(np.full((32, 32, 32), -1000, np.int16), g), data / "imagesTr" / "empty_0000.nii.gz")
    write_volume(LabelVolume(np.zeros((32, 32, 32), np.uint8), g), data / "labelsTr" / "empty.nii.gz")
    write_volume(IntensityVolume(np.full((32, 32, 32), -1000, np.int16), g), data / "imagesTr" / "shifted_0000.nii.gz")
    lab = np.zeros((30, 32, 32), np.uint8)
    lab[10:20, 10:20, 10:20] = 1
    write_volume(LabelVolume(lab, g), data / "labelsTr" / "shifted.nii.gz")
    (data / "imagesTr" / "broken_0000.nii.gz").write_bytes(b"not a nifti at all")
    write_volume(LabelVolume(lab, g), data / "labelsTr" / "broken.nii.gz")
    return data


def test_bad_cases_are_named_and_stop_or_skip(phantoms, tmp_path):
    data = _bad_dataset(tmp_path, phantoms)
    settings = CacheSettings({"window": [-1000.0, 600.0], "scale": 255.0, "crop": "none", "margin": 5})
    with pytest.raises(InputError) as err:
        prepare_cases(discover_cases(data), tmp_path / "cache", settings, on_bad_case="stop")
    msg = str(err.value)
    assert "4 bad case(s)" in msg
    assert "nolabel: no label file" in msg and "empty: the label is empty" in msg
    assert "shifted: label and image are on different grids" in msg and "broken: unreadable image" in msg
    report = prepare_cases(discover_cases(data), tmp_path / "cache", settings, on_bad_case="skip")
    assert sorted(b.name for b in report.bad) == ["broken", "empty", "nolabel", "shifted"]
    assert sorted(c.name for c in report.cases) == ["phantom_000", "phantom_001", "phantom_002"]

    # the trainer stops before any training step, with an error event
    run = tmp_path / "run"
    with pytest.raises(InputError, match="bad case"):
        Trainer(tiny_config(data={"val_cases": []}), run, data=data, stdout=None).run()
    ev = read_events(run)
    assert not [e for e in ev if e["event"] == "step"]
    assert ev[-2]["event"] == "error" and "nolabel" in ev[-2]["message"] and ev[-1]["status"] == "failed"


def test_cache_is_reused_and_rebuilt_on_change(phantoms, tmp_path):
    import shutil

    data = tmp_path / "d"
    shutil.copytree(phantoms / "imagesTr", data / "imagesTr")
    shutil.copytree(phantoms / "labelsTr", data / "labelsTr")
    settings = CacheSettings({"window": [-1000.0, 600.0], "scale": 255.0, "crop": "none", "margin": 5}, alphas=(0.1,))
    cases = discover_cases(data)
    first = prepare_cases(cases, tmp_path / "c", settings)
    assert sorted(first.built) == ["phantom_000", "phantom_001", "phantom_002"]
    assert sorted(prepare_cases(cases, tmp_path / "c", settings).reused) == sorted(first.built)
    # a changed label file rebuilds that case only
    lab = data / "labelsTr" / "phantom_001.nii.gz"
    os.utime(lab, ns=(lab.stat().st_atime_ns, lab.stat().st_mtime_ns + 10**9))
    again = prepare_cases(cases, tmp_path / "c", settings)
    assert again.built == ["phantom_001"] and len(again.reused) == 2
    case = again.cases[0]
    assert isinstance(case.image, np.memmap) or getattr(case.image, "base", None) is not None
    from core.io import read_ct, read_label
    from core.preprocess import window_hu
    from core.weights import distance_weights

    ct = read_ct(data / "imagesTr" / f"{case.name}_0000.nii.gz")
    label = read_label(data / "labelsTr" / f"{case.name}.nii.gz")
    np.testing.assert_array_equal(case.image, window_hu(ct.array, (-1000.0, 600.0), 255.0))
    np.testing.assert_array_equal(case.label, label.mask)
    np.testing.assert_array_equal(case.weights(0.1), distance_weights(label.mask, ct.geometry.spacing_zyx, alpha=0.1))
    assert case.skeleton.sum() > 0 and not (case.skeleton.astype(bool) & ~label.mask).any()
    # rebuilt CT for validation equals the original inside the window
    np.testing.assert_allclose(case.ct_volume().array, np.clip(ct.array, -1000, 600), atol=0.01)

    # other settings rebuild everything
    other = CacheSettings({**settings.preprocessing, "window": [-1000.0, 400.0]}, alphas=(0.1,))
    assert len(prepare_cases(cases, tmp_path / "c", other).built) == 3


def test_small_airway_mask_by_diameter():
    from core.training.cache import small_airway_mask

    label = np.zeros((40, 40, 60), bool)
    zz, yy = np.mgrid[:40, :40]
    thick = (zz - 20) ** 2 + (yy - 20) ** 2 <= 36  # radius 6 voxels
    thin = (zz - 20) ** 2 + (yy - 20) ** 2 <= 1  # radius 1
    label[:, :, 5:30] = thick[..., None]
    label[:, :, 30:55] = thin[..., None]
    skel = np.zeros_like(label)
    skel[20, 20, 5:55] = True
    small = small_airway_mask(label, skel, (1.0, 1.0, 1.0), max_diameter_mm=5.0)
    assert small[:, :, 35:50].sum() == label[:, :, 35:50].sum()  # the thin tube, 2r ~ 3-4 mm
    assert small[:, :, 8:25].sum() == 0  # the thick one, 2r ~ 13 mm
    assert not (small & ~label).any()


def test_hard_draws_contain_their_centreline_voxel(phantoms, tmp_path):
    from core.training.sampling import CaseSampler, PatchSpec

    settings = CacheSettings(
        {"window": [-1000.0, 600.0], "scale": 255.0, "crop": "none", "margin": 5}, alphas=(0.1,), small_diameter_mm=12.0
    )  # coarse phantom: its thinner bronchi count as "small"
    (case, *_) = prepare_cases(discover_cases(phantoms), tmp_path / "c", settings).cases
    hard = np.asarray(case.skeleton).astype(bool)
    sampler = CaseSampler(case, hard)
    spec = PatchSpec(
        16, 0.8, 0.1, p_hard=1.0, p_small=0.0, max_large_voxels=0, rotation_degrees=15.0, rotation_prob=1.0
    )
    rng = np.random.default_rng(0)
    from core.training.augmentation import position_in_patch

    for _ in range(20):
        s = sampler.draw(spec, rng)
        assert s["kind"] == 2 and s["image"].shape == (1, 16, 16, 16) and s["weight"].shape == (1, 16, 16, 16)
        x = position_in_patch(s["target"], s["start"], 16, s["rotation"].astype(float))
        assert ((x >= 0) & (x <= 15)).all()
        assert set(np.unique(s["label"])) <= {0.0, 1.0}
        assert (s["weight"] >= 0).all() and (s["weight"] <= 1).all()
    mixed = PatchSpec(
        16, 0.8, None, p_hard=0.5, p_small=0.25, max_large_voxels=4096, rotation_degrees=0.0, rotation_prob=0.0
    )
    assert case.meta["counts"]["small"] > 0
    kinds = [sampler.draw(mixed, rng)["kind"] for _ in range(400)]
    share = np.bincount(kinds, minlength=3) / 400
    assert abs(share[2] - 0.5) < 0.08 and abs(share[1] - 0.25) < 0.08


# -- DDP ------------------------------------------------------------------------------------------


def _ddp_worker(rank: int, world: int, port: int, data: str, run: str, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    cfg = tiny_config(stage1={"enabled": False}, stage2={"enabled": False}, data={"val_cases": [], "val_fraction": 0.0})
    trainer = Trainer(cfg, run, data=data, stdout=None)
    status = trainer.run()
    state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    torch.save({"status": status, "state": state, "steps": trainer.state.global_step}, Path(out) / f"rank{rank}.pt")


@pytest.mark.slow
def test_ddp_two_cpu_processes(phantoms, tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = tmp_path / "run"
    ctx = mp.spawn(_ddp_worker, args=(2, port, str(phantoms), str(run), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 180  # a stuck rendezvous fails the test instead of hanging the suite
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the two DDP processes did not finish within 180 s")
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["status"] == r1["status"] == "finished"
    assert r0["steps"] == r1["steps"] == 2  # 3 cases x 2 patches = 6 items over 2 ranks x batch 2: 2 steps (padded)
    assert _same(r0["state"], r1["state"])  # gradients were averaged: ranks stay in step
    ev = read_events(run)
    assert ev[0]["world_size"] == 2 and ev[-1]["status"] == "finished"
    assert len([e for e in ev if e["event"] == "run_start"]) == 1  # only rank 0 writes events
    assert _same(_weights(run / "checkpoints" / "last.pt"), r0["state"])


# -- real data ------------------------------------------------------------------------------------

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.skipif(not (SHARED / "cip" / "ct-64.nrrd").exists(), reason="../shared/data is absent")
def test_prepare_a_real_ct_from_a_csv_with_a_label_selector(tmp_path):
    """The CIP chest CT (79 x 64 x 64) and its label map, airway = (value >> 8) == 2 (555 voxels)."""
    (tmp_path / "pairs.csv").write_text(
        f"image,label\n{SHARED / 'cip' / 'ct-64.nrrd'},{SHARED / 'cip' / 'lm-64.nrrd'}\n"
    )
    settings = CacheSettings(
        {"window": [-1000.0, 600.0], "scale": 255.0, "crop": "lung", "margin": 5},
        label_selector="bits:8:2",
        alphas=(0.1, 0.2),
        small_diameter_mm=10.0,
    )
    (case,) = prepare_cases(discover_cases(tmp_path / "pairs.csv"), tmp_path / "cache", settings).cases
    assert case.name == "ct-64"
    assert case.meta["counts"]["label"] == 555  # the crop keeps every airway voxel
    assert case.shape[0] <= 79 and case.meta["full_shape"] == [79, 64, 64]
    assert 0 < case.meta["counts"]["skeleton"] < 555
    w = np.asarray(case.weights(0.2))
    lab = np.asarray(case.label).astype(bool)
    assert (w[~lab] == 1).all() and w[lab].min() >= 0 and w[lab].max() <= 1 and w[lab].min() < 0.5
    assert case.ct_volume().geometry.spacing == pytest.approx((4.17, 4.17, 3.99), rel=0.01)
