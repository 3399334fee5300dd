"""``airway evaluate``: ATM'22 airway metrics of predictions against a reference, as a table and files.

One reference file with one or more prediction files, or a reference folder
with one or more prediction folders (cases matched by :mod:`core.casenames`, as
``airway compare`` matches them; per-case rows then the mean and the sample sd
of each metric). Column and case names: docs/vocabulary.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.anatomy import TreeNames
    from core.anatomy.metrics import AnatomyScores
    from core.metrics import AirwayMetrics
    from core.tree import AirwayTree
    from core.volume import Geometry

COLUMNS = (
    ("td", "TD%"),
    ("bd", "BD%"),
    ("dsc", "DSC%"),
    ("precision", "Prec%"),
    ("sensitivity", "Sens%"),
    ("specificity", "Spec%"),
    ("atm_score", "Score"),
    ("td_mm", "TDmm"),
    ("leakage", "Leak%"),
    ("missing_ratio", "Miss%"),
    ("breakages", "Breaks"),
    ("n_detected", "BrDet"),
    ("n_branches", "Br"),
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="airway metrics (TD, BD, DSC, precision, ...) of predictions against a reference",
        description="Tree length and branches detected (ATM'22 definitions), DSC, precision, sensitivity, "
        "specificity and extras, on each prediction's largest connected component. "
        "Give files, or folders whose cases are matched by file name.",
    )
    p.add_argument("--reference", required=True, help="reference label file, or a folder of them")
    p.add_argument("--prediction", required=True, nargs="+", help="prediction file(s), or folder(s) of them")
    p.add_argument("--json", metavar="F", help="write all results (summary, per generation, per diameter) as JSON")
    p.add_argument(
        "--csv",
        metavar="F",
        help="write one row per case (plus mean and std rows) as CSV; with anatomy also F_lobes.csv "
        "(TD/BD per lobe) and F_segments.csv (each segmental bronchus of the reference: detected or not)",
    )
    p.add_argument("--branches", metavar="F", help="write the per-branch table as CSV")
    p.add_argument("--regions", metavar="F", help="write the FP/FN error regions and their review groups as JSON")
    p.add_argument(
        "--atm22",
        action="store_true",
        help="reproduce the ATM'22 organisers' smoothing and rounding (to compare with published tables)",
    )
    p.add_argument(
        "--label-selector",
        default=None,
        help="which reference values are airway: nonzero (default), value:N or bits:SHIFT:N",
    )
    p.add_argument("--prediction-selector", default=None, help="same for the predictions (default nonzero)")
    add_scoring_options(p)
    add_anatomy_option(p)
    p.add_argument(
        "--tree",
        metavar="PATH",
        help="reuse a parsed reference tree: loaded if it exists, else parsed and saved there "
        "(a folder of <case>.tree.npz in folder mode)",
    )
    p.add_argument(
        "--branch-map",
        metavar="F",
        help="write the reference's branch-id label map (single reference; .nii.gz, .mha or .nrrd)",
    )
    p.add_argument(
        "--resample-to-ct",
        action="store_true",
        help="resample predictions on another grid onto the reference's grid (nearest neighbour); "
        "without it a grid mismatch is an error",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing output files (the first original is kept as NAME.bak) and stale --tree caches",
    )
    p.set_defaults(func=run_evaluate)


@dataclass
class CaseResult:
    case: str
    method: str
    metrics: AirwayMetrics
    regions: list[Any] = field(default_factory=list)
    warnings: list[Any] = field(default_factory=list)
    anatomy: AnatomyScores | None = None  # per lobe and segmental bronchus, by the reference's names


def match_cases(reference: Path, prediction: Path) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """(case id, reference file, prediction file) pairs matched by core.casenames, and the case ids
    without a prediction."""
    from core.casenames import list_predictions, list_references

    refs = list_references(reference)
    preds = list_predictions(prediction)
    pairs = [(name, rp, preds[name]) for name, rp in refs.items() if name in preds]
    return pairs, [name for name in refs if name not in preds]


def _tree_for(
    ref_volume: Any, tree_path: Path | None, progress: Any, plan: Any = None, overwrite: bool | None = None
) -> Any:
    """The reference's parsed tree: from the ``--tree`` cache when it was made from this very reference.

    The cache is keyed by the reference mask's content and grid (core.outputs.content_key):
    a tree of another phantom of the same shape, or of this mask at another
    origin or spacing, is never used. The command line (``plan`` given) refuses
    it unless --overwrite; a library caller whose ``tree_path`` is its own cache
    (``plan`` None, e.g. airway compare) gets it parsed again and replaced.
    """
    from core.errors import InputError
    from core.outputs import content_key
    from core.tree import AirwayTree, parse_tree

    key = content_key(ref_volume)
    if overwrite is None:
        overwrite = plan is None
    if tree_path is not None and tree_path.exists():
        tree = AirwayTree.load(tree_path)
        saved = tree.params.get("source_key")
        if saved == key:
            return tree
        if not overwrite:
            why = (
                "it has no record of the reference it came from (saved by an older version)"
                if saved is None
                else f"it was parsed from another reference (shape {tuple(tree.shape)}; the content or grid differ)"
            )
            raise InputError(
                f"The saved tree cannot be used: {why}.",
                "Delete it, give another --tree path, or pass --overwrite to parse again and replace it.",
                path=tree_path,
            )
    tree = parse_tree(ref_volume, progress=progress)
    tree.params["source_key"] = key
    if tree_path is not None:
        if plan is None:
            tree.save(tree_path)  # atomic on its own
        else:
            plan.stage(tree_path, tree.save)
    return tree


def _input_files(paths: list[Path]) -> list[Path]:
    out = []
    for p in paths:
        out += sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
    return out


def run_evaluate(args: argparse.Namespace) -> int:
    from core.casenames import case_id
    from core.compare.pair import evaluate_pair  # the scoring airway compare runs too
    from core.errors import InputError
    from core.io import VOLUME_SUFFIXES, case_name, read_label, resample_label_to, volume_suffix
    from core.metrics import DEFAULT_DIAMETER_EDGES
    from core.outputs import OutputPlan, check_writable_folder
    from core.regions import find_error_regions
    from core.sanity import check_label, raise_errors
    from core.volume import check_same_grid

    ref_path = Path(args.reference)
    pred_paths = [Path(p) for p in args.prediction]
    if not ref_path.exists():
        raise InputError(
            "Reference not found.", "Give an existing label file or folder with --reference.", path=ref_path
        )
    for p in pred_paths:
        if not p.exists():
            raise InputError(
                "Prediction not found.", "Give existing prediction files or folders with --prediction.", path=p
            )
    folder_mode = ref_path.is_dir()
    if folder_mode and not all(p.is_dir() for p in pred_paths):
        raise InputError(
            "The reference is a folder but a prediction is a file.",
            "Give prediction folders with a folder reference, or files with a file reference.",
        )
    if not folder_mode and any(p.is_dir() for p in pred_paths):
        raise InputError(
            "The reference is a file but a prediction is a folder.",
            "Give a reference folder to evaluate folders of cases.",
        )
    if args.branch_map and folder_mode:
        raise InputError("--branch-map needs a single reference file.", "Give --reference FILE.")
    if args.branch_map and volume_suffix(args.branch_map) not in VOLUME_SUFFIXES:
        raise InputError(
            "Unknown volume format for --branch-map.",
            "End the name with .nii.gz, .nii, .mha or .nrrd.",
            path=args.branch_map,
        )
    edges = tuple(args.diameter_edges) if args.diameter_edges else DEFAULT_DIAMETER_EDGES

    # Every output is checked before any reading or parsing (core.outputs).
    inputs = _input_files([ref_path, *pred_paths])
    plan = OutputPlan(args.overwrite, inputs)
    for flag in ("json", "csv", "branches", "regions", "branch_map"):
        plan.add(getattr(args, flag), "--" + flag.replace("_", "-"))
    if args.csv and args.anatomy:
        for extra in anatomy_csv_paths(Path(args.csv)):
            plan.add(extra, "--csv")
    if args.tree:
        tree_arg = Path(args.tree)
        if folder_mode:
            if tree_arg.exists() and not tree_arg.is_dir():
                raise InputError(
                    "--tree must be a folder when the reference is a folder.",
                    "Give a folder for the <case>.tree.npz files.",
                    path=tree_arg,
                )
            check_writable_folder(tree_arg, flag="--tree")
        elif tree_arg.is_dir():
            raise InputError(
                "--tree is a folder, but the reference is one file.",
                "Give a file name (e.g. ref.tree.npz).",
                path=tree_arg,
            )
        elif not tree_arg.exists():
            plan.add(tree_arg, "--tree")
    plan.check()

    def progress(_k: int, _n: int, what: str) -> None:
        print(f"  {what}...", file=sys.stderr, flush=True)

    # (case, method, reference path, prediction path)
    jobs: list[tuple[str, str, Path, Path]] = []
    if folder_mode:
        from core.casenames import list_references, match_folder, missing_message, no_match_error

        refs = list_references(ref_path)
        names = list(refs)
        for pdir in pred_paths:
            match = match_folder(pdir.name, pdir, names)
            if match.matched == 0:
                raise no_match_error(match)
            if match.missing:
                print(f"warning: {missing_message(match)}", file=sys.stderr)
            jobs += [(name, pdir.name, refs[name], match.files[name]) for name in names if name in match.files]
    else:
        from core.review.naming import distinct_names

        # the same file name in several folders (every ATM'22 team's ATM_305_0000): told apart by folder
        names = distinct_names([(case_name(p), str(p)) for p in pred_paths])
        jobs = [(case_id(ref_path), n, ref_path, p) for n, p in zip(names, pred_paths)]

    results: list[CaseResult] = []
    by_ref: dict[Path, list[tuple[str, str, Path]]] = {}
    for case, method, rp, pp in jobs:
        by_ref.setdefault(rp, []).append((case, method, pp))
    with plan:
        for rp, items in by_ref.items():
            print(f"{case_name(rp)}: reading reference", file=sys.stderr, flush=True)
            ref = read_label(rp, args.label_selector, allow_empty=False)
            raise_errors(check_label(ref, "reference", rp, "--label-selector"))
            tree_path = None
            if args.tree:
                tree_path = Path(args.tree) / f"{case_name(rp)}.tree.npz" if folder_mode else Path(args.tree)
            tree = _tree_for(ref, tree_path, progress, plan, args.overwrite)
            for w in tree.warnings:
                print(f"warning: {case_name(rp)}: {w}", file=sys.stderr)
            ref_names = _names_for(tree, ref.geometry, case_name(rp)) if args.anatomy else None
            if args.branch_map:
                from core.volume import LabelVolume

                plan.write_volume(LabelVolume(tree.branch_label_map(), ref.geometry, name="branches"), args.branch_map)
            for case, method, pp in items:
                print(f"{case}: evaluating {method}", file=sys.stderr, flush=True)
                pred = read_label(pp, args.prediction_selector)
                if args.resample_to_ct and (pred.shape != ref.shape or not pred.geometry.matches(ref.geometry, 1e-3)):
                    pred = resample_label_to(pred, ref)
                    print(
                        f"note: {case}: {pp.name} resampled onto the reference's grid (nearest neighbour)",
                        file=sys.stderr,
                    )
                check_same_grid(ref, pred)
                warnings = [
                    f.message for f in raise_errors(check_label(pred, "prediction", pp, "--prediction-selector"))
                ]
                for w in warnings:
                    print(f"warning: {case}: {w}", file=sys.stderr)
                m = evaluate_pair(
                    pred,
                    ref,
                    tree,
                    atm22=args.atm22,
                    connectivity=args.connectivity,
                    threshold=args.threshold,
                    diameter_edges=edges,
                )
                regs = []
                if args.regions:
                    regs = find_error_regions(pred, ref, tree, lcc_connectivity=args.connectivity)
                scores = None
                if ref_names is not None:
                    from core.anatomy.metrics import anatomy_scores

                    scores = anatomy_scores(tree, ref_names, m)
                results.append(CaseResult(case, method, m, regs, warnings, scores))

        print(format_table(results, folder_mode))
        if args.csv:
            plan.write_text(args.csv, summary_csv(results, folder_mode))
            if args.anatomy:
                lobes_path, segments_path = anatomy_csv_paths(Path(args.csv))
                plan.write_text(lobes_path, lobes_csv(results))
                plan.write_text(segments_path, segments_csv(results))
        if args.json:
            plan.write_text(
                args.json, json.dumps(results_json(results, args, folder_mode), indent=1, default=_json_default)
            )
        if args.branches:
            plan.write_text(args.branches, branches_csv(results))
        if args.regions:
            from core.region_groups import group_regions

            doc = [
                _clean(
                    {
                        "case": r.case,
                        "model": r.method,
                        "regions": [g.as_dict() for g in r.regions],
                        "groups": [g.as_dict() for g in group_regions(r.regions)],
                    }
                )
                for r in results
            ]
            plan.write_text(args.regions, json.dumps(doc if len(doc) > 1 else doc[0], indent=1, default=_json_default))
    return 0


def _names_for(tree: AirwayTree, geometry: Geometry, name: str) -> TreeNames | None:
    """The reference's branch names (core.anatomy), once per reference; None when the labeller fails
    (said on stderr: the overall figures stand without them)."""
    from core.anatomy import label_tree
    from core.errors import AirwayError

    print(f"{name}: naming the reference's branches", file=sys.stderr, flush=True)
    try:
        return label_tree(tree, geometry=geometry)  # directions in the patient frame
    except (AirwayError, ValueError, IndexError) as exc:
        print(f"warning: {name}: no per-lobe figures: the reference could not be named ({exc})", file=sys.stderr)
        return None


def anatomy_csv_paths(csv_path: Path) -> tuple[Path, Path]:
    """``F_lobes.csv`` and ``F_segments.csv`` beside ``--csv F.csv``."""
    stem = csv_path.name[: -len(".csv")] if csv_path.name.lower().endswith(".csv") else csv_path.name
    return csv_path.with_name(f"{stem}_lobes.csv"), csv_path.with_name(f"{stem}_segments.csv")


def lobes_csv(results: list[CaseResult]) -> str:
    """One row per case, model and lobe (plus ``central`` and ``unnamed``); a lobe the reference lacks reads n/a."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["case", "model", "lobe", "td", "bd", "branches", "detected", "length_mm"])
    for r in results:
        if r.anatomy is None:
            continue
        for lobe in r.anatomy.lobes:
            w.writerow(
                [
                    r.case,
                    r.method,
                    lobe.lobe,
                    _na(lobe.td),
                    _na(lobe.bd),
                    lobe.branches,
                    lobe.detected,
                    round(lobe.length_mm, 3),  # as airway compare's metrics_lobes.csv
                ]
            )
    return buf.getvalue()


def segments_csv(results: list[CaseResult]) -> str:
    from core.anatomy.metrics import segment_order

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["case", "model", "segment", "detected"])
    for r in results:
        if r.anatomy is None:
            continue
        seg = r.anatomy.segmental
        flags = {n: 1 for n in seg.detected} | {n: 0 for n in seg.missed}
        for name in sorted(flags, key=segment_order):
            w.writerow([r.case, r.method, name, flags[name]])
    return buf.getvalue()


def _na(v: float) -> float | str:
    return v if math.isfinite(v) else "n/a"


def _segmental_cells(r: CaseResult) -> list[Any]:
    if r.anatomy is None:
        return ["", "", ""]
    seg = r.anatomy.segmental
    return [len(seg.detected), seg.total, " ".join(seg.missed)]


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o).__name__)


def _clean(v: Any) -> Any:
    """JSON has no NaN/Infinity: undefined or unbounded values become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample sd (ddof = 1; nan for one case), as ``airway compare`` reports them."""
    from core.compare.stats import mean_sd

    return mean_sd(values)


def _groups(results: list[CaseResult]) -> dict[str, list[CaseResult]]:
    out: dict[str, list[CaseResult]] = {}
    for r in results:
        out.setdefault(r.method, []).append(r)
    return out


def format_table(results: list[CaseResult], folder_mode: bool) -> str:
    head = ["case", "model"] + [h for _, h in COLUMNS]
    rows = []
    for r in results:
        s = r.metrics.summary()
        rows.append([r.case, r.method] + [_fmt(s[k]) for k, _ in COLUMNS])
    if folder_mode:
        for method, group in _groups(results).items():
            if len(group) < 2:
                continue
            stats = {k: mean_std([g.metrics.summary()[k] for g in group]) for k, _ in COLUMNS}
            rows.append(["mean", method] + [_fmt(stats[k][0]) for k, _ in COLUMNS])
            rows.append(["sd", method] + [_fmt(stats[k][1]) for k, _ in COLUMNS])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    lines = [
        "  ".join(str(x).rjust(w) if i > 1 else str(x).ljust(w) for i, (x, w) in enumerate(zip(line, widths)))
        for line in [head] + rows
    ]
    mode = results[0].metrics.mode if results else "exact"
    note = "ATM'22 rounding" if mode == "atm22" else "exact ratios"
    lines.append(f"(percent; {note}; TDmm = detected centreline length in mm; sd = sample sd)")
    for r in results:
        if r.anatomy is not None:
            lines.append(f"{r.case} / {r.method}: {lobes_text(r.anatomy)}; {r.anatomy.sentence()}")
    return "\n".join(lines)


def lobes_text(scores: AnatomyScores) -> str:
    """ "TD/BD per lobe: RUL 100/100, RML n/a, ..." (percent; n/a = the reference has no branch there)."""
    cells = []
    for lobe in scores.lobes:
        if lobe.lobe == "unnamed" and not lobe.found:
            continue
        cells.append(f"{lobe.lobe} {lobe.td:.0f}/{lobe.bd:.0f}" if lobe.found else f"{lobe.lobe} n/a")
    return "TD/BD per lobe: " + ", ".join(cells)


def _fmt(v: Any) -> str:
    if isinstance(v, int):
        return str(v)
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.3f}" if abs(v) < 1000 else f"{v:.1f}"


def summary_csv(results: list[CaseResult], folder_mode: bool = True) -> str:
    buf = io.StringIO()
    keys = [k for k, _ in COLUMNS] + ["tree_length_mm"]
    anatomy = any(r.anatomy is not None for r in results)
    seg_keys = ["segmental_detected", "segmental_total", "segmental_missed"] if anatomy else []
    w = csv.writer(buf)
    w.writerow(["case", "model"] + keys + seg_keys)
    for r in results:
        s = r.metrics.summary()
        w.writerow([r.case, r.method] + [_clean(s[k]) for k in keys] + (_segmental_cells(r) if anatomy else []))
    for method, group in _groups(results).items():
        if not folder_mode or len(group) < 2:
            continue
        stats = {k: mean_std([g.metrics.summary()[k] for g in group]) for k in keys}
        blank = [""] * len(seg_keys)
        w.writerow(["mean", method] + [_clean(stats[k][0]) for k in keys] + blank)
        w.writerow(["sd", method] + [_clean(stats[k][1]) for k in keys] + blank)
    return buf.getvalue()


def branches_csv(results: list[CaseResult]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        [
            "case",
            "model",
            "branch",
            "parent",
            "generation",
            "length_mm",
            "mean_diameter_mm",
            "min_diameter_mm",
            "centreline_voxels",
            "detected_voxels",
            "detected_share",
            "detected",
        ]
    )
    for r in results:
        for b in r.metrics.branches:
            w.writerow(
                [
                    r.case,
                    r.method,
                    b.id,
                    b.parent if b.parent is not None else "",
                    b.generation,
                    f"{b.length_mm:.3f}",
                    f"{b.mean_diameter_mm:.3f}",
                    f"{b.min_diameter_mm:.3f}",
                    b.centreline_voxels,
                    b.detected_voxels,
                    f"{b.detected_share:.2f}",
                    int(b.detected),
                ]
            )
    return buf.getvalue()


def results_json(results: list[CaseResult], args: argparse.Namespace, folder_mode: bool = True) -> dict[str, Any]:
    cases = []
    for r in results:
        d = r.metrics.as_dict(branches=False)
        entry = {"case": r.case, "model": r.method, **_clean(d), "warnings": list(r.warnings)}
        if r.anatomy is not None:
            entry["anatomy"] = _clean(r.anatomy.as_dict())
        cases.append(entry)
    keys = [k for k, _ in COLUMNS] + ["tree_length_mm"]
    summary = {}
    for method, group in _groups(results).items() if folder_mode else ():
        summary[method] = {
            k: {**dict(zip(("mean", "sd"), mean_std([g.metrics.summary()[k] for g in group]))), "n": len(group)}
            for k in keys
        }
    doc: dict[str, Any] = _clean(
        {
            "reference": str(args.reference),
            "mode": "atm22" if args.atm22 else "exact",
            "connectivity": args.connectivity,
            "detection_threshold": args.threshold,
            "cases": cases,
            "summary": summary,
        }
    )
    return doc


def add_anatomy_option(p: argparse.ArgumentParser) -> None:
    """``--anatomy/--no-anatomy``, the same for `airway evaluate` and `airway compare`."""
    p.add_argument(
        "--anatomy",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="name the reference's branches (lobes, segmental bronchi) and report TD/BD per lobe and the "
        "segmental bronchi detected (default on; --no-anatomy skips the naming, for speed)",
    )


def add_scoring_options(p: argparse.ArgumentParser) -> None:
    """How a prediction is scored, the same options for `airway evaluate` and `airway compare`."""
    from core.metrics import DETECTION_THRESHOLD

    p.add_argument(
        "--connectivity",
        type=int,
        default=6,
        choices=(6, 18, 26),
        help="connectivity of the prediction's largest component (default 6, as ATM'22)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=DETECTION_THRESHOLD,
        help=f"share of a branch's centreline that must be predicted for it to count (default {DETECTION_THRESHOLD})",
    )
    p.add_argument(
        "--diameter-edges",
        type=float,
        nargs="+",
        default=None,
        metavar="MM",
        help="diameter intervals for DSC per diameter (default 0 2 4 6 8)",
    )
