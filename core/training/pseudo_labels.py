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
"""

from __future__ import annotations

import numpy as np

from core.volume import IntensityVolume, LabelVolume

IGNORE_VALUE = 2


def _within_mm(mask: np.ndarray, spacing_zyx, mm: float) -> np.ndarray:
    """Voxels within ``mm`` of ``mask`` (anisotropic Euclidean distance)."""
    import edt

    if mm <= 0 or not mask.any():
        return mask.copy()
    return edt.edt(~mask, anisotropy=tuple(float(s) for s in spacing_zyx), black_border=False) <= mm


def pseudo_label(ct: IntensityVolume, airway: LabelVolume, *, lung_margin_mm: float = 3.0,
                 shell_mm: float = 1.5, ignore_value: int = IGNORE_VALUE) -> LabelVolume:
    """uint8 label on the CT's grid: 1 airway, ``ignore_value`` uncertain (lungs + shell), 0 background."""
    from core.preprocess import lung_mask
    from core.volume import check_same_grid

    check_same_grid(ct, airway)
    if not 2 <= ignore_value <= 255:
        raise ValueError(f"ignore_value must be in 2..255, got {ignore_value}")
    spacing = ct.geometry.spacing_zyx
    air = airway.mask
    lungs = lung_mask(np.asarray(ct.array))
    uncertain = _within_mm(lungs, spacing, lung_margin_mm) | _within_mm(air, spacing, shell_mm)
    out = np.zeros(ct.shape, np.uint8)
    out[uncertain] = ignore_value
    out[air] = 1
    return LabelVolume(out, ct.geometry, f"{airway.name or 'airway'} (pseudo-label)")
