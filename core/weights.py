"""Distance-based voxel weights for the General Union loss (paper eq. 15, spec section 4).

On airway voxels ``w_i = 1 - m (d_i / d_max)^r_d``, where ``d_i`` is the
Euclidean distance from voxel i to the nearest centreline voxel and ``d_max`` the
largest such distance in the case; background voxels weigh 1. Thin airways,
whose voxels all lie near their centreline, keep weights near 1, while the
boundary of the trachea and main bronchi is down-weighted, so that airway size
matters less in the loss.

Source notes:
- Centreline: scikit-image's 3D ``skeletonize`` (Lee's thinning) of the label,
  as the authors' code.
- ``m``: the paper derives m from alpha, which as printed can make weights
  negative; the default here is ``m = 1 - alpha`` and weights are clipped to
  ``[0, 1]``, as the authors' data loader does.
- Distances are in voxels (``spacing_zyx=None``) or in mm (anisotropic EDT).
  ``d / d_max`` does not depend on an isotropic scale, only on anisotropy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from core.box import bounding_box
from core.errors import ConfigError, InputError
from core.progress import Cancellable as _Cancel
from core.progress import raise_if_cancelled as _check


def centreline(mask: np.ndarray) -> np.ndarray:
    """3D skeleton (bool) of a binary mask; never empty for a non-empty mask.

    Lee's thinning can erase thin even-width objects entirely; then the voxels
    farthest from the boundary (the maxima of the distance transform) stand in.
    """
    import edt

    from core.tree import skeleton

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.zeros_like(mask)
    skel = skeleton(mask)
    if skel.any():
        return skel
    inside = np.asarray(edt.edt(mask, black_border=True))
    deepest: npt.NDArray[np.bool_] = inside >= inside.max()
    return deepest


def distance_to_centreline(
    mask: np.ndarray, skeleton: np.ndarray, spacing_zyx: Sequence[float] | None = None
) -> np.ndarray:
    """Euclidean distance (voxels, or mm with spacing) from every voxel to the nearest skeleton voxel (float32)."""
    import edt

    anisotropy = (1.0, 1.0, 1.0) if spacing_zyx is None else tuple(float(s) for s in spacing_zyx)
    # edt measures the distance of each nonzero voxel to the nearest zero one: zeros = skeleton
    d = edt.edt(~skeleton, anisotropy=anisotropy, black_border=False, parallel=1)
    return np.asarray(d, dtype=np.float32)


def distance_weights(
    label_mask: np.ndarray,
    spacing_zyx: Sequence[float] | None = None,
    alpha: float = 0.1,
    m: float | None = None,
    r_d: float = 0.5,
    skeleton: np.ndarray | None = None,
    cancel: _Cancel | None = None,
    progress: Callable[[str], None] | None = None,
) -> np.ndarray:
    """Weights of eq. 15 for one case, as float32 of the label's shape (1 on background).

    Args:
        label_mask: airway label (nonzero = airway), ``(z, y, x)``.
        spacing_zyx: voxel spacing in mm for millimetre distances; None for voxel distances.
        alpha: the GUL's alpha, giving the default ``m = 1 - alpha``.
        m: weight reduction at ``d = d_max`` (overrides alpha).
        r_d: exponent of the normalised distance (paper: 0.5).
        skeleton: a precomputed centreline of the same shape (else computed by :func:`centreline`).
        cancel: ``is_set()`` -> stop with :class:`core.errors.Cancelled` between steps.
        progress: called with the name of each step.
    """
    mask = np.asarray(label_mask)
    if mask.ndim != 3:
        raise InputError(f"The label must be a 3D array, got shape {mask.shape}.")
    mask = mask.astype(bool, copy=False)
    m = (1.0 - alpha) if m is None else float(m)
    if not np.isfinite(m) or r_d <= 0:
        raise ConfigError(
            f"Distance weights need a finite m and r_d > 0 (got m={m}, r_d={r_d}).",
            "The paper uses r_d = 0.5 and m = 1 - alpha.",
        )
    if spacing_zyx is not None and (len(spacing_zyx) != 3 or min(spacing_zyx) <= 0):
        raise InputError(f"spacing_zyx must be 3 positive numbers, got {spacing_zyx}.")
    if skeleton is not None and skeleton.shape != mask.shape:
        raise InputError(f"The skeleton's shape {skeleton.shape} differs from the label's {mask.shape}.")

    weights = np.ones(mask.shape, dtype=np.float32)
    found = bounding_box(mask)
    if found is None:
        return weights
    box = found.grown(1, mask.shape).slices
    crop = mask[box]
    if progress:
        progress("centreline")
    skel = centreline(crop) if skeleton is None else (np.asarray(skeleton[box], dtype=bool) & crop)
    if not skel.any():  # a given skeleton that misses the label
        skel = centreline(crop)
    _check(cancel)
    if progress:
        progress("distance")
    d = distance_to_centreline(crop, skel, spacing_zyx)
    _check(cancel)
    d_in = d[crop]
    d_max = float(d_in.max())
    if d_max > 0:
        w_in = 1.0 - m * np.power(d_in / d_max, r_d, dtype=np.float32)
        region = weights[box]
        region[crop] = np.clip(w_in, 0.0, 1.0)
    return weights
