"""Parameter counts and forward FLOPs of registered models, without running them on real data.

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` on the
``meta`` device (shapes only, no memory, no arithmetic), so a 128^3 count takes
well under a second. It counts convolutions and matrix products (2 FLOPs per
multiply-add); normalisation, activations, gates' products and interpolation are
elementwise and left out, which is the usual convention and how the spec's
"about 614 GFLOP per 128^3 patch" for WingsNet comes out.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from core.models.registry import build_model


def parameter_count(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only))


def forward_flops(
    name: str, arch_args: dict[str, Any] | None = None, size: int | tuple[int, int, int] = 128, batch: int = 1
) -> int:
    """FLOPs of one forward pass of architecture ``name`` on a ``(batch, C, *size)`` input."""
    shape = (size, size, size) if isinstance(size, int) else tuple(size)
    with torch.device("meta"):
        model = build_model(name, **(arch_args or {})).eval()
        x = torch.empty((batch, getattr(model, "in_channels", 1), *shape))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return int(counter.get_total_flops())


def model_summary(name: str, arch_args: dict[str, Any] | None = None, size: int = 128) -> dict[str, Any]:
    """``{name, arch_args, parameters, gflops, divisor}`` for one architecture and argument set."""
    with torch.device("meta"):
        model = build_model(name, **(arch_args or {}))
    return {
        "name": name,
        "arch_args": dict(arch_args or {}),
        "parameters": parameter_count(model),
        "gflops": forward_flops(name, arch_args, size) / 1e9,
        "divisor": int(getattr(model, "divisor", 1)),
        "outputs": list(getattr(model, "output_names", ())),
    }
