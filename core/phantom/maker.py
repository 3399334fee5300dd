"""Synthetic airway CTs with an exact reference label and a branch table.

:func:`make_phantom` lays an adult chest and a bronchial tree out in
millimetres (:mod:`core.phantom.tree`), then renders them on a voxel grid
(:mod:`core.phantom.raster`, :mod:`core.phantom.body`):

- ``label`` is exactly the set of voxels whose centres lie inside a lumen tube
  (distance to the branch's axis segment <= its radius), minus the voxels that
  only ``omitted`` branches cover;
- ``ct`` (int16 HU) shows every branch, omitted ones included: air lumen,
  a wall, companion arteries and veins (+40 HU) as distractors, textured lung
  parenchyma (-850 HU), mediastinum, fat, spine and air around the body, then a
  Gaussian partial-volume blur and white noise;
- ``centreline`` is a one-voxel-thin digital line along every branch;
- ``branches`` carry their true anatomical names down to the segmental
  bronchi (core.phantom.anatomy); the branch table adds each branch's lobe and
  segment, inherited by the unnamed branches below.

Branches thinner than the grid can resolve are not grown (their radius must
reach half the diagonal of a voxel's two largest sides), so the label is one
26-connected piece; if a rare layout still splits it, the tree is regrown
with a slightly larger minimum radius. Named bronchi left out so (or beyond
``generations`` or the field of view) are listed with the reason in
``params["anatomy"]["not_grown"]``: the label and the table never show them.

The default spacing is (0.7, 0.7, 1.0) mm scaled so the whole chest fits the
grid; at 64^3 that is ~5 mm and only the first generations are resolved. Give a
finer ``spacing`` for a small grid centred on the central airways instead (e.g.
``make_phantom((64, 64, 64), spacing=(1.2, 1.2, 1.5))``).
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, SupportsInt, cast

import numpy as np

from core.errors import ConfigError
from core.phantom.anatomy import lineage
from core.phantom.body import AIR_HU, LUNG_HU, SOFT_HU, fill_body, finish_ct
from core.phantom.raster import Grid, centreline_voxels, coverage, segment_distance
from core.phantom.tree import Branch, Chest, Tree, grow_tree
from core.progress import Progress, eta_text, raise_if_cancelled
from core.volume import Geometry, IntensityVolume, LabelVolume

if TYPE_CHECKING:
    from core.outputs import OutputPlan

DEFAULT_SPACING = (0.7, 0.7, 1.0)  # x, y, z mm before scaling to fit the chest


@dataclass(frozen=True)
class Difficulty:
    """Image-quality knobs. ``wall_contrast`` 1 puts the wall at 0 HU, 0 makes it lung-grey."""

    noise_hu: float = 20.0  # std of white noise added last
    wall_contrast: float = 0.9  # wall HU = -850 + 850 * wall_contrast
    blur_mm: float = 0.5  # Gaussian sigma of the scanner's point spread

    @classmethod
    def named(cls, name: str) -> Difficulty:
        presets = {
            "easy": cls(8.0, 1.0, 0.3),
            "normal": cls(),
            "hard": cls(45.0, 0.6, 0.9),
        }
        if name not in presets:
            raise ConfigError(f"Unknown phantom difficulty '{name}'.", f"Use one of: {', '.join(presets)}.")
        return presets[name]

    def validate(self) -> None:
        if not (math.isfinite(self.noise_hu) and self.noise_hu >= 0):
            raise ConfigError(f"Noise {self.noise_hu} HU is not a non-negative number.", "Use e.g. --noise 20.")
        if not (math.isfinite(self.wall_contrast) and 0.0 <= self.wall_contrast <= 1.5):
            raise ConfigError(
                f"Wall contrast {self.wall_contrast} is out of range.", "Use a value in 0..1.5 (1 = wall at 0 HU)."
            )
        if not (math.isfinite(self.blur_mm) and 0.0 <= self.blur_mm <= 10.0):
            raise ConfigError(
                f"Blur {self.blur_mm} mm is out of range.", "Use a Gaussian sigma in 0..10 mm (e.g. 0.5)."
            )


@dataclass
class Phantom:
    """A synthetic case. Points in ``branches`` are world mm (x, y, z), as ``ct.geometry``."""

    ct: IntensityVolume
    label: LabelVolume
    centreline: LabelVolume
    branches: list[Branch]
    omitted: list[int] = field(default_factory=list)
    full_label: LabelVolume | None = None  # every branch's lumen, omitted ones included
    vessels: LabelVolume | None = None  # vessel voxels (never airway)
    lungs: LabelVolume | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_table(self) -> list[dict[str, Any]]:
        """One row per branch: ids, generation, side, true name, lobe and segment, end points (mm and voxel),
        length, radius, wall.

        ``name`` is the branch's own anatomical name ("" below the segmental
        bronchi); ``lobe`` and ``segment`` are its own or its nearest named
        ancestor's ("" where there is none: no lobe above the lobar bronchi, no
        segment above the segmental ones).
        """
        geo = self.ct.geometry
        omitted = set(self.omitted)
        kin = lineage(self.branches)
        rows = []
        for b in self.branches:
            lobe, segment = kin[b.id]
            row: dict[str, Any] = {
                "id": b.id,
                "parent": b.parent,
                "generation": b.generation,
                "side": b.side,
                "name": b.name,
                "lobe": lobe,
                "segment": segment,
                "omitted": b.id in omitted,
                "length_mm": round(b.length_mm, 4),
                "radius_mm": round(b.radius_mm, 4),
                "diameter_mm": round(b.diameter_mm, 4),
                "wall_mm": round(b.wall_mm, 4),
            }
            for name, p in (("start", b.start), ("end", b.end)):
                for axis, v in zip("xyz", p):
                    row[f"{name}_{axis}_mm"] = round(float(v), 4)
                idx = geo.world_to_index(p)
                for axis, v in zip("zyx", idx):
                    row[f"{name}_{axis}_index"] = round(float(v), 3)
            rows.append(row)
        return rows

    def to_csv(self) -> str:
        rows = self.to_table()
        out = _io.StringIO()
        if rows:
            w = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
        return out.getvalue()

    def to_json(self) -> str:
        doc = {
            "geometry": self.ct.geometry.to_dict(),
            "shape_zyx": list(self.ct.shape),
            "params": self.params,
            "omitted": list(self.omitted),
            "branches": self.to_table(),
        }
        return json.dumps(doc, indent=1)

    @staticmethod
    def file_paths(out_dir: str | Path) -> dict[str, Path]:
        """Where :meth:`save` writes each file."""
        out = Path(out_dir)
        return {
            "ct": out / "ct.nii.gz",
            "label": out / "label.nii.gz",
            "centreline": out / "centreline.nii.gz",
            "csv": out / "branches.csv",
            "json": out / "branches.json",
        }

    def save(self, out_dir: str | Path, plan: OutputPlan | None = None) -> dict[str, Path]:
        """Write ``ct.nii.gz``, ``label.nii.gz``, ``centreline.nii.gz``, ``branches.csv``, ``branches.json`` (atomically).

        With a ``core.outputs.OutputPlan``, the files are staged in it and appear
        together when the plan commits.
        """
        from core.outputs import OutputPlan

        paths = self.file_paths(out_dir)
        own = plan is None
        if plan is None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            plan = OutputPlan(overwrite=True, backup=False)  # the library call replaces, as before
        try:
            plan.write_volume(self.ct, paths["ct"])
            plan.write_volume(self.label, paths["label"])
            plan.write_volume(self.centreline, paths["centreline"])
            plan.write_text(paths["csv"], self.to_csv())
            plan.write_text(paths["json"], self.to_json())
            if own:
                plan.commit()
        except BaseException:
            if own:
                plan.abort()
            raise
        return paths


# -- writing -------------------------------------------------------------------


# -- making ----------------------------------------------------------------------


def _shape3(shape: int | Sequence[int]) -> tuple[int, int, int]:
    s: tuple[int, ...]
    try:
        # np.isscalar narrows nothing for mypy: the casts say what each branch holds
        s = (
            (int(cast(SupportsInt, shape)),) * 3
            if np.isscalar(shape)
            else tuple(int(v) for v in cast(Iterable[Any], shape))
        )
    except (TypeError, ValueError):
        s = ()
    if len(s) != 3 or min(s) < 8 or max(s) > 2048:
        raise ConfigError(
            f"Phantom size {shape} is not three sides of 8..2048 voxels.",
            "Use e.g. --size 64 or --size 400 512 512 (z y x).",
        )
    return s[0], s[1], s[2]


def auto_spacing(shape: tuple[int, int, int]) -> tuple[float, float, float]:
    """(0.7, 0.7, 1.0) mm scaled by one factor so the nominal chest fits the grid (x, y, z)."""
    extent = Chest.nominal_extent()
    fov = [n * s for n, s in zip(shape[::-1], DEFAULT_SPACING)]
    f = max(e / v for e, v in zip(extent, fov))
    return tuple(round(s * f, 4) for s in DEFAULT_SPACING)  # type: ignore[return-value]


def _grid_for(shape: tuple[int, int, int], spacing: tuple[float, float, float], chest: Chest) -> Grid:
    """Centre the field of view on the chest along each axis it covers, else on the central airways."""
    extent = Chest.nominal_extent()
    fov = [(n - 1) * s for n, s in zip(shape[::-1], spacing)]
    focus = (chest.carina[0], chest.carina[1], chest.carina[2] - 0.3 * fov[2])
    centre = [0.0 if fov[i] >= extent[i] else focus[i] for i in range(3)]
    origin = tuple(round(c - f / 2.0, 4) for c, f in zip(centre, fov))
    return Grid(shape, spacing, origin)  # type: ignore[arg-type]


def _check_cancel(cancel: Any) -> None:
    raise_if_cancelled(cancel, "Phantom generation cancelled.")


def _vessel_segments(tree: Tree, chest: Chest, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Companion arteries beside every bronchus below the main bronchi, and a few free veins."""
    segs: list[tuple[np.ndarray, np.ndarray, float]] = []
    art_end: dict[int, np.ndarray] = {}
    for b in tree.branches:
        if b.generation < 2:
            continue
        r_v = 0.95 * b.radius_mm
        offset = tree.normals[b.id] * (b.radius_mm + b.wall_mm + r_v + 0.8)
        start = art_end.get(b.parent, np.asarray(b.start) + offset)
        end = np.asarray(b.end) + offset
        art_end[b.id] = end
        segs.append((start, end, r_v))
    for lung in chest.lungs:
        c, s = np.asarray(lung.centre), np.asarray(lung.semi)
        for _ in range(10):
            p = c + s * rng.uniform(-0.6, 0.6, 3)
            d = rng.standard_normal(3)
            d /= np.linalg.norm(d)
            length = rng.uniform(30.0, 70.0)
            segs.append((p, p + d * length, float(rng.uniform(1.2, 3.5))))
    return segs


def make_phantom(
    shape: int | Sequence[int] = (64, 64, 64),
    spacing: Sequence[float] | None = None,
    seed: int = 0,
    generations: int = 6,
    noise: float | None = None,
    wall_contrast: float | None = None,
    blur: float | None = None,
    omit_distal: int = 0,
    vessels: bool = True,
    difficulty: str | Difficulty | None = "normal",
    min_radius_mm: float = 0.5,
    progress: Progress | None = None,
    cancel: Any = None,
) -> Phantom:
    """A synthetic chest CT with its exact airway label (see the module doc).

    ``shape`` is (z, y, x) or one side; ``spacing`` (x, y, z) mm, default
    :func:`auto_spacing`; ``generations`` counts bifurcation levels below the
    trachea (trachea = 0); ``noise`` (HU std), ``wall_contrast`` and ``blur``
    (mm sigma) override ``difficulty``; ``omit_distal`` leaves that many
    terminal branches out of ``label`` (they stay in the CT); same ``seed`` ->
    identical arrays.
    """
    t0 = time.perf_counter()
    shp = _shape3(shape)
    if spacing is None:
        sp = auto_spacing(shp)
    else:
        given = tuple(float(v) for v in spacing)
        if len(given) != 3 or not all(math.isfinite(v) and v > 0 for v in given):
            raise ConfigError(
                f"Spacing {tuple(spacing)} is not three positive millimetre values.",
                "Use e.g. --spacing 0.7 0.7 1.0 (x y z).",
            )
        sp = (given[0], given[1], given[2])
    if not 0 <= int(generations) <= 16:
        raise ConfigError(
            f"{generations} generations is out of range.", "Use 0..16 (6 reaches segmental bronchi, 12 about 1 mm)."
        )
    diff = difficulty if isinstance(difficulty, Difficulty) else Difficulty.named(difficulty or "normal")
    diff = replace(
        diff,
        noise_hu=diff.noise_hu if noise is None else float(noise),
        wall_contrast=diff.wall_contrast if wall_contrast is None else float(wall_contrast),
        blur_mm=diff.blur_mm if blur is None else float(blur),
    )
    diff.validate()
    if int(omit_distal) < 0:
        raise ConfigError(
            f"omit_distal={omit_distal} is negative.", "Give the number of terminal branches to leave out (0 or more)."
        )

    total = 6

    def report(step: int) -> None:
        _check_cancel(cancel)
        if progress is not None:
            progress(step, total, "Making the phantom" + eta_text(step, total, time.perf_counter() - t0))

    report(0)
    chest = Chest.sample(np.random.default_rng([seed, 0]))
    grid = _grid_for(shp, sp, chest)
    hi_corner = np.asarray(grid.origin) + (np.asarray(shp[::-1]) - 1) * np.asarray(sp)
    box = (np.asarray(grid.origin), hi_corner)
    two = sorted(sp)[1:]
    r_min = max(float(min_radius_mm), 0.5 * math.hypot(*two))

    import cc3d

    for _attempt in range(8):
        tree = grow_tree(chest, np.random.default_rng([seed, 1]), int(generations), r_min, box)
        terminals = [i for i in tree.terminals() if tree.branches[i].generation >= 2]
        k = int(omit_distal)
        if k > len(terminals):
            raise ConfigError(
                f"Cannot omit {k} distal branches: this tree has {len(terminals)} terminal branches below the lobar level.",
                "Lower --omit-distal, or raise --generations / the grid's resolution.",
            )
        omitted = (
            sorted(int(i) for i in np.random.default_rng([seed, 2]).choice(terminals, size=k, replace=False))
            if k
            else []
        )
        om = set(omitted)
        full = np.zeros(shp, dtype=bool)
        label = np.zeros(shp, dtype=bool)
        dists = []
        ramp = float(np.mean(sp))
        for b in tree.branches:
            if b.id % 64 == 0:
                _check_cancel(cancel)
            hit = segment_distance(grid, np.asarray(b.start), np.asarray(b.end), b.radius_mm + b.wall_mm + ramp)
            dists.append(hit)
            if hit is None:
                continue
            sl, d = hit
            inside = d <= b.radius_mm
            full[sl] |= inside
            if b.id not in om:
                label[sl] |= inside
        if _one_piece(label, cc3d) and _one_piece(full, cc3d):
            break
        r_min *= 1.12  # a thin branch split off: regrow with thicker tips
    else:  # pragma: no cover - not seen in practice; keeps the promise explicit
        raise ConfigError(
            f"A {shp[2]} x {shp[1]} x {shp[0]} grid at {', '.join(f'{s:.3g}' for s in sp)} mm is too coarse for the airway "
            f"tree (even the {2 * chest.trachea_radius:.0f} mm trachea does not come out as one connected piece).",
            "Use a larger grid (e.g. --size 64) or a finer --spacing.",
        )
    report(1)

    ct, lungs = fill_body(grid, chest, np.random.default_rng([seed, 3]), cancel=cancel)
    report(2)

    vessel_mask = np.zeros(shp, dtype=bool)
    if vessels:
        for i, (v0, v1, r) in enumerate(_vessel_segments(tree, chest, np.random.default_rng([seed, 4]))):
            if i % 64 == 0:
                _check_cancel(cancel)
            hit = segment_distance(grid, v0, v1, r + ramp)
            if hit is None:
                continue
            sl, d = hit
            f = coverage(d, r, ramp)
            f *= lungs[sl]
            block = ct[sl]
            block += f * (np.float32(SOFT_HU) - block)
            vessel_mask[sl] |= f >= 0.5
        vessel_mask &= ~full
    report(3)

    wall_hu = np.float32(LUNG_HU + diff.wall_contrast * (0.0 - LUNG_HU))
    for b, hit in zip(tree.branches, dists):
        if hit is not None:
            sl, d = hit
            block = ct[sl]
            # a wall is tissue: it shows against lung, not against the mediastinum or a vessel
            block += coverage(d, b.radius_mm + b.wall_mm, ramp) * (np.maximum(block, wall_hu) - block)
    for b, hit in zip(tree.branches, dists):
        if hit is not None:
            sl, d = hit
            block = ct[sl]
            block += coverage(d, b.radius_mm, ramp) * (np.float32(AIR_HU) - block)
    del dists
    report(4)

    centre = np.zeros(shp, dtype=bool)
    for b in tree.branches:
        v = centreline_voxels(grid, np.asarray(b.start), np.asarray(b.end), b.radius_mm)
        centre[v[:, 0], v[:, 1], v[:, 2]] = True
    _thin_junctions(centre)

    report(5)
    out = finish_ct(ct, grid, chest, diff.blur_mm, diff.noise_hu, np.random.default_rng([seed, 5]), cancel=cancel)
    del ct
    report(6)

    geo = Geometry(grid.spacing, grid.origin)
    params = {
        "seed": int(seed),
        "generations": int(generations),
        "omit_distal": int(omit_distal),
        "vessels": bool(vessels),
        "noise_hu": diff.noise_hu,
        "wall_contrast": diff.wall_contrast,
        "blur_mm": diff.blur_mm,
        "min_radius_mm": round(r_min, 4),
        "spacing": list(grid.spacing),
        "anatomy": {"variants": list(tree.variants), "not_grown": dict(tree.not_grown)},
    }
    return Phantom(
        ct=IntensityVolume(out, geo, "phantom CT"),
        label=LabelVolume(label, geo, "phantom label"),
        centreline=LabelVolume(centre, geo, "phantom centreline"),
        branches=list(tree.branches),
        omitted=omitted,
        full_label=LabelVolume(full, geo, "phantom full tree"),
        vessels=LabelVolume(vessel_mask, geo, "phantom vessels"),
        lungs=LabelVolume(lungs, geo, "phantom lungs"),
        params=params,
    )


def _thin_junctions(centre: np.ndarray) -> None:
    """Thin, in place, where branch lines meet in a clump (a 2x2x2 cell holding 4+ voxels).

    One digital line puts at most two voxels in any 2x2x2 cell, but where
    children leave a junction at wide angles (the textbook's near-right-angle
    take-offs) their first voxels and the parent's last can fill a corner of
    one; 3D thinning (topology kept, end points kept) makes it one voxel thin
    again. Most trees have no such cell and are left as drawn.
    """
    from core.box import bounding_box
    from core.tree import skeleton

    box = bounding_box(centre)
    if box is None:
        return
    sl = box.grown((1, 1, 1), centre.shape).slices
    c = centre[sl].astype(np.uint8)
    cells = c[:-1, :-1, :-1] + c[1:, :-1, :-1] + c[:-1, 1:, :-1] + c[:-1, :-1, 1:]
    cells += c[1:, 1:, :-1] + c[1:, :-1, 1:] + c[:-1, 1:, 1:] + c[1:, 1:, 1:]
    if np.any(cells >= 4):
        centre[sl] = skeleton(centre[sl])


def _one_piece(mask: np.ndarray, cc3d: Any) -> bool:
    idx = np.nonzero(mask.any(axis=(1, 2)))[0]
    if idx.size == 0:
        return False
    iy = np.nonzero(mask.any(axis=(0, 2)))[0]
    ix = np.nonzero(mask.any(axis=(0, 1)))[0]
    crop = mask[idx[0] : idx[-1] + 1, iy[0] : iy[-1] + 1, ix[0] : ix[-1] + 1]
    _, n = cc3d.connected_components(crop, connectivity=26, return_N=True)
    return int(n) == 1


__all__ = ["Difficulty", "Phantom", "Branch", "auto_spacing", "make_phantom"]
