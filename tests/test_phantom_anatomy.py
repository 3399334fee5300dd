"""Phantom anatomy: named textbook bronchi with per-seed variants, their truth in the branch table and CLI files."""

from __future__ import annotations

import collections
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from core.phantom import Phantom, make_phantom
from core.phantom.anatomy import LOBAR, SEGMENT_NAMES, lineage, lobe_of_name
from core.phantom.tree import Chest

CENTRAL = ("Trachea", "RMB", "LMB", "BronInt")
PARENT = {
    "RMB": "Trachea",
    "LMB": "Trachea",
    "RUL": "RMB",
    "BronInt": "RMB",
    "RML": "BronInt",
    "RLL": "BronInt",
    "LUL": "LMB",
    "LLL": "LMB",
    "Lingula": "LUL",
    "LULupper": "LUL",
    "RB4": "RML",
    "RB5": "RML",
    "RB6": "RLL",
    "RLLbasal": "RLL",
    "LB1+2": "LULupper",
    "LB3": "LULupper",
    "LB4": "Lingula",
    "LB5": "Lingula",
    "LB6": "LLL",
    "LLLbasal": "LLL",
}
# the model's training grid (48^3 at 2.5 x 2.5 x 3 mm) and a fine, thick-slice one (0.7 x 0.7 x 2.5 mm)
GRIDS = [((48, 48, 48), (2.5, 2.5, 3.0)), ((96, 224, 224), (0.7, 0.7, 2.5))]
_CACHE: dict[tuple[object, ...], Phantom] = {}


def phantom(shape: object, spacing: object, seed: int) -> Phantom:
    key = (shape, spacing, seed)
    if key not in _CACHE:
        _CACHE[key] = make_phantom(shape, spacing=spacing, seed=seed, vessels=False)
    return _CACHE[key]


def named(p: Phantom) -> dict[str, object]:
    return {b.name: b for b in p.branches if b.name}


def _end(b: object) -> np.ndarray:
    return np.asarray(b.end)  # type: ignore[attr-defined]


def check_anatomy(p: Phantom, seed: int) -> None:
    n = named(p)
    by_id = {b.id: b for b in p.branches}
    names = [b.name for b in p.branches if b.name]
    assert len(names) == len(set(names)), "a name is used twice"
    for name in (*CENTRAL, *LOBAR):
        assert name in n, f"seed {seed}: no {name}"
    for name, b in n.items():
        assert b.side == ("" if name == "Trachea" else "R" if name[0] in "RB" else "L"), name
        if name in PARENT:
            assert by_id[b.parent].name == PARENT[name], name
        if name.startswith(("RB", "LB")):
            parent = by_id[b.parent]
            assert lobe_of_name(name) in (lobe_of_name(parent.name), lobe_of_name(by_id[parent.parent].name))
    seg = [s for s in names if s in SEGMENT_NAMES]
    assert 18 <= len(seg) <= 20, f"seed {seed}: {len(seg)} segmental bronchi"
    # frame: LPS (+x patient left, +y posterior, +z superior); the carina is the trachea's lower end
    carina = np.asarray(n["Trachea"].end)
    assert np.allclose(n["RMB"].start, carina) and np.allclose(n["LMB"].start, carina)
    assert _end(n["RMB"])[0] < carina[0] < _end(n["LMB"])[0]
    # RMB shorter, steeper, wider than the LMB; the RUL leaves it 1-2.5 cm below the carina, up and lateral
    assert n["RMB"].length_mm < n["LMB"].length_mm
    assert -n["RMB"].direction[2] > -n["LMB"].direction[2]
    assert n["RMB"].radius_mm > n["LMB"].radius_mm
    assert 10.0 <= carina[2] - n["RUL"].start[2] <= 25.0
    assert n["RUL"].direction[2] > 0 and n["RUL"].direction[0] < -0.5
    assert n["BronInt"].direction[2] < -0.7 and n["RLL"].direction[2] < -0.7 and n["LLL"].direction[2] < -0.7

    def mean_end(keys: tuple[str, ...], axis: int) -> float:
        return float(np.mean([_end(n[k])[axis] for k in keys if k in n]))

    # right lung: RUL above RML above RLL (segment ends); RML anterior of the RLL
    rul, rml = ("RB1", "RB2", "RB3"), ("RB4", "RB5")
    r_basal = ("RB7", "RB8", "RB9", "RB10", "RB9+10")
    l_basal = ("LB7", "LB8", "LB9", "LB10", "LB7+8", "LB9+10")
    assert mean_end(rul, 2) > mean_end(rml, 2) > mean_end(r_basal, 2)
    assert _end(n["RUL"])[2] > _end(n["RML"])[2]
    assert _end(n["RML"])[1] < _end(n["RLL"])[1]
    # superior segments posterior of their basal segments; anterior basal in front of posterior basal
    assert _end(n["RB6"])[1] > mean_end(r_basal, 1) and _end(n["LB6"])[1] > mean_end(l_basal, 1)
    assert mean_end(("RB8",), 1) < mean_end(("RB10", "RB9+10"), 1)
    assert mean_end(("LB8", "LB7+8"), 1) < mean_end(("LB10", "LB9+10"), 1)
    if "RB7" in n:  # medial basal: nearer the midline (larger x on the right) than the lateral basal
        assert _end(n["RB7"])[0] > mean_end(("RB9", "RB9+10"), 0)
    # left: the lingula anterior (and below the upper division), LB4 lateral of LB5, LB1+2 above and behind LB3
    assert _end(n["Lingula"])[1] < n["LUL"].start[1] and _end(n["Lingula"])[1] < _end(n["LLL"])[1]
    assert _end(n["Lingula"])[2] < _end(n["LULupper"])[2]
    assert _end(n["LB4"])[0] > _end(n["LB5"])[0]
    assert _end(n["LB1+2"])[2] > _end(n["LB3"])[2] and _end(n["LB1+2"])[1] > _end(n["LB3"])[1]
    assert _end(n["RB2"])[1] > _end(n["RB3"])[1] and _end(n["RB4"])[0] < _end(n["RB5"])[0]
    # every branch below the main bronchi ends in its own lung (its ellipsoid less the heart)
    chest = Chest.sample(np.random.default_rng([seed, 0]))
    for b in p.branches:
        if b.generation >= 2 and b.name:
            assert float(chest.lung_depth(np.asarray(b.end), b.side, 0.0)) > 0, b.name


@pytest.mark.parametrize("shape, spacing", GRIDS[:1])
@pytest.mark.parametrize("seed", range(20))
def test_every_seed_has_the_textbook_airways(shape, spacing, seed):
    check_anatomy(phantom(shape, spacing, seed), seed)


@pytest.mark.slow  # 20 phantoms of 96 x 224 x 224 voxels
def test_every_seed_has_the_textbook_airways_on_a_fine_thick_slice_grid():
    shape, spacing = GRIDS[1]
    for seed in range(20):
        p = make_phantom(shape, spacing=spacing, seed=seed, vessels=False)
        check_anatomy(p, seed)
        assert p.params["anatomy"]["not_grown"] == {}
        # the same seed lays out the same anatomy on every grid
        coarse = phantom(*GRIDS[0], seed)
        assert {b.name: b.end for b in p.branches if b.name} == {b.name: b.end for b in coarse.branches if b.name}


@pytest.mark.slow
def test_variants_occur_across_seeds():
    seen: collections.Counter[str] = collections.Counter()
    counts = collections.Counter()
    for seed in range(40):
        p = phantom(*GRIDS[0], seed)
        variants = p.params["anatomy"]["variants"]
        seen.update(variants)
        n = named(p)
        counts[sum(name in SEGMENT_NAMES for name in n)] += 1
        # what the variants say is what the tree has (grown, or recorded as too thin for this grid)
        n = {**n, **dict.fromkeys(p.params["anatomy"]["not_grown"])}
        assert ("RB7" not in n) == ("RB7 absent" in variants)
        for merged in ("RB9+10", "LB7+8", "LB9+10"):
            assert (merged in n) == (merged in variants)
            a, b = merged.split("+")
            assert (a in n) != (merged in n) and (f"{a[:2]}{b}" in n) != (merged in n)
        rul = next(b for b in p.branches if b.name == "RUL")
        rul_kids = [b.name for b in p.branches if b.parent == rul.id]
        if "RUL bifurcation" in variants:
            assert sorted(rul_kids) == ["", "RB3"]
        else:
            assert sorted(rul_kids) == ["RB1", "RB2", "RB3"]
    assert seen["RUL bifurcation"] >= 4 and 40 - seen["RUL bifurcation"] >= 20  # trifurcation is the usual
    for variant in ("RB7 absent", "LB7+8", "RB9+10", "LB9+10"):
        assert seen[variant] >= 2, seen
    assert set(counts) <= {17, 18, 19} and counts[17] <= 2  # a thin one may fall below this coarse grid
    assert counts[19] >= 10  # the usual tree has all 19


def test_lobe_and_segment_are_inherited_by_every_branch():
    p = phantom(*GRIDS[0], 4)
    by_id = {b.id: b for b in p.branches}
    rows = {r["id"]: r for r in p.to_table()}
    kin = lineage(p.branches)
    below_segment = 0
    for b in p.branches:
        row = rows[b.id]
        assert row["name"] == b.name and (row["lobe"], row["segment"]) == kin[b.id]
        chain = []
        a = b
        while a.parent >= 0:
            chain.append(a.name)
            a = by_id[a.parent]
        seg = next((s for s in chain if s in SEGMENT_NAMES), "")
        lobe = next((lobe_of_name(s) for s in chain if lobe_of_name(s)), "")
        assert row["segment"] == seg and row["lobe"] == lobe
        if b.name == "" and seg:
            below_segment += 1
            assert row["lobe"] == lobe_of_name(seg)
        if b.name in (*CENTRAL,):
            assert row["lobe"] == "" and row["segment"] == ""
    assert below_segment >= 10


@pytest.mark.parametrize(
    "shape, spacing",
    [
        (64, None),  # whole chest at ~5.5 x 5.5 x 7.8 mm: the lobar bronchi are below resolution
        (128, None),
        ((64, 64, 64), (0.5, 0.5, 0.5)),  # a 32 mm view of the carina
        ((128, 128, 128), (0.7, 0.7, 2.5)),
        ((64, 64, 64), (2.5, 2.5, 3.0)),
        ((80, 96, 96), (1.0, 1.0, 1.0)),
    ],
)
def test_named_branches_not_grown_are_recorded_with_the_reason(shape, spacing):
    seed = 6
    p = make_phantom(shape, spacing=spacing, seed=seed, vessels=False)
    full = named(phantom(*GRIDS[0], seed))  # the same seed's anatomy, all of it resolved
    have = named(p)
    not_grown = p.params["anatomy"]["not_grown"]
    assert set(have) | set(not_grown) == set(full) and not set(have) & set(not_grown)
    reasons = ("than the grid resolves", "outside the field of view", "below --generations", "not grown")
    assert all(any(r in why for r in reasons) for why in not_grown.values()), not_grown
    r_min = p.params["min_radius_mm"]
    for name, why in not_grown.items():
        if "resolves" in why:
            assert 2 * full[name].radius_mm < 2 * r_min + 1e-6, (name, why)
    for name, b in have.items():  # grown ones are the same branches, and resolvable
        assert np.allclose(b.end, full[name].end) and b.radius_mm >= r_min
    check_cl = p.label.voxel_count() > 0
    assert check_cl


def test_generations_limit_the_named_tree_too():
    p = make_phantom((48, 48, 48), spacing=(2.5, 2.5, 3.0), seed=2, generations=2, vessels=False)
    assert max(b.generation for b in p.branches) == 2
    assert {b.name for b in p.branches} == {"Trachea", "RMB", "LMB", "RUL", "BronInt", "LUL", "LLL"}
    assert p.params["anatomy"]["not_grown"]["RML"] == "below --generations 2"


def test_cli_writes_names_lobes_and_segments(tmp_path: Path):
    from core.cli import main

    out = tmp_path / "ph"
    assert main(["phantom", "--size", "64", "--seed", "3", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "branches.csv").open()))
    assert {"name", "lobe", "segment"} <= set(rows[0])
    doc = json.loads((out / "branches.json").read_text())
    assert [r["name"] for r in doc["branches"]] == [r["name"] for r in rows]
    p = make_phantom(64, seed=3)
    assert [r["name"] for r in rows] == [b.name for b in p.branches]
    assert rows[0]["name"] == "Trachea" and {"RMB", "LMB"} <= {r["name"] for r in rows}
    # at the default whole-chest spacing of a 64^3 grid the lobar bronchi are too thin: recorded, not hidden
    assert "RUL" in doc["params"]["anatomy"]["not_grown"]

    fine = tmp_path / "fine"
    assert main(["phantom", "--size", "48", "--spacing", "2.5", "2.5", "3", "--seed", "3", "--out", str(fine)]) == 0
    rows = list(csv.DictReader((fine / "branches.csv").open()))
    by_name = {r["name"]: r for r in rows if r["name"]}
    assert {"RB6", "LB1+2", "Lingula", "BronInt"} <= set(by_name)
    assert by_name["RB6"]["lobe"] == "RLL" and by_name["RB6"]["segment"] == "RB6"
    assert by_name["Lingula"]["lobe"] == "LUL" and by_name["Lingula"]["segment"] == ""
    deep = [r for r in rows if r["name"] == "" and r["segment"]]
    assert deep and all(r["lobe"] == lobe_of_name(r["segment"]) for r in deep)
    jrows = json.loads((fine / "branches.json").read_text())["branches"]
    assert [(r["name"], r["lobe"], r["segment"]) for r in jrows] == [(r["name"], r["lobe"], r["segment"]) for r in rows]
    assert math.isclose(float(by_name["RB6"]["end_y_mm"]), jrows[int(by_name["RB6"]["id"])]["end_y_mm"])


def test_phantom_dataset_writes_each_cases_named_branch_table(tmp_path: Path):
    from core.cli import main

    out = tmp_path / "data"
    argv = ["phantom-dataset", "--n", "2", "--size", "48", "--spacing", "2.5", "2.5", "3", "--seed", "4", "--out"]
    assert main([*argv, str(out)]) == 0
    for i in range(2):
        doc = json.loads((out / "branchesTr" / f"phantom_{i:03d}.json").read_text())
        p = make_phantom((48, 48, 48), spacing=(2.5, 2.5, 3.0), seed=4 + i)
        assert doc["branches"] == p.to_table() and doc["params"]["anatomy"] == p.params["anatomy"]
        assert {"RUL", "RML", "RLL", "LUL", "LLL", "Lingula"} <= {r["name"] for r in doc["branches"]}
