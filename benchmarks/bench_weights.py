"""Time and memory of core.weights.distance_weights on a full-size label (goal: 512x512x400 under 30 s on 2 cores).

The label is a real airway tree when ../shared/data is present (an ATM'22
prediction, 388x512x512, --label to choose another file), else a phantom airway
tree (core.phantom.make_phantom) on a 400x512x512 grid, or with --synthetic a
straight-tube tree drawn here. Each method runs in a
fresh subprocess whose resident memory is sampled every 10 ms; the
baseline is the same computation without the bounding-box crop, with scipy's
exact EDT (what one writes first).

    .venv/bin/python benchmarks/bench_weights.py [--label FILE | --phantom [--generations 8] | --synthetic] [--no-baseline]

Figures depend on the machine's load: on a CPU shared with other jobs, times vary.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPE = (400, 512, 512)
REAL_TREE = ROOT.parent / "shared" / "data" / "atm22" / "preds_YangLab" / "ATM_305_0000.nii.gz"
SPACING_ZYX = (0.9766, 0.6836, 0.6836)


def synthetic_tree(shape=SHAPE, seed: int = 0) -> np.ndarray:
    """A trachea and three generations of straight tubes, radius halving, drawn on the grid."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, bool)

    def tube(a, b, r):
        lo = np.maximum(np.floor(np.minimum(a, b) - r - 1).astype(int), 0)
        hi = np.minimum(np.ceil(np.maximum(a, b) + r + 2).astype(int), shape)
        z, y, x = np.indices(hi - lo)
        p = np.stack([z + lo[0], y + lo[1], x + lo[2]], -1).astype(np.float32)
        ab = (b - a).astype(np.float32)
        t = np.clip(((p - a) @ ab) / float(ab @ ab), 0, 1)
        d = np.linalg.norm(p - (a + t[..., None] * ab), axis=-1)
        mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] |= d <= r

    start = np.array([360.0, 256, 256])
    stack = [(start, np.array([-1.0, 0, 0]), 9.0, 100.0, 0)]
    while stack:
        a, direction, r, length, gen = stack.pop()
        b = np.clip(a + direction * length, 5, np.array(shape) - 6)
        tube(a, b, r)
        if gen < 5 and r > 1.2:
            for sign in (-1, 1):
                turn = rng.normal(size=3)
                turn -= turn @ direction * direction
                new = direction + sign * 0.8 * turn / np.linalg.norm(turn)
                stack.append((b, new / np.linalg.norm(new), r * 0.72, length * 0.75, gen + 1))
    return mask


class _PeakRSS(threading.Thread):
    """Samples the resident set size every 10 ms (ru_maxrss would include the parent's peak: it survives exec)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process()
        self.start_rss = self.peak = self.proc.memory_info().rss
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.01):
            self.peak = max(self.peak, self.proc.memory_info().rss)


def _worker(method: str, path: str) -> None:
    label = np.load(path)
    spacing = tuple(json.loads(Path(path).with_suffix(".json").read_text()))
    sampler = _PeakRSS()
    sampler.start()
    tracemalloc.start()
    t = time.perf_counter()
    cpu = time.process_time()
    if method == "core":
        from core.weights import distance_weights

        w = distance_weights(label, spacing_zyx=spacing)
    else:  # baseline: whole volume, scipy EDT, no crop
        from scipy.ndimage import distance_transform_edt
        from skimage.morphology import skeletonize

        skel = skeletonize(label).astype(bool)
        d = distance_transform_edt(~skel, sampling=spacing)
        d_max = d[label].max()
        w = np.ones(label.shape, np.float32)
        w[label] = np.clip(1 - 0.9 * np.sqrt(d[label] / d_max), 0, 1)
    seconds = time.perf_counter() - t
    cpu_seconds = time.process_time() - cpu
    _, traced_peak = tracemalloc.get_traced_memory()
    sampler.done.set()
    sampler.join()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "traced_peak_mb": traced_peak / 2**20,
                "rss_growth_mb": (sampler.peak - sampler.start_rss) / 2**20,
                "rss_peak_mb": sampler.peak / 2**20,
                "mean_airway_weight": float(w[label].mean()),
            }
        )
    )


def _run(method: str, path: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", method, path],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--label", type=Path, default=None, help=f"a label file (default: {REAL_TREE} if present)")
    ap.add_argument("--phantom", action="store_true", help="use core.phantom even if real data is present")
    ap.add_argument("--synthetic", action="store_true", help="draw a tube tree instead of core.phantom")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--worker", nargs=2, metavar=("METHOD", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(*args.worker)
        return

    t = time.perf_counter()
    spacing = SPACING_ZYX
    label_file = args.label or (REAL_TREE if REAL_TREE.is_file() and not (args.phantom or args.synthetic) else None)
    if label_file is not None:
        from core.io import read_label

        vol = read_label(label_file)
        label, spacing, source = vol.mask, vol.spacing_zyx, f"{label_file.name} (real airway tree)"
    elif args.synthetic:
        label, source = synthetic_tree(), "synthetic tube tree"
    else:
        from core.phantom import make_phantom

        ph = make_phantom(SHAPE, spacing=SPACING_ZYX[::-1], seed=0, generations=args.generations)
        label, source = ph.label.mask, f"core.phantom, {args.generations} generations"
    print(
        f"label: {source}, shape {label.shape}, spacing (z, y, x) {tuple(round(v, 4) for v in spacing)} mm, "
        f"{int(label.sum()):,} airway voxels "
        f"(ready in {time.perf_counter() - t:.1f} s)"
    )
    print(
        f"machine: {os.cpu_count()} CPUs visible, shared with other jobs; wall times are indicative, "
        "CPU time (this process) is steadier"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "label.npy")
        np.save(path, label)
        Path(path).with_suffix(".json").write_text(json.dumps(list(spacing)))
        rows = [("core.weights.distance_weights (bbox crop, edt)", _run("core", path))]
        if not args.no_baseline:
            rows.append(("baseline (full volume, scipy EDT)", _run("baseline", path)))
    for name, r in rows:
        print(
            f"{name:48s} {r['seconds']:7.2f} s wall ({r['cpu_seconds']:6.2f} s CPU)   numpy peak {r['traced_peak_mb']:7.0f} MB   "
            f"RSS +{r['rss_growth_mb']:6.0f} MB (peak {r['rss_peak_mb']:.0f} MB)   mean airway w {r['mean_airway_weight']:.4f}"
        )
    if len(rows) == 2:
        a, b = rows[0][1], rows[1][1]
        print(
            f"speed-up vs baseline: {b['seconds'] / a['seconds']:.1f}x, RSS growth ratio: "
            f"{a['rss_growth_mb'] / max(b['rss_growth_mb'], 1):.2f}"
        )
    goal = rows[0][1]["seconds"] < 30
    print(f"goal (< 30 s for 512x512x400): {'met' if goal else 'NOT met'}")


if __name__ == "__main__":
    main()
