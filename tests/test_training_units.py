"""Unit tests of the training parts that need no model: config, dataset layout, split,
patch extraction with rotation, sampling, DDP sharding, the event log."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from core.errors import ConfigError, InputError
from core.training import ddp
from core.training.augmentation import Channel, extract_patch, position_in_patch, rotation_matrix, start_containing
from core.training.config import load_config, save_config
from core.training.dataset import discover_cases, split_cases
from core.training.events import EventLog, check_event, read_events
from core.training.sampling import epoch_order

# -- config ---------------------------------------------------------------------------


def test_paper_preset_has_the_papers_numbers():
    cfg = load_config(preset="paper")
    s0, s1, s2 = cfg.stage0, cfg.stage1, cfg.stage2
    assert s0.loss == "dice"
    assert (s1.loss, s1.alpha, s1.threshold, s1.epochs, s1.lr, s1.milestones) == ("gul", 0.1, 0.8, 100, 0.01, [60, 90])
    assert (s2.alpha, s2.threshold, s2.epochs, s2.lr, s2.milestones) == (0.2, 0.9, 30, 0.01, [15, 25])
    for s in (s0, s1, s2):
        assert (s.momentum, s.weight_decay, s.gamma) == (0.9, 1e-4, 0.1)
    assert (cfg.sampling.patch_size, cfg.sampling.patches_per_case, cfg.sampling.p_hard) == (128, 16, 0.5)
    assert cfg.sampling.rotation_degrees == 15.0
    assert cfg.preprocessing.window == [-1000.0, 600.0]


@pytest.mark.parametrize("name", ["quick", "demo"])
def test_other_presets_load(name):
    cfg = load_config(preset=name)
    assert cfg.sampling.patch_size % 8 == 0 and cfg.stages()


def test_config_round_trip(tmp_path):
    cfg = load_config(preset="quick")
    cfg.stage1.epochs = 7
    cfg.data.val_cases = ["a"]
    save_config(cfg, tmp_path / "c.toml")
    back = load_config(tmp_path / "c.toml")
    assert back.to_dict() == cfg.to_dict()


def test_user_file_overrides_preset(tmp_path):
    (tmp_path / "c.toml").write_text("[stage1]\nepochs = 3\n[sampling]\npatch_size = 32\n")
    cfg = load_config(tmp_path / "c.toml", preset="paper")
    assert cfg.stage1.epochs == 3 and cfg.sampling.patch_size == 32
    assert cfg.stage2.epochs == 30  # untouched preset value


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[stage1]\nalpha = 1.5\n", "stage1.alpha"),
        ("[stage1]\nepochs = 0\n", "stage1.epochs"),
        ("[stage2]\nmilestones = [25, 15]\n", "stage2.milestones"),
        ("[sampling]\npatch_size = 30\n", "multiple of 8"),
        ("[sampling]\np_hard = 0.8\np_small = 0.5\n", "p_small"),
        ('[stage1]\nloss = "focal"\n', "stage1.loss"),
        ('[stage1]\nepochs = "ten"\n', "whole number"),
        ("[stage1]\nepoch = 3\n", "Did you mean 'stage1.epochs'"),
        ('[data]\non_bad_case = "ignore"\n', "data.on_bad_case"),
        ('[run]\nbest_metric = "loss"\n', "run.best_metric"),
        ("[stage0]\nenabled = false\n[stage1]\nenabled = false\n[stage2]\nenabled = false\n", "disabled"),
        ("this is = = not toml", "not valid TOML"),
    ],
)
def test_bad_values_give_clear_config_errors(tmp_path, text, needle):
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "c.toml", preset="paper")
    assert needle in str(err.value)


def test_missing_config_file_and_unknown_preset(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="Unknown preset"):
        load_config(preset="fast")


# -- dataset layouts and split ------------------------------------------------------------


def _touch(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


def test_imagestr_labelstr_matching_both_styles(tmp_path):
    _touch(tmp_path / "imagesTr" / "ATM_001_0000.nii.gz")
    _touch(tmp_path / "labelsTr" / "ATM_001_0000.nii.gz")  # same name (ATM'22)
    _touch(tmp_path / "imagesTr" / "case_0000.nii.gz")
    _touch(tmp_path / "labelsTr" / "case.nii.gz")  # nnU-Net: no channel suffix
    _touch(tmp_path / "imagesTr" / "lonely_0000.mha")  # no label
    cases = {c.name: c for c in discover_cases(tmp_path)}
    assert set(cases) == {"ATM_001", "case", "lonely"}
    assert cases["ATM_001"].label.name == "ATM_001_0000.nii.gz"
    assert cases["case"].label.name == "case.nii.gz"
    assert cases["lonely"].label is None


def test_csv_pairs_relative_to_the_csv(tmp_path):
    _touch(tmp_path / "ct" / "a.nii.gz")
    _touch(tmp_path / "lab" / "a_airway.nii.gz")
    (tmp_path / "pairs.csv").write_text("image,label\nct/a.nii.gz,lab/a_airway.nii.gz\n")
    (c,) = discover_cases(tmp_path / "pairs.csv")
    assert c.name == "a" and c.image == (tmp_path / "ct" / "a.nii.gz").resolve()
    assert c.label == (tmp_path / "lab" / "a_airway.nii.gz").resolve()


def test_dataset_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        discover_cases(tmp_path / "none")
    with pytest.raises(InputError, match="no imagesTr"):
        discover_cases(tmp_path)


def test_split_is_seeded_and_respects_user_lists():
    names = [f"c{i}" for i in range(10)]
    t1, v1 = split_cases(names, 0.2, seed=3)
    t2, v2 = split_cases(list(reversed(names)), 0.2, seed=3)
    assert (t1, v1) == (t2, v2) and len(v1) == 2 and set(t1) | set(v1) == set(names) and not set(t1) & set(v1)
    assert split_cases(names, 0.2, seed=4)[1] != v1 or split_cases(names, 0.2, seed=5)[1] != v1
    assert split_cases(names, 0.0)[1] == []
    assert split_cases(["a", "b"], 0.1) == (["a"], ["b"]) or split_cases(["a", "b"], 0.1)[1] in (["a"], ["b"])
    assert split_cases(names, 0.2, val_cases=["c3"]) == ([n for n in sorted(names) if n != "c3"], ["c3"])
    with pytest.raises(ConfigError, match="not in the dataset"):
        split_cases(names, val_cases=["zz"])


# -- patch extraction -------------------------------------------------------------------------


def test_unrotated_patch_is_an_exact_copy_with_padding():
    vol = np.arange(10 * 11 * 12, dtype=np.float32).reshape(10, 11, 12)
    (p,) = extract_patch([Channel(vol, 1, -5.0)], np.array([2, 3, 4]), 4)
    np.testing.assert_array_equal(p, vol[2:6, 3:7, 4:8])
    (q,) = extract_patch([Channel(vol, 1, -5.0)], np.array([-2, 9, 10]), 4)
    assert q[0, 0, 0] == -5.0 and q[2, 0, 0] == vol[0, 9, 10]
    assert (q[:2] == -5).all() and (q[2:, 2:] == -5).all()


def test_rotation_by_90_degrees_matches_rot90():
    rng = np.random.default_rng(0)
    vol = rng.random((9, 9, 9)).astype(np.float32)
    (p,) = extract_patch([Channel(vol, 1)], np.zeros(3, int), 9, rotation_matrix((1, 2), 90.0))
    # output (y, x) reads input at centre + R (x - c): a quarter turn of each axial slice
    expected = np.rot90(vol, k=-1, axes=(1, 2))
    assert np.allclose(p, expected, atol=1e-4) or np.allclose(p, np.rot90(vol, k=1, axes=(1, 2)), atol=1e-4)


def test_rotated_label_threshold():
    vol = np.zeros((40, 40, 40), np.float32)
    vol[10:30, 10:30, 10:30] = 1
    (p,) = extract_patch([Channel(vol, 1)], np.array([4, 4, 4]), 32, rotation_matrix((0, 2), 12.0))
    assert 0 < p.min() + 1 and p.max() <= 1.0 and ((p > 0) & (p < 1)).any()  # interpolated edge
    vol_count = (p >= 0.5).sum()
    assert abs(int(vol_count) - 20**3) < 0.05 * 20**3  # rotation keeps the volume


@pytest.mark.parametrize("degrees", [0.0, 15.0, -15.0])
def test_target_voxel_always_inside_the_patch(degrees):
    rng = np.random.default_rng(1)
    for plane in ((0, 1), (0, 2), (1, 2)):
        rot = rotation_matrix(plane, degrees)
        for _ in range(50):
            v = rng.integers(0, 100, 3)
            start = start_containing(v, 24, rot, rng)
            x = position_in_patch(v, start, 24, rot)
            assert (x >= 0).all() and (x <= 23).all()
    # and the voxel really is there: a single bright voxel shows up in the rotated patch
    vol = np.zeros((60, 60, 60), np.float32)
    vol[30, 31, 29] = 1
    rot = rotation_matrix((0, 1), 15.0)
    start = start_containing(np.array([30, 31, 29]), 16, rot, np.random.default_rng(2))
    (p,) = extract_patch([Channel(vol, 1)], start, 16, rot)
    assert p.max() > 0.2


def test_epoch_order_covers_every_case_equally_and_is_seeded():
    o = epoch_order(5, 16, seed=1, stage=1, epoch=3)
    assert np.bincount(o).tolist() == [16] * 5
    assert (o == epoch_order(5, 16, 1, 1, 3)).all() and not (o == epoch_order(5, 16, 1, 1, 4)).all()


def test_shard_gives_disjoint_equal_batches():
    idx = np.arange(10)
    a = ddp.shard(idx, ddp.DistInfo(0, 2, 0), 2)
    b = ddp.shard(idx, ddp.DistInfo(1, 2, 0), 2)
    assert len(a) == len(b) == 6  # 3 steps x batch 2, padded by wrapping
    assert set(a[:4]) | set(b[:4]) == set(range(8))
    assert ddp.shard(idx, ddp.DistInfo(), 4).tolist() == list(range(10)) + [0, 1]


# -- events ---------------------------------------------------------------------------------


def test_event_log_writes_file_and_stdout(tmp_path):
    out = io.StringIO()
    with EventLog(tmp_path / "run7", stdout=out) as log:
        log.emit("warning", message="hello")
        log.emit(
            "step",
            stage=1,
            epoch=0,
            step=1,
            global_step=1,
            loss=float("nan"),
            loss_enc=0.5,
            loss_dec=np.float32(0.25),
            lr=0.01,
            patches_per_s=3.0,
        )
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    events = read_events(tmp_path / "run7")
    assert [json.loads(x) for x in lines] == events
    assert events[0]["run"] == "run7" and events[0]["message"] == "hello"
    assert events[1]["loss"] is None and events[1]["loss_dec"] == 0.25
    assert all(check_event(e) == [] for e in events)
    assert check_event({"event": "epoch", "time": 1, "run": "r"}) != []
    with pytest.raises(ValueError):
        EventLog(tmp_path / "r", stdout=None).emit("bogus")


# -- feedback: ETA, warnings ---------------------------------------------------------------------


def _noisy_epoch_times(n: int = 60, base: float = 10.0, seed: int = 3) -> list[float]:
    """Epoch times as a shared machine gives them: +-40 % noise, a validation every 2nd epoch (+30 %),
    and a few epochs 3-4x slower (another job, the stage-0 hard-sample pass)."""
    rng = np.random.default_rng(seed)
    times = base * rng.uniform(0.6, 1.4, n) * np.where(np.arange(n) % 2 == 1, 1.3, 1.0)
    for i in (7, 19, 20, 41):
        times[i] *= 3.5
    return [float(t) for t in times]


def _etas(times: list[float], estimate) -> list[tuple[float, float]]:
    """(ETA reported after epoch i, what that ETA has counted down to when epoch i+1 ends)."""
    out = []
    n = len(times)
    for i, t in enumerate(times):
        out.append(estimate(i, t, n - i - 1))
    return [(out[i], out[i] - times[i + 1]) for i in range(n - 1)] + [(out[-1], out[-1])]


def test_eta_is_smoothed_over_noisy_epoch_times():
    """Issue 24: the ETA jumped (2m47s -> 5m17s). It was the last epoch's time x the epochs left; now a
    median of recent epochs, smoothed, so a slow epoch does not double it and it falls steadily."""
    from core.training.feedback import EtaEstimator

    times = _noisy_epoch_times()
    est = EtaEstimator()
    smoothed = _etas(times, lambda i, t, left: (est.add(t), est.eta(left))[1])
    old = _etas(times, lambda i, t, left: t * left)

    def worst_rise(pairs: list[tuple[float, float]]) -> float:
        """Largest ETA rise after an epoch, relative to where the previous ETA had counted down to."""
        return max(pairs[i + 1][0] / max(pairs[i][1], 1e-9) for i in range(5, len(pairs) - 5))

    assert worst_rise(old) > 2.0  # the old estimate jumped like the one reported
    assert worst_rise(smoothed) < 1.35
    # monotone-ish: from one epoch to the next the ETA itself rises by 10 % at most (the old one doubled)
    assert max(smoothed[i + 1][0] / smoothed[i][0] for i in range(5, len(smoothed) - 1)) < 1.10
    assert max(old[i + 1][0] / old[i][0] for i in range(5, len(old) - 1)) > 2.0
    # and it is right: within 30 % of the time really left while 10 or more epochs remain
    for i in range(5, len(times) - 10):
        truth = sum(times[i + 1 :])
        assert abs(smoothed[i][0] - truth) / truth < 0.30, (i, smoothed[i][0], truth)
    assert smoothed[-1][0] == 0.0


def test_eta_follows_a_lasting_change_of_speed():
    from core.training.feedback import EtaEstimator

    est = EtaEstimator()
    for _ in range(10):
        est.add(10.0)
    for _ in range(8):  # the machine got twice as slow for good
        est.add(20.0)
    assert est.eta(10) == pytest.approx(200.0, rel=0.15)
    assert EtaEstimator().eta(5) == 0.0  # nothing known yet: no made-up figure


def test_stage0_misses_are_reported_in_words_and_not_at_zero():
    """Issue 24: "Stage 0 missed 0 of 37 centreline voxels (0.0 %)" was a warning nobody could read."""
    from core.training.feedback import hard_sampling_message

    assert hard_sampling_message(0, 37) is None
    assert hard_sampling_message(5, 0) is None
    kind, text = hard_sampling_message(4, 40)
    assert kind == "info" and "10.0 %" in text and "hard skeleton sampling draws patches around" in text
    kind, text = hard_sampling_message(97, 115, next_stage=1)
    assert kind == "warning" and "84 %" in text and "Train stage 0 longer (stage0.epochs)" in text


def test_oversegmentation_rule():
    from core.training.feedback import MAX_LABEL_MULTIPLE, Marked, oversegmentation_warning

    assert oversegmentation_warning(1, 3, Marked(0.02, 1.1), 85.0) is None
    assert oversegmentation_warning(1, 3, Marked(0.6, 4.0), 10.0) is not None  # more than half the volume
    assert oversegmentation_warning(1, 3, Marked(0.1, MAX_LABEL_MULTIPLE + 1), 5.0) is not None  # > 10x the label
    text = oversegmentation_warning(1, 3, Marked(0.63, 27.0), 0.3)
    assert "63 %" in text and "27 times the labelled airway" in text and "DSC 0.3 %" in text


# -- the run folder's file names ------------------------------------------------------------------


def test_trainer_and_tab_name_the_run_folder_files_from_one_module(tmp_path):
    """Issue 23 item 4: events.jsonl, stop.request, trainer.pid ... were spelled in core/training and
    app/training separately."""
    import app.training.runs as runs
    from app.training.launch import check_settings  # noqa: F401  (imports the names too)
    from core.training import run_files
    from core.training.trainer import Trainer

    for name in ("EVENTS_FILE", "STOP_FILE", "PID_FILE", "LOG_FILE", "CONFIG_FILE"):
        assert getattr(runs, name) is getattr(run_files, name)
    cfg = load_config(preset="quick")
    trainer = Trainer(cfg, tmp_path / "run", data=tmp_path, stdout=None)
    files = run_files.RunFiles.of(tmp_path / "run")
    assert trainer.paths == files
    assert runs.request_stop(tmp_path / "run") == trainer.paths.stop  # what the tab writes, the trainer reads
    assert runs.best_checkpoint_path(runs.RunHistory(), tmp_path / "run") is None
    trainer.events.close()
    root = Path(__file__).resolve().parents[1]
    for path in [*(root / "core" / "training").glob("*.py"), *(root / "app" / "training").glob("*.py")]:
        if path.name == "run_files.py":
            continue
        text = path.read_text(encoding="utf-8")
        for literal in ('"events.jsonl"', '"stop.request"', '"trainer.pid"', '"trainer.log"', '"config.toml"'):
            assert literal not in text, (path.name, literal)


# -- command line ----------------------------------------------------------------------------


def test_train_command_reports_config_errors_in_one_line(tmp_path, capsys):
    from core.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text("[stage1]\nalpha = 2.0\n")
    assert main(["train", "--config", str(bad), "--data", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stage1.alpha" in err[0]
    assert main(["train", "--preset", "quick", "--out", str(tmp_path / "run")]) == 2
    assert "No dataset given" in capsys.readouterr().err
    assert main(["train", "--resume", "--preset", "quick", "--out", str(tmp_path / "run")]) == 2
    assert "--resume reads the run's own config.toml" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(tmp_path / "nothing")]) == 2
    assert "Cannot resume" in capsys.readouterr().err
    assert (
        main(
            ["train", "--preset", "quick", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--more-epochs", "2"]
        )
        == 2
    )
    assert "Add --resume" in capsys.readouterr().err


def test_prepare_command_names_bad_cases(tmp_path, capsys):
    from core.cli import main

    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "imagesTr" / "x_0000.nii.gz").write_bytes(b"junk")
    assert main(["prepare", "--data", str(tmp_path), "--preset", "quick"]) == 2
    assert "x: no label file" in capsys.readouterr().err


def test_phantom_dataset_command_writes_the_atm_layout(tmp_path, capsys):
    from core.cli import main

    assert (
        main(
            [
                "phantom-dataset",
                "--n",
                "2",
                "--size",
                "32",
                "--spacing",
                "2",
                "2",
                "2.5",
                "--seed",
                "5",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    cases = discover_cases(tmp_path)
    assert [c.name for c in cases] == ["phantom_000", "phantom_001"]
    assert all(c.label is not None and c.label.name == f"{c.name}.nii.gz" for c in cases)
    info = json.loads((tmp_path / "phantoms.json").read_text())
    assert info["seed"] == 5 and info["spacing"] == [2.0, 2.0, 2.5]
    assert main(["phantom-dataset", "--n", "0", "--out", str(tmp_path / "x")]) == 2
