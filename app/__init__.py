"""Airway Studio's Qt application: thin views over the headless engine in ``core``.

Heavy modules (torch, the volume IO packages, skimage) are imported lazily by the functions
that need them, so the window opens fast.
"""
