"""An annotator's day on the real ATM'22 pair, through the keys, with a GUI-thread watchdog.

Opens ../shared/data/atm22 (YangLab as reference, timi as prediction, label-only,
388 x 512 x 512, 211 branches; copied to a scratch folder since a save writes
beside the reference) in the full main window at 1280 x 800, then N, A, R, a
brush dab, undo, redo and save (Ctrl+Alt+S), as keys. A 20 ms heartbeat
(tests/watchdog.py) records every gap of the event loop; a sampler thread
keeps the GUI thread's stack during stalls (``--stacks`` prints them).

Prints: time to usable (navigator filled, views drawn), time until the
analysis and 3D settled, N latency, the longest GUI stall of each step,
re-analysis times, the longest stall overall and peak memory (RSS).

Goals (issue 22): usable < 10 s; N < 50 ms; each A / R / brush dab / undo /
redo stall < 100 ms; re-analysis < 10 s.

    xvfb-run -a .venv/bin/python benchmarks/bench_annotator_day.py [--stacks]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stacks", action="store_true", help="print the stacks sampled during stalls")
    ap.add_argument("--size", default="1280x800", help="window size")
    args = ap.parse_args()

    from annotator_day import atm22_available, copy_pair, make_window, run_day
    from PySide6.QtWidgets import QApplication
    from watchdog import Watchdog

    if not atm22_available():
        print("needs ../shared/data/atm22", file=sys.stderr)
        return 2
    app = QApplication.instance() or QApplication([])
    app.setApplicationName("Airway Studio bench")
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="bench-day-") as tmp:
        ref, pred = copy_pair(Path(tmp))
        win = make_window((w, h))
        dog = Watchdog()
        day, dog = run_day(win, ref, pred, dog=dog, log=lambda m: print("  " + m, flush=True))
        win.case.auto_analyse = False
        win.case.session.recovery_path = None
        win.case.modified = False
        win.close()
    n = sorted(day.n_ms)
    print(f"time to usable: {day.usable_s:.1f} s (analysis and 3D settled after {day.settled_s:.1f} s)")
    if n:
        print(f"N latency: median {statistics.median(n):.0f} ms, max {n[-1]:.0f} ms over {len(n)} presses")
    for name, ms in day.stalls.items():
        print(f"  longest GUI stall, {name}: {ms:.0f} ms")
    if day.reanalysis_s:
        print(f"re-analysis: {', '.join(f'{s:.1f}' for s in day.reanalysis_s)} s (max {max(day.reanalysis_s):.1f})")
    print(f"longest stall overall: {dog.longest():.0f} ms")
    print(f"peak memory (RSS): {day.peak_rss_mb:.0f} MB")
    for note in day.notes:
        print(f"note: {note}")
    for e in day.errors:
        print(f"error shown: {e}")
    if args.stacks:
        print(dog.report(top=12))
    return 0


if __name__ == "__main__":
    sys.exit(main())
