"""Airway Studio engine: a headless library for pulmonary airway segmentation.

Never imports Qt or the ``app`` package. torch is imported only by the modules
that need it (models, losses, inference, training).
"""

__version__ = "0.1.0"
