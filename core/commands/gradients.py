"""``airway gradients``: per-block foreground/background gradient magnitudes (the paper's gradient-erosion probe)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "gradients",
        help="mean loss-gradient magnitude reaching each block, on airway vs background voxels",
        description="One forward/backward pass of a loss on a patch of a case; prints, per block, the mean gradient "
        "magnitude on airway and background voxels (label max-pooled to the block's resolution). "
        "Reproduces the gradient-erosion analysis of Zheng et al. 2021.",
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="CKPT_OR_ARCH",
        help="a checkpoint (.pt) or an architecture name (randomly initialised; see `airway models`)",
    )
    p.add_argument("--arch-args", default=None, metavar="JSON", help="architecture arguments, e.g. '{\"width\": 0.5}'")
    p.add_argument("--ct", required=True, help="CT file or DICOM folder")
    p.add_argument("--label", required=True, help="reference airway label on the CT's grid")
    p.add_argument("--label-selector", default=None, metavar="SEL", help="nonzero (default), value:N, bits:SHIFT:N")
    p.add_argument("--loss", default="gul", help="gul (default), rtl, tversky, dice, wdice, wbce, dice_wbce")
    p.add_argument("--alpha", type=float, default=None, help="alpha of tversky/rtl/gul (default 0.1)")
    p.add_argument("--enc-weight", type=float, default=1.0, help="weight of the encoder-group loss (default 1)")
    p.add_argument(
        "--patch", type=int, default=64, help="patch side in voxels, a multiple of the model's divisor (default 64)"
    )
    p.add_argument(
        "--centre",
        type=int,
        nargs=3,
        default=None,
        metavar=("Z", "Y", "X"),
        help="patch centre in the CT's array indices (default: the airway voxel nearest the label's centroid)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random initialisation for an architecture name")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from core.errors import ConfigError, InputError
    from core.gradients import airway_centre, patch_around, probe_gradients
    from core.io import read_ct, read_label
    from core.models.checkpoint import model_from_checkpoint
    from core.models.registry import build_model, list_models
    from core.preprocess import Preprocessing, prepare_input
    from core.weights import distance_weights

    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    if Path(args.model).suffix == ".pt" or Path(args.model).is_file():
        model, header = model_from_checkpoint(args.model)
        prep = Preprocessing.from_dict(header.get("preprocessing"))
        source = f"checkpoint {args.model} ({header.get('architecture')})"
    elif args.model.lower() in list_models():
        try:
            arch_args = json.loads(args.arch_args) if args.arch_args else {}
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--arch-args is not JSON: {exc}.", "Write it like '{\"width\": 0.5}'.") from None
        torch.manual_seed(args.seed)
        model = build_model(args.model, **arch_args)
        prep = Preprocessing()
        source = f"{args.model} {arch_args or ''} (random weights, seed {args.seed})"
    else:
        raise InputError(
            f"'{args.model}' is neither a checkpoint file nor an architecture.",
            f"Give a .pt file or one of: {', '.join(list_models())}.",
        )
    divisor = int(getattr(model, "divisor", 1))
    if args.patch <= 0 or args.patch % divisor:
        raise ConfigError(
            f"--patch {args.patch} is not a positive multiple of {divisor}.", f"Use e.g. {max(divisor, 64)}."
        )

    ct = read_ct(args.ct)
    label = read_label(args.label, args.label_selector, reference=ct, allow_empty=False)
    image, box = prepare_input(ct, prep)
    mask = box.crop(label.mask)
    if not mask.any():
        raise InputError("The airway label lies outside the lung crop.", "Check that the label belongs to this CT.")
    centre = (
        airway_centre(mask) if args.centre is None else tuple(int(c) - s.start for c, s in zip(args.centre, box.slices))
    )
    slices, pads = patch_around(image.shape, centre, args.patch)
    img = np.pad(image[slices], pads, constant_values=float(image.min()))
    lab = np.pad(mask[slices], pads)

    params: dict[str, Any] = {}
    if args.alpha is not None:
        params["alpha"] = args.alpha
    weights = None
    if args.loss.lower() == "gul":
        # per spec: computed once on the whole case, then cropped like the label
        weights = np.pad(distance_weights(mask, ct.spacing_zyx, **params)[slices], pads, constant_values=1.0)
    report = probe_gradients(
        model, img, lab, args.loss, weights=weights, enc_weight=args.enc_weight, loss_params=params
    )
    origin = tuple(s.start + b.start for s, b in zip(slices, box.slices))
    if args.json:
        print(
            json.dumps(
                {
                    "model": source,
                    "patch_origin_zyx": origin,
                    "patch": args.patch,
                    "loss": report.loss,
                    "loss_value": report.loss_value,
                    "parts": report.parts,
                    "blocks": report.as_dicts(),
                },
                indent=2,
            )
        )
    else:
        print(f"model: {source}\npatch: {args.patch}^3 at (z, y, x) {origin}, {int(lab.sum())} airway voxels")
        print(report.table())
    return 0
