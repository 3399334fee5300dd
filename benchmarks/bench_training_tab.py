"""Figures for the training tab's live view over long runs.

Prints, for runs of N steps:
- folding N step events into the history (preallocated columns) and, as a
  baseline, into Python lists converted to arrays at every redraw;
- reading events.jsonl incrementally (EventTail) in chunks as the trainer writes;
- one redraw + paint of the four plots with clip-to-view and peak downsampling
  (what the tab does), against the same plots drawing every point.

Run: ``QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_training_tab.py [N ...]``
The CPU is shared with other work while these figures are taken: compare the
ratios within one run, not absolute times across machines.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def step_event(g: int) -> dict:
    loss = 1.0 / (1.0 + 1e-3 * g) + 0.05 * np.sin(g)
    return {
        "event": "step",
        "time": 1e9 + g,
        "run": "bench",
        "stage": 1,
        "epoch": g // 100 + 1,  # epochs and steps count from 1, as the trainer writes them
        "step": g % 100 + 1,
        "global_step": g,
        "loss": loss,
        "loss_enc": 0.4 * loss,
        "loss_dec": 0.6 * loss,
        "lr": 0.01,
        "patches_per_s": 8.0 + (g % 7),
    }


def bench_fold(n: int, redraws: int = 100) -> None:
    from app.training.runs import RunHistory

    events = [step_event(g) for g in range(1, n + 1)]
    tracemalloc.start()
    t0 = time.perf_counter()
    h = RunHistory()
    every = max(1, n // redraws)
    for i, e in enumerate(events):
        h.apply(e)
        if i % every == 0:
            h.steps.view("loss")  # what a redraw takes: a view, no copy
    t_cols = time.perf_counter() - t0
    peak_cols = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    # baseline: the same nine columns kept as Python lists, copied to arrays at each redraw
    tracemalloc.start()
    t0 = time.perf_counter()
    names = ("global_step", "stage", "epoch", "loss", "loss_enc", "loss_dec", "lr", "patches_per_s", "time")
    lists: dict[str, list[float]] = {k: [] for k in names}
    for i, e in enumerate(events):
        for k in names:
            lists[k].append(float(e[k]))
        if i % every == 0:
            [np.asarray(v) for v in lists.values()]
    t_list = time.perf_counter() - t0
    peak_list = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(
        f"fold {n:>9,} steps ({redraws} redraws): columns {t_cols:6.2f} s ({n / t_cols:,.0f} events/s, "
        f"peak {peak_cols / 2**20:6.1f} MiB) | lists+asarray {t_list:6.2f} s "
        f"(peak {peak_list / 2**20:6.1f} MiB) | time ratio lists/columns {t_list / t_cols:4.2f}"
    )


def bench_tail(n: int, chunks: int = 200) -> None:
    from app.training.runs import EventTail

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        lines = [json.dumps(step_event(g)) + "\n" for g in range(1, n + 1)]
        tail = EventTail(path)
        per = max(1, n // chunks)
        t_read = 0.0
        got = 0
        with open(path, "w") as f:
            for start in range(0, n, per):
                f.write("".join(lines[start : start + per]))
                f.flush()
                t0 = time.perf_counter()
                got += len(tail.read_new())
                t_read += time.perf_counter() - t0
        assert got == n
        size = path.stat().st_size
    print(
        f"tail {n:>9,} events ({size / 2**20:.1f} MiB) in {chunks} polls: {t_read:6.2f} s ({n / t_read:,.0f} events/s)"
    )


def bench_redraw(n: int, repeats: int = 3) -> None:
    from PySide6 import QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    import pyqtgraph as pg

    from app.training.plots import TrainingPlots
    from app.training.runs import RunHistory

    h = RunHistory()
    for g in range(1, n + 1):
        h.apply(step_event(g))
    results = {}
    for label, fast in (("clip+downsample", True), ("every point, 1.5 px", False)):
        plots = TrainingPlots()
        plots.resize(1200, 800)
        plots.show()
        for p in (plots.loss_plot, plots.lr_plot, plots.speed_plot, plots.metric_plot):
            p.setClipToView(fast)
            p.setDownsampling(auto=fast, mode="peak")
            if not fast:
                p.setDownsampling(ds=1, auto=False)
        plots.show_run("r", h)
        if not fast:  # the same pens, wide (1.5 px) as many plots default to, but solid
            for curve in plots._runs["r"].curves.values():
                pen = curve.opts["pen"]
                if pen is not None:
                    curve.setPen(pg.mkPen(pen.color(), width=1.5))
        plots.loss_plot.setXRange(0.9 * n, n, padding=0)  # the user looks at the latest tenth
        app.processEvents()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            plots.mark_dirty("r")
            plots.redraw()
            plots.grab()  # forces layout and paint of every plot
            times.append(time.perf_counter() - t0)
        results[label] = min(times)
        plots.close()
        plots.deleteLater()
        app.processEvents()
    fast, slow = results["clip+downsample"], results["every point, 1.5 px"]
    print(
        f"redraw+paint {n:>9,} steps (view on the last 10%): tab's plots {fast * 1e3:7.1f} ms | "
        f"every point, 1.5 px solid pens {slow * 1e3:7.1f} ms | ratio {slow / fast:5.1f}"
    )


def main(argv: list[str]) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sizes = [int(a) for a in argv] or [10_000, 100_000, 1_000_000]
    print(f"training tab benchmark, python {sys.version.split()[0]}, {os.cpu_count()} CPUs (shared with other work)")
    for n in sizes:
        bench_fold(n)
    for n in sizes:
        bench_tail(n)
    for n in sizes:
        bench_redraw(n)


if __name__ == "__main__":
    main(sys.argv[1:])
