"""``airway train``: staged training (Dice -> GUL -> fine-tune) with an event stream.

Also runs under ``torchrun --nproc-per-node N main.py train ...`` (DDP).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.training.finetune import FinetunePlan


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train an airway model in stages (paper: Dice, GUL, fine-tune)",
        description="Events go to RUN/events.jsonl and stdout, one JSON object per line (docs/events.md). "
        "Create RUN/stop.request (or send SIGTERM) to stop after the current step; "
        "continue with --resume.",
    )
    p.add_argument("--config", help="run configuration (.toml); overrides the preset's values")
    from core.training.config import PRESETS

    p.add_argument(
        "--preset",
        choices=PRESETS,
        help="preset to start from (default: paper; finetune with --dataset and --init)",
    )
    p.add_argument("--data", help="dataset folder (imagesTr/ + labelsTr/) or CSV of image,label pairs")
    p.add_argument(
        "--dataset",
        metavar="DIR",
        help="fine-tune on a reviewed dataset (core.dataset, with a frozen split): its 'train' part is trained "
        "on, 'validation' picks the best epoch, 'test' is never read and compares the models afterwards "
        "(RUN/compare/report.html)",
    )
    p.add_argument(
        "--labels",
        choices=("reviewed", "original", "best"),
        help="with --dataset: train on the reviewed labels (labelsReviewed/; cases without one are skipped and "
        "listed), the original ones, or the reviewed one where there is one (best). Default: reviewed",
    )
    p.add_argument(
        "--ignore-unreviewed",
        action="store_true",
        help="with --dataset: in each reviewed training label, the error regions of the case's predictions that "
        "the reviewer did not judge (no status, unreviewed or flagged in the app) count neither as airway nor as "
        "background (docs/finetune.md)",
    )
    p.add_argument(
        "--init",
        metavar="CKPT",
        help="start from this checkpoint's weights; its architecture, preprocessing and patch sampling are used",
    )
    p.add_argument(
        "--no-compare",
        action="store_true",
        help="with --dataset: do not compare the start and the fine-tuned model on the test part afterwards",
    )
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


def _check_sources(args: argparse.Namespace) -> None:
    """One source of cases, and the flags that belong to it, before anything is written."""
    from core.errors import ConfigError

    if args.dataset and args.data:
        raise ConfigError(
            "--dataset and --data both give the cases.",
            "Use --dataset DIR to fine-tune on a reviewed dataset's split, or --data for a plain training set.",
        )
    if not args.dataset and not args.data:
        raise ConfigError(
            "No dataset given.", "Pass --data FOLDER (imagesTr/ + labelsTr/) or a CSV of image,label pairs."
        )
    if args.labels and not args.dataset:
        raise ConfigError("--labels chooses a reviewed dataset's label version.", "Use it with --dataset DIR.")
    if args.ignore_unreviewed and not args.dataset:
        raise ConfigError("--ignore-unreviewed works on a reviewed dataset's labels.", "Use it with --dataset DIR.")
    if args.dataset and not args.init:
        raise ConfigError(
            "Fine-tuning on a dataset starts from a trained model.",
            "Give its checkpoint with --init CKPT (e.g. the model that made the predictions you reviewed).",
        )
    if (args.preset == "finetune" or args.dataset) and not args.init:
        raise ConfigError("The finetune preset starts from a trained model.", "Give its checkpoint with --init CKPT.")


def _say_plan(plan: FinetunePlan) -> None:
    """What the fine-tuning trains on, and what it leaves out, on stderr before it starts."""
    import sys

    versions = sorted({c.version for c in plan.train})
    print(
        f"airway train: fine-tuning {plan.init} on {len(plan.train)} training case(s) ({'/'.join(versions)} "
        f"labels), {len(plan.validation)} validation case(s); {len(plan.test)} test case(s) are left for the "
        "comparison",
        file=sys.stderr,
    )
    if plan.skipped:
        print(f"airway train: skipped {len(plan.skipped)} case(s): {plan.skipped_text()}", file=sys.stderr)
    if plan.ignore_unreviewed:
        print(
            "airway train: --ignore-unreviewed: unjudged error regions of reviewed training labels are left out "
            "of the losses",
            file=sys.stderr,
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
    from core.training import finetune

    plan = None
    if args.resume:
        if args.config or args.preset or args.dataset or args.init or args.labels or args.ignore_unreviewed:
            raise ConfigError(
                "--resume reads the run's own config.toml; --config/--preset/--dataset/--init/--labels/"
                "--ignore-unreviewed cannot change it.",
                "Drop them, or start a new run in another --out folder.",
            )
        cfg = None
        plan = finetune.load_plan(args.out)
    else:
        _check_sources(args)
        if args.dataset:
            plan = finetune.plan_finetune(
                args.dataset, args.labels or "reviewed", args.init, ignore_unreviewed=args.ignore_unreviewed
            )
            cfg = finetune.finetune_config(plan, args.out, args.preset or "finetune", args.config)
        else:
            base = finetune.checkpoint_base(args.init) if args.init else None
            cfg = load_config(args.config, args.preset, base=base)
        if args.workers is not None:
            cfg.run.num_workers = args.workers
    from core.outputs import check_writable_folder

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ConfigError(f"The run folder {args.out} is a file.", "Give a folder with --out.")
    check_writable_folder(args.out, flag="--out", what="The run folder")
    if not args.resume and not args.dataset:
        _check_dataset(args.data)
    if plan is not None and not args.resume:
        from core.training.run_files import LAST, RunFiles

        if RunFiles.of(args.out).checkpoint(LAST).exists():
            raise ConfigError(
                f"{args.out} already holds a run.", "Resume it with --resume, or choose another --out folder."
            )
        _say_plan(plan)
        finetune.write_run_files(plan, args.out, say=lambda t: print(f"airway train: {t}", file=sys.stderr))
    hook = None
    if plan is not None and not args.no_compare:
        hook = finetune.compare_hook(args.device or (cfg.run.device if cfg is not None else "auto"))
    # stdout given now: the default is bound when the trainer module loads (a replaced stream, in-process)
    trainer = Trainer(
        cfg,
        args.out,
        data=None if args.dataset else args.data,
        resume=args.resume,
        more_epochs=args.more_epochs,
        device=args.device,
        stdout=sys.stdout,
        after_training=hook,
    )
    if plan is not None and plan.skipped and not args.resume:
        # in the event stream too, so the Training tab lists them with the run
        trainer.events.emit("warning", message=f"Skipped {len(plan.skipped)} case(s): {plan.skipped_text()}")
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
