"""``airway prepare`` (dataset cache) and ``airway phantom-dataset`` (synthetic imagesTr/labelsTr)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.training.cache import CacheSettings
    from core.training.config import TrainConfig


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="preprocess a training dataset once into a memory-mappable cache",
        description="Window, crop, distance weights, skeleton and small-airway mask of every case, cached as .npy "
        "(rebuilt when the source files or the settings change). Bad cases are reported by name.",
    )
    p.add_argument("--data", required=True, help="dataset folder (imagesTr/ + labelsTr/) or CSV of image,label pairs")
    p.add_argument("--config", help="training config (.toml) whose [preprocessing]/[data] settings to use")
    p.add_argument("--preset", choices=("paper", "quick", "demo"), help="preset config (default: paper)")
    p.add_argument("--cache", help="cache folder (default: DATA/.airway_cache or the config's data.cache_dir)")
    p.add_argument("--skip-bad", action="store_true", help="leave bad cases out instead of stopping")
    p.add_argument("--force", action="store_true", help="rebuild every case even if its cache is fresh")
    p.set_defaults(func=run_prepare)

    q = subparsers.add_parser(
        "phantom-dataset",
        help="write N synthetic airway phantoms as imagesTr/ + labelsTr/",
        description="Generated chest phantoms with exact airway labels, so training needs no download.",
    )
    q.add_argument("--n", type=int, required=True, help="number of phantoms")
    q.add_argument("--size", type=int, default=64, help="side in voxels (default 64)")
    q.add_argument("--out", required=True, help="output folder")
    q.add_argument("--seed", type=int, default=0, help="phantom i uses seed + i (default 0)")
    q.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        metavar=("X", "Y", "Z"),
        default=None,
        help="voxel size in mm (default: the whole chest fitted into the grid)",
    )
    q.add_argument(
        "--difficulty",
        default=None,
        choices=("easy", "normal", "hard"),
        help="image quality of the phantoms (core.phantom; default normal)",
    )
    q.add_argument("--prepare", action="store_true", help="also build the training cache (paper preprocessing)")
    q.set_defaults(func=run_phantom_dataset)


def _settings_from(args: argparse.Namespace) -> tuple[TrainConfig, CacheSettings]:
    from core.preprocess import Preprocessing
    from core.training.cache import CacheSettings
    from core.training.config import load_config

    cfg = load_config(args.config, args.preset)
    p = cfg.preprocessing
    alphas = tuple(sorted({s.alpha for _, s in cfg.stages() if s.loss == "gul"}))
    lo, hi = p.window
    prep = Preprocessing(window=(float(lo), float(hi)), scale=p.scale, crop=p.crop, margin=p.margin)
    return cfg, CacheSettings(
        prep.to_dict(),
        cfg.data.label_selector,
        alphas,
        cfg.sampling.small_diameter_mm,
        ignore_value=cfg.data.ignore_value,
    )


def run_prepare(args: argparse.Namespace) -> int:
    from core.training.cache import default_cache_dir, prepare_cases
    from core.training.dataset import discover_cases

    cfg, settings = _settings_from(args)
    cases = discover_cases(args.data)
    cache = Path(args.cache or cfg.data.cache_dir or default_cache_dir(args.data))
    _check_cache_folder(cache, args.data)
    policy = "skip" if args.skip_bad else cfg.data.on_bad_case

    def progress(done: float, total: float, name: str) -> None:
        print(f"[{done:g}/{total:g}] {name}", file=sys.stderr, flush=True)

    report = prepare_cases(cases, cache, settings, on_bad_case=policy, progress=progress, force=args.force)
    for bad in report.bad:
        print(f"skipped {bad.name}: {bad.reason}", file=sys.stderr)
    print(
        f"{len(report.cases)} case(s) ready in {cache} ({len(report.built)} built, {len(report.reused)} reused, "
        f"{len(report.bad)} skipped)"
    )
    return 0


def _check_cache_folder(cache: Path, data: str | Path) -> None:
    """Before any case is read: the cache folder can be written and is not the dataset's own files."""
    from core.errors import InputError
    from core.outputs import check_writable_folder, same_file

    if cache.exists() and not cache.is_dir():
        raise InputError("The cache is a file, not a folder.", "Give a folder with --cache.", path=cache)
    data = Path(data)
    for sub in (data, data / "imagesTr", data / "labelsTr"):
        if sub.exists() and same_file(cache, sub):
            raise InputError(
                "The cache folder is the dataset's own folder; its case folders would mix with the data.",
                "Give another folder with --cache (default: DATA/.airway_cache).",
                path=cache,
            )
    check_writable_folder(cache, flag="--cache", what="The cache folder")


def run_phantom_dataset(args: argparse.Namespace) -> int:
    from core.training.phantoms import write_phantom_dataset

    difficulty = args.difficulty

    def progress(done: float, total: float, name: str) -> None:
        print(f"[{done:g}/{total:g}] {name}", file=sys.stderr, flush=True)

    from core.errors import InputError
    from core.outputs import check_writable_folder

    out = Path(args.out)
    if (out / "imagesTr").exists() or (out / "labelsTr").exists():
        raise InputError(
            "The folder already holds a dataset (imagesTr/ or labelsTr/).",
            "Choose another --out folder, or delete the old dataset first.",
            path=out,
        )
    check_writable_folder(out, flag="--out")
    names = write_phantom_dataset(args.out, args.n, args.size, args.seed, args.spacing, difficulty, progress=progress)
    print(f"wrote {len(names)} phantom(s) to {args.out}/imagesTr and {args.out}/labelsTr")
    if args.prepare:
        ns = argparse.Namespace(data=args.out, config=None, preset=None, cache=None, skip_bad=False, force=False)
        return run_prepare(ns)
    return 0
