"""Airway phantom: exact label, branch table, CT intensities, determinism, CLI, phantom_from_mask."""

from __future__ import annotations

import csv
import io
import json
import math
import threading
from pathlib import Path

import cc3d
import numpy as np
import pytest
from scipy import ndimage

from core.errors import Cancelled, ConfigError, InputError
from core.phantom import Phantom, auto_spacing, make_phantom, phantom_from_mask
from core.phantom.tree import Chest
from core.volume import LabelVolume

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def default() -> Phantom:
    return make_phantom()


@pytest.fixture(scope="module")
def fine() -> Phantom:
    # 80 x 80 x 80 at 2 x 2 x 2.5 mm: a view of the central chest, six generations, ~110 branches.
    return make_phantom((80, 80, 80), spacing=(2.0, 2.0, 2.5), seed=3, omit_distal=4)


@pytest.fixture(scope="module")
def clean() -> Phantom:
    # no noise, no blur: intensities as painted
    return make_phantom((80, 80, 80), spacing=(2.0, 2.0, 2.5), seed=4, noise=0.0, blur=0.0)


def _capsule_voxels(p: Phantom, i: int) -> np.ndarray:
    """Flat indices of the voxels whose centres lie in branch ``i``'s tube, by brute force.

    World positions come from ``Geometry.index_to_world`` (not the phantom's own
    grid code); only a generous index box around the branch is searched.
    """
    b = p.branches[i]
    geo = p.ct.geometry
    ends = geo.world_to_index(np.array([b.start, b.end]))
    pad = b.radius_mm / np.asarray(geo.spacing_zyx) + 2
    lo = np.maximum(np.floor(ends.min(axis=0) - pad), 0).astype(int)
    hi = np.minimum(np.ceil(ends.max(axis=0) + pad) + 1, p.ct.shape).astype(int)
    if np.any(hi <= lo):
        return np.zeros(0, dtype=np.int64)
    idx = np.stack(np.meshgrid(*[np.arange(a, c) for a, c in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
    world = geo.index_to_world(idx)
    a, e = np.asarray(b.start), np.asarray(b.end)
    d = e - a
    t = np.clip((world - a) @ d / (d @ d), 0.0, 1.0)
    inside = np.linalg.norm(world - a - t[:, None] * d, axis=1) <= b.radius_mm
    return np.ravel_multi_index(tuple(idx[inside].T), p.ct.shape)


_CACHE: dict[int, list[np.ndarray]] = {}


def _capsule_union(p: Phantom, ids: list[int]) -> np.ndarray:
    per = _CACHE.setdefault(id(p), [_capsule_voxels(p, b.id) for b in p.branches])
    out = np.zeros(p.ct.array.size, dtype=bool)
    for i in ids:
        out[per[i]] = True
    return out.reshape(p.ct.shape)


# -- shapes, types, determinism ---------------------------------------------------


def test_default_is_64_cube_with_anisotropic_spacing_fitting_the_chest(default):
    p = default
    assert p.ct.shape == p.label.shape == p.centreline.shape == (64, 64, 64)
    assert p.ct.array.dtype == np.int16 and p.label.array.dtype == bool and p.centreline.array.dtype == bool
    sx, sy, sz = p.ct.geometry.spacing
    assert sx == sy and sz / sx == pytest.approx(1.0 / 0.7, rel=1e-3)
    big = auto_spacing((400, 512, 512))
    assert big == pytest.approx((0.7, 0.7, 1.0), rel=0.03)
    fov = [n * s for n, s in zip((512, 512, 400), big)]
    assert all(f >= e - 0.1 for f, e in zip(fov, Chest.nominal_extent()))  # the chest fits...
    assert min(f / e for f, e in zip(fov, Chest.nominal_extent())) < 1.001  # ...tightly
    # the whole body fits: the outer rows and columns of every slice are air
    border = np.concatenate(
        [
            p.ct.array[:, 0, :].ravel(),
            p.ct.array[:, -1, :].ravel(),
            p.ct.array[:, :, 0].ravel(),
            p.ct.array[:, :, -1].ravel(),
        ]
    )
    assert np.median(border) < -950
    assert p.label.voxel_count() > 0 and len(p.branches) >= 3


def test_same_seed_same_arrays_other_seed_differs():
    a = make_phantom(seed=5)
    b = make_phantom(seed=5)
    c = make_phantom(seed=6)
    for name in ("ct", "label", "centreline"):
        assert np.array_equal(getattr(a, name).array, getattr(b, name).array)
    assert a.to_table() == b.to_table()
    assert not np.array_equal(a.ct.array, c.ct.array)
    assert a.to_table() != c.to_table()


@pytest.mark.parametrize(
    "shape, spacing, seed",
    [(64, None, 0), (64, None, 1), (96, None, 2), ((48, 64, 56), (1.2, 1.2, 1.5), 3), (80, (2.0, 2.0, 2.5), 5)],
)
def test_label_is_one_26_connected_piece(shape, spacing, seed):
    p = make_phantom(shape, spacing=spacing, seed=seed, omit_distal=2 if shape == 80 else 0)
    assert p.label.voxel_count() > 0
    for m in (p.label.array, p.full_label.array, p.centreline.array):
        _, n = cc3d.connected_components(m, connectivity=26, return_N=True)
        assert n == 1


# -- the label is exactly the lumen ------------------------------------------------


def test_label_equals_union_of_lumen_tubes_minus_omitted(fine):
    p = fine
    assert len(p.omitted) == 4
    kept = [b.id for b in p.branches if b.id not in p.omitted]
    full = _capsule_union(p, [b.id for b in p.branches])
    assert np.array_equal(p.full_label.array, full)
    assert np.array_equal(p.label.array, _capsule_union(p, kept))


def test_omit_distal_removes_exactly_the_voxels_only_omitted_branches_cover(fine):
    p = fine
    others = _capsule_union(p, [b.id for b in p.branches if b.id not in p.omitted])
    only_omitted = _capsule_union(p, p.omitted) & ~others
    assert only_omitted.sum() > 0
    assert np.array_equal(p.full_label.array & ~p.label.array, only_omitted)
    children = {b.parent for b in p.branches}
    for i in p.omitted:  # distal: terminal, below the lobar bronchi
        assert i not in children and p.branches[i].generation >= 2
    # omitted branches are still in the CT: their exclusive voxels are air-dark
    assert np.mean(p.ct.array[only_omitted]) < -600


def test_centreline_lies_inside_the_full_tree_and_follows_each_branch(fine):
    p = fine
    cl = p.centreline.array
    assert cl.sum() > 0
    assert not np.any(cl & ~p.full_label.array)
    kept = _capsule_union(p, [b.id for b in p.branches if b.id not in p.omitted])
    assert np.array_equal(cl & kept, cl & p.label.array)  # where the label has it, the centreline is in the label
    # one voxel thin: no 2x2x2 block of centreline voxels (a straight digital line never fills one)
    blocks = cl[:-1, :-1, :-1] & cl[1:, :-1, :-1] & cl[:-1, 1:, :-1] & cl[:-1, :-1, 1:]
    assert not blocks.any()
    # every branch has centreline voxels near its axis midpoint (inside the grid)
    geo = p.ct.geometry
    for b in p.branches:
        k = np.rint(geo.world_to_index(b.midpoint)).astype(int)
        if np.all(k >= 1) and np.all(k < np.asarray(cl.shape) - 1):
            assert cl[k[0] - 1 : k[0] + 2, k[1] - 1 : k[1] + 2, k[2] - 1 : k[2] + 2].any()


# -- branch table --------------------------------------------------------------------


def test_branch_table_is_consistent_with_the_label(fine):
    p = fine
    geo = p.ct.geometry
    by_id = {b.id: b for b in p.branches}
    assert [b.id for b in p.branches] == list(range(len(p.branches)))
    assert p.branches[0].parent == -1 and p.branches[0].generation == 0
    assert sum(b.parent == -1 for b in p.branches) == 1
    assert max(b.generation for b in p.branches) >= 6
    checked = 0
    for b in p.branches[1:]:
        parent = by_id[b.parent]
        assert parent.id < b.id
        assert b.generation == parent.generation + 1
        assert b.radius_mm < parent.radius_mm
        assert np.allclose(b.start, parent.end)
        assert b.length_mm == pytest.approx(math.dist(b.start, b.end))
    for b in p.branches:
        k = np.rint(geo.world_to_index(b.midpoint)).astype(int)
        if b.id not in p.omitted and np.all(k >= 0) and np.all(k < np.asarray(p.label.shape)):
            assert p.label.array[tuple(k)], f"branch {b.id} midpoint not labelled"
            checked += 1
    assert checked >= 0.8 * (len(p.branches) - len(p.omitted))
    # below the named anatomy (where trifurcations and single stems are the textbook's) the tree bifurcates
    grown = [b for b in p.branches if not b.name]
    assert len(grown) > 30
    # (some lose the thinner child of an uneven split to the grid's minimum radius, 1.6 mm here: segmental
    # bronchi are only ~2-3 mm in radius; 89-100 % bifurcate or end over seeds 0-7 of this grid)
    assert sum(len([c for c in p.branches if c.parent == b.id]) in (0, 2) for b in grown) >= 0.85 * len(grown)


def test_anatomy_numbers():
    p = make_phantom((160, 160, 160), spacing=(2.0, 2.0, 2.5), seed=7, generations=9, vessels=False, noise=0.0)
    t = p.branches[0]
    assert 15.0 <= t.diameter_mm <= 18.0
    gens = np.array([b.generation for b in p.branches])
    radii = np.array([b.radius_mm for b in p.branches])
    # diameters shrink ~0.79 per generation (Weibel/Horsfield), Murray-consistent
    ratios = [b.radius_mm / p.branches[b.parent].radius_mm for b in p.branches[3:]]
    assert 0.74 <= np.mean(ratios) <= 0.84
    assert np.mean(radii[gens == 4]) < np.mean(radii[gens == 2]) < np.mean(radii[gens == 1])

    # angles to the parent axis: mostly 20..70 deg, typically 30..45, below the named anatomy; the textbook's
    # named branches take off at up to ~100 deg (the RUL from the RMB, RB6 and LB6 backwards from the lower lobes)
    def angle(b):
        return math.degrees(math.acos(np.clip(np.dot(b.direction, p.branches[b.parent].direction), -1, 1)))

    ang = [angle(b) for b in p.branches[3:] if not b.name]
    assert 30.0 <= np.median(ang) <= 50.0 and max(ang) <= 70.5
    assert max(angle(b) for b in p.branches[3:] if b.name) <= 125.0
    # lengths ~3 x diameter; walls 0.15-0.2 x diameter, at least 0.5 mm
    ld = [b.length_mm / b.diameter_mm for b in p.branches[3:]]
    assert 2.4 <= np.median(ld) <= 4.0
    for b in p.branches:
        assert b.wall_mm == pytest.approx(max(0.5, 0.17 * b.diameter_mm))
    assert min(b.radius_mm for b in p.branches) >= p.params["min_radius_mm"]
    # deep branches lie in the lungs
    lungs = ndimage.binary_dilation(p.lungs.array, iterations=2)
    for b in p.branches:
        k = np.rint(p.ct.geometry.world_to_index(b.end)).astype(int)
        if b.generation >= 2 and np.all(k >= 0) and np.all(k < np.asarray(lungs.shape)):
            assert lungs[tuple(k)]


def test_tables_csv_json_agree(fine):
    rows = fine.to_table()
    assert len(rows) == len(fine.branches)
    assert rows[0]["parent"] == -1 and rows[0]["generation"] == 0
    parsed = list(csv.DictReader(io.StringIO(fine.to_csv())))
    assert len(parsed) == len(rows) and int(parsed[5]["parent"]) == rows[5]["parent"]
    assert float(parsed[5]["radius_mm"]) == pytest.approx(rows[5]["radius_mm"])
    doc = json.loads(fine.to_json())
    assert doc["omitted"] == fine.omitted and len(doc["branches"]) == len(rows)
    assert [r["id"] for r in rows if r["omitted"]] == fine.omitted
    geo = fine.ct.geometry
    k = geo.world_to_index(fine.branches[5].end)
    assert rows[5]["end_z_index"] == pytest.approx(k[0], abs=1e-3)


# -- CT intensities ------------------------------------------------------------------


def test_ct_lumen_parenchyma_wall_and_vessels(clean, fine):
    for p in (clean, fine):
        ct = p.ct.array.astype(float)
        geo = p.ct.geometry
        t = p.branches[0]
        # trachea lumen: voxels at least a voxel inside its tube
        idx = np.indices(ct.shape).reshape(3, -1).T
        world = geo.index_to_world(idx)
        a, e = np.asarray(t.start), np.asarray(t.end)
        d = e - a
        s = np.clip((world - a) @ d / (d @ d), 0, 1)
        dist = np.linalg.norm(world - a - s[:, None] * d, axis=1).reshape(ct.shape)
        core = dist <= t.radius_mm - max(geo.spacing)
        assert core.sum() > 20 and ct[core].mean() < -900
        # parenchyma away from airways and vessels
        busy = ndimage.binary_dilation(p.full_label.array | p.vessels.array, iterations=3)
        lung = ndimage.binary_erosion(p.lungs.array, iterations=3) & ~busy
        assert lung.sum() > 1000 and abs(ct[lung].mean() - (-850)) < 25
        # vessels: present, bright, never airway
        assert p.vessels.voxel_count() > 50
        assert not np.any(p.vessels.array & p.label.array)
    ct = clean.ct.array.astype(float)
    assert ct[clean.vessels.array].mean() > -150
    assert ct[clean.lungs.array].std() > 10  # textured, even without noise
    # wall: the shell just outside the lumen of lobar/segmental bronchi is bright (~ -85 HU at wall_contrast 0.9)
    lab = clean.full_label.array
    shell = ndimage.binary_dilation(lab) & ~lab & clean.lungs.array & ~clean.vessels.array
    assert ct[shell].mean() > -600


def test_body_layers_without_noise_or_blur():
    p = make_phantom(96, seed=1, noise=0.0, blur=0.0, vessels=False)
    ct = p.ct.array
    mid = ct[ct.shape[0] // 2]
    assert mid[0, 0] == -1000 and mid[0, -1] == -1000  # air around the body
    values = set(np.unique(ct[~ndimage.binary_dilation(p.lungs.array | p.full_label.array, iterations=3)]).tolist())
    assert {-1000, -100, 40, 400, 500} <= values  # air, fat, soft tissue, ribs, spine
    assert p.lungs.voxel_count() > 0.05 * ct.size
    assert not np.any(
        p.label.array
        & ~ndimage.binary_dilation(p.lungs.array, iterations=2)
        & (np.indices(ct.shape)[0] < int(np.rint(p.ct.geometry.world_to_index(p.branches[0].end)[0])) - 12)
    )


def test_knobs_change_the_image():
    base = make_phantom(seed=9, noise=0.0, blur=0.0)
    noisy = make_phantom(seed=9, noise=60.0, blur=0.0)
    lung = ndimage.binary_erosion(base.lungs.array, iterations=1)
    assert np.std(noisy.ct.array[lung].astype(float) - base.ct.array[lung]) == pytest.approx(60.0, rel=0.1)
    blurred = make_phantom(seed=9, noise=0.0, blur=3.0)
    assert (
        np.abs(np.diff(blurred.ct.array.astype(float), axis=2)).mean()
        < np.abs(np.diff(base.ct.array.astype(float), axis=2)).mean()
    )
    no_vessels = make_phantom(seed=9, vessels=False)
    assert no_vessels.vessels.voxel_count() == 0
    hard = make_phantom(seed=9, difficulty="hard")
    assert hard.params["noise_hu"] > make_phantom(seed=9).params["noise_hu"]


# -- errors, progress, cancel ------------------------------------------------------


def test_bad_arguments_raise_config_errors():
    for kwargs in (
        dict(shape=(4, 64, 64)),
        dict(shape=(64, 64)),
        dict(shape="big"),
        dict(omit_distal=10_000),
        dict(omit_distal=-1),
        dict(spacing=(1.0, 0.0, 1.0)),
        dict(generations=40),
        dict(noise=-1.0),
        dict(blur=float("nan")),
        dict(difficulty="insane"),
        dict(wall_contrast=5.0),
    ):
        with pytest.raises(ConfigError):
            make_phantom(**kwargs)


def test_progress_and_cancel():
    seen = []
    make_phantom(progress=lambda done, total, message: seen.append((done, total, message)))
    assert seen[0] == (0, 6, "Making the phantom") and seen[-1] == (6, 6, "Making the phantom")
    assert all(m.startswith("Making the phantom, about ") and m.endswith(" s left") for *_, m in seen[1:-1])
    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled):
        make_phantom(cancel=ev)


# -- files and CLI ---------------------------------------------------------------------


def test_cli_writes_volumes_and_tables(tmp_path):
    from core.cli import main
    from core.io import read_ct, read_label

    out = tmp_path / "ph"
    rc = main(
        [
            "phantom",
            "--size",
            "40",
            "48",
            "56",
            "--spacing",
            "2",
            "2",
            "2.5",
            "--seed",
            "2",
            "--omit-distal",
            "1",
            "--noise",
            "5",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    p = make_phantom((40, 48, 56), spacing=(2, 2, 2.5), seed=2, omit_distal=1, noise=5.0)
    ct = read_ct(out / "ct.nii.gz")
    assert np.array_equal(ct.array, p.ct.array) and ct.geometry.matches(p.ct.geometry)
    assert np.array_equal(read_label(out / "label.nii.gz").array, p.label.array)
    assert np.array_equal(read_label(out / "centreline.nii.gz").array, p.centreline.array)
    assert (out / "branches.csv").read_text() == p.to_csv()
    assert json.loads((out / "branches.json").read_text())["omitted"] == p.omitted
    assert not [f for f in out.iterdir() if f.name.startswith(".")]  # no temp files left
    assert main(["phantom", "--size", "1", "2", "--out", str(out)]) == 2


# -- phantom_from_mask ------------------------------------------------------------------


def test_phantom_from_mask_keeps_the_mask_as_label(fine):
    mask = fine.label
    p = phantom_from_mask(mask, seed=1, noise=0.0)
    assert np.array_equal(p.label.array, mask.array) and p.ct.geometry == mask.geometry
    assert p.branches == [] and p.omitted == []
    assert p.centreline.voxel_count() > 0 and not np.any(p.centreline.array & ~mask.array)
    inner = ndimage.binary_erosion(mask.array, iterations=2)
    assert p.ct.array[inner].mean() < -900
    assert not np.any(p.vessels.array & mask.array)
    assert (
        abs(
            np.mean(
                p.ct.array[
                    ndimage.binary_erosion(p.lungs.array, iterations=3)
                    & ~ndimage.binary_dilation(mask.array | p.vessels.array, iterations=3)
                ]
            )
            + 850
        )
        < 30
    )
    with pytest.raises(InputError):
        phantom_from_mask(mask.with_array(np.zeros_like(mask.array)))


def test_phantom_from_mask_on_a_flipped_grid(fine):
    from core.volume import Geometry

    g = fine.label.geometry
    # same tree stored with the x axis reversed (as RAS-like files are): the anatomy must follow the patient
    flipped = LabelVolume(
        np.ascontiguousarray(fine.label.array[:, :, ::-1]),
        Geometry(
            g.spacing,
            (g.origin[0] + (fine.label.shape[2] - 1) * g.spacing[0], *g.origin[1:]),
            (-1, 0, 0, 0, 1, 0, 0, 0, 1),
        ),
    )
    a = phantom_from_mask(fine.label, seed=2, noise=0.0)
    b = phantom_from_mask(flipped, seed=2, noise=0.0)
    assert b.ct.geometry == flipped.geometry and np.array_equal(b.label.array, flipped.array)
    assert np.array_equal(b.lungs.array[:, :, ::-1], a.lungs.array)
    assert np.array_equal(b.ct.array[:, :, ::-1][a.label.array], a.ct.array[a.label.array])


@pytest.mark.slow
@pytest.mark.shared_data
def test_phantom_from_a_real_atm22_tree():
    path = DATA / "atm22" / "preds_YangLab" / "ATM_305_0000.nii.gz"
    if not path.exists():
        pytest.skip("needs ../shared/data/atm22 (real ATM'22 airway tree)")
    from core.io import read_label
    from core.volume import Geometry

    full = read_label(path)
    # every second voxel (fast): the real topology on a coarser grid
    arr = np.ascontiguousarray(full.array[::2, ::2, ::2])
    g = full.geometry
    small = LabelVolume(arr, Geometry(tuple(2 * s for s in g.spacing), g.origin, g.direction))
    p = phantom_from_mask(small, seed=0)
    assert np.array_equal(p.label.array, arr)
    core = ndimage.binary_erosion(arr, iterations=2)
    assert core.sum() > 100 and p.ct.array[core].mean() < -850
    assert p.lungs.voxel_count() > 0.1 * arr.size


def test_cancel_mid_way_stops_generation():
    class Later:
        """Reports 'set' from its n-th query on: cancels inside the work, not before it."""

        def __init__(self, n: int):
            self.n = n

        def is_set(self) -> bool:
            self.n -= 1
            return self.n < 0

    for n in (1, 3, 6):
        with pytest.raises(Cancelled):
            make_phantom(96, cancel=Later(n))
