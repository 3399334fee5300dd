"""Sliding-window inference, the batch runner, backends and `airway segment`.

Tiny models and 8^3-16^3 windows keep every test to about a second.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from core.errors import Cancelled, CheckpointError, ConfigError, InputError
from core.preprocess import Preprocessing, window_hu
from core.segmentation import (
    BatchRunner,
    PostProcessing,
    Predictor,
    axis_normaliser,
    gaussian_1d,
    quantise,
    sliding_window,
    window_slices,
    window_starts,
)
from core.segmentation.backends import TorchBackend, resolve_backend_name
from core.volume import Geometry, IntensityVolume

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason="../shared/data is absent (real CT data is not in the repo)"
)
NO_CROP = Preprocessing(crop="none")
GEO = Geometry(spacing=(0.8, 0.7, 1.5), origin=(-10.0, 20.0, -300.0))

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    # exported models go to a throw-away folder, never the user's cache
    monkeypatch.setenv("AIRWAY_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "inference-cache"))


# -- tiny models following the contract: tuple of logits, last = prediction, `divisor` --


class TinyNet(nn.Module):
    """Conv -> pool -> conv -> upsample -> conv: windows see context and a divisor matters."""

    divisor = 2

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv3d(1, 4, 3, padding=1)
        self.b = nn.Conv3d(4, 4, 3, padding=1)
        self.c = nn.Conv3d(4, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = torch.relu(self.a(x / 255.0))
        g = torch.relu(self.b(nn.functional.max_pool3d(f, 2)))
        up = nn.functional.interpolate(g, scale_factor=2, mode="trilinear", align_corners=True)
        dec = self.c(f + up) * 4.0
        return dec * 0.5, dec


class IdentityNet(nn.Module):
    """Logit = (x - 127.5) / 32: the probability at a voxel depends on that voxel only."""

    divisor = 1

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return ((x - 127.5) / 32.0 + self.dummy,)


class CountingNet(nn.Module):
    """Counts windows seen, to check when cancellation bites."""

    divisor = 1

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.windows = 0

    def forward(self, x: torch.Tensor):
        self.windows += x.shape[0]
        return self.inner(x)


class FakeOOM(nn.Module):
    """Raises CUDA's out-of-memory error for batches larger than ``max_batch`` (0: always)."""

    divisor = 2

    def __init__(self, inner: nn.Module, max_batch: int) -> None:
        super().__init__()
        self.inner = inner
        self.max_batch = max_batch
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor):
        self.calls.append(x.shape[0])
        if x.shape[0] > self.max_batch:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (fake)")
        return self.inner(x)


def _ct(shape=(20, 18, 22), seed=0) -> IntensityVolume:
    rng = np.random.default_rng(seed)
    return IntensityVolume(rng.integers(-1100, 700, size=shape).astype(np.int16), GEO, "ct")


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a.astype(np.float64)))


# -- the window grid ------------------------------------------------------------


def test_window_starts_snap_the_last_window_to_the_border():
    assert window_starts(300, 128, 64) == [0, 64, 128, 172]
    assert window_starts(256, 128, 64) == [0, 64, 128]
    assert window_starts(129, 128, 64) == [0, 1]
    assert window_starts(128, 128, 64) == [0]
    assert window_starts(50, 128, 64) == [0]  # padded up to one window
    assert len(window_slices((300, 256, 129), (128,) * 3, (64,) * 3)) == 4 * 3 * 2


def test_normaliser_counts_windows_and_gaussian_is_centred():
    # step 4, window 8 on 16 voxels: starts 0, 4, 8 -> coverage 1,2,2,1 per 4-voxel run
    np.testing.assert_array_equal(axis_normaliser(16, 8, 4, np.ones(8, np.float32)), [1] * 4 + [2] * 8 + [1] * 4)
    g = gaussian_1d(128)
    assert g.argmax() in (63, 64) and g.max() == 1.0
    np.testing.assert_allclose(g, g[::-1])
    # even window: the peak sits half a voxel off the centre, and the curve is scaled to peak 1
    assert g.min() == pytest.approx(np.exp(-0.5 * (63.5 / 16) ** 2) / np.exp(-0.5 * (0.5 / 16) ** 2), rel=1e-4)


@pytest.mark.parametrize("gaussian", [False, True])
@pytest.mark.parametrize("shape", [(20, 17, 9), (8, 8, 8), (5, 30, 12)])
def test_sliding_window_puts_every_voxel_back_where_it_came_from(gaussian, shape):
    # a voxel-wise model makes the exact answer known: sigmoid(input) everywhere,
    # whatever the overlap, padding or weighting
    rng = np.random.default_rng(1)
    arr = rng.normal(0, 2, size=shape).astype(np.float32)
    out = sliding_window(
        arr, lambda b: _sigmoid(b).astype(np.float32), window=8, step=3, batch_size=4, gaussian=gaussian
    )
    assert out.shape == shape and out.dtype == np.float32
    np.testing.assert_allclose(out, _sigmoid(arr), atol=2e-6)


@pytest.mark.parametrize("gaussian", [False, True])
def test_average_of_a_constant_is_that_constant(gaussian):
    out = sliding_window(
        np.zeros((19, 23, 10), np.float32),
        lambda b: np.full(b.shape, 0.3, np.float32),
        window=8,
        step=5,
        gaussian=gaussian,
    )
    np.testing.assert_allclose(out, 0.3, rtol=1e-6)


def test_step_larger_than_window_is_refused():
    with pytest.raises(ConfigError, match="no prediction"):
        sliding_window(np.zeros((8, 8, 8), np.float32), lambda b: b, window=4, step=5)


# -- the predictor ---------------------------------------------------------------


def test_single_window_equals_one_whole_volume_forward_pass():
    model = TinyNet().eval()
    ct = _ct((16, 16, 16))
    pred = Predictor.from_model(model, NO_CROP, device="cpu", window=16, step=8).predict(ct)
    x = torch.from_numpy(window_hu(ct.array, NO_CROP.window, NO_CROP.scale))[None, None]
    with torch.no_grad():
        whole = torch.sigmoid(model(x)[-1])[0, 0].numpy()
    assert pred.windows == 1
    np.testing.assert_array_equal(pred.probabilities.array, quantise(whole))
    assert pred.probabilities.array.dtype == np.uint8
    assert pred.probabilities.geometry == ct.geometry and pred.mask.geometry == ct.geometry


def test_results_do_not_depend_on_the_batch_size():
    model = TinyNet().eval()
    arr = window_hu(_ct((20, 18, 22)).array, NO_CROP.window, NO_CROP.scale)
    results = [sliding_window(arr, TorchBackend(model, "cpu"), window=8, step=4, batch_size=b) for b in (1, 3, 8)]
    for other in results[1:]:
        np.testing.assert_allclose(other, results[0], atol=1e-6)
    masks = [
        Predictor.from_model(model, NO_CROP, device="cpu", window=8, step=4, batch_size=b).predict(_ct()).mask.array
        for b in (1, 5)
    ]
    np.testing.assert_array_equal(masks[0], masks[1])


@pytest.mark.parametrize("gaussian", [False, True])
def test_device_side_accumulation_matches_the_host_loop(gaussian):
    # the GPU path (volume and accumulator as tensors on the device), run here on the CPU
    model = TinyNet().eval()
    ct = _ct((21, 18, 13))
    kw = dict(device="cpu", window=8, step=4, gaussian=gaussian, batch_size=3)
    host = Predictor.from_model(model, NO_CROP, device_accumulate=False, **kw).predict(ct)
    dev = Predictor.from_model(model, NO_CROP, device_accumulate=True, **kw).predict(ct)
    assert np.abs(dev.probabilities.array.astype(int) - host.probabilities.array).max() <= 1
    np.testing.assert_array_equal(dev.mask.array, host.mask.array)
    arr = np.random.default_rng(2).normal(0, 2, (11, 9, 20)).astype(np.float32)
    out = sliding_window(torch.from_numpy(arr), torch.sigmoid, window=8, step=3, batch_size=2, gaussian=gaussian)
    np.testing.assert_allclose(out.numpy(), _sigmoid(arr), atol=2e-6)


@pytest.mark.slow
def test_out_of_memory_handling_on_device_tensors():
    inner = TinyNet().eval()
    flaky = FakeOOM(inner, max_batch=1)
    ct = _ct()
    kw = dict(device="cpu", window=8, step=4, device_accumulate=True)
    got = Predictor.from_model(flaky, NO_CROP, batch_size=4, **kw).predict(ct)
    ref = Predictor.from_model(inner, NO_CROP, batch_size=1, **kw).predict(ct)
    np.testing.assert_array_equal(got.probabilities.array, ref.probabilities.array)
    # at batch one, a numpy-only fallback (e.g. OpenVINO on the CPU) takes over the device tensors
    runner = BatchRunner(
        TorchBackend(FakeOOM(inner, max_batch=0), "cpu"),
        batch_size=1,
        fallback=lambda: lambda b: TorchBackend(inner, "cpu")(np.asarray(b)),
    )
    windows = torch.rand(2, 1, 8, 8, 8) * 255
    out = runner(windows)
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), TorchBackend(inner, "cpu")(windows.numpy()), atol=1e-6)


def test_lung_crop_maps_back_to_the_full_grid():
    # a "chest": soft tissue with two air-filled lungs away from the border
    arr = np.full((24, 40, 40), 40, np.int16)
    arr[:, :2] = arr[:, -2:] = -1024  # outside air touching the border
    arr[4:20, 8:30, 6:17] = -850
    arr[4:20, 8:30, 22:34] = -850
    ct = IntensityVolume(arr, GEO, "chest")
    prep = Preprocessing(crop="lung", margin=2)
    pred = Predictor.from_model(IdentityNet(), prep, device="cpu", window=8, step=4).predict(ct)
    box = pred.crop
    assert box.start == (2, 6, 4) and box.stop == (22, 32, 36)
    expected = quantise(_sigmoid((window_hu(arr, prep.window, prep.scale) - 127.5) / 32.0).astype(np.float32))
    inside = np.zeros(arr.shape, bool)
    inside[box.slices] = True
    np.testing.assert_array_equal(pred.probabilities.array[inside], expected[inside])
    assert not pred.probabilities.array[~inside].any() and not pred.mask.array[~inside].any()


def test_lungs_cut_by_a_tight_crop_are_lungs_and_outside_air_is_not():
    """A crop around the mediastinum (TotalSegmentator's aorta crop): the lungs and the trachea joined to them
    touch the border but are parenchyma (-850 HU); air at -1000 touching the border is outside the body."""
    from core.preprocess import lung_mask
    from core.segmentation import fast_crop_box

    arr = np.full((32, 48, 48), 40, np.int16)
    arr[:, :, :3] = -1000  # outside air along one side, beyond the chest wall
    arr[:20, 0:40, 6:14] = -850  # right lung, cut by the crop's front edge
    arr[:20, 0:40, 34:44] = -850  # left lung, likewise
    arr[16:32, 20:26, 21:27] = -1000  # trachea above the carina ...
    arr[16:20, 20:26, 14:34] = -1000  # ... and main bronchi into both lungs
    mask = lung_mask(arr)
    assert mask[25, 22, 23] and mask[10, 20, 40] and mask[10, 20, 8]
    assert not mask[:, :, :3].any()
    box = fast_crop_box(arr, Preprocessing(margin=0), stride=2)
    assert box.stop[0] >= 31, "the trachea stays in the model's input"


def test_fast_lung_crop_matches_the_exact_one():
    from core.preprocess import CropBox, lung_mask
    from core.segmentation import fast_crop_box

    z, y, x = np.ogrid[:20, :256, :256]
    arr = np.full((20, 256, 256), -1024, np.int16)
    arr[:, (((y - 128) / 100.0) ** 2 + ((x - 128) / 118.0) ** 2 <= 1)[0]] = 40  # body
    for cx in (80, 177):
        arr[(((z - 10) / 8.0) ** 2 + ((y - 125) / 70.0) ** 2 + ((x - cx) / 37.0) ** 2) <= 1] = -850  # lungs
    prep = Preprocessing(margin=5)
    exact = CropBox.from_mask(lung_mask(arr, prep.lung_threshold), prep.margin)
    fast = fast_crop_box(arr, prep, stride=4)
    # a loose box would cost whole rows of windows: it must be the exact one, up to a voxel or two
    assert max(abs(a - b) for a, b in zip(fast.start + fast.stop, exact.start + exact.stop)) <= 2
    assert fast_crop_box(arr, Preprocessing(crop="none")) == CropBox.full(arr.shape)


def test_ct_smaller_than_a_window_is_padded():
    ct = _ct((5, 7, 6))
    pred = Predictor.from_model(TinyNet(), NO_CROP, device="cpu", window=16, step=8).predict(ct)
    assert pred.probabilities.shape == (5, 7, 6) and pred.mask.shape == (5, 7, 6) and pred.windows == 1


def test_postprocessing_keeps_the_largest_component_and_fills_holes():
    p = np.zeros((12, 12, 12), np.float32)
    p[1:8, 1:8, 1:8] = 0.9
    p[4, 4, 4] = 0.1  # a hole
    p[10:12, 10:12, 10:12] = 0.8  # a small separate blob
    mask = PostProcessing().apply(p)
    assert mask.sum() == 7**3 - 1 and not mask[10:, 10:, 10:].any()
    assert PostProcessing(fill_holes=True).apply(p).sum() == 7**3
    assert PostProcessing(largest_component=False).apply(p).sum() == 7**3 - 1 + 8
    np.testing.assert_array_equal(PostProcessing().apply(quantise(p)), mask)


def test_progress_reports_windows_and_eta():
    # one progress vocabulary (core.progress): (done, total, message), the ETA in the message
    seen: list[tuple[float, float, str]] = []
    Predictor.from_model(TinyNet(), NO_CROP, device="cpu", window=8, step=8).predict(
        _ct((16, 16, 8)), progress=lambda d, t, m: seen.append((d, t, m))
    )
    assert [(d, t) for d, t, _ in seen] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert all(m.startswith(f"{d}/{t} windows") for d, t, m in seen)
    assert all(m.endswith(" s left") for *_, m in seen[:-1]) and seen[-1][2] == "4/4 windows"


def test_cancellation_stops_within_one_window():
    net = CountingNet(TinyNet())
    stop = threading.Event()

    def progress(done, total, eta):
        if done == 2:
            stop.set()

    predictor = Predictor.from_model(net, NO_CROP, device="cpu", window=8, step=4, batch_size=1)
    with pytest.raises(Cancelled):
        predictor.predict(_ct(), progress=progress, cancel=stop)
    assert net.windows == 2


# -- CUDA out-of-memory handling (faked on the CPU) ---------------------------------


def test_out_of_memory_halves_the_batch_and_gives_the_same_result():
    inner = TinyNet().eval()
    flaky = FakeOOM(inner, max_batch=1)
    messages: list[str] = []
    predictor = Predictor.from_model(flaky, NO_CROP, device="cpu", window=8, step=4, batch_size=4, say=messages.append)
    got = predictor.predict(_ct())
    ref = Predictor.from_model(inner, NO_CROP, device="cpu", window=8, step=4, batch_size=1).predict(_ct())
    np.testing.assert_array_equal(got.probabilities.array, ref.probabilities.array)
    assert flaky.calls[:3] == [4, 2, 1] and set(flaky.calls[3:]) == {1}
    assert predictor.runner.batch_size == 1
    assert any("batch of 2" in m for m in messages) and any("batch of 1" in m for m in messages)


def test_out_of_memory_at_batch_one_falls_back_to_the_cpu_with_a_message():
    inner = TinyNet().eval()
    messages: list[str] = []
    runner = BatchRunner(
        TorchBackend(FakeOOM(inner, max_batch=0), "cpu"),
        batch_size=2,
        fallback=lambda: TorchBackend(inner, "cpu"),
        say=messages.append,
    )
    windows = np.random.default_rng(0).uniform(0, 255, (3, 1, 8, 8, 8)).astype(np.float32)
    out = runner(windows)
    np.testing.assert_allclose(out, TorchBackend(inner, "cpu")(windows), atol=1e-6)
    assert any("CPU" in m for m in messages)
    with pytest.raises(InputError, match="Out of memory"):
        BatchRunner(TorchBackend(FakeOOM(inner, max_batch=0), "cpu"), batch_size=2)(windows)


# -- bad inputs -------------------------------------------------------------------


def test_bad_cts_are_refused_clearly():
    predictor = Predictor.from_model(TinyNet(), NO_CROP, device="cpu", window=8, step=4)
    with pytest.raises(InputError, match="single slice"):
        predictor.predict(IntensityVolume(np.zeros((1, 30, 30), np.int16)))
    with pytest.raises(InputError, match="IntensityVolume"):
        predictor.predict(np.zeros((8, 8, 8)))  # type: ignore[arg-type]
    ct = IntensityVolume(np.zeros((8, 8, 8), np.float32))
    ct.array[2, 3, 4] = np.nan  # corrupted after loading
    with pytest.raises(InputError, match="NaN"):
        predictor.predict(ct)


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="multiple of 2"):
        Predictor.from_model(TinyNet(), NO_CROP, device="cpu", window=9)
    with pytest.raises(ConfigError, match="step"):
        Predictor.from_model(TinyNet(), NO_CROP, device="cpu", window=8, step=16)
    with pytest.raises(ConfigError, match="device"):
        Predictor.from_model(TinyNet(), NO_CROP, device="tpu")
    with pytest.raises(ConfigError, match="backend"):
        Predictor.from_model(TinyNet(), NO_CROP, device="cpu", backend="tensorrt")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--device cpu"):
            Predictor.from_model(TinyNet(), NO_CROP, device="cuda:0")


def test_missing_or_corrupt_model_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        Predictor(tmp_path / "nope.pt", device="cpu")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"\x00not a checkpoint" * 50)
    with pytest.raises(CheckpointError):
        Predictor(bad, device="cpu")


def test_missing_optional_backend_falls_back_to_pytorch(monkeypatch):
    import core.segmentation.backends as ib

    monkeypatch.setattr(ib, "available", lambda name: not name.startswith(("openvino", "onnxruntime")))
    messages: list[str] = []
    assert resolve_backend_name("onnxruntime", "cpu", messages.append) == "torch"
    assert "not installed" in messages[0] and "fast-cpu" in messages[0]
    assert resolve_backend_name("auto", "cpu") == "torch"
    assert resolve_backend_name("openvino", "cuda") == "torch"


@pytest.mark.parametrize("backend", [pytest.param("openvino-fp32", marks=pytest.mark.slow), "onnxruntime"])
def test_optional_backends_agree_with_pytorch_and_are_cached(backend, tmp_path):
    pytest.importorskip(backend.split("-")[0])
    model = TinyNet().eval()
    ct = _ct((30, 26, 28))
    # window 24: traced on a 16^3 example, run on 24^3 windows
    ref = Predictor.from_model(model, NO_CROP, device="cpu", window=24, step=12).predict(ct)
    fast = Predictor.from_model(model, NO_CROP, device="cpu", window=24, step=12, backend=backend, cache=tmp_path)
    assert fast.backend_name.startswith(backend.split("-")[0]), fast.messages
    got = fast.predict(ct)
    assert np.abs(got.probabilities.array.astype(int) - ref.probabilities.array).max() <= 1
    cached = list(tmp_path.rglob("model.*"))
    assert cached, "the exported model is cached"
    again = Predictor.from_model(model, NO_CROP, device="cpu", window=24, step=12, backend=backend, cache=tmp_path)
    assert not any("Convert" in m or "Export" in m for m in again.messages)


# -- checkpoints and the command line ------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from core.models.checkpoint import save_checkpoint
    from core.models.registry import build_model

    torch.manual_seed(0)
    model = build_model("wingsnet", width=0.25)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, model, {"preprocessing": NO_CROP.to_dict()})
    return path


def test_predictor_from_a_checkpoint_file(checkpoint):
    predictor = Predictor(checkpoint, device="cpu", window=16, step=16, backend="torch")
    assert predictor.preprocessing == NO_CROP
    pred = predictor.predict(_ct((16, 16, 16)))
    assert pred.probabilities.shape == (16, 16, 16) and pred.windows == 1


def test_segment_command_writes_mask_and_probabilities(checkpoint, tmp_path, capsys):
    from core.cli import main
    from core.io import read_volume, write_volume

    ct_path = tmp_path / "case_0000.nii.gz"
    write_volume(_ct((16, 16, 16)), ct_path)
    out, prob = tmp_path / "out" / "mask.nii.gz", tmp_path / "prob.nrrd"
    rc = main(
        [
            "segment",
            "--model",
            str(checkpoint),
            "--input",
            str(ct_path),
            "--output",
            str(out),
            "--probabilities",
            str(prob),
            "--device",
            "cpu",
            "--backend",
            "torch",
            "--window",
            "16",
            "--step",
            "16",
            "--json",
        ]
    )
    assert rc == 0
    mask, p = read_volume(out), read_volume(prob)
    assert mask.shape == p.shape == (16, 16, 16) and p.array.dtype == np.uint8
    assert mask.geometry.matches(GEO) and p.geometry.matches(GEO)
    assert '"case": "case_0000"' in capsys.readouterr().out
    # a second run refuses to overwrite unless asked, then keeps a backup
    assert main(["segment", "--model", str(checkpoint), "--input", str(ct_path), "--output", str(out), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.slow
def test_segment_command_on_a_folder_of_cases(checkpoint, tmp_path, capsys):
    from core.cli import main
    from core.io import write_volume

    cases = tmp_path / "cases"
    for i, shape in enumerate([(16, 16, 16), (12, 16, 20)]):
        write_volume(_ct(shape, seed=i), cases / f"case{i}.mha")
    out = tmp_path / "masks"
    rc = main(
        [
            "segment",
            "--model",
            str(checkpoint),
            "--input",
            str(cases),
            "--output",
            str(out),
            "--backend",
            "torch",
            "--window",
            "16",
            "--step",
            "16",
        ]
    )
    assert rc == 0
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["case0.nii.gz", "case1.nii.gz"]  # + CASE.json records
    err = capsys.readouterr().err
    assert "2 case(s)" in err and "windows" in err  # the progress bar


def test_segment_command_with_reference_prints_metrics(checkpoint, tmp_path, capsys):
    import json

    from core.cli import main
    from core.io import write_volume
    from core.volume import LabelVolume

    ct_path, ref_path = tmp_path / "ct.nii.gz", tmp_path / "ref.nii.gz"
    write_volume(_ct((24, 16, 16)), ct_path)
    label = np.zeros((24, 16, 16), np.uint8)
    label[2:22, 6:10, 6:10] = 1  # a straight "trachea"
    write_volume(LabelVolume(label, GEO), ref_path)
    rc = main(
        [
            "segment",
            "--model",
            str(checkpoint),
            "--input",
            str(ct_path),
            "--output",
            str(tmp_path / "m.nii.gz"),
            "--reference",
            str(ref_path),
            "--backend",
            "torch",
            "--window",
            "16",
            "--step",
            "8",
            "--json",
            "-q",
        ]
    )
    assert rc == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    metrics = result["metrics"]
    assert {"td", "bd", "dsc", "precision"} <= set(metrics)
    assert 0.0 <= metrics["dsc"] <= 100.0


def test_segment_command_bad_inputs_write_nothing(checkpoint, tmp_path, capsys):
    from core.cli import main
    from core.io import write_volume

    out = tmp_path / "mask.nii.gz"
    ct_path = tmp_path / "ct.nii.gz"
    write_volume(_ct((10, 10, 10)), ct_path)
    assert (
        main(["segment", "--model", str(tmp_path / "missing.pt"), "--input", str(ct_path), "--output", str(out)]) == 2
    )
    assert "--model" in capsys.readouterr().err
    from core.io import metaimage_file

    nan = np.zeros((10, 10, 10), np.float32)
    nan[3, 4, 5] = np.nan
    nan_path = tmp_path / "nan.mha"  # the format module writes what the volume classes refuse
    metaimage_file.write(nan, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3), nan_path, True)
    assert (
        main(
            [
                "segment",
                "--model",
                str(checkpoint),
                "--input",
                str(nan_path),
                "--output",
                str(out),
                "--backend",
                "torch",
            ]
        )
        == 2
    )
    assert "NaN" in capsys.readouterr().err
    flat = tmp_path / "slice.nii.gz"
    write_volume(IntensityVolume(np.zeros((1, 10, 10), np.int16)), flat)
    assert (
        main(["segment", "--model", str(checkpoint), "--input", str(flat), "--output", str(out), "--backend", "torch"])
        == 2
    )
    assert not out.exists() and not list(tmp_path.glob(".mask*"))


def test_cancelled_case_leaves_no_output(checkpoint, tmp_path):
    from core.commands.segment import Case, segment_case
    from core.io import write_volume

    ct_path = tmp_path / "ct.nii.gz"
    write_volume(_ct((24, 16, 16)), ct_path)
    stop = threading.Event()
    predictor = Predictor(checkpoint, device="cpu", window=16, step=8, backend="torch")
    case = Case("ct", ct_path, tmp_path / "mask.nii.gz", tmp_path / "p.nii.gz", None)
    with pytest.raises(Cancelled):
        segment_case(predictor, case, progress=lambda d, t, e: stop.set(), cancel=stop)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz"]


def test_without_model_the_demo_model_is_used_or_named(tmp_path):
    from core.commands.segment import model_path
    from core.resources import resource_path

    demo = resource_path("models", "realct_wingsnet.pt", must_exist=False)
    if demo.exists():
        assert model_path(None) == demo
    else:
        with pytest.raises(CheckpointError, match="--model"):
            model_path(None)


@pytest.mark.slow
@needs_shared
def test_fast_lung_crop_on_a_real_ct():
    from core.io import read_ct
    from core.segmentation import fast_crop_box

    ct = read_ct(SHARED / "chest_ct_dicom")
    box = fast_crop_box(ct.array, Preprocessing())
    # the exact crop (core.preprocess.prepare_input) is (0, 94, 90)-(141, 346, 415); 10 s vs 0.5 s here
    assert max(abs(a - b) for a, b in zip(box.start + box.stop, (0, 94, 90, 141, 346, 415))) <= 2


@needs_shared
def test_folder_of_cases_and_dicom_folder_are_found():
    from core.commands.segment import find_cases

    dicom = SHARED / "totalseg" / "example_ct_dicom"
    assert find_cases(dicom) == [("example_ct_dicom", dicom)]
    names = [n for n, _ in find_cases(SHARED / "totalseg")]
    assert {"aorta_ct_cropped", "example_ct", "example_ct_dicom"} <= set(names)


# -- settings the checkpoint recommends -------------------------------------------


def test_window_and_step_come_from_the_checkpoint_unless_given(tmp_path):
    from core.models.checkpoint import save_checkpoint
    from core.models.registry import build_model
    from core.segmentation import recommended_window

    assert recommended_window({}, None, None) == (128, 64)  # the paper's
    assert recommended_window({"training": {"validation": {"window": 48, "step": 48}}}, None, None) == (48, 48)
    assert recommended_window(
        {"inference": {"window": 32, "step": 16}, "training": {"validation": {"window": 48, "step": 48}}}, None, None
    ) == (32, 16)
    assert recommended_window({"inference": {"window": 32, "step": 16}}, 64, None) == (64, 16)
    path = tmp_path / "rec.pt"
    save_checkpoint(
        path,
        build_model("wingsnet", width=0.25),
        {"preprocessing": NO_CROP.to_dict(), "inference": {"window": 24, "step": 16}},
    )
    predictor = Predictor(path, device="cpu", backend="torch")
    assert predictor.window == (24, 24, 24) and predictor.step == (16, 16, 16)
    assert predictor.spacing is None  # no resampling unless recommended or asked (the paper resamples nothing)


def test_resampling_to_a_target_spacing_predicts_on_the_ct_grid():
    # a CT whose HU rise linearly along x: windowed values, and so IdentityNet's logits, are linear
    shape = (20, 24, 30)
    hu = np.broadcast_to(np.linspace(-1000, 600, shape[2]), shape).astype(np.float32)
    geo = Geometry((0.8, 0.8, 1.0), (5.0, -3.0, 2.0))
    ct = IntensityVolume(np.ascontiguousarray(hu), geo, "ramp")
    native = Predictor.from_model(IdentityNet(), NO_CROP, device="cpu", window=8, step=8, backend="torch")
    direct = native.predict(ct)
    resampling = Predictor.from_model(IdentityNet(), NO_CROP, device="cpu", window=8, step=8, backend="torch")
    resampling.spacing = (1.6, 1.6, 2.0)
    out = resampling.predict(ct)
    assert out.probabilities.shape == ct.shape and out.mask.shape == ct.shape
    assert out.probabilities.geometry == ct.geometry and out.mask.geometry == ct.geometry
    assert any("resampled the CT" in m for m in out.messages)
    inner = (slice(2, -2), slice(2, -2), slice(2, -2))  # the grid's last voxels fall outside the coarse one
    diff = np.abs(out.probabilities.array[inner].astype(int) - direct.probabilities.array[inner].astype(int))
    assert diff.max() <= 0.05 * 255
    assert out.crop.full_shape == ct.shape
