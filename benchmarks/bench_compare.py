"""Model comparison speed (issue 14).

Targets:
- rerunning an unchanged `airway compare` of 4 cases x 4 models: under 5 s
  (the whole command, Python start-up included);
- 4 predictions of a 512 x 512 x 400 case side by side: a linked slice change
  redraws all four slice views in under 30 ms median.

Data, made in a temporary folder (nothing is written into the repository):
- compare: 4 phantom cases (core.phantom, 160 x 160 x 160, vessels off) and 4
  "models" made from each label (eroded, dilated, distal slices dropped, a
  shifted copy), as .nii.gz;
- layout: the real ATM'22 pair (../shared/data/atm22, 388 x 512 x 512, padded
  to 400 slices) as the reference and a prediction, plus dilated/eroded
  variants, over a noise CT; without ../shared a phantom of that size.

Figures: the first (cold) compare, then the rerun as a subprocess
(wall-clock) with its cache counters; slice redraws: median and 90th
percentile over the slice changes (cursor moved one slice, then a synchronous
repaint of all four views; views rendered at 600 x 500 logical pixels). The
CPU is shared with other jobs while this runs: times are noisy. Run with
Qt's offscreen platform (set here) or under xvfb-run:
    .venv/bin/python benchmarks/bench_compare.py [--repeats 40] [--size 160]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ATM = ROOT.parent / "shared" / "data" / "atm22"


def make_compare_data(root: Path, size: int) -> None:
    from scipy import ndimage

    from core.io import write_volume
    from core.phantom import make_phantom
    from core.volume import LabelVolume

    for d in ("ref", "eroded", "dilated", "cut", "shifted"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i in range(4):
        lab = make_phantom(size, seed=i, vessels=False).label
        g, m = lab.geometry, lab.array
        write_volume(lab, root / "ref" / f"case_{i:03d}_0000.nii.gz")
        write_volume(LabelVolume(ndimage.binary_erosion(m), g), root / "eroded" / f"case_{i:03d}_0000.nii.gz")
        write_volume(LabelVolume(ndimage.binary_dilation(m), g), root / "dilated" / f"case_{i:03d}.nii.gz")
        cut = m.copy()
        zs = np.flatnonzero(m.any(axis=(1, 2)))
        cut[zs[-len(zs) // 5 :]] = False
        write_volume(LabelVolume(cut, g), root / "cut" / f"case_{i:03d}.nii.gz")
        write_volume(LabelVolume(np.roll(m, 1, axis=2), g), root / "shifted" / f"case_{i:03d}.nii.gz")


def bench_rerun(size: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        make_compare_data(root, size)
        print(f"data: 4 cases of {size}^3, 4 models, made in {time.perf_counter() - t0:.1f} s")
        cmd = [
            sys.executable,
            str(ROOT / "main.py"),
            "compare",
            "--reference",
            str(root / "ref"),
            "--predictions",
            *(f"{m}={root / m}" for m in ("eroded", "dilated", "cut", "shifted")),
            "--out",
            str(root / "out"),
            "-q",
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for label in (
            "first run (cold: trees, metrics, snapshots, report)",
            "rerun, unchanged inputs",
            "rerun, unchanged inputs (again)",
        ):
            t = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True, env=env)
            dt = time.perf_counter() - t
            if r.returncode != 0:
                print(r.stderr)
                raise SystemExit(1)
            stats = json.loads((root / "out" / "compare.json").read_text())["cache_stats"]
            print(f"{label}: {dt:.2f} s wall  cache {stats}")
        print("goal: rerun < 5 s for 4 cases x 4 models")


def layout_data():
    from scipy import ndimage

    from core.io import read_label
    from core.volume import IntensityVolume, LabelVolume

    ref_p, pred_p = ATM / "preds_YangLab" / "ATM_305_0000.nii.gz", ATM / "preds_timi" / "ATM_305_0000.nii.gz"
    if ref_p.exists() and pred_p.exists():
        ref, pred = read_label(ref_p), read_label(pred_p)
        pad = max(0, 400 - ref.shape[0])
        r = np.pad(ref.array, ((0, pad), (0, 0), (0, 0)))
        p = np.pad(pred.array, ((0, pad), (0, 0), (0, 0)))
        geo = ref.geometry
        source = "ATM'22 ATM_305 pair padded to 400 slices"
    else:
        from core.phantom import make_phantom

        ph = make_phantom((400, 512, 512), vessels=False)
        r = ph.label.array
        p = ndimage.binary_erosion(r)
        geo = ph.label.geometry
        source = "phantom 400 x 512 x 512 (../shared absent)"
    rng = np.random.default_rng(0)
    ct = rng.integers(-1000, 200, size=r.shape, dtype=np.int16)
    ct[r] = -950
    preds = {
        "timi": p,
        "dilated": ndimage.binary_dilation(r),
        "eroded": ndimage.binary_erosion(r),
        "shifted": np.roll(p, 2, axis=2),
    }
    return (
        IntensityVolume(ct, geo, name="ct"),
        LabelVolume(r, geo, name="reference"),
        {k: LabelVolume(v, geo, name=k) for k, v in preds.items()},
        source,
    )


def bench_layout(repeats: int) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from app.compare import CompareLayout, PaneEntry

    app = QApplication.instance() or QApplication([])
    t0 = time.perf_counter()
    ct, ref, preds, source = layout_data()
    print(f"layout data: {source}, {ct.shape}, made in {time.perf_counter() - t0:.1f} s")
    lay = CompareLayout(with_3d=False)
    lay.resize(1240, 1080)
    lay.show()
    lay.state.set_case("bench", [PaneEntry(k, v) for k, v in preds.items()], ref, ct)
    app.processEvents()
    views = lay.slice_views()
    for v in views:
        v.resize(600, 500)
    zs = np.flatnonzero(ref.array.any(axis=(1, 2)))
    z0 = int(zs[len(zs) // 3])
    for orientation in ("axial", "coronal", "sagittal"):
        lay.set_orientation(orientation)
        axis = {"axial": 0, "coronal": 1, "sagittal": 2}[orientation]
        cur = list(lay.state.cursor)
        cur[0] = z0
        lay.state.set_cursor(cur)
        lay.redraw_all()  # warm-up (LUTs, boxes)
        times, cpu = [], []
        for _k in range(repeats):
            cur = list(lay.state.cursor)
            cur[axis] = cur[axis] + 1  # a new slice each time: no cached image is reused
            t, c = time.perf_counter(), time.process_time()
            lay.state.set_cursor(cur)
            lay.redraw_all()
            times.append((time.perf_counter() - t) * 1000)
            cpu.append((time.process_time() - c) * 1000)
        per_view = statistics.median(v.last_render_ms for v in views)
        # CPU time of this process: what the redraw costs without other jobs' share of the cores
        print(
            f"{orientation}: linked slice change, 4 views redrawn: median {statistics.median(times):.1f} ms wall "
            f"(p90 {np.percentile(times, 90):.1f}), {statistics.median(cpu):.1f} ms CPU; "
            f"numpy render per view {per_view:.1f} ms; load average {os.getloadavg()[0]:.1f}"
        )
    print("goal: < 30 ms median")
    lay.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--only", choices=("rerun", "layout"), default=None)
    a = ap.parse_args()
    if a.only in (None, "rerun"):
        bench_rerun(a.size)
    if a.only in (None, "layout"):
        bench_layout(a.repeats)


if __name__ == "__main__":
    main()
