"""The staged trainer (method.md sec. 5-6): stage 0 Dice, stage 1 GUL, stage 2 fine-tune.

Run folder (docs/CONTRACTS.md; the file names live in ``core.training.run_files``,
shared with the app's training tab)::

    RUN/config.toml          the whole run's configuration (resume reads it back)
    RUN/events.jsonl         the event stream (docs/events.md), also on stdout
    RUN/checkpoints/last.pt  weights + resume state (optimizer, scheduler, RNG, position)
    RUN/checkpoints/best.pt  best validation score (``run.best_metric``) over the whole run
    RUN/checkpoints/stage{0,1,2}.pt   weights at the end of each stage
    RUN/hard/<case>.npy      stage-0 false-negative centreline voxels (hard skeleton sampling)
    RUN/stop.request         created by the user/GUI: finish the step, save last.pt, stop

Epochs are numbered from 1 in every event, log line and header (docs/events.md);
``TrainState.epoch`` counts the epochs finished in the stage.
A finished run can be trained further (``more_epochs``): its last stage gets
more epochs and continues with the optimizer and learning-rate schedule where it ended.

Resume continues exactly where the run stopped: each patch is a pure function
of (seed, stage, epoch, item), the DataLoader has its own generator (so it never
draws from torch's global one), and the global torch/numpy/python RNG states,
optimizer, scheduler and AMP scaler are saved with the position (stage, epoch,
step). With deterministic algorithms on the CPU a stopped-and-resumed run ends
with the same weights, bit for bit, as an uninterrupted one (tested).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from core.errors import AirwayError, CheckpointError, ConfigError, InputError
from core.training import ddp
from core.training.cache import CachedCase, CacheSettings, default_cache_dir, prepare_cases
from core.training.config import StageSection, TrainConfig, load_config, save_config
from core.training.dataset import discover_cases, split_cases
from core.training.events import EventLog
from core.training.feedback import EtaEstimator, Marked, hard_sampling_message, oversegmentation_warning
from core.training.run_files import BEST, LAST, RunFiles
from core.training.sampling import PatchDataset, PatchSpec

if TYPE_CHECKING:
    import torch
    from torch.utils.data import DataLoader

    from core.preprocess import Preprocessing
    from core.segmentation import Predictor
    from core.tree import AirwayTree

StepHook = Callable[["Trainer"], None]
#: ``f(p, g, w=None) -> scalar`` (core.losses)
LossFn = Callable[..., "torch.Tensor"]
Batch = Mapping[str, "torch.Tensor"]

#: the resume state kept in last.pt besides the weights
ResumeState = dict[str, Any]


@dataclass
class TrainState:
    """Where the run is; saved in ``last.pt`` as plain data."""

    stage: int = -1  # stage in progress (-1: not started)
    epoch: int = 0  # epochs finished in that stage
    step: int = 0  # steps finished in the current epoch
    global_step: int = 0
    best_value: float = -math.inf
    best_where: list[int] = field(default_factory=list)  # [stage, epoch from 1]
    metrics: dict[str, float] = field(default_factory=dict)  # last validation
    train_cases: list[str] = field(default_factory=list)
    val_cases: list[str] = field(default_factory=list)
    hard_ready: bool = False
    status: str = "running"


def _worker_init(_: int) -> None:
    import torch

    torch.set_num_threads(1)  # workers only slice and resample; leave the cores to the model


def stage_loss(stage: StageSection) -> LossFn:
    """``f(p, g, w=None) -> scalar`` for a stage: Dice, GUL (distance weights) or RTL (method.md sec. 3)."""
    from core import losses

    # ``w`` reaches Dice and RTL only as the ignore mask's 0/1 weights: a voxel of weight 0 drops
    # out of every sum, and RTL with 0/1 weights is GUL with those weights.
    if stage.loss == "dice":
        return lambda p, g, w=None: losses.dice_loss(p, g, w)
    if stage.loss == "rtl":
        return lambda p, g, w=None: (
            losses.root_tversky_loss(p, g, alpha=stage.alpha, r=stage.r)
            if w is None
            else losses.general_union_loss(p, g, w, alpha=stage.alpha, r=stage.r)
        )
    return lambda p, g, w=None: losses.general_union_loss(p, g, w, alpha=stage.alpha, r=stage.r)


def group_losses(
    loss_fn: LossFn,
    logits: Iterable[torch.Tensor],
    g: torch.Tensor,
    w: torch.Tensor | None,
    enc_weight: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, encoder-group loss, decoder-group loss) through core.losses.group_loss.

    Logits are cast to float32 first so that, under autocast, the sigmoid and
    the sums run in full precision. The last output is the prediction (decoder
    group); "encoder" reports the mean of the earlier outputs (WingsNet has one).
    """
    import torch

    from core.losses import group_loss

    result = group_loss(loss_fn, [out.float() for out in logits], g, w, enc_weight)
    parts = list(result.parts.values())
    dec = parts[-1]
    enc = torch.stack(parts[:-1]).mean() if len(parts) > 1 else torch.zeros((), device=dec.device)
    return result.total, enc, dec


class Trainer:
    """One run: ``Trainer(cfg, run_dir).run()`` returns ``"finished"`` or ``"stopped"``.

    ``resume=True`` reads ``RUN/config.toml`` and ``RUN/checkpoints/last.pt``.
    ``more_epochs`` (with ``resume``): add that many epochs to the run's last
    stage, which is how a finished run is trained further.
    ``on_step`` is called after every optimisation step (tests use it to ask
    for a stop at a given step, as the GUI does by writing ``stop.request``).
    """

    # set up by run(); declared here so that every method sees them typed
    model: torch.nn.Module
    net: torch.nn.Module
    optimizer: torch.optim.SGD
    scheduler: torch.optim.lr_scheduler.MultiStepLR
    scaler: torch.amp.GradScaler | None
    device: str
    amp: bool
    cases: dict[str, CachedCase]

    def __init__(
        self,
        cfg: TrainConfig | None,
        run_dir: str | Path,
        *,
        data: str | Path | None = None,
        resume: bool = False,
        more_epochs: int | None = None,
        device: str | None = None,
        stdout: IO[str] | None = sys.stdout,
        on_step: StepHook | None = None,
        after_training: StepHook | None = None,
    ):
        self.paths = RunFiles(Path(run_dir))
        self.resume = resume
        if more_epochs is not None and (not resume or more_epochs < 1):
            raise ConfigError(
                f"--more-epochs {more_epochs}: more epochs are added to an earlier run.",
                "Give a number of 1 or more together with --resume and the run's --out folder.",
            )
        self.more_epochs = more_epochs
        if resume:
            if not self.paths.config.is_file():
                raise ConfigError(
                    f"Cannot resume: {self.paths.config} does not exist.",
                    "Give the folder of an earlier run with --out, or start a new run without --resume.",
                )
            cfg = load_config(self.paths.config)
        elif cfg is None:
            raise ConfigError("No configuration given.", "Use --config FILE or --preset quick|paper|demo.")
        if data is not None:
            cfg.data.path = str(Path(data).resolve())
        if device is not None:
            cfg.run.device = device
        if not cfg.data.path:
            raise ConfigError(
                "No dataset given.", "Pass --data FOLDER (imagesTr/ + labelsTr/) or a CSV of image,label pairs."
            )
        self.cfg = cfg
        self.stdout = stdout
        self.on_step = on_step
        # called once the run has finished, before its run_end event (fine-tuning compares the models
        # here), so a watcher that sees the run end also sees what it wrote
        self.after_training = after_training
        self.state = TrainState()
        self.dist = ddp.env_dist_info()
        self.events = EventLog(self.paths.root, stdout=stdout, enabled=self.dist.is_main)
        self._sigterm = threading.Event()
        self._emit_errors = False
        self._tb: Any = None  # torch.utils.tensorboard.SummaryWriter, optional dependency
        self._trees: dict[str, AirwayTree] = {}
        self._warned_hard = False
        self._eta = EtaEstimator()
        self._epoch_mark: float | None = None  # when the last epoch event was emitted (perf_counter)
        self.scaler = None
        self.last_losses: dict[str, float] = {}

    # -- setup -------------------------------------------------------------------
    def _setup_torch(self) -> None:
        import torch

        from core.segmentation import resolve_device

        if self.cfg.run.threads:
            torch.set_num_threads(self.cfg.run.threads)
        if self.cfg.run.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        device = resolve_device(self.cfg.run.device)
        self.dist = ddp.init_distributed(device)
        self.events.enabled = self.dist.is_main
        self.device = ddp.rank_device(device, self.dist)
        self.amp = self.device.startswith("cuda") and self.cfg.run.amp

    def _setup_data(self) -> None:
        cfg = self.cfg
        cases = discover_cases(cfg.data.path)
        cache_root = Path(cfg.data.cache_dir) if cfg.data.cache_dir else default_cache_dir(cfg.data.path)
        alphas = tuple(sorted({s.alpha for _, s in cfg.stages() if s.loss == "gul"}))
        settings = CacheSettings(
            self._preprocessing().to_dict(),
            cfg.data.label_selector,
            alphas,
            cfg.sampling.small_diameter_mm,
            ignore_value=cfg.data.ignore_value,
        )
        if self.dist.is_main:
            report = prepare_cases(cases, cache_root, settings, on_bad_case=cfg.data.on_bad_case)
            for bad in report.bad:
                self.events.emit(
                    "warning",
                    message=f"Case {bad.name} is left out of training: {bad.reason}. "
                    "The run goes on without it; fix the file and start a new run to include it.",
                )
        ddp.barrier(self.dist)
        if not self.dist.is_main:
            report = prepare_cases(cases, cache_root, settings, on_bad_case="skip")
        self.cases = {c.name: c for c in report.cases}
        if self.resume and self.state.train_cases:
            missing = [n for n in self.state.train_cases + self.state.val_cases if n not in self.cases]
            if missing:
                raise InputError(
                    f"Cases of the interrupted run are no longer usable: {', '.join(missing)}.",
                    "Restore them in the dataset, or start a new run.",
                )
            return
        train, val = split_cases(
            list(self.cases), cfg.data.val_fraction, cfg.data.split_seed, cfg.data.val_cases or None
        )
        self.state.train_cases, self.state.val_cases = train, val

    def _preprocessing(self, crop: str | None = None) -> Preprocessing:
        from core.preprocess import Preprocessing

        p = self.cfg.preprocessing
        lo, hi = p.window
        return Preprocessing(
            window=(float(lo), float(hi)), scale=p.scale, crop=p.crop if crop is None else crop, margin=p.margin
        )

    def _build_model(self, seed: int) -> torch.nn.Module:
        import torch

        from core.models.registry import build_model

        torch.manual_seed(seed)
        model: torch.nn.Module = build_model(self.cfg.model.architecture, **self.cfg.model.arch_args)
        if self.cfg.run.channels_last:
            model = model.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]  # torch's stub lacks it
        return model.to(self.device)

    def _load_init(self, path: str) -> None:
        """Start from a trained model's weights (``model.init``: fine-tuning)."""
        from core.models.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path, expect_architecture=self.cfg.model.architecture)
        try:
            self.model.load_state_dict(ckpt.state_dict)
        except RuntimeError as exc:  # shapes differ: other arch_args than the header's
            raise CheckpointError(
                f"The start checkpoint's weights do not fit a {self.cfg.model.architecture} with "
                f"{self.cfg.model.arch_args} ({str(exc).splitlines()[0]}).",
                "Leave [model] out of the --config file: fine-tuning takes the model from the checkpoint.",
                path=path,
            ) from None
        self.events.emit("info", message=f"Starting from the weights of {path}.")

    def _wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.dist.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [int(self.device.split(":")[1])] if self.device.startswith("cuda:") else None
        return DistributedDataParallel(model, device_ids=ids)

    # -- checkpoints ----------------------------------------------------------------
    def _header(self, stage: int, epoch: int) -> dict[str, Any]:
        v = self.cfg.validation
        # inference should use windows like those the model was validated on (InstanceNorm statistics)
        return {
            "preprocessing": self._preprocessing().to_dict(),
            "training": self.cfg.to_dict(),
            "inference": {"window": int(v.window), "step": int(v.step)},
            "stage": stage,
            "epoch": epoch,
            "metrics": dict(self.state.metrics),
            "train_cases": self.state.train_cases,
            "val_cases": self.state.val_cases,
            "card": self._card(),
        }

    def _card(self) -> dict[str, Any]:
        """What this model is trained on and expects, for every consumer of the checkpoint (core.models.card)."""
        from core.models.card import card_from_dataset

        cases = getattr(self, "cases", {})
        train = [cases[n] for n in self.state.train_cases + self.state.val_cases if n in cases]
        val = [cases[n] for n in self.state.val_cases if n in cases]
        metrics = {k: v for k, v in dict(self.state.metrics).items() if k in ("td", "bd", "dsc", "precision")}
        return card_from_dataset(
            self.cfg.data.path,
            [c.spacing_zyx for c in train],
            len(self.state.train_cases),
            len(self.state.val_cases),
            metrics or None,
            shapes_zyx=[c.full_shape for c in train],
            val_shapes_zyx=[c.full_shape for c in val],
            val_spacings_zyx=[c.spacing_zyx for c in val],
        )

    def _save(self, kind: str, stage: int, epoch: int, with_state: bool = False) -> Path:
        """Write a checkpoint; ``epoch`` counts from 1 (0: before the stage's first epoch)."""
        from core.models.checkpoint import capture_rng_state, save_checkpoint

        extra: ResumeState | None = None
        if with_state:
            train_state = asdict(self.state)
            train_state["best_value"] = float(self.state.best_value) if math.isfinite(self.state.best_value) else None
            extra = {
                "train_state": train_state,
                "rng": capture_rng_state(),
                "optimizer": self.optimizer.state_dict() if hasattr(self, "optimizer") else None,
                "scheduler": self.scheduler.state_dict() if hasattr(self, "scheduler") else None,
                "scaler": None if self.scaler is None else self.scaler.state_dict(),
            }
        path = save_checkpoint(self.paths.checkpoint(kind), self.model, self._header(stage, epoch), extra)
        self.events.emit(
            "checkpoint", stage=stage, epoch=epoch, path=str(path), kind="stage" if kind.startswith("stage") else kind
        )
        return path

    def _load_resume(self) -> ResumeState:
        from core.models.checkpoint import Checkpoint, load_checkpoint

        path = self.paths.checkpoint(LAST)
        if not path.is_file():
            raise CheckpointError(
                f"Cannot resume: {path} does not exist (the run never finished an epoch or a step).",
                "Start the run again without --resume.",
            )
        ckpt: Checkpoint = load_checkpoint(path)
        if not ckpt.extra_state or "train_state" not in ckpt.extra_state:
            raise CheckpointError("last.pt holds no resume state.", "Start the run again without --resume.", path=path)
        st = dict(ckpt.extra_state["train_state"])
        if st.get("best_value") is None:
            st["best_value"] = -math.inf
        self.state = TrainState(**st)
        if self.state.status == "finished" and not self.more_epochs:
            raise ConfigError(
                f"The run in {self.paths.root} has already finished; there is nothing to resume.",
                f"To train it further, add --more-epochs N (airway train --out {self.paths.root} --resume "
                "--more-epochs 10), or use 'Train further' in the Training tab; or start a new run in another "
                "--out folder (best model: checkpoints/best.pt).",
            )
        if self.more_epochs:
            self._extend_last_stage(self.more_epochs)
        self.state.status = "running"
        return {"ckpt": ckpt, "extra": ckpt.extra_state}

    def _extend_last_stage(self, epochs: int) -> None:
        """Train further: the last stage gets ``epochs`` more, written to the run's config (resume reads it)."""
        last = self.cfg.stages()[-1][0]
        if self.state.stage > last:
            raise ConfigError(f"The run's last stage ({self.state.stage}) is no longer enabled in its config.")
        # a run stopped in an earlier stage runs the rest as planned and the last stage longer
        self.cfg.stage(last).epochs += epochs
        if self.dist.is_main:
            save_config(self.cfg, self.paths.config)

    # -- the run -------------------------------------------------------------------
    def run(self) -> str:
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, lambda *_: self._sigterm.set())
        try:
            return self._run()
        except AirwayError as exc:
            if self._emit_errors:
                self.events.emit("error", message=str(exc), traceback="")
                self.events.emit("run_end", status="failed", best_checkpoint=self._best_path())
            raise
        except BaseException as exc:
            if self._emit_errors:
                self.events.emit("error", message=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
                self.events.emit("run_end", status="failed", best_checkpoint=self._best_path())
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if self._tb is not None:
                self._tb.close()
            self.events.close()
            ddp.cleanup(self.dist)

    def _best_path(self) -> str | None:
        p = self.paths.checkpoint(BEST)
        return str(p) if p.is_file() else None

    def _run(self) -> str:
        from core.models.checkpoint import restore_rng_state, software_versions

        cfg = self.cfg
        # Refusals that concern another run's folder come first and write no event into it
        # (a GUI watching that run must not see it fail).
        if not self.resume and self.paths.checkpoint(LAST).exists():
            raise ConfigError(
                f"{self.paths.root} already holds a run.", "Resume it with --resume, or choose another --out folder."
            )
        resume = self._load_resume() if self.resume else None
        self._emit_errors = True
        if self.dist.is_main:
            self.paths.root.mkdir(parents=True, exist_ok=True)
            self.paths.stop.unlink(missing_ok=True)  # a stale request must not stop the new run at once
            if not self.resume:
                save_config(cfg, self.paths.config)
        self._setup_torch()
        self._setup_data()
        self.events.emit(
            "run_start",
            config=cfg.to_dict(),
            versions=software_versions(),
            device=self.device,
            world_size=self.dist.world_size,
            resumed=bool(resume),
            more_epochs=self.more_epochs or 0,
            epoch_base=1,
            train_cases=self.state.train_cases,
            val_cases=self.state.val_cases,
        )
        self._open_tensorboard()

        first = cfg.stages()[0][0]
        self.model = self._build_model(cfg.run.seed)
        if resume is not None:
            self.model.load_state_dict(resume["ckpt"].state_dict)
        elif cfg.model.init:
            self._load_init(cfg.model.init)
        self.net = self._wrap(self.model)
        for index, stage in cfg.stages():
            if index < self.state.stage:
                continue
            in_progress = resume is not None and index == self.state.stage
            if not in_progress:
                self.state.stage, self.state.epoch, self.state.step = index, 0, 0
                if index != first and stage.init == "scratch":
                    self.model = self._build_model(cfg.run.seed + 1000 * index)
                    self.net = self._wrap(self.model)
            self._make_optimizer(stage)
            if in_progress and resume is not None:
                extra = resume["extra"]
                if extra.get("optimizer") is not None:
                    self.optimizer.load_state_dict(extra["optimizer"])
                    self.scheduler.load_state_dict(extra["scheduler"])
                if extra.get("scaler") is not None and self.scaler is not None:
                    self.scaler.load_state_dict(extra["scaler"])
                restore_rng_state(extra["rng"])
            resume = None
            status = self._run_stage(index, stage)
            if status == "stopped":
                self.events.emit("run_end", status="stopped", best_checkpoint=self._best_path())
                return "stopped"
        self.state.status = "finished"
        if self.dist.is_main:
            self._save(LAST, self.state.stage, self.state.epoch, with_state=True)
            if self.after_training is not None:
                self.after_training(self)
        self.events.emit("run_end", status="finished", best_checkpoint=self._best_path())
        return "finished"

    def _make_optimizer(self, stage: StageSection) -> None:
        import torch

        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=stage.lr, momentum=stage.momentum, weight_decay=stage.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(stage.milestones), gamma=stage.gamma
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None

    def _stop_requested(self) -> bool:
        flag = self._sigterm.is_set() or (self.dist.is_main and self.paths.stop.exists())
        return ddp.any_rank(flag, self.dist)

    def _patch_spec(self, index: int, stage: StageSection) -> PatchSpec:
        s = self.cfg.sampling
        return PatchSpec(
            size=s.patch_size,
            threshold=stage.threshold,
            alpha=stage.alpha if stage.loss == "gul" else None,
            p_hard=s.p_hard if (index > 0 and stage.hard_sampling) else 0.0,
            p_small=s.p_small,
            max_large_voxels=s.max_large_voxels,
            rotation_degrees=s.rotation_degrees,
            rotation_prob=s.rotation_prob,
        )

    def _hard_maps(self, index: int, stage: StageSection) -> dict[str, np.ndarray]:
        if index == 0 or not stage.hard_sampling or self.cfg.sampling.p_hard <= 0:
            return {}
        out = {}
        for name in self.state.train_cases:
            p = self.paths.hard / f"{name}.npy"
            if p.is_file():
                out[name] = np.load(p, mmap_mode="r")
        if not out and self.dist.is_main and not self._warned_hard:
            self._warned_hard = True
            self.events.emit(
                "warning",
                message=f"Stage {index} asks for hard skeleton sampling, but there are no stage-0 misses to draw "
                "from (stage 0 is disabled in this run's config), so its patches are drawn at random. "
                "To use hard sampling, enable stage 0 ([stage0] enabled = true) in a new run; "
                f"otherwise set stage{index}.hard_sampling = false to silence this.",
            )
        return out

    def _loader(
        self, index: int, stage: StageSection, epoch: int, spec: PatchSpec, hard: dict[str, np.ndarray]
    ) -> DataLoader[dict[str, torch.Tensor]]:
        import torch
        from torch.utils.data import DataLoader

        s = self.cfg.sampling
        train = [self.cases[n] for n in self.state.train_cases]
        n_items = len(train) * s.patches_per_case
        mine = ddp.shard(np.arange(n_items), self.dist, s.batch_size)
        mine = mine[self.state.step * s.batch_size :]
        ds = PatchDataset(train, spec, self.cfg.run.seed, index, epoch, s.patches_per_case, hard, indices=mine)
        gen = torch.Generator()
        gen.manual_seed(self.cfg.run.seed * 7919 + index * 1009 + epoch)
        workers = self.cfg.run.num_workers
        return DataLoader(
            ds,  # type: ignore[arg-type]  # a map-style dataset by protocol (__len__/__getitem__), not a subclass
            batch_size=s.batch_size,
            shuffle=False,
            num_workers=workers,
            generator=gen,
            worker_init_fn=_worker_init if workers else None,
            drop_last=False,
            pin_memory=self.device.startswith("cuda"),
            persistent_workers=False,
        )

    def steps_per_epoch(self) -> int:
        s = self.cfg.sampling
        n = len(self.state.train_cases) * s.patches_per_case
        return -(-n // (s.batch_size * self.dist.world_size))

    def _epochs_left(self, index: int) -> int:
        """Epochs of the run still to do after the current one (state.epoch = epochs finished in the stage)."""
        remaining = self.cfg.stage(index).epochs - self.state.epoch
        for j, st in self.cfg.stages():
            if j > index:
                remaining += st.epochs
        return remaining

    def _epoch_eta(self, steps_time: float, steps_done: int) -> float:
        """Smoothed ETA after an epoch (core.training.feedback.EtaEstimator).

        One sample per epoch: the time since the previous epoch event (this
        epoch's steps plus the previous one's validation and checkpoints), or,
        for the first epoch of this process, its steps' time scaled up to a whole
        epoch when it started mid-epoch (a resume).
        """
        now = time.perf_counter()
        if self._epoch_mark is None:
            sample = steps_time * self.steps_per_epoch() / max(steps_done, 1)
        else:
            sample = now - self._epoch_mark
        self._epoch_mark = now
        self._eta.add(sample)
        return self._eta.eta(self._epochs_left(self.state.stage))

    def _run_stage(self, index: int, stage: StageSection) -> str:
        self.events.emit(
            "stage",
            stage=index,
            name=stage.name,
            loss=stage.loss,
            epochs=stage.epochs,
            alpha=stage.alpha,
            threshold=stage.threshold,
        )
        loss_fn = stage_loss(stage)
        spec = self._patch_spec(index, stage)
        hard = self._hard_maps(index, stage) if spec.p_hard > 0 else {}
        while self.state.epoch < stage.epochs:
            epoch = self.state.epoch  # 0-based index for seeding; events say epoch + 1
            shown = epoch + 1
            t0 = time.perf_counter()
            total, count = 0.0, 0
            self.net.train()
            for batch in self._loader(index, stage, epoch, spec, hard):
                t_step = time.perf_counter()
                loss, enc, dec = self._train_step(batch, loss_fn, stage)
                self.state.step += 1
                self.state.global_step += 1
                total += loss
                count += 1
                n = batch["image"].shape[0] * self.dist.world_size
                self.events.emit(
                    "step",
                    stage=index,
                    epoch=shown,
                    step=self.state.step,
                    global_step=self.state.global_step,
                    loss=loss,
                    loss_enc=enc,
                    loss_dec=dec,
                    lr=self.optimizer.param_groups[0]["lr"],
                    patches_per_s=n / max(time.perf_counter() - t_step, 1e-9),
                )
                self._tb_scalar("loss/train", loss)
                if self.on_step is not None:
                    self.on_step(self)
                if self._stop_requested():
                    return self._stop(index, shown)
            self.scheduler.step()
            self.state.epoch += 1
            self.state.step = 0
            elapsed = time.perf_counter() - t0
            mean_loss = ddp.mean_across(total / max(count, 1), self.dist)
            self.events.emit(
                "epoch",
                stage=index,
                epoch=shown,
                loss=mean_loss,
                time_s=elapsed,
                eta_s=self._epoch_eta(elapsed, count),
            )
            self._tb_scalar("loss/epoch", mean_loss)
            last = self.state.epoch == stage.epochs
            if self.state.val_cases and (last or self.state.epoch % self.cfg.validation.every == 0):
                self._validate(index, shown)
            if self.dist.is_main:
                self._save(LAST, index, shown, with_state=True)
            ddp.barrier(self.dist)
            if self._stop_requested():
                return self._stop(index, shown, save=False)
        if self.dist.is_main:
            self._save(f"stage{index}", index, stage.epochs)
            if (
                index == 0
                and any(j > 0 and s.hard_sampling for j, s in self.cfg.stages())
                and self.cfg.sampling.p_hard > 0
            ):
                self._compute_hard()
        ddp.barrier(self.dist)
        return "finished"

    def _stop(self, index: int, epoch: int, save: bool = True) -> str:
        if self.dist.is_main:
            if save:
                self._save(LAST, index, epoch, with_state=True)
            self.paths.stop.unlink(missing_ok=True)
        self.state.status = "stopped"
        return "stopped"

    def _train_step(self, batch: Batch, loss_fn: LossFn, stage: StageSection) -> tuple[float, float, float]:
        import torch

        x = batch["image"].to(self.device, non_blocking=True)
        if self.cfg.run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        g = batch["label"].to(self.device, non_blocking=True)
        w = batch["weight"].to(self.device, non_blocking=True) if "weight" in batch else None
        if "ignore" in batch:
            keep = 1.0 - batch["ignore"].to(self.device, non_blocking=True)
            w = keep if w is None else w * keep
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:  # AMP on CUDA
            with torch.autocast("cuda", dtype=torch.float16):
                logits = self.net(x)
            loss, enc, dec = group_losses(loss_fn, logits, g, w, stage.enc_weight)
            self.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]  # torch leaves backward unannotated
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            logits = self.net(x)
            loss, enc, dec = group_losses(loss_fn, logits, g, w, stage.enc_weight)
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves backward unannotated
            self.optimizer.step()
        return float(loss.detach()), float(enc.detach()), float(dec.detach())

    # -- validation and hard samples -------------------------------------------------------
    def _predictor(self) -> Predictor:
        from core.segmentation import Predictor

        # cached cases are already cropped and windowed; predict on them as they are
        v = self.cfg.validation
        return Predictor.from_model(
            self.model,
            self._preprocessing(crop="none"),
            device=self.device,
            window=v.window,
            step=v.step,
            backend="torch",
        )

    def _validate(self, index: int, epoch: int) -> None:
        """Score the validation cases; ``epoch`` counts from 1."""
        if self.dist.is_main:
            from core.metrics import evaluate
            from core.tree import parse_tree

            names = self.state.val_cases[: self.cfg.validation.max_cases or None]
            predictor = self._predictor()
            rows = []
            marked: list[Marked] = []
            for name in names:
                case = self.cases[name]
                pred = predictor.predict(case.ct_volume())
                ref = np.asarray(case.label).astype(bool)
                if name not in self._trees:  # the reference tree is parsed once per run
                    self._trees[name] = parse_tree(ref, case.spacing_zyx)
                mask = pred.mask.array
                m = evaluate(mask, ref, case.spacing_zyx, tree=self._trees[name])
                rows.append(_metric_row(m))
                marked.append(Marked.of(int(np.count_nonzero(mask)), int(np.count_nonzero(ref)), int(mask.size)))
            self.net.train()
            keys = ("td", "bd", "dsc", "precision")
            means = {k: float(np.mean([r[k] for r in rows])) for k in keys}
            means["score"] = float(np.mean([means[k] for k in keys]))
            self.state.metrics = means
            mean_marked = Marked(
                float(np.mean([m.fraction for m in marked])), float(np.mean([m.to_label for m in marked]))
            )
            self.events.emit(
                "validation",
                stage=index,
                epoch=epoch,
                cases=len(rows),
                score=means["score"],
                marked_percent=100.0 * mean_marked.fraction,
                marked_to_label=mean_marked.to_label,
                **{k: means[k] for k in keys},
            )
            worst = max(marked, key=lambda m: (m.fraction, m.to_label))
            warning = oversegmentation_warning(index, epoch, worst, means["dsc"])
            if warning is not None:
                self.events.emit("warning", message=warning, kind="oversegmentation")
            for k, v in means.items():
                self._tb_scalar(f"val/{k}", v)
            value = means[self.cfg.run.best_metric]
            if value > self.state.best_value:
                self.state.best_value = value
                self.state.best_where = [index, epoch]
                self._save(BEST, index, epoch)
        ddp.barrier(self.dist)

    def _compute_hard(self) -> None:
        """Stage-0 model's false-negative centreline voxels on every training case (paper: hard skeleton sampling)."""
        predictor = self._predictor()
        self.paths.hard.mkdir(parents=True, exist_ok=True)
        missed_total, skel_total = 0, 0
        for name in self.state.train_cases:
            case = self.cases[name]
            pred = predictor.predict(case.ct_volume())
            skel = np.asarray(case.skeleton).astype(bool)
            fn = skel & ~pred.mask.array
            tmp = self.paths.hard / f".{name}.tmp.npy"
            np.save(tmp, fn.astype(np.uint8))
            os.replace(tmp, self.paths.hard / f"{name}.npy")
            missed_total += int(fn.sum())
            skel_total += int(skel.sum())
        self.net.train()
        self.state.hard_ready = True
        later = [j for j, s in self.cfg.stages() if j > 0 and s.hard_sampling]
        said = hard_sampling_message(missed_total, skel_total, later[0] if later else 1)
        if said is not None:
            self.events.emit(said[0], message=said[1])

    # -- tensorboard ---------------------------------------------------------------------------
    def _open_tensorboard(self) -> None:
        if not (self.cfg.run.tensorboard and self.dist.is_main):
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.events.emit(
                "warning",
                message="TensorBoard logging was asked for but tensorboard is not installed; "
                "continuing without it (pip install tensorboard).",
            )
            return
        self._tb = SummaryWriter(str(self.paths.tensorboard))

    def _tb_scalar(self, tag: str, value: float) -> None:
        if self._tb is not None:
            self._tb.add_scalar(tag, value, self.state.global_step)


def _metric_row(m: Any) -> dict[str, float]:
    """TD, BD, DSC, precision (percent) from a core.metrics.AirwayMetrics."""
    return {k: float(getattr(m, k)) for k in ("td", "bd", "dsc", "precision")}
