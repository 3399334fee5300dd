"""A checkpoint on the real CTs of ../shared/data against issue 11's goals, beside the training-free method.

    .venv/bin/python benchmarks/realct_eval.py CKPT [CKPT ...] [--threads 2] [--no-growing]

Per case and method: seconds (wall and CPU), mL, 26-connected components, the output gate
(core.gate: touches the trachea, share outside the lungs and central airways), branches and
generation by core.tree.parse_tree, and:
- chest_ct_dicom (141 x 512 x 512, 2 mm slices): share of the detected trachea covered; the goal is
  trachea, both main bronchi and the lobar bronchi, <= 5 % outside, as many branches as the
  training-free method, < 60 s on the CPU;
- CIP ct-64 (held out of every training; 4 mm): Dice, precision and sensitivity against its airway
  label (bits:8:2); the goal is Dice >= 0.60;
- TotalSegmentator aorta_ct_cropped (held out): trachea with two main bronchi, no leak (< 50 mL,
  median HU < -600).
Each checkpoint runs with its header's inference settings (spacing, window), as `airway segment`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"


def describe(name: str, ct, mask: np.ndarray, seconds: float, cpu: float, ref: np.ndarray | None) -> None:
    import cc3d

    from core.gate import check_mask
    from core.tree import parse_tree

    ml = float(mask.sum()) * ct.geometry.voxel_volume_mm3 / 1000
    comps = int(cc3d.connected_components(mask, connectivity=26).max()) if mask.any() else 0
    line = f"  {name:28s} {seconds:6.1f} s ({cpu:6.1f} CPU s)  {ml:6.1f} mL  {comps:3d} comp."
    try:
        gate = check_mask(ct, mask)
        line += (
            f"  gate {'pass' if gate.passed else 'FAIL'} (trachea {'hit' if gate.touches_trachea else 'missed'}, "
            f"outside {100 * gate.outside_fraction:.1f} %)"
        )
    except Exception as exc:  # e.g. a crop without a trachea the gate can find
        line += f"  gate: {exc}"
    if mask.any():
        largest = cc3d.largest_k(mask, 1, connectivity=26) > 0
        tree = parse_tree(largest, ct.geometry.spacing_zyx, connectivity=26)
        kids = len(tree.branch(tree.trachea).children) if tree.trachea is not None else 0
        line += f"  {tree.n_branches} branches, gen {tree.max_generation}, trachea children {kids}"
        line += f", median HU {float(np.median(ct.array[mask])):.0f}"
    if ref is not None:
        both = int((mask & ref).sum())
        line += (
            f"  Dice {2 * both / max(mask.sum() + ref.sum(), 1):.3f} (precision {both / max(mask.sum(), 1):.2f}, "
            f"sensitivity {both / max(ref.sum(), 1):.2f})"
        )
    print(line, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="*")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-growing", action="store_true", help="skip the training-free method")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    if not DATA.exists():
        print(f"skipped: {DATA} is absent")
        return 0
    from core.growing import find_trachea, grow_airway
    from core.io import read_ct, read_label
    from core.segmentation import Predictor

    cases = [
        ("chest_ct_dicom", DATA / "chest_ct_dicom", None),
        ("CIP ct-64 (held out)", DATA / "cip" / "ct-64.nrrd", DATA / "cip" / "lm-64.nrrd"),
        ("aorta crop (held out)", DATA / "totalseg" / "aorta_ct_cropped.nii.gz", None),
    ]
    predictors = {Path(c).name: Predictor(c, device="cpu", threads=args.threads) for c in args.checkpoints}
    for title, path, lab in cases:
        ct = read_ct(path)
        ref = read_label(lab, "bits:8:2", reference=ct).mask if lab else None
        print(f"{title}: {'x'.join(map(str, ct.shape))}, spacing {tuple(round(s, 3) for s in ct.geometry.spacing)} mm")
        if not args.no_growing:
            t, c = time.perf_counter(), time.process_time()
            grown = grow_airway(ct)
            describe("region growing", ct, grown.mask.mask, time.perf_counter() - t, time.process_time() - c, ref)
        trachea = find_trachea(ct).mask.mask if title == "chest_ct_dicom" and predictors else None
        for name, pred in predictors.items():
            t, c = time.perf_counter(), time.process_time()
            out = pred.predict(ct)
            mask = np.asarray(out.mask.array).astype(bool)
            describe(name, ct, mask, time.perf_counter() - t, time.process_time() - c, ref)
            if trachea is not None:
                print(
                    f"  {'':28s} covers {100 * (mask & trachea).sum() / max(trachea.sum(), 1):.0f} % of the detected trachea"
                )
    print(f"load average: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
