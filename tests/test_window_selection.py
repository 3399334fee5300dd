"""Airway-guided window selection (issue 17): which windows run, and what the output is when only some do."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from core.errors import ConfigError
from core.preprocess import CropBox, Preprocessing
from core.segmentation import (
    LungRegion,
    MaskRegion,
    Predictor,
    RegionRequest,
    axis_normaliser,
    gaussian_1d,
    select_windows,
    sliding_window,
    window_slices,
)
from core.volume import Geometry, IntensityVolume

GEO = Geometry(spacing=(1.0, 1.0, 1.0))
NO_CROP = Preprocessing(crop="none")

torch.set_num_threads(1)


class ContextNet(nn.Module):
    """Output depends on the whole window (a mean over it), so overlapping windows disagree and the
    weighting matters; ``windows`` counts what was run."""

    divisor = 1

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.windows = 0

    def forward(self, x: torch.Tensor):
        self.windows += x.shape[0]
        centred = x - x.mean(dim=(2, 3, 4), keepdim=True)
        return (centred / 40.0 + self.dummy,)


def _run(net: nn.Module):
    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.sigmoid(net(torch.from_numpy(batch))[-1]).numpy()

    return run


def _chest(shape=(40, 64, 64)) -> np.ndarray:
    """Soft tissue, outside air at the in-plane border, two air-filled lungs and a trachea between them."""
    arr = np.full(shape, 40, np.int16)
    arr[:, :3] = arr[:, -3:] = -1024
    arr[:, :, :3] = arr[:, :, -3:] = -1024
    arr[20:36, 14:50, 8:26] = -850
    arr[20:36, 14:50, 38:56] = -850
    arr[0:22, 28:34, 29:35] = -1000  # trachea, joined to both lungs at the carina
    arr[20:22, 28:34, 20:44] = -1000
    return arr


def test_selected_windows_cover_the_region_and_skip_only_windows_outside_it():
    rng = np.random.default_rng(1)
    region = np.zeros((50, 70, 90), bool)
    region[rng.integers(0, 50, 25), rng.integers(0, 70, 25), rng.integers(0, 90, 25)] = True
    region[10:14, 30:40, 5:9] = True
    grid, chosen = select_windows(region, 32, (16, 24, 20))
    assert grid == window_slices((50, 70, 90), (32, 32, 32), (16, 24, 20))
    covered = np.zeros(region.shape, bool)
    for sl in chosen:
        covered[sl] = True
        assert region[sl].any()
    assert covered[region].all()
    for sl in (g for g in grid if g not in chosen):
        assert not region[sl].any()
    assert 0 < len(chosen) < len(grid)
    assert select_windows(np.zeros((50, 70, 90), bool), 32, 16)[1] == []
    assert select_windows(np.ones((50, 70, 90), bool), 32, 16)[1] == window_slices((50, 70, 90), (32,) * 3, (16,) * 3)


def test_all_windows_selected_is_the_old_path_bit_for_bit():
    rng = np.random.default_rng(2)
    arr = rng.uniform(0, 255, (37, 45, 29)).astype(np.float32)
    for gaussian in (False, True):
        grid = window_slices((37, 45, 29), (16, 16, 16), (8, 8, 8))
        old = sliding_window(arr, _run(ContextNet()), 16, 8, gaussian=gaussian)
        new = sliding_window(arr, _run(ContextNet()), 16, 8, gaussian=gaussian, windows=list(reversed(grid)))
        assert np.array_equal(old, new)


def test_predictor_without_a_region_equals_the_old_path_bit_for_bit():
    ct = IntensityVolume(_chest(), GEO, "chest")
    base = Predictor.from_model(ContextNet(), Preprocessing(margin=2), device="cpu", window=16, step=8)
    none = Predictor.from_model(ContextNet(), Preprocessing(margin=2), device="cpu", window=16, step=8, region="none")
    a, b = base.predict(ct), none.predict(ct)
    assert np.array_equal(a.probabilities.array, b.probabilities.array)
    assert np.array_equal(a.mask.array, b.mask.array)
    assert a.windows == b.windows == a.windows_total


@pytest.mark.parametrize("gaussian", [False, True])
def test_weights_sum_correctly_over_a_subset_of_windows(gaussian):
    # the net returns a constant: any correct normalisation gives that constant wherever a window ran
    class Constant(nn.Module):
        divisor = 1

        def __init__(self):
            super().__init__()
            self.dummy = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return (torch.full_like(x, 1.0) + self.dummy,)

    shape = (30, 41, 35)
    arr = np.zeros(shape, np.float32)
    grid = window_slices(shape, (16,) * 3, (8, 8, 8))
    chosen = grid[::3]
    covered = np.zeros(shape, bool)
    for sl in chosen:
        covered[sl] = True
    p = sliding_window(arr, _run(Constant()), 16, 8, gaussian=gaussian, windows=chosen)
    expected = 1.0 / (1.0 + np.exp(-1.0))
    np.testing.assert_allclose(p[covered], expected, rtol=1e-5)
    assert not p[~covered].any()
    # the same on the tensor path
    t = sliding_window(
        torch.from_numpy(arr), lambda b: torch.sigmoid(torch.ones_like(b)), 16, 8, gaussian=gaussian, windows=chosen
    ).numpy()
    np.testing.assert_allclose(t, p, rtol=1e-5, atol=1e-7)


def test_gaussian_weighted_mean_over_a_subset_matches_a_direct_sum():
    rng = np.random.default_rng(3)
    shape = (24, 24, 40)
    arr = rng.uniform(0, 255, shape).astype(np.float32)
    net = ContextNet()
    grid = window_slices(shape, (16,) * 3, (8, 8, 12))
    chosen = [sl for i, sl in enumerate(grid) if i % 2 == 0]
    g = gaussian_1d(16)
    w3 = g[:, None, None] * g[None, :, None] * g[None, None, :]
    num = np.zeros(shape, np.float64)
    den = np.zeros(shape, np.float64)
    run = _run(net)
    for sl in chosen:
        num[sl] += run(arr[sl][None, None])[0, 0] * w3
        den[sl] += w3
    expected = np.where(den > 0, num / np.maximum(den, 1e-30), 0.0)
    got = sliding_window(arr, run, 16, (8, 8, 12), gaussian=True, windows=chosen)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # and over the whole grid the separable normaliser is the same per-voxel sum
    full = np.zeros(shape, np.float64)
    for sl in grid:
        full[sl] += w3
    norm = [axis_normaliser(s, 16, st, g) for s, st in zip(shape, (8, 8, 12))]
    np.testing.assert_allclose(
        norm[0][:, None, None] * norm[1][None, :, None] * norm[2][None, None, :], full, rtol=1e-5
    )


def test_windows_not_from_the_grid_are_refused():
    arr = np.zeros((20, 20, 20), np.float32)
    with pytest.raises(ConfigError):
        sliding_window(arr, _run(ContextNet()), 16, 8, windows=[(slice(1, 17), slice(0, 16), slice(0, 16))])


def test_lung_region_covers_lungs_and_trachea_and_skips_windows_outside():
    arr = _chest((40, 96, 96))
    arr[:, :, 60:] = 40  # no lung on the right: windows there must be skipped
    arr[:, :3] = arr[:, -3:] = -1024
    arr[:, :, -3:] = -1024
    ct = IntensityVolume(arr, GEO, "chest")
    net = ContextNet()
    pred = Predictor.from_model(net, NO_CROP, device="cpu", window=16, step=16, region=LungRegion(margin_mm=2.0))
    box = CropBox.full(arr.shape)
    region = pred.region(RegionRequest(ct, box, arr.astype(np.float32), NO_CROP, (16,) * 3))
    assert region.shape == arr.shape
    air = arr < -500
    air[:, :3] = air[:, -3:] = False
    air[:, :, :3] = air[:, :, -3:] = False
    assert region[air].all()  # lungs and trachea
    out = pred.predict(ct)
    assert 0 < out.windows < out.windows_total
    assert net.windows == out.windows
    # every lung and trachea voxel got a prediction from a window that ran
    assert (out.probabilities.array[air] > 0).all()


def test_a_mask_from_elsewhere_plugs_in():
    arr = _chest()
    ct = IntensityVolume(arr, GEO, "chest")
    trachea = np.zeros(arr.shape, bool)
    trachea[0:22, 28:34, 29:35] = True
    net = ContextNet()
    pred = Predictor.from_model(
        net, NO_CROP, device="cpu", window=16, step=16, region=MaskRegion(trachea, margin_mm=0.0)
    )
    out = pred.predict(ct)
    _, expected = select_windows(trachea, 16, 16)
    assert out.windows == len(expected) == net.windows
    assert (out.probabilities.array[trachea] > 0).all()
    with pytest.raises(Exception):
        Predictor.from_model(
            ContextNet(), NO_CROP, device="cpu", window=16, step=16, region=MaskRegion(trachea[:-1])
        ).predict(ct)
    with pytest.raises(ConfigError):
        Predictor.from_model(ContextNet(), NO_CROP, device="cpu", window=16, step=16, region="nowhere")


def test_device_accumulation_with_a_region_matches_the_host_loop():
    ct = IntensityVolume(_chest(), GEO, "chest")
    kw = dict(device="cpu", window=16, step=16, gaussian=True, region=LungRegion(margin_mm=1.0))
    host = Predictor.from_model(ContextNet(), Preprocessing(margin=2), device_accumulate=False, **kw).predict(ct)
    dev = Predictor.from_model(ContextNet(), Preprocessing(margin=2), device_accumulate=True, **kw).predict(ct)
    assert host.windows == dev.windows < host.windows_total
    assert np.abs(host.probabilities.array.astype(int) - dev.probabilities.array.astype(int)).max() <= 1


def test_coarse_region_runs_the_network_at_half_resolution_and_keeps_the_central_airways():
    from core.segmentation import CoarseModelRegion

    arr = _chest()
    ct = IntensityVolume(arr, GEO, "chest")
    net = ContextNet()
    pred = Predictor.from_model(net, NO_CROP, device="cpu", window=16, step=16, region=CoarseModelRegion(margin_mm=0.0))
    box = CropBox.full(arr.shape)
    from core.preprocess import window_hu

    request = RegionRequest(ct, box, window_hu(arr), NO_CROP, (16,) * 3, pred.runner)
    region = pred.region(request)
    # half resolution (20 x 32 x 32) in 16^3 windows without overlap: 2 x 2 x 2 coarse windows
    assert net.windows == 8
    assert region.shape == arr.shape
    trachea = np.zeros(arr.shape, bool)
    trachea[0:22, 28:34, 29:35] = True
    assert region[trachea].all()


def test_modes_fill_in_what_is_not_given():
    from core.segmentation import mode_settings

    fast, exact = mode_settings("fast"), mode_settings("exact")
    assert exact["step_fraction"] == 0.5 and exact["region"] == "none" and not exact["gaussian"]
    p = Predictor.from_model(ContextNet(), NO_CROP, device="cpu", window=16, mode="fast")
    assert p.step == (int(16 * fast["step_fraction"]),) * 3 and p.gaussian == fast["gaussian"]
    assert (p.region is not None) == (fast["region"] != "none")
    e = Predictor.from_model(ContextNet(), NO_CROP, device="cpu", window=16, mode="exact")
    assert e.step == (8, 8, 8) and not e.gaussian and e.region is None
    # what is given wins over the mode
    g = Predictor.from_model(
        ContextNet(), NO_CROP, device="cpu", window=16, step=12, gaussian=False, region="none", mode="fast"
    )
    assert g.step == (12, 12, 12) and not g.gaussian and g.region is None
    with pytest.raises(ConfigError):
        mode_settings("fastest")


def _old_sliding_window(array, run, win, stp, gaussian):
    """The sliding window as it was before window selection (main at a98167a), as a reference."""
    shape = array.shape
    padded_shape = tuple(max(s, w) for s, w in zip(shape, win))
    if padded_shape != shape:
        array = np.pad(array, [(0, p - s) for p, s in zip(padded_shape, shape)], mode="constant", constant_values=0.0)
    array = np.asarray(array, dtype=np.float32)
    weights_1d = [gaussian_1d(w) if gaussian else np.ones(w, np.float32) for w in win]
    weight_3d = (
        (weights_1d[0][:, None, None] * weights_1d[1][None, :, None] * weights_1d[2][None, None, :])
        if gaussian
        else None
    )
    acc = np.zeros(padded_shape, np.float32)
    batch = np.empty((1, 1, *win), np.float32)
    for sl in window_slices(padded_shape, win, stp):
        batch[0, 0] = array[sl]
        probs = run(batch)
        acc[sl] += probs[0, 0] if weight_3d is None else probs[0, 0] * weight_3d
    norm = [axis_normaliser(s, w, st, wt) for s, w, st, wt in zip(padded_shape, win, stp, weights_1d)]
    for z in range(padded_shape[0]):
        acc[z] /= norm[0][z] * np.outer(norm[1], norm[2])
    return acc[: shape[0], : shape[1], : shape[2]]


@pytest.mark.parametrize("gaussian", [False, True])
def test_selection_disabled_is_bit_for_bit_the_path_before_selection(gaussian):
    rng = np.random.default_rng(4)
    arr = rng.uniform(0, 255, (21, 40, 33)).astype(np.float32)
    old = _old_sliding_window(arr, _run(ContextNet()), (16, 16, 16), (8, 12, 8), gaussian)
    for windows in (None, window_slices((21, 40, 33), (16,) * 3, (8, 12, 8))):
        new = sliding_window(arr, _run(ContextNet()), 16, (8, 12, 8), gaussian=gaussian, windows=windows)
        assert np.array_equal(old, new)


@pytest.mark.slow
def test_segment_command_fast_by_default_and_exact_on_request(tmp_path, capsys, monkeypatch):
    import json

    from core.cli import main
    from core.io import write_volume
    from core.models.checkpoint import save_checkpoint
    from core.models.registry import build_model

    monkeypatch.setenv("AIRWAY_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    ckpt = save_checkpoint(
        tmp_path / "tiny.pt", build_model("wingsnet", width=0.25), {"preprocessing": NO_CROP.to_dict()}
    )
    arr = _chest((32, 64, 112))
    arr[:, :, 60:] = 40  # no air on the right: the fast mode skips windows there
    arr[:, :, -3:] = -1024
    ct_path = tmp_path / "chest.nii.gz"
    write_volume(IntensityVolume(arr, GEO, "chest"), ct_path)
    results = {}
    for flag in ([], ["--exact"]):
        out = tmp_path / f"m{len(flag)}.nii.gz"
        rc = main(
            [
                "segment",
                "--model",
                str(ckpt),
                "--input",
                str(ct_path),
                "--output",
                str(out),
                "--device",
                "cpu",
                "--backend",
                "torch",
                "--window",
                "16",
                "--json",
                "--quiet",
                *flag,
            ]
        )
        assert rc == 0 and out.exists()
        results[bool(flag)] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    exact, fast = results[True], results[False]
    # exact: step 8 (half the window), every window; fast: only the windows touching air inside the body
    assert exact["windows"] == exact["windows_total"] == 3 * 7 * 13
    assert fast["windows_total"] == 3 * 7 * 13 and fast["windows"] < fast["windows_total"]
