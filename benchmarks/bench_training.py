"""Training figures: step speed, and the shipped demo model's metrics.

    python benchmarks/bench_training.py speed [--width 0.25] [--patch 24] [--batch 4] [--steps 4]
        time of one SGD step of WingsNet, contiguous vs channels_last_3d memory
        format, same process, same inputs; peak RSS.
    python benchmarks/bench_training.py demo-eval [--model resources/models/demo_wingsnet.pt] [--n 10]
        metrics (TD, BD, DSC, precision) of the model on held-out phantoms made
        like its training set (seeds 1000+), and what it does on the real chest
        CT in ../shared/data/chest_ct_dicom (no label): mask volume, component
        count, whether the trachea and main bronchi are found.

The machine these figures come from is shared (2 cores, several other jobs):
timings vary by 2-5x from minute to minute; compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def speed(args) -> None:
    import torch

    from core.models.registry import build_model

    torch.set_num_threads(args.threads)
    x0 = torch.rand(args.batch, 1, args.patch, args.patch, args.patch, generator=torch.Generator().manual_seed(0))
    results = {}
    for _rep in range(2):  # interleaved, so both see the same load
        for cl in (False, True):
            torch.manual_seed(0)
            model = build_model("wingsnet", width=args.width)
            x = x0
            if cl:
                model = model.to(memory_format=torch.channels_last_3d)
                x = x0.contiguous(memory_format=torch.channels_last_3d)
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            times = []
            for _ in range(args.steps + 1):
                t = time.perf_counter()
                out = model(x)
                loss = sum(torch.sigmoid(o).mean() for o in out)
                opt.zero_grad()
                loss.backward()
                opt.step()
                times.append(time.perf_counter() - t)
            results.setdefault(cl, []).extend(times[1:])  # first step warms up
    base = float(np.median(results[False]))
    cl = float(np.median(results[True]))
    print(f"WingsNet width {args.width}, batch {args.batch} x {args.patch}^3, {args.threads} threads (shared CPU)")
    print(f"  contiguous      median step {base:.3f} s")
    print(f"  channels_last   median step {cl:.3f} s   ratio {base / cl:.2f}x")
    print(f"  peak RSS {_peak_rss_mb():.0f} MB")


def _held_out(n: int, size: int, spacing, difficulty: str, seed: int):
    from core.phantom import make_phantom

    for i in range(n):
        yield make_phantom((size,) * 3, spacing=spacing, seed=seed + i, difficulty=difficulty)


def demo_eval(args) -> None:
    import torch

    from core.metrics import evaluate
    from core.segmentation import Predictor

    torch.set_num_threads(args.threads)
    predictor = Predictor(args.model, device="cpu", window=args.window, step=args.step, backend="torch")
    info = (
        json.loads((Path(args.model).with_suffix(".json")).read_text())
        if Path(args.model).with_suffix(".json").exists()
        else {}
    )
    ph = info.get("phantoms", {"size": 48, "spacing": [2.5, 2.5, 3.0], "difficulty": "normal"})
    rows = []
    t0 = time.perf_counter()
    for i, p in enumerate(_held_out(args.n, ph["size"], tuple(ph["spacing"]), ph["difficulty"], args.seed)):
        pred = predictor.predict(p.ct)
        m = evaluate(pred.mask.array, p.label.mask, p.label.geometry.spacing_zyx)
        rows.append({k: float(getattr(m, k)) for k in ("td", "bd", "dsc", "precision")})
        print(f"  phantom seed {args.seed + i}: " + ", ".join(f"{k} {v:.1f}" for k, v in rows[-1].items()), flush=True)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    print(
        f"held-out phantoms ({args.n}, {ph['size']}^3, spacing {ph['spacing']} mm, {ph['difficulty']}), mean %: "
        + ", ".join(f"{k.upper()} {v:.1f}" for k, v in mean.items())
        + f"  ({time.perf_counter() - t0:.0f} s)"
    )

    data = ROOT.parent / "shared" / "data" / "chest_ct_dicom"
    if not data.exists():
        print("real CT: ../shared/data/chest_ct_dicom not found, skipped")
        return
    real_ct(args, data, tuple(ph["spacing"]))


def real_ct(args, folder: Path, train_spacing) -> None:
    import cc3d

    from core.io import read_ct
    from core.preprocess import resample_ct
    from core.segmentation import Predictor
    from core.tree import parse_tree

    ct = read_ct(folder)
    # the demo model saw 2.5 x 2.5 x 3 mm voxels; resample the CT to that grid (linear) so airways have the size it knows
    vol = resample_ct(ct, train_spacing)
    arr = vol.array
    predictor = Predictor(args.model, device="cpu", window=args.window, step=args.step, backend="torch")
    t0 = time.perf_counter()
    pred = predictor.predict(vol)
    seconds = time.perf_counter() - t0
    prob = pred.probabilities.array.astype(np.float32) / 255.0
    raw = prob > 0.5
    n_raw = int(cc3d.connected_components(raw, connectivity=26).max())
    mask = pred.mask.array
    ml = mask.sum() * vol.geometry.voxel_volume_mm3 / 1000.0
    print(
        f"real chest CT {ct.shape} at {ct.geometry.spacing} mm, resampled to {arr.shape} at {train_spacing} mm; "
        f"{pred.windows} windows, {seconds:.0f} s"
    )
    print(
        f"  thresholded mask: {raw.sum()} voxels in {n_raw} components (26-conn.); largest component kept: "
        f"{int(mask.sum())} voxels = {ml:.1f} mL"
    )
    if mask.any():
        zs = np.nonzero(mask.any(axis=(1, 2)))[0]
        print(
            f"  largest component spans slices {zs.min()}..{zs.max()} of {mask.shape[0]} "
            f"({(zs.max() - zs.min() + 1) * train_spacing[2]:.0f} mm head-foot)"
        )
        # axial profile from head to feet: a trachea is one round ~15-20 mm section near the midline,
        # the main bronchi two sections left and right of it below the carina
        world_z = vol.geometry.index_to_world(np.stack([zs, np.zeros_like(zs), np.zeros_like(zs)], 1))[:, 2]
        order = zs[np.argsort(-world_z)]  # superior first
        px = vol.geometry.spacing[0] * vol.geometry.spacing[1]
        for z in order[:: max(1, len(order) // 10)]:
            lab2 = cc3d.connected_components(mask[z], connectivity=8)
            stats = cc3d.statistics(lab2)
            parts = []
            for i in range(1, int(lab2.max()) + 1):
                area = stats["voxel_counts"][i] * px
                cx = vol.geometry.index_to_world(np.array([z, *stats["centroids"][i]]))[0]
                parts.append(f"{area:.0f} mm2 at x={cx:.0f}")
            print(f"    slice {z}: {len(parts)} section(s): " + "; ".join(parts[:4]))
        try:
            tree = parse_tree(mask, vol.geometry.spacing_zyx)
            gens = sorted({b.generation for b in tree.branches})
            print(f"  parsed as a tree: {len(tree.branches)} branches, generations {gens[:8]}")
        except Exception as exc:  # a blob that is no tree is a finding, not a failure of the benchmark
            print(f"  could not parse as a tree: {exc}")
    if args.save:
        from core.io import write_volume

        write_volume(pred.mask, args.save)
        print(f"  mask written to {args.save}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--width", type=float, default=0.25)
    s.add_argument("--patch", type=int, default=24)
    s.add_argument("--batch", type=int, default=4)
    s.add_argument("--steps", type=int, default=3)
    s.add_argument("--threads", type=int, default=2)
    s.set_defaults(func=speed)
    e = sub.add_parser("demo-eval")
    e.add_argument("--model", default=str(ROOT / "resources" / "models" / "demo_wingsnet.pt"))
    e.add_argument("--n", type=int, default=10)
    e.add_argument("--seed", type=int, default=1000)
    e.add_argument("--window", type=int, default=48)
    e.add_argument("--step", type=int, default=48)
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--save", help="write the real CT's mask here (.nii.gz)")
    e.set_defaults(func=demo_eval)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
