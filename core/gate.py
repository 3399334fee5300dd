"""A gate on a model's output: does the mask look like this CT's airway at all?

A model trained on phantoms can return air along the chest wall with full
confidence. The gate checks a mask against what the CT itself shows, without
a model: the trachea (core.growing's detector) and the lungs (core.preprocess):

- the mask's largest 26-connected component must touch the trachea;
- at most ``max_outside_fraction`` (5 %) of the mask may lie outside the lungs
  and the central airways (the trachea widened by ``central_airway_margin_mm``).

Failures become warnings naming what the model was trained on (its card), or,
with ``--strict``, a :class:`core.errors.QualityError` (exit status 3).
Thresholds live in ``resources/presets/gate.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.errors import InputError, QualityError
from core.volume import IntensityVolume

PRESET = ("presets", "gate.json")


def load_gate_params() -> dict[str, Any]:
    from core.resources import load_json_resource

    return load_json_resource(*PRESET)


@dataclass
class GateReport:
    passed: bool
    problems: list[str] = field(default_factory=list)
    trachea_found: bool = False
    touches_trachea: bool | None = None
    outside_fraction: float | None = None
    voxels: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "problems": list(self.problems),
            "trachea_found": self.trachea_found,
            "touches_trachea": self.touches_trachea,
            "outside_fraction": None if self.outside_fraction is None else round(self.outside_fraction, 4),
            "voxels": self.voxels,
        }

    def warning(self, trained_on: str | None = None) -> str:
        """One line for the CLI and the app; empty when the mask passed."""
        if self.passed:
            return ""
        text = "this mask does not look like the CT's airway: " + "; ".join(self.problems)
        if trained_on:
            text += f". The model was {trained_on}" if trained_on.startswith("trained") else f". Model: {trained_on}"
        return text + ". Try --method region-growing, or a model trained on CT like this one."


def require_air(ct: IntensityVolume) -> None:
    """InputError for a CT that cannot hold an airway (no air, no body: all 0, all 1...), by
    core.sanity's rule, the one the loaders and the CLI apply too: nothing to segment, nothing written."""
    from core.sanity import check_ct, raise_errors

    raise_errors(check_ct(ct, ct.name or None, lungs=False))


def inner_air(ct: np.ndarray, threshold: float = -350.0, outside_hu: float = -900.0) -> np.ndarray:
    """The lungs and airways: air below ``threshold`` minus the air outside the body.

    Per axial slice, an air region touching the border is outside air when its
    mean is below ``outside_hu`` (air, -1000 HU); a lung cut by a tight field of
    view also touches the border but is brighter (parenchyma, about -850 HU), so
    it stays. (core.preprocess.lung_mask applies the same rule to whole 3D
    components; per slice, as here, a lung that is air-dark in one slice only
    still counts as inside.)
    """
    import cc3d

    out = ct < threshold
    for z in range(ct.shape[0]):
        air = out[z]
        if not air.any():
            continue
        lab = cc3d.connected_components(air, connectivity=4)
        border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        border = border[border != 0]
        if not len(border):
            continue
        sums = np.bincount(lab.ravel(), weights=ct[z].ravel().astype(np.float64))
        counts = np.bincount(lab.ravel())
        dark = border[sums[border] / counts[border] < outside_hu]
        if len(dark):
            out[z] &= ~np.isin(lab, dark)
    return out


def check_mask(
    ct: IntensityVolume, mask: np.ndarray, trachea: Any = None, params: dict[str, Any] | None = None
) -> GateReport:
    """Gate ``mask`` (bool, on ``ct``'s grid). ``trachea``: a core.growing.Trachea, found here when None."""
    import cc3d
    import edt

    from core.growing import find_trachea

    p = params or load_gate_params()
    mask = np.asarray(mask, bool)
    voxels = int(mask.sum())
    if voxels == 0:
        return GateReport(False, ["the mask is empty"], voxels=0)
    problems: list[str] = []
    if trachea is None:
        from core.growing import load_params

        # the gate needs the trachea's position, not its finest outline: no upsampling of
        # coarse CTs (a 5 mm phantom upsampled to 1 mm costs a hundred times more)
        tp = load_params()
        tp["work_spacing_mm"] = max(float(tp.get("work_spacing_mm", 1.0)), min(ct.geometry.spacing))
        try:
            trachea = find_trachea(ct, tp)
        except InputError as exc:
            trachea = None
            problems.append(f"{exc.what}, so the mask cannot be checked against it")
    sp = tuple(float(s) for s in ct.spacing_zyx)
    central = np.zeros(mask.shape, bool)
    touches = None
    if trachea is not None:
        tmask = trachea.mask.mask
        largest = cc3d.largest_k(mask, k=1, connectivity=26) > 0
        reach = edt.edt(~tmask, anisotropy=sp, parallel=1) if tmask.any() else None
        if reach is not None:
            near = reach <= max(sp) * 1.01  # touching: within one voxel
            touches = bool((largest & near).any())
            if not touches:
                gap = float(reach[largest].min())
                problems.append(f"its largest component misses the trachea (nearest voxel {gap:.0f} mm from it)")
            central = reach <= float(p["central_airway_margin_mm"])
    allowed = inner_air(ct.array, float(p["lung_threshold_hu"]), float(p["outside_air_hu"])) | central
    k = int(p.get("boundary_margin_voxels", 0))
    if k:
        from scipy import ndimage

        allowed = ndimage.binary_dilation(allowed, iterations=k)
    outside = float((mask & ~allowed).sum()) / voxels
    if outside > float(p["max_outside_fraction"]):
        problems.append(
            f"{100 * outside:.0f} % of it lies outside the lungs and central airways "
            f"(allowed {100 * float(p['max_outside_fraction']):.0f} %)"
        )
    return GateReport(not problems, problems, trachea is not None, touches, outside, voxels)


def enforce(report: GateReport, trained_on: str | None, strict: bool) -> str:
    """The warning line (empty if passed); raises QualityError when ``strict`` and the gate failed."""
    text = report.warning(trained_on)
    if text and strict:
        raise QualityError(text, "Without --strict the mask is written with this warning.")
    return text
