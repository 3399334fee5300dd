"""``airway models``: registered architectures with parameter counts and the cost of one 128^3 forward pass."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "models",
        help="list the network architectures, their parameters and GFLOPs per 128^3 patch",
        description="Lists the registered architectures and their named variants. GFLOPs are counted from the "
        "layer shapes (convolutions, 2 FLOPs per multiply-add) on torch's meta device; nothing runs.",
    )
    p.add_argument("--size", type=int, default=128, help="patch side for the FLOP count (default 128)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--checkpoint",
        metavar="CKPT",
        help="print this checkpoint's model card instead (what it was trained on, held-out results)",
    )
    p.set_defaults(func=run)


def show_card(path: str, as_json: bool) -> int:
    from core.models.card import card_lines, card_summary, get_card
    from core.models.checkpoint import load_checkpoint

    header = load_checkpoint(path).header
    if as_json:
        print(
            json.dumps(
                {
                    "checkpoint": str(path),
                    "architecture": header.get("architecture"),
                    "arch_args": header.get("arch_args"),
                    "card": get_card(header),
                    "summary": card_summary(header),
                },
                indent=2,
            )
        )
        return 0
    print(f"{path}: {header.get('architecture')} {header.get('arch_args') or ''}")
    for line in card_lines(header):
        print(f"  {line}")
    return 0


def run(args: argparse.Namespace) -> int:
    from core.errors import ConfigError
    from core.models.flops import model_summary
    from core.models.registry import get_spec, list_models

    if args.checkpoint:
        return show_card(args.checkpoint, args.json)
    if args.size <= 0:
        raise ConfigError(f"--size {args.size} must be positive.")
    rows = []
    for name in list_models():
        spec = get_spec(name)
        for variant, arch_args in (spec.variants or {"default": {}}).items():
            summary = model_summary(name, arch_args, args.size)
            if args.size % summary["divisor"]:
                raise ConfigError(f"--size {args.size} is not a multiple of {name}'s divisor {summary['divisor']}.")
            rows.append({**summary, "variant": variant, "description": spec.description})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"{'architecture':12s} {'variant':11s} {'parameters':>11s} {f'GFLOP/{args.size}^3':>12s} {'divisor':>7s}  outputs"
    )
    for r in rows:
        print(
            f"{r['name']:12s} {r['variant']:11s} {r['parameters']:11,d} {r['gflops']:12.1f} {r['divisor']:7d}  "
            f"{', '.join(r['outputs'])}"
        )
    for name in list_models():
        print(f"  {name}: {get_spec(name).description}")
    return 0
