"""Synthetic chest CTs with exact airway labels (see core.phantom.maker and core.phantom.mask)."""

# one import for both makers; mask.py builds on maker.py, never the other way round
from core.phantom.maker import Branch, Difficulty, Phantom, auto_spacing, make_phantom
from core.phantom.mask import phantom_from_mask

__all__ = ["Difficulty", "Phantom", "Branch", "auto_spacing", "make_phantom", "phantom_from_mask"]
