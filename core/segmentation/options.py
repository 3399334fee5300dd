"""How a :class:`core.segmentation.Predictor` runs: one options dataclass, the inference modes
(``resources/presets/inference.json``), what a checkpoint recommends, the device and the batch size."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ConfigError
from core.segmentation.postprocess import PostProcessing
from core.segmentation.selection import RegionProvider

#: ``exact``: the paper's procedure; ``fast``: the measured best (resources/presets/inference.json)
INFERENCE_MODES = ("fast", "exact")


@dataclass(frozen=True)
class PredictOptions:
    """Everything that says how a checkpoint segments a CT (the Predictor's whole configuration).

    device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    window, step: sliding-window size and stride in voxels; None = the checkpoint's own, else the paper's
        128 / 64 (:func:`recommended_window`).
    batch_size: windows per forward pass (None: 1 on the CPU, by free memory on a GPU).
    gaussian: Gaussian window weighting instead of the paper's plain mean (None: the mode's).
    backend: see :data:`core.segmentation.backends.BACKENDS`; CPU only. None = "auto" (the fastest installed)
        for a checkpoint, "torch" for a live module (training validation: its weights change every epoch,
        an export each time would cost more than it saves).
    mode: "fast" or "exact" (:func:`mode_settings`): supplies step, weighting, region, CPU backend order and
        GPU precision wherever those are not given; None: these options alone (the paper's defaults).
    region: which windows run: None / "none" every window (the paper); "lung", "coarse" or any
        :data:`core.segmentation.selection.RegionProvider`: only those touching the region.
    postprocess: threshold / largest component / connectivity / hole filling.
    spacing: target voxel spacing, see :func:`recommended_spacing` (None: the checkpoint's recommendation).
    threads: CPU threads for torch / OpenVINO / ONNX Runtime (None: theirs).
    autocast: PyTorch on CUDA: None/True = bf16 (else fp16) autocast, False = fp32 without TF32.
    channels_last: channels-last 3D memory format for the PyTorch backend.
    device_accumulate: keep the crop and accumulator on the GPU (None: when they fit).
    cache: folder for exported models (None: :func:`core.segmentation.backends.cache_dir`).
    """

    device: str = "auto"
    window: int | None = None
    step: int | None = None
    batch_size: int | None = None
    gaussian: bool | None = None
    backend: str | None = None
    mode: str | None = None
    region: str | RegionProvider | None = None
    postprocess: PostProcessing = field(default_factory=PostProcessing)
    spacing: str | Sequence[float] | None = None
    threads: int | None = None
    autocast: bool | None = None
    channels_last: bool = False
    device_accumulate: bool | None = None
    cache: Path | None = None

    def with_(self, **changes: Any) -> PredictOptions:
        """A copy with ``changes`` (option names as above; an unknown name is a TypeError)."""
        return replace(self, **changes) if changes else self

    def to_json(self) -> dict[str, Any]:
        """The options as JSON values (for the child process's request); a region given as a function
        cannot travel and is refused."""
        if self.region is not None and not isinstance(self.region, str):
            raise ConfigError("A region provider function cannot be sent to another process.", "Name a region.")
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["postprocess"] = self.postprocess.to_dict()
        out["cache"] = None if self.cache is None else str(self.cache)
        out["spacing"] = (
            self.spacing if self.spacing is None or isinstance(self.spacing, str) else [float(v) for v in self.spacing]
        )
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PredictOptions:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if isinstance(values.get("postprocess"), dict):
            values["postprocess"] = PostProcessing(**values["postprocess"])
        if values.get("cache"):
            values["cache"] = Path(values["cache"])
        return cls(**values)


def resolve_options(options: PredictOptions | None, overrides: dict[str, Any]) -> PredictOptions:
    """``options`` (default: all defaults) with keyword ``overrides`` applied."""
    return (options or PredictOptions()).with_(**overrides)


def mode_settings(mode: str) -> dict[str, Any]:
    """Step fraction, weighting, window region, CPU backends and GPU precision of an inference mode."""
    from core.resources import load_json_resource

    modes = load_json_resource("presets", "inference.json")["modes"]
    if mode not in modes:
        raise ConfigError(f"Unknown inference mode '{mode}'.", f"Use one of: {', '.join(modes)}.")
    return dict(modes[mode])


def default_mode() -> str:
    from core.resources import load_json_resource

    return str(load_json_resource("presets", "inference.json").get("default", "fast"))


def recommended_window(header: dict[str, Any], window: int | None, step: int | None) -> tuple[int, int]:
    """Window and step: as asked, else the checkpoint's own (``inference``, else its training
    validation settings), else the paper's 128 / 64.

    InstanceNorm normalises over the whole window, so a model is best run with
    windows like those it was validated on.
    """
    rec = dict(header.get("inference") or {})
    val = (header.get("training") or {}).get("validation") or {}
    w = window or rec.get("window") or val.get("window") or 128
    s = step or rec.get("step") or val.get("step") or (64 if w == 128 else max(int(w) // 2, 1))
    return int(w), int(s)


def recommended_spacing(header: dict[str, Any], spacing: Any) -> tuple[float, float, float] | None:
    """Target voxel spacing (x, y, z mm), or None for the CT's native grid (the paper: no resampling).

    ``spacing``: None = the checkpoint's recommendation (``inference.spacing``) if any;
    ``"native"`` = never resample; three numbers = that spacing.
    """
    if isinstance(spacing, str):
        if spacing != "native":
            raise ConfigError(f"Unknown spacing '{spacing}'.", "Give three numbers (x y z mm) or 'native'.")
        return None
    if spacing is None:
        spacing = (header.get("inference") or {}).get("spacing")
        if spacing is None:
            return None
    values = [float(v) for v in spacing]
    if len(values) != 3 or any(not np.isfinite(v) or v <= 0 for v in values):
        raise ConfigError(
            f"Target spacing {spacing} is not three positive numbers.", "Give x y z in mm, e.g. 1.0 1.0 1.0."
        )
    return values[0], values[1], values[2]


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is usable, else ``cpu``; checks ``cuda:N`` exists."""
    import torch

    d = (device or "auto").strip().lower()
    if d == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if d == "cpu":
        return "cpu"
    if d == "cuda" or d.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"Device '{device}' was asked for but no CUDA GPU is usable here.",
                "Use --device cpu (or auto), or install a CUDA build of PyTorch and the NVIDIA driver.",
            )
        if ":" in d:
            try:
                index = int(d.split(":", 1)[1])
            except ValueError:
                raise ConfigError(f"Device '{device}' is not understood.", "Write it as cuda:0, cuda:1, ...") from None
            if not 0 <= index < torch.cuda.device_count():
                raise ConfigError(
                    f"GPU {index} does not exist: {torch.cuda.device_count()} GPU(s) found.",
                    f"Use cuda:0..cuda:{torch.cuda.device_count() - 1}.",
                )
        return d
    raise ConfigError(f"Unknown device '{device}'.", "Use auto, cpu, cuda or cuda:N.")


#: GPU memory per 128^3 window of the full-size WingsNet (activations and side outputs), inference mode;
#: benchmarks/gpu_inference.py prints the measured peaks per batch size
GPU_BYTES_PER_WINDOW = {"autocast": 2.5e9, "fp32": 5.0e9}
#: more windows per pass bring nothing once a window fills the GPU (measured: see benchmarks/gpu_inference.py)
MAX_GPU_BATCH = 8


def default_batch_size(device: str, window: tuple[int, int, int], autocast: bool = True) -> int:
    """1 on the CPU (batching brings nothing there); on a GPU, as many windows as about half the free memory
    holds, at most :data:`MAX_GPU_BATCH`."""
    if device == "cpu":
        return 1
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    per_window = GPU_BYTES_PER_WINDOW["autocast" if autocast else "fp32"] * float(np.prod(window)) / 128**3
    return int(max(1, min(MAX_GPU_BATCH, (free * 0.5) // per_window)))
