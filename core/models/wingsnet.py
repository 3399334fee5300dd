"""WingsNet (Zheng et al., IEEE TMI 2021), as /work/shared/spec/method.md section 2 gives it.

A 3D encoder-decoder of 18 :class:`ConvBlock`s (no residuals, no BatchNorm).
Every block feeds a 2-channel side output, upsampled to the input resolution;
the side outputs of the 12 encoder blocks and of the 6 decoder blocks are
fused, after channel dropout, into one logit each ("group supervision").
``forward`` returns ``(enc, dec)``; the prediction is ``sigmoid(dec)``.

With one input channel and ``width=1`` the model has exactly 1,473,186
parameters (pinned by a test). ``width`` scales every block's channels for
lighter variants (0.5 -> 369,430 parameters, 0.25 -> 92,952).

Source notes:
- Spatial dropout follows the paper (per sample and channel, scaled by
  1/(1-p), :class:`torch.nn.Dropout3d`); the authors' code renormalises by a sum
  over the whole batch, which shrinks training outputs by about 1/batch size.
- Blocks with one attention gate (e1-e3, d5, d6) follow the paper's
  "limited by GPU memory" remark; the others have two gates in cascade.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import InputError


#: Spec table: name, input channels (or source), output channels, dilation, scale (1 = full), gates.
#: Input channels of the first block and of the decoder blocks are derived in ``WingsNet.__init__``.
@dataclass(frozen=True)
class BlockSpec:
    name: str
    out_channels: int
    dilation: int
    scale: int
    gates: int


ENCODER: tuple[BlockSpec, ...] = (
    BlockSpec("e1", 8, 1, 1, 1),
    BlockSpec("e2", 16, 1, 1, 1),
    BlockSpec("e3", 32, 2, 1, 1),
    # maxpool 2
    BlockSpec("e4", 32, 1, 2, 2),
    BlockSpec("e5", 32, 2, 2, 2),
    BlockSpec("e6", 64, 2, 2, 2),
    # maxpool 2
    BlockSpec("e7", 64, 1, 4, 2),
    BlockSpec("e8", 64, 2, 4, 2),
    BlockSpec("e9", 64, 2, 4, 2),
    # maxpool 2
    BlockSpec("e10", 64, 1, 8, 2),
    BlockSpec("e11", 64, 1, 8, 2),
    BlockSpec("e12", 64, 1, 8, 2),
)

DECODER: tuple[BlockSpec, ...] = (
    # up x2, concat(up, e9)
    BlockSpec("d1", 64, 1, 4, 2),
    BlockSpec("d2", 64, 1, 4, 2),
    # up x2, concat(up, e6)
    BlockSpec("d3", 64, 1, 2, 2),
    BlockSpec("d4", 32, 1, 2, 2),
    # up x2, concat(up, e3)
    BlockSpec("d5", 32, 1, 1, 1),
    BlockSpec("d6", 16, 1, 1, 1),
)

#: Encoder blocks after which the features are max-pooled (and kept as skips).
_POOL_AFTER = {"e3", "e6", "e9"}
#: Decoder blocks before which the features are upsampled and concatenated with a skip.
_SKIP_BEFORE = {"d1": "e9", "d3": "e6", "d5": "e3"}


def check_divisible(x: torch.Tensor, divisor: int, model_name: str) -> None:
    """Raise :class:`InputError` unless ``x`` is ``(N, C, D, H, W)`` with sides divisible by ``divisor``."""
    if x.ndim != 5:
        raise InputError(
            f"{model_name} expects a 5D batch (N, C, D, H, W), got shape {tuple(x.shape)}.",
            "Add batch and channel axes: x[None, None] for one (D, H, W) volume.",
        )
    bad = [s for s in x.shape[2:] if s % divisor]
    if bad:
        raise InputError(
            f"{model_name} needs input sides divisible by {divisor}, got {tuple(x.shape[2:])}.",
            f"Pad the patch to multiples of {divisor} (the inference engine pads automatically).",
        )
    coarsest = [s // divisor for s in x.shape[2:]]
    if coarsest[0] * coarsest[1] * coarsest[2] < 2:
        # InstanceNorm needs more than one voxel at the coarsest level.
        raise InputError(
            f"{model_name} input {tuple(x.shape[2:])} is too small: it is a single voxel after downsampling by {divisor}.",
            f"Use patches of at least {2 * divisor} voxels along one side.",
        )


class SpatialDropout(nn.Dropout3d):
    """Channel dropout: zeroes whole channels independently per sample, scales the rest by 1/(1-p).

    This is the paper's behaviour (and :class:`torch.nn.Dropout3d`'s); it keeps
    the expectation of every voxel unchanged between train and eval mode.
    """


class ConvBlock(nn.Module):
    """Conv3x3x3 (dilated) -> InstanceNorm (no affine) -> LeakyReLU(0.01) -> ``gates`` x spatial attention.

    ``forward`` returns ``(features, side)``: the features go to the next block,
    ``side`` is the 2-channel side output at the input resolution (trilinear,
    align_corners=True).
    """

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1, scale: int = 1, gates: int = 1):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, 3, padding=dilation, dilation=dilation)
        self.norm = nn.InstanceNorm3d(out_channels, affine=False)
        self.act = nn.LeakyReLU(0.01)
        self.gates = nn.ModuleList(nn.Conv3d(out_channels, 1, 1, bias=False) for _ in range(gates))
        self.side = nn.Conv3d(out_channels, 2, 1)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.act(self.norm(self.conv(x)))
        for gate in self.gates:
            f = f * torch.sigmoid(gate(f))
        side = self.side(f)
        if self.scale != 1:
            side = F.interpolate(side, scale_factor=self.scale, mode="trilinear", align_corners=True)
        return f, side


def _width(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class WingsNet(nn.Module):
    """WingsNet; ``forward(x)`` returns the logits ``(enc, dec)``, each ``(N, 1, D, H, W)``.

    Args:
        in_channels: input channels (1 for CT).
        width: channel multiplier (1.0 = the paper's network).
        dropout: channel dropout probability before each group's fusion (paper: 0.3).
    """

    divisor = 8
    output_names = ("enc", "dec")

    def __init__(self, in_channels: int = 1, width: float = 1.0, dropout: float = 0.3):
        super().__init__()
        if in_channels < 1:
            raise InputError(f"in_channels must be at least 1, got {in_channels}.")
        if not 0 < width <= 8:
            raise InputError(f"WingsNet width must be in (0, 8], got {width}.", "Use e.g. 1.0, 0.5 or 0.25.")
        if not 0 <= dropout < 1:
            raise InputError(f"dropout must be in [0, 1), got {dropout}.")
        self.in_channels = in_channels
        self.width = float(width)
        self.dropout_p = float(dropout)

        out_ch: dict[str, int] = {}
        blocks: dict[str, ConvBlock] = {}
        prev = in_channels
        for spec in ENCODER:
            c = _width(spec.out_channels, width)
            blocks[spec.name] = ConvBlock(prev, c, spec.dilation, spec.scale, spec.gates)
            out_ch[spec.name] = prev = c
        for spec in DECODER:
            cin = prev + out_ch[_SKIP_BEFORE[spec.name]] if spec.name in _SKIP_BEFORE else prev
            c = _width(spec.out_channels, width)
            blocks[spec.name] = ConvBlock(cin, c, spec.dilation, spec.scale, spec.gates)
            out_ch[spec.name] = prev = c
        self.blocks = nn.ModuleDict(blocks)
        self.enc_dropout = SpatialDropout(dropout)
        self.dec_dropout = SpatialDropout(dropout)
        self.enc_fuse = nn.Conv3d(2 * len(ENCODER), 1, 1)
        self.dec_fuse = nn.Conv3d(2 * len(DECODER), 1, 1)

    def probe_points(self) -> list[tuple[str, nn.Module, int]]:
        """``(name, block, downsampling factor)`` for each block; the block's output[0] is its feature map."""
        return [(s.name, self.blocks[s.name], s.scale) for s in ENCODER + DECODER]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_divisible(x, self.divisor, "WingsNet")
        if x.shape[1] != self.in_channels:
            raise InputError(f"WingsNet was built for {self.in_channels} input channel(s), got {x.shape[1]}.")
        skips: dict[str, torch.Tensor] = {}
        enc_sides: list[torch.Tensor] = []
        dec_sides: list[torch.Tensor] = []
        f = x
        for spec in ENCODER:
            f, side = self.blocks[spec.name](f)
            enc_sides.append(side)
            if spec.name in _POOL_AFTER:
                skips[spec.name] = f
                f = F.max_pool3d(f, 2)
        for spec in DECODER:
            if spec.name in _SKIP_BEFORE:
                up = F.interpolate(f, scale_factor=2, mode="trilinear", align_corners=True)
                f = torch.cat([up, skips[_SKIP_BEFORE[spec.name]]], dim=1)
            f, side = self.blocks[spec.name](f)
            dec_sides.append(side)
        enc = self.enc_fuse(self.enc_dropout(torch.cat(enc_sides, dim=1)))
        dec = self.dec_fuse(self.dec_dropout(torch.cat(dec_sides, dim=1)))
        return enc, dec
