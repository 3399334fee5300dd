"""Checkpoints: round trip, resume state, and refusal of corrupt, foreign and malicious files."""

from __future__ import annotations

import json
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import CheckpointError
from core.models import build_model
from core.models.checkpoint import (
    FORMAT_VERSION,
    HEADER_KEYS,
    capture_rng_state,
    load_checkpoint,
    model_from_checkpoint,
    restore_rng_state,
    save_checkpoint,
)

torch.set_num_threads(1)

PREP = {"window": [-1000, 600], "scale": 255.0, "crop": "lung", "margin": 5}


@pytest.fixture()
def small():
    torch.manual_seed(0)
    return build_model("wingsnet", width=0.25)


def test_round_trip_weights_and_header(tmp_path, small):
    path = save_checkpoint(
        tmp_path / "ckpt" / "best.pt",
        small,
        {
            "preprocessing": PREP,
            "training": {"loss": "gul", "alpha": 0.1},
            "stage": 1,
            "metrics": {"td": 81.5, "dsc": np.float64(90.25)},
        },
    )
    ckpt = load_checkpoint(path)
    h = ckpt.header
    assert set(HEADER_KEYS) <= set(h)
    assert h["architecture"] == "wingsnet" and h["arch_args"] == {"in_channels": 1, "width": 0.25, "dropout": 0.3}
    assert h["preprocessing"] == PREP and h["training"] == {"loss": "gul", "alpha": 0.1} and h["stage"] == 1
    assert h["metrics"] == {"td": 81.5, "dsc": 90.25}
    assert h["format_version"] == FORMAT_VERSION and "torch" in h["versions"] and h["created"].endswith("+00:00")
    json.dumps(h)  # JSON-able
    sd = small.state_dict()
    assert ckpt.state_dict.keys() == sd.keys()
    assert all(torch.equal(ckpt.state_dict[k], sd[k]) for k in sd)
    assert ckpt.extra_state is None

    model, header = model_from_checkpoint(path)
    assert header == h and not model.training
    x = torch.randn(1, 1, 16, 16, 16)
    small.eval()
    with torch.no_grad():
        assert torch.equal(model(x)[1], small(x)[1])
    assert [p.name for p in tmp_path.joinpath("ckpt").iterdir()] == ["best.pt"]  # no temp files left


@pytest.mark.slow
def test_resume_state_round_trip(tmp_path, small):
    opt = torch.optim.SGD(small.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[60, 90], gamma=0.1)
    small.train()
    small(torch.randn(1, 1, 16, 16, 16))[1].mean().backward()
    opt.step()
    sched.step()
    torch.manual_seed(7)
    np.random.seed(7)
    random.seed(7)
    rng = capture_rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    path = save_checkpoint(
        tmp_path / "last.pt",
        small,
        {"stage": 1},
        extra_state={
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "rng": rng,
            "epoch": 4,
            "global_step": 17,
            "best": {"td": np.float32(0.5)},
        },
    )
    extra = load_checkpoint(path).extra_state
    assert extra["epoch"] == 4 and extra["best"]["td"] == pytest.approx(0.5)
    opt2 = torch.optim.SGD(small.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    opt2.load_state_dict(extra["optimizer"])
    buf = opt.state_dict()["state"][0]["momentum_buffer"]
    assert torch.equal(opt2.state_dict()["state"][0]["momentum_buffer"], buf)
    sched2 = torch.optim.lr_scheduler.MultiStepLR(opt2, milestones=[60, 90], gamma=0.1)
    sched2.load_state_dict(extra["scheduler"])
    assert sched2.last_epoch == 1
    restore_rng_state(extra["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(again[0], expected[0]) and np.array_equal(again[1], expected[1]) and again[2] == expected[2]


def test_unsafe_extra_state_is_refused_at_save(tmp_path, small):
    path = tmp_path / "last.pt"
    save_checkpoint(path, small, {"stage": 0})
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="numpy array"):
        save_checkpoint(path, small, {"stage": 1}, extra_state={"x": np.zeros(3)})
    with pytest.raises(CheckpointError, match="object"):
        save_checkpoint(path, small, {"stage": 1}, extra_state={"x": object()})
    assert path.read_bytes() == before  # the old file is untouched
    assert len(list(tmp_path.iterdir())) == 1


def test_wrapped_model_saves_plain_keys(tmp_path, small):
    path = save_checkpoint(tmp_path / "a.pt", torch.nn.DataParallel(small))
    assert not any(k.startswith("module.") for k in load_checkpoint(path).state_dict)


def test_missing_empty_truncated_and_random_files(tmp_path, small):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "empty.pt")
    good = save_checkpoint(tmp_path / "good.pt", small).read_bytes()
    (tmp_path / "trunc.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "trunc.pt")
    (tmp_path / "noise.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="not a PyTorch archive"):
        load_checkpoint(tmp_path / "noise.pt")
    # a zip whose middle is zeroed: either refused as CheckpointError or still a checkpoint, never a raw exception
    damaged = bytearray(good)
    mid = len(damaged) // 2
    damaged[mid : mid + 64] = bytes(64)
    (tmp_path / "damaged.pt").write_bytes(bytes(damaged))
    try:
        ckpt = load_checkpoint(tmp_path / "damaged.pt")
    except CheckpointError:
        pass  # refused: fine
    else:  # zeroed tensor bytes are still tensors; the file must at least parse into a checkpoint
        assert ckpt.architecture == "wingsnet"


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_malicious_pickle_is_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    payload = {"airway_studio_checkpoint": 1, "header_json": "{}", "state_dict": {}, "extra_state": _Evil(marker)}
    torch.save(payload, tmp_path / "evil.pt")
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="could run code"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()
    with open(tmp_path / "evil.pkl", "wb") as f:  # a plain pickle, not a torch archive
        pickle.dump(_Evil(marker), f)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "evil.pkl")
    assert not marker.exists()


def test_foreign_files(tmp_path, small):
    torch.save(small.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="bare PyTorch state dict"):
        load_checkpoint(tmp_path / "bare.pt")
    torch.save({"epoch": 3, "weights": [1, 2]}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an Airway Studio checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save(
        {"airway_studio_checkpoint": FORMAT_VERSION + 1, "header_json": "{}", "state_dict": {}}, tmp_path / "future.pt"
    )
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1}"):
        load_checkpoint(tmp_path / "future.pt")
    torch.save({"airway_studio_checkpoint": 1, "header_json": "{not json", "state_dict": {}}, tmp_path / "badjson.pt")
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(tmp_path / "badjson.pt")


def test_other_architecture_is_named(tmp_path, small):
    unet = build_model("unet3d", base_channels=4, levels=3)
    path = save_checkpoint(tmp_path / "unet.pt", unet)
    with pytest.raises(CheckpointError, match="'unet3d' model, not 'wingsnet'"):
        load_checkpoint(path, expect_architecture="wingsnet")
    with pytest.raises(CheckpointError, match="'unet3d' model, not 'wingsnet'"):
        model_from_checkpoint(path, expect_architecture="wingsnet")
    model, header = model_from_checkpoint(path)
    assert header["architecture"] == "unet3d" and type(model).__name__ == "UNet3D"

    foreign = save_checkpoint(tmp_path / "foo.pt", small.state_dict(), {"architecture": "foonet", "arch_args": {}})
    with pytest.raises(CheckpointError, match="architecture 'foonet' is unknown"):
        model_from_checkpoint(foreign)

    # header says width 0.5 but the weights are width 0.25
    lying = save_checkpoint(
        tmp_path / "lying.pt", small.state_dict(), {"architecture": "wingsnet", "arch_args": {"width": 0.5}}
    )
    with pytest.raises(CheckpointError, match="do not match a 'wingsnet'.*another shape"):
        model_from_checkpoint(lying)
    bad_args = save_checkpoint(
        tmp_path / "args.pt", small.state_dict(), {"architecture": "wingsnet", "arch_args": {"depth": 3}}
    )
    with pytest.raises(CheckpointError, match="arguments do not fit.*written by Airway Studio 0"):
        model_from_checkpoint(bad_args)


def test_header_architecture_must_match_model(tmp_path, small):
    with pytest.raises(CheckpointError, match="header says architecture 'unet3d'"):
        save_checkpoint(tmp_path / "x.pt", small, {"architecture": "unet3d"})
    with pytest.raises(CheckpointError, match="not built by core.models.registry"):
        save_checkpoint(tmp_path / "x.pt", torch.nn.Linear(2, 2))
    assert not os.path.exists(tmp_path / "x.pt")


# -- header fields checked when loaded (issue 27 item 8) ----------------------------------------

BAD_FIELDS = [
    (("preprocessing", "window"), "x", "preprocessing.window"),
    (("preprocessing", "window"), [600, -1000], "preprocessing.window"),
    (("preprocessing", "window"), [-1000, float("nan")], "preprocessing.window"),
    (("preprocessing", "scale"), 0, "preprocessing.scale"),
    (("preprocessing", "scale"), "255", "preprocessing.scale"),
    (("preprocessing", "crop"), "lungs", "preprocessing.crop"),
    (("preprocessing", "margin"), -1, "preprocessing.margin"),
    (("preprocessing", "margin"), 2.5, "preprocessing.margin"),
    (("preprocessing", "lung_threshold"), "air", "preprocessing.lung_threshold"),
    (("preprocessing",), "lung", "preprocessing"),
    (("inference", "window"), 0, "inference.window"),
    (("inference", "window"), "48", "inference.window"),
    (("inference", "step"), -24, "inference.step"),
    (("inference", "spacing"), [2.5, 2.5], "inference.spacing"),
    (("inference", "spacing"), [2.5, 0, 3.0], "inference.spacing"),
    (("inference", "spacing"), "2.5", "inference.spacing"),
    (("training", "validation"), {"window": "big"}, "training.validation.window"),
    (("arch_args", "width"), "x", "arch_args.width"),
    (("arch_args", "in_channels"), 1.5, "arch_args.in_channels"),
    (("arch_args", "dropout"), True, "arch_args.dropout"),
    (("architecture",), 7, "architecture"),
    (("stage",), "one", "stage"),
    (("stage",), 5, "stage"),
    (("metrics", "td"), "high", "metrics.td"),
    (("versions", "airway_studio"), 1, "versions.airway_studio"),
    (("train_cases",), "ph000", "train_cases"),
    (("card",), "phantoms", "card"),
    (("card", "spacing_mm"), ["a", 1, 1], "card.spacing_mm"),
    (("card", "held_out"), {"td": "95"}, "card.held_out.td"),
    (("card", "input"), {"extent_mm": [1, 2]}, "card.input.extent_mm"),
    (("card", "kind"), "imaginary", "card.kind"),
]


def _with_field(header: dict, keys: tuple, value) -> dict:
    out = json.loads(json.dumps(header))
    node = out
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return out


def _write_raw(path: Path, small, header: dict) -> Path:
    """A checkpoint whose header is exactly ``header`` (save_checkpoint would complete it), as an
    edited or foreign file would be."""
    from core.models.checkpoint import _MAGIC

    payload = {
        _MAGIC: FORMAT_VERSION,
        "header_json": json.dumps(header),
        "state_dict": {k: v.detach().clone() for k, v in small.state_dict().items()},
        "extra_state": None,
    }
    torch.save(payload, path)
    return path


@pytest.fixture()
def good_header(tmp_path, small):
    path = save_checkpoint(
        tmp_path / "good.pt",
        small,
        {
            "preprocessing": PREP,
            "inference": {"window": 32, "step": 16, "spacing": [2.5, 2.5, 3.0]},
            "stage": 1,
            "metrics": {"td": 90.0},
            "card": {"data": "2 phantoms", "kind": "synthetic", "spacing_mm": [2.5, 2.5, 3.0]},
            "train_cases": ["a"],
        },
    )
    return load_checkpoint(path).header


@pytest.mark.parametrize(("keys", "value", "field"), BAD_FIELDS, ids=[f"{f}={v!r}" for _, v, f in BAD_FIELDS])
def test_each_bad_header_field_is_named_when_loaded(tmp_path, small, good_header, keys, value, field):
    from core.models.card import checkpoint_card_text

    path = _write_raw(tmp_path / "bad.pt", small, _with_field(good_header, keys, value))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert f"'{field}'" in message and "save_checkpoint" in message, message
    # the Segment panel's description (read without torch) says the same, instead of a summary
    summary, lines = checkpoint_card_text(path)
    assert summary.startswith("damaged checkpoint header") and f"'{field}'" in summary


def test_good_and_shipped_headers_pass(tmp_path, small, good_header):
    from core.models.card import read_header
    from core.models.header import header_problems
    from core.resources import resources_root

    assert header_problems(good_header) == []
    shipped = sorted((resources_root() / "models").glob("*.pt"))
    for path in shipped:
        assert header_problems(read_header(path)) == [], path.name


def test_all_bad_fields_are_listed_at_once(tmp_path, small, good_header):
    header = _with_field(_with_field(good_header, ("preprocessing", "window"), "x"), ("inference", "step"), 0)
    path = _write_raw(tmp_path / "bad.pt", small, header)
    with pytest.raises(CheckpointError, match=r"2 fields .*'preprocessing.window'.*'inference.step'"):
        load_checkpoint(path)


@pytest.mark.slow  # two CLI processes, each importing torch
def test_window_x_is_one_clear_line_in_models_and_segment_not_a_traceback(tmp_path, small, good_header):
    """Issue 27 item 8: ``preprocessing.window = "x"`` gave a ValueError traceback in ``segment``
    while ``models --checkpoint`` said nothing; both now refuse it with the same message (exit 2)."""
    import subprocess
    import sys

    from core.io import write_volume
    from core.phantom import make_phantom

    root = Path(__file__).resolve().parents[1]
    path = _write_raw(tmp_path / "bad.pt", small, _with_field(good_header, ("preprocessing", "window"), "x"))
    ct = tmp_path / "ct.nii.gz"
    write_volume(make_phantom((32, 32, 32), seed=0).ct, ct)
    for argv in (
        ["models", "--checkpoint", str(path)],
        [
            "segment",
            "--method",
            "model",
            "--model",
            str(path),
            "--input",
            str(ct),
            "--output",
            str(tmp_path / "m.nii.gz"),
        ],
    ):
        proc = subprocess.run(
            [sys.executable, str(root / "main.py"), *argv], capture_output=True, text=True, cwd=root, timeout=300
        )
        assert proc.returncode == 2, (argv[0], proc.stdout, proc.stderr)
        assert "'preprocessing.window'" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "m.nii.gz").exists()


def test_the_apps_predictor_refuses_a_bad_header_with_the_same_message(tmp_path, small, good_header):
    from core.segmentation import Predictor

    path = _write_raw(tmp_path / "bad.pt", small, _with_field(good_header, ("inference", "spacing"), "2.5"))
    with pytest.raises(CheckpointError, match="'inference.spacing'"):
        Predictor(path, device="cpu", backend="torch")


def test_out_of_range_architecture_arguments_name_the_field(tmp_path, small, good_header):
    path = _write_raw(tmp_path / "bad.pt", small, _with_field(good_header, ("arch_args", "width"), -1.0))
    with pytest.raises(CheckpointError, match="'arch_args'.*width"):
        model_from_checkpoint(path)


def test_malicious_checkpoint_is_still_refused_before_the_header_is_read(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        torch.save({"airway_studio_checkpoint": 1, "header_json": "{}", "state_dict": {}, "extra_state": Evil()}, f)
    with pytest.raises(CheckpointError, match="could run code"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()
