"""Training-free airway extraction: trachea detection and explosion-controlled region growing.

The classical recipe of the field (Mori et al. 1996; van Rikxoort et al. 2009;
the Pulmonary Toolkit), as measured on the real chest CTs in shared/notes/realct.md:

1. The CT is brought to LPS orientation (a permutation and flips, exact) and
   resampled to about 1 mm isotropic, lightly smoothed. Everything below runs
   on that grid; results are mapped back to the CT's own grid.
2. Trachea: round, enclosed air blobs (< -900 HU) per axial slice, linked into
   vertical tracks; the longest track that is near-vertical, near the body's
   left-right centre and of a trachea's cross-section is the trachea. A CT
   without one (abdomen, empty, cropped below the carina) raises InputError.
3. Growing from the trachea with a threshold raised stepwise; the step at
   which the grown volume jumps (the lung is reached) is undone. Growth never
   goes above the trachea's top, outside the body or along the volume's edge.
4. Optional tube stage: a multi-scale Hessian filter for dark tubes (Frangi);
   only small, elongated candidates that touch the grown tree are added.
5. Partial-volume rim, on the CT's own grid: voxels touching the tree whose HU
   lies between the growing threshold and about half-way from air to wall are
   lumen by the full-width-at-half-maximum rule; on a coarse CT (4 mm) the
   grown core alone is a third of the lumen.

Parameters live in ``resources/presets/region_growing.json`` (see
:func:`load_params`); nothing here imports torch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from core.box import bounding_box
from core.errors import ConfigError, InputError
from core.progress import Cancellable, Progress, raise_if_cancelled
from core.volume import IntensityVolume, LabelVolume, Reorientation, to_canonical

PRESET = ("presets", "region_growing.json")


# -- parameters ----------------------------------------------------------------------


def load_params(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The growing preset (bundled JSON, or ``path``), with ``overrides`` merged one level deep."""
    from core.resources import resource_path

    src = Path(path) if path else resource_path(*PRESET)
    try:
        params: dict[str, Any] = json.loads(Path(src).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"Cannot read the region-growing preset {src}: {exc}",
            "Give a JSON file shaped like resources/presets/region_growing.json.",
        ) from None
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(params.get(key), dict):
            params[key] = {**params[key], **value}
        else:
            params[key] = value
    for section in ("trachea", "growing", "tubes"):
        if not isinstance(params.get(section), dict):
            raise ConfigError(
                f"The region-growing preset {src} has no '{section}' section.",
                "Start from resources/presets/region_growing.json.",
            )
    return params


# -- results -------------------------------------------------------------------------


@dataclass
class Trachea:
    """The detected trachea, on the CT's grid.

    ``mask``: its lumen over the detected track; ``centre_zyx``: (N, 3) index
    points of its centre track from top to bottom; ``top_zyx`` / ``bottom_zyx``:
    the track's ends (the bottom is near the carina); ``length_mm``,
    ``mean_area_mm2``: of the track.
    """

    mask: LabelVolume
    centre_zyx: np.ndarray
    length_mm: float
    mean_area_mm2: float

    @property
    def top_zyx(self) -> np.ndarray:
        return np.asarray(self.centre_zyx[0])

    @property
    def bottom_zyx(self) -> np.ndarray:
        return np.asarray(self.centre_zyx[-1])

    def describe(self) -> str:
        return f"trachea {self.length_mm:.0f} mm long, mean lumen {self.mean_area_mm2:.0f} mm^2"


@dataclass
class GrowingResult:
    mask: LabelVolume
    trachea: Trachea
    threshold_hu: float
    steps: list[tuple[float, float]]  # (threshold HU, grown mL) for every step tried
    grown_ml: float
    tube_ml: float
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    rim_ml: float = 0.0  # partial-volume edge voxels added on the CT's grid

    @property
    def volume_ml(self) -> float:
        return float(self.mask.array.sum()) * self.mask.geometry.voxel_volume_mm3 / 1000.0


# -- the working grid ------------------------------------------------------------------


def _positions(n_in: int, n_out: int) -> np.ndarray:
    """Input coordinates of the output voxel centres when the corner voxels coincide."""
    if n_out == 1 or n_in == 1:
        return np.zeros(n_out)
    return np.arange(n_out) * ((n_in - 1) / (n_out - 1))


def _resize_axis(arr: np.ndarray, axis: int, pos: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``arr`` along ``axis`` at coordinates ``pos``, one slice at a time
    (a full-volume expression would hold three temporaries of the output's size)."""
    n = arr.shape[axis]
    pos = np.clip(pos, 0, n - 1)
    i0 = np.minimum(pos.astype(int), max(n - 2, 0))
    i1 = np.minimum(i0 + 1, n - 1)
    w = (pos - i0).astype(np.float32)
    src = np.moveaxis(arr, axis, 0)
    out = np.empty((len(pos),) + src.shape[1:], np.float32)
    for k in range(len(pos)):
        if w[k] == 0:
            out[k] = src[i0[k]]
        else:
            np.multiply(src[i0[k]], 1 - w[k], out=out[k], casting="unsafe")
            out[k] += w[k] * src[i1[k]]
    return np.moveaxis(out, 0, axis)


def _resize(arr: np.ndarray, positions: list[np.ndarray | None]) -> np.ndarray:
    out = arr
    for axis, pos in enumerate(positions):
        if pos is not None:
            out = _resize_axis(out, axis, pos)
    return np.ascontiguousarray(out, dtype=np.float32)


def _body_by_slice(hu: np.ndarray, threshold: float) -> np.ndarray:
    """Everything but the air connected to the in-plane border, slice by slice.

    Unlike core.preprocess.body_mask (3D), a CT cropped inside the body keeps its
    trachea: in 3D it connects through the bronchi to lungs cut by the crop's side.
    """
    import cc3d

    out = np.ones(hu.shape, bool)
    for z in range(hu.shape[0]):
        air = hu[z] < threshold
        if not air.any():
            continue
        lab = cc3d.connected_components(air, connectivity=4)
        border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        border = border[border != 0]
        if len(border):
            out[z] = ~np.isin(lab, border)
    return out


class _Work:
    """The CT in LPS orientation at about ``work_spacing_mm``, smoothed, with its body mask.

    Array axes (z, y, x): z grows towards the head, y towards the back, x towards the left.
    An axis whose spacing is already within ``keep_spacing_tolerance`` of the target is not
    resampled (no blur, no time).
    """

    def __init__(self, ct: IntensityVolume, params: dict[str, Any]):
        canon, reo = to_canonical(ct)
        self.ct = ct
        self.reo: Reorientation = reo
        self.native_shape = tuple(int(s) for s in canon.shape)
        sp = np.asarray(canon.geometry.spacing_zyx, float)
        target = float(params.get("work_spacing_mm", 1.0))
        tol = float(params.get("keep_spacing_tolerance", 0.25))
        n = np.asarray(self.native_shape)
        out = np.maximum(np.rint((n - 1) * sp / target).astype(int) + 1, 1)
        keep = (np.abs(sp / target - 1) <= tol) | (n == 1)
        out = np.where(keep, n, out)
        self.shape = tuple(int(v) for v in out)
        self.spacing = np.where(out > 1, sp * np.maximum(n - 1, 1) / np.maximum(out - 1, 1), sp)
        arr = canon.array.astype(np.float32)
        sigma = float(params.get("smoothing_mm", 0.0)) / sp
        if np.any(sigma > 0):
            # smoothing on the native grid is cheaper and the same up to the interpolation
            ndimage.gaussian_filter(arr, sigma, output=arr, truncate=3.0)
        self.hu = _resize(arr, [None if o == i else _positions(i, o) for i, o in zip(self.native_shape, self.shape)])
        del arr
        # the body's outline at 2 voxels is plenty for a zone the airways never approach,
        # and labelling the outside air at full size is the slowest step of the whole method;
        # but not much coarser than 2 mm: picking every other 1.5 mm voxel opens the trachea's wall,
        # and in a crop whose lungs touch the border the lumen then counts as outside air
        step = 2 if min(self.shape) >= 32 and 2 * float(self.spacing.max()) <= 2.5 else 1
        coarse = _body_by_slice(self.hu[::step, ::step, ::step], float(params.get("body_threshold_hu", -500)))
        self.body = np.ascontiguousarray(
            coarse[np.ix_(*[np.minimum(np.arange(n) // step, c - 1) for n, c in zip(self.shape, coarse.shape)])]
        )

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    def _scale(self) -> np.ndarray:
        """Working-grid index per native index, per axis."""
        return np.asarray([(o - 1) / (i - 1) if i > 1 else 0.0 for i, o in zip(self.native_shape, self.shape)])

    def to_native(self, mask: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """A working-grid mask on the CT's own grid (linear, thresholded), original orientation."""
        canon = np.zeros(self.native_shape, bool)
        idx = np.argwhere(mask)
        if len(idx):
            lo = np.maximum(idx.min(0) - 2, 0)
            hi = np.minimum(idx.max(0) + 3, np.asarray(mask.shape))
            inv = 1.0 / np.where(self._scale() > 0, self._scale(), 1.0)
            nlo = np.floor(lo * inv).astype(int)
            nhi = np.minimum(np.ceil((hi - 1) * inv).astype(int) + 1, np.asarray(self.native_shape))
            sub = mask[tuple(slice(a, b) for a, b in zip(lo, hi))].astype(np.float32)
            for ax in range(3):
                # a coarser CT voxel takes the share of its footprint that the mask covers,
                # not the value at its centre: thin bronchi would fall between centres
                size = int(round(1.0 / self._scale()[ax])) if self._scale()[ax] > 0 else 1
                if size >= 2:
                    sub = ndimage.uniform_filter1d(sub, size, axis=ax, mode="constant")
            positions = []
            for ax in range(3):
                if self.shape[ax] == self.native_shape[ax]:
                    positions.append(np.arange(nlo[ax], nhi[ax]) - lo[ax])
                else:
                    positions.append(np.arange(nlo[ax], nhi[ax]) * self._scale()[ax] - lo[ax])
            vals = _resize(sub, positions)
            canon[tuple(slice(a, b) for a, b in zip(nlo, nhi))] = vals >= threshold
        return np.ascontiguousarray(self.reo.invert(canon))

    def body_native(self) -> np.ndarray:
        """The body mask on the CT's own grid (nearest neighbour), original orientation."""
        idx = [
            np.minimum(np.rint(np.arange(n) * s).astype(int), o - 1)
            for n, s, o in zip(self.native_shape, self._scale(), self.shape)
        ]
        return np.ascontiguousarray(self.reo.invert(self.body[np.ix_(*idx)]))

    def point_to_native(self, zyx: np.ndarray) -> np.ndarray:
        """Working-grid index points (N, 3) -> index points of the CT's own grid."""
        inv = 1.0 / np.where(self._scale() > 0, self._scale(), 1.0)
        out = np.asarray(zyx, float) * inv
        for ax, flip in enumerate(self.reo.flips):
            if flip:
                out[:, ax] = self.native_shape[ax] - 1 - out[:, ax]
        return out[:, np.argsort(self.reo.axes)]


CANCELLED = "Airway extraction cancelled."


def _no_trachea(ct: IntensityVolume, why: str) -> InputError:
    name = ct.name or "this CT"
    return InputError(
        f"no trachea found in {name} ({why})",
        "Region growing needs a chest CT that shows the trachea (lung apices to the carina at least); "
        "use a model (--method model --model CKPT) for other scans.",
    )


# -- trachea -------------------------------------------------------------------------


def _detect_trachea(
    work: _Work, ct: IntensityVolume, p: dict[str, Any]
) -> tuple[np.ndarray, list[tuple[int, int]], dict[str, Any]]:
    """Working-grid trachea mask, its track ``[(z, label)]`` from top to bottom, and figures."""
    sz, sy, sx = work.spacing
    if min(work.shape[0] * sz, work.shape[1] * sy, work.shape[2] * sx) < p["min_length_mm"]:
        raise _no_trachea(ct, "the volume is too small to hold one")
    air = (work.hu < p["air_hu"]) & work.body
    lung_ml = float(np.count_nonzero((work.hu < -400) & work.body)) * work.voxel_ml
    if lung_ml < p["min_lung_ml"]:
        raise _no_trachea(ct, f"only {lung_ml:.0f} mL of air inside the body")
    struct = np.zeros((3, 3, 3), bool)
    struct[1] = True
    labels, n = ndimage.label(air, structure=struct)
    del air
    if n == 0:
        raise _no_trachea(ct, "no enclosed air")
    pix = sy * sx
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    ok = (counts * pix >= p["min_area_mm2"]) & (counts * pix <= p["max_area_mm2"])
    ok[0] = False
    objects = ndimage.find_objects(labels)
    # body centre in x per slice, for the left-right position of each blob
    body_x = np.full(work.shape[0], np.nan)
    xs = np.arange(work.shape[2], dtype=float)
    cols = work.body.sum(axis=1)  # (z, x)
    tot = cols.sum(axis=1)
    body_x[tot > 0] = (cols[tot > 0] @ xs) / tot[tot > 0]
    blobs: dict[int, list[tuple[int, float, float, float]]] = {}
    for lab in np.flatnonzero(ok).tolist():
        sl = objects[lab - 1]
        if sl is None:
            continue
        h = (sl[1].stop - sl[1].start) * sy
        w = (sl[2].stop - sl[2].start) * sx
        area = counts[lab] * pix
        if area / (h * w) < p["min_fill"] or max(h, w) / max(min(h, w), 1e-6) > p["max_aspect"]:
            continue
        sub = labels[sl] == lab
        yy, xx = np.nonzero(sub[0])
        cy = float(yy.mean() + sl[1].start)
        cx = float(xx.mean() + sl[2].start)
        z = sl[0].start
        if not np.isfinite(body_x[z]) or abs(cx - body_x[z]) * sx > p["max_offcentre_mm"]:
            continue
        blobs.setdefault(z, []).append((int(lab), cy, cx, area))
    # link from the top down
    tracks: list[list[tuple[int, int, float, float, float]]] = []
    max_gap = max(int(round(p["max_gap_mm"] / sz)), 1)
    for z in sorted(blobs, reverse=True):
        taken: set[int] = set()
        for lab, cy, cx, area in sorted(blobs[z], key=lambda b: -b[3]):
            best, best_d = None, p["link_mm"]
            for ti, tr in enumerate(tracks):
                lz, _, ly, lx, _ = tr[-1]
                if ti in taken or not (0 < lz - z <= max_gap):
                    continue
                d = float(np.hypot((ly - cy) * sy, (lx - cx) * sx))
                if d < best_d:
                    best, best_d = ti, d
            if best is None:
                tracks.append([(z, lab, cy, cx, area)])
                taken.add(len(tracks) - 1)
            else:
                tracks[best].append((z, lab, cy, cx, area))
                taken.add(best)
    good = []
    for tr in tracks:
        z = np.asarray([t[0] for t in tr], float)
        length = (z.max() - z.min()) * sz + sz
        if length < p["min_length_mm"] or len(tr) < 3:
            continue
        x = np.asarray([t[3] for t in tr]) * sx
        slope = abs(np.polyfit(z * sz, x, 1)[0])
        if slope > p["max_lateral_slope"]:
            continue
        good.append((length, tr))
    if not good:
        raise _no_trachea(ct, "no round, enclosed, vertical air tube near the body's centre")
    length, track = max(good, key=lambda g: g[0])
    track = _extend_up(track, labels, counts, pix, p, max_gap)
    length = (track[0][0] - track[-1][0]) * sz + sz
    mask = np.zeros(work.shape, bool)
    for z, lab, *_ in track:
        mask[z] |= labels[z] == lab
    info = {"length_mm": float(length), "mean_area_mm2": float(np.mean([t[4] for t in track]))}
    return mask, [(t[0], t[1]) for t in track], {**info, "centres": np.asarray([(t[0], t[2], t[3]) for t in track])}


def _extend_up(
    track: list[tuple[int, int, float, float, float]],
    labels: np.ndarray,
    counts: np.ndarray,
    pix: float,
    p: dict[str, Any],
    max_gap: int,
) -> list[tuple[int, int, float, float, float]]:
    """Follow the trachea's lumen upwards from the track's top, blob by overlapping blob.

    The detector wants round blobs of a trachea's size; on a coarse CT (4 mm) the part of the
    lumen below ``air_hu`` narrows under partial volume and the track breaks below the real top,
    and growth is never allowed above the top. Here a blob only has to overlap the one below
    it, stay under the trachea's largest cross-section and keep ``extend_min_area_mm2``.
    """
    track = list(track)
    z, lab = track[0][0], track[0][1]
    foot = labels[z] == lab
    gap = 0
    while z + 1 + gap < labels.shape[0]:
        zz = z + 1 + gap
        hit = labels[zz][foot]
        hit = hit[hit != 0]
        best = None
        if len(hit):
            ids, n = np.unique(hit, return_counts=True)
            for i in ids[np.argsort(-n)]:
                area = counts[i] * pix
                if p.get("extend_min_area_mm2", p["min_area_mm2"]) <= area <= p["max_area_mm2"]:
                    best = int(i)
                    break
        if best is None:
            gap += 1
            if gap > max_gap:
                break
            continue
        foot = labels[zz] == best
        yy, xx = np.nonzero(foot)
        track.insert(0, (zz, best, float(yy.mean()), float(xx.mean()), float(counts[best] * pix)))
        z, gap = zz, 0
    return track


def _trachea_result(work: _Work, wmask: np.ndarray, info: dict[str, Any], threshold: float) -> Trachea:
    native = work.to_native(wmask, threshold)
    if not native.any():  # a very thin trachea on a coarse grid: keep its nearest voxels
        native = work.to_native(wmask, 0.01)
    name = work.ct.name or "ct"
    return Trachea(
        LabelVolume(native, work.ct.geometry, name=f"{name}_trachea"),
        work.point_to_native(info["centres"]),
        info["length_mm"],
        info["mean_area_mm2"],
    )


def find_trachea(
    ct: IntensityVolume,
    params: dict[str, Any] | None = None,
    progress: Progress | None = None,
    cancel: Cancellable | None = None,
) -> Trachea:
    """Detect the trachea of ``ct`` (any orientation and spacing); InputError "no trachea found in ..." if none."""
    p = params or load_params()
    _check_input(ct)
    report = progress or (lambda *_: None)
    report(0, 2, "resampling")
    work = _Work(ct, p)
    raise_if_cancelled(cancel, CANCELLED)
    report(1, 2, "finding the trachea")
    wmask, _, info = _detect_trachea(work, ct, p["trachea"])
    report(2, 2, "trachea found")
    return _trachea_result(work, wmask, info, float(p.get("map_back_threshold", 0.5)))


def _check_input(ct: Any) -> None:
    if not isinstance(ct, IntensityVolume):
        raise InputError("Region growing needs a CT volume (IntensityVolume).", "Read the CT with core.io.read_ct.")
    if ct.array.size == 0:
        raise _no_trachea(ct, "the volume is empty")


# -- growing --------------------------------------------------------------------------


def _box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    box = bounding_box(mask)
    if box is None:  # both callers pass a mask that holds the seed or was checked non-empty
        raise ValueError("an empty mask has no box")
    return box.grown(margin, mask.shape).slices


def _grow(
    work: _Work,
    seed: np.ndarray,
    g: dict[str, Any],
    report: Callable[[str], None],
    cancel: Cancellable | None,
    say: Callable[[str], None],
) -> tuple[np.ndarray, float, list[tuple[float, float]]]:
    """Grow from ``seed`` with a rising threshold; returns the last region before the explosion.

    Thresholds rise by ``coarse_step_hu``; after an explosion the interval is retried in
    ``step_hu`` steps from the last good threshold, so few labellings are needed.
    """
    import cc3d

    top = int(np.flatnonzero(seed.any(axis=(1, 2))).max())
    zone = work.body.copy()
    zone[top + 1 :] = False
    m = [max(int(round(g["edge_margin_mm"] / s)), 1) for s in work.spacing]
    zone[: m[0]] = False
    zone[:, : m[1]] = False
    zone[:, -m[1] :] = False
    zone[:, :, : m[2]] = False
    zone[:, :, -m[2] :] = False
    zone |= seed
    # everything the growing may reach lies in the air of the lungs and mediastinum: box it once
    box = _box(((work.hu < g["stop_hu"]) & zone) | seed, 2)
    hu = work.hu[box]
    zone_b = zone[box]
    del zone
    seed_b = seed[box]
    steps: list[tuple[float, float]] = []

    def region_at(t: float) -> tuple[np.ndarray, float]:
        raise_if_cancelled(cancel, CANCELLED)
        cand = hu < t
        cand &= zone_b
        cand |= seed_b
        lab = cc3d.connected_components(cand, connectivity=26)
        del cand
        ids = np.unique(lab[seed_b])
        ids = ids[ids != 0]
        region = lab == ids[0] if len(ids) == 1 else np.isin(lab, ids)
        ml = float(np.count_nonzero(region)) * work.voxel_ml
        steps.append((float(t), round(ml, 3)))
        report(f"growing at {t:.0f} HU: {ml:.1f} mL")
        return region, ml

    def explodes(ml: float, prev: float) -> bool:
        return bool(ml > g["max_ml"] or (ml > g["explosion_ratio"] * prev and ml - prev > g["explosion_min_ml"]))

    accepted, prev_ml = region_at(float(g["start_hu"]))
    accepted_t = float(g["start_hu"])
    fine, coarse = float(g["step_hu"]), float(g.get("coarse_step_hu", g["step_hu"]))
    t = accepted_t
    while t + fine <= float(g["stop_hu"]) + 1e-6:
        step = coarse if coarse > fine else fine
        nxt = min(t + step, float(g["stop_hu"]))
        region, ml = region_at(nxt)
        if not explodes(ml, prev_ml):
            accepted, accepted_t, prev_ml, t = region, nxt, ml, nxt
            continue
        if step == fine or nxt - t <= fine:
            say(f"region growing: explosion at {nxt:.0f} HU ({prev_ml:.1f} -> {ml:.1f} mL); kept {accepted_t:.0f} HU")
            break
        # a coarse step exploded: walk the same interval finely
        stopped = False
        for tf in np.arange(t + fine, nxt - 1e-6, fine):
            region, ml = region_at(float(tf))
            if explodes(ml, prev_ml):
                say(
                    f"region growing: explosion at {tf:.0f} HU ({prev_ml:.1f} -> {ml:.1f} mL); kept {accepted_t:.0f} HU"
                )
                stopped = True
                break
            accepted, accepted_t, prev_ml = region, float(tf), ml
        if not stopped:
            say(f"region growing: explosion at {nxt:.0f} HU ({prev_ml:.1f} -> {ml:.1f} mL); kept {accepted_t:.0f} HU")
        break
    out = np.zeros(work.shape, bool)
    out[box] = accepted
    return out, accepted_t, steps


def _elongation(coords: np.ndarray) -> float:
    if len(coords) < 3:
        return 0.0
    c = coords - coords.mean(0)
    ev = np.sort(np.linalg.eigvalsh(c.T @ c / len(c)))[::-1]
    return float(np.sqrt(ev[0] / max(ev[1], 1e-6)))


def _dark_tubeness(
    smooth: np.ndarray, points: np.ndarray, spacing: np.ndarray, sigma_mm: float, alpha: float, beta: float, c_hu: float
) -> np.ndarray:
    """Frangi's vesselness for dark tubes at the flat indices ``points`` of the smoothed box.

    Second derivatives by central differences at those points only (the image is
    already Gaussian-smoothed at ``sigma_mm``), scale-normalised by sigma^2, so the
    Hessian costs nothing where there is no candidate.
    """
    f = smooth.ravel()
    nz, ny, nx = smooth.shape
    st = (ny * nx, nx, 1)
    h = np.empty((len(points), 3, 3), np.float32)
    c = f[points]
    for i in range(3):
        h[:, i, i] = (f[points + st[i]] - 2 * c + f[points - st[i]]) / spacing[i] ** 2
        for j in range(i + 1, 3):
            v = (
                f[points + st[i] + st[j]]
                - f[points + st[i] - st[j]]
                - f[points - st[i] + st[j]]
                + f[points - st[i] - st[j]]
            ) / (4 * spacing[i] * spacing[j])
            h[:, i, j] = v
            h[:, j, i] = v
    h *= sigma_mm**2
    ev = np.linalg.eigvalsh(h)
    del h
    order = np.argsort(np.abs(ev), axis=1)
    ev = np.take_along_axis(ev, order, axis=1)
    l1, l2, l3 = np.abs(ev[:, 0]), ev[:, 1], ev[:, 2]
    ra = np.abs(l2) / np.maximum(np.abs(l3), 1e-6)
    rb = l1 / np.sqrt(np.maximum(np.abs(l2 * l3), 1e-12))
    s2 = (ev**2).sum(1)
    v = (1 - np.exp(-(ra**2) / (2 * alpha**2))) * np.exp(-(rb**2) / (2 * beta**2)) * (1 - np.exp(-s2 / (2 * c_hu**2)))
    v[(l2 <= 0) | (l3 <= 0)] = 0  # bright tubes (vessels) and sheets
    return np.asarray(v, np.float32)


def _tubes(work: _Work, tree: np.ndarray, t: dict[str, Any], cancel: Cancellable | None) -> np.ndarray:
    """Small elongated dark tubes that touch ``tree`` (multi-scale Hessian); only the new voxels."""
    import cc3d
    import edt

    reach = [max(int(round(t["reach_mm"] / s)), 2) for s in work.spacing]
    idx = np.argwhere(tree)
    lo = np.maximum(idx.min(0) - reach, 0)
    hi = np.minimum(idx.max(0) + 1 + np.asarray(reach), np.asarray(work.shape))
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    top = int(np.flatnonzero(tree.any(axis=(1, 2))).max())
    sub = work.hu[box]
    tree_b = tree[box]
    dist = edt.edt(~tree_b, anisotropy=tuple(float(s) for s in work.spacing), parallel=1)
    cand = (dist <= t["shell_mm"]) & (sub < t["max_hu"]) & work.body[box] & ~tree_b
    del dist
    cand[max(top + 1 - int(lo[0]), 0) :] = False
    # central differences need a neighbour on each side
    cand[[0, -1]] = False
    cand[:, [0, -1]] = False
    cand[:, :, [0, -1]] = False
    points = np.flatnonzero(cand)
    best = np.zeros(len(points), np.float32)
    for s in t["sigmas_mm"]:
        raise_if_cancelled(cancel, CANCELLED)
        smooth = ndimage.gaussian_filter(sub, float(s) / work.spacing, output=np.float32, truncate=3.0)
        np.maximum(
            best,
            _dark_tubeness(smooth, points, work.spacing, float(s), t["alpha"], t["beta"], t["structureness_hu"]),
            out=best,
        )
        del smooth
    keep = np.zeros(sub.shape, bool)
    keep.ravel()[points[best > t["min_vesselness"]]] = True
    del cand, best, points
    lab = cc3d.connected_components(keep, connectivity=26)
    touch = ndimage.binary_dilation(tree_b, np.ones((3, 3, 3), bool)) & (lab > 0)
    ids = np.unique(lab[touch])
    ids = ids[ids != 0]
    added = np.zeros(tree_b.shape, bool)
    if len(ids):
        stats = cc3d.statistics(lab)
        for i in ids:
            n = int(stats["voxel_counts"][i])
            if n < t["min_candidate_voxels"] or n * work.voxel_ml > t["max_candidate_ml"]:
                continue
            sl = stats["bounding_boxes"][i]
            coords = np.argwhere(lab[sl] == i).astype(float) * work.spacing
            if _elongation(coords) < t["min_elongation"]:
                continue
            added[sl] |= lab[sl] == i
    out = np.zeros(work.shape, bool)
    out[box] = added
    return out


def _rim(work: _Work, native: np.ndarray, body: np.ndarray, low_hu: float, high_hu: float) -> np.ndarray:
    """Native voxels touching the mask whose HU lies between the growing threshold and ``high_hu``.

    The grown lumen stops at the threshold that kept it out of the lung, well inside the
    lumen's edge on a coarse CT; the edge voxels are partial volumes of air and wall, and the
    full-width-at-half-maximum rule of airway measurement counts them as lumen up to about
    halfway between air and wall. Voxels darker than the threshold next to the mask were not
    reached by the growing, i.e. lie behind a wall (lung), and are left out; so is anything
    above the mask's top (towards the larynx) and outside the body.
    """
    canon = work.reo.apply(native)
    if not canon.any():
        return np.zeros_like(native)
    box = _box(canon, 1)
    sub = canon[box]
    hu = work.reo.apply(work.ct.array)[box]
    ring = ndimage.binary_dilation(sub, np.ones((3, 3, 3), bool)) & ~sub
    ring &= (hu >= low_hu) & (hu < high_hu)
    top = int(np.flatnonzero(sub.any(axis=(1, 2))).max())
    ring[top + 1 :] = False
    out = np.zeros(canon.shape, bool)
    out[box] = ring
    out = np.ascontiguousarray(work.reo.invert(out))
    out &= body
    return out


def grow_airway(
    ct: IntensityVolume,
    params: dict[str, Any] | None = None,
    progress: Progress | None = None,
    cancel: Cancellable | None = None,
    tubes: bool | None = None,
    say: Callable[[str], None] | None = None,
) -> GrowingResult:
    """Airway mask of ``ct`` without a model (module doc); on the CT's grid, one 26-connected component.

    ``progress(done, total, message)`` (core.progress); ``cancel`` set -> :class:`core.errors.Cancelled`;
    ``tubes`` overrides the preset's tube stage. InputError when no trachea is found.
    """
    import cc3d

    p = params or load_params()
    _check_input(ct)
    messages: list[str] = []

    def note(text: str) -> None:
        messages.append(text)
        if say:
            say(text)

    g, tp = p["growing"], p["tubes"]
    n_steps = len(np.arange(float(g["start_hu"]), float(g["stop_hu"]) + 1e-6, float(g["step_hu"])))
    use_tubes = tp.get("enabled", True) if tubes is None else bool(tubes)
    total = 3 + n_steps + (1 if use_tubes else 0) + 1
    done = 0

    def report(msg: str) -> None:
        nonlocal done
        done = min(done + 1, total - 1)
        if progress:
            progress(done, total, msg)

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    if progress:
        progress(0, total, "resampling to the working grid")
    work = _Work(ct, p)
    timings["prepare"] = time.perf_counter() - t0
    report("finding the trachea")
    raise_if_cancelled(cancel, CANCELLED)
    tmask, _, info = _detect_trachea(work, ct, p["trachea"])
    timings["trachea"] = time.perf_counter() - t0 - sum(timings.values())
    report("trachea found")
    grown, thr, steps = _grow(work, tmask, g, report, cancel, note)
    # the growing loop may stop early: jump the bar to the tube stage
    done = 2 + n_steps
    timings["growing"] = time.perf_counter() - t0 - sum(timings.values())
    grown_ml = float(grown.sum()) * work.voxel_ml
    tree = grown
    tube_ml = 0.0
    if use_tubes:
        report("tube filter (Hessian)")
        extra = _tubes(work, grown, tp, cancel)
        tube_ml = float(extra.sum()) * work.voxel_ml
        tree = grown | extra
        timings["tubes"] = time.perf_counter() - t0 - sum(timings.values())
    raise_if_cancelled(cancel, CANCELLED)
    report("mapping back to the CT grid")
    thr_back = float(p.get("map_back_threshold", 0.5))
    native = work.to_native(tree, thr_back)
    body = work.body_native()
    native &= body
    if native.any():
        native = cc3d.largest_k(native, k=1, connectivity=26) > 0
    rim_ml = 0.0
    rim = p.get("rim", {})
    if rim.get("enabled", False):
        ring = _rim(work, native, body, thr, float(rim["max_hu"]))
        rim_ml = float(ring.sum()) * ct.geometry.voxel_volume_mm3 / 1000.0
        native |= ring
    trachea = _trachea_result(work, tmask, info, thr_back)
    timings["map_back"] = time.perf_counter() - t0 - sum(timings.values())
    if progress:
        progress(total, total, "done")
    name = ct.name or "ct"
    note(
        f"region growing: {trachea.describe()}; threshold {thr:.0f} HU, {grown_ml:.1f} mL grown"
        + (f", {tube_ml:.1f} mL from the tube filter" if use_tubes else "")
        + (f", {rim_ml:.1f} mL of partial-volume rim" if rim_ml else "")
    )
    return GrowingResult(
        LabelVolume(native, ct.geometry, name=f"{name}_airway"),
        trachea,
        thr,
        steps,
        grown_ml,
        tube_ml,
        time.perf_counter() - t0,
        timings,
        messages,
        rim_ml,
    )
