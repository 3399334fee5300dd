"""Losses: hand-computed values, autograd vs the paper's closed-form gradients, gradient-ratio bounds."""

from __future__ import annotations

import math

import pytest
import torch

from core.errors import ConfigError, InputError
from core.losses import (
    dice_loss,
    dice_wbce_loss,
    general_union_loss,
    group_loss,
    make_loss,
    root_tversky_loss,
    tversky_loss,
    weighted_bce_loss,
    weighted_dice_loss,
)

torch.set_num_threads(1)
T = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731


# -- values on hand-computed cases ------------------------------------------------


def test_dice_hand_case():
    p, g = T(1, 0, 0.5, 0.5), T(1, 0, 1, 0)
    # inter 1.5, sum p 2, sum g 2: 1 - (3 + 1) / (4 + 1)
    assert dice_loss(p, g).item() == pytest.approx(0.2)
    assert dice_loss(p, g, smooth=0).item() == pytest.approx(1 - 3 / 4)
    # voxel weights: w = (2, 1, 1, 1) -> inter 2.5, sum wp 3, sum wg 3
    assert dice_loss(p, g, T(2, 1, 1, 1), smooth=0).item() == pytest.approx(1 - 5 / 6)


def test_weighted_dice_hand_case():
    p, g = T(1, 0, 0.5, 0.5), T(1, 0, 1, 0)
    # c = (2, 1, 2, 1): numerator 2 (2*1 + 2*0.5) = 6, denominator 2*2 + 0 + 2*1.5 + 0.5 = 7.5
    assert weighted_dice_loss(p, g, w_f=2, w_b=1, smooth=0).item() == pytest.approx(0.2)
    assert weighted_dice_loss(p, g).item() == pytest.approx(dice_loss(p, g).item())
    # scale invariance of (w_f, w_b) with s = 0
    a = weighted_dice_loss(p, g, w_f=3, w_b=0.5, smooth=0).item()
    assert weighted_dice_loss(p, g, w_f=6, w_b=1, smooth=0).item() == pytest.approx(a)


def test_tversky_hand_case():
    p, g = T(0.8, 0.2, 0.6, 0), T(1, 0, 1, 0)
    # A = 1.4, B = 0.1 * 1.6 + 0.9 * 2 = 1.96 -> 1 - 5/7
    assert tversky_loss(p, g, alpha=0.1, smooth=0).item() == pytest.approx(2 / 7)
    assert tversky_loss(p, g, alpha=0.1).item() == pytest.approx(1 - 2.4 / 2.96)


def test_rtl_and_gul_hand_cases():
    p, g = T(0.25, 0.0, 1.0, 0.5), T(1, 1, 0, 0)
    # r = 0.5, eps = 0, s = 1, alpha = 0.2: A = 0.5 + 0 + 1, B = 0.2 * 1.75 + 0.8 * 2 + 1
    rtl = root_tversky_loss(p, g, alpha=0.2, r=0.5, eps=0, smooth=1).item()
    assert rtl == pytest.approx(1 - 1.5 / 2.95)
    w = T(0.5, 1, 1, 1)
    # A = 0.5 * 0.5 + 1, B = 0.2 (0.125 + 0 + 1 + 0.5) + 0.8 (0.5 + 1) + 1
    gul = general_union_loss(p, g, w, alpha=0.2, r=0.5, eps=0, smooth=1).item()
    assert gul == pytest.approx(1 - 1.25 / 2.525)
    # eps enters as (p + eps)^r: one foreground voxel at p = 0
    one = general_union_loss(T(0.0), T(1.0), alpha=0.5, r=0.5, eps=0.04, smooth=0).item()
    assert one == pytest.approx(1 - 0.2 / 0.5)


def test_defaults_are_the_spec():
    p, g = T(0.3, 0.9, 0.1), T(1, 1, 0)
    expected = 1 - ((0.3 + 1e-4) ** 0.7 + (0.9 + 1e-4) ** 0.7 + 1) / (0.1 * 1.3 + 0.9 * 2 + 1)
    assert root_tversky_loss(p, g).item() == pytest.approx(expected)
    assert general_union_loss(p, g).item() == pytest.approx(expected)


def test_gul_with_unit_weights_is_rtl_and_tversky_is_rtl_with_r1():
    gen = torch.Generator().manual_seed(1)
    p = torch.rand(2, 1, 6, 5, 4, generator=gen, dtype=torch.float64)
    g = (torch.rand(p.shape, generator=gen) < 0.2).double()
    for alpha in (0.1, 0.2, 0.5):
        rtl = root_tversky_loss(p, g, alpha=alpha)
        assert general_union_loss(p, g, torch.ones_like(p), alpha=alpha).item() == pytest.approx(rtl.item(), rel=1e-12)
        assert general_union_loss(p, g, None, alpha=alpha).item() == pytest.approx(rtl.item(), rel=1e-12)
        tv = tversky_loss(p, g, alpha=alpha)
        assert root_tversky_loss(p, g, alpha=alpha, r=1, eps=0).item() == pytest.approx(tv.item(), rel=1e-12)


def test_weighted_bce_hand_case():
    p, g = T(0.9, 0.2, 0.4, 0.1), T(1, 0, 0, 0)
    # balanced: N = 4, N_f = 1 -> c_f = 2, N_b = 3 -> c_b = 2/3
    expected = (2 * -math.log(0.9) + (2 / 3) * -(math.log(0.8) + math.log(0.6) + math.log(0.9))) / 4
    assert weighted_bce_loss(p, g).item() == pytest.approx(expected)
    plain = -(math.log(0.9) + math.log(0.8) + math.log(0.6) + math.log(0.9)) / 4
    assert weighted_bce_loss(p, g, pos_weight=1.0).item() == pytest.approx(plain)
    # p = 0 or 1 stays finite
    assert math.isfinite(weighted_bce_loss(T(0, 1), T(1, 0)).item())
    assert dice_wbce_loss(p, g, bce_weight=0.5).item() == pytest.approx(dice_loss(p, g).item() + 0.5 * expected)


# -- gradients: autograd vs closed forms (eq. 13 RTL, eq. 17 GUL), s = 0, float64 ----


def _random_case(seed: int, n: int = 400):
    gen = torch.Generator().manual_seed(seed)
    p = 0.01 + 0.98 * torch.rand(n, generator=gen, dtype=torch.float64)
    g = (torch.rand(n, generator=gen) < 0.15).double()
    g[0], g[1] = 1.0, 0.0  # both classes present
    w = torch.where(g > 0, torch.rand(n, generator=gen, dtype=torch.float64), torch.ones(n, dtype=torch.float64))
    return p, g, w


def _closed_form(p, g, w, alpha, r, eps):
    beta = 1 - alpha
    A = (w * (p + eps) ** r * g).sum()
    B = (w * (alpha * p + beta * g)).sum()
    return -(w * r * (p + eps) ** (r - 1) * g * B - A * w * alpha) / B**2


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("alpha", [0.1, 0.2])
def test_rtl_gradient_is_eq13(seed, alpha):
    p, g, _ = _random_case(seed)
    p.requires_grad_(True)
    root_tversky_loss(p, g, alpha=alpha, r=0.7, eps=1e-4, smooth=0).backward()
    expected = _closed_form(p.detach(), g, torch.ones_like(g), alpha, 0.7, 1e-4)
    torch.testing.assert_close(p.grad, expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gul_gradient_is_eq17(seed):
    p, g, w = _random_case(seed)
    p.requires_grad_(True)
    general_union_loss(p, g, w, alpha=0.1, r=0.7, eps=1e-4, smooth=0).backward()
    expected = _closed_form(p.detach(), g, w, 0.1, 0.7, 1e-4)
    torch.testing.assert_close(p.grad, expected, rtol=1e-10, atol=1e-14)


def test_tversky_gradient_closed_form():
    p, g, _ = _random_case(5)
    p.requires_grad_(True)
    tversky_loss(p, g, alpha=0.3, smooth=0).backward()
    expected = _closed_form(p.detach(), g, torch.ones_like(g), 0.3, 1.0, 0.0)
    torch.testing.assert_close(p.grad, expected, rtol=1e-10, atol=1e-14)


# -- gradient-ratio bounds (eqs. 11, 14, 18; see core.losses docstring) -------------


def _grads(loss_fn, p, g, w=None, **kw):
    p = p.clone().requires_grad_(True)
    loss_fn(p, g, w, **kw).backward() if w is not None else loss_fn(p, g, **kw).backward()
    grad = p.grad
    bg = grad[g == 0]
    # every background voxel gets the same gradient alpha A / B^2, whatever its p
    torch.testing.assert_close(bg, torch.full_like(bg, bg[0].item()), rtol=1e-10, atol=0)
    return grad[g > 0].abs(), bg[0].abs()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_tversky_ratio_bound_eq11(seed, smooth):
    p, g, _ = _random_case(seed)
    for alpha in (0.1, 0.2, 0.4):
        fg, bg = _grads(tversky_loss, p, g, alpha=alpha, smooth=smooth)
        assert (fg / bg >= (1 - alpha) / alpha - 1e-9).all()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_rtl_ratio_bound_eq14(seed, smooth):
    p, g, _ = _random_case(seed)
    r, eps = 0.7, 1e-4
    for alpha in (0.1, 0.2):
        fg, bg = _grads(root_tversky_loss, p, g, alpha=alpha, r=r, eps=eps, smooth=smooth)
        bound = r * (1 - alpha) * (p[g > 0] + eps) ** (r - 1) / (alpha * (1 + eps) ** r) - 1
        assert (fg / bg >= bound - 1e-9).all()
        assert (bound > 0).all()  # the bound is not vacuous at these settings


@pytest.mark.parametrize("seed", range(5))
def test_gul_ratio_bound_eq18(seed):
    p, g, w = _random_case(seed)
    r, eps, alpha = 0.7, 1e-4, 0.1
    fg, bg = _grads(general_union_loss, p, g, w, alpha=alpha, r=r, eps=eps, smooth=1.0)
    bound = w[g > 0] * (r * (1 - alpha) * (p[g > 0] + eps) ** (r - 1) / (alpha * (1 + eps) ** r) - 1)
    assert (fg / bg >= bound - 1e-9).all()


def test_rtl_ratio_can_fall_below_tversky_bound_so_bounds_differ():
    # a well-predicted foreground voxel: RTL gives it a smaller share than Tversky's beta/alpha
    p, g = T(0.99, 0.99, 0.5), T(1, 1, 0)
    fg, bg = _grads(root_tversky_loss, p, g, alpha=0.1, smooth=0)
    assert (fg / bg < 9).all()


# -- group supervision and by-name construction ------------------------------------


def test_group_loss_combines_with_encoder_weight():
    gen = torch.Generator().manual_seed(3)
    enc = torch.randn(1, 1, 4, 4, 4, generator=gen, dtype=torch.float64)
    dec = torch.randn(1, 1, 4, 4, 4, generator=gen, dtype=torch.float64)
    g = (torch.rand(enc.shape, generator=gen) < 0.3).double()
    w = torch.rand(enc.shape, generator=gen, dtype=torch.float64)
    le = general_union_loss(torch.sigmoid(enc), g, w)
    ld = general_union_loss(torch.sigmoid(dec), g, w)
    out = group_loss(general_union_loss, (enc, dec), g, w, enc_weight=0.5)
    assert set(out.parts) == {"enc", "dec"}
    assert out.parts["enc"].item() == pytest.approx(le.item())
    assert out.parts["dec"].item() == pytest.approx(ld.item())
    assert out.total.item() == pytest.approx(0.5 * le.item() + ld.item())
    three = group_loss(dice_loss, (enc, enc, dec), g, names=("ds4", "ds2", "out"))
    assert list(three.parts) == ["ds4", "ds2", "out"]


def test_make_loss_by_name():
    p, g, w = T(0.3, 0.9, 0.1), T(1, 1, 0), T(0.5, 1, 1)
    assert make_loss("gul", alpha=0.2)(p, g, w).item() == pytest.approx(general_union_loss(p, g, w, alpha=0.2).item())
    # RTL ignores the weights
    assert make_loss("rtl")(p, g, w).item() == pytest.approx(root_tversky_loss(p, g).item())
    with pytest.raises(ConfigError, match="Unknown loss"):
        make_loss("focal")
    with pytest.raises(ConfigError, match="Bad parameter"):
        make_loss("dice", alpha=0.1)
    with pytest.raises(ConfigError, match="alpha"):
        make_loss("gul", alpha=1.5)


def test_shape_mismatch_is_clear():
    with pytest.raises(InputError, match="differ in shape"):
        dice_loss(torch.rand(3), torch.rand(4))
    with pytest.raises(InputError, match="weights"):
        general_union_loss(torch.rand(3), torch.rand(3), torch.rand(2))
