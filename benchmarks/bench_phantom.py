"""Time and peak memory of ``make_phantom`` at 64^3, 256^3 and 512 x 512 x 400.

Each size runs in a fresh child process so its peak resident memory is its own.
Printed per size: wall time per stage (from the progress callback), total
time (wall and this process's CPU time, the steadier figure on a shared
machine), peak traced numpy/Python memory (tracemalloc), peak RSS, and two ratios
against baselines measured in the same child: peak memory / one float32 copy of
the volume, and total time / one ``standard_normal`` float32 draw of the volume
(the cost of just making the noise).

With ``--mask LABEL`` it also times ``phantom_from_mask`` on that airway mask
(e.g. ``../shared/data/atm22/preds_YangLab/ATM_305_0000.nii.gz``, 388 x 512 x 512).

Usage: ``python benchmarks/bench_phantom.py [--sizes 64 256 400x512x512] [--generations 8] [--mask LABEL]``.
Timings on a shared CPU vary by several times; say so next to the figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _parse(size: str) -> tuple[int, int, int]:
    parts = [int(v) for v in size.lower().split("x")]
    return (parts[0],) * 3 if len(parts) == 1 else tuple(parts)  # type: ignore[return-value]


def child(shape: tuple[int, int, int], generations: int) -> dict:
    import resource
    import tracemalloc

    import numpy as np

    sys.path.insert(0, str(ROOT))
    from core.phantom import make_phantom

    stages: list[tuple[int, float]] = []
    tracemalloc.start()
    t0 = time.perf_counter()
    c0 = time.process_time()
    p = make_phantom(
        shape, generations=generations, progress=lambda d, n, m: stages.append((d, time.perf_counter() - t0))
    )
    total = time.perf_counter() - t0
    cpu = time.process_time() - c0
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    n = int(np.prod(shape))
    rng = np.random.default_rng(0)
    t1 = time.perf_counter()
    rng.standard_normal(shape, dtype=np.float32)
    noise_s = time.perf_counter() - t1
    names = ["tree+label", "body", "vessels", "walls+lumen", "centreline+blur", "noise+int16"]
    return {
        "shape": list(shape),
        "spacing": list(p.ct.geometry.spacing),
        "branches": len(p.branches),
        "airway_voxels": p.label.voxel_count(),
        "total_s": round(total, 3),
        "cpu_s": round(cpu, 3),
        "stages_s": {names[i]: round(stages[i + 1][1] - stages[i][1], 3) for i in range(len(names))},
        "traced_peak_mb": round(traced / 2**20, 1),
        "rss_peak_mb": round(rss / 2**20, 1),
        "float32_volume_mb": round(4 * n / 2**20, 1),
        "peak_over_float32": round(traced / (4 * n), 2),
        "noise_draw_s": round(noise_s, 3),
        "time_over_noise_draw": round(total / max(noise_s, 1e-9), 2),
    }


def child_mask(path: str) -> dict:
    import resource

    sys.path.insert(0, str(ROOT))
    from core.io import read_label
    from core.phantom import phantom_from_mask

    mask = read_label(path)
    t0, c0 = time.perf_counter(), time.process_time()
    p = phantom_from_mask(mask)
    return {
        "shape": list(p.ct.shape),
        "total_s": round(time.perf_counter() - t0, 3),
        "cpu_s": round(time.process_time() - c0, 3),
        "rss_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "float32_volume_mb": round(4 * p.ct.array.size / 2**20, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["64", "256", "400x512x512"], help="N or ZxYxX")
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--mask", help="also time phantom_from_mask on this airway mask")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-mask", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(_parse(args.child), args.generations)))
        return
    if args.child_mask:
        print(json.dumps(child_mask(args.child_mask)))
        return
    print("make_phantom benchmark (shared CPU: other jobs run beside this one, timings vary several-fold)")
    try:
        import os

        print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    except OSError:
        pass
    for size in args.sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--child", size, "--generations", str(args.generations)],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        z, y, x = r["shape"]
        print(
            f"\n{z} x {y} x {x} (z y x), spacing {r['spacing']} mm, {r['branches']} branches, {r['airway_voxels']} airway voxels"
        )
        print(
            f"  total {r['total_s']:.2f} s wall, {r['cpu_s']:.2f} s CPU   "
            + "  ".join(f"{k} {v:.2f}" for k, v in r["stages_s"].items())
        )
        print(
            f"  peak traced {r['traced_peak_mb']:.0f} MB = {r['peak_over_float32']:.2f} x one float32 volume "
            f"({r['float32_volume_mb']:.0f} MB); peak RSS {r['rss_peak_mb']:.0f} MB"
        )
        print(
            f"  baseline: one float32 normal draw of the volume {r['noise_draw_s']:.2f} s -> phantom = "
            f"{r['time_over_noise_draw']:.1f} x that"
        )
    if args.mask:
        out = subprocess.run(
            [sys.executable, __file__, "--child-mask", args.mask], capture_output=True, text=True, check=True
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        z, y, x = r["shape"]
        print(
            f"\nphantom_from_mask {z} x {y} x {x}: {r['total_s']:.2f} s wall, {r['cpu_s']:.2f} s CPU, "
            f"peak RSS {r['rss_peak_mb']:.0f} MB (one float32 volume {r['float32_volume_mb']:.0f} MB)"
        )


if __name__ == "__main__":
    main()
