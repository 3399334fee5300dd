"""The training configuration: one TOML file describes a whole staged run.

Read with :mod:`tomllib`, written with ``tomli_w``. A preset (``paper``,
``quick``, ``demo`` in ``resources/configs``) gives every value; a user file
overrides any subset of it. Every value is checked here so that the GUI and the
command line show the same :class:`~core.errors.ConfigError` message, naming the
key, the bad value and the allowed range.

Stage numbers follow the paper (Zheng et al., TMI 2021, sec. III-D and IV-B):
stage 0 is the Dice-trained model whose false negatives drive hard skeleton
sampling, stage 1 trains with GUL (alpha 0.1, label threshold 0.8, 100 epochs,
lr 0.01 / 10 after 60 and 90), stage 2 fine-tunes (alpha 0.2, threshold 0.9,
30 epochs, lr / 10 after 15 and 25).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError

PRESETS = ("paper", "quick", "demo", "finetune")
LOSSES = ("dice", "gul", "rtl")
METRICS = ("td", "bd", "dsc", "precision", "score")


@dataclass
class RunSection:
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision, only ever used on CUDA
    deterministic: bool = False  # torch.use_deterministic_algorithms, for bit-exact resume
    num_workers: int = 2  # DataLoader worker processes (0 = in the main process)
    threads: int = 0  # torch.set_num_threads; 0 leaves torch's default
    channels_last: bool = False  # channels_last_3d memory format (faster conv backward on CPU; see benchmarks)
    best_metric: str = "score"  # td | bd | dsc | precision | score (mean of the four, ATM'22)
    tensorboard: bool = False  # only if tensorboard is importable


@dataclass
class DataSection:
    path: str = ""  # dataset folder or CSV (set by --data; kept so --resume needs no --data)
    val_fraction: float = 0.2
    split_seed: int = 0
    val_cases: list[str] = field(default_factory=list)  # explicit names override the fraction
    on_bad_case: str = "stop"  # stop | skip
    label_selector: str = "nonzero"
    cache_dir: str = ""  # "" = DATA/.airway_cache
    # label value whose voxels the losses leave out (pseudo-labels: lung voxels that may hold
    # bronchi the label-maker missed); 0 = none. Those voxels are not airway either.
    ignore_value: int = 0


@dataclass
class PreprocessingSection:
    window: list[float] = field(default_factory=lambda: [-1000.0, 600.0])  # paper; authors' code: [-1000, 400]
    scale: float = 255.0
    crop: str = "lung"  # lung | none
    margin: int = 5


@dataclass
class ModelSection:
    architecture: str = "wingsnet"
    arch_args: dict[str, Any] = field(default_factory=dict)
    # a checkpoint whose weights the first stage starts from (fine-tuning); "" = random initialisation.
    # Its architecture and arch_args must be the ones above (core.training.finetune copies them from its header).
    init: str = ""


@dataclass
class SamplingSection:
    patch_size: int = 128
    patches_per_case: int = 16
    batch_size: int = 2  # not given by the paper
    p_hard: float = 0.5  # paper: hard skeleton sampling probability p_s
    p_small: float = 0.25  # authors' code draws "small airway" patches too
    small_diameter_mm: float = 2.0
    max_large_voxels: int = 200  # authors' code: small-airway patches hold at most 200 large-airway voxels
    rotation_degrees: float = 15.0
    rotation_prob: float = 1.0


@dataclass
class ValidationSection:
    every: int = 1  # epochs between validations (the last epoch of a stage is always validated)
    window: int = 128
    step: int = 64
    max_cases: int = 0  # 0 = all validation cases


@dataclass
class StageSection:
    enabled: bool = True
    name: str = ""
    loss: str = "gul"
    alpha: float = 0.1
    threshold: float = 0.8
    epochs: int = 100
    lr: float = 0.01
    milestones: list[int] = field(default_factory=lambda: [60, 90])
    gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    init: str = "previous"  # previous | scratch (stage 0 always starts from scratch)
    enc_weight: float = 1.0  # weight of the encoder group's loss
    r: float = 0.7  # GUL / RTL root
    hard_sampling: bool = True  # use stage-0 false-negative centrelines (stages 1, 2)


@dataclass
class TrainConfig:
    run: RunSection = field(default_factory=RunSection)
    data: DataSection = field(default_factory=DataSection)
    preprocessing: PreprocessingSection = field(default_factory=PreprocessingSection)
    model: ModelSection = field(default_factory=ModelSection)
    sampling: SamplingSection = field(default_factory=SamplingSection)
    validation: ValidationSection = field(default_factory=ValidationSection)
    stage0: StageSection = field(
        default_factory=lambda: StageSection(
            name="dice", loss="dice", alpha=0.5, threshold=0.8, epochs=60, milestones=[40], hard_sampling=False
        )
    )
    stage1: StageSection = field(
        default_factory=lambda: StageSection(
            name="gul", loss="gul", alpha=0.1, threshold=0.8, epochs=100, milestones=[60, 90]
        )
    )
    stage2: StageSection = field(
        default_factory=lambda: StageSection(
            name="finetune", loss="gul", alpha=0.2, threshold=0.9, epochs=30, milestones=[15, 25]
        )
    )

    def stages(self) -> list[tuple[int, StageSection]]:
        """Enabled stages in order."""
        return [(i, s) for i, s in enumerate((self.stage0, self.stage1, self.stage2)) if s.enabled]

    def stage(self, index: int) -> StageSection:
        return (self.stage0, self.stage1, self.stage2)[index]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        cfg = cls()
        _merge_into(cfg, data, "")
        validate(cfg)
        return cfg


# -- reading and merging ---------------------------------------------------------


def _merge_into(obj: Any, data: dict[str, Any], prefix: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(
            f"'{prefix.rstrip('.') or 'config'}' must be a table, got {data!r}.",
            "Write it as a [section] with key = value lines.",
        )
    names = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(key, list(names), n=1)
            hint = f" Did you mean '{prefix}{close[0]}'?" if close else f" Known keys: {', '.join(sorted(names))}."
            raise ConfigError(f"Unknown configuration key '{prefix}{key}'.", hint.strip())
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge_into(current, value, f"{prefix}{key}.")
        elif isinstance(current, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"'{prefix}{key}' must be a table, got {value!r}.")
            merged = dict(current)
            merged.update(value)
            setattr(obj, key, merged)
        else:
            setattr(obj, key, _coerce(value, current, f"{prefix}{key}"))


def _coerce(value: Any, current: Any, key: str) -> Any:
    kind = type(current)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{key}' must be true or false, got {value!r}.")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{key}' must be a whole number, got {value!r}.")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{key}' must be a number, got {value!r}.")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{key}' must be text, got {value!r}.")
        return value
    if kind is list:
        if not isinstance(value, list):
            raise ConfigError(f"'{key}' must be a list like [1, 2], got {value!r}.")
        return list(value)
    return value


def _check(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(
            f"'{key}' = {value!r} is out of range: it must be {rule}.",
            "Fix it in the configuration file (or the training tab) and start again.",
        )


def validate(cfg: TrainConfig) -> None:
    """Raise :class:`ConfigError` on the first value that cannot work."""
    r, d, p, s, v = cfg.run, cfg.data, cfg.preprocessing, cfg.sampling, cfg.validation
    _check(
        r.device == "auto" or r.device == "cpu" or r.device.startswith("cuda"),
        "run.device",
        r.device,
        "'auto', 'cpu', 'cuda' or 'cuda:N'",
    )
    _check(r.num_workers >= 0, "run.num_workers", r.num_workers, ">= 0")
    _check(r.threads >= 0, "run.threads", r.threads, ">= 0")
    _check(r.best_metric in METRICS, "run.best_metric", r.best_metric, f"one of {', '.join(METRICS)}")
    _check(0.0 <= d.val_fraction < 1.0, "data.val_fraction", d.val_fraction, "in [0, 1)")
    _check(d.on_bad_case in ("stop", "skip"), "data.on_bad_case", d.on_bad_case, "'stop' or 'skip'")
    _check(all(isinstance(n, str) for n in d.val_cases), "data.val_cases", d.val_cases, "a list of case names")
    _check(
        len(p.window) == 2 and all(isinstance(x, (int, float)) for x in p.window) and p.window[0] < p.window[1],
        "preprocessing.window",
        p.window,
        "[low, high] HU with low < high",
    )
    p.window = [float(x) for x in p.window]
    _check(p.scale > 0, "preprocessing.scale", p.scale, "> 0")
    _check(p.crop in ("lung", "none"), "preprocessing.crop", p.crop, "'lung' or 'none'")
    _check(p.margin >= 0, "preprocessing.margin", p.margin, ">= 0")
    _check(bool(cfg.model.architecture), "model.architecture", cfg.model.architecture, "a model name (airway models)")
    _check(
        s.patch_size >= 8 and s.patch_size % 8 == 0,
        "sampling.patch_size",
        s.patch_size,
        "a multiple of 8 (WingsNet pools three times), at least 8",
    )
    _check(s.patches_per_case >= 1, "sampling.patches_per_case", s.patches_per_case, ">= 1")
    _check(s.batch_size >= 1, "sampling.batch_size", s.batch_size, ">= 1")
    _check(0.0 <= s.p_hard <= 1.0, "sampling.p_hard", s.p_hard, "in [0, 1]")
    _check(0.0 <= s.p_small <= 1.0, "sampling.p_small", s.p_small, "in [0, 1]")
    _check(s.p_hard + s.p_small <= 1.0 + 1e-9, "sampling.p_hard + sampling.p_small", s.p_hard + s.p_small, "<= 1")
    _check(s.small_diameter_mm > 0, "sampling.small_diameter_mm", s.small_diameter_mm, "> 0")
    _check(s.max_large_voxels >= 0, "sampling.max_large_voxels", s.max_large_voxels, ">= 0")
    _check(0.0 <= s.rotation_degrees <= 90.0, "sampling.rotation_degrees", s.rotation_degrees, "in [0, 90]")
    _check(0.0 <= s.rotation_prob <= 1.0, "sampling.rotation_prob", s.rotation_prob, "in [0, 1]")
    _check(v.every >= 1, "validation.every", v.every, ">= 1")
    _check(v.window >= 8 and v.window % 8 == 0, "validation.window", v.window, "a multiple of 8")
    _check(1 <= v.step <= v.window, "validation.step", v.step, f"in [1, validation.window = {v.window}]")
    _check(v.max_cases >= 0, "validation.max_cases", v.max_cases, ">= 0")
    if not cfg.stages():
        raise ConfigError("All training stages are disabled.", "Enable at least one of stage0, stage1, stage2.")
    for i, st in enumerate((cfg.stage0, cfg.stage1, cfg.stage2)):
        k = f"stage{i}."
        _check(st.loss in LOSSES, k + "loss", st.loss, f"one of {', '.join(LOSSES)}")
        _check(0.0 < st.alpha < 1.0, k + "alpha", st.alpha, "in (0, 1) (beta = 1 - alpha)")
        _check(0.0 < st.threshold <= 1.0, k + "threshold", st.threshold, "in (0, 1]")
        _check(st.epochs >= 1, k + "epochs", st.epochs, ">= 1")
        _check(st.lr > 0, k + "lr", st.lr, "> 0")
        _check(
            all(isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in st.milestones)
            and list(st.milestones) == sorted(st.milestones),
            k + "milestones",
            st.milestones,
            "increasing whole epoch numbers >= 1",
        )
        _check(0.0 < st.gamma <= 1.0, k + "gamma", st.gamma, "in (0, 1]")
        _check(0.0 <= st.momentum < 1.0, k + "momentum", st.momentum, "in [0, 1)")
        _check(st.weight_decay >= 0, k + "weight_decay", st.weight_decay, ">= 0")
        _check(st.init in ("previous", "scratch"), k + "init", st.init, "'previous' or 'scratch'")
        _check(st.enc_weight >= 0, k + "enc_weight", st.enc_weight, ">= 0")
        _check(0.0 < st.r <= 1.0, k + "r", st.r, "in (0, 1]")
        if not st.name:
            st.name = f"stage{i}"


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"Configuration file {path} does not exist.", "Give the path of a .toml file, or use --preset."
        )
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid TOML: {exc}.", "Fix the syntax (key = value lines, [sections])."
        ) from exc


def preset_dict(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ConfigError(f"Unknown preset '{name}'.", f"Use one of {', '.join(PRESETS)}.")
    from core.resources import resource_path

    return read_toml(resource_path("configs", f"{name}.toml"))


def load_config(
    path: str | Path | None = None,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    base: dict[str, Any] | None = None,
) -> TrainConfig:
    """Defaults <- preset <- base <- file <- overrides, validated.

    With neither a preset nor a file the result is the ``paper`` preset. ``base``
    holds values that are facts rather than choices (fine-tuning: the start
    checkpoint's architecture and preprocessing), so a user's file still wins.
    """
    cfg = TrainConfig()
    if preset is None and path is None:
        preset = "paper"
    if preset is not None:
        _merge_into(cfg, preset_dict(preset), "")
    if base:
        _merge_into(cfg, copy.deepcopy(base), "")
    if path is not None:
        _merge_into(cfg, read_toml(path), "")
    if overrides:
        _merge_into(cfg, copy.deepcopy(overrides), "")
    validate(cfg)
    return cfg


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write atomically (temp file + replace)."""
    import tomli_w

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = tomli_w.dumps(_tomlable(cfg.to_dict()))
    from core.outputs import atomic_write_text  # pid-tagged temp file, umask modes, errors name the file

    atomic_write_text(path, text)


def _tomlable(value: Any) -> Any:
    # TOML has no null: drop None values rather than inventing a sentinel
    if isinstance(value, dict):
        return {k: _tomlable(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_tomlable(v) for v in value]
    return value
