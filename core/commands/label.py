"""``airway label``: name the branches of an airway mask (trachea, main, lobar, segmental bronchi)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "label",
        help="name the bronchi of an airway mask (lobar and segmental)",
        description="Parse an airway mask into branches and name them: trachea, main bronchi, bronchus "
        "intermedius, the lobar bronchi and the lingula, and the segmental bronchi (RB1-RB10, LB1+2-LB10), "
        "each with a confidence; unsure branches stay unnamed. Writes CASE_names.nii.gz (one value per name), "
        "CASE_names.ctbl (3D Slicer colour table), CASE_names_itksnap.txt (ITK-SNAP label descriptions), "
        "CASE_names.json and CASE_names.csv (branch id, name, confidence, lobe, segment, generation, length, "
        "mean diameter) in --out.",
    )
    p.add_argument("--input", required=True, metavar="MASK", help="airway mask (any volume format)")
    p.add_argument("--ct", metavar="CT", help="the CT the mask belongs to (checked to share its grid)")
    p.add_argument(
        "--lobes",
        metavar="LOBES",
        help="optional lobe label map on the mask's grid; values 1-5 = RUL, RML, RLL, LUL, LLL unless --lobe-values",
    )
    p.add_argument(
        "--lobe-values",
        metavar="V=LOBE,...",
        help="values of --lobes, e.g. 1=LUL,2=LLL,3=RUL,4=RML,5=RLL (default 1=RUL,2=RML,3=RLL,4=LUL,5=LLL)",
    )
    p.add_argument("--label-selector", help="which values of MASK are airway: nonzero (default), value:N or bits:S:N")
    p.add_argument("--case", help="case name for the output files (default: from MASK's file name)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace earlier outputs (originals kept as NAME.bak)")
    p.set_defaults(func=run_label)


def parse_lobe_values(text: str | None) -> dict[int, str] | None:
    from core.anatomy import LOBES
    from core.errors import ConfigError

    if not text:
        return None
    out: dict[int, str] = {}
    for part in text.split(","):
        value, _, lobe = part.strip().partition("=")
        if not value.strip().isdigit() or lobe.strip().upper() not in LOBES:
            raise ConfigError(
                f"--lobe-values entry '{part.strip()}' is not VALUE=LOBE.",
                f"Use e.g. 1=RUL,2=RML,3=RLL,4=LUL,5=LLL (lobes: {', '.join(LOBES)}).",
            )
        out[int(value)] = lobe.strip().upper()
    return out


def run_label(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from core.anatomy import CENTRAL, LOBAR, SEGMENTAL, label_tree
    from core.anatomy.io import output_paths, write_names
    from core.errors import InputError
    from core.io import case_name, read_ct, read_label, read_volume
    from core.outputs import OutputPlan
    from core.tree import parse_tree
    from core.volume import check_same_grid

    case = args.case or case_name(args.input)
    plan = OutputPlan(args.overwrite, inputs=[args.input, args.ct, args.lobes])
    for path in output_paths(args.out, case).values():
        plan.add(path, "--out")
    plan.check()
    lobe_values = parse_lobe_values(args.lobe_values)

    mask = read_label(args.input, args.label_selector)
    if mask.voxel_count() == 0:
        raise InputError(
            "The airway mask is empty (no airway voxel).",
            "Check the file and --label-selector (which values are airway).",
            path=args.input,
        )
    if args.ct:
        check_same_grid(read_ct(args.ct), mask)
    lobes = None
    if args.lobes:
        lobes = read_volume(args.lobes)
        check_same_grid(mask, lobes)
        lobes = np.rint(lobes.array).astype(np.int64)
    t0 = time.perf_counter()
    tree = parse_tree(mask)
    t1 = time.perf_counter()
    names = label_tree(tree, geometry=mask.geometry, lobes=lobes, lobe_values=lobe_values)
    t2 = time.perf_counter()
    with plan:
        paths = write_names(plan, args.out, case, tree, names, mask.geometry)
    named = names.named()
    lobar = [n for n in LOBAR if n in named]
    seg = sorted(n for n in named if n in SEGMENTAL or "+" in n)
    central = [n for n in CENTRAL if n in named]
    print(
        f"{case}: {tree.n_branches} branches (parse {t1 - t0:.1f} s, naming {t2 - t1:.2f} s); "
        f"named {', '.join(central) or 'no central airway'}; lobar {len(lobar)} / {len(LOBAR)} "
        f"({', '.join(lobar) or '-'}); segmental {len(seg)} ({', '.join(seg) or '-'})"
    )
    for w in names.warnings:
        print(f"  note: {w}")
    for p in paths.values():
        print(p)
    return 0
