"""Probabilities -> mask (the paper's evaluation post-processing) and the uint8 probability map."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from core.errors import ConfigError


@dataclass(frozen=True)
class PostProcessing:
    """Probabilities -> mask. Paper: threshold 0.5, then the largest connected component (cc3d)."""

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

            mask = cc3d.largest_k(mask, k=1, connectivity=self.connectivity) > 0  # type: ignore[call-overload]  # stub wants a Literal connectivity; __post_init__ checked it
        if self.fill_holes and mask.any():
            from scipy import ndimage

            mask = np.asarray(ndimage.binary_fill_holes(mask), bool)
        return mask

    def finish(self, probabilities: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(mask, uint8 probabilities)`` on the host from what the sliding window returned: a numpy array,
        or a tensor on a GPU, thresholded and quantised there so only a quarter of the bytes come back."""
        if isinstance(probabilities, np.ndarray):
            return self.apply(probabilities), quantise(probabilities)
        import torch

        raw = (probabilities > self.threshold).cpu().numpy()
        prob_u8 = torch.round(probabilities * 255.0).clamp_(0, 255).to(torch.uint8).cpu().numpy()
        return self.clean(raw), prob_u8

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quantise(probabilities: np.ndarray) -> np.ndarray:
    """float 0..1 -> uint8 0..255 (``round(255 p)``), slab by slab to keep memory flat."""
    out = np.empty(probabilities.shape, np.uint8)
    for z in range(probabilities.shape[0]):
        out[z] = np.clip(np.rint(probabilities[z] * 255.0), 0, 255)
    return out
