"""Segmentation losses of Zheng et al. (IEEE TMI 2021) and their baselines.

Every loss takes probabilities ``p`` (after the sigmoid), labels ``g`` (0/1, any
dtype) and, where weights apply, voxel weights ``w`` of the same shape; sums run
over all voxels of the batch (spec section 3). Defaults follow the spec:
smoothing ``s = 1``, root ``r = 0.7``, ``eps = 1e-4``, ``alpha = 0.1`` (stage 1;
0.2 in stage 2), ``beta = 1 - alpha``.

Gradients (derived here, checked against autograd in tests/test_losses.py).
Write a union-type loss as ``L = 1 - A/B`` with

    A = sum_i w_i (p_i + eps)^r g_i + s,      B = sum_i w_i (alpha p_i + beta g_i) + s.

Then ``dA/dp_i = w_i r (p_i + eps)^(r-1) g_i`` and ``dB/dp_i = w_i alpha``, so

    dL/dp_i = -(w_i r (p_i + eps)^(r-1) g_i B - A w_i alpha) / B^2.

With ``w = 1`` this is the paper's eq. 13 (RTL); with distance weights, eq. 17
(GUL); with ``r = 1, eps = 0`` it is the Tversky gradient under eq. 10. (The
paper states them with s = 0; the form above holds for any s.)

Gradient-ratio bounds (eqs. 11, 14, 18 of the paper, as derived here): a
background voxel (g = 0, w = 1) receives ``|dL/dp| = alpha A / B^2`` whatever its
p; a foreground voxel i (g = 1) receives ``w_i |r (p_i+eps)^(r-1) B - alpha A| / B^2``.
Because ``p <= 1``, ``A <= (1+eps)^r sum_fg w + s`` and ``B >= beta sum_fg w + s``,
hence ``B / A >= beta / (1+eps)^r`` and

- Tversky (eq. 11, r = 1, eps = 0): ``|grad_fg| / |grad_bg| >= beta / alpha``;
- RTL (eq. 14): ``|grad_fg_i| / |grad_bg| >= r beta (p_i+eps)^(r-1) / (alpha (1+eps)^r) - 1``,
  which grows as p_i falls: badly predicted airway voxels get a larger share;
- GUL (eq. 18): the RTL bound times ``w_i``.

The tests check exactly these inequalities on random inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from core.errors import ConfigError, InputError

LossFn = Callable[..., torch.Tensor]


def _prepare(
    p: torch.Tensor, g: torch.Tensor, w: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    if p.shape != g.shape:
        raise InputError(f"Probabilities {tuple(p.shape)} and labels {tuple(g.shape)} differ in shape.")
    if w is not None and w.shape != p.shape:
        raise InputError(f"Voxel weights {tuple(w.shape)} and probabilities {tuple(p.shape)} differ in shape.")
    # Sums over ~10^7 voxels lose too much in half precision.
    if p.dtype in (torch.float16, torch.bfloat16):
        p = p.float()
    g = g.to(p.dtype)
    if w is not None:
        w = w.to(p.dtype)
    return p, g, w


def _check_alpha(alpha: float, beta: float | None) -> float:
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}.", "The paper uses 0.1 (stage 1) and 0.2 (stage 2).")
    return 1.0 - alpha if beta is None else float(beta)


def dice_loss(p: torch.Tensor, g: torch.Tensor, w: torch.Tensor | None = None, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice: ``1 - (2 sum w p g + s) / (sum w p + sum w g + s)`` (w = 1 when not given)."""
    p, g, w = _prepare(p, g, w)
    if w is None:
        inter, total = (p * g).sum(), p.sum() + g.sum()
    else:
        inter, total = (w * p * g).sum(), (w * p).sum() + (w * g).sum()
    return 1 - (2 * inter + smooth) / (total + smooth)


def weighted_dice_loss(
    p: torch.Tensor,
    g: torch.Tensor,
    w: torch.Tensor | None = None,
    w_f: float = 1.0,
    w_b: float = 1.0,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Class-weighted Dice (the weighted Dice of the paper's eq. 8, in this form): each voxel weighted ``w_f`` if airway, ``w_b`` if background.

    ``1 - (2 sum c p g + s) / (sum c (p + g) + s)`` with ``c = w_f g + w_b (1 - g)``
    (times ``w`` if given). Only the ratio w_f / w_b matters when s = 0.
    """
    p, g, w = _prepare(p, g, w)
    c = w_f * g + w_b * (1 - g)
    if w is not None:
        c = c * w
    return 1 - (2 * (c * p * g).sum() + smooth) / ((c * (p + g)).sum() + smooth)


def general_union_loss(
    p: torch.Tensor,
    g: torch.Tensor,
    w: torch.Tensor | None = None,
    alpha: float = 0.1,
    beta: float | None = None,
    r: float = 0.7,
    eps: float = 1e-4,
    smooth: float = 1.0,
) -> torch.Tensor:
    """GUL (paper eq. 16): ``1 - (sum w (p+eps)^r g + s) / (sum w (alpha p + beta g) + s)``.

    ``w``: distance weights on airway voxels, 1 on background (core.weights.distance_weights);
    ``w = None`` means 1 everywhere, which is RTL. Gradient: eq. 17, see the module docstring.
    """
    beta = _check_alpha(alpha, beta)
    p, g, w = _prepare(p, g, w)
    num = (p + eps).pow(r) * g
    den = alpha * p + beta * g
    if w is not None:
        num, den = w * num, w * den
    return 1 - (num.sum() + smooth) / (den.sum() + smooth)


def root_tversky_loss(
    p: torch.Tensor,
    g: torch.Tensor,
    alpha: float = 0.1,
    beta: float | None = None,
    r: float = 0.7,
    eps: float = 1e-4,
    smooth: float = 1.0,
) -> torch.Tensor:
    """RTL (paper eq. 12): ``1 - (sum (p+eps)^r g + s) / (sum (alpha p + beta g) + s)``; gradient eq. 13."""
    return general_union_loss(p, g, None, alpha=alpha, beta=beta, r=r, eps=eps, smooth=smooth)


def tversky_loss(
    p: torch.Tensor,
    g: torch.Tensor,
    w: torch.Tensor | None = None,
    alpha: float = 0.1,
    beta: float | None = None,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Tversky (paper eq. 10): ``1 - (sum w p g + s) / (sum w (alpha p + beta g) + s)``, alpha + beta = 1.

    With alpha + beta = 1 the denominator equals TP + alpha FP + beta FN.
    """
    return general_union_loss(p, g, w, alpha=alpha, beta=beta, r=1.0, eps=0.0, smooth=smooth)


def weighted_bce_loss(
    p: torch.Tensor,
    g: torch.Tensor,
    w: torch.Tensor | None = None,
    pos_weight: float | str = "balanced",
    clamp: float = 1e-6,
) -> torch.Tensor:
    """Class-weighted binary cross entropy on probabilities, the paper's Fig. 7 baseline.

    ``-mean(w (c_f g log p + c_b (1 - g) log(1 - p)))``. ``pos_weight="balanced"``:
    ``c_f = N / (2 N_f)``, ``c_b = N / (2 N_b)`` over the batch, so both classes weigh
    the same in total; a number gives ``c_f = pos_weight``, ``c_b = 1``.
    ``p`` is clamped to ``[clamp, 1 - clamp]`` before the logarithms.
    """
    p, g, w = _prepare(p, g, w)
    pc = p.clamp(clamp, 1 - clamp)
    c_f: torch.Tensor | float
    c_b: torch.Tensor | float
    if pos_weight == "balanced":
        n = g.numel()
        n_f = g.sum().clamp_min(1.0)
        n_b = (n - g.sum()).clamp_min(1.0)
        c_f, c_b = n / (2 * n_f), n / (2 * n_b)
    elif isinstance(pos_weight, (int, float)):
        c_f, c_b = float(pos_weight), 1.0
    else:
        raise ConfigError(f"pos_weight must be a number or 'balanced', got {pos_weight!r}.")
    per_voxel = -(c_f * g * torch.log(pc) + c_b * (1 - g) * torch.log1p(-pc))
    if w is not None:
        per_voxel = w * per_voxel
    return per_voxel.mean()


def dice_wbce_loss(
    p: torch.Tensor,
    g: torch.Tensor,
    w: torch.Tensor | None = None,
    bce_weight: float = 1.0,
    smooth: float = 1.0,
    pos_weight: float | str = "balanced",
) -> torch.Tensor:
    """Dice + ``bce_weight`` x weighted BCE (Fig. 7 baseline); ``w`` weights both terms."""
    return dice_loss(p, g, w, smooth=smooth) + bce_weight * weighted_bce_loss(p, g, w, pos_weight=pos_weight)


# -- by name (configs, CLI) ------------------------------------------------------

#: name -> (function, whether it uses voxel weights)
LOSSES: dict[str, tuple[LossFn, bool]] = {
    "dice": (dice_loss, False),
    "wdice": (weighted_dice_loss, False),
    "tversky": (tversky_loss, False),
    "rtl": (root_tversky_loss, False),
    "gul": (general_union_loss, True),
    "wbce": (weighted_bce_loss, False),
    "dice_wbce": (dice_wbce_loss, False),
}


def make_loss(name: str, **params: Any) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """``loss(p, g, w)`` for a loss named in :data:`LOSSES` with fixed parameters.

    Only ``gul`` uses the distance weights ``w``; the others ignore it, so one
    training loop can switch losses by name (RTL is GUL with unit weights).
    """
    key = name.lower().replace("-", "_")
    if key not in LOSSES:
        raise ConfigError(f"Unknown loss '{name}'.", f"Use one of: {', '.join(LOSSES)}.")
    fn, weighted = LOSSES[key]

    def loss(p: torch.Tensor, g: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        return fn(p, g, w, **params) if weighted else fn(p, g, **params)

    try:  # fail now, not at the first step, on a misspelt parameter
        loss(torch.full((2,), 0.5), torch.tensor([0.0, 1.0]), torch.ones(2))
    except TypeError as exc:
        raise ConfigError(f"Bad parameter for loss '{name}': {exc}.") from None
    loss.__name__ = f"{key}_loss"
    return loss


# -- group supervision ------------------------------------------------------------


@dataclass
class GroupLoss:
    total: torch.Tensor
    parts: dict[str, torch.Tensor]  # per output, unweighted, e.g. {"enc": ..., "dec": ...}


def _default_names(n: int) -> tuple[str, ...]:
    if n == 2:
        return ("enc", "dec")
    if n == 1:
        return ("out",)
    return tuple(f"aux{i + 1}" for i in range(n - 1)) + ("out",)


def group_loss(
    loss_fn: Callable[..., torch.Tensor],
    logits: Sequence[torch.Tensor],
    g: torch.Tensor,
    w: torch.Tensor | None = None,
    enc_weight: float = 1.0,
    names: Sequence[str] | None = None,
) -> GroupLoss:
    """Group supervision: ``loss_fn`` on the sigmoid of every output, summed.

    The last output (WingsNet's decoder group, a U-Net's full-resolution head)
    has weight 1; every earlier one (WingsNet's encoder group, deep-supervision
    heads) has weight ``enc_weight`` (spec: equal weights by default).
    ``loss_fn(p, g, w)`` is called with ``w`` only when it is given.
    """
    logits = tuple(logits)
    if not logits:
        raise InputError("group_loss needs at least one output.")
    names = tuple(names) if names is not None else _default_names(len(logits))
    if len(names) != len(logits):
        raise InputError(f"{len(names)} names for {len(logits)} outputs.")
    parts: dict[str, torch.Tensor] = {}
    total: torch.Tensor | None = None
    for i, (name, logit) in enumerate(zip(names, logits)):
        p = torch.sigmoid(logit)
        value = loss_fn(p, g) if w is None else loss_fn(p, g, w)
        parts[name] = value
        weight = 1.0 if i == len(logits) - 1 else enc_weight
        total = weight * value if total is None else total + weight * value
    assert total is not None  # at least one output, checked above
    return GroupLoss(total=total, parts=parts)
