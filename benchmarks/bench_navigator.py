"""How long the error navigator takes to open on the real ATM'22 pair, after the metrics.

Uses ../shared/data/atm22 (YangLab as reference, timi as prediction, 3,514
error regions). Prints: regions (core.regions, part of the case's analysis),
then the navigator's own work: grouping, building the table and showing it,
and the number of review items shown by default.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_navigator.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "atm22"


def main() -> int:
    ref_p, pred_p = DATA / "preds_YangLab" / "ATM_305_0000.nii.gz", DATA / "preds_timi" / "ATM_305_0000.nii.gz"
    if not ref_p.exists():
        print("needs ../shared/data/atm22", file=sys.stderr)
        return 2
    from PySide6.QtWidgets import QApplication

    from app.review.case import Case, PredictionEntry
    from app.review.regions_panel import RegionsPanel
    from core.io import read_label
    from core.metrics import evaluate
    from core.region_groups import group_regions
    from core.regions import find_error_regions
    from core.tree import parse_tree

    app = QApplication.instance() or QApplication([])
    ref = read_label(ref_p)
    pred = read_label(pred_p, reference=ref)
    tree = parse_tree(ref)
    t = time.perf_counter()
    m = evaluate(pred, ref, tree=tree)
    print(f"metrics: {time.perf_counter() - t:.2f} s (DSC {m.dsc:.1f})")
    t = time.perf_counter()
    regions = find_error_regions(pred, ref, tree)
    print(f"regions: {time.perf_counter() - t:.2f} s ({len(regions)} regions)")
    t = time.perf_counter()
    groups = group_regions(regions)
    print(
        f"grouping alone: {time.perf_counter() - t:.3f} s ({len(groups)} items, {sum(g.review for g in groups)} shown)"
    )

    case = Case(auto_analyse=False)
    case.set_reference(ref)
    case.add_prediction(PredictionEntry("timi", pred))
    case.active.metrics = m
    t = time.perf_counter()
    case.active.regions = regions
    panel = RegionsPanel(case)
    case.regionsChanged.emit(0)
    panel.resize(420, 700)
    panel.show()
    app.processEvents()
    opened = time.perf_counter() - t
    print(f"navigator open (regions -> table shown): {opened:.2f} s, rows shown {panel.proxy.rowCount()}")
    t = time.perf_counter()
    panel.raw_switch.setChecked(True)
    app.processEvents()
    print(f"switch to raw regions: {time.perf_counter() - t:.2f} s, rows {panel.proxy.rowCount()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
