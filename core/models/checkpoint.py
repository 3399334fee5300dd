"""Model checkpoints that are safe to open: weights plus a JSON header, loaded weights-only.

File layout (a ``torch.save`` zip archive holding one dict)::

    {"airway_studio_checkpoint": FORMAT_VERSION,
     "header_json": "<JSON text>",          # architecture, arch_args, preprocessing, ...
     "state_dict": {name: tensor},
     "extra_state": {...} | None}           # training resume state (optimizer, scheduler, RNG)

Loading always uses ``torch.load(weights_only=True)``: the unpickler accepts
tensors, numbers, strings, bytes, lists, tuples and dicts only, so a file with a
malicious ``__reduce__`` is refused without running anything. Saving checks
``extra_state`` against the same rule so that what is saved can be read back.

Header keys: ``architecture``, ``arch_args``, ``preprocessing``
(``core.preprocess.Preprocessing.to_dict()``; ``None`` = not recorded),
``training`` (config dict), ``stage``, ``metrics``, ``versions``, ``created``
(ISO 8601 UTC), ``format_version``. Any other JSON-able keys are kept.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import pickle
import platform
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import core
from core.errors import CheckpointError
from core.models.header import validate_header

FORMAT_VERSION = 1
_MAGIC = "airway_studio_checkpoint"
HEADER_KEYS = (
    "architecture",
    "arch_args",
    "preprocessing",
    "training",
    "stage",
    "metrics",
    "versions",
    "created",
    "format_version",
)


@dataclass
class Checkpoint:
    header: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    extra_state: dict[str, Any] | None = None
    path: str | None = None

    @property
    def architecture(self) -> str:
        return str(self.header.get("architecture"))

    @property
    def arch_args(self) -> dict[str, Any]:
        return dict(self.header.get("arch_args") or {})

    @property
    def preprocessing(self) -> dict[str, Any] | None:
        return self.header.get("preprocessing")


def software_versions() -> dict[str, str]:
    return {
        "airway_studio": core.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DistributedDataParallel/DataParallel and ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, torch.nn.Module):
            model = model._orig_mod
        else:
            return model


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _check_safe(obj: Any, where: str = "extra_state") -> Any:
    """Return ``obj`` with numpy scalars turned into Python numbers; raise if weights-only loading would refuse it."""
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, torch.Size):
        return obj
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise CheckpointError(
                    f"{where} has a key of type {type(k).__name__} ({k!r}).", "Use string or integer keys."
                )
            out[k] = _check_safe(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        items = [_check_safe(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, np.ndarray):
        raise CheckpointError(
            f"{where} is a numpy array, which weights-only loading refuses.",
            "Store torch.from_numpy(array) or array.tolist() instead.",
        )
    raise CheckpointError(
        f"{where} is a {type(obj).__name__}, which weights-only loading refuses.",
        "Keep resume state to tensors, numbers, strings, lists and dicts (e.g. optimizer.state_dict(), capture_rng_state()).",
    )


def make_header(model: torch.nn.Module | None = None, header: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Complete ``header`` with the model's architecture, versions, creation time and format version."""
    out: dict[str, Any] = {k: None for k in HEADER_KEYS}
    out.update({"training": {}, "metrics": {}})
    out.update(dict(header or {}))
    if model is not None:
        net = unwrap_model(model)
        name = getattr(net, "arch_name", None)
        if name is None and out.get("architecture") is None:
            raise CheckpointError(
                f"The model ({type(net).__name__}) was not built by core.models.registry and the header names no architecture.",
                "Build it with build_model(name, ...) or pass header={'architecture': ..., 'arch_args': ...}.",
            )
        if name is not None:
            if out.get("architecture") not in (None, name):
                raise CheckpointError(
                    f"The header says architecture '{out['architecture']}' but the model is '{name}'.",
                    "Drop 'architecture' from the header; it is taken from the model.",
                )
            out["architecture"] = name
            if out.get("arch_args") is None:
                out["arch_args"] = dict(getattr(net, "arch_args", {}))
    if out.get("arch_args") is None:
        out["arch_args"] = {}
    out["versions"] = {**software_versions(), **(out.get("versions") or {})}
    out["created"] = out.get("created") or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    out["format_version"] = FORMAT_VERSION
    return out


def save_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module | Mapping[str, torch.Tensor],
    header: Mapping[str, Any] | None = None,
    extra_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write weights, header and optional resume state to ``path`` atomically (temp file + ``os.replace``).

    ``model`` may be a module (wrappers are unwrapped) or a state dict (then the
    header must name ``architecture``). Tensors are stored on the CPU.
    """
    path = Path(path)
    if isinstance(model, torch.nn.Module):
        net = unwrap_model(model)
        state = net.state_dict()
        full_header = make_header(net, header)
    else:
        state = dict(model)
        full_header = make_header(None, header)
        if not full_header.get("architecture"):
            raise CheckpointError("Saving a bare state dict needs header['architecture'].")
    state = {k: v.detach().cpu() for k, v in state.items()}
    try:
        header_json = json.dumps(full_header, default=_json_default, allow_nan=True, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"The checkpoint header cannot be written as JSON: {exc}.",
            "Keep header values to numbers, strings, lists and dicts.",
        ) from None
    payload = {
        _MAGIC: FORMAT_VERSION,
        "header_json": header_json,
        "state_dict": state,
        "extra_state": None if extra_state is None else _check_safe(dict(extra_state)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        from core.outputs import apply_umask

        apply_umask(tmp)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def _refuse(path: Path, what: str, fix: str) -> CheckpointError:
    return CheckpointError(what, fix, path=path)


def load_checkpoint(path: str | os.PathLike[str], expect_architecture: str | None = None) -> Checkpoint:
    """Read a checkpoint weights-only; raise :class:`CheckpointError` saying what is wrong with the file.

    ``expect_architecture``: if given, a checkpoint of another architecture is refused with both names.
    """
    path = Path(path)
    if not path.is_file():
        raise _refuse(path, "Checkpoint file not found.", "Check the path, or train a model first (airway train).")
    if path.stat().st_size == 0:
        raise _refuse(path, "The checkpoint file is empty.", "The save was interrupted; use another checkpoint.")
    if not zipfile.is_zipfile(path):
        raise _refuse(
            path,
            "This is not a readable checkpoint: it is not a PyTorch archive, or it is truncated.",
            "Use a .pt file saved by Airway Studio; re-copy it if the transfer was interrupted.",
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower() or "weights_only" in str(exc).lower():
            raise _refuse(
                path,
                "The checkpoint contains Python objects other than tensors and plain data; "
                "they were not loaded because opening them could run code.",
                "Use a checkpoint saved by Airway Studio, or re-save the weights from a trusted source.",
            ) from None
        raise _refuse(path, f"The checkpoint is corrupt ({exc}).", "Use another copy of the file.") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _refuse(
            path,
            f"The checkpoint is corrupt or truncated ({first}).",
            "Use another copy of the file (a save may have been interrupted).",
        ) from None

    if not isinstance(payload, dict) or _MAGIC not in payload:
        if isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
            raise _refuse(
                path,
                "This is a bare PyTorch state dict, not an Airway Studio checkpoint (no header).",
                "Load it into a model from core.models.registry and save it with core.models.checkpoint.save_checkpoint, "
                "giving the preprocessing it was trained with.",
            )
        raise _refuse(
            path,
            "This PyTorch file is not an Airway Studio checkpoint.",
            "Use a model saved by Airway Studio (airway train writes RUN/checkpoints/*.pt).",
        )
    version = payload[_MAGIC]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise _refuse(
            path,
            f"The checkpoint has format version {version}; this Airway Studio ({core.__version__}) reads up to {FORMAT_VERSION}.",
            "Update Airway Studio to open it.",
        )
    try:
        header = json.loads(payload["header_json"])
        state = payload["state_dict"]
        if not isinstance(header, dict) or not isinstance(state, dict):
            raise TypeError("header or state_dict has the wrong type")
        if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
            raise TypeError("state_dict holds non-tensor entries")
    except (KeyError, TypeError, ValueError) as exc:
        raise _refuse(
            path, f"The checkpoint's header or weights are damaged ({exc}).", "Use another copy of the file."
        ) from None
    validate_header(header, path)
    ckpt = Checkpoint(header=header, state_dict=state, extra_state=payload.get("extra_state"), path=str(path))
    if expect_architecture is not None and ckpt.architecture.lower() != expect_architecture.lower():
        raise _refuse(
            path,
            f"The checkpoint is a '{ckpt.architecture}' model, not '{expect_architecture}'.",
            f"Choose a {expect_architecture} checkpoint, or select architecture '{ckpt.architecture}'.",
        )
    return ckpt


def weights_fingerprint(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    """Name -> (dtype, shape, raw bytes) of every tensor: equal fingerprints are bit-identical weights."""
    return {
        k: (str(v.dtype), tuple(v.shape), v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        for k, v in state.items()
    }


def rewrite_header(
    path: str | os.PathLike[str], update: Mapping[str, Any], out: str | os.PathLike[str] | None = None
) -> Path:
    """Write ``path`` again (or to ``out``) with header keys replaced by ``update``; the weights and resume
    state are carried over unchanged, and the written file is read back and its weights compared bit for bit.

    For metadata added after training (model card, inference settings): no retraining, no change to
    what the model computes. Raises :class:`CheckpointError` if the weights read back differ.
    """
    ckpt = load_checkpoint(path)
    before = weights_fingerprint(ckpt.state_dict)
    header = {**ckpt.header, **dict(update)}
    validate_header(header, path)
    target = Path(out) if out is not None else Path(path)
    save_checkpoint(target, ckpt.state_dict, header, ckpt.extra_state)
    after = load_checkpoint(target)
    if weights_fingerprint(after.state_dict) != before:
        raise CheckpointError(
            "The rewritten checkpoint's weights differ from the original's.",
            "Keep the original file; report this as a bug.",
            path=target,
        )
    return target


def model_from_checkpoint(
    path_or_ckpt: str | os.PathLike[str] | Checkpoint,
    device: str | torch.device = "cpu",
    expect_architecture: str | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the network a checkpoint describes, load its weights, and return ``(model.eval(), header)``."""
    from core.errors import ConfigError, InputError
    from core.models.registry import build_model, list_models

    if isinstance(path_or_ckpt, Checkpoint):
        ckpt = path_or_ckpt
        validate_header(ckpt.header, ckpt.path)  # built in memory: not checked by load_checkpoint
    else:
        ckpt = load_checkpoint(path_or_ckpt, expect_architecture)
    where = ckpt.path or "checkpoint"
    if expect_architecture is not None and ckpt.architecture.lower() != expect_architecture.lower():
        raise CheckpointError(
            f"The checkpoint is a '{ckpt.architecture}' model, not '{expect_architecture}'.", path=where
        )
    if ckpt.architecture.lower() not in list_models():
        raise CheckpointError(
            f"The checkpoint's architecture '{ckpt.architecture}' is unknown to this Airway Studio ({core.__version__}).",
            f"Known architectures: {', '.join(list_models())}. Update Airway Studio or use another checkpoint.",
            path=where,
        )
    written_by = (ckpt.header.get("versions") or {}).get("airway_studio", "an unknown version")
    other_version = (
        f"The checkpoint was written by Airway Studio {written_by}; this is {core.__version__}. "
        "Use the version that wrote it, or another checkpoint."
    )
    try:
        model = build_model(ckpt.architecture, **ckpt.arch_args)
    except (ConfigError, InputError) as exc:
        # InputError: a value out of the network's range (e.g. arch_args.width = -1)
        raise CheckpointError(
            f"The checkpoint's architecture arguments do not fit '{ckpt.architecture}' "
            f"(header field 'arch_args'): {exc.what}",
            other_version,
            path=where,
        ) from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(ckpt.state_dict))
    unexpected = sorted(set(ckpt.state_dict) - set(expected))
    shapes = [
        k for k in expected if k in ckpt.state_dict and tuple(expected[k].shape) != tuple(ckpt.state_dict[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shapes:
            k = shapes[0]
            parts.append(
                f"{len(shapes)} of another shape (e.g. {k}: {tuple(ckpt.state_dict[k].shape)} vs {tuple(expected[k].shape)})"
            )
        raise CheckpointError(
            f"The weights do not match a '{ckpt.architecture}' with {ckpt.arch_args}: " + "; ".join(parts) + ".",
            other_version,
            path=where,
        )
    model.load_state_dict(ckpt.state_dict)
    return model.to(device).eval(), ckpt.header


# -- resume state helpers ------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy's global and Python's ``random`` states as weights-only-safe data."""
    import random

    np_state = np.random.get_state(legacy=True)
    if isinstance(np_state, dict):  # only with legacy=False; the tuple form is what restore_rng_state reads
        raise TypeError("numpy returned its RNG state as a dict")
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Undo :func:`capture_rng_state` (CUDA states are restored only when as many devices are present)."""
    import random

    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)
