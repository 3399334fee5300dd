"""The ignore label: voxels left out of the losses (pseudo-labelled real CTs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core import losses
from core.training.config import StageSection


def _random(n=4000, seed=0):
    gen = torch.Generator().manual_seed(seed)
    p = torch.rand(n, generator=gen, dtype=torch.float64)
    g = (torch.rand(n, generator=gen, dtype=torch.float64) > 0.8).double()
    w = torch.rand(n, generator=gen, dtype=torch.float64)
    keep = (torch.rand(n, generator=gen, dtype=torch.float64) > 0.3).double()
    return p, g, w, keep


@pytest.mark.parametrize("loss", ["dice", "rtl", "gul"])
def test_ignored_voxels_drop_out_of_the_loss_and_get_no_gradient(loss):
    from core.training.trainer import stage_loss

    stage = StageSection(loss=loss, alpha=0.1)
    fn = stage_loss(stage)
    p, g, w, keep = _random()
    k = keep.bool()
    p.requires_grad_(True)
    if loss == "gul":
        masked = fn(p, g, w * keep)
        subset = fn(p[k].detach(), g[k], w[k])
    else:
        masked = fn(p, g, keep)
        subset = fn(p[k].detach(), g[k])  # w=None: the plain loss on the kept voxels alone
    assert masked.item() == pytest.approx(subset.item(), rel=1e-12)
    masked.backward()
    assert torch.all(p.grad[~k] == 0)
    assert torch.count_nonzero(p.grad[k]) > 0


def test_rtl_with_a_keep_mask_is_rtl_on_the_kept_voxels():
    p, g, _, keep = _random(seed=3)
    k = keep.bool()
    via_gul = losses.general_union_loss(p, g, keep, alpha=0.2, r=0.7)
    rtl = losses.root_tversky_loss(p[k], g[k], alpha=0.2, r=0.7)
    assert via_gul.item() == pytest.approx(rtl.item(), rel=1e-12)


def _write_case(folder, label_values: np.ndarray, seed=0):
    from core.io import write_volume
    from core.phantom import make_phantom
    from core.volume import LabelVolume

    ph = make_phantom(32, spacing=(2.0, 2.0, 2.5), seed=seed)
    write_volume(ph.ct, folder / "imagesTr" / "c_0000.nii.gz")
    lab = np.where(ph.label.mask, 1, 0).astype(np.uint8)
    lab[label_values] = 2
    write_volume(LabelVolume(lab, ph.label.geometry), folder / "labelsTr" / "c.nii.gz")
    return ph, lab


def test_cache_keeps_the_ignore_label_apart_and_the_sampler_returns_it(tmp_path):
    from core.preprocess import Preprocessing
    from core.training.cache import CacheSettings, cached_case_if_fresh, prepare_cases
    from core.training.dataset import discover_cases
    from core.training.sampling import CaseSampler, PatchSpec

    zone = np.zeros((32, 32, 32), bool)
    zone[10:20, 5:25, 5:25] = True
    ph, lab = _write_case(tmp_path, zone)
    assert (lab == 1).any() and (lab == 2).any()
    prep = Preprocessing(crop="none").to_dict()
    plain = CacheSettings(prep, "nonzero", (0.1,), 2.0)
    with_ignore = CacheSettings(prep, "nonzero", (0.1,), 2.0, ignore_value=2)
    assert plain.key() != with_ignore.key()
    cases = discover_cases(tmp_path)
    report = prepare_cases(cases, tmp_path / "cache", with_ignore)
    case = report.cases[0]
    assert np.array_equal(np.asarray(case.label).astype(bool), lab == 1)  # ignored voxels are not airway
    assert np.array_equal(np.asarray(case.ignore).astype(bool), lab == 2)
    assert case.meta["counts"]["ignore"] == int((lab == 2).sum())
    # the plain settings see another cache: the ignore-aware one is not reused for them, nor the reverse
    assert cached_case_if_fresh(cases[0], plain, tmp_path / "cache" / "c") is None
    assert cached_case_if_fresh(cases[0], with_ignore, tmp_path / "cache" / "c") is not None

    sampler = CaseSampler(case)
    spec = PatchSpec(
        size=16,
        threshold=0.8,
        alpha=0.1,
        p_hard=0.0,
        p_small=0.0,
        max_large_voxels=10**6,
        rotation_degrees=0.0,
        rotation_prob=0.0,
    )
    sample = sampler.draw(spec, np.random.default_rng(1))
    start = sample["start"]
    sl = tuple(slice(int(a), int(a) + 16) for a in start)
    assert sample["ignore"].shape == (1, 16, 16, 16)
    assert np.array_equal(sample["ignore"][0].astype(bool), (lab == 2)[sl])


def test_a_real_negative_is_cached_and_an_empty_label_still_refused(tmp_path):
    """A pseudo-label without airway (abdomen, lower thorax) is a negative; a plain empty label is a mistake."""
    from core.errors import InputError
    from core.preprocess import Preprocessing
    from core.training.cache import CacheSettings, build_case
    from core.training.dataset import discover_cases

    zone = np.zeros((32, 32, 32), bool)
    zone[5:25, 5:25, 5:25] = True
    _write_case(tmp_path, zone)
    from core.io import read_volume, write_volume
    from core.volume import LabelVolume

    path = tmp_path / "labelsTr" / "c.nii.gz"
    lab = np.asarray(read_volume(path).array)
    lab[lab == 1] = 0  # no airway left: background and ignored voxels only
    write_volume(LabelVolume(lab, read_volume(path).geometry), path)
    prep = Preprocessing(crop="none").to_dict()
    case = discover_cases(tmp_path)[0]
    cached = build_case(case, CacheSettings(prep, "nonzero", (0.1,), 2.0, ignore_value=2), tmp_path / "neg")
    assert cached.meta["counts"]["label"] == 0
    assert np.array_equal(np.asarray(cached.ignore).astype(bool), zone)
    assert np.asarray(cached.weights(0.1)).min() == 1.0  # no airway, no distance weighting
    lab[:] = 0
    write_volume(LabelVolume(lab, read_volume(path).geometry), path)
    with pytest.raises(InputError, match="the label is empty"):
        build_case(case, CacheSettings(prep, "nonzero", (0.1,), 2.0, ignore_value=2), tmp_path / "empty")


def test_a_cache_without_ignore_has_none(tmp_path):
    from core.training.cache import CachedCase

    assert CachedCase("x", tmp_path, {}).ignore is None


def test_pseudo_label_marks_airway_lungs_and_trusted_background():
    from core.phantom import make_phantom
    from core.preprocess import lung_mask
    from core.training.pseudo_labels import IGNORE_VALUE, pseudo_label

    ph = make_phantom(48, seed=2)
    lab = pseudo_label(ph.ct, ph.label).array
    assert set(np.unique(lab)) == {0, 1, IGNORE_VALUE}
    assert np.array_equal(lab == 1, ph.label.mask)
    lungs = lung_mask(ph.ct.array)
    assert np.all(lab[lungs & ~ph.label.mask] == IGNORE_VALUE)  # uncertain: may hold unlabelled bronchi
    # air outside the body and the soft tissue far from the lungs stay trusted background
    assert lab[0, 0, 0] == 0 and (lab == 0).sum() > 0.2 * lab.size


@pytest.mark.slow
def test_pseudo_label_with_tubes_trusts_parenchyma_and_leaves_missed_bronchi_uncertain():
    """lungs="tubes": a model must learn that lung parenchyma is not airway (ignoring the whole lung let one
    leak into it), while bronchi the extraction missed stay out of the loss."""
    from scipy import ndimage

    from core.phantom import make_phantom
    from core.training.pseudo_labels import IGNORE_VALUE, dark_tubeness, pseudo_label, tube_threshold

    ph = make_phantom((64, 64, 64), spacing=(2.5, 2.5, 3.0), seed=2, omit_distal=6)
    lab = pseudo_label(ph.ct, ph.label, lungs="tubes").array
    assert np.array_equal(lab == 1, ph.label.mask)
    missed = ph.full_label.mask & ~ph.label.mask  # in the CT, not in the extraction
    assert missed.sum() > 20
    assert (lab[missed] == IGNORE_VALUE).mean() > 0.6
    parenchyma = ph.lungs.mask & ~ndimage.binary_dilation(ph.full_label.mask, iterations=2)
    assert (lab[parenchyma] == 0).mean() > 0.6
    assert (pseudo_label(ph.ct, ph.label).array[parenchyma] == IGNORE_VALUE).mean() > 0.95  # the old policy
    # a CT without airway takes a threshold from another: the same label as this one's own threshold
    tubes = dark_tubeness(ph.ct)
    level = tube_threshold(tubes, ph.label.mask)
    again = pseudo_label(ph.ct, ph.label, lungs="tubes", tubeness=tubes, tube_min=level).array
    assert np.array_equal(again, lab)
    with pytest.raises(ValueError, match="lungs must be"):
        pseudo_label(ph.ct, ph.label, lungs="all")
