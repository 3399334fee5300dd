"""A CT made around a given airway mask: real topology, exact label.

:func:`phantom_from_mask` keeps the mask as the label and paints a chest
around it (:mod:`core.phantom.body`): two lung ellipsoids that enclose the
tree's two sides, a body and spine around them, a wall around every airway
(0.17 x the local diameter, at least 0.5 mm), free vessels in the lungs, blur
and noise. The centreline is the mask's skeleton (scikit-image
``skeletonize``). The branch table is empty: the mask has no branch geometry
(parse it with ``core.tree`` if one is needed).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from core.box import bounding_box
from core.errors import InputError
from core.progress import Progress
from core.volume import LabelVolume, to_canonical

if TYPE_CHECKING:  # for annotations; phantom_from_mask imports them where it uses them
    from core.phantom.maker import Phantom
    from core.phantom.tree import Chest


def _chest_around(
    mask: np.ndarray, spacing_xyz: tuple[float, float, float]
) -> tuple[Chest, tuple[float, float, float]]:
    """A Chest whose lungs enclose the tree, in a local frame centred on the body; returns (chest, origin)."""
    from core.phantom.tree import Chest, Ellipsoid

    sx, sy, sz = spacing_xyz
    zz, yy, xx = np.nonzero(mask)
    pts = np.stack([xx * sx, yy * sy, zz * sz], axis=1).astype(np.float64)
    z_top = pts[:, 2].max()
    top = pts[pts[:, 2] >= z_top - 10.0 * sz]  # the trachea's highest slices
    x_t, y_t = float(top[:, 0].mean()), float(top[:, 1].mean())
    r_t = math.sqrt(len(top) / max(1, len(np.unique(top[:, 2]))) * sx * sy / math.pi)
    margin = 25.0
    lungs = []
    for sign in (-1.0, 1.0):  # right (x < trachea), left
        side = pts[sign * (pts[:, 0] - x_t) > r_t + 2.0]
        if len(side) == 0:
            side = pts
        lo, hi = side.min(axis=0) - margin, side.max(axis=0) + margin
        inner = x_t + sign * (r_t + 8.0)
        if sign < 0:
            hi[0] = min(hi[0], inner)
        else:
            lo[0] = max(lo[0], inner)
        hi[2] = min(hi[2], z_top - 25.0) if hi[2] - lo[2] > 60.0 else hi[2]
        lungs.append(Ellipsoid(tuple((lo + hi) / 2), tuple(np.maximum((hi - lo) / 2, 5.0))))
    lo = np.minimum(lungs[0].centre, lungs[1].centre) - np.asarray(lungs[0].semi)
    hi = np.maximum(lungs[0].centre, lungs[1].centre) + np.asarray(lungs[1].semi)
    centre = (lo + hi) / 2
    # local frame: body centred on x = y = 0 as fill_body expects
    shift = np.array([centre[0], centre[1], 0.0])
    lungs = [Ellipsoid(tuple(np.asarray(e.centre) - shift), e.semi) for e in lungs]
    half = (hi - lo) / 2
    lung_c = np.mean([e.centre for e in lungs], axis=0)
    lung_s = np.mean([e.semi for e in lungs], axis=0)
    heart = Ellipsoid(
        (lung_c[0] + 0.3 * lung_s[0], lung_c[1] - 0.45 * lung_s[1], lung_c[2] - 0.6 * lung_s[2]),
        (0.8 * lung_s[0], 0.5 * lung_s[1], 0.35 * lung_s[2]),
    )
    chest = Chest(
        body_semi=(half[0] + 40.0, half[1] + 35.0),
        fat_mm=12.0,
        lungs=(lungs[0], lungs[1]),
        heart=heart,
        spine_centre=(0.0, half[1] + 10.0),
        spine_radius=17.0,
        carina=(x_t - shift[0], y_t - shift[1], float(pts[:, 2].min())),
        trachea_radius=r_t,
        trachea_length=0.0,
    )
    return chest, (float(-shift[0]), float(-shift[1]), 0.0)


def phantom_from_mask(
    airway_mask: LabelVolume,
    seed: int = 0,
    noise: float | None = None,
    wall_contrast: float | None = None,
    blur: float | None = None,
    difficulty: Any = "normal",
    vessels: bool = True,
    progress: Progress | None = None,
    cancel: Any = None,
) -> Phantom:
    """A phantom CT around ``airway_mask`` (real tree topology), with the mask as its exact label.

    Anatomy is laid out in the mask's canonical (LPS) orientation and the
    result is returned on the mask's own grid. ``branches`` is empty and
    ``omitted`` too (see the module doc).
    """
    from scipy import ndimage

    from core.phantom.body import AIR_HU, LUNG_HU, SOFT_HU, fill_body, finish_ct
    from core.phantom.maker import Difficulty, Phantom, _check_cancel
    from core.phantom.raster import Grid, coverage, segment_distance
    from core.phantom.tree import wall_thickness

    mask0 = airway_mask.mask
    if not mask0.any():
        raise InputError("The airway mask is empty.", "Give a label with airway voxels (check the label selector).")
    diff = difficulty if isinstance(difficulty, Difficulty) else Difficulty.named(difficulty or "normal")
    diff = replace(
        diff,
        noise_hu=diff.noise_hu if noise is None else float(noise),
        wall_contrast=diff.wall_contrast if wall_contrast is None else float(wall_contrast),
        blur_mm=diff.blur_mm if blur is None else float(blur),
    )
    diff.validate()
    total = 4

    def report(step: int) -> None:
        _check_cancel(cancel)
        if progress is not None:
            progress(step, total, "Making the phantom")

    report(0)
    vol = LabelVolume(mask0, airway_mask.geometry, airway_mask.name)
    canon, reo = to_canonical(vol)
    mask = np.ascontiguousarray(canon.array)
    spacing = canon.geometry.spacing
    chest, origin = _chest_around(mask, spacing)
    nz, ny, nx = mask.shape
    grid = Grid((nz, ny, nx), spacing, origin)
    rng = np.random.default_rng([seed, 13])
    ct, lungs = fill_body(grid, chest, rng)
    report(1)

    ramp = float(np.mean(spacing))
    vessel_mask = np.zeros(mask.shape, dtype=bool)
    if vessels:
        for lung in chest.lungs:
            c, s = np.asarray(lung.centre), np.asarray(lung.semi)
            for _ in range(30):
                p = c + s * rng.uniform(-0.7, 0.7, 3)
                d = rng.standard_normal(3)
                d /= np.linalg.norm(d)
                r = float(rng.uniform(1.0, 3.5))
                hit = segment_distance(grid, p, p + d * rng.uniform(30.0, 80.0), r + ramp)
                if hit is None:
                    continue
                sl, dist = hit
                f = coverage(dist, r, ramp) * lungs[sl]
                block = ct[sl]
                block += f * (np.float32(SOFT_HU) - block)
                vessel_mask[sl] |= f >= 0.5
        vessel_mask &= ~mask
    report(2)

    # Wall: within wall_thickness(local radius) of the lumen, the radius read off the
    # lumen's distance transform and spread outwards by a maximum filter.
    import edt

    sz = spacing[::-1]
    pad = tuple(int(math.ceil(8.0 / s)) + 1 for s in sz)
    found = bounding_box(mask)
    if found is None:  # phantom_from_mask refused an empty mask before
        raise ValueError("an empty mask has no box")
    box = found.grown(pad, mask.shape).slices
    m = mask[box]
    r_in = edt.edt(m, anisotropy=sz).astype(np.float32)
    d_out = edt.edt(~m, anisotropy=sz).astype(np.float32)
    size = tuple(int(2 * math.ceil(4.0 / s) + 1) for s in sz)
    r_near = ndimage.maximum_filter(r_in, size=size)
    wall = (~m) & (d_out <= np.maximum(0.5, 0.34 * r_near))
    del r_in, d_out, r_near
    wall_hu = np.float32(LUNG_HU + diff.wall_contrast * (0.0 - LUNG_HU))
    block = ct[box]
    block[wall] = np.maximum(block[wall], wall_hu)  # tissue: shows against lung only
    block[m] = np.float32(AIR_HU)
    report(3)

    from core.tree import skeleton

    centre = np.zeros(mask.shape, dtype=bool)
    centre[box] = skeleton(m)
    out = finish_ct(ct, grid, chest, diff.blur_mm, diff.noise_hu, np.random.default_rng([seed, 14]))
    del ct
    report(4)

    from core.volume import IntensityVolume

    geo = airway_mask.geometry

    def back(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(reo.invert(a))

    label = back(mask)
    params = {
        "seed": int(seed),
        "source": "mask",
        "noise_hu": diff.noise_hu,
        "wall_contrast": diff.wall_contrast,
        "blur_mm": diff.blur_mm,
        "vessels": bool(vessels),
        "wall_rule_mm": "max(0.5, 0.34 * local radius)",
        "min_wall_mm": wall_thickness(0.0),
    }
    return Phantom(
        ct=IntensityVolume(back(out), geo, "phantom CT"),
        label=LabelVolume(label, geo, "phantom label"),
        centreline=LabelVolume(back(centre), geo, "phantom centreline"),
        branches=[],
        omitted=[],
        full_label=LabelVolume(label, geo, "phantom full tree"),
        vessels=LabelVolume(back(vessel_mask), geo, "phantom vessels"),
        lungs=LabelVolume(back(lungs), geo, "phantom lungs"),
        params=params,
    )
