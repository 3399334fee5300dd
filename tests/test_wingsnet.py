"""WingsNet and the U-Net baseline: structure from the spec table, shapes, dropout, FLOPs, registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.errors import ConfigError, InputError
from core.models import build_model, list_models
from core.models.flops import forward_flops, parameter_count
from core.models.wingsnet import DECODER, ENCODER, SpatialDropout, WingsNet

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def net() -> WingsNet:
    torch.manual_seed(0)
    return build_model("wingsnet")


def test_parameter_count_is_the_papers(net):
    assert sum(p.numel() for p in net.parameters()) == 1_473_186


@pytest.mark.parametrize("width, count", [(0.5, 369_430), (0.25, 92_952)])
def test_width_variants_parameter_counts(width, count):
    assert parameter_count(build_model("wingsnet", width=width)) == count


def test_block_table(net):
    names = [s.name for s in ENCODER + DECODER]
    assert names == [f"e{i}" for i in range(1, 13)] + [f"d{i}" for i in range(1, 7)]
    one_gate = {"e1", "e2", "e3", "d5", "d6"}
    dilated = {"e3", "e5", "e6", "e8", "e9"}
    channels = {
        "e1": (1, 8),
        "e2": (8, 16),
        "e3": (16, 32),
        "e4": (32, 32),
        "e6": (32, 64),
        "e10": (64, 64),
        "d1": (128, 64),
        "d2": (64, 64),
        "d3": (128, 64),
        "d4": (64, 32),
        "d5": (64, 32),
        "d6": (32, 16),
    }
    for name, block in net.blocks.items():
        assert len(block.gates) == (1 if name in one_gate else 2), name
        assert block.conv.dilation == ((2,) * 3 if name in dilated else (1,) * 3), name
        assert block.conv.padding == block.conv.dilation
        assert all(g.bias is None and g.out_channels == 1 for g in block.gates)
        assert block.side.out_channels == 2
        assert block.act.negative_slope == 0.01
        if name in channels:
            assert (block.conv.in_channels, block.conv.out_channels) == channels[name], name
    assert net.enc_fuse.in_channels == 24 and net.dec_fuse.in_channels == 12
    assert net.divisor == 8 and net.output_names == ("enc", "dec")


def test_instance_norm_without_affine_and_no_batchnorm(net):
    norms = [m for m in net.modules() if isinstance(m, nn.InstanceNorm3d)]
    assert len(norms) == 18
    assert all(not m.affine and not m.track_running_stats for m in norms)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


@pytest.mark.parametrize("shape", [(1, 1, 16, 16, 16), (2, 1, 24, 32, 16)])
def test_forward_gives_two_logits_of_the_input_shape(net, shape):
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(shape))
    assert isinstance(out, tuple) and len(out) == 2
    assert all(o.shape == shape for o in out)
    assert all(torch.isfinite(o).all() for o in out)


def test_bad_inputs_are_clear(net):
    with pytest.raises(InputError, match="divisible by 8"):
        net(torch.randn(1, 1, 16, 20, 16))
    with pytest.raises(InputError, match="5D"):
        net(torch.randn(16, 16, 16))
    with pytest.raises(InputError, match="input channel"):
        net(torch.randn(1, 2, 16, 16, 16))
    with pytest.raises(InputError, match="too small"):
        net(torch.randn(1, 1, 8, 8, 8))


def test_eval_is_deterministic_and_train_uses_dropout(net):
    x = torch.randn(1, 1, 16, 16, 16)
    net.eval()
    with torch.no_grad():
        a, b = net(x), net(x)
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])
    net.train()
    torch.manual_seed(1)
    with torch.no_grad():
        c, d = net(x), net(x)
    net.eval()
    assert not torch.equal(c[1], d[1])


def test_spatial_dropout_is_per_sample_and_channel():
    drop = SpatialDropout(0.3).train()
    torch.manual_seed(0)
    y = drop(torch.ones(64, 24, 4, 4, 4))
    flat = y.reshape(64, 24, -1)
    # each (sample, channel) map is all zero or all 1/(1-p)
    assert torch.all(flat.amin(-1) == flat.amax(-1))
    values = torch.unique(flat).tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / 0.7)
    kept = flat[..., 0] > 0
    assert not torch.all(kept == kept[0])  # masks differ between samples
    assert 0.6 < kept.float().mean().item() < 0.8


def test_dropout_preserves_the_expectation_of_the_fused_logit(net):
    # E[fuse(dropout(s))] = fuse(s) because the fusion is linear: compare the mean over many draws
    torch.manual_seed(2)
    sides = torch.randn(1, 24, 4, 4, 4)
    n = 4000
    with torch.no_grad():
        net.train()
        train = net.enc_fuse(net.enc_dropout(sides.expand(n, -1, -1, -1, -1))).mean(0)
        net.eval()
        evaluated = net.enc_fuse(net.enc_dropout(sides))[0]
    spread = (train - evaluated).abs().max().item()
    # without the 1/(1-p) rescaling the mean would be off by 0.3 |fuse - bias|, far above the tolerance
    unscaled_error = (0.3 * (evaluated - net.enc_fuse.bias)).abs().max().item()
    assert spread < 0.05 < unscaled_error / 4


def test_flops_agree_with_the_layer_shapes_and_the_spec():
    # closed form from the table: 2 FLOPs per multiply-add of every convolution at 128^3
    total = 0
    prev = 1
    skips = {"d1": 64, "d3": 64, "d5": 32}
    for spec in ENCODER + DECODER:
        cin = prev + skips.get(spec.name, 0)
        voxels = (128 // spec.scale) ** 3
        total += 2 * voxels * spec.out_channels * (cin * 27 + spec.gates + 2)
        prev = spec.out_channels
    total += 2 * 128**3 * (24 + 12)
    counted = forward_flops("wingsnet", size=128)
    assert counted == total
    assert counted / 1e9 == pytest.approx(614, rel=0.01)


def test_unet_baseline():
    torch.manual_seed(0)
    unet = build_model("unet3d").eval()
    assert parameter_count(unet) == 1_459_683
    assert unet.divisor == 8
    with torch.no_grad():
        out = unet(torch.randn(2, 1, 16, 24, 8))
    assert len(out) == 3 and all(o.shape == (2, 1, 16, 24, 8) for o in out)
    single = build_model("unet3d", deep_supervision=False, levels=3)
    assert single.divisor == 4
    with torch.no_grad():
        assert len(single(torch.randn(1, 1, 8, 8, 12))) == 1
    with pytest.raises(InputError, match="divisible by 8"):
        unet(torch.randn(1, 1, 12, 16, 16))


def test_registry():
    assert {"wingsnet", "unet3d"} <= set(list_models())
    m = build_model("WingsNet", width=0.25)
    assert m.arch_name == "wingsnet" and m.arch_args == {"in_channels": 1, "width": 0.25, "dropout": 0.3}
    with pytest.raises(ConfigError, match="Unknown model architecture 'resnet'"):
        build_model("resnet")
    with pytest.raises(ConfigError, match="no argument"):
        build_model("wingsnet", depth=3)
