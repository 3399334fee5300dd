"""Rewrite the model cards of the shipped checkpoints (resources/models/*.pt): header metadata only.

The card lives in each checkpoint's header (core.models.card). This script
replaces the ``card`` entry of each file with the one below and leaves the
weights bit-identical: ``core.models.checkpoint.rewrite_header`` reads the file
weights-only, writes it again atomically with the new header, reads it back and
compares every tensor's bytes (dtype, shape and raw data) with the original's.
It also compares the archive's tensor records (``*/data/N``) byte for byte.

The figures are the measurements documented in resources/models/README.md;
nothing here retrains or re-measures. Run from the repository root:

    python scripts/update_model_cards.py            # rewrite and verify
    python scripts/update_model_cards.py --check    # only show what would change
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.models.card import card_summary, make_dataset_info  # noqa: E402

MODELS = ROOT / "resources" / "models"

# Fields added to (or replacing those of) each shipped card. The rest of each card is kept.
PHANTOM_48 = {"size": [48, 48, 48], "spacing_xyz": [2.5, 2.5, 3.0]}


def _demo_card() -> dict[str, Any]:
    return {
        "input": {
            "spacing_mm": [2.5, 2.5, 3.0],
            "extent_mm": [[120.0, 120.0, 144.0], [120.0, 120.0, 144.0]],
            "size": "48^3 voxels around the central airways",
        },
        "validation_data": make_dataset_info(
            3,
            "phantom",
            PHANTOM_48["size"],
            PHANTOM_48["spacing_xyz"],
            "the run's validation phantoms, difficulty normal; they chose the checkpoint, so not held out",
        ),
        "held_out_data": make_dataset_info(
            10, "phantom", PHANTOM_48["size"], PHANTOM_48["spacing_xyz"], "seeds 1000-1009, difficulty normal"
        ),
        "held_out_sets": _default_phantoms(
            {
                96: {"td": 0.0, "bd": 0.0, "dsc": 0.0, "precision": 0.0},
                128: {"td": 0.0, "bd": 0.0, "dsc": 0.0, "precision": 0.0},
            }
        ),
    }


def _realct_card() -> dict[str, Any]:
    return {
        # phantoms (48^3 at 2.5 x 2.5 x 3.0 mm = 120 x 120 x 144 mm) up to chest_ct_dicom
        # (512 x 512 x 141 at 0.98 x 0.98 x 2.0 mm = 500 x 500 x 282 mm), example_ct (366 x 303 x 336 mm) and
        # example_ct_dicom (500 x 500 x 40 mm)
        "input": {
            "spacing_mm": [2.5, 2.5, 3.0],
            "extent_mm": [[120.0, 120.0, 40.0], [500.0, 500.0, 336.0]],
            "size": "48^3-voxel phantoms to whole chests",
        },
        "validation_data": make_dataset_info(
            3,
            "phantom",
            PHANTOM_48["size"],
            PHANTOM_48["spacing_xyz"],
            "the run's validation phantoms; they chose the checkpoint, so not held out",
        ),
        "held_out_data": make_dataset_info(
            10, "phantom", PHANTOM_48["size"], PHANTOM_48["spacing_xyz"], "seeds 1000-1009, difficulty normal"
        ),
        "held_out_sets": [
            {
                "data": make_dataset_info(
                    1, "real", [79, 64, 64], [4.172, 4.172, 3.987], "CIP ct-64, never used in training"
                ),
                "metrics": {"dsc": 68.7, "precision": 98.0, "sensitivity": 53.0},
            },
            *_default_phantoms(
                {
                    96: {"td": 76.1, "bd": 40.0, "dsc": 84.4, "precision": 92.2},
                    128: {"td": 66.2, "bd": 44.4, "dsc": 83.2, "precision": 91.8},
                }
            ),
        ],
    }


def _full_card() -> dict[str, Any]:
    return {
        # 22 phantoms of 160 x 192 x 192 at 0.8 x 0.8 x 1.0 mm (153.6 x 153.6 x 160 mm) and 6 whole chests of
        # 192^3 at the automatic spacing 1.82 x 1.82 x 2.60 mm (350 x 350 x 500 mm)
        "input": {
            "spacing_mm": [0.8, 0.8, 1.0],
            "extent_mm": [[153.6, 153.6, 160.0], [350.0, 350.0, 500.0]],
            "size": "160 x 192 x 192 to 192^3 voxels",
        },
        "validation_data": make_dataset_info(
            3, "phantom", [160, 192, 192], [0.8, 0.8, 1.0], "the run's validation phantoms; not held out"
        ),
        "held_out_data": make_dataset_info(
            3, "phantom", [160, 192, 192], [0.8, 0.8, 1.0], "seeds 9000-9002, central airways"
        ),
    }


def _default_phantoms(figures: dict[int, dict[str, float]]) -> list[dict[str, Any]]:
    """Held-out figures on the phantoms ``airway phantom`` makes by default (whole chest in the grid):
    ``--size 96`` (seed 0) and ``--size 128 --seed 4242``, measured through the Predictor with the
    checkpoint's own settings, as ``airway segment --method model`` runs (README: the table at the top)."""
    grids = {
        96: ([96, 96, 96], [3.646, 3.646, 5.208], "airway phantom --size 96, seed 0, whole chest"),
        128: ([128, 128, 128], [2.734, 2.734, 3.906], "airway phantom --size 128 --seed 4242, whole chest"),
    }
    return [
        {"data": make_dataset_info(1, "phantom", grids[n][0], grids[n][1], grids[n][2]), "metrics": figures[n]}
        for n in (96, 128)
    ]


CARDS = {
    "demo_wingsnet.pt": _demo_card,
    "realct_wingsnet.pt": _realct_card,
    "wingsnet_full.pt": _full_card,
}


def tensor_records(path: Path) -> dict[str, str]:
    """SHA-256 of each tensor storage record in a torch zip archive (``<archive>/data/<n>``)."""
    with zipfile.ZipFile(path) as z:
        return {
            name.split("/", 1)[1]: hashlib.sha256(z.read(name)).hexdigest() for name in z.namelist() if "/data/" in name
        }


def new_card(old: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    card = {**old, **extra}
    held = dict(card.get("held_out") or {})
    held.pop("cases", None)  # the free-text count moved to held_out_data
    card["held_out"] = held or None
    return card


def main(argv: list[str] | None = None) -> int:
    from core.models.card import get_card, read_header
    from core.models.checkpoint import rewrite_header

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="print the new cards, write nothing")
    args = ap.parse_args(argv)
    for name, make in CARDS.items():
        path = MODELS / name
        header = read_header(path)
        if header is None:
            print(f"{name}: no header, skipped")
            continue
        card = new_card(get_card(header) or {}, make())
        print(f"{name}: {card_summary({**header, 'card': card})}")
        if args.check:
            print(json.dumps(card, indent=1))
            continue
        before = tensor_records(path)
        rewrite_header(path, {"card": card})  # reads back and compares the weights bit for bit
        after = tensor_records(path)
        if before != after:
            print(f"{name}: tensor records differ after the rewrite", file=sys.stderr)
            return 1
        print(f"  rewritten; {len(after)} tensor records byte-identical, weights read back bit-identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
