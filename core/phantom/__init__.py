"""Synthetic chest CTs with exact airway labels (see core.phantom.maker and core.phantom.mask)."""

from core.phantom.maker import Branch, Difficulty, Phantom, auto_spacing, make_phantom, phantom_from_mask

__all__ = ["Difficulty", "Phantom", "Branch", "auto_spacing", "make_phantom", "phantom_from_mask"]
