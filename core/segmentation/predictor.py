"""A checkpoint ready to segment CTs: the checkpoint's own preprocessing (HU window, scale, lung crop),
the window grid and its selection, the one sliding-window loop, post-processing, results on the CT's grid.

Output on the CT's full grid: probabilities as uint8 (``round(255 p)``), and the mask ``p > threshold``
(paper: 0.5) reduced to its largest connected component (paper's evaluation post-processing; cc3d),
optionally hole-filled.

Memory, for a 512 x 512 x 400 CT (104.9 M voxels, 0.21 GB as int16) with no
crop (the worst case), measured by benchmarks/bench_inference_cpu.py
(``--memory-only``, tracemalloc): the engine's own host memory peaks at
1.05 GB above the CT (float32 input and accumulator, uint8 probabilities, bool
mask, cc3d labels on the crop). The network adds, per 128^3 window with a batch
of one (resident set growth, full-width WingsNet): 2.3 GB in eager fp32
PyTorch, 3.7 GB ONNX Runtime fp32, 1.5-2.6 GB OpenVINO fp32, 0.76 GB OpenVINO
bf16. So about 2.5-5 GB in all on the CPU; the whole real chest CT
(141 x 512 x 512, lung crop) with the demo model (width 0.25) and ONNX Runtime
peaked at +1.06 GB.
On a GPU the crop and accumulator live on the device when they fit in a
quarter of its free memory, else on the host.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import AirwayError, CheckpointError, ConfigError, InputError
from core.preprocess import CropBox, Preprocessing
from core.progress import Cancellable, Progress, raise_if_cancelled
from core.segmentation.grid import Window, select_windows, triple, window_slices
from core.segmentation.inputs import check_ct, map_box, prepare
from core.segmentation.loop import sliding_window
from core.segmentation.options import (
    PredictOptions,
    default_batch_size,
    mode_settings,
    recommended_spacing,
    recommended_window,
    resolve_device,
    resolve_options,
)
from core.segmentation.postprocess import quantise
from core.segmentation.runner import BatchRunner, Engine, Say, quiet
from core.segmentation.selection import RegionRequest, region_name, region_provider
from core.volume import IntensityVolume, LabelVolume


@dataclass
class Prediction:
    """Result on the CT's full grid: uint8 probabilities (255 = 1.0) and the post-processed mask."""

    probabilities: IntensityVolume
    mask: LabelVolume
    crop: CropBox
    backend: str
    windows: int
    seconds: float
    messages: list[str] = field(default_factory=list)
    #: seconds spent in "prepare" (window, lung crop), "region" (window selection), "windows" (the network)
    #: and "postprocess"
    timings: dict[str, float] = field(default_factory=dict)
    #: windows of the whole grid; ``windows`` of them were run (fewer with a region, see :func:`select_windows`)
    windows_total: int = 0


def load_checkpoint(checkpoint: Any) -> tuple[Any, dict[str, Any], str]:
    """(model on the CPU, header, cache key) from a path or a loaded checkpoint.

    The key hashes the weights (not the file), so the same network saved twice
    reuses one exported model.
    """
    from core.models.checkpoint import model_from_checkpoint
    from core.segmentation.backends import state_hash

    if isinstance(checkpoint, (str, Path)):
        path = Path(checkpoint)
        if not path.exists():
            raise CheckpointError(
                f"Model file '{path}' does not exist.",
                "Check the path given with --model (a .pt checkpoint saved by `airway train`).",
            )
        if path.is_dir():
            raise CheckpointError(f"'{path}' is a folder, not a model file.", "Give the .pt checkpoint inside it.")
    try:
        model, header = model_from_checkpoint(checkpoint, device="cpu")
    except AirwayError:
        raise
    except Exception as exc:
        raise CheckpointError(
            f"Could not load the model: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            "The file is corrupt or not an Airway Studio checkpoint; train or download it again.",
            path=checkpoint if isinstance(checkpoint, (str, Path)) else None,
        ) from None
    return model, dict(header), state_hash(model)


def _fmt_spacing(sp: Sequence[float]) -> str:
    return "x".join(f"{v:.3g}" for v in sp)


class Predictor:
    """A checkpoint ready to segment CTs on one device, configured by one :class:`PredictOptions`.

    ``Predictor(checkpoint, options)``: a ``.pt`` path or a loaded checkpoint; window and step default to
    the checkpoint's own. :meth:`from_model`: a live module (training validation). Options may also be
    given by name (``Predictor(ckpt, device="cpu", window=64)``): they change ``options``.
    ``say`` receives one-line messages (fallbacks, conversions); they are also kept in ``messages``.

    ``fast_crop`` (attribute, default True): lung crop from a subsampled plane, see
    :func:`core.segmentation.inputs.fast_crop_box`.
    """

    header: dict[str, Any]
    spacing: tuple[float, float, float] | None

    def __init__(
        self, checkpoint: Any, options: PredictOptions | None = None, *, say: Say | None = None, **overrides: Any
    ):
        opts = resolve_options(options, overrides)
        model, header, key = load_checkpoint(checkpoint)
        prep = Preprocessing.from_dict(header.get("preprocessing"))
        window, step = opts.window, opts.step
        if opts.mode is not None:
            fraction = mode_settings(opts.mode)["step_fraction"]
            if step is None and fraction != 0.5:  # 0.5: the checkpoint's own step, as without a mode
                window = recommended_window(header, window, None)[0]
                step = max(1, int(round(window * fraction)))
        window, step = recommended_window(header, window, step)
        self.header = header
        self.spacing = recommended_spacing(header, opts.spacing)
        self._setup(model, prep, key, window, step, opts.with_(backend=opts.backend or "auto"), say)

    @classmethod
    def from_model(
        cls,
        model: Any,
        preprocessing: Preprocessing,
        options: PredictOptions | None = None,
        *,
        say: Say | None = None,
        **overrides: Any,
    ) -> Predictor:
        """A predictor over a live module (training validation); the module is moved to the device.
        Window 128 and step 64 unless given (or the mode's step fraction of the window)."""
        from core.segmentation.backends import state_hash

        opts = resolve_options(options, overrides)
        self = cls.__new__(cls)
        window = opts.window or 128
        step = opts.step
        if opts.mode is not None and step is None:
            step = max(1, int(round(int(window) * mode_settings(opts.mode)["step_fraction"])))
        self.header = {}
        self.spacing = None
        self._setup(
            model,
            preprocessing,
            state_hash(model),
            window,
            step if step is not None else 64,
            opts.with_(backend=opts.backend or "torch"),
            say,
        )
        return self

    def _setup(
        self, model: Any, prep: Preprocessing, key: str, window: int, step: int, opts: PredictOptions, say: Say | None
    ) -> None:
        from core.segmentation.backends import BackendRequest, make_backend, resolve_backend_name

        settings = mode_settings(opts.mode) if opts.mode is not None else {}
        gaussian = opts.gaussian if opts.gaussian is not None else bool(settings.get("gaussian", False))
        region = opts.region
        if region is None and settings.get("region") not in (None, "none"):
            region = settings["region"]
        autocast = opts.autocast
        if autocast is None and "gpu_autocast" in settings:
            autocast = bool(settings["gpu_autocast"])
        #: the options in effect (the mode's choices filled in)
        self.options = opts.with_(window=window, step=step, gaussian=gaussian, region=region, autocast=autocast)
        #: the mode asked for (None: plain options, the paper's defaults)
        self.mode = opts.mode
        self.region = region_provider(region)
        self.device_accumulate = opts.device_accumulate

        self.messages: list[str] = []
        outer = say or quiet

        def record(text: str) -> None:
            self.messages.append(text)
            outer(text)

        self.say: Say = record
        self.preprocessing = prep
        #: lung crop from a 4x-subsampled plane (the same box up to a voxel or two, ~20x faster); False: exact
        self.fast_crop = True
        self.window = triple(window, "window")
        self.step = triple(step, "step")
        divisor = int(getattr(model, "divisor", 1) or 1)
        if any(w % divisor for w in self.window):
            raise ConfigError(
                f"Window {self.window} is not a multiple of {divisor}, which this model needs.",
                f"Use a window that is a multiple of {divisor}, e.g. 128.",
            )
        if any(s > w for s, w in zip(self.step, self.window)):
            raise ConfigError(
                f"Step {self.step} is larger than the window {self.window}.",
                "Use a step no larger than the window (default: half of it).",
            )
        self.gaussian = bool(gaussian)
        self.postprocess = opts.postprocess
        self.device = resolve_device(opts.device)
        if opts.threads:
            import torch

            torch.set_num_threads(int(opts.threads))  # asked for explicitly; OpenVINO/ONNX Runtime get it too
        backend = opts.backend or "auto"
        name = resolve_backend_name(backend, self.device, record, settings.get("cpu_backends"))
        request = BackendRequest(
            name, self.device, self.window, key, opts.cache, opts.threads, opts.channels_last, autocast
        )
        self.model = model.eval()
        engine = make_backend(model, request, record)
        #: seconds this predictor spent exporting the model for its engine (0 when the export was cached)
        self.export_seconds = float(getattr(engine, "export_seconds", 0.0))
        self.batch_size = (
            int(opts.batch_size)
            if opts.batch_size
            else default_batch_size(self.device, self.window, autocast is not False)
        )

        def cpu_fallback() -> Engine:
            # the fastest CPU engine installed; the model leaves the GPU, freeing its memory
            cpu_name = resolve_backend_name("auto", "cpu", record)
            cpu = BackendRequest(cpu_name, "cpu", self.window, key, opts.cache, opts.threads)
            return make_backend(self.model.to("cpu"), cpu, record)

        fallback = cpu_fallback if self.device != "cpu" else None
        self.runner = BatchRunner(engine, self.batch_size, fallback, record)

    @property
    def backend_name(self) -> str:
        return self.runner.name

    @property
    def region_name(self) -> str:
        return region_name(self.region)

    def describe(self) -> str:
        """One line: device, engine, window, step, weighting and window region."""
        return (
            f"device {self.device}, backend {self.backend_name}, window {self.window[0]}, step {self.step[0]}, "
            f"{'Gaussian' if self.gaussian else 'mean'} weighting, region {self.region_name}"
        )

    def _accumulate_on_device(self, shape: Sequence[int]) -> bool:
        """Volume and accumulator on the GPU when both fit in a quarter of its free memory
        (``device_accumulate`` forces either way; it is how the tests run this path on the CPU)."""
        if not self.runner.accepts_tensors:
            return False
        if self.device_accumulate is not None:
            return bool(self.device_accumulate)
        if self.device == "cpu":
            return False
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(self.device))
        voxels = float(np.prod([max(s, w) for s, w in zip(shape, self.window)]))
        return 3 * 4 * voxels < 0.25 * free

    def plan_windows(
        self, ct: IntensityVolume, box: CropBox, array: np.ndarray
    ) -> tuple[list[Window], list[Window] | None]:
        """``(grid, chosen)``: the windows over the crop, and those the region provider selects
        (None without a provider: every window)."""
        grid = window_slices(tuple(max(s, w) for s, w in zip(box.shape, self.window)), self.window, self.step)
        if self.region is None:
            return grid, None
        request = RegionRequest(ct, box, array, self.preprocessing, self.window, self.runner)
        region = np.asarray(self.region(request), bool)
        if region.shape == tuple(ct.shape) and region.shape != tuple(box.shape):
            region = box.crop(region)
        if region.shape != tuple(box.shape):
            raise InputError(
                f"The window region has shape {region.shape}; expected the crop {box.shape} or the CT {ct.shape}.",
                "Fix the region provider.",
            )
        _, chosen = select_windows(region, self.window, self.step)
        self.say(f"window selection ({self.region_name}): {len(chosen)} of {len(grid)} windows touch the region")
        return grid, chosen

    def predict(
        self, ct: IntensityVolume, progress: Progress | None = None, cancel: Cancellable | None = None
    ) -> Prediction:
        """Segment ``ct``; results on its full grid. Raises :class:`core.errors.Cancelled` if ``cancel`` is set.

        ``progress(done, total, message)`` after every batch of windows, the message saying how many
        windows are done and about how long the rest takes.
        With a target ``spacing`` (asked for, or recommended by the checkpoint)
        the CT is resampled linearly to it, segmented there, and the
        probabilities are resampled back linearly before thresholding, so the
        mask is made on the CT's own grid.
        """
        check_ct(ct)
        if self.spacing is not None and not np.allclose(ct.geometry.spacing, self.spacing, rtol=0.02):
            return self._predict_resampled(ct, self.spacing, progress, cancel)
        return self._predict_native(ct, progress, cancel)

    def _predict_resampled(
        self,
        ct: IntensityVolume,
        spacing: tuple[float, float, float],
        progress: Progress | None,
        cancel: Cancellable | None,
    ) -> Prediction:
        from core.preprocess import resample_ct
        from core.resample import resample_array

        t0 = time.perf_counter()
        small = resample_ct(ct, spacing)
        self.say(
            f"resampled the CT from {_fmt_spacing(ct.geometry.spacing)} to {_fmt_spacing(spacing)} mm "
            f"({'x'.join(map(str, ct.shape))} -> {'x'.join(map(str, small.shape))} voxels), as the model expects"
        )
        inner = self._predict_native(small, progress, cancel)
        prob = resample_array(
            inner.probabilities.array.astype(np.float32) / np.float32(255.0),
            small.geometry,
            ct.shape,
            ct.geometry,
            linear=True,
            default=0.0,
        )
        raise_if_cancelled(cancel, "Segmentation cancelled while finishing.")
        mask = self.postprocess.apply(prob)
        name = ct.name or "ct"
        t2 = time.perf_counter()
        return Prediction(
            probabilities=IntensityVolume(quantise(prob), ct.geometry, name=f"{name}_probabilities"),
            mask=LabelVolume(mask, ct.geometry, name=f"{name}_airway"),
            crop=map_box(inner.crop, small.geometry, ct),
            backend=inner.backend,
            windows=inner.windows,
            seconds=t2 - t0,
            messages=list(self.messages),
            timings={**inner.timings, "resample": (t2 - t0) - inner.seconds},
            windows_total=inner.windows_total,
        )

    def _predict_native(self, ct: IntensityVolume, progress: Progress | None, cancel: Cancellable | None) -> Prediction:
        t0 = time.perf_counter()
        raise_if_cancelled(cancel, "Segmentation cancelled before it started.")
        array, box = prepare(ct, self.preprocessing, self.fast_crop)
        t_prep = time.perf_counter()
        grid, chosen = self.plan_windows(ct, box, array)
        t1 = time.perf_counter()
        volume: Any = array
        if self._accumulate_on_device(array.shape):
            import torch

            volume = torch.from_numpy(array).to(self.device)
        del array
        prob = sliding_window(
            volume,
            self.runner,
            self.window,
            self.step,
            self.runner.batch_size,
            self.gaussian,
            pad_value=0.0,
            progress=progress,
            cancel=cancel,
            windows=chosen,
        )
        del volume
        t2 = time.perf_counter()
        raise_if_cancelled(cancel, "Segmentation cancelled while finishing.")
        mask, prob_u8 = self.postprocess.finish(prob)
        del prob
        name = ct.name or "ct"
        probabilities = IntensityVolume(box.uncrop(prob_u8, 0), ct.geometry, name=f"{name}_probabilities")
        full_mask = LabelVolume(box.uncrop(mask, False), ct.geometry, name=f"{name}_airway")
        t3 = time.perf_counter()
        return Prediction(
            probabilities=probabilities,
            mask=full_mask,
            crop=box,
            backend=self.runner.name,
            windows=len(chosen) if chosen is not None else len(grid),
            seconds=t3 - t0,
            messages=list(self.messages),
            timings={"prepare": t_prep - t0, "region": t1 - t_prep, "windows": t2 - t1, "postprocess": t3 - t2},
            windows_total=len(grid),
        )
