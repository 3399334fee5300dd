"""Gradient probe: closed forms on toy models, WingsNet/U-Net tables, and the `gradients` / `models` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.cli import main
from core.gradients import airway_centre, patch_around, probe_gradients
from core.models import build_model

torch.set_num_threads(1)


class _Toy(nn.Module):
    """One 1x1x1 conv block (weight 1, bias 0) at 1/factor resolution; its output, upsampled, is the logit."""

    def __init__(self, factor: int = 1):
        super().__init__()
        self.factor = factor
        self.block = nn.Conv3d(1, 1, 1)
        with torch.no_grad():
            self.block.weight.fill_(1.0)
            self.block.bias.zero_()
        self.divisor = factor

    def probe_points(self):
        return [("b", self.block, self.factor)]

    def forward(self, x):
        if self.factor > 1:
            x = F.avg_pool3d(x, self.factor)
        f = self.block(x)
        if self.factor > 1:
            f = F.interpolate(f, scale_factor=self.factor, mode="nearest")
        return (f,)


def _case(seed=0, shape=(4, 6, 8)):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=shape).astype(np.float32)
    label = rng.random(shape) < 0.25
    label[0, 0, 0] = True
    weights = np.where(label, rng.uniform(0.1, 1.0, shape), 1.0).astype(np.float32)
    return image, label, weights


def _gul_grad_wrt_logit(logit, g, w, alpha=0.1, r=0.7, eps=1e-4):
    """dL/dlogit = dL/dp * p (1 - p), dL/dp from eq. 17 with s = 0 (float64)."""
    p = 1 / (1 + np.exp(-logit.astype(np.float64)))
    g = g.astype(np.float64)
    A = (w * (p + eps) ** r * g).sum()
    B = (w * (alpha * p + (1 - alpha) * g)).sum()
    dp = -(w * r * (p + eps) ** (r - 1) * g * B - A * w * alpha) / B**2
    return dp * p * (1 - p)


def test_full_resolution_block_gets_the_closed_form_gradient():
    image, label, weights = _case()
    report = probe_gradients(_Toy(), image, label, "gul", weights=weights, loss_params={"smooth": 0.0})
    expected = np.abs(_gul_grad_wrt_logit(image, label, weights.astype(np.float64)))
    (row,) = report.rows
    assert (row.fg_voxels, row.bg_voxels) == (label.sum(), (~label).sum())
    assert row.fg_mean == pytest.approx(expected[label].mean(), rel=1e-4)
    assert row.bg_mean == pytest.approx(expected[~label].mean(), rel=1e-4)
    assert row.ratio == pytest.approx(row.fg_mean / row.bg_mean)
    assert row.fg_share == pytest.approx(expected[label].sum() / expected.sum(), rel=1e-4)


def test_coarse_block_uses_the_max_pooled_label():
    image, label, weights = _case(1, shape=(4, 8, 8))
    report = probe_gradients(_Toy(factor=2), image, label, "gul", weights=weights, loss_params={"smooth": 0.0})
    # the coarse value feeds its 2x2x2 children: its gradient is their sum
    coarse = image.reshape(2, 2, 4, 2, 4, 2).mean(axis=(1, 3, 5))
    logit = np.repeat(np.repeat(np.repeat(coarse, 2, 0), 2, 1), 2, 2)
    fine = _gul_grad_wrt_logit(logit, label, weights.astype(np.float64))
    grad = np.abs(fine.reshape(2, 2, 4, 2, 4, 2).sum(axis=(1, 3, 5)))
    fg = label.reshape(2, 2, 4, 2, 4, 2).any(axis=(1, 3, 5))
    (row,) = report.rows
    assert row.fg_voxels == fg.sum() and row.bg_voxels == (~fg).sum() and row.scale == 2
    assert row.fg_mean == pytest.approx(grad[fg].mean(), rel=1e-4)
    if (~fg).any():
        assert row.bg_mean == pytest.approx(grad[~fg].mean(), rel=1e-4)


@pytest.mark.slow
def test_wingsnet_table_is_complete_and_deterministic():
    torch.manual_seed(0)
    net = build_model("wingsnet", width=0.25)
    net.train()
    image = np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32)
    label = np.zeros((16, 16, 16), bool)
    label[:, 2:5, 2:5] = True  # leaves background at every resolution, 1/8 included
    a = probe_gradients(net, image, label, "rtl")
    b = probe_gradients(net, image, label, "rtl")
    assert [r.name for r in a.rows] == [f"e{i}" for i in range(1, 13)] + [f"d{i}" for i in range(1, 7)]
    assert set(a.parts) == {"enc", "dec"}
    assert a.loss_value == pytest.approx(a.parts["enc"] + a.parts["dec"])
    for r, s in zip(a.rows, b.rows):
        assert r.fg_voxels + r.bg_voxels == (16 // r.scale) ** 3
        assert np.isfinite([r.fg_mean, r.bg_mean]).all() and r.fg_mean > 0 and r.bg_mean > 0
        assert r.fg_mean == s.fg_mean  # eval mode: no dropout
    assert net.training  # mode restored
    assert all(p.grad is None for p in net.parameters())
    assert "e1" in a.table() and "fg/bg" in a.table()


def test_unet_probe_and_encoder_weight():
    torch.manual_seed(0)
    net = build_model("unet3d", base_channels=4, levels=3)
    image = np.random.default_rng(1).normal(size=(8, 8, 8)).astype(np.float32)
    label = np.zeros((8, 8, 8), bool)
    label[2:6, 3:5, :] = True
    rep = probe_gradients(net, image, label, "dice", enc_weight=0.0)
    assert [r.name for r in rep.rows] == ["enc1", "enc2", "enc3", "dec1", "dec2"]
    assert set(rep.parts) == {"ds2", "out"}
    assert rep.loss_value == pytest.approx(rep.parts["out"])


def test_patch_helpers():
    slices, pads = patch_around((10, 40, 40), (5, 38, 2), 16)
    assert slices == (slice(0, 10), slice(24, 40), slice(0, 16)) and pads == ((0, 6), (0, 0), (0, 0))
    label = np.zeros((5, 5, 5), bool)
    label[1, 1, 1:4] = True
    assert airway_centre(label) == (1, 1, 2)


@pytest.fixture(scope="module")
def case_files(tmp_path_factory):
    from core.io import write_volume
    from core.phantom import make_phantom

    d = tmp_path_factory.mktemp("case")
    ph = make_phantom((32, 48, 48), spacing=(1.5, 1.5, 2.0), seed=0)
    write_volume(ph.ct, d / "ct.nii.gz")
    write_volume(ph.label, d / "label.nii.gz")
    return d / "ct.nii.gz", d / "label.nii.gz"


@pytest.mark.slow
def test_gradients_command(case_files, tmp_path, capsys):
    ct, label = case_files
    code = main(
        [
            "gradients",
            "--model",
            "wingsnet",
            "--arch-args",
            '{"width": 0.25}',
            "--ct",
            str(ct),
            "--label",
            str(label),
            "--patch",
            "16",
            "--json",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["blocks"]) == 18 and out["loss"] == "gul" and out["patch"] == 16

    from core.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "m.pt", build_model("wingsnet", width=0.25), {"preprocessing": {"scale": 1.0}})
    assert (
        main(
            [
                "gradients",
                "--model",
                str(ckpt),
                "--ct",
                str(ct),
                "--label",
                str(label),
                "--patch",
                "16",
                "--loss",
                "rtl",
                "--alpha",
                "0.2",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "loss rtl" in text and "d6" in text

    assert main(["gradients", "--model", "wingsnet", "--ct", str(ct), "--label", str(label), "--patch", "12"]) == 2
    assert "multiple of 8" in capsys.readouterr().err
    assert main(["gradients", "--model", "nonet", "--ct", str(ct), "--label", str(label)]) == 2
    assert "neither a checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_models_command(capsys):
    assert main(["models", "--json", "--size", "32"]) == 0
    listed = json.loads(capsys.readouterr().out)
    # the shipped checkpoints are listed after the architectures (rows without a variant)
    rows = {(r["name"], r["variant"]): r for r in listed if r["row"] == "architecture"}
    assert {r["row"] for r in listed} <= {"architecture", "checkpoint"}
    wings = rows[("wingsnet", "width=1")]
    assert wings["parameters"] == 1_473_186 and wings["outputs"] == ["enc", "dec"]
    # FLOPs scale with the voxel count: 614.46 GFLOP at 128^3 -> /64 at 32^3
    assert wings["gflops"] == pytest.approx(614.455 / 64, rel=1e-3)
    assert rows[("unet3d", "base=16")]["parameters"] == 1_459_683
