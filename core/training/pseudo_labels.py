"""Training labels for real CTs that have no manual airway label.

A training-free method (``core.growing``) finds the central airways of a real
chest CT reliably but stops a few generations down: the lung around its tree
holds bronchi that it never labelled. Training on such a mask as it is would
teach a network that those bronchi are background. So a pseudo-label has three
values:

- 1: the extracted airway (trusted foreground);
- ``ignore_value`` (2): the lungs and a thin shell around the extracted airway,
  left out of the losses (``data.ignore_value = 2`` in the training config);
- 0: everything else — the mediastinum, the chest wall, air outside the body,
  the table, bowel gas — trusted background: exactly where a model trained on
  phantoms alone is tempted to put "airway".

Ignoring the whole lung (``lungs="ignore"``) leaves a model free to call lung
parenchyma airway: a WingsNet trained that way on the real chest CT leaked
into one lung (310 mL instead of 66). With ``lungs="tubes"`` only the lung
voxels that look like a dark tube (Frangi, black ridges) are uncertain; the
rest of the parenchyma is trusted background. The tube threshold is the one
that still flags ``coverage`` of the extracted tree's centreline, so it is set
by the airways the CT does show (:func:`tube_threshold`).
"""

from __future__ import annotations

import numpy as np

from core.volume import IntensityVolume, LabelVolume

IGNORE_VALUE = 2


def _within_mm(mask: np.ndarray, spacing_zyx: tuple[float, float, float], mm: float) -> np.ndarray:
    """Voxels within ``mm`` of ``mask`` (anisotropic Euclidean distance)."""
    import edt

    if mm <= 0 or not mask.any():
        return mask.copy()
    distance: np.ndarray = edt.edt(~mask, anisotropy=tuple(float(s) for s in spacing_zyx), black_border=False)
    return distance <= mm


TUBE_SIGMAS_MM = (1.5, 2.5, 3.75, 5.0)


def dark_tubeness(ct: IntensityVolume, sigmas_mm: tuple[float, ...] = TUBE_SIGMAS_MM) -> np.ndarray:
    """Frangi's vesselness of dark tubes (airway lumen) over the whole CT, float32.

    scikit-image's filter works in voxels: meant for a near-isotropic grid (e.g. a CT
    resampled to a model's 2.5 x 2.5 x 3 mm); sigmas are converted with the mean spacing.
    """
    from skimage.filters import frangi

    mean = float(np.mean(ct.geometry.spacing))
    sigmas = [float(s) / mean for s in sigmas_mm]
    # scikit-image is untyped
    tubes = frangi(np.asarray(ct.array, np.float32), sigmas=sigmas, black_ridges=True)  # type: ignore[no-untyped-call]
    return np.asarray(tubes, dtype=np.float32)


def tube_threshold(tubeness: np.ndarray, airway: np.ndarray, coverage: float = 0.8) -> float:
    """The tubeness that ``coverage`` of ``airway``'s centreline reaches (its positive part)."""
    from skimage.morphology import skeletonize

    skel = np.asarray(skeletonize(np.asarray(airway, bool))).astype(bool)  # type: ignore[no-untyped-call]
    vals = tubeness[skel]
    vals = vals[vals > 0]
    if not len(vals):
        raise ValueError("the airway's centreline has no tube response: no threshold can be read from it")
    return float(np.quantile(vals, 1.0 - coverage))


def pseudo_label(
    ct: IntensityVolume,
    airway: LabelVolume,
    *,
    lung_margin_mm: float = 3.0,
    shell_mm: float = 1.5,
    ignore_value: int = IGNORE_VALUE,
    lungs: str = "ignore",
    tubeness: np.ndarray | None = None,
    tube_min: float | None = None,
) -> LabelVolume:
    """uint8 label on the CT's grid: 1 airway, ``ignore_value`` uncertain, 0 background.

    ``lungs="ignore"``: the lungs (grown by ``lung_margin_mm``) and a ``shell_mm`` shell around the
    airway are uncertain. ``lungs="tubes"``: only lung voxels with ``tubeness >= tube_min`` (grown by
    one voxel) and the shell are; ``tubeness`` defaults to :func:`dark_tubeness` of ``ct`` and
    ``tube_min`` to :func:`tube_threshold` of this airway (give it for a CT without one).
    """
    from core.preprocess import lung_mask
    from core.volume import check_same_grid

    check_same_grid(ct, airway)
    if not 2 <= ignore_value <= 255:
        raise ValueError(f"ignore_value must be in 2..255, got {ignore_value}")
    if lungs not in ("ignore", "tubes"):
        raise ValueError(f"lungs must be 'ignore' or 'tubes', got {lungs!r}")
    spacing = ct.geometry.spacing_zyx
    air = airway.mask
    lung = _within_mm(lung_mask(np.asarray(ct.array)), spacing, lung_margin_mm)
    if lungs == "tubes":
        from scipy import ndimage

        tubes = dark_tubeness(ct) if tubeness is None else np.asarray(tubeness)
        if tubes.shape != air.shape:
            raise ValueError(f"tubeness has shape {tubes.shape}, the CT {air.shape}")
        level = tube_threshold(tubes, air) if tube_min is None else float(tube_min)
        lung &= ndimage.binary_dilation((tubes >= level) & (tubes > 0), np.ones((3, 3, 3), bool))
    uncertain = lung | _within_mm(air, spacing, shell_mm)
    out = np.zeros(ct.shape, np.uint8)
    out[uncertain] = ignore_value
    out[air] = 1
    return LabelVolume(out, ct.geometry, f"{airway.name or 'airway'} (pseudo-label)")
