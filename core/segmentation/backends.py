"""Ways to run a network on a batch of windows: PyTorch (CPU or CUDA), OpenVINO, ONNX Runtime.

Every backend is a callable ``backend(batch) -> probabilities``: ``batch`` is a
float32 array ``(N, 1, D, H, W)`` (already windowed/scaled), the result is
``sigmoid(model(batch)[-1])`` as float32 of the same shape. The sliding-window
loop (:mod:`core.segmentation.loop`) knows nothing else about them.

OpenVINO and ONNX Runtime are optional (``pip install airway-studio[fast-cpu]``);
when one is asked for and missing, :func:`make_backend` falls back to PyTorch
and says so through ``say``. Exported models are cached on disk, keyed by the
checkpoint's hash, the window size and the backend, in :func:`cache_dir`.

Only this package (:mod:`core.segmentation`) imports torch, and only when a
backend is built. A backend that exported a model says how long that took
(``export_seconds``): the first run of a model is slower by that much.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from core.errors import ConfigError

#: Backend names users can pass (``--backend``). "auto" picks per device, see :func:`resolve_backend_name`.
BACKENDS = ("auto", "torch", "openvino", "openvino-fp32", "openvino-bf16", "onnxruntime")

#: CPU preference for "auto": the fastest backend whose whole-case mask agrees with eager fp32
#: PyTorch (Dice >= 0.995) on the trained demo model, from benchmarks/bench_inference_cpu.py
#: --case-agreement (real chest CT, 30 windows; shared 2-core CPU): ONNX Runtime fp32 7.6x faster,
#: Dice 0.9995; OpenVINO fp32 7.2x, 0.9977; OpenVINO bf16 10x but Dice 0.9944, so bf16 is
#: only used when asked for (--backend openvino-bf16).
CPU_AUTO_ORDER = ("onnxruntime", "openvino-fp32", "torch")

Say = Callable[[str], None]


class Backend(Protocol):
    name: str
    device: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


def _quiet(_: str) -> None:
    pass


# -- cache ---------------------------------------------------------------------


def cache_dir() -> Path:
    """User cache folder for exported models: ``$AIRWAY_CACHE_DIR``, else the platform's cache dir."""
    env = os.environ.get("AIRWAY_CACHE_DIR")
    if env:
        return Path(env)
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "airway-studio" / "inference"


def file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def state_hash(model: Any) -> str:
    """Hash of a module's class and weights, for models that did not come from a file."""
    h = hashlib.sha256(type(model).__qualname__.encode())
    # parameter-free architecture choices (norm, activation, upsampling) change the
    # exported graph without changing a weight: they belong to the key too
    h.update(
        json.dumps(
            [getattr(model, "arch_name", None), getattr(model, "arch_args", None)], sort_keys=True, default=str
        ).encode()
    )
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# -- PyTorch ---------------------------------------------------------------------


class _ProbabilityHead:
    """``sigmoid(model(x)[-1])``, built lazily as an ``nn.Module`` so it can be exported."""

    @staticmethod
    def wrap(model: Any) -> Any:
        import torch

        class ProbabilityModel(torch.nn.Module):
            def __init__(self, inner: torch.nn.Module):
                super().__init__()
                self.inner = inner

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return torch.sigmoid(self.inner(x)[-1].float())

        return ProbabilityModel(model).eval()


def _example(model: Any, window: tuple[int, int, int]) -> Any:
    """A small input for tracing: twice the model's divisor per side (at least 16), at most the window."""
    import torch

    divisor = int(getattr(model, "divisor", 1) or 1)
    side = max(16, 2 * divisor)
    return torch.zeros((1, 1, *(min(w, side) for w in window)), dtype=torch.float32)


class TorchBackend:
    """Plain PyTorch. On CUDA: inference mode, autocast (bf16 where supported, else fp16),
    pinned host memory and non-blocking copies; channels-last 3D as an option."""

    def __init__(
        self,
        model: Any,
        device: str = "cpu",
        autocast: bool | None = None,
        channels_last: bool = False,
        cpu_bf16: bool = False,
    ):
        import torch

        self.device = device
        self.torch_device = torch.device(device)
        self.is_cuda = self.torch_device.type == "cuda"
        self.model = model.to(self.torch_device).eval()
        self.channels_last = channels_last
        self._pinned: Any = None  # a torch tensor once the first CUDA batch came
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last_3d)
        use_autocast = self.is_cuda if autocast is None else autocast
        if self.is_cuda and use_autocast:
            self.dtype: torch.dtype | None = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            torch.backends.cudnn.benchmark = True  # fixed window shapes: pick the fastest kernels once
        elif not self.is_cuda and cpu_bf16:
            self.dtype = torch.bfloat16
        else:
            self.dtype = None
        precision = "fp32" if self.dtype is None else str(self.dtype).replace("torch.", "")
        self.name = f"torch-{self.torch_device.type}-{precision}" + ("-cl" if channels_last else "")

    #: takes and returns torch tensors on its device as well as numpy arrays (see core.segmentation.loop)
    accepts_tensors = True

    def _probabilities(self, x: Any) -> Any:
        """``sigmoid`` of the prediction logit for a batch already on the device (under inference mode)."""
        import torch

        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        if self.dtype is not None:
            with torch.autocast(self.torch_device.type, dtype=self.dtype):
                logits = self.model(x)[-1]
        elif self.is_cuda:
            # fp32 asked for on a GPU means fp32: cuDNN would otherwise use TF32 (10-bit mantissa) for convolutions
            with torch.backends.cudnn.flags(enabled=True, benchmark=True, allow_tf32=False):
                logits = self.model(x)[-1]
        else:
            logits = self.model(x)[-1]
        return torch.sigmoid(logits.float())

    def __call__(self, batch: Any) -> Any:
        import torch

        if isinstance(batch, torch.Tensor):  # already on the device: no copies either way
            with torch.inference_mode():
                return self._probabilities(batch.to(self.torch_device))
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if self.is_cuda:
            # one reusable page-locked staging buffer: pinning per call costs more than the copy
            if self._pinned is None or self._pinned.shape != x.shape:
                self._pinned = torch.empty(x.shape, dtype=torch.float32, pin_memory=True)
            self._pinned.copy_(x)
            x = self._pinned.to(self.torch_device, non_blocking=True)
        with torch.inference_mode():
            prob = self._probabilities(x)
            if self.is_cuda:
                # half the bytes over PCIe; uint8 quantisation downstream loses more
                return prob.half().cpu().numpy().astype(np.float32)
            return prob.contiguous().numpy()


# -- OpenVINO --------------------------------------------------------------------


def _atomic_dir(final: Path, fill: Callable[[Path], None]) -> None:
    """Fill a temporary folder next to ``final`` and rename it, so a crash never leaves half a cache entry."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        fill(tmp)
        try:
            os.replace(tmp, final)
        except OSError:  # another process made it first: theirs is as good
            pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _cached_export(
    folder: Path, filename: str, source: dict[str, Any], export: Callable[[Path], None], say: Say, what: str
) -> Path:
    """The exported model in ``folder``, (re)made unless its ``source.json`` names exactly this model and window.

    The folder name holds a shortened key; the full record inside is checked so
    that a shortened-key collision, an older export or a hand-copied folder is
    exported again instead of being used.
    """
    path = folder / filename
    record = folder / "source.json"
    try:
        fresh = path.is_file() and json.loads(record.read_text()) == source
    except (OSError, ValueError):
        fresh = False
    if fresh:
        return path
    if folder.exists():
        say(f"The cached {what} in {folder} was made from another model or setting; exporting again.")
        stale = folder.with_name(f".{folder.name}.stale-{os.getpid()}")
        try:
            os.replace(folder, stale)
            shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass
    else:
        say(f"Exporting the model for {what} (once per model and window size; cached in {folder.parent})...")

    def fill(tmp: Path) -> None:
        export(tmp)
        (tmp / "source.json").write_text(json.dumps(source, sort_keys=True))

    _atomic_dir(folder, fill)
    return path


class _Exported:
    """A backend that runs an exported model: ``export_seconds`` is what exporting took in this process
    (0 when the export was found in the cache)."""

    export_seconds = 0.0

    def _timed(self, export: Callable[[Path], None]) -> Callable[[Path], None]:
        def run(tmp: Path) -> None:
            t0 = time.perf_counter()
            export(tmp)
            self.export_seconds = time.perf_counter() - t0

        return run


def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 natively (AVX512-BF16 or AMX)."""
    try:
        import openvino as ov

        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:
        return False


class OpenVinoBackend(_Exported):
    """OpenVINO on the CPU, fp32 or bf16 inference precision; batch size is dynamic."""

    def __init__(
        self,
        model: Any,
        model_key: str,
        window: tuple[int, int, int],
        precision: str = "bf16",
        cache: Path | None = None,
        threads: int | None = None,
        say: Say = _quiet,
    ):
        import openvino as ov

        if precision not in ("fp32", "bf16"):
            raise ConfigError(f"Unknown OpenVINO precision '{precision}'.", "Use fp32 or bf16.")
        self.device = "cpu"
        self.name = f"openvino-{precision}"
        root = cache or cache_dir()
        key = f"{model_key[:24]}-w{'x'.join(map(str, window))}-ov{ov.__version__.split('-')[0]}"
        folder = root / "openvino" / key

        def export(tmp: Path) -> None:
            import torch

            head = _ProbabilityHead.wrap(model.to("cpu").eval())
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer chatter about shape checks, not actionable
                try:
                    # tracing runs one forward pass: a small example costs seconds, a 128^3 one minutes
                    converted = ov.convert_model(
                        head, example_input=_example(model, window), input=[ov.PartialShape([-1, 1, *window])]
                    )
                except Exception:
                    converted = ov.convert_model(
                        head, example_input=torch.zeros((1, 1, *window)), input=[ov.PartialShape([-1, 1, *window])]
                    )
            ov.save_model(converted, str(tmp / "model.xml"), compress_to_fp16=False)

        source = {"model_key": model_key, "window": list(window), "openvino": ov.__version__}
        xml = _cached_export(folder, "model.xml", source, self._timed(export), say, "OpenVINO")
        core = ov.Core()
        core.set_property({"CACHE_DIR": str(root / "openvino" / "blobs")})
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(str(xml), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        out = self.request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.asarray(out[0], dtype=np.float32).copy()


# -- ONNX Runtime ------------------------------------------------------------------


class OnnxRuntimeBackend(_Exported):
    """ONNX Runtime CPU execution provider, fp32 (exported with the TorchScript ONNX exporter)."""

    def __init__(
        self,
        model: Any,
        model_key: str,
        window: tuple[int, int, int],
        cache: Path | None = None,
        threads: int | None = None,
        say: Say = _quiet,
    ):
        import onnxruntime as ort

        self.device = "cpu"
        self.name = "onnxruntime-fp32"
        root = cache or cache_dir()
        folder = root / "onnx" / f"{model_key[:24]}-w{'x'.join(map(str, window))}"

        def export(tmp: Path) -> None:
            import torch

            head = _ProbabilityHead.wrap(model.to("cpu").eval())
            axes = {0: "n", 2: "d", 3: "h", 4: "w"}  # traced on a small example, run on any window
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    head,
                    (_example(model, window),),
                    str(tmp / "model.onnx"),
                    input_names=["x"],
                    output_names=["p"],
                    dynamic_axes={"x": axes, "p": axes},
                    opset_version=17,
                    dynamo=False,
                )

        source = {"model_key": model_key, "window": list(window), "opset": 17}
        path = _cached_export(folder, "model.onnx", source, self._timed(export), say, "ONNX")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        (out,) = self.session.run(None, {"x": np.ascontiguousarray(batch, dtype=np.float32)})
        return np.asarray(out, dtype=np.float32)


# -- choosing ---------------------------------------------------------------------


def available(name: str) -> bool:
    """Whether the optional package behind backend ``name`` can be imported."""
    # exporting to ONNX needs the onnx package besides the runtime
    modules = {"openvino": ("openvino",), "onnxruntime": ("onnxruntime", "onnx")}.get(name.split("-")[0])
    if modules is None:
        return True
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)


def resolve_backend_name(
    name: str, device: str, say: Say = _quiet, order: tuple[str, ...] | list[str] | None = None
) -> str:
    """Concrete backend for ``name`` on ``device``; a missing optional package falls back to "torch".
    ``order``: what "auto" tries on the CPU (default :data:`CPU_AUTO_ORDER`)."""
    if name not in BACKENDS:
        raise ConfigError(f"Unknown inference backend '{name}'.", f"Use one of: {', '.join(BACKENDS)}.")
    if device != "cpu":
        if name not in ("auto", "torch"):
            say(f"Backend '{name}' runs on the CPU only; using PyTorch on {device}.")
        return "torch"
    if name == "auto":
        for candidate in order or CPU_AUTO_ORDER:
            if not available(candidate):
                continue
            if candidate.endswith("bf16") and not cpu_has_bf16():
                continue
            return candidate
        return "torch"
    if name == "openvino":
        name = "openvino-fp32"  # bf16 disagreed with fp32 beyond Dice 0.995 on the demo model: opt-in only
    if not available(name):
        say(
            f"Backend '{name}' is not installed; using PyTorch instead "
            "(pip install 'airway-studio[fast-cpu]' for the faster CPU backends)."
        )
        return "torch"
    return name


@dataclass(frozen=True)
class BackendRequest:
    """What to build: the resolved backend name and its inputs."""

    name: str
    device: str
    window: tuple[int, int, int]
    model_key: str
    cache: Path | None = None
    threads: int | None = None
    channels_last: bool = False
    #: PyTorch on CUDA: autocast (None = yes, bf16 where supported); False = true fp32 (TF32 off)
    autocast: bool | None = None


def make_backend(model: Any, request: BackendRequest, say: Say = _quiet) -> Backend:
    """Build ``request.name``; an optional backend that fails to build falls back to PyTorch with a message."""
    name = request.name
    try:
        if name.startswith("openvino"):
            return OpenVinoBackend(
                model, request.model_key, request.window, name.split("-")[1], request.cache, request.threads, say
            )
        if name == "onnxruntime":
            return OnnxRuntimeBackend(model, request.model_key, request.window, request.cache, request.threads, say)
    except ImportError as exc:
        say(f"Backend '{name}' could not be loaded ({exc}); using PyTorch instead.")
    except Exception as exc:  # an exporter that cannot handle this model: PyTorch still can
        say(
            f"Backend '{name}' failed to prepare the model ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "using PyTorch instead."
        )
    return TorchBackend(model, request.device, autocast=request.autocast, channels_last=request.channels_last)
