"""Airway-guided window selection (issue 17): region providers say where airway can be, and only the
windows of the grid that touch that region run.

A provider maps a :class:`RegionRequest` to a bool mask on the crop (``box.shape``) or on the whole CT
(``ct.shape``). Built in: the lungs and trachea (:class:`LungRegion`, the default of the fast mode), the
network at half resolution (:class:`CoarseModelRegion`), or any mask from elsewhere (:class:`MaskRegion`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from core.errors import ConfigError, InputError
from core.preprocess import CropBox, Preprocessing, lung_mask
from core.segmentation.grid import Size3
from core.segmentation.loop import RunBatch, sliding_window
from core.volume import IntensityVolume


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
    window: Size3
    run: RunBatch | None = None


#: Anything that maps a :class:`RegionRequest` to a bool mask on the crop (``box.shape``) or on the whole
#: CT (``ct.shape``), True where airway can be. Windows that touch no True voxel are not run. Another
#: engine's mask (a trachea detector, region growing) plugs in through :class:`MaskRegion`.
RegionProvider = Callable[[RegionRequest], np.ndarray]


def margin_voxels(margin_mm: float, spacing_zyx: Sequence[float], stride: Sequence[int]) -> Size3:
    r = [int(math.ceil(margin_mm / (sp * st))) for sp, st in zip(spacing_zyx, stride)]
    return r[0], r[1], r[2]


def dilate(mask: np.ndarray, radius: Sequence[int]) -> np.ndarray:
    """Grow ``mask`` by a box of ``radius`` voxels per axis (separable maximum filter; a box over-covers
    a ball, which only ever adds windows)."""
    if not any(radius) or not mask.any():
        return mask
    from scipy import ndimage

    return np.asarray(ndimage.maximum_filter(mask, size=tuple(2 * r + 1 for r in radius)))


def _upsample_to(coarse: np.ndarray, stride: Sequence[int], box: CropBox) -> np.ndarray:
    """A mask computed on ``ct[::sz, ::sy, ::sx]`` brought to the crop's full-resolution grid (each
    coarse voxel stands for the ``stride`` block it starts)."""
    lo = [b // s for b, s in zip(box.start, stride)]
    hi = [-(-e // s) for e, s in zip(box.stop, stride)]
    part = coarse[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    for axis, s in enumerate(stride):
        if s > 1:
            part = np.repeat(part, s, axis=axis)
    offset = [b - low * s for b, low, s in zip(box.start, lo, stride)]
    shape = box.shape
    return np.ascontiguousarray(
        part[offset[0] : offset[0] + shape[0], offset[1] : offset[1] + shape[1], offset[2] : offset[2] + shape[2]]
    )


def _spacing_zyx(ct: IntensityVolume) -> tuple[float, ...]:
    return tuple(float(s) for s in reversed(ct.geometry.spacing))


@dataclass(frozen=True)
class LungRegion:
    """Lungs and central airways (:func:`core.preprocess.lung_mask`: the air inside the body, trachea
    included), from a subsampled CT, grown by ``margin_mm``. Training-free; ~0.2 s on a 512^2 x 400 CT."""

    margin_mm: float = 10.0
    stride: Size3 = (2, 4, 4)
    name: str = "lung"

    def __call__(self, request: RegionRequest) -> np.ndarray:
        ct = request.ct
        st = [max(1, min(s, n // 32 or 1)) for s, n in zip(self.stride, ct.shape)]
        coarse = lung_mask(ct.array[:: st[0], :: st[1], :: st[2]], request.preprocessing.lung_threshold)
        if not coarse.any():
            return np.ones(request.box.shape, bool)  # nothing found: do not guess, run every window
        coarse = dilate(coarse, margin_voxels(self.margin_mm, _spacing_zyx(ct), st))
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
        stride = (self.factor,) * 3
        coarse = dilate(prob > self.threshold, margin_voxels(self.margin_mm, _spacing_zyx(request.ct), stride))
        full = _upsample_to(coarse, stride, CropBox((0, 0, 0), request.box.shape, request.box.shape))
        return np.asarray(full | LungRegion(margin_mm=0.0)(request), bool)


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
        grown = dilate(np.asarray(self.mask, bool), margin_voxels(self.margin_mm, _spacing_zyx(request.ct), (1, 1, 1)))
        return request.box.crop(grown)


#: Built-in providers by name (``--region``); "none" runs every window (the paper).
REGIONS: dict[str, Callable[[], RegionProvider | None]] = {
    "none": lambda: None,
    "lung": LungRegion,
    "coarse": CoarseModelRegion,
}


def region_provider(region: str | RegionProvider | None) -> RegionProvider | None:
    if region is None or callable(region):
        return region
    if region not in REGIONS:
        raise ConfigError(f"Unknown window region '{region}'.", f"Use one of: {', '.join(REGIONS)}.")
    return REGIONS[region]()


def region_name(region: RegionProvider | None) -> str:
    return "none" if region is None else str(getattr(region, "name", type(region).__name__))
