"""The demo case: a phantom CT, its reference and a SIMULATED prediction.

The prediction is not a model output. It is derived deterministically from
the phantom (:func:`core.phantom.make_phantom`) so that reviewers have real FP
and FN regions of every kind to step through:

- it starts from the phantom's full lumen (``full_label``), which includes the
  ``omit_distal`` terminal branches the reference leaves out (they stay visible
  in the CT): against the reference these are false positives that are really
  *reference errors*;
- ``missed`` other terminal branches are removed (false negatives), keeping
  the voxels that belong to their parent's and siblings' lumen so the tree stays whole;
- one central bronchus (generation 1-2) is thickened by one voxel (a
  boundary false positive, the over-segmentation seen with Dice-trained nets);
- a leak blob (a ball of ``leak_radius_mm``) is attached to the end of another
  terminal branch, as a leakage into the parenchyma.

Same parameters -> identical arrays. ``describe`` lists what was done, for the
status bar and tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.progress import Progress
from core.volume import LabelVolume

DEMO_NAME = "Phantom demo"
SIMULATED_NAME = "Simulated prediction (not a model)"


@dataclass(frozen=True)
class DemoParams:
    shape: tuple[int, int, int] = (160, 224, 224)  # whole chest, ~1.6 x 1.6 x 2.2 mm
    spacing: tuple[float, float, float] | None = None
    seed: int = 7
    generations: int = 9
    omit_distal: int = 2
    missed: int = 3
    leak_radius_mm: float = 6.0


# Small variant for tests: central airways at ~1.4 mm in under a second.
TEST_PARAMS = DemoParams(
    shape=(48, 64, 64), spacing=(1.4, 1.4, 1.8), seed=7, generations=6, omit_distal=2, missed=2, leak_radius_mm=4.0
)


@dataclass
class DemoCase:
    phantom: Any
    reference: LabelVolume
    prediction: LabelVolume
    missed: list[int] = field(default_factory=list)  # branch ids removed (FN)
    thickened: int | None = None  # branch id dilated (FP)
    leak_branch: int | None = None  # branch id the leak hangs from (FP)
    leak_centre_zyx: tuple[int, int, int] | None = None

    def describe(self) -> str:
        return (
            f"Simulated prediction: missed branches {self.missed} (FN), reference omits {self.phantom.omitted} "
            f"(FP that are reference errors), branch {self.thickened} thickened and a leak at branch "
            f"{self.leak_branch} (FP)."
        )


def _grid(phantom: Any) -> Any:
    from core.phantom.raster import Grid

    g = phantom.ct.geometry
    return Grid(phantom.ct.shape, g.spacing, g.origin)


def _tube(grid: Any, branch: Any, extra_mm: float) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    from core.phantom.raster import segment_distance

    res = segment_distance(grid, np.asarray(branch.start), np.asarray(branch.end), branch.radius_mm + extra_mm)
    if res is None:
        return None
    sl, d = res
    return sl, d <= branch.radius_mm + extra_mm


def make_demo(params: DemoParams = DemoParams(), *, progress: Progress | None = None, cancel: Any = None) -> DemoCase:
    from scipy import ndimage

    from core.phantom import make_phantom

    ph = make_phantom(
        params.shape,
        spacing=params.spacing,
        seed=params.seed,
        generations=params.generations,
        omit_distal=params.omit_distal,
        progress=progress,
        cancel=cancel,
    )
    full = ph.full_label if ph.full_label is not None else ph.label
    pred = full.mask.copy()
    grid = _grid(ph)
    parents = {b.parent for b in ph.branches}
    omitted = set(ph.omitted)
    terminals = [b for b in ph.branches if b.id not in parents and b.id not in omitted and b.generation >= 2]
    rng = np.random.default_rng([params.seed, 11])
    order = [terminals[i] for i in rng.permutation(len(terminals))]
    vox = max(ph.ct.geometry.spacing)

    # FN: whole terminal branches missing, minus what their parent's lumen covers; branches
    # at least one in-plane voxel in radius first, because a thinner one leaves only a few boundary
    # voxels on the grid and would not be the missed branch it is announced as
    missed = sorted(order, key=lambda b: b.radius_mm < min(ph.ct.geometry.spacing))[: params.missed]
    from core.phantom.raster import segment_distance

    for b in missed:
        t = _tube(grid, b, 0.5 * vox)
        if t is None:
            continue
        sl, inside = t
        # the parent's and the siblings' lumen stay: the half-voxel margin around the missed branch's
        # root reaches into its sibling's root on coarse grids, which cut the sibling off the tree (an
        # unannounced miss: metrics drop every piece apart from the largest)
        keep = np.zeros(pred.shape, dtype=bool)
        for o in ph.branches:
            if o.id != b.id and (o.id == b.parent or o.parent == b.parent):
                res = segment_distance(grid, np.asarray(o.start), np.asarray(o.end), o.radius_mm + 3 * vox)
                if res is not None:
                    osl, od = res
                    keep[osl] |= od <= o.radius_mm
        region = pred[sl]
        region[inside & ~keep[sl]] = False

    # FP: one central bronchus one voxel too thick
    central = sorted((b for b in ph.branches if b.generation in (1, 2)), key=lambda b: (b.generation, b.id))
    thick = central[-1] if central else None
    if thick is not None:
        t = _tube(grid, thick, 2.5 * vox)
        if t is not None:
            sl, near = t
            grown = ndimage.binary_dilation(pred[sl], iterations=1)
            pred[sl] |= grown & near

    # FP: a leak ball hanging off the end of another terminal branch
    leak_branch, leak_centre = None, None
    r_vox = params.leak_radius_mm / np.asarray(ph.ct.geometry.spacing_zyx)
    # off the end of a terminal branch; on a small grid whose terminals run out
    # of the volume, off the side of a bronchus instead
    anchors = [(b, np.asarray(b.end), b.direction, 0.8 * params.leak_radius_mm) for b in order if b not in missed]
    for b in sorted(ph.branches, key=lambda b: (-b.generation, b.id)):
        if b.generation >= 1 and b.id not in omitted and b not in missed:
            side = np.cross(b.direction, (0.0, 0.0, 1.0))
            if np.linalg.norm(side) < 0.3:
                side = np.cross(b.direction, (1.0, 0.0, 0.0))
            side = side / np.linalg.norm(side)
            anchors.append((b, np.asarray(b.midpoint), side, b.radius_mm + 0.6 * params.leak_radius_mm))
    for lb, point, direction, offset in anchors:
        centre = point + direction * offset
        idx = ph.ct.geometry.world_to_index(centre)
        # the whole ball inside the grid, so the leak is what it says
        if np.any(idx - r_vox < 0) or np.any(idx + r_vox > np.asarray(pred.shape) - 1):
            continue
        lo = np.floor(idx - r_vox).astype(int)
        hi = np.ceil(idx + r_vox).astype(int) + 1
        zz, yy, xx = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        ball = (
            ((zz - idx[0]) / r_vox[0]) ** 2 + ((yy - idx[1]) / r_vox[1]) ** 2 + ((xx - idx[2]) / r_vox[2]) ** 2
        ) <= 1.0
        pred[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] |= ball
        leak_branch = lb.id
        leak_centre = tuple(int(round(v)) for v in idx)
        break

    reference = LabelVolume(ph.label.mask.copy(), ph.label.geometry, name="reference")
    prediction = LabelVolume(pred, ph.label.geometry, name=SIMULATED_NAME)
    leak_zyx = None if leak_centre is None else (int(leak_centre[0]), int(leak_centre[1]), int(leak_centre[2]))
    return DemoCase(
        ph, reference, prediction, [b.id for b in missed], None if thick is None else thick.id, leak_branch, leak_zyx
    )
