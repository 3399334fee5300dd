"""Time and peak memory of the whole airway evaluation: tree parse, metrics, error regions.

    .venv/bin/python benchmarks/bench_metrics.py [--baseline] [--no-phantom] [--threads N]

Cases:
1. the real ATM'22 pair in ../shared/data (YangLab as reference, timi as
   prediction; 388 x 512 x 512), skipped when the data are absent;
2. a 400 x 512 x 512 phantom (core.phantom.make_phantom) against itself with
   its distal branches omitted (skipped if core.phantom is missing).

``--baseline`` also runs the organisers' procedure as published (volume-wide
scans per branch: one ``tree_parsing == i`` pass per region and per merge,
``np.where`` over the whole volume per branch for BD), re-typed here from
its description, on the real pair, so the ratio comes from the same run. It
takes minutes and several GB.

Per step: wall time, CPU time of this process (all threads; on a machine
shared with others the wall time is the larger), peak resident set size
(psutil, sampled every 5 ms) above the RSS at the step's start, and
tracemalloc's peak of Python/numpy allocations above those held at the start.
Figures depend on the machine's load; say so when quoting them.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "atm22"


class Step:
    """Context manager measuring wall time, peak RSS growth and tracemalloc peak."""

    rows: list[tuple[str, float, float, float, float]] = []

    def __init__(self, name: str):
        import psutil

        self.name = name
        self.proc = psutil.Process()

    def __enter__(self):
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self.stop = threading.Event()

        def sample():
            while not self.stop.wait(0.005):
                self.peak = max(self.peak, self.proc.memory_info().rss)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        tracemalloc.reset_peak()
        self.traced0, _ = tracemalloc.get_traced_memory()
        self.cpu0 = time.process_time()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        dt = time.perf_counter() - self.t0
        cpu = time.process_time() - self.cpu0
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        _, tpeak = tracemalloc.get_traced_memory()
        row = (self.name, dt, cpu, (self.peak - self.base) / 2**20, (tpeak - self.traced0) / 2**20)
        Step.rows.append(row)
        print(
            f"  {row[0]:<34} {row[1]:7.2f} s wall {row[2]:7.2f} s CPU   peak RSS +{row[3]:6.0f} MiB"
            f"   allocations peak +{row[4]:6.0f} MiB",
            flush=True,
        )
        return False


def run_ours(ref_mask, pred_mask, spacing, atm22: bool, label: str) -> dict:
    from core.metrics import evaluate
    from core.regions import find_error_regions
    from core.tree import parse_tree

    print(f"{label}: shape {ref_mask.shape}, {int(ref_mask.sum())} reference voxels")
    t0, c0 = time.perf_counter(), time.process_time()
    marks: list[tuple[str, float, float]] = []

    def progress(_k: int, _n: int, what: str) -> None:
        marks.append((what, time.perf_counter(), time.process_time()))

    with Step("parse reference tree"):
        tree = parse_tree(ref_mask, spacing, progress=progress)
    for (what, t, c), (_, t2, c2) in zip(marks, marks[1:]):
        print(f"      {what:<30} {t2 - t:6.2f} s wall {c2 - c:6.2f} s CPU")
    with Step("metrics (TD, BD, DSC, extras)"):
        m = evaluate(pred_mask, ref_mask, spacing, tree=tree, atm22=atm22)
    with Step("error regions"):
        regions = find_error_regions(pred_mask, ref_mask, tree, spacing)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"  {'total (parse + metrics + regions)':<34} {total:7.2f} s wall {cpu:7.2f} s CPU")
    print(
        f"  -> {tree.n_branches} branches, {m.n_detected} detected, TD {m.td}, BD {m.bd}, DSC {m.dsc}, "
        f"precision {m.precision}, {len(regions)} error regions"
    )
    return {"total": total, "cpu": cpu, "branches": tree.n_branches, "detected": m.n_detected}


def baseline_reference_procedure(label, pred):
    """The published procedure, step for step, with its volume-wide passes (slow by design)."""
    import numpy as np
    import skimage.measure as measure
    from scipy import ndimage
    from skimage.morphology import skeletonize

    label = label.astype(np.uint8)
    cd, num = measure.label(label, return_num=True, connectivity=1)
    volume = np.array([(cd == (k + 1)).sum() for k in range(num)])
    label = ndimage.binary_fill_holes(cd == (np.argsort(volume)[-1] + 1)).astype(np.uint8)
    skeleton = skeletonize(label).astype(np.uint8)
    filtered = ndimage.convolve(skeleton, ndimage.generate_binary_structure(3, 3).astype(np.uint8)) * skeleton
    parse = skeleton.copy()
    parse[filtered > 3] = 0
    cd, num = ndimage.label(parse, structure=np.ones((3, 3, 3)))
    for i in range(num):
        if (cd == i + 1).sum() < 5:
            parse[cd == i + 1] = 0
    cd, num = ndimage.label(parse, structure=np.ones((3, 3, 3)))
    _, inds = ndimage.distance_transform_edt(1 - parse, return_indices=True)
    tp = cd[inds[0], inds[1], inds[2]] * label
    del inds

    def trachea(tp, num):
        return int(np.argsort([(tp == k + 1).sum() for k in range(num)])[-1]) + 1

    def adjacency(tp, num):
        ad = np.zeros((num, num), np.uint8)
        for i in range(num):
            cur = (tp == i + 1).astype(np.uint8)
            nz = np.nonzero(cur)
            sl = tuple(slice(max(0, a.min() - 4), a.max() + 5) for a in nz)
            c = cur[sl]
            ring = ndimage.binary_dilation(c, ndimage.generate_binary_structure(3, 1)).astype(np.uint8) - c
            for j in np.unique((ring * tp[sl])[ring > 0]):
                if j > 0:
                    ad[i, j - 1] = 1
        return ad

    def pc(ad, tr, num):
        pm = np.zeros((num, num), np.uint8)
        cm = np.zeros((num, num), np.uint8)
        g = np.zeros(num, np.int64)
        proc = [tr - 1]
        pm[tr - 1, tr - 1] = 1
        while proc:
            it, proc = proc, []
            while it:
                cur = it.pop()
                for ch in np.where(ad[cur] > 0)[0]:
                    if pm[ch].sum() == 0:
                        pm[ch, cur] = cm[cur, ch] = 1
                        g[ch] = g[cur] + 1
                        proc.append(ch)
                    elif g[cur] + 1 == g[ch]:
                        pm[ch, cur] = cm[cur, ch] = 1
        return pm, cm

    def merge(pm, cm, tp):
        d = []
        for w in np.where(pm.sum(1) > 1)[0]:
            ps = np.where(pm[w] > 0)[0]
            for p in ps[1:]:
                tp[tp == p + 1] = ps[0] + 1
                if p not in d:
                    d.append(p)
        for loc in np.where(cm.sum(1) == 1)[0]:
            if loc not in d:
                ch = np.where(cm[loc] == 1)[0][0]
                if ch not in d:
                    tp[tp == ch + 1] = loc + 1
                    d.append(ch)
        return d

    tr = trachea(tp, num)
    pm, cm = pc(adjacency(tp, num), tr, num)
    while merge(pm, cm, tp):
        d = merge(pm, cm, tp)
        for i in range(num):
            if i not in d:
                tp[tp == i + 1] = i + 1 - int(np.sum(np.array(d) < i))
        num -= len(d)
        tr = trachea(tp, num)
        pm, cm = pc(adjacency(tp, num), tr, num)
    # metrics as the published scripts compute them
    cd, n = measure.label(pred.astype(np.uint8), return_num=True, connectivity=1)
    vol = np.array([(cd == k + 1).sum() for k in range(n)])
    large = (cd == np.argsort(vol)[-1] + 1).astype(np.uint8)
    det = 0
    for j in range(num):
        b = (tp == j + 1).astype(np.uint8) * skeleton
        det += (large * b).sum() / b.sum() >= 0.8
    return num, int(det)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", action="store_true", help="also run the reference procedure (minutes, GBs)")
    ap.add_argument("--no-phantom", action="store_true", help="skip the 400x512x512 phantom case")
    ap.add_argument("--threads", type=int, default=2, help="threads for BLAS/OpenMP (default 2)")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    tracemalloc.start()
    print(f"CPU cores: {os.cpu_count()}, load average {os.getloadavg()} (shared machine: figures vary with load)")

    ours = None
    ref_p = DATA / "preds_YangLab" / "ATM_305_0000.nii.gz"
    pred_p = DATA / "preds_timi" / "ATM_305_0000.nii.gz"
    if ref_p.exists() and pred_p.exists():
        from core.io import read_label

        with Step("read both labels (core.io)"):
            ref = read_label(ref_p)
            pred = read_label(pred_p, reference=ref)
        ours = run_ours(ref.mask, pred.mask, ref.geometry.spacing_zyx, True, "ATM_305 (real pair, ATM'22 mode)")
        import resource

        print(
            f"  process peak RSS so far (both labels held, imports included): "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
        )
        if args.baseline:
            print("baseline: the published procedure (volume-wide passes per branch)")
            with Step("reference procedure, parse + BD"):
                nb, det = baseline_reference_procedure(ref.mask, pred.mask)
            _, base_wall, base_cpu, _, _ = Step.rows[-1]
            print(
                f"  -> {nb} branches, {det} detected; ours (parse + metrics + regions) takes "
                f"1/{base_wall / ours['total']:.0f} of its wall time and 1/{base_cpu / ours['cpu']:.0f} of its CPU time "
                f"in this run"
            )
        else:
            print(
                "  (reference procedure, quoted from the issue on this machine: 325 s and 7.2 GB peak; --baseline reruns it)"
            )
        del ref, pred
    else:
        print(f"skipped the real pair: {DATA} not found")

    if not args.no_phantom:
        try:
            from core.phantom import make_phantom
        except ImportError:
            print("skipped the phantom: core.phantom not available")
        else:
            with Step("make 400x512x512 phantom (not timed below)"):
                full = make_phantom(shape=(400, 512, 512), seed=0, generations=6)
                part = make_phantom(shape=(400, 512, 512), seed=0, generations=6, omit_distal=8)
            run_ours(
                full.label.mask,
                part.label.mask,
                full.label.geometry.spacing_zyx,
                False,
                "phantom 400x512x512 (distal branches omitted in the prediction)",
            )


if __name__ == "__main__":
    main()
