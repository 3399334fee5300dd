"""Build the training set of the real-CT demo model (issue 11, part 4): phantoms plus pseudo-labelled real CTs.

    .venv/bin/python benchmarks/realct_dataset.py --out DIR [--spacing 2.5 2.5 3.0] [--phantoms 15]
        [--real-copies 4] [--data ../shared/data]

Writes DIR/imagesTr + DIR/labelsTr (NIfTI) and DIR/cases.csv for ``airway train --data DIR/cases.csv``:

- ``--phantoms`` generated phantoms of 48^3 at the spacing (the demo model's recipe);
- the real chest CT ``chest_ct_dicom``: its training-free extraction (core.growing) as label 1,
  a 1.5 mm shell around that tree and the lung voxels that look like dark tubes as label 2 (ignored
  by the losses, ``data.ignore_value = 2``), everything else trusted background, lung parenchyma
  included (``--lungs tubes``, core.training.pseudo_labels; ``--lungs ignore`` ignores the whole
  lung, which let a model leak into it); listed ``--real-copies`` times so that it is drawn as
  often as that many phantoms;
- real negatives without a usable trachea: TotalSegmentator ``example_ct`` (abdomen with lung bases,
  bowel gas, table) and ``example_ct_dicom`` (20 slices of the lower thorax), with the chest CT's
  tube threshold.

Real CTs and the extracted tree are resampled to the spacing first (linear for HU, nearest for the
mask), as the model's header makes the Predictor do at inference, and labelled there. Held out, never read here: CIP ``ct-64`` and TotalSegmentator
``aorta_ct_cropped`` (the issue's real test cases). The real volumes are written under ``--out``
only, never into the repository.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
HELD_OUT = ("ct-64", "aorta_ct_cropped")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--spacing", type=float, nargs=3, default=(2.5, 2.5, 3.0), metavar=("X", "Y", "Z"))
    ap.add_argument("--phantoms", type=int, default=15)
    ap.add_argument("--real-copies", type=int, default=4)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument(
        "--lungs",
        choices=("tubes", "ignore"),
        default="tubes",
        help="which lung voxels the losses ignore (default: those that look like dark tubes)",
    )
    args = ap.parse_args()
    from core.growing import grow_airway
    from core.io import read_ct, resample_label_to, write_volume
    from core.phantom import make_phantom
    from core.preprocess import resample_ct
    from core.training.pseudo_labels import dark_tubeness, pseudo_label, tube_threshold
    from core.volume import LabelVolume

    out, data = Path(args.out), Path(args.data)
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    rows: list[tuple[Path, Path]] = []

    def put(name: str, ct, label) -> tuple[Path, Path]:
        img, lab = out / "imagesTr" / f"{name}_0000.nii.gz", out / "labelsTr" / f"{name}.nii.gz"
        write_volume(ct, img)
        write_volume(label, lab)
        return img, lab

    t0 = time.perf_counter()
    for i in range(args.phantoms):
        ph = make_phantom((48, 48, 48), spacing=tuple(args.spacing), seed=i, difficulty="normal")
        rows.append(put(f"ph{i:03d}", ph.ct, ph.label))
    print(f"{args.phantoms} phantoms in {time.perf_counter() - t0:.1f} s")

    chest = data / "chest_ct_dicom"
    level = None
    if not chest.exists():
        print(f"{chest} is absent: phantoms only")
    else:
        ct = read_ct(chest)
        grown = grow_airway(ct)
        small = resample_ct(ct, args.spacing)
        tree = resample_label_to(grown.mask, small)
        tubes = dark_tubeness(small) if args.lungs == "tubes" else None
        level = tube_threshold(tubes, tree.mask) if tubes is not None else None
        lab = pseudo_label(small, tree, lungs=args.lungs, tubeness=tubes, tube_min=level)
        print(
            f"chest_ct_dicom: {grown.volume_ml:.1f} mL airway; at {tuple(args.spacing)} mm {small.shape}, "
            f"airway {int((lab.array == 1).sum())} voxels, ignored {int((lab.array == 2).sum())}"
            + (f" (tube threshold {level:.4g})" if level is not None else "")
        )
        for c in range(args.real_copies):
            # one file per copy: the dataset reader gives each listed case its own cache and draws
            rows.append(put(f"chest{'abcdefgh'[c]}", small, lab))
    for name, path in (
        ("abdomen", data / "totalseg" / "example_ct.nii.gz"),
        ("lowthorax", data / "totalseg" / "example_ct_dicom"),
    ):
        if not path.exists() or (args.lungs == "tubes" and level is None):
            continue
        ct = read_ct(path)
        small = resample_ct(ct, args.spacing)
        empty = LabelVolume(np.zeros(small.shape, bool), small.geometry, name)
        lab = pseudo_label(small, empty, lungs=args.lungs, tube_min=level)
        print(f"{name}: negative, {small.shape}, ignored {int((lab.array == 2).sum())} voxels")
        rows.append(put(name, small, lab))
    assert not any(h in str(p) for p, _ in rows for h in HELD_OUT)
    (out / "cases.csv").write_text("image,label\n" + "".join(f"{a},{b}\n" for a, b in rows))
    print(f"{len(rows)} cases -> {out / 'cases.csv'} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
