"""Time and peak memory of the training-free airway extraction (core.growing) on the real chest CT.

    .venv/bin/python benchmarks/bench_growing.py [--threads 2] [--no-tubes] [--case PATH]
        [--reference LABEL [--selector bits:8:2]]

e.g. the CIP case: --case ../shared/data/cip/ct-64.nrrd --reference ../shared/data/cip/lm-64.nrrd
--selector bits:8:2 (issue 11's goal there: Dice >= 0.60).

Goal of issue 11: < 30 s and < 3 GB on 2 CPU cores for ../shared/data/chest_ct_dicom.
Prints the wall time of every stage, the process's peak resident set size
(ru_maxrss, so reading the DICOM is included) and the tree found (parse_tree,
26-connected). Figures depend on the machine's load; say so when quoting them.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CASE = ROOT.parent / "shared" / "data" / "chest_ct_dicom"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="threads for BLAS/OpenMP (default 2, the goal's cores)")
    ap.add_argument("--no-tubes", action="store_true", help="growing stage only")
    ap.add_argument("--case", default=str(CASE), help="CT file or DICOM folder (default: chest_ct_dicom)")
    ap.add_argument("--reference", help="airway label on the CT's grid: prints Dice, precision, sensitivity")
    ap.add_argument("--selector", default="nonzero", help="which label voxels are airway (e.g. bits:8:2 for CIP)")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    if not Path(args.case).exists():
        print(f"skipped: {args.case} is absent")
        return 0
    from core.growing import grow_airway
    from core.io import read_ct
    from core.tree import parse_tree

    t0 = time.perf_counter()
    ct = read_ct(args.case)
    t_read = time.perf_counter() - t0
    rss_read = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = grow_airway(ct, tubes=False if args.no_tubes else None)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tree = parse_tree(result.mask, connectivity=26)
    print(
        f"case {Path(args.case).name}: {'x'.join(map(str, ct.shape))} voxels, read in {t_read:.1f} s ({rss_read:.0f} MB)"
    )
    print(
        f"extraction: {result.seconds:.1f} s wall, peak RSS {peak:.0f} MB "
        f"({', '.join(f'{k} {v:.1f} s' for k, v in result.timings.items())})"
    )
    print(
        f"result: {result.volume_ml:.1f} mL, threshold {result.threshold_hu:.0f} HU, grown {result.grown_ml:.1f} mL, "
        f"tubes {result.tube_ml:.1f} mL, rim {result.rim_ml:.1f} mL; {tree.n_branches} branches, "
        f"generation {tree.max_generation}"
    )
    if args.reference:
        from core.io import read_label

        ref = read_label(args.reference, args.selector, reference=ct).mask
        mask = result.mask.mask
        both = int((mask & ref).sum())
        print(
            f"against {Path(args.reference).name} ({args.selector}): Dice {2 * both / (mask.sum() + ref.sum()):.3f}, "
            f"precision {both / max(mask.sum(), 1):.3f}, sensitivity {both / max(ref.sum(), 1):.3f}"
        )
    print(
        f"goal: < 30 s -> {'met' if result.seconds < 30 else 'NOT met'}; < 3 GB -> {'met' if peak < 3072 else 'NOT met'}"
    )
    print(f"load average while running: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
