"""Does reviewing references pay? The dataset loop measured on phantoms (issue 25, part 3).

1. A phantom dataset at the demo model's size and spacing (48^3, 2.5 x 2.5 x 3.0 mm) whose
   references leave distal branches out (``omit_distal``: label noise as annotators make it;
   the branches stay in the CT).
2. The demo model segments its train and validation cases; a scripted annotator reviews each
   through the headless review session: the model's FP regions against the reference are
   listed and those the whole phantom airway confirms are accepted (core.training.finetune_phantoms).
3. The demo model is fine-tuned twice with ``airway train --dataset DIR --init demo --preset
   finetune`` (same seed, same epochs, same cases): once on the original references
   (``--labels original``), once on the reviewed ones (``--labels reviewed``).
4. The start model and both fine-tuned ones segment held-out phantoms (other seeds, never used in
   training or tuning) scored against their whole airway: TD and BD per case, the gain of the
   reviewed over the unreviewed fine-tune with a paired Wilcoxon signed-rank test
   (scipy.stats.wilcoxon), and the review effort (regions accepted, voxels added).

CPU only; sized for a shared 2-core machine (about 5-10 minutes):

    .venv/bin/python benchmarks/bench_finetune_gain.py [--cases 8] [--held-out 10] [--epochs 5] [--patches 4] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEMO = ROOT / "resources" / "models" / "demo_wingsnet.pt"
SIZE = 48
SPACING = (2.5, 2.5, 3.0)  # the demo model's (resources/models/demo_wingsnet.json)
TRAIN_SEED, HELD_OUT_SEED = 3000, 4000  # the demo model saw seeds 0-14 (train) and 1000-1009 (its held-out)


def _config(path: Path, epochs: int, lr: float, patches: int) -> Path:
    # The finetune preset's learning rate (0.001) and 10 epochs are sized for real CTs and 128^3 patches;
    # 48^3 phantoms give 16 steps an epoch, so a few epochs need a higher rate. The loss is the one the
    # demo model's selected checkpoint was trained with (its stage 1: GUL alpha 0.1, label threshold 0.8).
    text = f"""
[run]
seed = 0
device = "cpu"
num_workers = 0
threads = 2
channels_last = true

[sampling]
patches_per_case = {patches}

[validation]
every = 1

[stage2]
alpha = 0.1
threshold = 0.8
epochs = {epochs}
lr = {lr}
milestones = [{max(epochs - 2, 1)}]
"""
    path.write_text(text, encoding="utf-8")
    return path


def _train(data: Path, labels: str, out: Path, config: Path) -> tuple[Path, float]:
    from core.cli import main

    t0 = time.perf_counter()
    argv = ["train", "--dataset", str(data), "--labels", labels, "--init", str(DEMO), "--preset", "finetune"]
    argv += ["--config", str(config), "--out", str(out), "--no-compare", "--device", "cpu"]
    out.mkdir(parents=True, exist_ok=True)
    # the event stream also goes to stdout: keep it in the run folder, the figures on the terminal
    with open(out / "stdout.jsonl", "w", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        code = main(argv)
    if code != 0:
        raise SystemExit(f"airway train --labels {labels} failed (exit {code}); see {out}/events.jsonl")
    best = out / "checkpoints" / "best.pt"
    return (best if best.is_file() else out / "checkpoints" / "last.pt"), time.perf_counter() - t0


def _score(models: dict[str, Path], seeds: list[int], omit: int) -> dict[str, list[dict[str, float]]]:
    from core.metrics import evaluate
    from core.segmentation import Predictor
    from core.training.finetune_phantoms import noisy_phantom

    phantoms = [noisy_phantom(s, SIZE, SPACING, omit) for s in seeds]
    out: dict[str, list[dict[str, float]]] = {}
    for name, ckpt in models.items():
        predictor = Predictor(ckpt, device="cpu", threads=2)
        rows = []
        for ph in phantoms:
            pred = predictor.predict(ph.ct)
            m = evaluate(pred.mask.array, ph.full_label.mask, ph.ct.geometry.spacing_zyx)
            rows.append({k: float(getattr(m, k)) for k in ("td", "bd", "dsc", "precision")})
        out[name] = rows
    return out


def _reference_quality(data: Path, truth: Path, names: list[str]) -> dict[str, dict[str, float]]:
    """The references against the whole phantom airway, before and after the review (means over cases)."""
    from core.io import read_label
    from core.metrics import evaluate

    out: dict[str, dict[str, float]] = {}
    for version, folder in (("original", data / "labelsTr"), ("reviewed", data / "labelsReviewed")):
        rows = []
        for n in names:
            whole = read_label(truth / f"{n}.nii.gz")
            ref = read_label(folder / f"{n}.nii.gz").mask
            m = evaluate(ref, whole.mask, whole.geometry.spacing_zyx)
            rows.append({k: float(getattr(m, k)) for k in ("td", "bd", "dsc", "precision")})
        out[version] = {k: _mean([r[k] for r in rows]) for k in ("td", "bd", "dsc", "precision")}
    return out


def _wilcoxon(a: list[float], b: list[float]) -> float:
    from scipy.stats import wilcoxon

    if all(abs(x - y) < 1e-12 for x, y in zip(a, b)):
        return 1.0  # no case differs: no evidence of a difference
    return float(wilcoxon(a, b).pvalue)


def _say(text: str) -> None:
    print(f"bench_finetune_gain: {text}", file=sys.stderr, flush=True)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def run(args: argparse.Namespace) -> dict[str, Any]:
    from core.dataset import freeze_split, open_dataset
    from core.io import write_volume
    from core.segmentation import Predictor
    from core.training.finetune_phantoms import review_with_truth, write_noisy_phantom_dataset

    t_all = time.perf_counter()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_finetune_"))
    data, truth, preds = work / "dataset", work / "truth", work / "predictions_demo"
    data_trim = work / "dataset_trimmed"  # the same cases, reviewed by an annotator who trims to the lumen
    for p in (data, data_trim, truth, preds, work / "runs"):
        shutil.rmtree(p, ignore_errors=True)
    t0 = time.perf_counter()
    seeds = list(range(TRAIN_SEED, TRAIN_SEED + args.cases))
    names = write_noisy_phantom_dataset(data, seeds, truth, size=SIZE, spacing=SPACING, omit_distal=args.omit)
    ds = open_dataset(data)
    # every case trains or validates; the held-out phantoms below are the test
    split = freeze_split(ds, seed=0, fractions=(0.8, 0.2, 0.0))
    info = json.loads((truth / "phantoms.json").read_text())["cases"]
    if args.trimmed:
        shutil.copytree(data, data_trim)  # split and state included
    t_data = time.perf_counter() - t0

    t0 = time.perf_counter()
    predictor = Predictor(DEMO, device="cpu", threads=2)
    for name in names:
        pred = predictor.predict(open_dataset_case_ct(ds, name))
        write_volume(pred.mask, preds / f"{name}.nii.gz")
    efforts = [
        review_with_truth(ds, n, preds / f"{n}.nii.gz", truth / f"{n}.nii.gz", min_truth_fraction=args.min_truth)
        for n in names
    ]
    trimmed_efforts = []
    if args.trimmed:
        ds_trim = open_dataset(data_trim)
        trimmed_efforts = [
            review_with_truth(
                ds_trim, n, preds / f"{n}.nii.gz", truth / f"{n}.nii.gz", min_truth_fraction=args.min_truth, trim=True
            )
            for n in names
        ]
    t_review = time.perf_counter() - t0
    _say(f"reviewed {len(efforts)} cases: {sum(e.accepted for e in efforts)} regions accepted ({t_review:.0f} s)")

    cfg = _config(work / "bench_finetune.toml", args.epochs, args.lr, args.patches)
    ckpt_orig, t_orig = _train(data, "original", work / "runs" / "original", cfg)
    _say(f"fine-tuned on the original references ({t_orig:.0f} s)")
    ckpt_rev, t_rev = _train(data, "reviewed", work / "runs" / "reviewed", cfg)
    _say(f"fine-tuned on the reviewed references ({t_rev:.0f} s)")
    models = {"init": DEMO, "original": ckpt_orig, "reviewed": ckpt_rev}
    seconds = {"train_original": t_orig, "train_reviewed": t_rev}
    if args.trimmed:
        models["trimmed"], seconds["train_trimmed"] = _train(data_trim, "reviewed", work / "runs" / "trimmed", cfg)
        _say(f"fine-tuned on the trimmed reviewed references ({seconds['train_trimmed']:.0f} s)")

    t0 = time.perf_counter()
    held = list(range(HELD_OUT_SEED, HELD_OUT_SEED + args.held_out))
    scores = _score(models, held, args.omit)
    t_eval = time.perf_counter() - t0
    quality = _reference_quality(data, truth, names)
    if args.trimmed:
        quality["trimmed"] = _reference_quality(data_trim, truth, names)["reviewed"]

    result: dict[str, Any] = {
        "setup": {
            "cases": args.cases,
            "split": {k: len(v) for k, v in split.items()},
            "size": SIZE,
            "spacing": list(SPACING),
            "omit_distal": args.omit,
            "min_truth_fraction": args.min_truth,
            "omitted_voxels_total": sum(v["omitted_voxels"] for v in info.values()),
            "epochs": args.epochs,
            "patches_per_case": args.patches,
            "lr": args.lr,
            "held_out_seeds": [held[0], held[-1]],
        },
        "review": {
            "fp_regions": sum(e.fp_regions for e in efforts),
            "accepted": sum(e.accepted for e in efforts),
            "rejected": sum(e.rejected for e in efforts),
            "voxels_added": sum(e.voxels_added for e in efforts),
            "omitted_voxels": sum(v["omitted_voxels"] for v in info.values()),
            "seconds": sum(e.seconds for e in efforts),
            "trimmed_voxels": sum(e.voxels_trimmed for e in trimmed_efforts),
            "references_vs_whole_airway": quality,
        },
        "held_out": {
            m: {k: _mean([r[k] for r in rows]) for k in ("td", "bd", "dsc", "precision")} for m, rows in scores.items()
        },
        "gain_minus_original": {},
        "per_case": scores,
        "seconds": {
            "data": t_data,
            "predict_and_review": t_review,
            **seconds,
            "evaluate": t_eval,
            "total": time.perf_counter() - t_all,
        },
        "work": str(work),
    }
    for model in [m for m in ("reviewed", "trimmed") if m in scores]:
        gains = result["gain_minus_original"][model] = {}
        for k in ("td", "bd", "dsc", "precision"):
            a = [r[k] for r in scores[model]]
            b = [r[k] for r in scores["original"]]
            gains[k] = {
                "mean": _mean([x - y for x, y in zip(a, b)]),
                "wilcoxon_p": _wilcoxon(a, b),
                "better": sum(x > y + 1e-9 for x, y in zip(a, b)),
                "worse": sum(x < y - 1e-9 for x, y in zip(a, b)),
            }
    return result


def open_dataset_case_ct(ds: Any, name: str) -> Any:
    from core.io import read_ct

    return read_ct(ds.case(name).image)


def _print(r: dict[str, Any]) -> None:
    s, rv = r["setup"], r["review"]
    print(
        f"dataset: {s['cases']} phantoms {s['size']}^3 at {s['spacing']} mm, split {s['split']}, "
        f"references omit up to {s['omit_distal']} distal branches ({rv['omitted_voxels']} airway voxels missing)"
    )
    print(
        f"review: {rv['fp_regions']} FP regions listed, {rv['accepted']} accepted (>= {s['min_truth_fraction']:.0%} "
        f"airway in the whole phantom), {rv['rejected']} left; "
        f"{rv['voxels_added']} voxels added to the references ({rv['seconds']:.1f} s scripted)"
        + (
            f"; the trimming annotator erased {rv['trimmed_voxels']} of them again"
            if "trimmed" in r["held_out"]
            else ""
        )
    )
    for version, q in rv["references_vs_whole_airway"].items():
        print(
            f"  {version} references vs the whole airway: TD {q['td']:.2f}, BD {q['bd']:.2f}, DSC {q['dsc']:.2f}, "
            f"precision {q['precision']:.2f} %"
        )
    print(f"fine-tune: {s['epochs']} epochs at lr {s['lr']} from the demo model, same seed, each label version")
    print(
        f"held-out: {len(r['per_case']['init'])} phantoms (seeds {s['held_out_seeds'][0]}-{s['held_out_seeds'][1]}), whole airway as reference"
    )
    print(f"{'model':<12}{'TD %':>8}{'BD %':>8}{'DSC %':>8}{'prec %':>8}")
    for m, v in r["held_out"].items():
        print(f"{m:<12}{v['td']:8.2f}{v['bd']:8.2f}{v['dsc']:8.2f}{v['precision']:8.2f}")
    for model, gains in r["gain_minus_original"].items():
        for k in ("td", "bd", "dsc", "precision"):
            g = gains[k]
            print(
                f"gain {k.upper():<9} {model} - original: {g['mean']:+.2f} points, Wilcoxon p = {g['wilcoxon_p']:.3g} "
                f"(better on {g['better']}, worse on {g['worse']} of {len(r['per_case']['init'])})"
            )
    secs = ", ".join(f"{k} {v:.0f} s" for k, v in r["seconds"].items())
    print(f"time: {secs}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=8, help="phantoms in the dataset (train + validation)")
    ap.add_argument("--held-out", type=int, default=10, help="held-out phantoms scored with their whole airway")
    ap.add_argument("--omit", type=int, default=12, help="distal branches left out of each reference")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--patches", type=int, default=4, help="patches per case and epoch (the demo model: 8)")
    ap.add_argument("--lr", type=float, default=0.005)
    ap.add_argument(
        "--min-truth",
        type=float,
        default=0.2,
        help="the annotator accepts an FP region when at least this fraction of it is airway in the whole phantom",
    )
    ap.add_argument("--work", help="working folder (default: a new temporary folder)")
    ap.add_argument(
        "--no-trimmed",
        dest="trimmed",
        action="store_false",
        help="skip the third arm: the same review by an annotator who erases what accepted regions hold beyond "
        "the airway",
    )
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    result = run(args)
    _print(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
