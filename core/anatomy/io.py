"""What ``airway label`` writes: a label image of names, its colour tables, and the branch table.

The label image holds one value per name (:data:`core.anatomy.names.ALL_NAMES`, value = position
+ 1; 0 background). A branch without a name of its own is painted with its segment's value, else
its lobe's (the lobar bronchus's value), else :data:`UNNAMED_VALUE` - so a segment's whole subtree
shows in its colour.
"""

from __future__ import annotations

import csv
import io as _io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from core.anatomy.colours import COLOURS, itksnap_labels, slicer_ctbl
from core.anatomy.names import ALL_NAMES, UNNAMED_VALUE, name_value
from core.anatomy.tree_names import TreeNames
from core.tree import AirwayTree
from core.volume import Geometry, LabelVolume

if TYPE_CHECKING:
    from core.outputs import OutputPlan


def branch_values(tree: AirwayTree, names: TreeNames) -> npt.NDArray[np.uint8]:
    """Label value of each branch id (index 0 = background)."""
    lut = np.zeros(tree.n_branches + 1, dtype=np.uint8)
    for b in tree.branches:
        n = names.names.get(b.id)
        shown = (n.name or n.segment or n.lobe) if n else None
        lut[b.id] = name_value(shown) if shown else UNNAMED_VALUE
    return lut


def names_image(tree: AirwayTree, names: TreeNames, geometry: Geometry) -> LabelVolume:
    """Full-size label image of names on the tree's grid."""
    out = np.zeros(tree.shape, dtype=np.uint8)
    out[tree.slices] = branch_values(tree, names)[tree.branch_map.astype(np.int64)]
    return LabelVolume(out, geometry, name="bronchus names")


def output_paths(out_dir: str | Path, case: str) -> dict[str, Path]:
    out = Path(out_dir)
    return {
        "image": out / f"{case}_names.nii.gz",
        "slicer": out / f"{case}_names.ctbl",
        "itksnap": out / f"{case}_names_itksnap.txt",
        "json": out / f"{case}_names.json",
        "csv": out / f"{case}_names.csv",
    }


def table_csv(rows: list[dict[str, Any]]) -> str:
    buf = _io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


def names_document(case: str, tree: AirwayTree, names: TreeNames, geometry: Geometry) -> dict[str, Any]:
    """The JSON file: the names (``TreeNames.from_json(doc["names"])`` reads them back), the table, the values."""
    return {
        "case": case,
        "geometry": geometry.to_dict(),
        "shape_zyx": list(tree.shape),
        "names": names.to_json(),
        "table": names.table(tree),
        "label_values": {
            **{str(name_value(n)): {"name": n, "rgb": list(COLOURS[n])} for n in ALL_NAMES},
            str(UNNAMED_VALUE): {"name": "unnamed", "rgb": [150, 150, 150]},
        },
    }


def read_names(path: str | Path) -> TreeNames:
    """The names from a ``CASE_names.json`` that ``airway label`` wrote."""
    from core.errors import InputError

    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(
            f"Cannot read the branch names ({exc}).", "Give the CASE_names.json airway label wrote.", path=p
        ) from None
    return TreeNames.from_json(doc.get("names") if isinstance(doc, dict) else None)


def write_names(
    plan: OutputPlan, out_dir: str | Path, case: str, tree: AirwayTree, names: TreeNames, geometry: Geometry
) -> dict[str, Path]:
    """Stage every output in ``plan`` (committed by the caller); returns the paths."""
    paths = output_paths(out_dir, case)
    plan.write_volume(names_image(tree, names, geometry), paths["image"])
    plan.write_text(paths["slicer"], slicer_ctbl())
    plan.write_text(paths["itksnap"], itksnap_labels())
    plan.write_text(paths["json"], json.dumps(names_document(case, tree, names, geometry), indent=1))
    plan.write_text(paths["csv"], table_csv(names.table(tree)))
    return paths
