"""Preprocessing from the spec (method.md section 1).

- HU window then scaling to ``[0, scale]`` (paper: window [-1000, 600]; the
  authors' code uses [-1000, 400]; default: the paper's).
- A lung mask (authors' code: threshold, keep the large air components away
  from the border, fill holes) and the crop to its bounding box with a margin
  of 5 voxels, mapped back to full size after inference.
- The paper's alternative, setting voxels outside the body to the window's top,
  is not implemented (nothing used it; :func:`body_mask` finds the body).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from core.box import Box, bounding_box
from core.errors import ConfigError, InputError
from core.volume import Geometry, IntensityVolume

PAPER_WINDOW = (-1000.0, 600.0)
AUTHORS_CODE_WINDOW = (-1000.0, 400.0)


@dataclass(frozen=True)
class Preprocessing:
    """What a model saw at training time; stored in every checkpoint header.

    ``scale``: top of the output range. 255 feeds 0..255 as the authors' code
    does; 1.0 divides by 255. Either is fine as long as training and inference
    agree, which storing this object in the checkpoint guarantees.
    ``crop``: ``"lung"`` (authors' code, bounding box of the lung mask plus
    ``margin`` voxels) or ``"none"``.
    """

    window: tuple[float, float] = PAPER_WINDOW
    scale: float = 255.0
    crop: str = "lung"
    margin: int = 5
    lung_threshold: float = -350.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "window", (float(self.window[0]), float(self.window[1])))
        if not self.window[0] < self.window[1]:
            raise ConfigError(
                f"HU window {self.window} is empty.",
                "Give the window as [low, high] with low < high, e.g. [-1000, 600].",
            )
        if self.scale <= 0:
            raise ConfigError(f"Scale {self.scale} must be positive.", "Use 255 (authors' code) or 1.")
        if self.crop not in ("lung", "none"):
            raise ConfigError(f"Unknown crop mode '{self.crop}'.", "Use 'lung' or 'none'.")
        if self.margin < 0:
            raise ConfigError(
                f"Crop margin {self.margin} is negative.", "Use a margin of 0 or more voxels (default 5)."
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["window"] = list(self.window)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Preprocessing:
        if not d:
            return cls()
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "window" in known:
            known["window"] = tuple(known["window"])
        return cls(**known)


def window_hu(array: np.ndarray, window: tuple[float, float] = PAPER_WINDOW, scale: float = 255.0) -> np.ndarray:
    """Clamp to ``window`` and map linearly to ``[0, scale]`` as float32."""
    lo, hi = float(window[0]), float(window[1])
    out = np.clip(array.astype(np.float32, copy=False), lo, hi)
    out -= lo
    out *= np.float32(scale / (hi - lo))
    return out


def _int3(values: Sequence[int]) -> tuple[int, int, int]:
    z, y, x = values
    return int(z), int(y), int(x)


@dataclass(frozen=True)
class CropBox:
    """A :class:`~core.box.Box` inside a volume of ``full_shape``: more than a box, since it crops and
    uncrops arrays of that volume (checking their shape) and is stored with it (``to_dict``)."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    full_shape: tuple[int, int, int]

    @classmethod
    def full(cls, shape: Sequence[int]) -> CropBox:
        full = _int3(shape)
        return cls((0, 0, 0), full, full)

    @classmethod
    def from_box(cls, box: Box, full_shape: Sequence[int]) -> CropBox:
        return cls(_int3(box.start), _int3(box.stop), _int3(full_shape))

    @classmethod
    def from_mask(cls, mask: np.ndarray, margin: int = 5) -> CropBox:
        """Bounding box of ``mask`` grown by ``margin`` voxels; the whole volume if empty."""
        box = bounding_box(mask)
        if box is None:
            return cls.full(mask.shape)
        return cls.from_box(box.grown(margin, mask.shape), mask.shape)

    @property
    def box(self) -> Box:
        return Box(self.start, self.stop)

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        z, y, x = self.box.slices  # three named: numpy's stubs index with (..., *slices) only then
        return z, y, x

    @property
    def shape(self) -> tuple[int, int, int]:
        return _int3(self.box.shape)

    def crop(self, array: np.ndarray) -> np.ndarray:
        if array.shape[-3:] != self.full_shape:
            raise InputError(f"Array of shape {array.shape} does not match the crop's volume {self.full_shape}.")
        return array[(..., *self.slices)]

    def uncrop(self, array: np.ndarray, fill: float = 0) -> np.ndarray:
        """Put a cropped array back into a full-size one filled with ``fill``."""
        if array.shape[-3:] != self.shape:
            raise InputError(f"Array of shape {array.shape} does not match the crop box {self.shape}.")
        out = np.full(array.shape[:-3] + self.full_shape, fill, dtype=array.dtype)
        out[(..., *self.slices)] = array
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"start": list(self.start), "stop": list(self.stop), "full_shape": list(self.full_shape)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CropBox:
        return cls(_int3(d["start"]), _int3(d["stop"]), _int3(d["full_shape"]))


def lung_mask(
    ct: np.ndarray, threshold: float = -350.0, min_fraction: float = 0.002, outside_hu: float = -900.0
) -> np.ndarray:
    """Air inside the body: the lungs and airways (authors' code, simplified and vectorised).

    Voxels below ``threshold`` HU, minus the air connected to the volume's
    border (outside the body; also the field-of-view floor below -1024), keeping
    the components larger than ``min_fraction`` of the volume; holes (vessels,
    airway walls) filled slice by slice and in 3D. A border component whose mean
    is above ``outside_hu`` is not outside air but lungs cut by a tight crop
    (parenchyma is about -850 HU, air -1000): dropping those lost the trachea of
    TotalSegmentator's aorta crop and with it the model's whole input.
    """
    import cc3d

    air = ct < threshold
    if not air.any():
        return np.zeros(ct.shape, bool)
    labels = cc3d.connected_components(air, connectivity=6)
    # Components touching the in-plane border are outside air. The top and
    # bottom slices cut through the lungs and trachea, so they do not count.
    border = np.unique(
        np.concatenate(
            [
                labels[:, 0, :].ravel(),
                labels[:, -1, :].ravel(),
                labels[:, :, 0].ravel(),
                labels[:, :, -1].ravel(),
            ]
        )
    )
    stats = cc3d.statistics(labels)
    counts = np.asarray(stats["voxel_counts"])
    keep = counts >= max(min_fraction * ct.size, 1)
    keep[0] = False
    sums = np.bincount(labels.ravel(), weights=ct.ravel().astype(np.float64), minlength=len(counts))
    border = border[sums[border] / np.maximum(counts[border], 1) < outside_hu]
    keep[border] = False
    mask = keep[labels]
    if not mask.any():
        # Body touches the border everywhere (tight crop): fall back to plain air minus
        # the largest border component, so a crop still exists.
        return air
    filled: np.ndarray = ndimage.binary_fill_holes(mask)
    return filled


def body_mask(ct: np.ndarray, threshold: float = -500.0) -> np.ndarray:
    """The body: everything not connected to the outside air, holes filled per axial slice."""
    import cc3d

    outside = ct < threshold
    labels = cc3d.connected_components(outside, connectivity=6)
    border = np.unique(
        np.concatenate(
            [
                labels[:, 0, :].ravel(),
                labels[:, -1, :].ravel(),
                labels[:, :, 0].ravel(),
                labels[:, :, -1].ravel(),
            ]
        )
    )
    border = border[border != 0]
    out_air = np.isin(labels, border)
    return ~out_air


def crop_box_for(ct: IntensityVolume | np.ndarray, prep: Preprocessing) -> CropBox:
    arr = ct.array if isinstance(ct, IntensityVolume) else ct
    if prep.crop == "none":
        return CropBox.full(arr.shape)
    return CropBox.from_mask(lung_mask(arr, prep.lung_threshold), prep.margin)


def prepare_input(ct: IntensityVolume, prep: Preprocessing | None = None) -> tuple[np.ndarray, CropBox]:
    """Cropped, windowed and scaled float32 network input, and the box to map results back."""
    prep = prep or Preprocessing()
    box = crop_box_for(ct, prep)
    return window_hu(box.crop(ct.array), prep.window, prep.scale), box


# -- optional resampling (off in the original method) ----------------------------


def resampled_geometry(
    geometry: Geometry, shape: Sequence[int], spacing_xyz: Sequence[float]
) -> tuple[tuple[int, int, int], Geometry]:
    """Grid covering the same extent as ``(geometry, shape)`` at ``spacing_xyz`` (x, y, z mm)."""
    old = np.asarray(geometry.spacing, float)
    new = np.asarray(spacing_xyz, float)
    size_xyz = np.maximum(np.rint(np.asarray(shape[::-1], float) * old / new), 1).astype(int)
    geo = Geometry(tuple(new), geometry.origin, geometry.direction)
    return (int(size_xyz[2]), int(size_xyz[1]), int(size_xyz[0])), geo


def resample_ct(ct: IntensityVolume, spacing_xyz: Sequence[float], default: float = -1024.0) -> IntensityVolume:
    """Linear resampling of a CT to ``spacing_xyz`` over the same extent (float32 HU)."""
    from core.resample import resample_array

    shape, geo = resampled_geometry(ct.geometry, ct.shape, spacing_xyz)
    arr = resample_array(ct.array.astype(np.float32, copy=False), ct.geometry, shape, geo, True, default)
    return IntensityVolume(arr, geo, name=ct.name)
