"""``airway phantom``: write a synthetic airway CT, its exact label, centreline and branch table."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "phantom",
        help="write a synthetic chest CT with an exact airway label",
        description="A generated chest CT (int16 HU) with its exact airway label, the branches' centrelines and a "
        "branch table, written as ct.nii.gz, label.nii.gz, centreline.nii.gz, branches.csv and "
        "branches.json in --out. Same seed, same files.",
    )
    p.add_argument(
        "--size", type=int, nargs="+", default=[64], metavar="N", help="grid size: one side N, or Z Y X (default 64)"
    )
    p.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        metavar=("X", "Y", "Z"),
        help="voxel size in mm (default: 0.7 0.7 1.0 scaled so the whole chest fits; "
        "finer spacing on a small grid shows the central airways)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--generations", type=int, default=6, help="bifurcation levels below the trachea (default 6)")
    p.add_argument(
        "--difficulty",
        choices=("easy", "normal", "hard"),
        default="normal",
        help="preset for noise, wall contrast and blur (default normal)",
    )
    p.add_argument("--noise", type=float, help="noise std in HU (overrides the preset)")
    p.add_argument("--wall-contrast", type=float, help="0 = wall as lung, 1 = wall at 0 HU (overrides the preset)")
    p.add_argument("--blur", type=float, help="Gaussian blur sigma in mm (overrides the preset)")
    p.add_argument(
        "--omit-distal",
        type=int,
        default=0,
        metavar="K",
        help="leave K terminal branches out of the label (they stay in the CT), as real references do",
    )
    p.add_argument("--no-vessels", action="store_true", help="no vessels beside the bronchi")
    p.add_argument(
        "--from-mask",
        metavar="LABEL",
        help="paint the CT around this airway mask instead of a generated tree (branch table empty)",
    )
    p.add_argument(
        "--label-selector",
        default=None,
        help="which values of --from-mask are airway: nonzero, value:N or bits:SHIFT:N",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the files of an earlier phantom in --out (the first originals are kept as NAME.bak)",
    )
    p.set_defaults(func=run_phantom)


def run_phantom(args: argparse.Namespace) -> int:
    from core.errors import ConfigError
    from core.outputs import OutputPlan
    from core.phantom import Phantom, make_phantom, phantom_from_mask

    plan = OutputPlan(args.overwrite, inputs=[args.from_mask])
    for path in Phantom.file_paths(args.out).values():
        plan.add(path, "--out")
    plan.check()

    def progress(done: float, total: float, message: str = "") -> None:
        print(f"[{done:.0f}/{total:.0f}]", file=sys.stderr, flush=True)

    if args.from_mask:
        from core.io import read_label

        mask = read_label(args.from_mask, args.label_selector)
        ph = phantom_from_mask(
            mask,
            seed=args.seed,
            noise=args.noise,
            wall_contrast=args.wall_contrast,
            blur=args.blur,
            difficulty=args.difficulty,
            vessels=not args.no_vessels,
            progress=progress,
        )
    else:
        if len(args.size) not in (1, 3):
            raise ConfigError(
                f"--size takes one side or three (Z Y X), got {len(args.size)} numbers.",
                "Use e.g. --size 64 or --size 400 512 512.",
            )
        shape = args.size[0] if len(args.size) == 1 else tuple(args.size)
        ph = make_phantom(
            shape=shape,
            spacing=args.spacing,
            seed=args.seed,
            generations=args.generations,
            noise=args.noise,
            wall_contrast=args.wall_contrast,
            blur=args.blur,
            omit_distal=args.omit_distal,
            vessels=not args.no_vessels,
            difficulty=args.difficulty,
            progress=progress,
        )
    with plan:
        paths = ph.save(args.out, plan)
    g = ph.ct.geometry
    print(
        f"phantom {'x'.join(map(str, ph.ct.shape))} (z y x), {g.describe()}: {len(ph.branches)} branches, "
        f"{ph.label.voxel_count()} airway voxels, omitted {ph.omitted or 'none'}"
    )
    for p in paths.values():
        print(p)
    return 0
