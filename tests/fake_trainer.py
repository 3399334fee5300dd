"""A stand-in for ``main.py train``: emits schema-conformant events, fast and deterministic.

Follows the run-folder contract of docs/CONTRACTS.md (events.jsonl plus stdout,
checkpoints/{last,best}.pt, stop.request, --resume) without torch, so the
training tab's plotting, stop/resume and crash handling can be tested in a
second. Behaviour comes from a ``[fake]`` table in the config file or from
environment variables (``FAKE_<KEY>`` upper-case), for instance::

    [fake]
    steps_per_epoch = 4
    epochs = [1, 2, 2]        # stages 0, 1, 2
    delay_s = 0.01            # per step
    crash_at_step = 0         # > 0: raise at that global step (error event, exit 1)
    hard_crash_at_step = 0    # > 0: die without an event (exit 3), message on stderr
    mark_everything = 0       # 1: a model that marks the whole volume (TD/BD 100, DSC 0.3) and its warning

Epochs are numbered from 1 in the events, as the real trainer does (``epoch_base: 1``).
``--resume`` of a finished run is refused (exit 2, no event) unless ``--more-epochs N``
adds N epochs to the last stage, as the real trainer does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tomllib
import traceback
from pathlib import Path

STAGES = [(0, "dice", "dice", 0.0, 0.5), (1, "gul", "gul", 0.1, 0.8), (2, "rtl", "rtl", 0.2, 0.9)]


def _settings(config: dict) -> dict:
    s = {
        "steps_per_epoch": 4,
        "epochs": [1, 2, 2],
        "delay_s": 0.01,
        "crash_at_step": 0,
        "hard_crash_at_step": 0,
        "zero_validation": 0,
        "mark_everything": 0,
    }
    s.update(config.get("fake", {}))
    for key in list(s):
        env = os.environ.get(f"FAKE_{key.upper()}")
        if env is not None:
            s[key] = json.loads(env)
    return s


class Emitter:
    def __init__(self, run: Path):
        self.run = run
        self.file = open(run / "events.jsonl", "a", encoding="utf-8")

    def __call__(self, event: str, **fields) -> None:
        record = {"event": event, "time": time.time(), "run": self.run.name, **fields}
        line = json.dumps(record)
        self.file.write(line + "\n")
        self.file.flush()
        print(line, flush=True)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "train":
        argv = argv[1:]
    p = argparse.ArgumentParser(prog="fake_trainer")
    p.add_argument("--data")
    p.add_argument("--config")
    p.add_argument("--preset")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--more-epochs", type=int)
    args, _ = p.parse_known_args(argv)
    run = Path(args.out)
    run.mkdir(parents=True, exist_ok=True)
    (run / "checkpoints").mkdir(exist_ok=True)
    cfg_path = run / "config.toml"
    if args.resume:
        if not cfg_path.is_file():
            print(f"airway: error: {run} has no config.toml to resume from.", file=sys.stderr)
            return 2
    else:
        text = Path(args.config).read_text() if args.config else f'preset = "{args.preset or "quick"}"\n'
        cfg_path.write_text(text)
    config = tomllib.loads(cfg_path.read_text())
    s = _settings(config)
    stop_file = run / "stop.request"
    if stop_file.exists():
        stop_file.unlink()
    emit = Emitter(run)
    start = {"stage": 0, "epoch": 0, "global_step": 0}
    last = run / "checkpoints" / "last.pt"
    if args.resume and last.is_file():
        start = json.loads(last.read_text())
    if start.get("finished"):
        if not args.more_epochs:
            print(f"airway: error: The run in {run} has already finished; there is nothing to resume.", file=sys.stderr)
            return 2
        extra = json.loads((run / "more_epochs.json").read_text()) if (run / "more_epochs.json").is_file() else 0
        extra += args.more_epochs
        (run / "more_epochs.json").write_text(json.dumps(extra))
        s["epochs"][2] = int(s["epochs"][2]) + extra
        start = {"stage": 2, "epoch": start["epochs_done"], "global_step": start["global_step"]}
    elif (run / "more_epochs.json").is_file():
        s["epochs"][2] = int(s["epochs"][2]) + json.loads((run / "more_epochs.json").read_text())
    emit(
        "run_start",
        config=config,
        versions={"fake": "1"},
        device=args.device,
        world_size=1,
        resumed=args.resume,
        more_epochs=args.more_epochs or 0,
        epoch_base=1,
    )
    g = start["global_step"]
    best_dsc = -1.0
    best_path = None
    try:
        for stage, name, loss_name, alpha, threshold in STAGES:
            if stage < start["stage"]:
                continue
            n_epochs = int(s["epochs"][stage])
            emit("stage", stage=stage, name=name, loss=loss_name, epochs=n_epochs, alpha=alpha, threshold=threshold)
            first_epoch = start["epoch"] if stage == start["stage"] else 0
            for epoch in range(first_epoch, n_epochs):
                t0 = time.time()
                for step in range(int(s["steps_per_epoch"])):
                    g += 1
                    if s["hard_crash_at_step"] and g >= s["hard_crash_at_step"]:
                        print("Segmentation fault (fake): the process died", file=sys.stderr, flush=True)
                        os._exit(3)
                    if s["crash_at_step"] and g >= s["crash_at_step"]:
                        raise RuntimeError(f"fake failure at global step {g}: CUDA out of memory (simulated)")
                    loss = 1.0 / (1.0 + 0.1 * g)
                    lr = 0.01 * (0.1 if epoch >= max(1, n_epochs - 1) and n_epochs > 1 else 1.0)
                    emit(
                        "step",
                        stage=stage,
                        epoch=epoch + 1,
                        step=step + 1,
                        global_step=g,
                        loss=loss,
                        loss_enc=0.4 * loss,
                        loss_dec=0.6 * loss,
                        lr=lr,
                        patches_per_s=10.0 + (g % 3),
                    )
                    time.sleep(float(s["delay_s"]))
                    if stop_file.exists():
                        last.write_text(json.dumps({"stage": stage, "epoch": epoch, "global_step": g}))
                        emit("checkpoint", stage=stage, epoch=epoch + 1, path=str(last), kind="last")
                        emit("run_end", status="stopped", best_checkpoint=best_path)
                        stop_file.unlink()
                        return 0
                remaining = (n_epochs - epoch - 1) * (time.time() - t0)
                emit(
                    "epoch",
                    stage=stage,
                    epoch=epoch + 1,
                    loss=1.0 / (1.0 + 0.1 * g),
                    time_s=time.time() - t0,
                    eta_s=remaining,
                )
                dsc = 100.0 - 50.0 / (1.0 + 0.1 * g)
                if s["zero_validation"]:  # a run that learns nothing (as 'quick' on tiny phantoms)
                    emit("validation", stage=stage, epoch=epoch + 1, td=0.0, bd=0.0, dsc=0.0, precision=0.0, cases=1)
                elif s["mark_everything"]:  # the real trainer's rule decides the warning
                    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # launched from the run folder
                    from core.training.feedback import Marked, oversegmentation_warning

                    marked = Marked(0.8, 300.0)
                    emit(
                        "validation",
                        stage=stage,
                        epoch=epoch + 1,
                        td=100.0,
                        bd=100.0,
                        dsc=0.3,
                        precision=0.15,
                        marked_percent=80.0,
                        marked_to_label=300.0,
                        cases=1,
                    )
                    warning = oversegmentation_warning(stage, epoch + 1, marked, 0.3)
                    if warning:
                        emit("warning", message=warning, kind="oversegmentation")
                else:
                    emit(
                        "validation",
                        stage=stage,
                        epoch=epoch + 1,
                        td=min(100.0, 40.0 + g),
                        bd=min(100.0, 30.0 + g),
                        dsc=dsc,
                        precision=max(0.0, 90.0 - 0.1 * g),
                        cases=1,
                    )
                last.write_text(json.dumps({"stage": stage, "epoch": epoch + 1, "global_step": g}))
                emit("checkpoint", stage=stage, epoch=epoch + 1, path=str(last), kind="last")
                if dsc > best_dsc:
                    best_dsc = dsc
                    best_path = str(run / "checkpoints" / "best.pt")
                    Path(best_path).write_text(json.dumps({"global_step": g}))
                    emit("checkpoint", stage=stage, epoch=epoch + 1, path=best_path, kind="best")
            start = {"stage": stage + 1, "epoch": 0, "global_step": g}
            last.write_text(json.dumps(start))
        last.write_text(json.dumps({"finished": True, "epochs_done": int(s["epochs"][2]), "global_step": g}))
    except Exception as exc:
        emit("error", message=str(exc), traceback=traceback.format_exc())
        emit("run_end", status="failed", best_checkpoint=best_path)
        print(f"airway: error: {exc}", file=sys.stderr, flush=True)
        return 1
    emit("run_end", status="finished", best_checkpoint=best_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
