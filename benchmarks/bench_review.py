"""Review editing speed and memory on a 512 x 512 x 400 case (issue 12).

Targets: a brush stroke repaints in < 16 ms; accepting a region updates the
overlays in < 100 ms; metrics and regions refresh in the background in < 10 s;
100 edits of 10^4 voxels each hold < 50 MB of undo.

Data: the demo phantom (app.demo: reference plus a simulated prediction with
missed branches and leaks) made at 200 x 256 x 256 and upsampled 2x to
400 x 512 x 512. Nothing from ../shared is needed.

Figures (medians over repeats; the CPU is shared, so times are noisy):
- brush: one disc dab (r = 5 voxels) through the session plus the repaint of
  the axial slice under it (SliceView image, cache miss because the revision
  changed), vs the repaint alone of an unedited slice;
- accept: ``case.accept_region`` on an FP region plus the repaint of the three
  slice views at its focus voxel;
- refresh: the background analysis after an accepted region (tree re-parse,
  metrics, regions) as the app runs it (``run_review_analysis``), and after a
  prediction-only edit (the tree is reused);
- undo memory: ``session.history.nbytes`` after 100 edits of 10^4 voxels.

    xvfb-run -a .venv/bin/python benchmarks/bench_review.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_case():
    from app.demo import DemoParams, make_demo
    from core.volume import Geometry, IntensityVolume, LabelVolume

    demo = make_demo(DemoParams(shape=(200, 256, 256)))
    g = demo.phantom.ct.geometry
    geo = Geometry(tuple(s / 2 for s in g.spacing), g.origin, g.direction)

    def up(a):
        return np.ascontiguousarray(a.repeat(2, 0).repeat(2, 1).repeat(2, 2))

    ct = IntensityVolume(up(demo.phantom.ct.array), geo, name="ct")
    ref = LabelVolume(up(demo.reference.mask), geo, name="reference")
    pred = LabelVolume(up(demo.prediction.mask), geo, name="prediction")
    return ct, ref, pred


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import tempfile

    os.environ.setdefault("AIRWAY_STUDIO_RECOVERY_DIR", tempfile.mkdtemp(prefix="bench-recovery-"))
    from PySide6.QtWidgets import QApplication

    from app.review.case import Case, PredictionEntry, run_review_analysis
    from app.review.slice_view import DisplayState, SliceView
    from core.box import Box
    from core.review import LabelLayer, Session
    from core.volume import LabelVolume

    app = QApplication.instance() or QApplication([])
    t0 = time.perf_counter()
    ct, ref, pred = make_case()
    print(f"case {ct.shape} made in {time.perf_counter() - t0:.1f} s")

    case = Case(auto_analyse=False)
    case.set_ct(ct, name="ct")
    case.set_reference(ref)
    case.add_prediction(PredictionEntry("prediction", pred))
    t0 = time.perf_counter()
    result, tree = run_review_analysis(case.session.analysis_job(copy=True), in_process=False)
    first = time.perf_counter() - t0
    case.session.apply_analysis(result)
    case.tree = tree.tree
    entry = case.active
    a = result.predictions[entry.name]
    entry.metrics, entry.regions = a.metrics, a.regions
    print(f"first analysis (tree + metrics + regions): {first:.1f} s, {len(entry.regions)} regions")

    display = DisplayState()
    views = {o: SliceView(case, o, display) for o in ("axial", "coronal", "sagittal")}
    for v in views.values():
        v.resize(800, 800)

    # brush: dab + repaint of the slice under it
    z, y, x = (int(c) for c in np.argwhere(ref.array)[ref.array.sum() // 2])
    case.set_cursor((z, y, x))
    ax = views["axial"]
    ax.current_rgb()
    repaint, stroke = [], []
    for k in range(args.repeats):
        ax._cache.clear()
        t0 = time.perf_counter()
        ax.current_rgb()
        repaint.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        case.session.brush("reference", (z, y, x + (k % 10) - 5), 5, k % 2 == 0, form="disc")
        ax.current_rgb()
        stroke.append((time.perf_counter() - t0) * 1000)
    print(
        f"brush dab + axial repaint: median {statistics.median(stroke):.1f} ms, max {max(stroke):.1f} ms "
        f"(repaint alone {statistics.median(repaint):.1f} ms) [target < 16 ms]"
    )
    while case.session.undo():
        pass

    # accept region: edit + repaint of the three views at its focus
    fps = [i for i, g in enumerate(entry.regions) if g.kind == "FP"]
    accept = []
    for i in fps[: args.repeats]:
        case.active_region = i
        case.set_cursor(entry.regions[i].focus_zyx)
        for v in views.values():
            v.current_rgb()
        t0 = time.perf_counter()
        case.accept_region(i, "FP")
        for v in views.values():
            v.current_rgb()
        accept.append((time.perf_counter() - t0) * 1000)
    sizes = [entry.regions[i].voxels for i in fps[: args.repeats]]
    print(
        f"accept FP region + 3 views repainted: median {statistics.median(accept):.1f} ms, max {max(accept):.1f} ms "
        f"over {len(accept)} regions of {min(sizes)}..{max(sizes)} voxels [target < 100 ms]"
    )

    # background refresh after the accepts (reference changed: the tree is parsed again)
    t0 = time.perf_counter()
    job = case.session.analysis_job(copy=True)
    copy_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result, _ = run_review_analysis(job, in_process=False)
    ref_refresh = time.perf_counter() - t0
    case.session.apply_analysis(result)
    case.session.brush(0, (z, y, x), 4, True, form="sphere")
    t0 = time.perf_counter()
    result, _ = run_review_analysis(case.session.analysis_job(copy=True), in_process=False)
    pred_refresh = time.perf_counter() - t0
    print(
        f"background refresh after reference edits: {ref_refresh:.1f} s (+ {copy_s * 1000:.0f} ms snapshot on the GUI "
        f"thread); after a prediction edit (tree reused): {pred_refresh:.1f} s [target < 10 s]"
    )

    # undo memory
    layer = LabelLayer("reference", LabelVolume(np.zeros(ct.shape, bool)), role="reference")
    s = Session(reference=layer, undo_depth=100)
    rng = np.random.default_rng(0)
    for _ in range(100):
        a, b, c = rng.integers(0, 370), rng.integers(0, 480), rng.integers(0, 480)
        s.paint("reference", Box((a, b, c), (a + 25, b + 20, c + 20)), np.ones((25, 20, 20), bool), True)
    print(f"undo memory, 100 edits of 10^4 voxels: {s.history.nbytes / 1e6:.2f} MB [target < 50 MB]")
    del app


if __name__ == "__main__":
    main()
