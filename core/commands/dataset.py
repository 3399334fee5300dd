"""``airway dataset summary DIR`` and ``airway dataset split DIR --seed N``: a dataset's progress and its frozen split."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.outputs import OutputPlan

UNMATCHED_SHOWN = 20
STATUS_CHOICES = ("todo", "in_review", "done", "flagged")  # core.dataset.STATUSES, without importing it for --help


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "dataset",
        help="a dataset's review progress and figures (summary), and its frozen train/validation/test split",
        description="Open a dataset (nnU-Net v2, ATM'22, a folder of CASE_0000 images and CASE labels, or a CSV "
        "manifest case,ct,reference,<model>...) and report on it. The state lives in airway_dataset.json beside "
        "the data.",
    )
    sub = p.add_subparsers(dest="dataset_command", metavar="ACTION")
    sub.required = True

    s = sub.add_parser("summary", help="statuses, reviewers, time and figures per case and model")
    s.add_argument("dataset", metavar="DIR", help="dataset folder or CSV manifest")
    s.add_argument("--json", nargs="?", const="-", metavar="OUT", help="write JSON (to OUT, or to stdout)")
    s.add_argument("--csv", metavar="OUT", help="write one row per case and model as CSV ('-' for stdout)")
    s.add_argument(
        "--predictions", nargs="+", default=[], metavar="DIR", help="more prediction folders (one model each, NAME=DIR)"
    )
    s.add_argument(
        "--overwrite", action="store_true", help="replace existing --csv/--json files (the first kept as .bak)"
    )
    s.set_defaults(func=run_summary)

    e = sub.add_parser(
        "evaluate",
        help="TD/BD/DSC/precision of every prediction against the case's label, recorded in the state file",
        description="Evaluates each model's prediction of each case (as airway evaluate) against the case's label "
        "and records the figures with the content keys of both masks: pairs unchanged since are not evaluated again.",
    )
    e.add_argument("dataset", metavar="DIR", help="dataset folder or CSV manifest")
    e.add_argument(
        "--labels",
        choices=("best", "original", "reviewed"),
        default="best",
        help="which label: the reviewed one where there is one (best, default), the original, or reviewed only",
    )
    e.add_argument("--models", nargs="+", metavar="MODEL", help="only these models (prediction folder names)")
    e.add_argument("--cases", nargs="+", metavar="CASE", help="only these cases")
    e.add_argument(
        "--predictions", nargs="+", default=[], metavar="DIR", help="more prediction folders (one model each, NAME=DIR)"
    )
    e.add_argument("--force", action="store_true", help="evaluate again even where the masks are unchanged")
    e.set_defaults(func=run_evaluate)

    c = sub.add_parser(
        "status",
        help="set the status (and reviewer, note) of cases from a script",
        description="Sets cases' review status in the dataset's state file (under its lock, recorded in each case's "
        "history), as the app's worklist does.",
    )
    c.add_argument("dataset", metavar="DIR", help="dataset folder or CSV manifest")
    c.add_argument("cases", nargs="+", metavar="CASE", help="case names")
    c.add_argument("--set", dest="status", required=True, choices=STATUS_CHOICES, help="the new status")
    c.add_argument("--reviewer", help="who (default: the login name in the history, the case's reviewer unchanged)")
    c.add_argument("--note", help="replace the case's note")
    c.set_defaults(func=run_status)

    t = sub.add_parser("split", help="freeze the train/validation/test split (never reshuffled once frozen)")
    t.add_argument("dataset", metavar="DIR", help="dataset folder or CSV manifest")
    t.add_argument("--seed", type=int, required=True, help="seed of the split (the frozen split keeps its own)")
    t.add_argument(
        "--fractions",
        type=float,
        nargs=3,
        metavar=("TRAIN", "VAL", "TEST"),
        default=None,
        help="parts of the cases (default 0.7 0.15 0.15; the frozen split keeps its own)",
    )
    t.add_argument("--force", action="store_true", help="split again with this seed and these fractions")
    t.add_argument("--json", action="store_true", help="print the split as JSON")
    t.set_defaults(func=run_split)


def _warn_unmatched(ds: Any) -> None:
    for note in ds.notes:
        print(f"airway: note: {note}", file=sys.stderr)
    for line in ds.missing:
        print(f"airway: missing: {line}", file=sys.stderr)
    if ds.unmatched:
        print(f"airway: {len(ds.unmatched)} file(s) match no case:", file=sys.stderr)
        for p in ds.unmatched[:UNMATCHED_SHOWN]:
            print(f"  {p}", file=sys.stderr)
        if len(ds.unmatched) > UNMATCHED_SHOWN:
            print(f"  and {len(ds.unmatched) - UNMATCHED_SHOWN} more", file=sys.stderr)


def _write_text(plan: OutputPlan, out: str, text: str) -> None:
    if out == "-":
        sys.stdout.write(text)
    else:
        plan.write_text(out, text)


def _csv_text(rows: list[dict[str, Any]]) -> str:
    from core.dataset.summary import COLUMNS

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r.get(k) for k in COLUMNS})
    return buf.getvalue()


def _minutes(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


def run_summary(args: argparse.Namespace) -> int:
    from core.dataset import SPLIT_PARTS, open_dataset, read_state
    from core.dataset.summary import model_means, progress_text, status_counts, summary_rows
    from core.outputs import OutputPlan

    # outputs are checked before the dataset is read: an existing file without --overwrite stops here
    plan = OutputPlan(args.overwrite, [args.dataset])
    for flag in ("json", "csv"):
        out = getattr(args, flag)
        if out and out != "-":
            plan.add(out, f"--{flag}")
    plan.check()
    ds = open_dataset(args.dataset, predictions=args.predictions)
    state = read_state(ds)
    rows = summary_rows(ds, state)
    counts = status_counts(ds, state)
    _warn_unmatched(ds)
    if args.json:
        data = {
            "dataset": str(ds.source or ds.root),
            "layout": ds.layout,
            "cases": len(ds.cases),
            "counts": counts,
            "progress": progress_text(counts),
            "models": ds.models,
            "split_seed": state.split_seed,
            "means": model_means(rows),
            "rows": rows,
            "unmatched": [str(p) for p in ds.unmatched],
            "missing": ds.missing,
        }
        _write_text(plan, args.json, json.dumps(data, indent=1) + "\n")
    if args.csv:
        _write_text(plan, args.csv, _csv_text(rows))
    plan.commit()
    if args.json != "-" and args.csv != "-":  # the short table, unless stdout carries the data
        seconds = sum(float(state.case(c).seconds_spent) for c in ds.case_ids)
        print(f"{ds.source or ds.root} ({ds.layout}, {len(ds.cases)} cases)")
        print(f"{progress_text(counts)}; review time {_minutes(seconds)}")
        print("  ".join(f"{k}: {v}" for k, v in counts.items()))
        parts = {part: sum(1 for c in ds.cases if c.split == part) for part in SPLIT_PARTS}
        if any(parts.values()):
            shown = ", ".join(f"{k} {v}" for k, v in parts.items())
            print(f"split (seed {state.split_seed}): {shown}")
        flagged = [c for c in ds.case_ids if state.case(c).status == "flagged"]
        for cid in flagged[:UNMATCHED_SHOWN]:
            note = state.case(cid).note
            print(f"flagged: {cid}" + (f" ({note})" if note else ""))
        if len(flagged) > UNMATCHED_SHOWN:
            print(f"flagged: and {len(flagged) - UNMATCHED_SHOWN} more")
        reviewed = sum(1 for c in ds.cases if c.reviewed is not None)
        if reviewed:
            print(f"reviewed labels: {reviewed} in {ds.reviewed_dir.name}/")
        means = model_means(rows)
        if means:
            print(f"{'model':<24} {'cases':>5} {'td':>7} {'bd':>7} {'dsc':>7} {'precision':>9}")
            for model, m in means.items():
                vals = [("" if m[f] is None else f"{m[f]:.1f}") for f in ("td", "bd", "dsc", "precision")]
                print(f"{model:<24} {int(m['n'] or 0):>5} {vals[0]:>7} {vals[1]:>7} {vals[2]:>7} {vals[3]:>9}")
    return 0


def run_split(args: argparse.Namespace) -> int:
    from core.dataset import freeze_split_report, open_dataset

    ds = open_dataset(args.dataset)
    _warn_unmatched(ds)
    report = freeze_split_report(ds, args.seed, args.fractions, force=args.force)
    for note in ds.notes:
        print(f"airway: note: {note}", file=sys.stderr)
    if args.json:
        data = {
            "seed": report.seed,
            "fractions": list(report.fractions),
            "created": report.created_at,
            "split": report.split,
            "added": report.added,
            "removed": report.removed,
        }
        print(json.dumps(data, indent=1))
        return 0
    verb = "frozen now" if report.created else f"frozen {report.created_at}" if report.created_at else "frozen"
    counts = ", ".join(f"{part} {n}" for part, n in report.counts().items())
    print(f"split of {len(ds.cases)} cases, seed {report.seed} ({verb}): {counts}")
    for part, ids in report.added.items():
        print(f"added to {part}: {', '.join(ids)}")
    if report.removed:
        print(f"removed (no longer in the dataset): {', '.join(report.removed)}")
    print(f"stored in {Path(ds.state_path)}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from core.dataset import open_dataset
    from core.dataset.figures import evaluate_dataset

    ds = open_dataset(args.dataset, predictions=args.predictions)
    _warn_unmatched(ds)

    def progress(k: int, n: int, what: str) -> None:
        if k < n:
            print(f"[{k + 1}/{n}] {what}", file=sys.stderr, flush=True)

    records = evaluate_dataset(
        ds, label=args.labels, models=args.models, cases=args.cases, force=args.force, progress=progress
    )
    if not records:
        print(f"nothing to evaluate: no case has both a {args.labels} label and a prediction")
        return 0
    print(f"{'case':<16} {'model':<20} {'td':>6} {'bd':>6} {'dsc':>6} {'precision':>9}")
    for r in records:
        if r.status == "failed":
            print(f"{r.case_id:<16} {r.model:<20} failed: {r.reason}")
            continue
        vals = ["" if r.figures.get(f) is None else f"{r.figures[f]:.1f}" for f in ("td", "bd", "dsc", "precision")]
        mark = " (unchanged)" if r.status == "cached" else ""
        print(f"{r.case_id:<16} {r.model:<20} {vals[0]:>6} {vals[1]:>6} {vals[2]:>6} {vals[3]:>9}{mark}")
    counts = {s: sum(1 for r in records if r.status == s) for s in ("evaluated", "cached", "failed")}
    print(f"{counts['evaluated']} evaluated, {counts['cached']} unchanged, {counts['failed']} failed")
    return 1 if counts["failed"] else 0


def run_status(args: argparse.Namespace) -> int:
    from core.dataset import open_dataset, set_case

    ds = open_dataset(args.dataset)
    for cid in args.cases:
        ds.case(cid)  # every name checked before any is changed
    fields: dict[str, Any] = {"status": args.status}
    if args.reviewer:
        fields["reviewer"] = args.reviewer
    if args.note is not None:
        fields["note"] = args.note
    for cid in args.cases:
        set_case(ds, cid, **fields)
    for note in ds.notes:
        print(f"airway: note: {note}", file=sys.stderr)
    print(f"{len(args.cases)} case(s) set to {args.status}")
    return 0
