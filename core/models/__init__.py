"""Network architectures (WingsNet, a 3D U-Net baseline), their registry and safe checkpoints.

Importing this package does not import torch; ``build_model`` does.
"""

from core.models.registry import ModelSpec, build_model, get_spec, list_models, register_model

__all__ = ["ModelSpec", "build_model", "get_spec", "list_models", "register_model"]
