"""A plain 3D U-Net with deep supervision: the kind of baseline the WingsNet paper compares with.

Not from the paper's code: a standard Çiçek-style 3D U-Net (two 3x3x3 convs per
level, max-pool down, trilinear up + concat), with InstanceNorm (no affine) and
LeakyReLU(0.01) as in WingsNet so the comparison isolates the architecture.
Deep supervision: a 1x1x1 head on every decoder level, upsampled to the input
resolution. ``forward`` returns the logits coarsest-first; the last one is the
full-resolution prediction, as the registry contract requires.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import InputError
from core.models.wingsnet import check_divisible


class DoubleConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(in_channels, out_channels, 3, padding=1),
            nn.InstanceNorm3d(out_channels, affine=False),
            nn.LeakyReLU(0.01),
            nn.Conv3d(out_channels, out_channels, 3, padding=1),
            nn.InstanceNorm3d(out_channels, affine=False),
            nn.LeakyReLU(0.01),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(x)
        return out


class UNet3D(nn.Module):
    """3D U-Net; ``levels`` resolutions (``levels - 1`` poolings), channels ``base * 2**level``.

    Args:
        in_channels: input channels (1 for CT).
        base_channels: channels at full resolution (4 levels: 16 -> 1,459,683 parameters, about
            WingsNet's size; 32 -> 5,836,227).
        levels: number of resolutions; input sides must be multiples of ``2**(levels-1)``.
        deep_supervision: if False, ``forward`` returns a 1-tuple with the final logit.
    """

    def __init__(self, in_channels: int = 1, base_channels: int = 16, levels: int = 4, deep_supervision: bool = True):
        super().__init__()
        if levels < 2 or levels > 6:
            raise InputError(f"UNet3D levels must be 2..6, got {levels}.")
        if base_channels < 1:
            raise InputError(f"UNet3D base_channels must be positive, got {base_channels}.")
        self.in_channels = in_channels
        self.levels = levels
        self.deep_supervision = deep_supervision
        self.divisor = 2 ** (levels - 1)
        ch = [base_channels * 2**i for i in range(levels)]
        self.encoder = nn.ModuleList()
        prev = in_channels
        for c in ch:
            self.encoder.append(DoubleConv(prev, c))
            prev = c
        # decoder level i (from coarse to fine) works at resolution levels-2-i
        self.decoder = nn.ModuleList(DoubleConv(ch[i + 1] + ch[i], ch[i]) for i in reversed(range(levels - 1)))
        # only heads that are used, so DistributedDataParallel sees no unused parameters
        head_levels = list(reversed(range(levels - 1))) if deep_supervision else [0]
        self.heads = nn.ModuleList(nn.Conv3d(ch[i], 1, 1) for i in head_levels)
        n_out = levels - 1 if deep_supervision else 1
        self.output_names = tuple(f"ds{2 ** (levels - 2 - i)}" for i in range(levels - 2)) + ("out",)
        self.output_names = self.output_names[-n_out:]

    def probe_points(self) -> list[tuple[str, nn.Module, int]]:
        pts = [(f"enc{i + 1}", m, 2**i) for i, m in enumerate(self.encoder)]
        pts += [(f"dec{i + 1}", m, 2 ** (self.levels - 2 - i)) for i, m in enumerate(self.decoder)]
        return pts

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        check_divisible(x, self.divisor, "UNet3D")
        if x.shape[1] != self.in_channels:
            raise InputError(f"UNet3D was built for {self.in_channels} input channel(s), got {x.shape[1]}.")
        skips: list[torch.Tensor] = []
        f = x
        for i, block in enumerate(self.encoder):
            f = block(f)
            if i < self.levels - 1:
                skips.append(f)
                f = F.max_pool3d(f, 2)
        outs: list[torch.Tensor] = []
        for i, block in enumerate(self.decoder):
            up = F.interpolate(f, scale_factor=2, mode="trilinear", align_corners=True)
            f = block(torch.cat([up, skips[-1 - i]], dim=1))
            last = i == self.levels - 2
            if self.deep_supervision or last:
                logit = self.heads[len(outs)](f)
                scale = 2 ** (self.levels - 2 - i)
                if scale != 1:
                    logit = F.interpolate(logit, scale_factor=scale, mode="trilinear", align_corners=True)
                outs.append(logit)
        return tuple(outs)
