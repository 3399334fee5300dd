"""Tiny generated datasets for the dataset tests (and for anyone who needs a dataset folder): each case is
an 8^3 CT and a cube mask, written with core.io, so a 20-case dataset takes well under a second."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from core.io import write_volume
from core.volume import Geometry, IntensityVolume, LabelVolume

GEOMETRY = Geometry((0.8, 0.8, 1.0), (-3.0, 2.0, 5.0))
SHAPE = (8, 8, 8)


def tiny_ct(seed: int = 0) -> IntensityVolume:
    rng = np.random.default_rng(seed)
    return IntensityVolume(rng.integers(-1000, 200, SHAPE).astype(np.int16), GEOMETRY)


def tiny_mask(seed: int = 0, geometry: Geometry = GEOMETRY) -> LabelVolume:
    arr = np.zeros(SHAPE, bool)
    k = seed % 4
    arr[2 : 5 + k, 2:5, 3:6] = True
    return LabelVolume(arr, geometry)


def write_case(images: Path | None, labels: Path | None, image_name: str, label_name: str, seed: int) -> None:
    if images is not None:
        write_volume(tiny_ct(seed), images / image_name)
    if labels is not None:
        write_volume(tiny_mask(seed), labels / label_name)


def make_nnunet(root: Path, n_train: int = 5, n_test: int = 2, *, labels: dict[str, Any] | None = None) -> Path:
    """nnU-Net v2: imagesTr/labelsTr (+ imagesTs), dataset.json with an airway label."""
    for i in range(n_train):
        write_case(root / "imagesTr", root / "labelsTr", f"case_{i:03d}_0000.nii.gz", f"case_{i:03d}.nii.gz", i)
    for i in range(n_train, n_train + n_test):
        write_volume(tiny_ct(i), root / "imagesTs" / f"case_{i:03d}_0000.nii.gz")
    meta = {
        "channel_names": {"0": "CT"},
        "labels": labels if labels is not None else {"background": 0, "airway": 1},
        "numTraining": n_train,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def make_atm22(root: Path, n: int = 4) -> Path:
    """ATM'22 as it ships: labels keep the image's _0000."""
    for i in range(1, n + 1):
        name = f"ATM_{i:03d}_0000.nii.gz"
        write_case(root / "imagesTr", root / "labelsTr", name, name, i)
    return root


def make_flat(root: Path, n: int = 4) -> Path:
    for i in range(n):
        write_case(root, root, f"c{i}_0000.nii.gz", f"c{i}.nii.gz", i)
    return root


def make_predictions(folder: Path, case_ids: list[str], *, suffix: str = "") -> Path:
    for i, cid in enumerate(case_ids):
        write_volume(tiny_mask(i + 1), folder / f"{cid}{suffix}.nii.gz")
    return folder
