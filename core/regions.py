"""Error regions: connected false-positive and false-negative components, sorted and categorised.

Categories follow the error discussion of Zheng et al. (TMI 2021), which
separates errors that barely change the tree from those that do:

- FP ``boundary_dilation``: a thin shell on the reference surface (no voxel
  farther than ``shell_mm`` from the reference, and never less than one voxel's
  largest extent: a one-voxel dilation across a 2.2 mm slice is still a shell);
- FP ``candidate_branch``: an elongated component (principal extent at least
  ``candidate_min_length_mm`` and two voxels, elongation at least
  ``elongation_min``) whose nearest reference branch is terminal, or that
  reaches out of the reference along its own axis (its farthest voxel at least
  ``protrusion_min`` of its length away): likely an airway the annotation
  missed. The second test is for a reference that stops a few millimetres into
  a branch: the parse cannot start a branch on so short a stub, so it gives the
  stub's voxels to its (non-terminal) parent, and the tube continuing the stub
  would otherwise read as a leak;
- FP ``leakage``: any other component (a blob at a bifurcation or into the
  lung parenchyma);
- FN ``missed_branch``: the missed voxels cover at least
  ``missed_centreline_min`` reference centreline voxels (the tree is broken
  there);
- FN ``boundary_miss``: the rest (a thinner lumen than the reference).

These rules are this project's (the paper describes the kinds, not thresholds);
every threshold is a parameter. Regions come sorted FN first, then FP, each by
size (largest first), then position, and carry stable ids (``FN-0001``...) so
"next/previous" in the GUI is reproducible.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from core.box import Box, bounding_box
from core.errors import GeometryError, InputError
from core.metrics import _as_mask, _lookup, _prediction_component, branch_of_voxels
from core.progress import Progress
from core.progress import raise_if_cancelled as _check
from core.tree import AirwayTree, neighbour_pairs, sparse_components

if TYPE_CHECKING:
    from core.progress import Cancellable
    from core.volume import Geometry

KIND_ORDER = ("FN", "FP")
FP_CATEGORIES = ("boundary_dilation", "candidate_branch", "leakage")
FN_CATEGORIES = ("boundary_miss", "missed_branch")

_OFFSETS26 = np.array(
    [(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) != (0, 0, 0)], dtype=np.int64
)


@dataclass
class ErrorRegion:
    id: str
    kind: str  # "FP" or "FN"
    category: str
    voxels: int
    volume_mm3: float
    centroid_zyx: tuple[float, float, float]  # voxel index (z, y, x)
    centroid_mm: tuple[float, float, float]  # world (x, y, z) in mm (file geometry when given)
    bbox: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # half-open (z, y, x) ranges
    nearest_branch: int | None
    nearest_generation: int | None
    max_distance_mm: float  # FP: farthest voxel from the reference; FN: deepest voxel below its surface
    length_mm: float  # extent along the principal axis
    elongation: float  # sqrt of the largest / second-largest principal variance
    centreline_voxels: int  # reference centreline voxels inside the region
    # The region's own voxels, kept from the component labelling so that nobody
    # recomputes them: (n, 3) zyx indices in C order (int16 when the grid allows).
    coords: np.ndarray | None = field(default=None, repr=False, compare=False)
    # Content key (kind + voxel set): the same region gets the same key in every
    # analysis, whatever the sort order, so review decisions can be keyed by it.
    key: str = ""
    # The region's voxel nearest its centroid among those the whole prediction gets wrong too (what
    # an overlay of prediction against reference draws as this kind); any of its voxels when none is.
    focus_zyx: tuple[int, int, int] | None = None

    @property
    def box(self) -> Box:
        """``bbox`` as a :class:`~core.box.Box` (the field keeps the per-axis pairs region files store)."""
        return Box.from_ranges(self.bbox)

    def mask(self) -> np.ndarray:
        """The region as a bool mask over ``bbox`` (box-local)."""
        box = self.box
        out = np.zeros(box.shape, dtype=bool)
        if self.coords is not None and len(self.coords):
            out[tuple((self.coords.astype(np.int64) - np.array(box.start)).T)] = True
        return out

    def as_dict(self) -> dict[str, Any]:
        d = asdict(replace_coords(self))
        d.pop("coords", None)
        d["focus_zyx"] = None if self.focus_zyx is None else list(self.focus_zyx)
        d["centroid_zyx"] = list(self.centroid_zyx)
        d["centroid_mm"] = list(self.centroid_mm)
        d["bbox"] = [list(b) for b in self.bbox]
        return d


def replace_coords(region: ErrorRegion) -> ErrorRegion:
    """A shallow copy without the voxel array (asdict would deep-copy it)."""
    import dataclasses

    return dataclasses.replace(region, coords=None)


def region_key(kind: str, coords: np.ndarray, shape: Sequence[int]) -> str:
    """``FP:<hash>`` of the region's voxel set on a grid of ``shape``; independent of the voxels' order."""
    flat = np.sort(np.ravel_multi_index(tuple(np.asarray(coords, dtype=np.int64).T), tuple(shape)).astype(np.int64))
    h = hashlib.blake2b(digest_size=10)
    h.update(np.asarray(shape, dtype=np.int64).tobytes())
    h.update(flat.tobytes())
    return f"{kind}:{h.hexdigest()}"


def find_error_regions(
    prediction_mask: Any,
    reference_mask: Any,
    tree: AirwayTree,
    spacing_zyx: Sequence[float] | None = None,
    *,
    geometry: Geometry | None = None,
    connectivity: int = 26,
    largest_component: bool = True,
    lcc_connectivity: int = 6,
    shell_mm: float = 1.5,
    elongation_min: float = 2.0,
    candidate_min_length_mm: float = 3.0,
    protrusion_min: float = 0.75,
    missed_centreline_min: int = 2,
    min_voxels: int = 1,
    progress: Progress | None = None,
    cancel: Cancellable | None = None,
) -> list[ErrorRegion]:
    """FP and FN components of the evaluated prediction against the reference.

    The prediction is reduced to its largest ``lcc_connectivity`` component as
    in ``core.metrics.evaluate`` (``largest_component=False`` keeps it whole);
    regions are ``connectivity``-connected (26 groups a shell into one region).
    ``geometry`` (a ``core.volume.Geometry``) gives world centroids;
    ``min_voxels`` drops smaller regions (after categorising).
    """
    pred, _ = _as_mask(prediction_mask, "prediction")
    ref, ref_sp = _as_mask(reference_mask, "reference")
    if geometry is None and hasattr(reference_mask, "geometry"):
        geometry = reference_mask.geometry
    if pred.shape != ref.shape or tree.shape != ref.shape:
        raise GeometryError(
            f"Prediction {pred.shape}, reference {ref.shape} and tree {tree.shape} must share one grid.",
            "Use the prediction, label and tree of the same case.",
        )
    if connectivity not in (6, 18, 26):
        raise InputError(f"Connectivity {connectivity} is not 6, 18 or 26.", "Use 26 (default), 18 or 6.")
    sp = np.asarray(spacing_zyx or ref_sp or tree.spacing_zyx, dtype=float)
    if geometry is None:
        from core.volume import Geometry

        geometry = Geometry(spacing=tuple(sp[::-1]))

    def report(k: int, what: str) -> None:
        _check(cancel)
        if progress is not None:
            progress(k, 3, what)

    report(0, "components")
    p_box, p_sub, _, _ = _prediction_component(pred, ref, lcc_connectivity, largest_component)
    rbox = bounding_box(ref)
    if rbox is None:
        return []
    # Everything below works on voxel coordinates (a few hundred thousand), not on volumes.
    r_lo = np.array(rbox.start)
    r_local = np.argwhere(ref[rbox.slices])
    r_coords = r_local + r_lo
    if p_sub is not None and p_box is not None:
        p_coords = np.argwhere(p_sub) + np.array(p_box.start)
        fp = p_coords[~ref[tuple(p_coords.T)]]
    else:
        fp = np.zeros((0, 3), np.int64)
    fn = r_coords[~_lookup(p_sub, p_box, r_coords)]
    # An FN voxel the prediction has in a piece apart from its largest component is missed by the
    # metrics, but a view of the whole prediction draws it as found: focus where the miss shows.
    shown = {"FP": np.ones(len(fp), dtype=bool), "FN": ~pred[tuple(fn.T)]}
    inner, outer = _shells(r_local, list(rbox.shape))
    inner, outer = inner + r_lo, outer + r_lo
    # beyond the volume's faces counts as airway (tubes cut by the field of view)
    outer = outer[((outer >= 0) & (outer < np.asarray(ref.shape))).all(axis=1)]
    regions: list[ErrorRegion] = []
    for kind, coords, targets in (("FP", fp, inner), ("FN", fn, outer)):
        report(1 if kind == "FP" else 2, f"{kind} regions")
        regions += _regions_of(
            kind,
            coords,
            shown[kind],
            targets,
            ref.shape,
            tree,
            sp,
            geometry,
            connectivity,
            shell_mm,
            elongation_min,
            candidate_min_length_mm,
            protrusion_min,
            missed_centreline_min,
        )
    if min_voxels > 1:
        regions = [g for g in regions if g.voxels >= min_voxels]
    report(3, "done")
    return sort_regions(regions)


def _forward_offsets(connectivity: int) -> np.ndarray:
    """Half of the 6/18/26-neighbourhood (the other half are the negatives)."""
    all26 = [(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) > (0, 0, 0)]
    limit = {6: 1, 18: 2, 26: 3}[connectivity]
    return np.array([o for o in all26 if sum(map(abs, o)) <= limit], dtype=np.int64)


def _regions_of(
    kind: str,
    coords: np.ndarray,
    shown: np.ndarray,
    targets: np.ndarray,
    full_shape: tuple[int, ...],
    tree: AirwayTree,
    sp: np.ndarray,
    geometry: Geometry,
    connectivity: int,
    shell_mm: float,
    elongation_min: float,
    candidate_min_length_mm: float,
    protrusion_min: float,
    missed_centreline_min: int,
) -> list[ErrorRegion]:
    if len(coords) == 0:
        return []
    lo = coords.min(axis=0)
    i, j = neighbour_pairs(coords - lo, coords.max(axis=0) - lo + 1, _forward_offsets(connectivity))
    lab = sparse_components(len(coords), i, j)
    n = int(lab.max())
    count = np.bincount(lab, minlength=n + 1)

    # FP: distance to the reference; FN: depth below its surface
    dist = _nearest_distance(coords, targets, sp)
    maxd = np.zeros(n + 1)
    np.maximum.at(maxd, lab, dist)

    # principal axes per region (mm)
    x = coords * sp
    c = np.zeros((n + 1, 3))
    for k in range(3):
        c[:, k] = np.bincount(lab, weights=x[:, k], minlength=n + 1)
    c /= np.maximum(count, 1)[:, None]
    d = x - c[lab]
    cov = np.zeros((n + 1, 3, 3))
    for a in range(3):
        for b in range(a, 3):
            v = np.bincount(lab, weights=d[:, a] * d[:, b], minlength=n + 1) / np.maximum(count, 1)
            cov[:, a, b] = cov[:, b, a] = v
    w, vec = np.linalg.eigh(cov)  # ascending
    axis = vec[:, :, 2]
    proj = (d * axis[lab]).sum(axis=1)
    pmin = np.zeros(n + 1)
    pmax = np.zeros(n + 1)
    np.minimum.at(pmin, lab, proj)
    np.maximum.at(pmax, lab, proj)
    length = pmax - pmin + sp.mean()
    floor = (sp.min() ** 2) / 12.0  # variance of one voxel's width: keeps single voxels finite
    elong = np.sqrt((w[:, 2] + floor) / (w[:, 1] + floor))

    # nearest reference branch: majority over the region's voxels
    br = branch_of_voxels(tree, coords)
    nb = tree.n_branches + 1
    pair = np.bincount(lab * nb + br, minlength=(n + 1) * nb).reshape(n + 1, nb)
    pair[:, 0] = 0
    nearest = pair.argmax(axis=1)

    # reference centreline voxels inside each region (coords are unique: match by flat index)
    flat = np.ravel_multi_index(tuple(coords.T), full_shape)
    order = np.argsort(flat)
    cl = np.ravel_multi_index(tuple(tree.centreline_zyx.T), full_shape)
    pos = np.minimum(np.searchsorted(flat[order], cl), len(flat) - 1)
    hit = flat[order][pos] == cl
    cl_count = np.bincount(lab[order][pos][hit], minlength=n + 1)

    lo_box = np.full((n + 1, 3), np.iinfo(np.int64).max)
    hi_box = np.full((n + 1, 3), -1)
    for k in range(3):
        np.minimum.at(lo_box[:, k], lab, coords[:, k])
        np.maximum.at(hi_box[:, k], lab, coords[:, k] + 1)

    vv = float(np.prod(sp))
    centroids = c / sp
    world = geometry.index_to_world(centroids)
    # mm thresholds below one voxel's extent would depend on the grid, not the error
    shell_mm = max(shell_mm, float(sp.max()) * 1.001)
    candidate_min_length_mm = max(candidate_min_length_mm, 2.0 * float(sp.max()))
    # each region's voxels as one slice of a label-sorted copy (stable: C order kept)
    by_label = np.argsort(lab, kind="stable")
    starts = np.concatenate([[0], np.cumsum(count[1:])])
    small = max(full_shape) < np.iinfo(np.int16).max
    near = ((x - c[lab]) ** 2).sum(axis=1)
    out = []
    for k in range(1, n + 1):
        members = by_label[starts[k - 1] : starts[k]]
        own = coords[members]
        # shown voxels first: a hidden one's distance counts as larger than any shown one's
        rank = near[members] + np.where(shown[members], 0.0, np.inf)
        pick = int(np.argmin(rank)) if np.isfinite(rank).any() else int(np.argmin(near[members]))
        focus = tuple(int(v) for v in own[pick])
        branch = int(nearest[k]) if pair[k].max() > 0 else None
        gen = tree.branch(branch).generation if branch else None
        if kind == "FP":
            if maxd[k] <= shell_mm:
                cat = "boundary_dilation"
            elif (
                elong[k] >= elongation_min
                and length[k] >= candidate_min_length_mm
                and branch is not None
                # a streak along a bronchus stays close to it over its whole length; a branch grows away
                and (tree.branch(branch).is_terminal or maxd[k] >= protrusion_min * length[k])
            ):
                cat = "candidate_branch"
            else:
                cat = "leakage"
        else:
            cat = "missed_branch" if cl_count[k] >= missed_centreline_min else "boundary_miss"
        out.append(
            ErrorRegion(
                id="",
                kind=kind,
                category=cat,
                voxels=int(count[k]),
                volume_mm3=float(count[k]) * vv,
                centroid_zyx=tuple(float(v) for v in centroids[k]),  # type: ignore[arg-type]
                centroid_mm=tuple(float(v) for v in world[k]),  # type: ignore[arg-type]
                bbox=tuple((int(lo_box[k, a]), int(hi_box[k, a])) for a in range(3)),  # type: ignore[arg-type]
                nearest_branch=branch,
                nearest_generation=gen,
                max_distance_mm=float(maxd[k]),
                length_mm=float(length[k]),
                elongation=float(elong[k]),
                centreline_voxels=int(cl_count[k]),
                coords=own.astype(np.int16 if small else np.int32),
                key=region_key(kind, own, full_shape),
                focus_zyx=focus,  # type: ignore[arg-type]
            )
        )
    return out


def _shells(coords: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Mask voxels with a 26-neighbour outside (inner), and outside voxels 26-adjacent to the mask (outer).

    The nearest mask voxel to any outside point is on the inner shell, and the
    nearest outside voxel to any mask voxel on the outer shell, so distance
    queries need only these thin sets. Coordinates may reach -1 and ``shape``.
    """
    if len(coords) == 0:
        return np.zeros((0, 3), np.int64), np.zeros((0, 3), np.int64)
    padded = np.asarray(shape, dtype=np.int64) + 2
    strides = np.array([padded[1] * padded[2], padded[2], 1], dtype=np.int64)
    flat = (coords.astype(np.int64) + 1) @ strides
    member = np.zeros(int(np.prod(padded)), dtype=bool)
    member[flat] = True
    nb = flat[:, None] + (_OFFSETS26 @ strides)[None, :]
    outside = ~member[nb]
    inner = coords[outside.any(axis=1)].astype(np.int64)
    member[:] = False  # reuse the buffer to mark the outer shell without a sort
    member[nb[outside]] = True
    cand = np.flatnonzero(member)
    outer = np.stack(np.unravel_index(cand, tuple(padded)), axis=1) - 1
    return inner, outer


def _nearest_distance(points: np.ndarray, targets: np.ndarray, sp: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree

    if len(points) == 0:
        return np.zeros(0)
    if len(targets) == 0:
        return np.full(len(points), np.inf)
    d, _ = cKDTree(targets * sp).query(points * sp)
    return np.asarray(d, dtype=float)


def sort_regions(regions: list[ErrorRegion]) -> list[ErrorRegion]:
    """Stable order (FN then FP, larger first, then by position) and ids ``FN-0001``, ``FP-0001``..."""
    ordered = sorted(
        regions,
        key=lambda g: (KIND_ORDER.index(g.kind), -g.voxels, tuple(lo for lo, _ in g.bbox), g.centroid_zyx),
    )
    seen = {k: 0 for k in KIND_ORDER}
    for g in ordered:
        seen[g.kind] += 1
        g.id = f"{g.kind}-{seen[g.kind]:04d}"
    return ordered


def step_region(regions: Sequence[ErrorRegion], current_id: str | None, step: int = 1) -> ErrorRegion | None:
    """The region ``step`` places after (negative: before) ``current_id``, wrapping around; first if None."""
    if not regions:
        return None
    ids = [g.id for g in regions]
    if current_id not in ids:
        return regions[0 if step >= 0 else -1]
    return regions[(ids.index(current_id) + step) % len(regions)]


def category_counts(regions: Sequence[ErrorRegion]) -> dict[str, int]:
    out: dict[str, int] = {f"FP:{c}": 0 for c in FP_CATEGORIES}
    out.update({f"FN:{c}": 0 for c in FN_CATEGORIES})
    for g in regions:
        out[f"{g.kind}:{g.category}"] += 1
    return out
