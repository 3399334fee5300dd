"""Input sanity checks that run before the work: volumes that cannot hold an airway.

A CT without air or without a body, a reference label that fills the volume,
or a prediction that is empty or fills the volume would otherwise give
results that look valid (an "airway" on the volume's edge, TD = BD = 100).
Errors stop the command (``InputError``: CLI one line, exit 2); warnings are
printed and carried into ``--json``. Limits live in
``resources/presets/sanity.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InputError


@dataclass(frozen=True)
class Finding:
    level: str  # "error" | "warning"
    what: str
    fix: str
    path: str | None = None

    @property
    def message(self) -> str:
        return str(InputError(self.what, self.fix, path=self.path))

    def as_dict(self) -> dict[str, Any]:
        return {"level": self.level, "message": self.message, "path": self.path}


@lru_cache(maxsize=1)
def limits() -> dict[str, Any]:
    from core.resources import load_json_resource

    return {k: v for k, v in load_json_resource("presets", "sanity.json").items() if not k.startswith("_")}


def _array(volume: Any) -> np.ndarray:
    return np.asarray(getattr(volume, "array", volume))


SAMPLE_VOXELS = 2_000_000  # shares and the lung test on about this many voxels: ~0.1 s on a 512^3 CT


def check_ct(ct: Any, path: str | Path | None = None, lungs: bool = True) -> list[Finding]:
    """A chest CT must hold air (lungs, airways, outside) and a body; lungs missing is a warning.

    ``lungs=False`` skips the lung test (the costliest part; callers without a
    place to show a warning).
    """
    lim = limits()
    arr = _array(ct)
    # a strided view keeps this cheap on 512^3 volumes and is exact enough for shares
    step = max(1, round((arr.size / SAMPLE_VOXELS) ** (1 / 3)))
    sample = arr[::step, ::step, ::step]
    path = None if path is None else str(path)
    air = float(np.count_nonzero(sample < lim["air_hu"])) / sample.size
    body = float(np.count_nonzero(sample > lim["body_hu"])) / sample.size
    out: list[Finding] = []
    if air < lim["min_air_share"]:
        out.append(
            Finding(
                "error",
                f"The CT has no air (no voxel below {lim['air_hu']} HU; values "
                f"{arr.min():g}..{arr.max():g}): it cannot hold lungs or airways.",
                "Check it is a chest CT in Hounsfield units (not a label, mask or rescaled image).",
                path,
            )
        )
    if body < lim["min_body_share"]:
        out.append(
            Finding(
                "error",
                f"The CT has no body (no voxel above {lim['body_hu']} HU; values {arr.min():g}..{arr.max():g}).",
                "Check it is a chest CT in Hounsfield units (not an empty or all-air volume).",
                path,
            )
        )
    if not out and lungs:
        if not _has_inner_air(sample):
            out.append(
                Finding(
                    "warning",
                    "No lungs found in the CT (no air inside the body).",
                    "Check the scan covers the chest (a crop that cuts through the lungs reads as none); "
                    "the result may be empty.",
                    path,
                )
            )
    return out


def _has_inner_air(ct: np.ndarray, threshold: float = -350.0, min_fraction: float = 0.002) -> bool:
    """Air not connected to the in-plane border (lungs, airways), as core.preprocess.lung_mask finds it,
    without its hole filling (the costly part, and irrelevant to whether there is any).

    In a crop so tight that the lungs touch the border, the border's air is lung
    parenchyma (about -850 HU), not the outside air (about -1000 HU): that also counts.
    """
    import cc3d

    air = ct < threshold
    if not air.any():
        return False
    labels = cc3d.connected_components(air, connectivity=6)
    border = np.unique(
        np.concatenate(
            [labels[:, 0, :].ravel(), labels[:, -1, :].ravel(), labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]
        )
    )
    counts = np.bincount(labels.ravel())
    keep = counts >= max(min_fraction * ct.size, 1)
    keep[0] = False
    keep[border] = False
    if keep.any():
        return True
    big_border = [int(b) for b in border if b and counts[b] >= max(min_fraction * ct.size, 1)]
    if not big_border:
        return False
    sums = np.bincount(labels.ravel(), weights=ct.ravel().astype(np.float64))
    mean_hu = sums[big_border].sum() / counts[big_border].sum()
    return bool(mean_hu > limits()["outside_air_hu"])


def check_label(
    label: Any, role: str = "reference", path: str | Path | None = None, selector_flag: str | None = None
) -> list[Finding]:
    """A reference must not fill the volume (error); a prediction that is empty or fills it is suspicious (warning).

    ``selector_flag``: the option that chose the label's values, named in the fix (none: not named).
    """
    lim = limits()
    mask = _array(getattr(label, "mask", label))
    n = int(np.count_nonzero(mask))
    share = n / max(mask.size, 1)
    path = None if path is None else str(path)
    out: list[Finding] = []
    if share >= lim["label_fills_share"]:
        level = "error" if role == "reference" else "warning"
        sel = f"the selector ({selector_flag}) and " if selector_flag else ""
        fix = (
            f"Check {sel}that this is the airway label, not a body or lung mask."
            if role == "reference"
            else f"Check {sel}the threshold or model that made it; its scores are meaningless."
        )
        out.append(
            Finding(level, f"The {role} fills {share:.0%} of the volume ({n} voxels): not an airway tree.", fix, path)
        )
    elif n == 0 and role != "reference":
        sel = f", the selector ({selector_flag})" if selector_flag else ""
        out.append(
            Finding(
                "warning",
                f"The {role} is empty (no voxel selected): every score is 0.",
                f"Check the file{sel} and the model that made it.",
                path,
            )
        )
    return out


def raise_errors(findings: list[Finding]) -> list[Finding]:
    """Raise the first error as an InputError; return the warnings."""
    for f in findings:
        if f.level == "error":
            raise InputError(f.what, f.fix, path=f.path)
    return [f for f in findings if f.level == "warning"]
