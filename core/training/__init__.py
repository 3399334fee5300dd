"""Staged training of airway models (method.md sec. 4-6): dataset cache, sampling,
augmentation, stages, event stream, resume and DDP.

Heavy modules (torch) are imported inside the functions that need them; importing
this package is cheap.
"""

from core.training.config import TrainConfig, load_config, save_config

__all__ = ["TrainConfig", "load_config", "save_config"]
