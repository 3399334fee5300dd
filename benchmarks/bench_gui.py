"""Review workspace speed on a full-size case (512 x 512 x 600).

Targets (issue 7):
- redrawing one 512 x 512 slice with overlays: under 10 ms median;
- opening a case (CT, reference, one prediction): under 5 s;
- the 3D surface of a full-size tree: under 3 s (see also bench_surfaces.py).

Data: the demo phantom (app.demo, a simulated prediction with FP/FN) made at
300 x 256 x 256 and upsampled 2x to 600 x 512 x 512 (0.5-0.8 mm voxels),
written as uncompressed NIfTI (and gzipped, for comparison) in a temporary
folder. Nothing from ../shared is needed.

Figures: medians over repeats, each with a baseline measured in the same run:
- redraw vs a naive float windowing + full-image float blend (no LUT, no
  sparse blend), and vs the slice extraction alone;
- opening vs core.io reading the three files alone (the I/O floor);
- the longest event-loop stall (10 ms QTimer heartbeat) while the case opens and
  its tree, metrics and regions are computed in workers, vs the idle loop;
- peak RSS (resource.getrusage) after each stage.

The CPU is shared with other engineers' jobs while this runs: times are noisy
and worst cases inflated. Run under a display (xvfb-run) or it uses Qt's
offscreen platform:
    xvfb-run -a .venv/bin/python benchmarks/bench_gui.py [--repeats 30] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build_case(folder: Path) -> dict[str, Path]:
    from app.demo import DemoParams, make_demo
    from core.io import write_volume
    from core.volume import Geometry, IntensityVolume, LabelVolume

    t0 = time.perf_counter()
    demo = make_demo(DemoParams(shape=(300, 256, 256), generations=11, omit_distal=2, missed=3))
    g = demo.phantom.ct.geometry

    def up(a: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(np.repeat(a, 2, axis=0), 2, axis=1), 2, axis=2)

    geo = Geometry(tuple(s / 2 for s in g.spacing), g.origin, g.direction)
    ct = IntensityVolume(up(demo.phantom.ct.array), geo, "ct")
    ref = LabelVolume(up(demo.reference.mask).astype(np.uint8), geo, "ref")
    pred = LabelVolume(up(demo.prediction.mask).astype(np.uint8), geo, "pred")
    print(
        f"built {ct.shape} case in {time.perf_counter() - t0:.1f} s "
        f"(reference {int(ref.array.sum())} voxels, prediction {int(pred.array.sum())})"
    )
    out = {}
    for key, vol in (("ct", ct), ("ref", ref), ("pred", pred)):
        out[key] = write_volume(vol, folder / f"{key}.nii", compress=False)
        out[key + "_gz"] = write_volume(vol, folder / f"{key}.nii.gz")
    return out


def bench_open(files: dict[str, Path], repeats: int, suffix: str = "") -> None:
    from app.review.case import Case, load_case
    from app.workers import run_sync
    from core.io import read_volume

    paths = [files["ct" + suffix], files["ref" + suffix], files["pred" + suffix]]
    io_t, open_t = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for p in paths:
            read_volume(p)
        io_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        loaded = run_sync(load_case, paths[0], paths[1], [paths[2]])
        case = Case(auto_analyse=False)
        case.apply_loaded(loaded)  # what the GUI thread does once the job is done
        open_t.append(time.perf_counter() - t0)
        del loaded, case
    label = "nii.gz" if suffix else "nii"
    mo, mi = statistics.median(open_t), statistics.median(io_t)
    print(
        f"open case ({label}): median {mo:.2f} s (target < 5 s), core.io read alone {mi:.2f} s, "
        f"ratio {mo / mi:.2f}; peak RSS {rss_mb():.0f} MB"
    )


def naive_render(
    ct: np.ndarray, ref: np.ndarray, pred: np.ndarray, window: float, level: float, rgb: np.ndarray, opacity: float
) -> np.ndarray:
    """Baseline: float windowing and a blend of every pixel."""
    lo = level - window / 2
    grey = np.clip((ct.astype(np.float32) - lo) / window * 255, 0, 255)
    out = np.repeat(grey[:, :, None], 3, axis=2)
    code = ref.astype(np.uint8) + 2 * pred.astype(np.uint8)
    a = np.where(code > 0, opacity, 0.0).astype(np.float32)[:, :, None]
    col = rgb[np.array([0, 3, 2, 1])[code]]
    return (out * (1 - a) + col * a).astype(np.uint8)


def bench_redraw(files: dict[str, Path], repeats: int) -> None:
    from PySide6.QtWidgets import QApplication

    from app.review.case import Case, load_case
    from app.review.slice_view import DisplaySettings, DisplayState, SliceView, extract_slice
    from app.workers import run_sync

    app = QApplication.instance() or QApplication([])
    case = Case(auto_analyse=False)
    case.apply_loaded(run_sync(load_case, files["ct"], files["ref"], [files["pred"]]))
    t0 = time.perf_counter()
    # the background jobs that follow an opening, as in the app: overlay bounds, x-major CT copy
    while (case.overlay_box() is None or case._ct_by_x is None) and time.perf_counter() - t0 < 60:
        app.processEvents()
        time.sleep(0.005)
    print(
        f"overlay bounds and sagittal copy ready {time.perf_counter() - t0:.2f} s after opening "
        f"(box {case.overlay_box()})"
    )
    display = DisplayState(DisplaySettings())
    s = display.settings
    views = {o: SliceView(case, o, display) for o in ("axial", "coronal", "sagittal")}
    for v in views.values():
        v.resize(700, 700)
    # slices through the tree: from the carina region down
    rng = np.random.default_rng(0)
    zs = np.nonzero(case.reference.mask.any(axis=(1, 2)))[0]
    ys = np.nonzero(case.reference.mask.any(axis=(0, 2)))[0]
    xs = np.nonzero(case.reference.mask.any(axis=(0, 1)))[0]
    for o, v in views.items():
        times, naive, extract = [], [], []
        for _ in range(repeats):
            cur = (int(rng.choice(zs)), int(rng.choice(ys)), int(rng.choice(xs)))
            case.cursor = cur
            v._cache.clear()
            t0 = time.perf_counter()
            img = v._image()  # slice extraction + LUT window + overlay blend + QImage
            times.append((time.perf_counter() - t0) * 1000)
            assert img is not None and img.width() > 0
            i = v.index
            t0 = time.perf_counter()
            a = np.ascontiguousarray(case.ct_slice(o, i))
            b = np.ascontiguousarray(extract_slice(case.reference.mask, o, i))
            c = np.ascontiguousarray(extract_slice(case.active.mask, o, i))
            extract.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            naive_render(a, b, c, s.window, s.level, v.renderer.rgb, s.opacity)
            naive.append((time.perf_counter() - t0) * 1000 + extract[-1])
        m, n, e = statistics.median(times), statistics.median(naive), statistics.median(extract)
        h, w = img.height(), img.width()
        print(
            f"redraw {o:8s} {h}x{w}: median {m:.2f} ms, p95 {np.percentile(times, 95):.2f} ms (target < 10 ms); "
            f"naive float blend {n:.2f} ms (ratio {m / n:.2f}); full-slice extraction of CT and masks {e:.2f} ms"
        )
    # cache hit: scrolling back to a slice already drawn
    v = views["axial"]
    v._image()
    t0 = time.perf_counter()
    for _ in range(100):
        v._image()
    print(f"redraw from cache: {(time.perf_counter() - t0) * 10:.3f} ms; peak RSS {rss_mb():.0f} MB")
    # the full paint of a widget (image scaled to the widget, crosshair, labels)
    v.show()
    app.processEvents()
    paints = []
    for _ in range(repeats):
        case.cursor = (int(rng.choice(zs)), case.cursor[1], case.cursor[2])
        t0 = time.perf_counter()
        v.repaint()
        paints.append((time.perf_counter() - t0) * 1000)
    print(f"full repaint of a 700x700 axial view: median {statistics.median(paints):.2f} ms")


def bench_event_loop(files: dict[str, Path], timeout_s: float = 300.0) -> None:
    """Longest event-loop stall (10 ms QTimer heartbeat) while a case opens and its
    tree, metrics and regions are computed in workers, vs the same loop idle."""
    from PySide6.QtCore import QElapsedTimer, QTimer
    from PySide6.QtWidgets import QApplication

    from app.review.case import Case, load_case
    from app.workers import Job

    app = QApplication.instance() or QApplication([])
    clock = QElapsedTimer()
    clock.start()
    gaps: list[int] = []
    last = [0]

    def beat() -> None:
        now = clock.elapsed()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(beat)
    timer.start()

    def spin(until) -> float:
        t0 = time.perf_counter()
        while not until() and time.perf_counter() - t0 < timeout_s:
            app.processEvents()
            time.sleep(0.002)
        return time.perf_counter() - t0

    spin(lambda: len(gaps) > 100)
    idle = max(gaps[1:])
    gaps.clear()
    case = Case()
    # what the window's open_files does: the files read by core in a job, applied on the GUI thread
    job = Job(load_case, str(files["ct"]), str(files["ref"]), [str(files["pred"])], name="Loading")
    job.result.connect(case.apply_loaded)
    job.start()
    spent = spin(
        lambda: (
            case.ct is not None
            and not case.busy
            and case.predictions
            and (case.predictions[0].metrics is not None or case.predictions[0].analysis_error)
        )
    )
    timer.stop()
    err = case.predictions[0].analysis_error if case.predictions else "not loaded"
    print(
        f"open + tree + metrics + regions in workers: {spent:.1f} s{' (' + err + ')' if err else ''}; "
        f"event loop max stall {max(gaps[1:] or [0])} ms, p99 {np.percentile(gaps[1:] or [0], 99):.0f} ms "
        f"(idle loop max {idle} ms); regions {len(case.predictions[0].regions or []) if case.predictions else 0}"
    )


def bench_surface(files: dict[str, Path], repeats: int) -> None:
    from app.review.case import load_case
    from app.workers import run_sync
    from core.surfaces import outcome_surface

    loaded = run_sync(load_case, files["ct"], files["ref"], [files["pred"]])
    ref, pred = loaded.reference.mask, loaded.predictions[0].mask
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        mesh = outcome_surface(pred, ref, loaded.ct.geometry)
        times.append(time.perf_counter() - t0)
    n = getattr(mesh, "n_cells", None) or getattr(getattr(mesh, "mesh", None), "n_cells", "?")
    print(
        f"3D TP/FP/FN surface of the full tree: median {statistics.median(times):.2f} s (target < 3 s), "
        f"{n} faces; peak RSS {rss_mb():.0f} MB"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--keep", help="write the case here and keep it, or reuse it (default: a temporary folder)")
    args = ap.parse_args()
    if not os.environ.get("DISPLAY") and not os.environ.get("QT_QPA_PLATFORM"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"  # this script only: 2D views need no GL
    print("CPU shared with other engineers' jobs while measuring: figures are noisy.")
    with tempfile.TemporaryDirectory(prefix="bench-gui-") as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        names = {
            k: folder / f"{k.replace('_gz', '')}.nii{'.gz' if k.endswith('_gz') else ''}"
            for k in ("ct", "ref", "pred", "ct_gz", "ref_gz", "pred_gz")
        }
        files = names if all(p.exists() for p in names.values()) else build_case(folder)
        bench_open(files, max(1, min(3, args.repeats)))
        bench_open(files, 1, "_gz")
        bench_redraw(files, args.repeats)
        bench_event_loop(files)
        bench_surface(files, max(1, min(3, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
