"""``airway models``: registered architectures with parameter counts and the cost of one 128^3 forward pass,
and the shipped checkpoints (``resources/models/*.pt``), one line each with what they expect and their figures."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "models",
        help="list the network architectures (parameters, GFLOPs per 128^3 patch) and the shipped checkpoints",
        description="Lists the registered architectures and their named variants, then the checkpoints shipped "
        "with Airway Studio (resources/models), one line each: what it was trained on, the voxels and field of "
        "view it expects, and its held-out figures with the data they were measured on. GFLOPs are counted "
        "from the layer shapes (convolutions, 2 FLOPs per multiply-add) on torch's meta device; nothing runs.",
    )
    p.add_argument("--size", type=int, default=128, help="patch side for the FLOP count (default 128)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--checkpoint",
        metavar="CKPT",
        help="print this checkpoint's model card instead (what it was trained on and expects, held-out results "
        "and their data)",
    )
    p.set_defaults(func=run)


def shipped_rows() -> list[dict[str, Any]]:
    """One row per shipped checkpoint (``resources/models/*.pt``), read without torch and checked."""
    from core.models.card import get_card, read_header, short_line
    from core.models.header import header_problems
    from core.resources import resources_root, shipped_model_path

    folder = resources_root() / "models"
    default = shipped_model_path()
    rows: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.pt")) if folder.is_dir() else []:
        header = read_header(path)
        problems = [] if header is None else header_problems(header)
        if header is None or problems:
            line = "not readable: " + ("no Airway Studio header" if header is None else problems[0])
            arch = ""
        else:
            args = header.get("arch_args") or {}
            arch = f"{header.get('architecture')}" + (f" width {args['width']:g}" if "width" in args else "")
            line = short_line(header)
        rows.append(
            {
                "row": "checkpoint",
                "name": path.name,
                "path": str(path),
                "architecture": arch,
                "megabytes": round(path.stat().st_size / 1e6, 1),
                "default": default is not None and path.resolve() == default.resolve(),
                "card": None if header is None or problems else get_card(header),
                "summary": line,
            }
        )
    return rows


def show_card(path: str, as_json: bool) -> int:
    from core.models.card import card_lines, card_summary, expected_input, get_card
    from core.models.checkpoint import load_checkpoint

    header = load_checkpoint(path).header  # checks every header field (core.models.header)
    if as_json:
        print(
            json.dumps(
                {
                    "checkpoint": str(path),
                    "architecture": header.get("architecture"),
                    "arch_args": header.get("arch_args"),
                    "card": get_card(header),
                    "expects": expected_input(header),
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
            rows.append({**summary, "row": "architecture", "variant": variant, "description": spec.description})
    shipped = shipped_rows()
    if args.json:
        print(json.dumps(rows + shipped, indent=2))
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
    if shipped:
        print("\nShipped checkpoints (resources/models; the whole card: airway models --checkpoint FILE):")
        for r in shipped:
            default = " [default for --method model]" if r["default"] else ""
            print(f"  {r['name']}: {r['architecture']}, {r['megabytes']:g} MB{default}; {r['summary']}")
    return 0
