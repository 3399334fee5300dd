"""``airway compare``: several models over a folder of cases, with statistics and a report.

airway compare --reference REF_DIR --predictions NAME=DIR [NAME=DIR ...] --out OUT
airway compare --reference REF_DIR --cts CT_DIR --models NAME=CKPT [...] --out OUT
airway compare --agreement A B [--json F]       (two predictions of one case, no reference)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.compare.batch import CompareResult, Failure


def register(subparsers: Any) -> None:
    from core.commands.evaluate import add_anatomy_option, add_scoring_options

    p = subparsers.add_parser(
        "compare",
        help="compare models over a folder of cases: metrics, mean/sd, Wilcoxon tests, plots, HTML report",
        description="Evaluate every case x model (ATM'22 definitions, as `airway evaluate`), cached by content so an "
        "unchanged rerun is near instant; write metrics.csv, summary.csv, tests.csv, DSC per diameter, "
        "BD per generation, TD/BD per lobe and the segmental bronchi detected, and report.html into --out, as one set (staged, then renamed into place). "
        "Cases are matched by name: the image CASE_0000.nii.gz, the label CASE.nii.gz and the prediction "
        "CASE.nii.gz (also CASE_airway.nii.gz or CASE_0000.nii.gz, as earlier versions and ATM'22 teams wrote).",
    )
    p.add_argument("--reference", metavar="REF_DIR", help="folder of reference labels")
    p.add_argument("--predictions", nargs="+", metavar="NAME=DIR", default=[], help="a folder of predictions per model")
    p.add_argument("--cts", metavar="CT_DIR", help="folder of CTs to segment with --models")
    p.add_argument("--models", nargs="+", metavar="NAME=CKPT", default=[], help="a checkpoint per model (with --cts)")
    p.add_argument("--out", metavar="OUT", help="output folder")
    p.add_argument("--cache", metavar="DIR", help="cache folder (default OUT/.cache)")
    p.add_argument("--no-cache", action="store_true", help="evaluate everything again, store nothing")
    p.add_argument("--no-snapshots", action="store_true", help="leave the 3D snapshots out of the report")
    p.add_argument("--atm22", action="store_true", help="ATM'22 organisers' smoothing and rounding")
    p.add_argument("--label-selector", default=None, help="which reference values are airway (default nonzero)")
    p.add_argument("--prediction-selector", default=None, help="same for the predictions")
    add_scoring_options(p)
    add_anatomy_option(p)
    p.add_argument("--device", default="auto", help="for --models: auto, cpu, cuda, cuda:N")
    p.add_argument("--backend", default="auto", help="for --models: CPU engine (see airway segment)")
    p.add_argument("--threads", type=int, default=None, help="for --models: CPU threads")
    p.add_argument(
        "--agreement",
        nargs=2,
        metavar=("A", "B"),
        help="two predictions of one case, no reference: Dice between them, branches one finds and the other misses",
    )
    p.add_argument("--json", metavar="F", help="with --agreement: write the result as JSON")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an --out folder that holds other files or another comparison (kept as OUT.bak), "
        "or over an existing --json",
    )
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="go on when a model has no prediction for any reference case (an error otherwise)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    p.set_defaults(func=handle)


def _pairs(values: list[str], what: str) -> dict[str, Path]:
    from core.errors import InputError

    out: dict[str, Path] = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise InputError(f"'{v}' is not NAME=PATH.", f"Give {what} as NAME=PATH, e.g. dice=runs/dice/best.pt.")
        if name in out:
            raise InputError(f"Model name '{name}' is given twice.", "Give each model its own name.")
        out[name] = Path(path)
    return out


def handle(args: argparse.Namespace) -> int:
    from core.errors import InputError

    if args.agreement:
        return _agreement(args)
    if not args.reference or not args.out:
        raise InputError(
            "--reference and --out are needed.",
            "airway compare --reference REF_DIR --predictions NAME=DIR ... --out OUT",
        )
    preds = _pairs(args.predictions, "--predictions")
    models = _pairs(args.models, "--models")
    if models and not args.cts:
        raise InputError("--models needs --cts (the CTs to segment).", "Add --cts CT_DIR.")
    if args.cts and not models:
        raise InputError("--cts needs --models NAME=CKPT.", "Add --models NAME=CKPT ...")
    clash = set(preds) & set(models)
    if clash:
        raise InputError(f"Model name(s) {', '.join(sorted(clash))} used twice.", "Give each model its own name.")
    if not preds and not models:
        raise InputError(
            "No model to compare.", "Give --predictions NAME=DIR ... or --cts CT_DIR --models NAME=CKPT ..."
        )
    return run(args, preds, models)


def run(args: argparse.Namespace, preds: dict[str, Path], models: dict[str, Path]) -> int:
    from dataclasses import asdict

    from core.compare import CompareSettings, compare_folders, predict_folders
    from core.compare.cache import Cache
    from core.compare.output import write_set
    from core.compare.outset import CompareFolder, identity
    from core.metrics import DEFAULT_DIAMETER_EDGES

    out = Path(args.out)

    def say(text: str) -> None:
        if not args.quiet or text.startswith("note:"):
            print(text if text.startswith("note:") else f"airway compare: {text}", file=sys.stderr, flush=True)

    def progress(done: float, total: float, what: str) -> None:
        say(f"[{done:g}/{total:g}] {what}")

    settings = CompareSettings(
        atm22=args.atm22,
        connectivity=args.connectivity,
        detection_threshold=args.threshold,
        diameter_edges=tuple(args.diameter_edges or DEFAULT_DIAMETER_EDGES),
        label_selector=args.label_selector,
        prediction_selector=args.prediction_selector,
        anatomy=args.anatomy,
    )
    ref_dir = str(Path(args.reference).absolute())
    sources = {m: str(p.absolute()) for m, p in preds.items()}
    sources.update({m: str(p) for m, p in models.items()})
    ct_dir = str(Path(args.cts).resolve()) if args.cts else ""
    inputs = [args.reference, args.cts, args.cache, *preds.values(), *models.values()]
    t0 = time.perf_counter()
    with CompareFolder(
        out,
        overwrite=args.overwrite,
        identity=identity(ref_dir, sources, ct_dir, asdict(settings)),
        inputs=inputs,
        say=say,
    ) as folder:
        cache_dir = None if args.no_cache else Path(args.cache) if args.cache else folder.staging / ".cache"
        seg_failures: list[Failure] = []
        gate: dict[str, dict[str, dict[str, Any]]] = {}
        seg_cache = Cache(cache_dir)
        if models:
            dirs, seg_failures = predict_folders(
                args.cts,
                models,
                folder.staging / "predictions",
                device=args.device,
                backend=args.backend,
                threads=args.threads,
                cache=seg_cache,
                progress=progress,
                say=say,
                gate=gate,
            )
            preds = {**preds, **dirs}
        result = compare_folders(
            args.reference,
            preds,
            settings=settings,
            cache_dir=cache_dir,
            progress=progress,
            allow_missing=args.allow_missing or bool(seg_failures),  # a failed segmentation is named already
        )
        result.sources = sources
        result.ct_dir = ct_dir
        result.gate = gate
        result.cache_stats.update(seg_cache.stats)
        seg_failed = {(f.case, f.model) for f in seg_failures}
        result.failures = seg_failures + [f for f in result.failures if (f.case, f.model) not in seg_failed]
        notes = write_set(result, folder, snapshots=not args.no_snapshots, cache_dir=cache_dir, say=say)
        if folder.backed_up:
            print(f"note: the earlier contents of {out} are kept in {folder.backup}", file=sys.stderr)
    _print_summary(result)
    for note in result.notes:
        print(f"warning: {note}", file=sys.stderr)
    for f in result.failures:
        print(f"warning: {f.case} / {f.model}: {f.message}", file=sys.stderr)
    for m in result.gate_failed_everywhere():
        print(
            f"warning: {m}: every mask failed the output gate (it does not look like these CTs' airway); "
            "see the 'gate' column of metrics.csv and gate.csv",
            file=sys.stderr,
        )
    for key in ("figures_note", "snapshots_note"):
        if notes[key] and not (key == "snapshots_note" and args.no_snapshots):
            print(f"note: {notes[key]}", file=sys.stderr)
    hits = result.cache_stats.get("metrics_hits", 0)
    say(f"{len(result.rows)} evaluation(s) ({hits} from the cache) in {time.perf_counter() - t0:.1f} s -> {out}")
    return 0


def _print_summary(result: CompareResult) -> None:
    from core.compare.output import gate_text
    from core.compare.report import gate_counts
    from core.compare.stats import summary_rows

    keys = ("td", "bd", "dsc", "precision")

    def cell(mean: float, sd: float) -> str:
        if mean != mean:  # nan
            return f"{'-':>14}"
        return f"{mean:6.2f} +- {sd:5.2f}" if sd == sd else f"{mean:6.2f} +-   n/a"

    gate_col = bool(result.gate)
    print(
        "model".ljust(16)
        + "    n  "
        + "  ".join(f"{k.upper():>14}" for k in keys)
        + ("  output gate" if gate_col else "")
    )
    for r in summary_rows(result, keys):
        cells = "  ".join(cell(r[f"{k}_mean"], r[f"{k}_sd"]) for k in keys)
        gate = ""
        if gate_col:
            ok, seen = gate_counts(result, r["model"])
            gate = f"  passed {ok} of {seen}" if seen else "  -"
        print(f"{r['model'][:16].ljust(16)}{r['n']:5d}  {cells}{gate}")
    if result.settings.anatomy:
        from core.compare.anatomy import has_anatomy, lobe_summary, misses_text

        if has_anatomy(result):
            lobes = lobe_summary(result)
            for m in result.models:
                print(f"{m}: {misses_text(result, lobes, m)}")
    for model, per in result.gate.items():
        for case, g in per.items():
            if not g.get("passed"):
                print(f"gate: {case} / {model}: {gate_text(g)}")


def _agreement(args: argparse.Namespace) -> int:
    from core.compare.agreement import agreement
    from core.io import case_name, read_label

    pa, pb = (Path(p) for p in args.agreement)
    if args.json:
        from core.outputs import check_output

        check_output(args.json, flag="--json", overwrite=args.overwrite, inputs=[pa, pb])
    a = read_label(pa, args.prediction_selector)
    b = read_label(pb, args.prediction_selector, reference=a)
    na, nb = case_name(pa), case_name(pb)
    if na == nb:
        na, nb = f"{pa.parent.name}/{na}", f"{pb.parent.name}/{nb}"
    res = agreement(a, b, name_a=na, name_b=nb, connectivity=args.connectivity, detection_threshold=args.threshold)
    print(
        f"Dice {res.dice:.2f}%  ({res.both_voxels} shared voxels, {res.a_only_voxels} only in {na}, "
        f"{res.b_only_voxels} only in {nb})"
    )
    print(
        f"{na}: {res.a_branches} branches, {len(res.a_branches_missed_by_b)} missed by {nb}"
        + (
            f" (by generation {dict(sorted(res.a_generations_missed_by_b.items()))})"
            if res.a_branches_missed_by_b
            else ""
        )
    )
    print(
        f"{nb}: {res.b_branches} branches, {len(res.b_branches_missed_by_a)} missed by {na}"
        + (
            f" (by generation {dict(sorted(res.b_generations_missed_by_a.items()))})"
            if res.b_branches_missed_by_a
            else ""
        )
    )
    if args.json:
        from core.outputs import atomic_write_bytes as atomic_write

        atomic_write(Path(args.json), json.dumps(res.as_dict(), indent=1).encode())
    return 0
