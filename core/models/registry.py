"""Named network architectures, so checkpoints and configs can refer to them by name.

``build_model(name, **arch_args)`` returns a module whose ``forward`` gives a
tuple of logits ``(N, 1, D, H, W)``, the last one being the prediction, and
which carries ``divisor`` (input sides must be multiples), ``arch_name`` and
``arch_args`` (what a checkpoint stores to rebuild it).

This module does not import torch: the architectures are imported when built.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ModelSpec:
    name: str
    target: str  # "module:Class"
    description: str
    #: Named lighter/heavier variants shown by ``airway models``: label -> arch_args.
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The constructor's argument types (bool, int or float), so a checkpoint header's ``arch_args`` are
    #: checked without importing torch (core.models.header; a test keeps them equal to the signature).
    arg_types: dict[str, type] = field(default_factory=dict)

    def load_class(self) -> type[torch.nn.Module]:
        import torch

        module, name = self.target.split(":")
        cls = getattr(importlib.import_module(module), name)
        if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
            raise ConfigError(f"Model '{self.name}' names {self.target}, which is not a torch module class.")
        return cls


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> None:
    """Add an architecture (a research extension point); names are lower-case and unique."""
    key = spec.name.lower()
    if key in _REGISTRY and _REGISTRY[key].target != spec.target:
        raise ConfigError(f"A model named '{spec.name}' is already registered ({_REGISTRY[key].target}).")
    _REGISTRY[key] = spec


register_model(
    ModelSpec(
        "wingsnet",
        "core.models.wingsnet:WingsNet",
        "WingsNet (Zheng et al. 2021): 18 gated dilated blocks, encoder/decoder group supervision",
        {"width=1": {"width": 1.0}, "width=0.5": {"width": 0.5}, "width=0.25": {"width": 0.25}},
        {"in_channels": int, "width": float, "dropout": float},
    )
)
register_model(
    ModelSpec(
        "unet3d",
        "core.models.unet:UNet3D",
        "plain 3D U-Net baseline (two convs per level, InstanceNorm, deep supervision)",
        {"base=16": {"base_channels": 16}, "base=32": {"base_channels": 32}},
        {"in_channels": int, "base_channels": int, "levels": int, "deep_supervision": bool},
    )
)


def list_models() -> list[str]:
    """Names of the registered architectures, sorted."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        raise ConfigError(
            f"Unknown model architecture '{name}'.",
            f"Use one of: {', '.join(list_models())} (see `airway models`).",
        ) from None


def build_model(name: str, **arch_args: Any) -> torch.nn.Module:
    """Build architecture ``name`` with ``arch_args``; unknown names or arguments raise :class:`ConfigError`."""
    spec = get_spec(name)
    cls = spec.load_class()
    params = inspect.signature(cls).parameters  # the constructor's, without self
    unknown = sorted(set(arch_args) - set(params) - {"self"})
    if unknown:
        allowed = [p for p in params if p != "self"]
        raise ConfigError(
            f"Model '{spec.name}' has no argument(s) {', '.join(unknown)}.",
            f"Its arguments are: {', '.join(allowed)}.",
        )
    model = cls(**arch_args)
    # Full arguments (defaults included) so a checkpoint rebuilds the same net even if defaults change.
    full = {k: p.default for k, p in params.items() if k != "self" and p.default is not inspect.Parameter.empty}
    full.update(arch_args)
    # what a checkpoint stores to rebuild it (core.models.checkpoint.make_header reads them)
    model.arch_name = spec.name  # type: ignore[assignment]  # nn.Module.__setattr__ accepts plain values
    model.arch_args = full  # type: ignore[assignment]
    return model
