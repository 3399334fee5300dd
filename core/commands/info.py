"""``airway info PATH``: what a volume file or DICOM folder holds."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from typing import Any


def describe(
    path: str, label: bool | None = None, selector: str | None = None, series_uid: str | None = None
) -> dict[str, Any]:
    """Facts about a volume as a JSON-able dict (used by the CLI and the GUI)."""
    import numpy as np

    from core.io import list_dicom_series, read_volume
    from core.volume import LabelSelector

    vol = read_volume(path, series_uid)
    arr = vol.array
    g = vol.geometry
    info: dict[str, Any] = {
        "path": str(path),
        "shape_zyx": list(vol.shape),
        "spacing_xyz": [round(s, 6) for s in g.spacing],
        "origin_xyz": [round(o, 4) for o in g.origin],
        "direction": [round(d, 6) for d in g.direction],
        "orientation": g.orientation_code(),
        "dtype": str(arr.dtype),
        "min": float(arr.min()),
        "max": float(arr.max()),
    }
    from pathlib import Path

    if Path(path).is_dir():
        series = list_dicom_series(path)
        info["dicom_series"] = [{"uid": s.uid, "slices": s.n_slices} for s in series]
    is_label = label
    if is_label is None:
        # Integer maps with few distinct values are labels; CTs have thousands.
        is_label = arr.dtype.kind in "iub" and np.unique(arr[:: max(1, arr.shape[0] // 16)]).size <= 64
    info["kind"] = "label" if is_label else "image"
    if is_label:
        import cc3d

        mask = LabelSelector.parse(selector).apply(arr)
        info["selector"] = str(LabelSelector.parse(selector))
        info["voxels"] = int(np.count_nonzero(mask))
        info["volume_mm3"] = round(info["voxels"] * g.voxel_volume_mm3, 2)
        if info["voxels"]:
            cc = cc3d.connected_components(mask, connectivity=26)
            sizes = np.bincount(cc.ravel())[1:]
            info["components_26"] = int(sizes.size)
            info["largest_component_voxels"] = int(sizes.max())
            info["components_6"] = int(cc3d.connected_components(mask, connectivity=6).max())
        else:
            info["components_26"] = info["components_6"] = 0
            info["largest_component_voxels"] = 0
        values = np.unique(arr)
        info["values"] = [int(v) for v in values[:32]]
    return info


def _fmt(v: Iterable[float]) -> str:
    return "(" + ", ".join(f"{x:g}" for x in v) + ")"


def run(args: argparse.Namespace) -> int:
    info = describe(args.path, True if args.label else None, args.label_selector, args.series_uid)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    rows = [
        ("path", info["path"]),
        ("kind", info["kind"]),
        ("shape (z, y, x)", " x ".join(str(s) for s in info["shape_zyx"])),
        ("spacing (x, y, z) mm", _fmt(info["spacing_xyz"])),
        ("origin (x, y, z) mm", _fmt(info["origin_xyz"])),
        ("direction", _fmt(info["direction"])),
        ("orientation", info["orientation"] + "  (letters: where the x, y, z index axes point)"),
        ("dtype", info["dtype"]),
        ("value range", f"{info['min']:g} .. {info['max']:g}"),
    ]
    if "dicom_series" in info:
        rows.append(("DICOM series", "; ".join(f"{s['uid']} ({s['slices']} slices)" for s in info["dicom_series"])))
    if info["kind"] == "label":
        rows += [
            ("label selector", info["selector"]),
            ("label voxels", f"{info['voxels']} ({info['volume_mm3']:g} mm^3)"),
            (
                "components",
                f"{info['components_26']} (26-connected), {info['components_6']} (6-connected); "
                f"largest {info['largest_component_voxels']} voxels",
            ),
        ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("info", help="describe a volume file or DICOM folder (shape, geometry, values, components)")
    p.add_argument("path", help="a .nii/.nii.gz/.mha/.mhd/.nrrd/.nhdr file or a DICOM series folder")
    p.add_argument("--label", action="store_true", help="treat it as a label map (default: guessed)")
    p.add_argument(
        "--label-selector",
        default=None,
        metavar="SEL",
        help="which values are airway: nonzero (default), value:N or bits:SHIFT:N (CIP maps: bits:8:2)",
    )
    p.add_argument("--series-uid", default=None, help="DICOM series to read when a folder holds several")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)
