"""Gradient probe: how much of the loss gradient reaches each block, on airway vs background voxels.

This reproduces the paper's gradient-erosion analysis (Zheng et al. 2021,
Sec. III): after one forward/backward pass of a loss on a patch, the gradient
of the loss with respect to each block's output feature map is split by the
label, downsampled to that block's resolution, into foreground (airway) and
background voxels. Shallow blocks whose foreground gradient is swamped by the
background show "gradient erosion"; group supervision and the GUL are meant to
lift the foreground share.

Choices (not fixed by the paper; named here):
- magnitude per voxel = mean over channels of ``|dL/df|``, so blocks with
  different channel counts compare;
- the label is downsampled by max-pooling over each block's factor: a coarse
  voxel that covers any airway voxel counts as foreground;
- the model runs in eval mode by default (no dropout), so the probe is
  deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np

from core.errors import InputError

if TYPE_CHECKING:  # torch loads on first use: `airway --help` never imports it
    import torch


class _Probed(Protocol):
    """A registry model: it names the blocks whose outputs are probed."""

    def probe_points(self) -> Iterable[tuple[str, Any, int]]: ...


@dataclass
class BlockGradient:
    name: str
    scale: int  # downsampling factor of the block's resolution
    channels: int
    fg_voxels: int
    bg_voxels: int
    fg_mean: float  # mean over airway voxels of the per-voxel gradient magnitude
    bg_mean: float
    fg_total: float  # sums: the share of gradient that airway voxels carry
    bg_total: float

    @property
    def ratio(self) -> float:
        """fg_mean / bg_mean (inf when the background gets no gradient, nan without airway voxels)."""
        if self.fg_voxels == 0:
            return float("nan")
        return self.fg_mean / self.bg_mean if self.bg_mean > 0 else float("inf")

    @property
    def fg_share(self) -> float:
        total = self.fg_total + self.bg_total
        return self.fg_total / total if total > 0 else float("nan")


@dataclass
class GradientReport:
    loss: str
    loss_value: float
    parts: dict[str, float]
    rows: list[BlockGradient] = field(default_factory=list)

    def as_dicts(self) -> list[dict[str, Any]]:
        return [{**asdict(r), "ratio": r.ratio, "fg_share": r.fg_share} for r in self.rows]

    def table(self) -> str:
        head = f"{'block':6s} {'scale':>5s} {'ch':>4s} {'fg vox':>8s} {'bg vox':>9s} {'|g| fg':>10s} {'|g| bg':>10s} {'fg/bg':>8s} {'fg share':>8s}"
        lines = [
            f"loss {self.loss} = {self.loss_value:.6g}  ("
            + ", ".join(f"{k} {v:.4g}" for k, v in self.parts.items())
            + ")",
            head,
            "-" * len(head),
        ]
        for r in self.rows:
            lines.append(
                f"{r.name:6s} {'1/' + str(r.scale):>5s} {r.channels:4d} {r.fg_voxels:8d} {r.bg_voxels:9d} "
                f"{r.fg_mean:10.3e} {r.bg_mean:10.3e} {r.ratio:8.3g} {r.fg_share:8.3f}"
            )
        return "\n".join(lines)


def probe_points(model: torch.nn.Module) -> list[tuple[str, Any, int]]:
    """``(name, module, factor)`` of the model's blocks (``model.probe_points()``), wrappers unwrapped."""
    from core.models.checkpoint import unwrap_model

    net = unwrap_model(model)
    if not hasattr(net, "probe_points"):
        raise InputError(
            f"{type(net).__name__} does not name its blocks (no probe_points()).",
            "Use a model from core.models.registry.",
        )
    return list(cast(_Probed, net).probe_points())


def probe_gradients(
    model: torch.nn.Module,
    image: np.ndarray,
    label: np.ndarray,
    loss: str | Callable[..., torch.Tensor] = "gul",
    weights: np.ndarray | None = None,
    enc_weight: float = 1.0,
    loss_params: dict[str, Any] | None = None,
    train_mode: bool = False,
) -> GradientReport:
    """Per-block foreground/background gradient magnitudes for one patch.

    Args:
        model: a registry model (``forward`` returns a tuple of logits; ``probe_points()``).
        image: the network input patch ``(D, H, W)`` (already windowed/scaled), sides multiples of ``model.divisor``.
        label: airway mask of the same shape.
        loss: a name of :data:`core.losses.LOSSES` or a callable ``loss(p, g, w)``.
        weights: voxel weights for weighted losses (GUL); None = 1.
        enc_weight: weight of the auxiliary (encoder-group) outputs in :func:`core.losses.group_loss`.
        train_mode: run with dropout active (the gradient then varies between calls).

    Runs on the device of the model's parameters.
    """
    import torch
    import torch.nn.functional as F

    from core.losses import group_loss, make_loss

    image = np.asarray(image, dtype=np.float32)
    label = np.asarray(label).astype(bool)
    if image.ndim != 3 or image.shape != label.shape:
        raise InputError(f"The image {image.shape} and label {label.shape} must be 3D arrays of the same shape.")
    if weights is not None and np.shape(weights) != image.shape:
        raise InputError(f"The weights {np.shape(weights)} do not match the image {image.shape}.")
    loss_fn = make_loss(loss, **(loss_params or {})) if isinstance(loss, str) else loss
    loss_name = loss if isinstance(loss, str) else getattr(loss, "__name__", "custom")

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.from_numpy(image)[None, None].to(device)
    g = torch.from_numpy(label.astype(np.float32))[None, None].to(device)
    w = None if weights is None else torch.from_numpy(np.asarray(weights, np.float32))[None, None].to(device)

    points = probe_points(model)
    grads: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(name: str) -> Callable[[torch.nn.Module, Any, Any], None]:
        def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
            feat = output[0] if isinstance(output, (tuple, list)) else output
            if feat.requires_grad:
                feat.register_hook(lambda grad: grads.__setitem__(name, grad.detach()))

        return hook

    was_training = model.training
    model.train(train_mode)
    try:
        for name, module, _ in points:
            handles.append(module.register_forward_hook(make_hook(name)))
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            logits = model(x)
            names = getattr(model, "output_names", None)
            result = group_loss(
                loss_fn,
                logits,
                g,
                w,
                enc_weight=enc_weight,
                names=names if names is not None and len(names) == len(logits) else None,
            )
            torch.autograd.backward(result.total)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
        model.zero_grad(set_to_none=True)

    rows = []
    for name, _, factor in points:
        if name not in grads:
            raise InputError(f"Block {name} received no gradient.", "Check that its output feeds the loss.")
        grad = grads[name]
        magnitude = grad.abs().mean(dim=1)[0]  # (d, h, w)
        fg = F.max_pool3d(g, factor)[0, 0] > 0 if factor > 1 else g[0, 0] > 0
        if fg.shape != magnitude.shape:
            raise InputError(
                f"Block {name}: label at 1/{factor} is {tuple(fg.shape)}, features {tuple(magnitude.shape)}."
            )
        n_fg = int(fg.sum())
        n_bg = int(fg.numel() - n_fg)
        fg_total = float(magnitude[fg].sum()) if n_fg else 0.0
        bg_total = float(magnitude[~fg].sum()) if n_bg else 0.0
        rows.append(
            BlockGradient(
                name=name,
                scale=int(factor),
                channels=int(grad.shape[1]),
                fg_voxels=n_fg,
                bg_voxels=n_bg,
                fg_mean=fg_total / n_fg if n_fg else float("nan"),
                bg_mean=bg_total / n_bg if n_bg else float("nan"),
                fg_total=fg_total,
                bg_total=bg_total,
            )
        )
    return GradientReport(
        loss=str(loss_name),
        loss_value=float(result.total.detach()),
        parts={k: float(v.detach()) for k, v in result.parts.items()},
        rows=rows,
    )


def patch_around(
    shape: Sequence[int], centre: Sequence[int], size: int | Sequence[int]
) -> tuple[tuple[slice, slice, slice], tuple[tuple[int, int], ...]]:
    """Slices of a ``size`` patch centred on ``centre`` and clipped to ``shape``, plus the padding to reach ``size``."""
    sizes = (size,) * 3 if isinstance(size, int) else tuple(size)
    slices, pads = [], []
    for n, c, s in zip(shape, centre, sizes):
        if s >= n:
            slices.append(slice(0, n))
            pads.append((0, s - n))
            continue
        lo = int(min(max(c - s // 2, 0), n - s))
        slices.append(slice(lo, lo + s))
        pads.append((0, 0))
    sz, sy, sx = slices
    return (sz, sy, sx), tuple(pads)


def airway_centre(label: np.ndarray) -> tuple[int, int, int]:
    """The airway voxel nearest the label's centroid (inside the airway, unlike the centroid itself)."""
    pts = np.argwhere(label)
    if pts.size == 0:
        z, y, x = (int(s // 2) for s in label.shape)
        return z, y, x
    c = pts.mean(axis=0)
    z, y, x = (int(v) for v in pts[np.argmin(((pts - c) ** 2).sum(axis=1))])
    return z, y, x
