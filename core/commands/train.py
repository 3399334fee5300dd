"""``airway train``: staged training (Dice -> GUL -> fine-tune) with an event stream.

Also runs under ``torchrun --nproc-per-node N main.py train ...`` (DDP).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train an airway model in stages (paper: Dice, GUL, fine-tune)",
        description="Events go to RUN/events.jsonl and stdout, one JSON object per line (docs/events.md). "
        "Create RUN/stop.request (or send SIGTERM) to stop after the current step; "
        "continue with --resume.",
    )
    p.add_argument("--config", help="run configuration (.toml); overrides the preset's values")
    p.add_argument("--preset", choices=("paper", "quick", "demo"), help="preset to start from (default: paper)")
    p.add_argument("--data", help="dataset folder (imagesTr/ + labelsTr/) or CSV of image,label pairs")
    p.add_argument("--out", required=True, help="run folder (created)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    p.add_argument(
        "--more-epochs",
        type=int,
        metavar="N",
        help="with --resume: train the run further, N more epochs of its last stage (the learning-rate "
        "schedule goes on where it ended); the way to continue a finished run",
    )
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (overrides run.device)")
    p.add_argument("--workers", type=int, help="DataLoader worker processes (overrides run.num_workers)")
    p.set_defaults(func=run_train)


def _check_dataset(data: str) -> None:
    """The dataset's layout before the run folder is made: a bad --data writes nothing (the tab checks the same)."""
    from core.errors import InputError
    from core.training.dataset import discover_cases

    cases = discover_cases(data)
    if cases and all(c.label is None for c in cases):
        raise InputError(
            "No case in the dataset has a label.",
            "Put the airway labels in labelsTr/ with the images' names (or give image,label pairs in a CSV).",
            path=data,
        )


def run_train(args: argparse.Namespace) -> int:
    import sys

    from core.errors import AirwayError, ConfigError
    from core.training.config import load_config
    from core.training.trainer import Trainer

    if args.more_epochs is not None and not args.resume:
        raise ConfigError(
            "--more-epochs trains an earlier run further.", "Add --resume and give that run's folder with --out."
        )
    if args.resume:
        if args.config or args.preset:
            raise ConfigError(
                "--resume reads the run's own config.toml; --config/--preset cannot change it.",
                "Drop --config/--preset, or start a new run in another --out folder.",
            )
        cfg = None
    else:
        if not args.data:
            raise ConfigError(
                "No dataset given.", "Pass --data FOLDER (imagesTr/ + labelsTr/) or a CSV of image,label pairs."
            )
        cfg = load_config(args.config, args.preset)
        if args.workers is not None:
            cfg.run.num_workers = args.workers
    from core.outputs import check_writable_folder

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ConfigError(f"The run folder {args.out} is a file.", "Give a folder with --out.")
    check_writable_folder(args.out, flag="--out", what="The run folder")
    if not args.resume:
        _check_dataset(args.data)
    # stdout given now: the default is bound when the trainer module loads (a replaced stream, in-process)
    trainer = Trainer(
        cfg,
        args.out,
        data=args.data,
        resume=args.resume,
        more_epochs=args.more_epochs,
        device=args.device,
        stdout=sys.stdout,
    )
    if args.resume and args.workers is not None:
        trainer.cfg.run.num_workers = args.workers
    try:
        status = trainer.run()
    except AirwayError:
        raise  # the dispatcher prints it as one line (exit 2); the error event is already written
    except Exception as exc:  # a crash: the error event holds the traceback
        print(
            f"airway train: crashed: {type(exc).__name__}: {exc} (traceback in {args.out}/events.jsonl)",
            file=sys.stderr,
        )
        return 1
    return 0 if status in ("finished", "stopped") else 1
