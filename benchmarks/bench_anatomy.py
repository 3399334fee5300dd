"""Branch naming (core.anatomy): accuracy on phantoms with true names, the real ATM'22 pair, the chest CT, speed.

    .venv/bin/python benchmarks/bench_anatomy.py [--phantoms 50] [--threads 2] [--skip-real]

Phantoms: ``--phantoms`` seeds spread over five grids (0.8 x 0.8 x 1.0 mm down to 2.7 x 2.7 x 3.9 mm,
0.7 x 0.7 x 2.5 among them); every true central, lobar and segmental bronchus is judged on the
parsed branch that starts along it (core.anatomy.truth.score_names): right, wrong, abstained, or
unresolved (the parse runs it together with another bronchus, so no branch is its own).
Real data (``../shared/data``, skipped when absent): the ATM'22 pair (two teams' trees of one
case): central and lobar names on each, and how far their segmental names agree by position; the
chest CT's region-growing tree (mask cached in the system temp folder): its lobar names.
Speed: label_tree per tree, after the parse.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / ".." / "shared" / "data"

GRIDS: list[tuple[tuple[int, int, int], tuple[float, float, float] | None]] = [
    ((200, 256, 256), (0.8, 0.8, 1.0)),
    ((160, 200, 200), (1.0, 1.0, 1.5)),
    ((110, 256, 256), (0.7, 0.7, 2.5)),
    ((96, 160, 160), (1.2, 1.2, 3.0)),
    ((128, 128, 128), None),  # auto: the whole chest, ~2.7 x 2.7 x 3.9 mm
]
GROUPS = ("central", "lobar", "segmental")


def phantom_figures(n: int, first_seed: int = 1000, generations: int = 7) -> dict[str, Any]:
    from core.anatomy import label_tree
    from core.anatomy.truth import score_names
    from core.phantom import make_phantom
    from core.tree import parse_tree

    per_grid: dict[str, dict[str, list[int]]] = {}
    times: list[float] = []
    errors: list[str] = []
    for k in range(n):
        shape, spacing = GRIDS[k % len(GRIDS)]
        seed = first_seed + k
        ph = make_phantom(shape, spacing=spacing, seed=seed, generations=generations, vessels=False, noise=0, blur=0)
        tree = parse_tree(ph.label)
        t = time.perf_counter()
        names = label_tree(tree, geometry=ph.label.geometry)
        times.append(time.perf_counter() - t)
        s = score_names(tree, names, ph.to_table(), ph.label.geometry)
        sp = "x".join(f"{v:g}" for v in ph.label.geometry.spacing)
        grid = per_grid.setdefault(sp, {g: [0, 0, 0, 0, 0] for g in GROUPS})
        for g in GROUPS:
            c, w, a = s.counts(g)
            row = grid[g]
            row[0] += c
            row[1] += w
            row[2] += a
            row[3] += len(s.unresolved[g])
            row[4] += len(s.absent[g])
            errors += [f"seed {seed} ({sp}): {t} named {given}" for t, given in s.wrong[g]]
    return {"per_grid": per_grid, "times": times, "errors": errors}


def print_phantoms(fig: dict[str, Any], n: int) -> None:
    print(f"== {n} phantoms (true names by position; c/w/a/u = right / wrong / abstained / unresolved)")
    total = {g: [0, 0, 0, 0, 0] for g in GROUPS}
    for sp, grid in fig["per_grid"].items():
        cells = []
        for g in GROUPS:
            c, w, a, u, _ = grid[g]
            total[g] = [x + y for x, y in zip(total[g], grid[g])]
            cells.append(f"{g} {c}/{w}/{a}/{u}")
        print(f"  {sp:>18s} mm: " + "   ".join(cells))
    for g in GROUPS:
        c, w, a, u, absent = total[g]
        judged = c + w + a
        print(
            f"  {g:9s}: {c} right, {w} wrong, {a} abstained of {judged} judged "
            f"({u} unresolved, {absent} not in the parse): correct where named "
            f"{100.0 * c / max(c + w, 1):.1f} %, abstained {100.0 * a / max(judged, 1):.1f} %"
        )
    t = np.asarray(fig["times"])
    print(f"  label_tree: mean {t.mean():.3f} s, max {t.max():.3f} s per tree")
    for e in fig["errors"][:40]:
        print(f"    wrong: {e}")


def real_figures() -> None:
    from core.anatomy import CENTRAL, LOBAR, label_tree
    from core.anatomy.truth import segment_agreement
    from core.io import read_label
    from core.tree import parse_tree

    paths = {team: DATA / "atm22" / f"preds_{team}" / "ATM_305_0000.nii.gz" for team in ("YangLab", "timi")}
    if all(p.is_file() for p in paths.values()):
        print("== ATM'22 case 305, two teams' trees")
        got = {}
        for team, p in paths.items():
            lab = read_label(p)
            tree = parse_tree(lab)
            t = time.perf_counter()
            names = label_tree(tree, geometry=lab.geometry)
            dt = time.perf_counter() - t
            got[team] = (tree, lab.geometry, names)
            named = names.named()
            print(
                f"  {team:8s}: {tree.n_branches} branches, label_tree {dt:.2f} s; central "
                f"{', '.join(n for n in CENTRAL if n in named)}; lobar {', '.join(n for n in LOBAR if n in named)}; "
                f"missing {', '.join(n for n in (*CENTRAL, *LOBAR) if n not in named) or 'none'}"
            )
            seg = sorted(n for n in named if n.startswith(("RB", "LB")))
            print(f"            segmental ({len(seg)}): {', '.join(seg)}")
            for w in names.warnings:
                print(f"            note: {w}")
        for first, second, (x, gx, nx), (y, gy, ny) in (
            ("YangLab", "timi", got["YangLab"], got["timi"]),
            ("timi", "YangLab", got["timi"], got["YangLab"]),
        ):
            shared, agree = segment_agreement(x, gx, nx, y, gy, ny)
            differ = [n for n in shared if n not in agree]
            print(
                f"  segmental names both give, {first}'s territories in {second}: {len(agree)} / {len(shared)} agree "
                f"({100.0 * len(agree) / max(len(shared), 1):.0f} %); differ: {', '.join(differ) or 'none'}"
            )
    else:
        print(f"ATM'22 pair absent under {DATA}: skipped")
    dicom = DATA / "chest_ct_dicom"
    if dicom.is_dir():
        from core.io import read_ct, write_volume

        cache = Path(tempfile.gettempdir()) / "airway_bench_anatomy_chest_growing.nii.gz"
        if not cache.is_file():
            from core.growing import grow_airway

            write_volume(grow_airway(read_ct(dicom)).mask, cache)
        lab = read_label(cache)
        tree = parse_tree(lab)
        t = time.perf_counter()
        names = label_tree(tree, geometry=lab.geometry)
        dt = time.perf_counter() - t
        named = names.named()
        print(
            f"== chest CT, region-growing tree ({tree.n_branches} branches, label_tree {dt:.2f} s): central "
            f"{', '.join(n for n in CENTRAL if n in named)}; lobar {', '.join(n for n in LOBAR if n in named)}; "
            f"missing {', '.join(n for n in (*CENTRAL, *LOBAR) if n not in named) or 'none'}"
        )
    else:
        print(f"chest CT absent under {DATA}: skipped")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phantoms", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-real", action="store_true")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    t0 = time.perf_counter()
    if args.phantoms:
        print_phantoms(phantom_figures(args.phantoms), args.phantoms)
    if not args.skip_real:
        real_figures()
    print(f"({time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
