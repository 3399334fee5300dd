"""Sliding-window inference (method.md section 7), used by the CLI, the GUI and training validation.

- The checkpoint's own preprocessing (HU window, scale, lung crop) is applied,
  windows of ``window`` voxels (default 128^3) step ``step`` (default 64, 50%
  overlap) cover the crop, the last window of each axis is snapped to the
  border, and ``sigmoid(dec)`` is averaged over windows (paper and authors'
  code: plain mean; ``gaussian=True``: nnU-Net-style Gaussian weights,
  sigma = window / 8).
- A crop smaller than a window is padded at its end with the window's lowest
  value (air) and cut back after.
- Because windows form a Cartesian grid and the Gaussian is separable, the
  normaliser (sum of weights per voxel) is the outer product of three 1D sums:
  only one float32 accumulator the size of the crop lives on the host.
- Output on the CT's full grid: probabilities as uint8 (``round(255 p)``), and
  the mask ``p > threshold`` (paper: 0.5) reduced to its largest connected
  component (paper's evaluation post-processing; cc3d), optionally hole-filled.

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
quarter of its free memory (:func:`sliding_window_tensor`), else on the host.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from core.errors import AirwayError, Cancelled, CheckpointError, ConfigError, InputError
from core.preprocess import CropBox, Preprocessing, lung_mask, prepare_input, window_hu
from core.volume import IntensityVolume, LabelVolume

Progress = Callable[[int, int, float], None]
Say = Callable[[str], None]


class CancelToken(Protocol):
    def is_set(self) -> bool: ...


def _quiet(_: str) -> None:
    pass


# -- window grid ---------------------------------------------------------------


def window_starts(size: int, window: int, step: int) -> list[int]:
    """Start of each window along one axis; the last one snapped so it ends at the border.

    ``size <= window`` gives ``[0]`` (the axis is padded up to ``window``).
    """
    if window < 1 or step < 1:
        raise ConfigError(f"Window {window} and step {step} must be positive.")
    if size <= window:
        return [0]
    starts = list(range(0, size - window, step))
    starts.append(size - window)
    return starts


def window_slices(shape: Sequence[int], window: Sequence[int], step: Sequence[int]) -> list[tuple[slice, slice, slice]]:
    """All windows of the grid, z-major."""
    axes = [window_starts(s, w, st) for s, w, st in zip(shape, window, step)]
    return [
        (slice(z, z + window[0]), slice(y, y + window[1]), slice(x, x + window[2]))
        for z in axes[0]
        for y in axes[1]
        for x in axes[2]
    ]


def gaussian_1d(window: int, sigma_scale: float = 1.0 / 8) -> np.ndarray:
    """nnU-Net-style importance along one axis: peak 1 at the centre, sigma = window * sigma_scale."""
    centre = (window - 1) / 2.0
    sigma = max(window * sigma_scale, 1e-6)
    g = np.exp(-0.5 * ((np.arange(window) - centre) / sigma) ** 2)
    return np.maximum(g / g.max(), 1e-6).astype(np.float32)


def axis_normaliser(size: int, window: int, step: int, weights: np.ndarray) -> np.ndarray:
    """Sum of the 1D window weights covering each position of an axis of ``size`` (>= window)."""
    total = np.zeros(size, np.float64)
    for s in window_starts(size, window, step):
        total[s : s + window] += weights
    return total.astype(np.float32)


# -- batch runner with CUDA out-of-memory handling ------------------------------


def _is_oom(exc: BaseException) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return False
    return isinstance(exc, torch.OutOfMemoryError)


def _free_cuda_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


class BatchRunner:
    """Runs windows through a backend ``batch_size`` at a time.

    A CUDA out-of-memory error halves the batch and retries; at a batch of one
    it switches to ``fallback()`` (the CPU) and says so. Without a fallback the
    error is reported as an :class:`InputError` with what to try.
    """

    def __init__(
        self,
        backend: Callable[[np.ndarray], np.ndarray],
        batch_size: int = 1,
        fallback: Callable[[], Callable[[np.ndarray], np.ndarray]] | None = None,
        say: Say = _quiet,
    ):
        if batch_size < 1:
            raise ConfigError(f"Batch size {batch_size} must be at least 1.")
        self.backend = backend
        self.batch_size = int(batch_size)
        self.fallback = fallback
        self.say = say

    @property
    def name(self) -> str:
        return str(getattr(self.backend, "name", type(self.backend).__name__))

    def __call__(self, windows: Any) -> Any:
        """``windows`` (N, 1, D, H, W) float32 -> probabilities of the same shape and kind
        (a numpy array, or a torch tensor that stays on its device)."""
        as_tensor = not isinstance(windows, np.ndarray)
        if as_tensor:
            import torch

            out = torch.empty_like(windows, dtype=torch.float32)
        else:
            out = np.empty(windows.shape, np.float32)
        i = 0
        while i < len(windows):
            n = min(self.batch_size, len(windows) - i)
            try:
                chunk = windows[i : i + n]
                if as_tensor and not getattr(self.backend, "accepts_tensors", False):
                    # e.g. the CPU fallback after a GPU out-of-memory error: numpy in, numpy out
                    out[i : i + n] = torch.from_numpy(self.backend(chunk.cpu().numpy())).to(out.device)
                else:
                    out[i : i + n] = self.backend(chunk)
            except Exception as exc:
                if not _is_oom(exc):
                    raise
                _free_cuda_cache()
                if self.batch_size > 1:
                    self.batch_size = max(1, self.batch_size // 2)
                    self.say(f"Out of GPU memory; retrying with a batch of {self.batch_size} window(s).")
                    continue
                if self.fallback is None:
                    raise InputError(
                        "Out of memory running one window.",
                        "Use --device cpu, a smaller --window, or close other programs using the GPU.",
                    ) from None
                self.say("Out of GPU memory even with one window; continuing on the CPU (slower).")
                self.backend = self.fallback()
                self.fallback = None
                continue
            i += n
        return out


# -- the sliding-window loop -----------------------------------------------------


def _window_weights(win: tuple[int, int, int], gaussian: bool) -> tuple[list[np.ndarray], np.ndarray | None]:
    weights_1d = [gaussian_1d(w) if gaussian else np.ones(w, np.float32) for w in win]
    weight_3d = (
        (weights_1d[0][:, None, None] * weights_1d[1][None, :, None] * weights_1d[2][None, None, :])
        if gaussian
        else None
    )
    return weights_1d, weight_3d


def _window_key(sl: tuple[slice, slice, slice]) -> tuple[int, ...]:
    return tuple(v for s in sl for v in (s.start, s.stop))  # slices are not hashable before Python 3.12


def _check_windows(windows: Sequence[tuple[slice, slice, slice]] | None, grid: list) -> list | None:
    """``windows`` as a list when it is a strict subset of ``grid`` (None: the whole grid)."""
    if windows is None:
        return None
    chosen = list(windows)
    if len(chosen) == len(grid):
        return None  # every window: the separable normaliser, identical to the unselected path
    known = {_window_key(sl) for sl in grid}
    if any(_window_key(sl) not in known for sl in chosen):
        raise ConfigError("Selected windows must come from the sliding-window grid of this volume.")
    return chosen


def sliding_window(
    array: np.ndarray,
    run: Callable[[np.ndarray], np.ndarray],
    window: int | Sequence[int] = 128,
    step: int | Sequence[int] = 64,
    batch_size: int = 1,
    gaussian: bool = False,
    pad_value: float = 0.0,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
    windows: Sequence[tuple[slice, slice, slice]] | None = None,
) -> np.ndarray:
    """Probabilities (float32, shape of ``array``) averaged over a grid of windows.

    ``run`` maps ``(N, 1, *window)`` float32 to probabilities of the same shape.
    ``cancel`` is checked before every batch, so with ``batch_size=1`` a
    cancellation takes effect within one window.
    ``windows``: run only these windows of the grid (:func:`select_windows`);
    voxels no chosen window covers get probability 0. None (or the whole grid)
    is the plain sliding window, bit for bit.
    """
    if array.ndim != 3:
        raise InputError(f"Expected a 3D array, got shape {array.shape}.")
    win = _triple(window, "window")
    stp = _triple(step, "step")
    if any(s > w for s, w in zip(stp, win)):
        raise ConfigError(
            f"Step {stp} is larger than the window {win}: some voxels would get no prediction.",
            "Use a step no larger than the window (default: half of it).",
        )
    shape = array.shape
    padded_shape = tuple(max(s, w) for s, w in zip(shape, win))
    if padded_shape != shape:
        pad = [(0, p - s) for p, s in zip(padded_shape, shape)]
        array = np.pad(array, pad, mode="constant", constant_values=pad_value)
    array = np.asarray(array, dtype=np.float32)

    weights_1d, weight_3d = _window_weights(win, gaussian)
    grid = window_slices(padded_shape, win, stp)
    subset = _check_windows(windows, grid)
    slices = grid if subset is None else subset
    total = len(slices)
    acc = np.zeros(padded_shape, np.float32)
    # a subset breaks the grid's separable normaliser: sum the weights per voxel instead
    wsum = None if subset is None else np.zeros(padded_shape, np.float32)
    batch = np.empty((max(1, batch_size), 1, *win), np.float32)
    t0 = time.perf_counter()
    done = 0
    for b0 in range(0, total, batch.shape[0]):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"Segmentation cancelled after {done} of {total} windows.")
        chunk = slices[b0 : b0 + batch.shape[0]]
        for k, sl in enumerate(chunk):
            batch[k, 0] = array[sl]
        probs = run(batch[: len(chunk)])
        for k, sl in enumerate(chunk):
            if weight_3d is None:
                acc[sl] += probs[k, 0]
            else:
                acc[sl] += probs[k, 0] * weight_3d
            if wsum is not None:
                wsum[sl] += 1.0 if weight_3d is None else weight_3d
        done += len(chunk)
        if progress is not None:
            elapsed = time.perf_counter() - t0
            progress(done, total, elapsed / done * (total - done))
    if wsum is not None:
        for z in range(padded_shape[0]):
            covered = wsum[z] > 0
            acc[z][covered] /= wsum[z][covered]
        return acc[: shape[0], : shape[1], : shape[2]]
    norm = [axis_normaliser(s, w, st, wt) for s, w, st, wt in zip(padded_shape, win, stp, weights_1d)]
    # in place, one z-slab at a time, so no second volume-sized temporary exists
    for z in range(padded_shape[0]):
        acc[z] /= norm[0][z] * np.outer(norm[1], norm[2])
    return acc[: shape[0], : shape[1], : shape[2]]


def sliding_window_tensor(
    volume: Any,
    run: Callable[[Any], Any],
    window: int | Sequence[int] = 128,
    step: int | Sequence[int] = 64,
    batch_size: int = 1,
    gaussian: bool = False,
    pad_value: float = 0.0,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
    windows: Sequence[tuple[slice, slice, slice]] | None = None,
) -> Any:
    """:func:`sliding_window` with the volume and accumulator as torch tensors on the model's device.

    For a GPU when the crop fits in its memory: windows never cross PCIe, only
    the final probabilities do. Same grid, weights, window selection and normalisation as the host version.
    """
    import torch

    if volume.ndim != 3:
        raise InputError(f"Expected a 3D array, got shape {tuple(volume.shape)}.")
    win = _triple(window, "window")
    stp = _triple(step, "step")
    if any(s > w for s, w in zip(stp, win)):
        raise ConfigError(
            f"Step {stp} is larger than the window {win}: some voxels would get no prediction.",
            "Use a step no larger than the window (default: half of it).",
        )
    shape = tuple(volume.shape)
    padded_shape = tuple(max(s, w) for s, w in zip(shape, win))
    x = volume.float()
    if padded_shape != shape:
        pad: list[int] = []
        for p, s in reversed(list(zip(padded_shape, shape))):  # F.pad wants the last axis first
            pad += [0, p - s]
        x = torch.nn.functional.pad(x, pad, mode="constant", value=pad_value)
    dev = x.device
    w1d, w3d = _window_weights(win, gaussian)
    weights_1d = [torch.from_numpy(w).to(dev) for w in w1d]
    weight_3d = None if w3d is None else torch.from_numpy(w3d).to(dev)
    grid = window_slices(padded_shape, win, stp)
    subset = _check_windows(windows, grid)
    slices = grid if subset is None else subset
    total = len(slices)
    acc = torch.zeros(padded_shape, dtype=torch.float32, device=dev)
    wsum = None if subset is None else torch.zeros(padded_shape, dtype=torch.float32, device=dev)
    t0 = time.perf_counter()
    done = 0
    bs = max(1, batch_size)
    for b0 in range(0, total, bs):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"Segmentation cancelled after {done} of {total} windows.")
        chunk = slices[b0 : b0 + bs]
        batch = torch.stack([x[sl] for sl in chunk])[:, None]
        probs = run(batch)
        for k, sl in enumerate(chunk):
            acc[sl] += probs[k, 0] if weight_3d is None else probs[k, 0] * weight_3d
            if wsum is not None:
                wsum[sl] += 1.0 if weight_3d is None else weight_3d
        done += len(chunk)
        if progress is not None:
            elapsed = time.perf_counter() - t0
            progress(done, total, elapsed / done * (total - done))
    if wsum is not None:
        acc /= wsum.clamp_(min=1e-12)  # uncovered voxels: 0 / tiny = 0
        return acc[: shape[0], : shape[1], : shape[2]]
    norm = [
        torch.from_numpy(axis_normaliser(s, w, st, wt.cpu().numpy())).to(dev)
        for s, w, st, wt in zip(padded_shape, win, stp, weights_1d)
    ]
    # two in-place divisions by small broadcasts: no volume-sized temporary on the device
    acc /= (norm[0][:, None] * norm[1][None, :])[:, :, None]
    acc /= norm[2][None, None, :]
    return acc[: shape[0], : shape[1], : shape[2]]


# -- airway-guided window selection ----------------------------------------------


@dataclass(frozen=True)
class RegionRequest:
    """What a region provider may look at to say where airway can be.

    ``ct`` is the whole CT, ``box`` the crop the windows cover, ``array`` the
    network input on that crop (windowed and scaled), ``run`` the predictor's
    batch runner (for providers that run the network, e.g. at a lower
    resolution), ``window`` the window size.
    """

    ct: IntensityVolume
    box: CropBox
    array: np.ndarray
    preprocessing: Preprocessing
    window: tuple[int, int, int]
    run: Callable[[np.ndarray], np.ndarray] | None = None


#: Anything that maps a :class:`RegionRequest` to a bool mask on the crop (``box.shape``) or on the whole
#: CT (``ct.shape``), True where airway can be. Windows that touch no True voxel are not run. Another
#: engine's mask (a trachea detector, region growing) plugs in through :class:`MaskRegion`.
RegionProvider = Callable[[RegionRequest], np.ndarray]


def _margin_voxels(margin_mm: float, spacing_zyx: Sequence[float], stride: Sequence[int]) -> tuple[int, int, int]:
    return tuple(int(math.ceil(margin_mm / (sp * st))) for sp, st in zip(spacing_zyx, stride))  # type: ignore[return-value]


def _dilate(mask: np.ndarray, radius: Sequence[int]) -> np.ndarray:
    """Grow ``mask`` by a box of ``radius`` voxels per axis (separable maximum filter; a box over-covers
    a ball, which only ever adds windows)."""
    if not any(radius) or not mask.any():
        return mask
    from scipy import ndimage

    return ndimage.maximum_filter(mask, size=tuple(2 * r + 1 for r in radius))


def _upsample_to(coarse: np.ndarray, stride: Sequence[int], box: CropBox) -> np.ndarray:
    """A mask computed on ``ct[::sz, ::sy, ::sx]`` brought to the crop's full-resolution grid (each
    coarse voxel stands for the ``stride`` block it starts)."""
    lo = [b // s for b, s in zip(box.start, stride)]
    hi = [-(-e // s) for e, s in zip(box.stop, stride)]
    part = coarse[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    for axis, s in enumerate(stride):
        if s > 1:
            part = np.repeat(part, s, axis=axis)
    offset = [b - l * s for b, l, s in zip(box.start, lo, stride)]
    shape = box.shape
    return np.ascontiguousarray(
        part[offset[0] : offset[0] + shape[0], offset[1] : offset[1] + shape[1], offset[2] : offset[2] + shape[2]]
    )


@dataclass(frozen=True)
class LungRegion:
    """Lungs and central airways (:func:`core.preprocess.lung_mask`: the air inside the body, trachea
    included), from a subsampled CT, grown by ``margin_mm``. Training-free; ~0.2 s on a 512^2 x 400 CT."""

    margin_mm: float = 10.0
    stride: tuple[int, int, int] = (2, 4, 4)
    name: str = "lung"

    def __call__(self, request: RegionRequest) -> np.ndarray:
        ct = request.ct
        st = tuple(max(1, min(s, n // 32 or 1)) for s, n in zip(self.stride, ct.shape))
        coarse = lung_mask(ct.array[:: st[0], :: st[1], :: st[2]], request.preprocessing.lung_threshold)
        if not coarse.any():
            return np.ones(request.box.shape, bool)  # nothing found: do not guess, run every window
        spacing_zyx = tuple(reversed(ct.geometry.spacing))
        coarse = _dilate(coarse, _margin_voxels(self.margin_mm, spacing_zyx, st))
        return _upsample_to(coarse, st, request.box)


@dataclass(frozen=True)
class CoarseModelRegion:
    """The same network at 1/``factor`` resolution (windows without overlap), its probabilities above
    ``threshold``, grown by ``margin_mm``, joined with the trachea-and-lung air so the central airways are
    never lost. Costs about (crop / (factor * window))^3 windows."""

    factor: int = 2
    threshold: float = 0.1
    margin_mm: float = 10.0
    name: str = "coarse"

    def __call__(self, request: RegionRequest) -> np.ndarray:
        from scipy import ndimage

        if request.run is None:
            raise ConfigError("The coarse region needs the network; none was given.")
        small = ndimage.zoom(request.array, 1.0 / self.factor, order=1)
        prob = sliding_window(small, request.run, request.window, request.window, 1, False, 0.0)
        coarse = prob > self.threshold
        spacing_zyx = tuple(reversed(request.ct.geometry.spacing))
        coarse = _dilate(coarse, _margin_voxels(self.margin_mm, spacing_zyx, (self.factor,) * 3))
        full = _upsample_to(coarse, (self.factor,) * 3, CropBox((0, 0, 0), request.box.shape, request.box.shape))
        return full | LungRegion(margin_mm=0.0)(request)


@dataclass(frozen=True)
class MaskRegion:
    """A mask from elsewhere (e.g. a trachea detector and region growing) on the whole CT's grid, grown
    by ``margin_mm``."""

    mask: np.ndarray
    margin_mm: float = 10.0
    name: str = "mask"

    def __call__(self, request: RegionRequest) -> np.ndarray:
        if tuple(self.mask.shape) != tuple(request.ct.shape):
            raise InputError(
                f"The region mask has shape {self.mask.shape}, the CT {request.ct.shape}.",
                "Give a mask on the CT's own grid.",
            )
        spacing_zyx = tuple(reversed(request.ct.geometry.spacing))
        grown = _dilate(np.asarray(self.mask, bool), _margin_voxels(self.margin_mm, spacing_zyx, (1, 1, 1)))
        return request.box.crop(grown)


#: Built-in providers by name (``--region``); "none" runs every window (the paper).
REGIONS: dict[str, Callable[[], RegionProvider | None]] = {
    "none": lambda: None,
    "lung": LungRegion,
    "coarse": CoarseModelRegion,
}


def region_provider(region: str | RegionProvider | None) -> RegionProvider | None:
    if region is None or callable(region):
        return region  # type: ignore[return-value]
    if region not in REGIONS:
        raise ConfigError(f"Unknown window region '{region}'.", f"Use one of: {', '.join(REGIONS)}.")
    return REGIONS[region]()


def select_windows(
    region: np.ndarray, window: int | Sequence[int], step: int | Sequence[int]
) -> tuple[list[tuple[slice, slice, slice]], list[tuple[slice, slice, slice]]]:
    """``(grid, chosen)``: every window of the grid over ``region``'s shape (padded up to a window), and
    those that touch a True voxel of ``region`` (none for an empty region: the output is then all 0)."""
    win = _triple(window, "window")
    stp = _triple(step, "step")
    padded = tuple(max(s, w) for s, w in zip(region.shape, win))
    grid = window_slices(padded, win, stp)
    chosen = [sl for sl in grid if region[sl].any()]  # slices past the end are clipped by numpy
    return grid, chosen


def _triple(value: int | Sequence[int], what: str) -> tuple[int, int, int]:
    t = (int(value),) * 3 if np.isscalar(value) else tuple(int(v) for v in value)  # type: ignore[arg-type]
    if len(t) != 3 or min(t) < 1:
        raise ConfigError(f"{what} must be a positive size or three of them, got {value}.")
    return t  # type: ignore[return-value]


# -- post-processing -------------------------------------------------------------


@dataclass(frozen=True)
class PostProcessing:
    """Probabilities -> mask. Paper: threshold 0.5, then the largest connected component."""

    threshold: float = 0.5
    largest_component: bool = True
    connectivity: int = 26
    fill_holes: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold < 1.0:
            raise ConfigError(f"Threshold {self.threshold} must be in [0, 1).", "Use 0.5 (the paper's).")
        if self.connectivity not in (6, 18, 26):
            raise ConfigError(f"Connectivity {self.connectivity} is not 6, 18 or 26.")

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        """``probabilities`` float (0..1) or uint8 (0..255) -> bool mask."""
        if probabilities.dtype == np.uint8:
            mask = probabilities > np.uint8(min(255, math.floor(self.threshold * 255)))
        else:
            mask = probabilities > self.threshold
        return self.clean(mask)

    def clean(self, mask: np.ndarray) -> np.ndarray:
        """The thresholded mask -> largest component (and holes filled) as configured."""
        if self.largest_component and mask.any():
            import cc3d

            mask = cc3d.largest_k(mask, k=1, connectivity=self.connectivity) > 0
        if self.fill_holes and mask.any():
            from scipy import ndimage

            mask = ndimage.binary_fill_holes(mask)
        return mask


def quantise(probabilities: np.ndarray) -> np.ndarray:
    """float 0..1 -> uint8 0..255 (``round(255 p)``), slab by slab to keep memory flat."""
    out = np.empty(probabilities.shape, np.uint8)
    for z in range(probabilities.shape[0]):
        out[z] = np.clip(np.rint(probabilities[z] * 255.0), 0, 255)
    return out


# -- input ---------------------------------------------------------------------------


def fast_crop_box(ct: np.ndarray, prep: Preprocessing, stride: int = 4, min_side: int = 256) -> CropBox:
    """The lung crop with the lung mask computed on every ``stride``-th row and column (about 20x faster).

    Only the box matters, not the mask: the coarse mask, grown by one coarse
    voxel in-plane and brought back to full resolution, selects the full-resolution
    air voxels (below the lung threshold) whose bounding box, plus the margin,
    is the crop. That is the exact box up to a voxel or two; a loose box would
    cost whole extra rows of windows. Volumes under ``min_side`` in-plane use
    the exact mask.
    """
    if prep.crop == "none":
        return CropBox.full(ct.shape)
    if min(ct.shape[1:]) < min_side or stride <= 1:
        return CropBox.from_mask(lung_mask(ct, prep.lung_threshold), prep.margin)
    from scipy import ndimage

    small = lung_mask(ct[:, ::stride, ::stride], prep.lung_threshold)
    if not small.any():
        return CropBox.full(ct.shape)
    grown = ndimage.binary_dilation(small, structure=np.ones((1, 3, 3), bool))
    coarse = CropBox.from_mask(grown, 0)
    # full-resolution window of the grown coarse box
    lo = [coarse.start[0], coarse.start[1] * stride, coarse.start[2] * stride]
    hi = [coarse.stop[0], min(coarse.stop[1] * stride, ct.shape[1]), min(coarse.stop[2] * stride, ct.shape[2])]
    up = np.repeat(np.repeat(grown[coarse.slices], stride, axis=1), stride, axis=2)[:, : hi[1] - lo[1], : hi[2] - lo[2]]
    air = ct[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] < prep.lung_threshold
    fine = up & air
    if not fine.any():
        return CropBox.full(ct.shape)
    inner = CropBox.from_mask(fine, 0)
    start = tuple(max(a + o - prep.margin, 0) for a, o in zip(inner.start, lo))
    stop = tuple(min(b + o + prep.margin, n) for b, o, n in zip(inner.stop, lo, ct.shape))
    return CropBox(start, stop, tuple(ct.shape))  # type: ignore[arg-type]


def prepare(ct: IntensityVolume, prep: Preprocessing, fast_crop: bool = True) -> tuple[np.ndarray, CropBox]:
    """Network input: :func:`core.preprocess.prepare_input`, or with the subsampled lung crop."""
    if not fast_crop:
        return prepare_input(ct, prep)
    box = fast_crop_box(ct.array, prep)
    return window_hu(box.crop(ct.array), prep.window, prep.scale), box


# -- the predictor -----------------------------------------------------------------


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


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is usable, else ``cpu``; checks ``cuda:N`` exists."""
    import torch

    d = (device or "auto").strip().lower()
    if d == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if d == "cpu":
        return "cpu"
    if d == "cuda" or d.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"Device '{device}' was asked for but no CUDA GPU is usable here.",
                "Use --device cpu (or auto), or install a CUDA build of PyTorch and the NVIDIA driver.",
            )
        if ":" in d:
            try:
                index = int(d.split(":", 1)[1])
            except ValueError:
                raise ConfigError(f"Device '{device}' is not understood.", "Write it as cuda:0, cuda:1, ...") from None
            if not 0 <= index < torch.cuda.device_count():
                raise ConfigError(
                    f"GPU {index} does not exist: {torch.cuda.device_count()} GPU(s) found.",
                    f"Use cuda:0..cuda:{torch.cuda.device_count() - 1}.",
                )
        return d
    raise ConfigError(f"Unknown device '{device}'.", "Use auto, cpu, cuda or cuda:N.")


#: GPU memory per 128^3 window of the full-size WingsNet (activations and side outputs), inference mode;
#: benchmarks/gpu_inference.py prints the measured peaks per batch size
GPU_BYTES_PER_WINDOW = {"autocast": 2.5e9, "fp32": 5.0e9}
#: more windows per pass bring nothing once a window fills the GPU (measured: see benchmarks/gpu_inference.py)
MAX_GPU_BATCH = 8


def default_batch_size(device: str, window: tuple[int, int, int], autocast: bool = True) -> int:
    """1 on the CPU (batching brings nothing there); on a GPU, as many windows as about half the free memory
    holds, at most :data:`MAX_GPU_BATCH`."""
    if device == "cpu":
        return 1
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    per_window = GPU_BYTES_PER_WINDOW["autocast" if autocast else "fp32"] * np.prod(window) / 128**3
    return int(max(1, min(MAX_GPU_BATCH, (free * 0.5) // per_window)))


def _load_checkpoint(checkpoint: Any) -> tuple[Any, dict, str]:
    """(model on the CPU, header, cache key) from a path or a loaded checkpoint.

    The key hashes the weights (not the file), so the same network saved twice
    reuses one exported model.
    """
    from core.inference_backends import state_hash
    from core.models.checkpoint import model_from_checkpoint

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


class Predictor:
    """A checkpoint ready to segment CTs on one device.

    Args:
        checkpoint: path of a ``.pt`` checkpoint, or a loaded checkpoint object.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        window, step: sliding-window size and stride in voxels (paper: 128, 64).
        batch_size: windows per forward pass (default: 1 on CPU, by free memory on GPU).
        gaussian: Gaussian window weighting instead of the paper's plain mean.
        backend: see :data:`core.inference_backends.BACKENDS`; CPU only, "auto" picks the fastest installed.
        postprocess: threshold / largest component / connectivity / hole filling.
        say: receives one-line messages (fallbacks, conversions).
        cache: folder for exported models (default :func:`core.inference_backends.cache_dir`).
        threads: CPU threads for torch / OpenVINO / ONNX Runtime (default: theirs).
        channels_last: channels-last 3D memory format for the PyTorch backend.
        device_accumulate: keep the crop and accumulator on the GPU (default: when they fit).
        spacing: target voxel spacing, see :func:`recommended_spacing`.
        autocast: PyTorch on CUDA only: None/True = bf16 (else fp16) autocast, False = fp32 without TF32.
        mode: "fast" or "exact" (:func:`mode_settings`): supplies step, weighting, region, CPU backend order and
            GPU precision wherever those are not given; None: the arguments alone (the paper's defaults).
        region: airway-guided window selection: None / "none" runs every window (the paper); "lung"
            (:class:`LungRegion`), "coarse" (:class:`CoarseModelRegion`) or any :data:`RegionProvider`
            runs only the windows that touch the region.

    ``fast_crop`` (attribute, default True): lung crop from a subsampled plane, see :func:`fast_crop_box`.
    """

    def __init__(
        self,
        checkpoint: Any,
        device: str = "auto",
        window: int | None = None,
        step: int | None = None,
        batch_size: int | None = None,
        gaussian: bool | None = None,
        backend: str = "auto",
        postprocess: PostProcessing | None = None,
        say: Say | None = None,
        cache: Path | None = None,
        threads: int | None = None,
        channels_last: bool = False,
        device_accumulate: bool | None = None,
        spacing: Any = None,
        region: str | RegionProvider | None = None,
        autocast: bool | None = None,
        mode: str | None = None,
    ):
        model, header, key = _load_checkpoint(checkpoint)
        prep = Preprocessing.from_dict(header.get("preprocessing"))
        if mode is not None:
            fraction = mode_settings(mode)["step_fraction"]
            if step is None and fraction != 0.5:  # 0.5: the checkpoint's own step, as without a mode
                window = recommended_window(header, window, None)[0]
                step = max(1, int(round(window * fraction)))
        window, step = recommended_window(header, window, step)
        self._setup(
            model,
            prep,
            key,
            device,
            window,
            step,
            batch_size,
            gaussian,
            backend,
            postprocess,
            say,
            cache,
            threads,
            channels_last,
            autocast,
            mode,
            region,
        )
        self.header = header
        self.device_accumulate = device_accumulate
        self.spacing = recommended_spacing(header, spacing)

    @classmethod
    def from_model(
        cls,
        model: Any,
        preprocessing: Preprocessing,
        device: str = "auto",
        window: int = 128,
        step: int | None = None,
        batch_size: int | None = None,
        gaussian: bool | None = None,
        backend: str = "torch",
        postprocess: PostProcessing | None = None,
        say: Say | None = None,
        cache: Path | None = None,
        threads: int | None = None,
        channels_last: bool = False,
        device_accumulate: bool | None = None,
        region: str | RegionProvider | None = None,
        autocast: bool | None = None,
        mode: str | None = None,
    ) -> Predictor:
        """A predictor over a live module (training validation); the module is moved to ``device``."""
        from core.inference_backends import state_hash

        self = cls.__new__(cls)
        key = state_hash(model)
        if mode is not None and step is None:
            step = max(1, int(round(int(window) * mode_settings(mode)["step_fraction"])))
        self._setup(
            model,
            preprocessing,
            key,
            device,
            window,
            step if step is not None else 64,
            batch_size,
            gaussian,
            backend,
            postprocess,
            say,
            cache,
            threads,
            channels_last,
            autocast,
            mode,
            region,
        )
        self.header = {}
        self.device_accumulate = device_accumulate
        self.spacing = None
        return self

    def _setup(
        self,
        model: Any,
        prep: Preprocessing,
        key: str,
        device: str,
        window: int,
        step: int,
        batch_size: int | None,
        gaussian: bool,
        backend: str,
        postprocess: PostProcessing | None,
        say: Say | None,
        cache: Path | None,
        threads: int | None,
        channels_last: bool,
        autocast: bool | None = None,
        mode: str | None = None,
        region: str | RegionProvider | None = None,
    ) -> None:
        from core.inference_backends import BackendRequest, make_backend, resolve_backend_name

        settings = mode_settings(mode) if mode is not None else {}
        #: the mode asked for (None: plain arguments, the paper's defaults)
        self.mode = mode
        if gaussian is None:
            gaussian = bool(settings.get("gaussian", False))
        if region is None and settings.get("region") not in (None, "none"):
            region = settings["region"]
        if autocast is None and "gpu_autocast" in settings:
            autocast = bool(settings["gpu_autocast"])
        self.region = region_provider(region)
        order = settings.get("cpu_backends")

        self.messages: list[str] = []
        outer = say or _quiet

        def record(text: str) -> None:
            self.messages.append(text)
            outer(text)

        self.say = record
        self.preprocessing = prep
        #: lung crop from a 4x-subsampled plane (the same box up to a voxel or two, ~20x faster); False: exact
        self.fast_crop = True
        self.window = _triple(window, "window")
        self.step = _triple(step, "step")
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
        self.postprocess = postprocess or PostProcessing()
        self.device = resolve_device(device)
        if threads and self.device == "cpu":
            import torch

            torch.set_num_threads(int(threads))  # asked for explicitly; OpenVINO/ONNX Runtime get it too
        name = resolve_backend_name(backend, "cpu" if self.device == "cpu" else self.device, record, order)
        request = BackendRequest(name, self.device, self.window, key, cache, threads, channels_last, autocast)
        self.model = model.eval()
        engine = make_backend(model, request, record)
        self.batch_size = (
            int(batch_size) if batch_size else default_batch_size(self.device, self.window, autocast is not False)
        )

        def cpu_fallback():
            # the fastest CPU engine installed; the model leaves the GPU, freeing its memory
            cpu_name = resolve_backend_name("auto", "cpu", record)
            return make_backend(
                self.model.to("cpu"), BackendRequest(cpu_name, "cpu", self.window, key, cache, threads), record
            )

        fallback = cpu_fallback if self.device != "cpu" else None
        self.runner = BatchRunner(engine, self.batch_size, fallback, record)

    @property
    def backend_name(self) -> str:
        return self.runner.name

    def _accumulate_on_device(self, shape: Sequence[int]) -> bool:
        """Volume and accumulator on the GPU when both fit in a quarter of its free memory
        (``device_accumulate`` forces either way; it is how the tests run this path on the CPU)."""
        if not getattr(self.runner.backend, "accepts_tensors", False):
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
    ) -> tuple[list[tuple[slice, slice, slice]], list[tuple[slice, slice, slice]] | None]:
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
        name = getattr(self.region, "name", type(self.region).__name__)
        self.say(f"window selection ({name}): {len(chosen)} of {len(grid)} windows touch the region")
        return grid, chosen

    def predict(
        self, ct: IntensityVolume, progress: Progress | None = None, cancel: CancelToken | None = None
    ) -> Prediction:
        """Segment ``ct``; results on its full grid. Raises :class:`Cancelled` if ``cancel`` is set.

        With a target ``spacing`` (asked for, or recommended by the checkpoint)
        the CT is resampled linearly to it, segmented there, and the
        probabilities are resampled back linearly before thresholding, so the
        mask is made on the CT's own grid.
        """
        _check_ct(ct)
        if self.spacing is not None and not np.allclose(ct.geometry.spacing, self.spacing, rtol=0.02):
            return self._predict_resampled(ct, progress, cancel)
        return self._predict_native(ct, progress, cancel)

    def _predict_resampled(
        self, ct: IntensityVolume, progress: Progress | None, cancel: CancelToken | None
    ) -> Prediction:
        from core.preprocess import resample_ct
        from core.resample import resample_array

        t0 = time.perf_counter()
        small = resample_ct(ct, self.spacing)
        self.say(
            f"resampled the CT from {_fmt_spacing(ct.geometry.spacing)} to {_fmt_spacing(self.spacing)} mm "
            f"({'x'.join(map(str, ct.shape))} -> {'x'.join(map(str, small.shape))} voxels), as the model expects"
        )
        inner = self._predict_native(small, progress, cancel)
        time.perf_counter()
        prob = resample_array(
            inner.probabilities.array.astype(np.float32) / np.float32(255.0),
            small.geometry,
            ct.shape,
            ct.geometry,
            linear=True,
            default=0.0,
        )
        if cancel is not None and cancel.is_set():
            raise Cancelled("Segmentation cancelled while finishing.")
        mask = self.postprocess.apply(prob)
        name = ct.name or "ct"
        box = _map_box(inner.crop, small.geometry, ct)
        t2 = time.perf_counter()
        return Prediction(
            probabilities=IntensityVolume(quantise(prob), ct.geometry, name=f"{name}_probabilities"),
            mask=LabelVolume(mask, ct.geometry, name=f"{name}_airway"),
            crop=box,
            backend=inner.backend,
            windows=inner.windows,
            seconds=t2 - t0,
            messages=list(self.messages),
            timings={**inner.timings, "resample": (t2 - t0) - inner.seconds},
            windows_total=inner.windows_total,
        )

    def _predict_native(self, ct: IntensityVolume, progress: Progress | None, cancel: CancelToken | None) -> Prediction:
        t0 = time.perf_counter()
        if cancel is not None and cancel.is_set():
            raise Cancelled("Segmentation cancelled before it started.")
        array, box = prepare(ct, self.preprocessing, self.fast_crop)
        t_prep = time.perf_counter()
        grid, chosen = self.plan_windows(ct, box, array)
        t1 = time.perf_counter()
        if self._accumulate_on_device(array.shape):
            import torch

            volume = torch.from_numpy(array).to(self.device)
            del array
            prob = sliding_window_tensor(
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
            # threshold and quantise on the device: a quarter of the bytes come back
            raw = (prob > self.postprocess.threshold).cpu().numpy()
            prob_u8 = torch.round(prob * 255.0).clamp_(0, 255).to(torch.uint8).cpu().numpy()
            del prob
            t2 = time.perf_counter()
            if cancel is not None and cancel.is_set():
                raise Cancelled("Segmentation cancelled while finishing.")
            mask = self.postprocess.clean(raw)
        else:
            prob = sliding_window(
                array,
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
            del array
            t2 = time.perf_counter()
            if cancel is not None and cancel.is_set():
                raise Cancelled("Segmentation cancelled while finishing.")
            mask = self.postprocess.apply(prob)
            prob_u8 = quantise(prob)
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


#: ``exact``: the paper's procedure; ``fast``: the measured best (resources/presets/inference.json)
INFERENCE_MODES = ("fast", "exact")


def mode_settings(mode: str) -> dict:
    """Step fraction, weighting, window region, CPU backends and GPU precision of an inference mode."""
    from core.resources import load_json_resource

    modes = load_json_resource("presets", "inference.json")["modes"]
    if mode not in modes:
        raise ConfigError(f"Unknown inference mode '{mode}'.", f"Use one of: {', '.join(modes)}.")
    return dict(modes[mode])


def default_mode() -> str:
    from core.resources import load_json_resource

    return str(load_json_resource("presets", "inference.json").get("default", "fast"))


def recommended_window(header: dict, window: int | None, step: int | None) -> tuple[int, int]:
    """Window and step: as asked, else the checkpoint's own (``inference``, else its training
    validation settings), else the paper's 128 / 64.

    InstanceNorm normalises over the whole window, so a model is best run with
    windows like those it was validated on.
    """
    rec = dict(header.get("inference") or {})
    val = (header.get("training") or {}).get("validation") or {}
    w = window or rec.get("window") or val.get("window") or 128
    s = step or rec.get("step") or val.get("step") or (64 if w == 128 else max(int(w) // 2, 1))
    return int(w), int(s)


def recommended_spacing(header: dict, spacing: Any) -> tuple[float, float, float] | None:
    """Target voxel spacing (x, y, z mm), or None for the CT's native grid (the paper: no resampling).

    ``spacing``: None = the checkpoint's recommendation (``inference.spacing``) if any;
    ``"native"`` = never resample; three numbers = that spacing.
    """
    if isinstance(spacing, str):
        if spacing != "native":
            raise ConfigError(f"Unknown spacing '{spacing}'.", "Give three numbers (x y z mm) or 'native'.")
        return None
    if spacing is None:
        spacing = (header.get("inference") or {}).get("spacing")
        if spacing is None:
            return None
    values = tuple(float(v) for v in spacing)
    if len(values) != 3 or any(not np.isfinite(v) or v <= 0 for v in values):
        raise ConfigError(
            f"Target spacing {spacing} is not three positive numbers.", "Give x y z in mm, e.g. 1.0 1.0 1.0."
        )
    return values  # type: ignore[return-value]


def _fmt_spacing(sp: Sequence[float]) -> str:
    return "x".join(f"{v:.3g}" for v in sp)


def _map_box(box: CropBox, geometry: Any, ct: IntensityVolume) -> CropBox:
    """A crop box on a resampled grid, expressed on the CT's own grid (rounded outwards, clamped)."""
    corners = np.array(
        [
            [z, y, x]
            for z in (box.start[0], box.stop[0] - 1)
            for y in (box.start[1], box.stop[1] - 1)
            for x in (box.start[2], box.stop[2] - 1)
        ],
        float,
    )
    idx = ct.geometry.world_to_index(geometry.index_to_world(corners))
    lo = np.clip(np.floor(idx.min(axis=0)), 0, np.asarray(ct.shape) - 1).astype(int)
    hi = np.clip(np.ceil(idx.max(axis=0)) + 1, 1, np.asarray(ct.shape)).astype(int)
    return CropBox(tuple(int(v) for v in lo), tuple(int(v) for v in hi), tuple(ct.shape))  # type: ignore[arg-type]


def _check_ct(ct: Any) -> None:
    if not isinstance(ct, IntensityVolume):
        raise InputError(
            f"Expected a CT volume (IntensityVolume), got {type(ct).__name__}.",
            "Read the CT with core.io.read_ct first.",
        )
    if ct.array.ndim != 3:
        raise InputError(
            f"Expected a 3D CT, got an array of shape {ct.array.shape}.",
            "Give a 3D volume or a whole DICOM series, not a single slice.",
        )
    if min(ct.shape) < 2:
        raise InputError(
            f"The CT has shape {ct.shape}: a single slice, not a volume.",
            "Give a 3D volume or a whole DICOM series, not a single slice.",
        )
    if ct.array.dtype.kind == "f" and not np.isfinite(ct.array).all():
        bad = int((~np.isfinite(ct.array)).sum())
        raise InputError(
            f"The CT has {bad} NaN or infinite voxels.", "Replace them (e.g. with -1024 HU) and try again."
        )
    if ct.array.dtype.kind not in "iuf":
        raise InputError(f"Unsupported CT voxel type {ct.array.dtype}.", "Give integer or float HU values.")
